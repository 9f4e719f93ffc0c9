//! Batched token sampling from logits: temperature, greedy, top-k, top-p,
//! min-p and top-nσ per row; allowed-token bitmasks; logit bias,
//! repetition/presence/frequency penalties and `min_tokens` over a token
//! history kept on the GPU; top-N log-probabilities; several draws from one
//! row; f32, f16 and bf16 logits; per-row seed and step.
//!
//! # An engine step
//! In vLLM's v1 order:
//! 1. Raw log-probabilities ([`LogprobsMode::Raw`]) are taken from the
//!    model's logits as given.
//! 2. The row's token bitmask ([`mask`]): a disallowed token counts as −inf
//!    (whatever its bias: the mask wins over a +inf bias).
//! 3. Logit bias, then the penalties, from the row's history
//!    ([`SampleBatch::with_history`], [`RowHistory`]): `v = l + bias`; then
//!    with repetition `r ≠ 1` and the token in the prompt or the output,
//!    `v = v > 0 ? v · (1/r) : v · r` (`1/r` rounded once on the host); then
//!    for a token generated `c > 0` times `v = v − f·c`, `v = v − p`; then a
//!    stop token of a row that has produced fewer than `min_tokens` is −inf.
//!    These edits are made in place in the logits (16-bit logits store the
//!    edited value rounded to nearest even in their dtype) and undone after
//!    the draw, so the caller's buffer is unchanged afterwards; the sampled
//!    token is appended to the row's history by the step itself.
//! 4. Temperature and the filters below (top-k, top-p, min-p, top-nσ). Min-p
//!    keeps Hugging Face's place, after top-k and top-p; vLLM applies it
//!    before them. Top-nσ is, like min-p, a floor relative to the row's
//!    maximum: `z ≥ max − n·σ`, σ the standard deviation of the row's finite
//!    `z` (tested as `(max − z)² · N² ≤ n² · (N·Σz² − (Σz)²)` in f32, no
//!    square root or division); it does not change the mass top-p targets.
//! 5. Outputs: the token, its log-probability, the kept count, a status, and
//!    the `top_logprobs` most likely tokens (up to [`MAX_TOP_LOGPROBS`],
//!    ranked by value, ties to the lower token) with their log-probabilities,
//!    processed (after steps 2–3 and temperature, before the filters) or raw.
//!
//! A batch row can read another row's logits ([`SampleBatch::set_logits_rows`],
//! [`SampleOptions::logits_rows`]): `n` draws from one row, each on its own
//! seed and step, with the bits `n` copies would give and no copy. Every
//! feature is per row and batch invariant; a batch in which no row uses a
//! feature runs kernels without it.
//!
//! # Contract
//! Per row, in this order (the convention of HF, vLLM and llama.cpp):
//! 1. NaN logits count as −inf; +inf is a legal logit and wins.
//! 2. `temperature < 1e-5` is greedy: the arg-max, lowest index among ties.
//!    Otherwise `z = l * (1 / T)` (the reciprocal is rounded to f32 once on the
//!    host, so the GPU and the CPU twin compute the same `z`).
//! 3. top-k keeps tokens whose `z` is ≥ the k-th largest (ties all kept);
//!    `top_k == 0` or `≥ vocab` is off.
//! 4. top-p, over what top-k kept, keeps the smallest set of most probable
//!    tokens whose mass reaches `top_p` (the crossing token and its ties kept);
//!    `top_p == 1` is off, `top_p == 0` keeps only the most probable token(s).
//!    Masses are `exp(z − max)` in 64-bit fixed point with resolution 2^−32 of
//!    the top token's weight, summed exactly, so the kept set does not depend
//!    on summation order. The target is `top_p` times the total: over the
//!    top-k set, its exact fixed-point mass; with top-k off, the row's
//!    `Σ exp(z − max)` as the first pass sums it in f32. Tokens lighter than
//!    2^−32 of the top token weigh zero here, so a `top_p` within their share
//!    of 1 (at most vocab × 2^−32) keeps the whole row.
//! 5. min-p drops tokens with `z − max < ln(min_p)` (probability below
//!    `min_p × p_max`); `min_p == 0` is off.
//! 6. One token is drawn with probability ∝ `exp(z)` over the kept set. When
//!    the row has +inf logits, the draw is uniform over them.
//!
//! Outputs per row: the token, its log-probability under the unfiltered
//! `softmax(z)` (for greedy rows under `softmax(l)`; `−ln(count)` for a +inf
//! token), how many tokens survived the filters, and a status. A row whose
//! logits are all −inf or NaN gets [`RowStatus::NoValidToken`], token
//! [`NO_TOKEN`] and log-probability −inf.
//!
//! # Randomness
//! The draw is a pure function of (row logits, row parameters, seed, step):
//! independent of batch size, position, chunking and adapter layout. Token `i`
//! belongs to stream `(i / 4) % 256`; a stream is chosen by an exponential race
//! over the streams' kept masses (Philox4x32-10 with counter `(stream / 4,
//! step_lo, step_hi, 0)` and key `seed`), then a token inside it by a race over
//! its kept tokens (counter `(i / 4, step_lo, step_hi, 1)`). This is exact in
//! distribution and draws 256 + vocab/256 random words per row instead of one
//! per token.
//!
//! # Passes over the logits (per row)
//! | mode | passes over the row |
//! | --- | --- |
//! | greedy | 1 |
//! | temperature only | 1, plus the chosen stream's 1/256 of the row |
//! | filtered, boundary gathered (the usual case) | 1, plus the streams whose maximum reaches a bound (a small fraction for a heavy head) |
//! | filtered, exact fallback | 2, plus 1 to 4 radix rounds per filter, plus 1/256 |
//! | token bitmask | no extra pass: one mask word per 32 tokens with the loads |
//! | top-nσ | no extra pass: two more sums in pass 1 |
//! | bias, penalties, `min_tokens` | two sparse dispatches that read the history's entries (not its capacity) and touch only its tokens |
//! | top-N log-probabilities | a separate pass 1 (per-stream states), then the streams whose maximum reaches the N-th largest stream maximum; raw mode one more read |
//!
//! In every mode a stream (1/256 of the row) that holds a NaN or +inf logit
//! is read once more, with the masked update; -inf logits (masks, padding)
//! cost nothing extra.
//!
//! f32 rows that start on a 16-byte boundary (vocab a multiple of 4 and the
//! binding's offset a multiple of 16 bytes) are read four logits per load;
//! other rows one logit per load, with the same results.
//!
//! Filtered rows (top-k, top-p, min-p) bound the kept set's boundary from the
//! 256 streams' maxima (the k-th largest maximum for top-k; for top-p the
//! largest maximum whose maxima above carry the target mass; `max + ln min_p`
//! for min-p), gather the tokens at or above the bound into workgroup memory
//! (reading only the streams whose maximum reaches it), and select the exact
//! thresholds there. When the gather overflows or the boundary lies below it
//! (a flat row), the kernel falls back to radix select over the whole row on
//! order-preserving u32 keys. Both routes compute the same thresholds and the
//! same per-stream masses, so the token never depends on the route (a test
//! drives both over the same rows). One CPU–GPU round trip per host call; none
//! on the engine path.

