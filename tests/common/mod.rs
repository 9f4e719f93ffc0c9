//! Shared test helpers: the GPU context (fail, never skip, when no adapter is
//! found unless ROLLCALL_ALLOW_NO_GPU=1), and seeded random inputs.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

/// The opt-out for machines with no adapter at all. CI never sets it.
pub const ALLOW_NO_GPU: &str = "ROLLCALL_ALLOW_NO_GPU";

/// The shared context, or `None` when the user opted out and no adapter exists.
pub fn gpu() -> Option<rollcall::GpuContext> {
    static CTX: OnceLock<Result<rollcall::GpuContext, String>> = OnceLock::new();
    match CTX.get_or_init(|| rollcall::GpuContext::new().map_err(|e| e.to_string())) {
        Ok(ctx) => Some(ctx.clone()),
        Err(e) if std::env::var(ALLOW_NO_GPU).as_deref() == Ok("1") => {
            eprintln!("skipping GPU test ({ALLOW_NO_GPU}=1): {e}");
            None
        }
        Err(e) => panic!(
            "GPU tests need an adapter and none was found: {e}. Install a Vulkan driver \
             (lavapipe: `.ci/install-lavapipe.sh`), or set {ALLOW_NO_GPU}=1 to skip GPU tests."
        ),
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Logits shaped like a model's: a few dozen tokens hold most of the mass over
/// a Gaussian body.
pub fn model_like_logits(rng: &mut ChaCha8Rng, vocab: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..vocab).map(|_| rng.random_range(-4.0f32..2.0)).collect();
    let head = vocab.min(40);
    for _ in 0..head {
        let i = rng.random_range(0..vocab);
        v[i] = rng.random_range(4.0f32..12.0);
    }
    v
}
