//! Speculative decoding's verification step: a batch of requests, each with
//! up to `k` draft tokens and the target model's logits at their `k + 1`
//! positions; accepts a prefix of the drafts and emits one more token, so
//! that the emitted tokens are distributed exactly as sampling from the
//! target (Leviathan et al. 2023, Chen et al. 2023).
//!
//! # Semantics
//! Position `i` of a request (0-based; position `d` is the bonus position
//! after its `d` drafts) is processed exactly as [`Sampler`](crate::Sampler)
//! processes a row with the request's [`SamplingParams`] at step
//! `step + i` (wrapping): token mask, temperature, top-k, top-p, min-p,
//! top-nσ. Call `p_i` that processed distribution.
//! - **Drafts without a distribution** (n-gram, prompt lookup, a greedy
//!   draft model: `q_i` one-hot on the draft token `x_i`) and **greedy
//!   rows** (whatever the draft): position `i` draws its token `y_i` as the
//!   sampler would; `x_i` is accepted when `y_i == x_i`, and at the first
//!   mismatch `y_i` is emitted. This is the rejection rule for a one-hot `q`
//!   (accept with probability `p_i(x_i)`; on rejection a draw from `p_i`
//!   without `x_i`), and it emits the tokens non-speculative sampling with
//!   the same seed would emit at the same steps.
//! - **Drafts with a distribution**: draft logits ([`DraftDistribution::Logits`])
//!   are processed with the request's parameters like the target's (mask,
//!   temperature, filters); draft probabilities ([`DraftDistribution::Probs`])
//!   are the distribution the draft was drawn from, used as given (as vLLM's
//!   `RejectionSampler` does). `x_i` is accepted when `u_i ≤ p_i(x_i) /
//!   q_i(x_i)` with `u_i` uniform in (0, 1] (24 bits, from Philox with the
//!   request's seed and step `step + i`); never where `q_i(x_i) = 0` (as
//!   vLLM). At the first rejection the emitted token is drawn from
//!   `max(0, p_i − q_i)` normalised (where `q_i(x_i) = 0`, or where the
//!   residual is zero to rounding, from `p_i`).
//! - When all `d` drafts are accepted, the bonus token is position `d`'s
//!   draw.
//!
//! Outputs per request: the accepted count, the emitted tokens (accepted
//! drafts, then the correction or bonus token), their log-probabilities under
//! the target's `softmax(z)` at their position (the sampler's convention:
//! after mask and temperature, before the filters), and per draft position
//! the acceptance probability `min(1, p_i(x_i) / q_i(x_i))` (for deterministic
//! drafts `p_i(x_i)`), whose mean over positions estimates the acceptance
//! rate `Σ_x min(p(x), q(x))`. A position whose target row has no valid token
//! ends the request with [`NO_TOKEN`] and [`RowStatus::NoValidToken`].
//!
//! Logit bias, penalties and `min_tokens` apply as in the sampler, from the
//! request's token history ([`VerifyBatch::with_history`],
//! [`VerifyOptions::histories`]) with the drafts before the position counted
//! as output tokens (vLLM's rule); the draft's own logits get none of them.
//! On the engine path the emitted tokens join the request's history on the
//! GPU. Top log-probabilities are not returned by verification: a request
//! that asks for them is refused with a typed error.
//!
//! # Passes over memory
//! Every target row is read as one sampling row (one pass, plus the chosen
//! stream's 1/256); draft logits likewise; draft probabilities are turned to
//! log space once (a read and a write). A request that rejects a draft with a
//! distribution reads that position's target and draft rows once more, plus
//! one stream of each. Deterministic drafts cost what sampling the `k + 1`
//! target rows costs.

pub mod cpu;
pub(crate) mod gpu;

pub use gpu::{DraftBinding, Verifier, VerifyBatch};

use crate::sampling::mask::HostMask;
use crate::sampling::RowHistory;
use crate::sampling::{GpuRowParams, NO_PROBE};
use crate::{Error, HostLogits, Result, RowStatus, SamplingParams};

pub use crate::sampling::NO_TOKEN;

/// Philox purposes of the acceptance uniforms and the residual draw's races
/// (the sampler's stream and token races use 0 and 1).
pub(crate) const PURPOSE_ACCEPT: u32 = 2;
pub(crate) const PURPOSE_RESIDUAL_STREAM: u32 = 3;
pub(crate) const PURPOSE_RESIDUAL_TOKEN: u32 = 4;
/// `VerifyRow::flags`: accept exactly when the draw equals the draft token.
pub(crate) const VERIFY_COMPARE: u32 = 1;
/// `Verdict::mode` values.
pub(crate) const MODE_DONE: u32 = 0;
pub(crate) const MODE_FILL: u32 = 1;
pub(crate) const MODE_RESIDUAL: u32 = 2;