pub mod cpu;
pub mod edits;
pub(crate) mod gpu;
pub mod mask;

pub use edits::RowHistory;
pub use gpu::{SampleBatch, Sampler};
pub use mask::{HostMask, TokenMask};
/// Bytes of one top log-probability entry in [`SampleBatch::top_logprobs`]:
/// the token (`u32`) and its log-probability (`f32`).
pub const TOP_LOGPROB_BYTES: u64 = 8;

pub(crate) use crate::gpu::logits::{plan_chunks, Chunk, HostLogits, LogitsBinding};
use crate::{Error, Result};

/// Token id reported for rows with no valid token.
pub const NO_TOKEN: u32 = u32::MAX;

/// Temperatures below this are greedy.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Streams per row: part of the sampling contract (it fixes the draw).
pub(crate) const STREAMS: u32 = 256;

/// Consecutive tokens a stream visits at a time.
pub(crate) const GROUP: u32 = 4;
/// Groups of one stream in a tile: a stream's state is accumulated tile by
/// tile (TILE_GROUPS × STREAMS × GROUP = 16 384 tokens) and the tiles folded
/// in order, which is what lets a split pass compute tiles in parallel
/// without changing a bit.
pub(crate) const TILE_GROUPS: u32 = 16;
/// Tokens of a row in one tile.
pub(crate) const TILE_TOKENS: u32 = TILE_GROUPS * STREAMS * GROUP;

