//! Posterior math against trusted implementations (statrs, f64).

use rollcall::internals::special::{erf, gamma_p, ln_gamma};
use rollcall::voting::posterior::*;
use statrs::function::beta::beta_reg;
use statrs::function::gamma::ln_gamma as ln_gamma_f64;

#[test]
fn ln_gamma_matches_statrs() {
    for i in 1..4000 {
        let x = i as f64 * 0.137;
        let got = f64::from(ln_gamma(x as f32));
        let want = ln_gamma_f64(f64::from(x as f32));
        assert!(
            (got - want).abs() <= 2e-6 * want.abs().max(1.0),
            "x {x}: {got} vs {want}"
        );
    }
}

#[test]
fn beta_tails_match_the_regularised_incomplete_beta() {
    let mut worst = 0.0f64;
    for prior in [1.0f32, 0.5, 2.0] {
        for leader in 0..=300u32 {
            for runner_up in 0..=leader.min(300) {
                if !(leader < 40
                    || runner_up < 5
                    || leader - runner_up < 40
                    || (leader + runner_up) % 37 == 0)
                {
                    continue;
                }
                let got = f64::from(beta_leader_probability(leader, runner_up, prior));
                let a = f64::from(leader as f32 + prior);
                let b = f64::from(runner_up as f32 + prior);
                let want = 1.0 - beta_reg(a, b, 0.5);
                let err = (got - want).abs();
                worst = worst.max(err);
                assert!(
                    err <= 1e-5,
                    "prior {prior} leader {leader} runner-up {runner_up}: {got} vs {want}"
                );
            }
        }
    }
    eprintln!("worst absolute error {worst:e}");
}

#[test]
fn gamma_cdf_matches_statrs() {
    use statrs::function::gamma::gamma_lr;
    for &a in &[0.5f32, 1.0, 1.5, 2.0, 3.0, 7.0, 20.0, 41.0, 150.0] {
        for i in 1..200 {
            let x = i as f32 * (a + 10.0 * a.sqrt() + 5.0) / 200.0;
            let got = f64::from(gamma_p(a, x));
            let want = gamma_lr(f64::from(a), f64::from(x));
            assert!((got - want).abs() < 2e-6, "a {a} x {x}: {got} vs {want}");
        }
    }
}

/// The Dirichlet integral against a 2-million-draw Monte Carlo estimate, within
/// four of its standard errors (fixed seed).
#[test]
fn dirichlet_integral_matches_monte_carlo() {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Gamma};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for alphas in [
        vec![8.0f32, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0],
        vec![3.0, 2.0, 2.0],
        vec![5.5, 4.5, 1.5, 0.5],
        vec![12.0, 11.0],
        vec![21.0, 6.0, 6.0, 5.0, 2.0],
    ] {
        let exact = f64::from(dirichlet_mode_probability(&alphas, 0));
        let draws = 2_000_000;
        let gammas: Vec<Gamma<f64>> = alphas
            .iter()
            .map(|&a| Gamma::new(f64::from(a), 1.0).unwrap())
            .collect();
        let wins = (0..draws)
            .filter(|_| {
                let g: Vec<f64> = gammas.iter().map(|d| d.sample(&mut rng)).collect();
                g[1..].iter().all(|&x| g[0] > x)
            })
            .count();
        let p = wins as f64 / draws as f64;
        let se = (p * (1.0 - p) / draws as f64).sqrt();
        assert!(
            (exact - p).abs() < 4.0 * se + 1e-6,
            "{alphas:?}: integral {exact}, Monte Carlo {p} ± {se}"
        );
    }
}

/// `P(a, x)` in f64: its series `x^a e^−x Σ x^k / Γ(a + k + 1)` below a + 1
/// (statrs' `gamma_lr` returns 0 for x within 1e-15 of 0, where P(0.1, x)
/// is still ~0.03), statrs' above.
fn gamma_p_f64(a: f64, x: f64) -> f64 {
    if x >= a + 1.0 {
        return statrs::function::gamma::gamma_lr(a, x);
    }
    let (mut term, mut sum, mut k) = (1.0f64, 1.0f64, 1.0f64);
    while term > 1e-17 * sum {
        term *= x / (a + k);
        sum += term;
        k += 1.0;
    }
    (a * x.ln() - x - ln_gamma_f64(a + 1.0)).exp() * sum
}

