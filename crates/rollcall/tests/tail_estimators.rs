//! The estimators against exact values (CPU twin; the GPU = twin equivalence
//! is in `tail_gpu.rs`). Statistical checks use fixed seeds and bounds of
//! 4 standard errors (two-sided p ≈ 6·10⁻⁵ under the null).

mod common;

use rand::Rng;
use rand_distr::{Distribution, Exp1, Gumbel, StandardNormal};
use rollcall::tail::{cpu, expected_max_std_normal, Estimator, GaussianTail, SegmentStatus};

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

#[derive(Clone, Copy, Debug)]
enum Family {
    Gaussian,
    Uniform,
    Exponential,
    Gumbel,
}

impl Family {
    fn draw(self, rng: &mut impl Rng) -> f32 {
        match self {
            Family::Gaussian => StandardNormal.sample(rng),
            Family::Uniform => rng.random(),
            Family::Exponential => Exp1.sample(rng),
            Family::Gumbel => Gumbel::new(0.0f32, 1.0).unwrap().sample(rng),
        }
    }

    /// E[max of n draws].
    fn best_of(self, n: u32) -> f64 {
        match self {
            Family::Gaussian => expected_max_std_normal(n),
            Family::Uniform => f64::from(n) / f64::from(n + 1),
            Family::Exponential => (1..=n).map(|i| 1.0 / f64::from(i)).sum(),
            Family::Gumbel => EULER_GAMMA + f64::from(n).ln(),
        }
    }
}

/// `reps` segments of `m` draws: mean and standard error of the estimator's
/// values, plus the estimates.
fn replicate(
    family: Family,
    m: u32,
    reps: u32,
    est: Estimator,
    seed: u64,
) -> (f64, f64, rollcall::tail::Estimates, Vec<f32>) {
    let mut rng = common::rng(seed);
    let rewards: Vec<f32> = (0..m * reps).map(|_| family.draw(&mut rng)).collect();
    let offsets: Vec<u32> = (0..=reps).map(|s| s * m).collect();
    let out = cpu::estimate(&rewards, &offsets, est).unwrap();
    let values: Vec<f64> = out.values.iter().map(|&v| f64::from(v)).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    (mean, (var / values.len() as f64).sqrt(), out, rewards)
}

#[test]
fn gaussian_constants_are_computed_not_tabulated() {
    // Known closed forms: c_1 = 0, c_2 = 1/√π, c_3 = 3/(2√π).
    let sqrt_pi = std::f64::consts::PI.sqrt();
    assert!(expected_max_std_normal(1).abs() < 1e-9);
    assert!((expected_max_std_normal(2) - 1.0 / sqrt_pi).abs() < 1e-9);
    assert!((expected_max_std_normal(3) - 1.5 / sqrt_pi).abs() < 1e-9);
    // The note's values at α = 0.25.
    let g = GaussianTail::new(128, 0.25).unwrap();
    assert!((g.c_n - 2.5946).abs() < 1e-4, "{g:?}");
    assert!((g.lambda - 1.2711).abs() < 1e-4 && (g.kappa - 0.4916).abs() < 1e-4);
    assert!((g.c_tilde - 2.692).abs() < 1e-3);
    let g = GaussianTail::new(512, 0.25).unwrap();
    assert!((g.c_n - 3.044).abs() < 1e-3 && (g.c_tilde - 3.606).abs() < 1e-3);
    // Φ⁻¹(1 − 1/N) is too low (the authors' earlier shortcut).
    assert!(g.c_n > 2.9);
    assert!(GaussianTail::new(0, 0.25).is_err() && GaussianTail::new(8, 1.0).is_err());
}

/// All N-subsets of `r`: the mean of their maxima, and per element the sum
/// of the maxima of the subsets holding it over C(m, N).
fn brute_force(r: &[f64], n: usize) -> (f64, Vec<f64>) {
    let m = r.len();
    let (mut total, mut count) = (0.0, 0u64);
    let mut per = vec![0.0; m];
    for mask in 0u32..1 << m {
        if mask.count_ones() as usize != n {
            continue;
        }
        let best = (0..m)
            .filter(|i| mask >> i & 1 == 1)
            .map(|i| r[i])
            .fold(f64::NEG_INFINITY, f64::max);
        total += best;
        count += 1;
        for (i, p) in per.iter_mut().enumerate() {
            if mask >> i & 1 == 1 {
                *p += best;
            }
        }
    }
    (
        total / count as f64,
        per.into_iter().map(|p| p / count as f64).collect(),
    )
}

