//! Route forcing, the read-once yardstick, GPU timing and the shared math's
//! twins, for benchmarks and route tests (feature `internals`). Not a stable
//! API: names and behaviour change with the kernels.
//!
//! Knobs on the public kernel objects are gated the same way:
//! `Sampler::with_split_rows`, `Sampler::with_max_chunk_bytes`,
//! `Sampler::with_candidate_capacity`, `Compactor::with_grid_width`,
//! `TailStats::with_grid_width`.

pub use crate::gpu::timing::{time_gpu, GpuTimer, Timing, TimingSource};
pub use crate::math::philox::{exponential_from_bits, philox4x32_10, PhiloxWords, KNOWN_ANSWERS};
pub use crate::math::special;
pub use crate::read_once::ReadOnce;
pub use crate::sampling::gpu::{SplitRows, SPLIT_BELOW_ROWS};

/// Tokens of a row in one tile of a split first pass.
pub const TILE_TOKENS: u32 = crate::sampling::TILE_TOKENS;

/// Flags one compaction workgroup handles.
pub const COMPACT_BLOCK: u32 = crate::compact::BLOCK;
