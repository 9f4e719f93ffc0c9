//! Route forcing, the read-once yardstick, GPU timing and the shared math's
//! twins, for benchmarks and route tests (feature `internals`). Not a stable
//! API: names and behaviour change with the kernels.
//!
//! Knobs on the public kernel objects are gated the same way:
//! `Sampler::with_split_rows`, `Sampler::with_max_chunk_bytes`,
//! `Sampler::with_candidate_capacity`, `Compactor::with_grid_width`,
//! `TailStats::with_grid_width`, `EditKernels::with_max_chunk_bytes`,
//! `VoteTables::with_count_route`, `VoteTables::with_decide_route`,
//! `VoteTables::decide_with_fewest`, `VoteTables::encode_decide_list`,
//! `Scheduler::with_decide_route`, `VoteTables::with_reward_route`,
//! `VoteTables::encode_rewards`, `Scheduler::with_reward_route`,
//! `TailStats::with_estimate_route`.
//!
//! The logit edits (bias, penalties, min_tokens, the GPU token history) are
//! reached from here until the sampler uses them.

pub use crate::gpu::logits::Chunk;
pub use crate::gpu::timing::{time_gpu, GpuTimer, Timing, TimingSource};
pub use crate::math::fold::{tree_fold, FoldValues, FoldedValues, FOLD_WIDTH};
pub use crate::math::philox::{exponential_from_bits, philox4x32_10, PhiloxWords, KNOWN_ANSWERS};
pub use crate::math::segment;
pub use crate::math::special;
pub use crate::read_once::ReadOnce;
pub use crate::sampling::edits::{
    round_to_halves, EditKernels, EditState, GpuHistoryRow, HistoryEntry, HistoryTwin, OwnedLogits,
    RowHistory, RowTable,
};
pub use crate::sampling::gpu::{SplitRows, SPLIT_BELOW_ROWS};
pub use crate::tail::route::EstimateRoute;
pub use crate::voting::gpu::{CountRoute, DecideRoute, RewardRoute};

/// Tokens of a row in one tile of a split first pass.
pub const TILE_TOKENS: u32 = crate::sampling::TILE_TOKENS;

/// Flags one compaction workgroup handles.
pub const COMPACT_BLOCK: u32 = crate::compact::BLOCK;

/// Prompts whose posteriors one workgroup of the calibrated rule's EM step
/// adds into one row of sums (workgroup size × prompts a lane).
pub const CALIBRATED_SUM_PROMPTS: u32 =
    crate::voting::gpu::WORKGROUP * crate::voting::calibrated::gpu::LANE_PROMPTS;

/// Whether the sampler draws a row with `params` at `vocab` as filtered
/// (top-k, top-p or min-p in force; never for greedy rows): the host's one
/// copy of the rule, which picks the drawing kernel. Errors as
/// `Sampler::sample` does for invalid parameters.
///
/// ```
/// use rollcall::{internals::is_filtered, SamplingParams};
/// assert!(is_filtered(&SamplingParams::new(0.7).top_k(5), 100)?);
/// assert!(!is_filtered(&SamplingParams::new(0.7).top_k(100), 100)?);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn is_filtered(params: &crate::SamplingParams, vocab: u32) -> crate::Result<bool> {
    let gpu = crate::sampling::validate_params(std::slice::from_ref(params))?;
    Ok(gpu[0].is_filtered(vocab))
}