#[test]
fn exact_estimator_equals_the_average_over_all_subsets() {
    let mut rng = common::rng(1);
    for m in 1..=12u32 {
        for n in 1..=m {
            let r: Vec<f32> = (0..m).map(|_| rng.random_range(-3.0..3.0)).collect();
            let est = cpu::estimate(&r, &[0, m], Estimator::ExpectedMax { n }).unwrap();
            let (value, weights) = brute_force(
                &r.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
                n as usize,
            );
            assert!(
                (f64::from(est.values[0]) - value).abs() < 1e-5,
                "m {m} n {n}"
            );
            for (a, w) in est.advantages.iter().zip(&weights) {
                assert!((f64::from(*a) - w).abs() < 1e-5, "m {m} n {n}: {a} vs {w}");
            }
        }
    }
    // Too few rollouts.
    let est = cpu::estimate(&[1.0, 2.0], &[0, 2], Estimator::ExpectedMax { n: 3 }).unwrap();
    assert_eq!(est.status, vec![SegmentStatus::TooFew]);
    assert!(est.values[0].is_nan() && est.advantages == vec![0.0, 0.0]);
}

#[test]
fn exact_estimator_has_no_overflow_at_m_4096() {
    // C(4096, 2048) overflows f64 itself; the ratios never form it. Uniform
    // ranks 0..m: E[max of N] = Σ C(i−1, N−1)/C(m, N)·(i−1) = N(m+1)/(N+1) − 1.
    let m = 4096u32;
    let r: Vec<f32> = (0..m).map(|i| i as f32).collect();
    for n in [1u32, 2, 64, 2048, 4096] {
        let est = cpu::estimate(&r, &[0, m], Estimator::ExpectedMax { n }).unwrap();
        let exact = f64::from(n) * f64::from(m + 1) / f64::from(n + 1) - 1.0;
        let got = f64::from(est.values[0]);
        assert!(
            (got - exact).abs() < 2e-4 * exact.max(1.0),
            "n {n}: {got} vs {exact}"
        );
        assert!(est.advantages.iter().all(|a| a.is_finite()));
    }
}

#[test]
fn exact_estimator_is_unbiased() {
    for (i, family) in [
        Family::Gaussian,
        Family::Uniform,
        Family::Exponential,
        Family::Gumbel,
    ]
    .into_iter()
    .enumerate()
    {
        let n = 8;
        let (mean, se, _, _) = replicate(
            family,
            32,
            20_000,
            Estimator::ExpectedMax { n },
            10 + i as u64,
        );
        let truth = family.best_of(n);
        assert!(
            (mean - truth).abs() < 4.0 * se,
            "{family:?}: mean {mean} vs E[max of {n}] {truth} (se {se})"
        );
    }
}

fn binomial(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * u128::from(n - i) / u128::from(i + 1);
    }
    c as f64
}