/// Draft tokens of a batch, ragged: request `r` has `lens[r]` tokens, back
/// to back in `tokens` in request order.
#[derive(Clone, Copy, Debug)]
pub struct Drafts<'a> {
    /// Every request's draft tokens, back to back.
    pub tokens: &'a [u32],
    /// Draft tokens per request (0 is allowed: the request then samples its
    /// one position).
    pub lens: &'a [u32],
}

/// What is known of the distribution each draft token was drawn from.
#[derive(Clone, Copy, Debug, Default)]
pub enum DraftDistribution<'a> {
    /// Nothing: the draft is deterministic (n-gram, prompt lookup, a greedy
    /// draft model).
    #[default]
    Deterministic,
    /// The draft model's logits, one row per draft token (`Σ lens` rows of
    /// `vocab`), processed with the request's parameters.
    Logits(HostLogits<'a>),
    /// The draft's probabilities, one row per draft token, used as given.
    Probs(HostLogits<'a>),
}

/// Options of a host call.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// The draft's distribution.
    pub draft: DraftDistribution<'a>,
    /// Token masks per target position (`Σ (lens + 1)` entries, in request
    /// then position order); a draft row reads its position's mask.
    pub mask: Option<HostMask<'a>>,
    /// One token history per request (bias, penalties, `min_tokens`): needed
    /// by requests with penalties.
    pub histories: Option<&'a [RowHistory<'a>]>,
}

/// One request's outcome.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// Draft tokens accepted.
    pub accepted: u32,
    /// The emitted tokens: the accepted drafts, then the correction or bonus
    /// token (`accepted + 1` tokens; the last is [`NO_TOKEN`] when its
    /// position had no valid token).
    pub tokens: Vec<u32>,
    /// Their log-probabilities under the target's `softmax(z)`.
    pub logprobs: Vec<f32>,
    /// Per draft token, `min(1, p(x) / q(x))` at its position (`p(x)` for
    /// deterministic drafts); positions after the first rejection are not
    /// evaluated and read 0.
    pub acceptance: Vec<f32>,
    /// [`RowStatus::NoValidToken`] when a position on the way had no valid
    /// token.
    pub status: RowStatus,
}

/// A request as the verification kernel reads it (`VerifyRow`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuVerifyRow {
    pub first_target: u32,
    pub drafts: u32,
    pub first_draft: u32,
    pub flags: u32,
    pub seed: [u32; 2],
    pub step: [u32; 2],
    pub draft_elem: u32,
    pub pad: [u32; 3],
}

/// A request's outcome as the kernels write it (`Verdict`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuVerdict {
    pub accepted: u32,
    pub emitted: u32,
    pub status: u32,
    pub mode: u32,
    pub first_target: u32,
    pub draft_row: u32,
    pub draft_elem: u32,
    pub out_base: u32,
}

/// The uniform record of the small kernels (`VerifyInfo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct VerifyInfo {
    pub requests: u32,
    pub stride: u32,
    pub draft_rows: u32,
    pub rows: u32,
    pub grid_width: u32,
    pub elem_base: u32,
    pub out_elem_base: u32,
    pub pad: u32,
}

/// How a batch's requests map to sampled rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Layout {
    /// Per request: its first target row (relative to the target rows) and
    /// its first draft token.
    pub first_target: Vec<u32>,
    pub first_draft: Vec<u32>,
    /// Target rows `Σ (lens + 1)` and draft tokens `Σ lens`.
    pub targets: u32,
    pub drafts: u32,
    /// The most drafts a request has in this batch.
    pub max_drafts: u32,
}

impl Layout {
    /// The layout of `lens`, or a typed error for a batch that does not fit
    /// in u32 indices.
    pub(crate) fn of(lens: &[u32]) -> Result<Self> {
        let mut layout = Layout::default();
        let (mut targets, mut drafts) = (0u64, 0u64);
        for &d in lens {
            layout.first_target.push(targets as u32);
            layout.first_draft.push(drafts as u32);
            targets += u64::from(d) + 1;
            drafts += u64::from(d);
            layout.max_drafts = layout.max_drafts.max(d);
            if targets > u64::from(u32::MAX / 2) {
                return Err(Error::InvalidDrafts(format!(
                    "{targets} target positions and more: past the batch's u32 indices"
                )));
            }
        }
        layout.targets = targets as u32;
        layout.drafts = drafts as u32;
        Ok(layout)
    }
}

