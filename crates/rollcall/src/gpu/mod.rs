//! GPU plumbing shared by every kernel family: the context (device, queue,
//! counted submits and readbacks, device errors), the typed pipeline cache,
//! shader composition, the grow-and-reuse buffer, logits views with dispatch
//! chunking, and GPU timing.

pub mod buffer;
pub mod cache;
pub mod context;
pub mod logits;
pub mod shader;
// GPU timing serves the benchmarks (feature `internals`) and the tests.
#[cfg(any(test, feature = "internals"))]
pub mod timing;

pub use context::{GpuContext, SyncCounts};
pub use logits::{HostLogits, LogitsBinding, LogitsDtype};