#[test]
fn pass_at_k_matches_binomials_and_its_advantages_sum_to_zero() {
    for m in 1..=40u32 {
        for c in 0..=m {
            for k in 1..=m {
                let exact = 1.0
                    - binomial(u64::from(m - c), u64::from(k))
                        / binomial(u64::from(m), u64::from(k));
                let got = f64::from(cpu::pass_at_k(m, c, k));
                assert!(
                    (got - exact).abs() < 2e-6,
                    "m {m} c {c} k {k}: {got} vs {exact}"
                );
            }
        }
    }
    let mut rng = common::rng(2);
    for _ in 0..300 {
        let m = rng.random_range(1..=40u32);
        let k = rng.random_range(1..=m);
        let r: Vec<f32> = (0..m).map(|_| rng.random_range(0..2) as f32).collect();
        let est = cpu::estimate(&r, &[0, m], Estimator::PassAtK { k, threshold: 0.5 }).unwrap();
        let c = r.iter().filter(|&&x| x >= 0.5).count() as u64;
        let rho = f64::from(est.values[0]);
        let sigma = (rho * (1.0 - rho)).sqrt();
        let (m64, k64) = (u64::from(m), u64::from(k));
        for (&a, &x) in est.advantages.iter().zip(&r) {
            let expected = if sigma == 0.0 {
                0.0
            } else if x >= 0.5 {
                (1.0 - rho) / sigma
            } else {
                let q = binomial(m64 - c - 1, k64 - 1) / binomial(m64 - 1, k64 - 1);
                (1.0 - rho - q) / sigma
            };
            assert!(
                (f64::from(a) - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                "m {m} k {k} c {c}"
            );
        }
        // Each rollout's chance that a k-subset holding it passes averages to ρ.
        let sum: f64 = est.advantages.iter().map(|&a| f64::from(a)).sum();
        // (in units of σ, which divides every advantage).
        assert!(
            (sum * sigma).abs() < 1e-5 * f64::from(m),
            "m {m} k {k} c {c}: sum {sum}"
        );
    }
}

#[test]
fn tea_is_nearly_unbiased_on_gaussian_rewards_and_prefix_tea_cancels_its_bias() {
    let (n, alpha) = (128, 0.25);
    let truth = Family::Gaussian.best_of(n);
    // Large m: TEA's Gaussian-tail assumption is exact, its bias O(1/m) small.
    let (mean, se, _, _) = replicate(Family::Gaussian, 1024, 400, Estimator::Tea { n, alpha }, 20);
    assert!(
        (mean - truth).abs() < 4.0 * se + 0.01,
        "m 1024: {mean} vs {truth} (se {se})"
    );
    // Small m: TEA is biased low (σ̂ of a few rewards), O(1/m); Prefix-TEA
    // cancels the 1/m term, leaving O(1/m²).
    let prefix = Estimator::PrefixTea {
        n,
        alpha,
        prefixes: 4,
    };
    for (m, seed) in [(32u32, 21u64), (64, 22)] {
        let (tea, tea_se, _, _) = replicate(
            Family::Gaussian,
            m,
            50_000,
            Estimator::Tea { n, alpha },
            seed,
        );
        let (pre, pre_se, _, _) = replicate(Family::Gaussian, m, 50_000, prefix, seed);
        eprintln!(
            "m {m}: TEA bias {:.4} (se {tea_se:.4}), Prefix-TEA bias {:.4} (se {pre_se:.4})",
            tea - truth,
            pre - truth
        );
        assert!(
            tea - truth < -8.0 * tea_se,
            "TEA bias {} (se {tea_se})",
            tea - truth
        );
        assert!(
            (pre - truth).abs() + 4.0 * pre_se < 0.5 * (tea - truth).abs(),
            "Prefix-TEA bias {} (se {pre_se}) against TEA's {}",
            pre - truth,
            tea - truth
        );
    }
}

/// E[A(R)·∂θ log p(R)] over many rollouts: the gradient of the best-of-N
/// value in θ (the identity the advantages are built on).
fn gradient_identity(est: Estimator, scale_family: bool) -> (f64, f64) {
    let (m, reps) = (4096u32, 200u32);
    let (_, _, out, rewards) =
        replicate(Family::Gaussian, m, reps, est, 30 + u64::from(scale_family));
    let per_segment: Vec<f64> = (0..reps as usize)
        .map(|s| {
            let range = s * m as usize..(s + 1) * m as usize;
            rewards[range.clone()]
                .iter()
                .zip(&out.advantages[range])
                .map(|(&r, &a)| {
                    let r = f64::from(r);
                    // Location: ∂μ log p = r; scale: ∂σ log p = r² − 1 (μ 0, σ 1).
                    let score = if scale_family { r * r - 1.0 } else { r };
                    f64::from(a) * score
                })
                .sum::<f64>()
                / f64::from(m)
        })
        .collect();
    let mean = per_segment.iter().sum::<f64>() / f64::from(reps);
    let var = per_segment.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f64::from(reps - 1);
    (mean, (var / f64::from(reps)).sqrt())
}

#[test]
fn tea_advantages_satisfy_the_gradient_identity() {
    let n = 128;
    let est = Estimator::Tea { n, alpha: 0.25 };
    // Location family: dV/dμ = 1.
    let (loc, loc_se) = gradient_identity(est, false);
    assert!(
        (loc - 1.0).abs() < 4.0 * loc_se,
        "location {loc} (se {loc_se})"
    );
    // Scale family: dV/dσ = c_N.
    let c_n = expected_max_std_normal(n);
    let (scale, scale_se) = gradient_identity(est, true);
    assert!(
        (scale - c_n).abs() < 4.0 * scale_se,
        "scale {scale} vs {c_n} (se {scale_se})"
    );
    assert!(
        loc_se < 0.02 && scale_se < 0.05,
        "too noisy to mean anything"
    );
}

#[test]
fn generalised_pareto_tail_extrapolates_known_families() {
    // Exponential and uniform tails are exactly generalised Pareto (ξ = 0,
    // ξ = −1); the Gumbel's is asymptotically ξ = 0, the Gaussian's slowly.
    // Bounds: measured bias (fixed seeds) with room, in units of the
    // family's spread of the max.
    let n = 128;
    for (i, (family, bound)) in [
        (Family::Exponential, 0.08),
        (Family::Uniform, 0.02),
        (Family::Gumbel, 0.08),
        (Family::Gaussian, 0.12),
    ]
    .into_iter()
    .enumerate()
    {
        let (mean, se, out, _) = replicate(
            family,
            256,
            2_000,
            Estimator::Gpd { n, alpha: 0.25 },
            40 + i as u64,
        );
        let truth = family.best_of(n);
        let bias = mean - truth;
        eprintln!("GPD {family:?}: bias {bias:.4} (se {se:.4}), truth {truth:.4}");
        assert!(bias.abs() < bound + 4.0 * se, "{family:?}: bias {bias}");
        assert!(out.status.iter().all(|s| *s == SegmentStatus::Ok));
    }
    // The GPD's location family: shifting every reward shifts the value.
    let r: Vec<f32> = (0..64).map(|i| ((i * 37) % 64) as f32 * 0.1).collect();
    let shifted: Vec<f32> = r.iter().map(|x| x + 2.0).collect();
    let est = Estimator::Gpd { n, alpha: 0.25 };
    let a = cpu::estimate(&r, &[0, 64], est).unwrap();
    let b = cpu::estimate(&shifted, &[0, 64], est).unwrap();
    assert!((b.values[0] - a.values[0] - 2.0).abs() < 1e-4);
}

#[test]
fn grpo_matches_the_voting_twin() {
    let r = [1.0f32, 0.0, 0.5, 0.25, 1.0];
    let est = cpu::estimate(&r, &[0, 2, 5], Estimator::Grpo { eps: 1e-4 }).unwrap();
    let segs = [
        rollcall::voting::Segment {
            prompt: 0,
            start: 0,
            count: 2,
        },
        rollcall::voting::Segment {
            prompt: 1,
            start: 2,
            count: 3,
        },
    ];
    assert_eq!(
        est.advantages,
        rollcall::voting::rewards::group_advantages(&segs, &r, 1e-4).unwrap()
    );
    assert_eq!(est.values, vec![0.5, 1.75 / 3.0]);
}

#[test]
fn gpd_jackknife_matches_an_exact_refit_at_large_m() {
    let n = 128;
    for (m, seed) in [(64usize, 50u64), (1024, 51), (16_384, 52)] {
        let mut rng = common::rng(seed);
        let r: Vec<f32> = (0..m).map(|_| Family::Gaussian.draw(&mut rng)).collect();
        let est = cpu::estimate(&r, &[0, m as u32], Estimator::Gpd { n, alpha: 0.25 }).unwrap();
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| r[b].total_cmp(&r[a]).then(a.cmp(&b)));
        let sorted: Vec<f64> = order.iter().map(|&i| f64::from(r[i])).collect();
        let k = (0.25 * m as f64).ceil() as usize;
        let value = common::gpd_reference(&sorted, n, k, m);
        assert!(
            (f64::from(est.values[0]) - value).abs() < 1e-4 * value.abs(),
            "m {m}"
        );
        let below = common::gpd_reference(&sorted, n, k, m - 1);
        let mut worst = 0.0f64;
        let mut scale = 0.0f64;
        for (j, &rollout) in order.iter().enumerate().take(k + 1) {
            let mut without = sorted.clone();
            without.remove(j);
            let exact = (m - 1) as f64 * (below - common::gpd_reference(&without, n, k, m - 1));
            let got = f64::from(est.advantages[rollout]);
            worst = worst.max((got - exact).abs());
            scale = scale.max(exact.abs());
        }
        eprintln!("m {m}: worst jackknife error {worst:.2e} of scale {scale:.3}");
        assert!(worst < 2e-3 * scale, "m {m}: worst {worst} of {scale}");
    }
}

#[test]
fn gpd_stays_below_a_spike_of_equal_top_rewards() {
    let est = Estimator::Gpd {
        n: 128,
        alpha: 0.25,
    };
    // 8 rewards of 1, 24 below 0.9: the top k = 8 are equal.
    let mut r = vec![1.0f32; 8];
    r.extend((0..24).map(|i| i as f32 * 0.9 / 24.0));
    let out = cpu::estimate(&r, &[0, 32], est).unwrap();
    assert!(out.values[0] <= 1.0 + 1e-6, "{}", out.values[0]);
    assert_eq!(out.status[0], SegmentStatus::Flat);
    // A step: k ones, the rest zeros; the best of N is 1.
    for m in [16u32, 64, 256] {
        let k = m / 4;
        let r: Vec<f32> = (0..m).map(|i| f32::from(u8::from(i < k))).collect();
        let out = cpu::estimate(&r, &[0, m], est).unwrap();
        assert!(
            (out.values[0] - 1.0).abs() < 1e-6,
            "m {m}: {}",
            out.values[0]
        );
    }
}