/// Checks a request batch's parameters for verification and converts them;
/// penalties need histories.
pub(crate) fn validate_verify_params(
    params: &[SamplingParams],
    histories: bool,
) -> Result<Vec<GpuRowParams>> {
    let gpu = crate::sampling::validate_params(params)?;
    for (row, p) in params.iter().enumerate() {
        if p.uses_penalties() && !histories {
            return Err(Error::InvalidArgument(format!(
                "row {row} has penalties, which need its history (VerifyOptions::histories, \
                 VerifyBatch::with_history)"
            )));
        }
        if p.top_logprobs != 0 {
            return Err(Error::InvalidDrafts(format!(
                "row {row}: top_logprobs is not returned by speculative verification"
            )));
        }
    }
    Ok(gpu)
}

/// Checks draft tokens and lengths against the requests and the vocabulary.
pub(crate) fn check_drafts(drafts: &Drafts<'_>, requests: usize, vocab: u32) -> Result<Layout> {
    if vocab == 0 {
        return Err(Error::EmptyVocab);
    }
    if drafts.lens.len() != requests {
        return Err(Error::InvalidDrafts(format!(
            "{} draft lengths for {requests} requests",
            drafts.lens.len()
        )));
    }
    let layout = Layout::of(drafts.lens)?;
    if drafts.tokens.len() as u64 != u64::from(layout.drafts) {
        return Err(Error::InvalidDrafts(format!(
            "the lengths add up to {} draft tokens, but {} were given",
            layout.drafts,
            drafts.tokens.len()
        )));
    }
    for (r, (&first, &d)) in layout.first_draft.iter().zip(drafts.lens).enumerate() {
        let tokens = &drafts.tokens[first as usize..(first + d) as usize];
        if let Some(&token) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(Error::TokenOutOfRange {
                row: r,
                what: "draft",
                token,
                vocab,
            });
        }
    }
    Ok(layout)
}

/// Checks a host call's logits and draft distribution shapes and the draft
/// probabilities' values.
pub(crate) fn check_host_call(
    target: &HostLogits<'_>,
    vocab: u32,
    layout: &Layout,
    options: &VerifyOptions<'_>,
) -> Result<()> {
    let v = vocab as usize;
    let expected = (layout.targets as usize).saturating_mul(v);
    if target.len() != expected {
        return Err(Error::InvalidDrafts(format!(
            "target logits hold {} values; {} positions of vocabulary {vocab} need {expected}",
            target.len(),
            layout.targets
        )));
    }
    let draft_rows = |values: &HostLogits<'_>, what: &str| {
        let expected = (layout.drafts as usize).saturating_mul(v);
        if values.len() != expected {
            return Err(Error::InvalidDrafts(format!(
                "draft {what} hold {} values; {} draft tokens of vocabulary {vocab} need {expected}",
                values.len(),
                layout.drafts
            )));
        }
        Ok(())
    };
    match &options.draft {
        DraftDistribution::Deterministic => {}
        DraftDistribution::Logits(values) => draft_rows(values, "logits")?,
        DraftDistribution::Probs(values) => {
            draft_rows(values, "probabilities")?;
            if let Some(i) = (0..values.len()).find(|&i| {
                let p = values.get_f32(i);
                !(p.is_finite() && p >= 0.0)
            }) {
                return Err(Error::InvalidDrafts(format!(
                    "draft probability {} (row {}, token {}) is not a finite number >= 0",
                    values.get_f32(i),
                    i / v,
                    i % v
                )));
            }
        }
    }
    if let Some(mask) = &options.mask {
        crate::sampling::mask::check_host_mask(mask, vocab, layout.targets as usize)?;
    }
    if let Some(histories) = options.histories {
        if histories.len() != layout.first_target.len() {
            return Err(Error::LengthMismatch {
                what: "histories (one per request)",
                expected: layout.first_target.len(),
                got: histories.len(),
            });
        }
    }
    Ok(())
}