/// Sampling parameters of one row.
///
/// ```
/// use rollcall::SamplingParams;
/// let p = SamplingParams::new(0.7).top_k(50).top_p(0.9).min_p(0.05).seed(42).step(3);
/// assert_eq!(p.top_k, 50);
/// assert!(SamplingParams::greedy().is_greedy());
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Temperature; below 1e-5 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (ties kept); 0 is off.
    pub top_k: u32,
    /// Nucleus mass in [0, 1]; 1 is off.
    pub top_p: f32,
    /// Relative probability floor in [0, 1]; 0 is off.
    pub min_p: f32,
    /// Per-request seed.
    pub seed: u64,
    /// Position or step counter: each step gets fresh random numbers.
    pub step: u64,
    /// Top-nσ: keeps tokens whose scaled logit is at least `max − n·σ`, σ
    /// the standard deviation of the row's finite scaled logits; 0 is off.
    pub top_n_sigma: f32,
    /// Repetition penalty over prompt and output tokens (HF/vLLM rule:
    /// positive logits multiplied by `1 / r`, negative ones by `r`); 1 is off.
    /// Needs a token history ([`SampleBatch::with_history`]).
    pub repetition_penalty: f32,
    /// Presence penalty over output tokens (OpenAI rule: subtracted once from
    /// a token that occurs), in [−2, 2]; 0 is off.
    pub presence_penalty: f32,
    /// Frequency penalty over output tokens (OpenAI rule: subtracted once per
    /// occurrence), in [−2, 2]; 0 is off.
    pub frequency_penalty: f32,
    /// How many of the most likely tokens to return with their
    /// log-probabilities (OpenAI `top_logprobs`), 0 to [`MAX_TOP_LOGPROBS`].
    pub top_logprobs: u32,
}

/// Most top log-probabilities a row can ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

impl Default for SamplingParams {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl SamplingParams {
    /// Plain sampling at `temperature`, no filters, seed 0, step 0.
    pub fn new(temperature: f32) -> Self {
        Self {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
            step: 0,
            top_n_sigma: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_logprobs: 0,
        }
    }
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        Self::new(0.0)
    }
    /// Sets top-k.
    pub fn top_k(mut self, k: u32) -> Self {
        self.top_k = k;
        self
    }
    /// Sets top-p.
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self
    }
    /// Sets min-p.
    pub fn min_p(mut self, p: f32) -> Self {
        self.min_p = p;
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets the step.
    pub fn step(mut self, step: u64) -> Self {
        self.step = step;
        self
    }
    /// Sets top-nσ.
    pub fn top_n_sigma(mut self, n: f32) -> Self {
        self.top_n_sigma = n;
        self
    }
    /// Sets the repetition, presence and frequency penalties.
    pub fn penalties(mut self, repetition: f32, presence: f32, frequency: f32) -> Self {
        self.repetition_penalty = repetition;
        self.presence_penalty = presence;
        self.frequency_penalty = frequency;
        self
    }
    /// Sets how many top log-probabilities to return.
    pub fn top_logprobs(mut self, n: u32) -> Self {
        self.top_logprobs = n;
        self
    }
    /// Whether any penalty is on (it needs the row's token history).
    pub fn uses_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
    /// Whether this row decodes greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }
}

/// What a host-path call brings besides the rows' parameters.
///
/// ```
/// use rollcall::sampling::{mask, HostMask, SampleOptions};
/// let words = mask::allow_only(50, &[1, 2])?;
/// let options = SampleOptions::default().mask(HostMask { words: &words, rows: &[Some(0), None] });
/// assert!(options.mask.is_some());
/// # Ok::<(), rollcall::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleOptions<'a> {
    /// Allowed-token bitmasks and which rows read them.
    pub mask: Option<HostMask<'a>>,
    /// What the returned log-probabilities are taken from.
    pub logprobs: LogprobsMode,
    /// One history per row (prompt and output tokens for the penalties,
    /// logit biases, `min_tokens` stop tokens); needed when a row has
    /// penalties.
    pub histories: Option<&'a [RowHistory<'a>]>,
    /// Several draws from one logits row (vLLM's `n`, best-of-n): row `i`
    /// of the batch (one per parameter set) reads logits row
    /// `logits_rows[i]`, non-decreasing; the logits then hold as many rows
    /// as the largest index + 1 or more. Each draw has its own seed and
    /// step, and gets the token `n` copies of the row would give, without
    /// copying it. Not with histories (their edits are made in place).
    pub logits_rows: Option<&'a [u32]>,
}

