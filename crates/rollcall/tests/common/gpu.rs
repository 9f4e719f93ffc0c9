#![allow(dead_code)]
//! The GPU context for tests: fail, never skip, when no adapter is found,
//! unless the user opted out with ROLLCALL_ALLOW_NO_GPU=1 (CI never does).
//! Shared by the library's and the command's tests.

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

/// A context of its own, for tests that count the context's submits and
/// readbacks: the other tests of a binary use the shared one concurrently.
/// `None` under the same opt-out as [`gpu`].
pub fn own_gpu() -> Option<rollcall::GpuContext> {
    gpu()?;
    Some(rollcall::GpuContext::new().expect("a second context on the adapter just found"))
}