/// The distinct tokens a request's history can reach in one verification:
/// its own, every draft, and the emitted token.
pub(crate) fn history_room(histories: &[RowHistory<'_>], max_drafts: u32) -> Result<u32> {
    let room = histories
        .iter()
        .map(|h| h.prompt.len() + h.output.len() + h.logit_bias.len() + h.stop_tokens.len())
        .max()
        .unwrap_or(0)
        .saturating_add(max_drafts as usize + 1);
    u32::try_from(room)
        .map_err(|_| Error::InvalidArgument(format!("a history of {room} tokens is past u32")))
}

/// The sampled rows of a batch: the draft rows (one per draft token, only
/// for drafts with logits or probabilities), then the target rows. Each is
/// its request's parameters at step `step + position`, probing the draft
/// token at its position (`probes`: the draft token's index, or
/// [`NO_PROBE`] for bonus positions), asking for its state when the
/// request verifies by the rejection rule.
pub(crate) fn sampled_rows(
    params: &[GpuRowParams],
    layout: &Layout,
    lens: &[u32],
    with_draft_rows: bool,
    probabilities: bool,
    mask_rows: Option<&[Option<u32>]>,
) -> (Vec<GpuRowParams>, Vec<u32>) {
    let mut drafts = Vec::new();
    let mut targets = Vec::with_capacity(layout.targets as usize);
    let mut draft_sources = Vec::new();
    let mut target_sources = Vec::with_capacity(layout.targets as usize);
    for (r, p) in params.iter().enumerate() {
        let d = lens[r];
        let compare = !with_draft_rows || p.is_greedy();
        let step = u64::from(p.step[0]) | (u64::from(p.step[1]) << 32);
        for i in 0..=d {
            let t = layout.first_target[r] + i;
            let mut row = *p;
            row.step = crate::math::philox::split_u64(step.wrapping_add(u64::from(i)));
            row.mask_row = mask_rows
                .and_then(|rows| rows[t as usize])
                .unwrap_or(crate::sampling::NO_MASK);
            if !compare {
                row.flags |= crate::sampling::FLAG_WRITE_STATE;
            }
            let source = if i < d {
                layout.first_draft[r] + i
            } else {
                NO_PROBE
            };
            targets.push(row);
            target_sources.push(source);
            if with_draft_rows && i < d {
                let mut draft = row;
                if probabilities {
                    // Used as given: log-probabilities at T = 1, no filter,
                    // no mask.
                    draft = GpuRowParams {
                        inv_temperature: 1.0,
                        top_k: 0,
                        top_p: 1.0,
                        flags: row.flags & crate::sampling::FLAG_WRITE_STATE,
                        mask_row: crate::sampling::NO_MASK,
                        ..row
                    };
                }
                drafts.push(draft);
                draft_sources.push(source);
            }
        }
    }
    drafts.extend(targets);
    draft_sources.extend(target_sources);
    (drafts, draft_sources)
}

/// The request records of the verification kernel.
pub(crate) fn verify_rows(
    params: &[GpuRowParams],
    layout: &Layout,
    lens: &[u32],
    with_draft_rows: bool,
    draft_elem: &[u32],
) -> Vec<GpuVerifyRow> {
    params
        .iter()
        .enumerate()
        .map(|(r, p)| GpuVerifyRow {
            first_target: layout.first_target[r],
            drafts: lens[r],
            first_draft: layout.first_draft[r],
            flags: if !with_draft_rows || p.is_greedy() {
                VERIFY_COMPARE
            } else {
                0
            },
            seed: p.seed,
            step: p.step,
            draft_elem: draft_elem.get(r).copied().unwrap_or(0),
            pad: [0; 3],
        })
        .collect()
}

/// The uniform in (0, 1] that decides position `offset`'s acceptance (the
/// shader's `accept_uniform`).
pub(crate) fn accept_uniform(seed: [u32; 2], step: [u32; 2], offset: u32) -> f32 {
    let lo = step[0].wrapping_add(offset);
    let hi = step[1].wrapping_add(u32::from(lo < step[0]));
    let words = crate::math::philox::philox4x32_10([0, lo, hi, PURPOSE_ACCEPT], seed);
    ((words[0] >> 8) as f32 + 1.0) * 5.960_464_5e-8
}

/// ln of a probability's bits (the shader's `log_probability_bits`):
/// positive normal numbers only; 0, subnormals, negatives and NaN are −inf,
/// +inf stays +inf.
pub(crate) fn log_probability(p: f32) -> f32 {
    let bits = p.to_bits();
    if p == f32::INFINITY {
        return p;
    }
    let exponent = (bits >> 23) & 0xFF;
    if bits & 0x8000_0000 != 0 || exponent == 0 || exponent == 0xFF {
        return f32::NEG_INFINITY;
    }
    p.ln()
}