impl<'a> SampleOptions<'a> {
    /// Sets the masks.
    pub fn mask(mut self, mask: HostMask<'a>) -> Self {
        self.mask = Some(mask);
        self
    }
    /// Sets the log-probability mode.
    pub fn logprobs(mut self, mode: LogprobsMode) -> Self {
        self.logprobs = mode;
        self
    }
    /// Sets the rows' histories.
    pub fn histories(mut self, histories: &'a [RowHistory<'a>]) -> Self {
        self.histories = Some(histories);
        self
    }
    /// Sets the logits row each batch row reads.
    pub fn logits_rows(mut self, rows: &'a [u32]) -> Self {
        self.logits_rows = Some(rows);
        self
    }

    /// Checks the histories against the rows; returns the distinct-token
    /// room a call's history tables need (0 when there are none).
    pub(crate) fn check_histories(&self, params: &[SamplingParams]) -> Result<u32> {
        let Some(histories) = self.histories else {
            if let Some(row) = params.iter().position(SamplingParams::uses_penalties) {
                return Err(Error::InvalidArgument(format!(
                    "row {row} has penalties, which need its history (SampleOptions::histories)"
                )));
            }
            return Ok(0);
        };
        if histories.len() != params.len() {
            return Err(Error::LengthMismatch {
                what: "histories (one per row)",
                expected: params.len(),
                got: histories.len(),
            });
        }
        let room = histories
            .iter()
            .map(|h| h.prompt.len() + h.output.len() + h.logit_bias.len() + h.stop_tokens.len() + 1)
            .max()
            .unwrap_or(1);
        u32::try_from(room).map_err(|_| {
            Error::InvalidArgument(format!("a history of {room} tokens is past u32 tokens"))
        })
    }
}

/// What a batch's log-probabilities (the sampled token's and the top-N) are
/// taken from. Both are before top-k, top-p, min-p and top-nσ.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogprobsMode {
    /// After masks, bias, penalties and temperature: `softmax(z)` (greedy
    /// rows: at temperature 1). vLLM's `processed_logprobs`.
    #[default]
    Processed,
    /// The model's logits as given: `softmax(l)`, before masks, bias,
    /// penalties and temperature (vLLM's default, `raw_logprobs`). Costs one
    /// more read of every row.
    Raw,
}

/// One of a row's top log-probabilities.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopLogprob {
    /// The token.
    pub token: u32,
    /// Its log-probability (in the batch's [`LogprobsMode`]).
    pub logprob: f32,
}

/// What a host-path call with options returns: one result per row, and
/// each row's top log-probabilities (as many as it asked for, fewer when
/// fewer tokens are valid; most likely first, ties to the lower token).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// One result per row.
    pub results: Vec<SampleResult>,
    /// Per row, its top log-probabilities.
    pub top_logprobs: Vec<Vec<TopLogprob>>,
}

/// How many feature sets there are.
pub(crate) const FEATURE_SETS: usize = 5;

/// Kernel variants a batch needs, chosen per batch so that rows without a
/// feature cost nothing when no row of the batch uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Features {
    /// Some row reads a token mask.
    pub(crate) masked: bool,
    /// Some row uses top-nσ (pass 1 also sums z and z²).
    pub(crate) sigma: bool,
    /// The raw first pass and top log-probabilities: no mask, no temperature.
    pub(crate) raw: bool,
}

impl Features {
    /// Every feature set a batch can need: the four mask and top-nσ sets,
    /// and the raw one.
    #[cfg(test)]
    pub(crate) const ALL: [Features; FEATURE_SETS] = [
        Features {
            masked: false,
            sigma: false,
            raw: false,
        },
        Features {
            masked: true,
            sigma: false,
            raw: false,
        },
        Features {
            masked: false,
            sigma: true,
            raw: false,
        },
        Features {
            masked: true,
            sigma: true,
            raw: false,
        },
        Features::RAW,
    ];

    /// The raw pass's features.
    pub(crate) const RAW: Features = Features {
        masked: false,
        sigma: false,
        raw: true,
    };

    /// Position in [`Features::ALL`] (below [`FEATURE_SETS`]).
    pub(crate) fn index(self) -> usize {
        if self.raw {
            4
        } else {
            usize::from(self.masked) | usize::from(self.sigma) << 1
        }
    }

    /// The features `rows` need.
    pub(crate) fn of(rows: &[GpuRowParams]) -> Self {
        Self {
            masked: rows.iter().any(|p| p.mask_row != NO_MASK),
            sigma: rows.iter().any(GpuRowParams::uses_top_n_sigma),
            raw: false,
        }
    }

    fn prelude(self) -> String {
        format!(
            "const MASKED: bool = {};\nconst SIGMA_SUMS: bool = {};\nconst RAW_LOGPROBS: bool = {};",
            self.masked, self.sigma, self.raw
        )
    }
}

/// Whether a row produced a token.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowStatus {
    /// A token was drawn.
    Ok,
    /// Every logit was −inf or NaN: token is [`NO_TOKEN`], log-probability −inf.
    NoValidToken,
}

impl RowStatus {
    /// The code the sampling shader writes (`STATUS_*` there).
    pub(crate) fn code(self) -> u32 {
        match self {
            RowStatus::Ok => 0,
            RowStatus::NoValidToken => 1,
        }
    }
}

