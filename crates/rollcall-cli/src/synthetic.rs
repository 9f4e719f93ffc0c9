//! Seeded synthetic logits for benchmarks and the command-line tool.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How synthetic logits are distributed within a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsShape {
    /// Like a language model's: a Gaussian body (σ = 2) and 40 head tokens at
    /// random positions, decreasing in steps of 1/4 from 4 nats above the
    /// body's total mass, so a few dozen tokens hold nearly all the mass and
    /// the top token about a fifth of it.
    Model,
    /// All logits within ±0.01 of each other: the worst case for filters, since
    /// no early exit can settle a threshold.
    Flat,
}

/// Head tokens of a [`LogitsShape::Model`] row.
const HEAD: usize = 40;
/// Standard deviation of a [`LogitsShape::Model`] row's body.
const BODY_SIGMA: f64 = 2.0;

/// `rows × vocab` row-major logits drawn from `shape`, a pure function of the
/// arguments.
///
/// ```
/// use rollcall_cli::synthetic::{logits, LogitsShape};
/// let a = logits(2, 1000, LogitsShape::Model, 7);
/// assert_eq!(a.len(), 2000);
/// assert_eq!(a, logits(2, 1000, LogitsShape::Model, 7));
/// assert!(logits(1, 1000, LogitsShape::Flat, 7).iter().all(|v| v.abs() <= 0.01));
/// ```
pub fn logits(rows: usize, vocab: usize, shape: LogitsShape, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(rows * vocab);
    for _ in 0..rows {
        let start = out.len();
        match shape {
            LogitsShape::Flat => {
                out.extend((0..vocab).map(|_| rng.random_range(-0.01f32..=0.01)));
            }
            LogitsShape::Model => {
                out.extend((0..vocab).map(|_| (BODY_SIGMA * normal(&mut rng)) as f32));
                // ln of the body's expected mass: vocab * exp(σ² / 2).
                let body = (vocab as f64).ln() + BODY_SIGMA * BODY_SIGMA / 2.0;
                for j in 0..HEAD.min(vocab) {
                    let i = rng.random_range(0..vocab);
                    let head = body + 4.0 - j as f64 / 4.0 + 0.5 * normal(&mut rng);
                    out[start + i] = head as f32;
                }
            }
        }
    }
    out
}

/// A standard normal variate (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
