//! How well each estimator recovers a known best-of-N value from m rollouts:
//! draws m rewards per prompt for many prompts from a reward family whose
//! E[max of N] is known exactly, runs the estimators (GPU or CPU twin), and
//! reports each one's bias and spread. `rollcall tail` prints it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, Gumbel, StandardNormal};
use rollcall::tail::{
    cpu, expected_max_std_normal, Estimator, SegmentStatus, TailStats, EULER_GAMMA,
};
use rollcall::{Error, Result};

/// A reward population with a known expected best of N.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RewardFamily {
    /// Normal(location, scale²).
    Gaussian { location: f64, scale: f64 },
    /// Uniform on [location, location + scale].
    Uniform { location: f64, scale: f64 },
    /// location + scale · Exponential(1).
    Exponential { location: f64, scale: f64 },
    /// Gumbel(location, scale).
    Gumbel { location: f64, scale: f64 },
    /// 1 with probability p, else 0 (a verifier).
    Bernoulli { p: f64 },
}

impl RewardFamily {
    /// Parses `gaussian`, `uniform`, `exponential`, `gumbel` (with
    /// `location` and `scale`) or `bernoulli` (with `p`).
    ///
    /// ```
    /// use rollcall_cli::study::RewardFamily;
    /// let f = RewardFamily::parse("uniform", 0.0, 1.0, 0.5).unwrap();
    /// assert!((f.best_of(1) - 0.5).abs() < 1e-12);
    /// ```
    pub fn parse(name: &str, location: f64, scale: f64, p: f64) -> Result<Self> {
        let bad = |msg: String| Err(Error::InvalidEstimator(msg));
        if !(location.is_finite() && scale.is_finite() && scale > 0.0) {
            return bad(format!(
                "location must be finite and scale > 0, got {location}, {scale}"
            ));
        }
        Ok(match name {
            "gaussian" | "normal" => RewardFamily::Gaussian { location, scale },
            "uniform" => RewardFamily::Uniform { location, scale },
            "exponential" => RewardFamily::Exponential { location, scale },
            "gumbel" => RewardFamily::Gumbel { location, scale },
            "bernoulli" => {
                if !(p > 0.0 && p < 1.0) {
                    return bad(format!("bernoulli needs p in (0, 1), got {p}"));
                }
                RewardFamily::Bernoulli { p }
            }
            other => {
                return bad(format!(
                    "unknown reward family `{other}` (gaussian, uniform, exponential, gumbel, bernoulli)"
                ))
            }
        })
    }

    /// One reward.
    pub fn draw(&self, rng: &mut impl Rng) -> f32 {
        let x: f64 = match *self {
            RewardFamily::Gaussian { location, scale } => {
                let z: f64 = StandardNormal.sample(rng);
                location + scale * z
            }
            RewardFamily::Uniform { location, scale } => location + scale * rng.random::<f64>(),
            RewardFamily::Exponential { location, scale } => {
                let e: f64 = Exp1.sample(rng);
                location + scale * e
            }
            RewardFamily::Gumbel { location, scale } => Gumbel::new(location, scale)
                .map(|g| g.sample(rng))
                .unwrap_or(location),
            RewardFamily::Bernoulli { p } => f64::from(u8::from(rng.random_bool(p))),
        };
        x as f32
    }

    /// The exact E[max of n rewards].
    pub fn best_of(&self, n: u32) -> f64 {
        let n_f = f64::from(n.max(1));
        match *self {
            RewardFamily::Gaussian { location, scale } => {
                location + scale * expected_max_std_normal(n)
            }
            RewardFamily::Uniform { location, scale } => location + scale * n_f / (n_f + 1.0),
            RewardFamily::Exponential { location, scale } => {
                location + scale * (1..=n.max(1)).map(|i| 1.0 / f64::from(i)).sum::<f64>()
            }
            RewardFamily::Gumbel { location, scale } => location + scale * (EULER_GAMMA + n_f.ln()),
            RewardFamily::Bernoulli { p } => 1.0 - (1.0 - p).powf(n_f),
        }
    }
}

/// Where the estimators run.
pub enum StudyBackend<'a> {
    /// The GPU kernels.
    Gpu(&'a mut TailStats),
    /// The CPU twin.
    Cpu,
}

/// One estimator at one m.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StudyRow {
    /// Estimator name.
    pub estimator: String,
    /// Rollouts per prompt.
    pub m: u32,
    /// Mean estimate minus the true E[max of N].
    pub bias: f64,
    /// Standard deviation of the estimate across prompts.
    pub spread: f64,
    /// √(bias² + spread²).
    pub rmse: f64,
    /// Prompts whose segment gave no value (too few rollouts).
    pub no_value: u32,
}

/// Draws `prompts × m` rewards for each m (seeded by `seed` and m) and
/// scores every estimator against `family.best_of(n)`.
///
/// ```
/// use rollcall::tail::Estimator;
/// use rollcall_cli::study::{study, RewardFamily, StudyBackend};
/// let family = RewardFamily::parse("gaussian", 0.0, 1.0, 0.5).unwrap();
/// let rows = study(family, 128, &[32], 500, &[Estimator::Tea { n: 128, alpha: 0.25 }], 1, StudyBackend::Cpu).unwrap();
/// assert!(rows[0].bias.abs() < 0.3);
/// ```
pub fn study(
    family: RewardFamily,
    n: u32,
    ms: &[u32],
    prompts: u32,
    estimators: &[Estimator],
    seed: u64,
    mut backend: StudyBackend<'_>,
) -> Result<Vec<StudyRow>> {
    let truth = family.best_of(n);
    let mut rows = Vec::new();
    for &m in ms {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(m) << 32));
        let total = u64::from(m) * u64::from(prompts);
        if total > u64::from(u32::MAX) {
            return Err(Error::InvalidEstimator(format!(
                "{prompts} prompts x {m} rollouts is too many"
            )));
        }
        let rewards: Vec<f32> = (0..total).map(|_| family.draw(&mut rng)).collect();
        let offsets: Vec<u32> = (0..=prompts).map(|s| s * m).collect();
        for &est in estimators {
            let out = match &mut backend {
                StudyBackend::Gpu(tail) => tail.estimate(&rewards, &offsets, est)?,
                StudyBackend::Cpu => cpu::estimate(&rewards, &offsets, est)?,
            };
            let values: Vec<f64> = out
                .values
                .iter()
                .zip(&out.status)
                .filter(|(v, s)| v.is_finite() && !matches!(s, SegmentStatus::TooFew))
                .map(|(&v, _)| f64::from(v))
                .collect();
            let count = values.len().max(1) as f64;
            let mean = values.iter().sum::<f64>() / count;
            let var =
                values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0).max(1.0);
            let (bias, spread) = if values.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (mean - truth, var.sqrt())
            };
            rows.push(StudyRow {
                estimator: est.name().to_string(),
                m,
                bias,
                spread,
                rmse: (bias * bias + spread * spread).sqrt(),
                no_value: prompts - values.len() as u32,
            });
        }
    }
    Ok(rows)
}