/// The outcome for one row.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleResult {
    /// The token id, or [`NO_TOKEN`].
    pub token: u32,
    /// Log-probability of the token under the unfiltered, temperature-scaled
    /// softmax (under `softmax(l)` for greedy rows).
    pub logprob: f32,
    /// Tokens that survived the filters and can be drawn (1 for greedy rows).
    pub kept: u32,
    /// Whether a token was drawn.
    pub status: RowStatus,
}

pub(crate) const FLAG_GREEDY: u32 = 1;
pub(crate) const FLAG_MIN_P: u32 = 2;
pub(crate) const FLAG_TOP_N_SIGMA: u32 = 4;
/// The row writes its [`GpuRowState`] into its top log-probability slots.
pub(crate) const FLAG_WRITE_STATE: u32 = 8;
/// [`GpuRowState::flags`] bits.
pub(crate) const STATE_HAS_INF: u32 = 1;
pub(crate) const STATE_MIN_P: u32 = 2;
pub(crate) const STATE_SIGMA: u32 = 4;

/// A sampled row's distribution after its filters (`StateRecord` in
/// `shaders/shared/row_state.wgsl`): enough to evaluate any token's
/// probability later without redoing the filters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuRowState {
    pub row_max: f32,
    pub log_mass: f32,
    pub kept_max: f32,
    pub log_kept_mass: f32,
    pub threshold_key: u32,
    pub flags: u32,
    pub log_min_p: f32,
    pub sigma_n2: f32,
    pub sigma_rhs: f32,
    pub inf_count: u32,
    pub inv_temperature: f32,
    pub mask_row: u32,
    pub seed: [u32; 2],
    pub step: [u32; 2],
}

impl GpuRowState {
    /// Whether a token with scaled bits `z_bits` survives the row's filters
    /// (the shader's `is_kept`).
    pub(crate) fn is_kept(&self, z_bits: u32) -> bool {
        use crate::math::keys::{is_finite_bits, key_from_bits};
        if self.flags & STATE_HAS_INF != 0 {
            return z_bits == cpu::POS_INF_BITS;
        }
        if !is_finite_bits(z_bits) || key_from_bits(z_bits) < self.threshold_key {
            return false;
        }
        let z = f32::from_bits(z_bits);
        let d = self.row_max - z;
        (self.flags & STATE_MIN_P == 0 || (z - self.row_max) >= self.log_min_p)
            // NaN sums keep every token, as in the shader.
            && (self.flags & STATE_SIGMA == 0
                || (d * d) * self.sigma_n2 <= self.sigma_rhs
                || ((d * d) * self.sigma_n2).is_nan()
                || self.sigma_rhs.is_nan())
    }

    /// A token's probability under the row's kept set (the shader's
    /// `state_probability`).
    pub(crate) fn probability(&self, z_bits: u32) -> f32 {
        if !self.is_kept(z_bits) {
            0.0
        } else if self.flags & STATE_HAS_INF != 0 {
            (-(self.inf_count as f32).ln()).exp()
        } else {
            ((f32::from_bits(z_bits) - self.kept_max) - self.log_kept_mass).exp()
        }
    }
}
/// `mask_row` of a row that reads no token mask.
pub(crate) const NO_MASK: u32 = u32::MAX;
/// A row's `probe` when it reports no token's probability.
pub(crate) const NO_PROBE: u32 = u32::MAX;

/// A row's parameters as the shader reads them (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuRowParams {
    /// `1 / temperature`, rounded once to f32 (1 for greedy rows).
    pub inv_temperature: f32,
    /// top-k, 0 for off.
    pub top_k: u32,
    /// top-p.
    pub top_p: f32,
    /// `ln(min_p)` when min-p is on.
    pub log_min_p: f32,
    /// Seed, low and high words.
    pub seed: [u32; 2],
    /// Step, low and high words.
    pub step: [u32; 2],
    /// FLAG_GREEDY | FLAG_MIN_P | FLAG_TOP_N_SIGMA.
    pub flags: u32,
    /// Row of the token mask this row reads, or [`NO_MASK`].
    pub mask_row: u32,
    /// top-nσ's n (used when FLAG_TOP_N_SIGMA is set).
    pub top_n_sigma: f32,
    /// Top log-probabilities to return.
    pub top_logprobs: u32,
    /// The logits row this row reads when its batch gathers rows (several
    /// draws from one row); unused otherwise.
    pub logits_row: u32,
    /// A token whose probability under the row's processed, filtered
    /// distribution the row reports, or [`NO_PROBE`].
    pub probe: u32,
    /// Padding to 16-byte alignment.
    pub pad: [u32; 2],
}