/// The Dirichlet mode probability in f64 by another route than the
/// library's: the trapezoid rule in s = ln x over the whole line (the
/// integrand `exp(a s − e^s) Π P(α_j, e^s) / Γ(a)` is smooth and decays like
/// e^{σs} below and doubly exponentially above, so the trapezoid converges
/// geometrically), with steps of 1/512 from where e^{σs} < e^−40 to past
/// the leader's Gamma tail.
fn dirichlet_reference(alphas: &[f32], leader: usize) -> f64 {
    let alphas: Vec<f64> = alphas.iter().map(|&a| f64::from(a)).collect();
    let a = alphas[leader];
    let sigma: f64 = alphas.iter().sum();
    let lo = -40.0 / sigma - 5.0;
    let hi = (a + 12.0 * a.sqrt() + 40.0).ln();
    let h = 1.0 / 512.0;
    let steps = ((hi - lo) / h).ceil() as usize;
    let mut sum = 0.0;
    for i in 0..=steps {
        let s = lo + i as f64 * h;
        let x = s.exp();
        let mut f = (a * s - x - ln_gamma_f64(a)).exp();
        for (j, &aj) in alphas.iter().enumerate() {
            if j != leader {
                f *= gamma_p_f64(aj, x);
            }
        }
        sum += if i == 0 || i == steps { 0.5 * f } else { f };
    }
    sum * h
}

/// Alphas from 0.1 to 10^3: with σ = Σ α as small as 0.1 the integrand
/// behaves like x^(σ−1) at 0.
const DIRICHLET_ALPHAS: [f32; 11] = [0.1, 0.2, 0.5, 1.0, 1.5, 2.5, 3.0, 7.0, 20.0, 150.0, 1000.0];

/// Exact cases: k equal alphas give each answer 1/k (k = 1..8, the leader
/// first or last); one answer is the mode for sure. Within 1e-5 (f32; the
/// worst is printed).
#[test]
fn dirichlet_symmetric_alphas_give_one_over_k() {
    let mut worst = 0.0f64;
    for &alpha in &DIRICHLET_ALPHAS {
        for k in 1..=8usize {
            let alphas = vec![alpha; k];
            for leader in [0, k - 1] {
                let got = f64::from(dirichlet_mode_probability(&alphas, leader));
                let err = (got - 1.0 / k as f64).abs();
                worst = worst.max(err);
                assert!(err < 1e-5, "alpha {alpha} k {k} leader {leader}: {got}");
            }
        }
    }
    for alpha in [0.3f32, 0.7, 1.2, 4.5, 11.0, 64.0, 400.0] {
        let got = dirichlet_mode_probability(&[alpha], 0);
        worst = worst.max(f64::from(1.0 - got));
        assert!((got - 1.0).abs() < 1e-5, "alpha {alpha}: {got}");
    }
    eprintln!("worst absolute error {worst:e}");
}

/// Two answers: G_L > G_S exactly when G_L / (G_L + G_S) ~ Beta(α_L, α_S)
/// exceeds ½, so the probability is 1 − I_½(α_L, α_S) (statrs, f64).
/// Within 1e-5 absolute.
#[test]
fn dirichlet_two_answers_match_the_incomplete_beta() {
    let mut worst = 0.0f64;
    for &al in &DIRICHLET_ALPHAS {
        for &a_s in &DIRICHLET_ALPHAS {
            let want = 1.0 - beta_reg(f64::from(al), f64::from(a_s), 0.5);
            for (alphas, leader) in [([al, a_s], 0), ([a_s, al], 1)] {
                let got = f64::from(dirichlet_mode_probability(&alphas, leader));
                let err = (got - want).abs();
                worst = worst.max(err);
                assert!(err < 1e-5, "{alphas:?} leader {leader}: {got} vs {want}");
            }
        }
    }
    eprintln!("worst absolute error {worst:e}");
}

