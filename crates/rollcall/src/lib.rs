//! # rollcall
//!
//! Portable GPU compute kernels (wgpu + WGSL) for the test-time side of LLM
//! inference and reinforcement learning, each with a CPU twin of identical
//! semantics that every GPU result is tested against.
//!
//! - [`sampling`]: batched token sampling from logits (temperature, greedy,
//!   top-k, top-p, min-p; f32/f16/bf16; per-row seeds, batch invariant):
//!   [`Sampler`] on the GPU, [`sampling::cpu`] its twin.
//! - [`speculative`]: speculative decoding's verification step (draft
//!   tokens with or without draft distributions, ragged per request):
//!   [`speculative::Verifier`] and its twin [`speculative::cpu`].
//! - [`voting`]: adaptive majority voting: [`voting::VoteTables`], the
//!   stopping rules, the round [`voting::Scheduler`], rewards and GRPO
//!   advantages, with [`voting::cpu`] as the twin; [`compact`]: stream
//!   compaction of live prompts.
//! - [`tail`]: best-of-N tail statistics (segmented sort and top-k, the exact
//!   expected max of N, pass@k, TEA, Prefix-TEA, a generalised Pareto tail,
//!   GRPO's baseline): [`tail::TailStats`] and [`tail::cpu`].
//!
//! Every kernel object is built on a [`GpuContext`], which either opens its
//! own device or adopts an engine's. Each has a host path (slices in, results
//! out, one submit and one readback) and an engine path (`encode*`: recorded
//! into the caller's encoder, nothing submitted or read back).
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
mod error;
mod gpu;
#[cfg(feature = "internals")]
pub mod internals;
#[cfg(test)]
mod layout_tests;
mod math;
#[cfg(any(test, feature = "internals"))]
mod read_once;
pub mod sampling;
#[cfg(test)]
mod shader_tests;
pub mod speculative;
pub mod tail;
pub mod voting;

pub use error::{Error, Result};
pub use gpu::{GpuContext, HostLogits, LogitsBinding, LogitsDtype, SyncCounts};
pub use sampling::{RowStatus, SampleBatch, SampleResult, Sampler, SamplingParams, NO_TOKEN};

// The README's examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
