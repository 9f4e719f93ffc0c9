//! # rollcall
//!
//! Portable GPU compute kernels (wgpu + WGSL) for the test-time side of LLM
//! inference and reinforcement learning, each with a CPU twin of identical
//! semantics that every GPU result is tested against.
//!
//! - [`sampling`]: batched token sampling from logits (temperature, greedy,
//!   top-k, top-p, min-p; f32/f16/bf16; per-row seeds, batch invariant).
//! - [`voting`]: adaptive majority voting (vote tables, stopping rules,
//!   rewards, the round scheduler, replay of recorded votes) and
//!   [`compact`]: stream compaction of live prompts.
//! - [`tail`]: best-of-N tail statistics (segmented sort and top-k, the
//!   exact expected max of N, pass@k, TEA, Prefix-TEA, a generalised Pareto
//!   tail, GRPO's baseline).
//! - [`reference`](mod@reference): a kernel that only reads the same logits once, the
//!   yardstick sampler throughput is reported against.
//! - [`timing`]: GPU time of an encoded workload (timestamp queries, or wall
//!   time when the device has none).
//! - [`synthetic`]: seeded model-like or flat logits for benchmarks.
//!
//! ```no_run
//! use rollcall::{GpuContext, HostLogits, Sampler, SamplingParams};
//! let ctx = GpuContext::new()?;              // honours WGPU_BACKEND, WGPU_ADAPTER_NAME
//! let mut sampler = Sampler::new(&ctx)?;     // pipelines built once
//! let logits = vec![0.0f32; 4 * 32000];
//! let params = vec![SamplingParams::new(0.7).top_p(0.95).seed(1234); 4];
//! for row in sampler.sample(HostLogits::F32(&logits), 32000, &params)? {
//!     println!("{} {}", row.token, row.logprob);
//! }
//! # Ok::<(), rollcall::Error>(())
//! ```

pub mod compact;
mod math;
pub mod context;
pub mod error;
pub mod logits;
pub mod philox;
pub mod reference;
pub mod sampling;
pub mod shader;
pub mod tail;
pub mod timing;
pub mod voting;

pub use context::{GpuContext, SyncCounts};
pub use error::{Error, Result};
pub use sampling::{
    HostLogits, LogitsBinding, LogitsDtype, RowStatus, SampleBatch, SampleResult, Sampler,
    SamplingParams, NO_TOKEN,
};