/// Three to eight answers with small alphas (0.1 to 3, σ from 0.3), the
/// leader anywhere, against the f64 reference: within 1e-5 absolute.
#[test]
fn dirichlet_small_alphas_match_an_f64_reference() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let mut cases: Vec<Vec<f32>> = vec![
        vec![0.5, 0.5, 0.5],
        vec![0.3, 0.1, 0.2],
        vec![0.7, 0.2, 0.2, 0.1],
        vec![1.2, 0.5, 0.5, 0.5, 0.5],
        vec![2.0, 1.0, 0.1],
        vec![1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    ];
    for _ in 0..24 {
        let k = rng.random_range(3..=8);
        cases.push(
            (0..k)
                .map(|_| 0.1 + 2.9 * rng.random::<f32>().powi(2))
                .collect(),
        );
    }
    let mut worst = 0.0f64;
    for (c, alphas) in cases.iter().enumerate() {
        for leader in [0, c % alphas.len()] {
            let want = dirichlet_reference(alphas, leader);
            let got = f64::from(dirichlet_mode_probability(alphas, leader));
            let err = (got - want).abs();
            worst = worst.max(err);
            assert!(err < 1e-5, "{alphas:?} leader {leader}: {got} vs {want}");
        }
    }
    eprintln!("worst absolute error {worst:e}");
}

/// The f64 reference itself, on exact values: 1/k, and 1 − I_½ for two.
#[test]
fn dirichlet_reference_is_exact_on_known_cases() {
    for alpha in [0.1f32, 0.5, 3.0] {
        for k in 1..=4 {
            let p = dirichlet_reference(&vec![alpha; k], 0);
            assert!(
                (p - 1.0 / k as f64).abs() < 1e-9,
                "alpha {alpha} k {k}: {p}"
            );
        }
    }
    let p = dirichlet_reference(&[0.3, 1.7], 0);
    let want = 1.0 - beta_reg(f64::from(0.3f32), f64::from(1.7f32), 0.5);
    assert!((p - want).abs() < 1e-9, "{p} vs {want}");
}

#[test]
fn erf_matches_statrs() {
    for i in -400..=400 {
        let x = i as f32 * 0.01;
        let got = f64::from(erf(x));
        let want = statrs::function::erf::erf(f64::from(x));
        assert!(
            (got - want).abs() < 2e-7 + 1e-6 * want.abs(),
            "x {x}: {got} vs {want}"
        );
    }
}

/// The mixture SPRT's log ratio for moderate priors against f64 statrs.
#[test]
fn msprt_log_ratio_matches_statrs() {
    use statrs::function::beta::ln_beta;
    for &a in &[1.0f64, 10.0, 200.0, 5000.0] {
        for leader in 0..60u32 {
            for runner_up in 0..=leader.min(30) {
                let (f, s) = (f64::from(leader), f64::from(runner_up));
                let want = ln_beta(f + a, s + a) - ln_beta(a, a)
                    + (f + s) * std::f64::consts::LN_2
                    + (2.0 * (1.0 - beta_reg(f + a, s + a, 0.5))).ln();
                let got = f64::from(msprt_log_ratio(leader, runner_up, a as f32));
                assert!(
                    (got - want).abs() < 5e-5 * want.abs().max(1.0),
                    "a {a} {leader}:{runner_up}: {got} vs {want}"
                );
            }
        }
    }
}

/// The overtake risk against a direct f64 Beta-Binomial sum.
#[test]
fn overtake_risk_matches_a_direct_sum() {
    use statrs::function::beta::ln_beta;
    use statrs::function::factorial::ln_binomial;
    for &prior in &[0.3f64, 1.0, 2.0] {
        for leader in 0..25u32 {
            for runner_up in 0..=leader {
                for remaining in [0u32, 1, 5, 17, 38] {
                    let (a, b) = (f64::from(leader) + prior, f64::from(runner_up) + prior);
                    let want: f64 = (0..=remaining)
                        .filter(|&k| i64::from(runner_up + remaining - k) > i64::from(leader + k))
                        .map(|k| {
                            (ln_binomial(u64::from(remaining), u64::from(k))
                                + ln_beta(f64::from(k) + a, f64::from(remaining - k) + b)
                                - ln_beta(a, b))
                            .exp()
                        })
                        .sum();
                    let got = f64::from(overtake_risk(leader, runner_up, remaining, prior as f32));
                    assert!(
                        (got - want).abs() < 2e-6,
                        "{leader}:{runner_up} +{remaining} prior {prior}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