impl GpuRowParams {
    pub(crate) fn is_greedy(&self) -> bool {
        self.flags & FLAG_GREEDY != 0
    }
    pub(crate) fn uses_min_p(&self) -> bool {
        self.flags & FLAG_MIN_P != 0
    }
    /// Whether top-nσ is in force (never for greedy rows).
    pub(crate) fn uses_top_n_sigma(&self) -> bool {
        !self.is_greedy() && self.flags & FLAG_TOP_N_SIGMA != 0
    }
    /// Whether top-k, top-p or min-p is in force at this vocabulary (as
    /// `use_top_k || use_top_p || use_min_p` in the shader's `sample_rows`;
    /// greedy rows never are): the host sends a batch with such a row to the
    /// full drawing kernel. The tests reach this rule through
    /// `internals::is_filtered`.
    ///
    /// The shader's copy cannot be derived from this one, so the route
    /// tests check that they agree: a batch this rule calls unfiltered is
    /// drawn by `finish_rows`, which ignores filters, after a separate first
    /// pass, and by `sample_rows` when the first pass is fused, so a row the
    /// shader filters and this rule does not gives different bits on the two
    /// routes. `every_route_gives_the_same_bits` (tests/sampling_gpu.rs)
    /// draws the unfiltered rows of its random batches (top-k at and past
    /// the vocabulary included) as batches of their own on every route and
    /// compares them with the full kernel's draw;
    /// `vector_and_scalar_routes_agree_bit_for_bit` (tests/vec4_routes.rs)
    /// compares plain batches on every route with the fused one. Keep them
    /// when changing either copy.
    pub(crate) fn is_filtered(&self, vocab: u32) -> bool {
        let use_top_k = self.top_k != 0 && self.top_k < vocab;
        !self.is_greedy()
            && (use_top_k || self.top_p < 1.0 || self.uses_min_p() || self.uses_top_n_sigma())
    }
}

/// Checks every row's parameters and converts them to the shader's layout.
pub(crate) fn validate_params(params: &[SamplingParams]) -> Result<Vec<GpuRowParams>> {
    params
        .iter()
        .enumerate()
        .map(|(row, p)| {
            if !(p.temperature.is_finite() && p.temperature >= 0.0) {
                return Err(Error::InvalidTemperature {
                    row,
                    value: p.temperature,
                });
            }
            if !(0.0..=1.0).contains(&p.top_p) {
                return Err(Error::InvalidTopP {
                    row,
                    value: p.top_p,
                });
            }
            if !(0.0..=1.0).contains(&p.min_p) {
                return Err(Error::InvalidMinP {
                    row,
                    value: p.min_p,
                });
            }
            if !(p.top_n_sigma.is_finite() && p.top_n_sigma >= 0.0) {
                return Err(Error::InvalidTopNSigma {
                    row,
                    value: p.top_n_sigma,
                });
            }
            if !(p.repetition_penalty.is_finite() && p.repetition_penalty > 0.0) {
                return Err(Error::InvalidPenalty {
                    row,
                    name: "repetition_penalty",
                    expected: "finite and > 0 (1 is off)",
                    value: p.repetition_penalty,
                });
            }
            for (name, value) in [
                ("presence_penalty", p.presence_penalty),
                ("frequency_penalty", p.frequency_penalty),
            ] {
                if !(-2.0..=2.0).contains(&value) {
                    return Err(Error::InvalidPenalty {
                        row,
                        name,
                        expected: "in [-2, 2] (0 is off)",
                        value,
                    });
                }
            }
            if p.top_logprobs > MAX_TOP_LOGPROBS {
                return Err(Error::TooManyLogprobs {
                    requested: p.top_logprobs,
                    max: MAX_TOP_LOGPROBS,
                });
            }
            let greedy = p.is_greedy();
            let mut flags = 0;
            if p.top_n_sigma > 0.0 {
                flags |= FLAG_TOP_N_SIGMA;
            }
            if greedy {
                flags |= FLAG_GREEDY;
            }
            if p.min_p > 0.0 {
                flags |= FLAG_MIN_P;
            }
            Ok(GpuRowParams {
                // Clamped to a normal number: a subnormal 1/T would be flushed
                // to zero on GPUs that flush denormals.
                inv_temperature: if greedy {
                    1.0
                } else {
                    (1.0 / p.temperature).max(f32::MIN_POSITIVE)
                },
                top_k: p.top_k,
                top_p: p.top_p,
                log_min_p: if p.min_p > 0.0 { p.min_p.ln() } else { 0.0 },
                seed: crate::math::philox::split_u64(p.seed),
                step: crate::math::philox::split_u64(p.step),
                flags,
                mask_row: NO_MASK,
                top_n_sigma: p.top_n_sigma,
                top_logprobs: p.top_logprobs,
                logits_row: 0,
                probe: NO_PROBE,
                pad: [0; 2],
            })
        })
        .collect()
}

