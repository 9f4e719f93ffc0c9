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