/// Checks a host call with options: its shapes (with `logits_rows`, the
/// logits hold any whole number of rows and every batch row names one of
/// them, in non-decreasing order); returns the rows' parameters with their
/// logits rows set, and the number of logits rows.
pub(crate) fn validate_options_call(
    logits: &HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
    options: &SampleOptions<'_>,
) -> Result<(Vec<GpuRowParams>, u32)> {
    let Some(rows) = options.logits_rows else {
        let gpu = validate_host_call(logits, vocab, params)?;
        return Ok((gpu, params.len() as u32));
    };
    if vocab == 0 {
        return Err(Error::EmptyVocab);
    }
    if !logits.len().is_multiple_of(vocab as usize) {
        return Err(Error::LogitsLengthMismatch {
            expected: logits.len() / vocab as usize * vocab as usize,
            got: logits.len(),
        });
    }
    let sources = u32::try_from(logits.len() / vocab as usize).map_err(|_| {
        Error::InvalidArgument(format!("{} logits rows is past u32 rows", logits.len()))
    })?;
    if rows.len() != params.len() {
        return Err(Error::LengthMismatch {
            what: "logits_rows (one per parameter set)",
            expected: params.len(),
            got: rows.len(),
        });
    }
    check_logits_rows(rows, sources)?;
    if options.histories.is_some() {
        return Err(Error::InvalidArgument(
            "histories cannot be combined with logits_rows: their edits are made in place on \
             rows that several draws share"
                .into(),
        ));
    }
    let mut gpu = validate_params(params)?;
    for (p, &row) in gpu.iter_mut().zip(rows) {
        p.logits_row = row;
    }
    Ok((gpu, sources))
}

/// Logits rows named by batch rows: each below `sources`, non-decreasing.
pub(crate) fn check_logits_rows(rows: &[u32], sources: u32) -> Result<()> {
    if let Some(i) = rows.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::InvalidArgument(format!(
            "logits_rows must not decrease: row {} reads {} after {}",
            i + 1,
            rows[i + 1],
            rows[i]
        )));
    }
    if let Some((i, &row)) = rows.iter().enumerate().find(|(_, &r)| r >= sources) {
        return Err(Error::InvalidArgument(format!(
            "batch row {i} reads logits row {row}, but the logits have {sources} rows"
        )));
    }
    Ok(())
}

/// The dispatches of a gathering batch: for each chunk of logits rows
/// (`chunks`, whose row 0 is logits row `logits_offset`), the batch rows
/// from `batch_start` on that read one of them (`logits_rows`: every batch
/// row's logits row, non-decreasing), at most `max_rows` per dispatch.
pub(crate) fn gather_chunks(
    chunks: &[Chunk],
    logits_rows: &[u32],
    logits_offset: u32,
    batch_start: u32,
    max_rows: u32,
) -> Vec<Chunk> {
    let mut out = Vec::new();
    for c in chunks {
        let first = logits_offset + c.row_start;
        let lo = logits_rows.partition_point(|&r| r < first) as u32;
        let hi = logits_rows.partition_point(|&r| r < first + c.rows) as u32;
        let mut start = lo;
        while start < hi {
            let rows = (hi - start).min(max_rows.max(1));
            out.push(Chunk {
                row_start: start - batch_start,
                rows,
                logits_base: Some(first),
                ..*c
            });
            start += rows;
        }
    }
    out
}

/// Checks a host call's shapes before any work.
pub(crate) fn validate_host_call(
    logits: &HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
) -> Result<Vec<GpuRowParams>> {
    if vocab == 0 {
        return Err(Error::EmptyVocab);
    }
    // A product past usize matches no slice's length.
    let expected = params.len().saturating_mul(vocab as usize);
    if logits.len() != expected {
        if logits.len().is_multiple_of(vocab as usize) {
            return Err(Error::ParamCountMismatch {
                expected: logits.len() / vocab as usize,
                got: params.len(),
            });
        }
        return Err(Error::LogitsLengthMismatch {
            expected,
            got: logits.len(),
        });
    }
    validate_params(params)
}

/// Fewest and most tokens the sampler gathers into workgroup memory per row.
pub(crate) const CANDIDATE_RANGE: (u32, u32) = (64, 1024);

/// Workgroup memory the sampling kernel uses besides its candidates, bytes:
/// an upper bound (9.4 KiB of per-stream arrays, histograms and reduction
/// results, and a budget for the scalars), which the layout tests check
/// against the shader.
pub(crate) const FIXED_WORKGROUP_BYTES: u32 = 10_000;

/// Workgroup memory per gathered candidate, bytes: its key and token, and
/// its ranked key and weight.
pub(crate) const CANDIDATE_BYTES: u32 = 16;

/// How many candidates fit the device's workgroup memory (a multiple of 64;
/// each takes [`CANDIDATE_BYTES`]). It changes the sampler's speed, never
/// its results.
pub(crate) fn candidate_capacity(max_workgroup_bytes: u32) -> u32 {
    let fit = max_workgroup_bytes.saturating_sub(FIXED_WORKGROUP_BYTES) / CANDIDATE_BYTES / 64 * 64;
    fit.clamp(256, CANDIDATE_RANGE.1)
}

/// The sampling shader's `entry_point` (`sample_rows`; the first pass alone,
/// `stream_partials`; or the small drawing kernel `finish_rows`), gathering
/// at most `candidates` tokens per row: one pipeline for every dtype, which
/// reads f32 rows on 16-byte boundaries four logits at a time through a
/// vector view of the logits (see
/// [`LogitsKernel::new`](crate::gpu::logits::LogitsKernel::new)).
///
/// `wide` picks the routes for GPUs (`WIDE_ROUTES` in the shader: the
/// gathers, scans and sorts shared out over the workgroup) over those for
/// CPU adapters (one invocation runs them); both give the same bits, and
/// each pipeline holds only one.
pub(crate) fn shader(
    candidates: u32,
    entry_point: &'static str,
    features: Features,
    wide: bool,
    subgroups: bool,
) -> Result<crate::gpu::logits::LogitsShader> {
    let route = if wide { "wide" } else { "cpu" };
    let folds = if subgroups { "subgroups" } else { "workgroup" };
    // Without the device feature the subgroup operations must not appear in
    // the text at all.
    let substitutes: &[(&str, &str)] = if subgroups {
        &[]
    } else {
        &[("shared/subgroups.wgsl", "shared/no_subgroups.wgsl")]
    };
    crate::gpu::logits::logits_shader_with(
        &format!("sampling/{entry_point}/{features:?}/{route}/{folds}"),
        "sampling.wgsl",
        entry_point,
        &format!(
            "const CANDIDATES: u32 = {candidates}u;\nconst TILE_GROUPS: u32 = {TILE_GROUPS}u;\n\
             const WIDE_ROUTES: bool = {wide};\n{}",
            features.prelude()
        ),
        true,
        substitutes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's notion of a filtered row, which picks the drawing kernel
    /// (the small one ignores filters), at the shader's boundaries.
    #[test]
    fn filtered_rows_at_the_boundaries() {
        let vocab = 1000;
        let filtered = |p: SamplingParams| validate_params(&[p]).unwrap()[0].is_filtered(vocab);
        let plain = SamplingParams::new(0.7);
        assert!(!filtered(plain));
        assert!(filtered(plain.top_k(1)));
        assert!(filtered(plain.top_k(vocab - 1)));
        assert!(!filtered(plain.top_k(vocab)));
        assert!(!filtered(plain.top_k(vocab + 5)));
        assert!(!filtered(plain.top_p(1.0)));
        assert!(filtered(plain.top_p(0.999)));
        assert!(filtered(plain.top_p(0.0)));
        assert!(!filtered(plain.min_p(0.0)));
        assert!(filtered(plain.min_p(0.01)));
        assert!(!filtered(
            SamplingParams::greedy().top_k(3).top_p(0.5).min_p(0.2)
        ));
    }
}

#[cfg(all(test, feature = "serde"))]
mod serde_tests {
    use super::*;

    #[test]
    fn results_and_params_round_trip_through_json() {
        let params = SamplingParams::new(0.7)
            .top_k(40)
            .top_p(0.9)
            .seed(u64::MAX)
            .step(3);
        let text = serde_json::to_string(&params).unwrap();
        assert_eq!(
            serde_json::from_str::<SamplingParams>(&text).unwrap(),
            params
        );
        let result = SampleResult {
            token: 7,
            logprob: -1.5,
            kept: 12,
            status: RowStatus::Ok,
        };
        let text = serde_json::to_string(&result).unwrap();
        assert!(text.contains("\"token\":7"), "{text}");
        assert_eq!(serde_json::from_str::<SampleResult>(&text).unwrap(), result);
    }
}
