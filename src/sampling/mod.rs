//! Batched token sampling from logits: temperature, greedy, top-k, top-p and
//! min-p per row; f32, f16 and bf16 logits; per-row seed and step.
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
//!    on summation order.
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
//! | mode | passes |
//! | --- | --- |
//! | greedy | 1 |
//! | temperature only | 1, plus 1/256 of the row (the chosen stream's replay) |
//! | min-p | 2 (+1/256) |
//! | top-k | 2 + 1 to 4 radix rounds (+1/256) |
//! | top-p | 2 + 1 to 4 radix rounds (+1/256) |
//! | top-k and top-p | 2 + 2 to 8 radix rounds (+1/256) |
//!
//! Radix rounds select on 8-bit digits of order-preserving u32 keys and stop
//! early when the boundary bucket's largest key settles the threshold.

pub mod cpu;
mod gpu;

pub use gpu::{LogitsBinding, SampleBatch, Sampler};

use crate::{Error, Result};
use half::{bf16, f16};

/// Token id reported for rows with no valid token.
pub const NO_TOKEN: u32 = u32::MAX;

/// Temperatures below this are greedy.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Streams per row: part of the sampling contract (it fixes the draw).
pub const STREAMS: u32 = 256;

/// Consecutive tokens a stream visits at a time.
pub const GROUP: u32 = 4;

/// Sampling parameters of one row.
///
/// ```
/// use rollcall::SamplingParams;
/// let p = SamplingParams::new(0.7).top_k(50).top_p(0.9).min_p(0.05).seed(42).step(3);
/// assert_eq!(p.top_k, 50);
/// assert!(SamplingParams::greedy().is_greedy());
/// ```
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
}

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
    /// Whether this row decodes greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE
    }
}

/// Element type of the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogitsDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16 (the high half of an f32).
    Bf16,
}

impl LogitsDtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            LogitsDtype::F32 => 4,
            LogitsDtype::F16 | LogitsDtype::Bf16 => 2,
        }
    }
    pub(crate) fn index(self) -> usize {
        match self {
            LogitsDtype::F32 => 0,
            LogitsDtype::F16 => 1,
            LogitsDtype::Bf16 => 2,
        }
    }
    /// All dtypes.
    pub const ALL: [LogitsDtype; 3] = [LogitsDtype::F32, LogitsDtype::F16, LogitsDtype::Bf16];
}

/// Host logits, row-major `rows × vocab`.
///
/// ```
/// let data = vec![0.0f32; 8];
/// let logits = rollcall::HostLogits::F32(&data);
/// assert_eq!(logits.len(), 8);
/// ```
#[derive(Clone, Copy, Debug)]
pub enum HostLogits<'a> {
    /// f32 logits.
    F32(&'a [f32]),
    /// f16 logits.
    F16(&'a [f16]),
    /// bf16 logits.
    Bf16(&'a [bf16]),
}

impl HostLogits<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostLogits::F32(s) => s.len(),
            HostLogits::F16(s) => s.len(),
            HostLogits::Bf16(s) => s.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element type.
    pub fn dtype(&self) -> LogitsDtype {
        match self {
            HostLogits::F32(_) => LogitsDtype::F32,
            HostLogits::F16(_) => LogitsDtype::F16,
            HostLogits::Bf16(_) => LogitsDtype::Bf16,
        }
    }
    /// Raw bytes, as they would sit in a GPU buffer.
    pub fn bytes(&self) -> &[u8] {
        match self {
            HostLogits::F32(s) => bytemuck::cast_slice(s),
            HostLogits::F16(s) => bytemuck::cast_slice(s),
            HostLogits::Bf16(s) => bytemuck::cast_slice(s),
        }
    }
    /// Element `i` as f32 (exact for every dtype).
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            HostLogits::F32(s) => s[i],
            HostLogits::F16(s) => s[i].to_f32(),
            HostLogits::Bf16(s) => s[i].to_f32(),
        }
    }
    /// Elements `start..end`, as another view.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        match self {
            HostLogits::F32(s) => HostLogits::F32(&s[start..end]),
            HostLogits::F16(s) => HostLogits::F16(&s[start..end]),
            HostLogits::Bf16(s) => HostLogits::Bf16(&s[start..end]),
        }
    }
}

/// Whether a row produced a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowStatus {
    /// A token was drawn.
    Ok,
    /// Every logit was −inf or NaN: token is [`NO_TOKEN`], log-probability −inf.
    NoValidToken,
}

/// The outcome for one row.
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

/// A row's parameters as the shader reads them (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GpuRowParams {
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
    /// FLAG_GREEDY | FLAG_MIN_P.
    pub flags: u32,
    /// Padding to 16-byte alignment.
    pub pad: [u32; 3],
}

impl GpuRowParams {
    pub(crate) fn is_greedy(&self) -> bool {
        self.flags & FLAG_GREEDY != 0
    }
    pub(crate) fn uses_min_p(&self) -> bool {
        self.flags & FLAG_MIN_P != 0
    }
}

/// Checks every row's parameters and converts them to the shader's layout.
///
/// ```
/// use rollcall::{sampling::validate_params, Error, SamplingParams};
/// assert!(validate_params(&[SamplingParams::new(1.0).top_p(0.9)]).is_ok());
/// let bad = [SamplingParams::new(1.0), SamplingParams::new(1.0).top_p(f32::NAN)];
/// assert!(matches!(validate_params(&bad), Err(Error::InvalidTopP { row: 1, .. })));
/// ```
pub fn validate_params(params: &[SamplingParams]) -> Result<Vec<GpuRowParams>> {
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
            let greedy = p.is_greedy();
            let mut flags = 0;
            if greedy {
                flags |= FLAG_GREEDY;
            }
            if p.min_p > 0.0 {
                flags |= FLAG_MIN_P;
            }
            Ok(GpuRowParams {
                inv_temperature: if greedy { 1.0 } else { 1.0 / p.temperature },
                top_k: p.top_k,
                top_p: p.top_p,
                log_min_p: if p.min_p > 0.0 { p.min_p.ln() } else { 0.0 },
                seed: crate::philox::split_u64(p.seed),
                step: crate::philox::split_u64(p.step),
                flags,
                pad: [0; 3],
            })
        })
        .collect()
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
    let expected = params.len() * vocab as usize;
    if logits.len() != expected {
        if logits.len() % vocab as usize == 0 {
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

/// Every variant of the sampling shader (one per logits dtype).
pub fn shader_variants() -> Result<Vec<crate::shader::ShaderVariant>> {
    LogitsDtype::ALL
        .iter()
        .map(|&dtype| {
            let prelude = format!("const LOGITS_DTYPE: u32 = {}u;", dtype.index());
            Ok(crate::shader::ShaderVariant {
                label: format!("sampling/{dtype:?}"),
                entry_point: "sample_rows",
                source: crate::shader::compose("sampling.wgsl", &prelude)?,
                features: wgpu::Features::empty(),
            })
        })
        .collect()
}

/// How a `rows × vocab` logits range is cut into dispatches that each fit the
/// adapter's binding limit and workgroup-count limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First row of the chunk.
    pub row_start: u32,
    /// Rows in the chunk.
    pub rows: u32,
    /// Byte offset of the binding (aligned).
    pub bind_offset: u64,
    /// Byte size of the binding (a multiple of 4).
    pub bind_size: u64,
    /// Element index of the chunk's first logit inside the binding.
    pub elem_base: u32,
}

/// Limits that decide chunking.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLimits {
    /// Largest storage binding, bytes.
    pub max_binding: u64,
    /// Storage offset alignment, bytes.
    pub offset_alignment: u64,
    /// Largest dispatch in one dimension.
    pub max_workgroups: u32,
}

/// Plans the dispatches for logits at `offset` in a buffer of `buffer_size`.
///
/// ```
/// use rollcall::sampling::{plan_chunks, ChunkLimits, LogitsDtype};
/// let limits = ChunkLimits { max_binding: 1 << 20, offset_alignment: 256, max_workgroups: 65535 };
/// let chunks = plan_chunks(100, 32000, LogitsDtype::F32, 0, 100 * 32000 * 4, limits).unwrap();
/// assert!(chunks.len() > 1);
/// assert_eq!(chunks.iter().map(|c| c.rows).sum::<u32>(), 100);
/// ```
pub fn plan_chunks(
    rows: u32,
    vocab: u32,
    dtype: LogitsDtype,
    offset: u64,
    buffer_size: u64,
    limits: ChunkLimits,
) -> Result<Vec<Chunk>> {
    if vocab == 0 {
        return Err(Error::EmptyVocab);
    }
    if offset % 4 != 0 {
        return Err(Error::MisalignedOffset(offset));
    }
    let esize = dtype.size_bytes();
    let row_bytes = u64::from(vocab) * esize;
    let needed = offset + u64::from(rows) * row_bytes;
    if buffer_size < needed {
        return Err(Error::BufferTooSmall {
            what: "logits",
            needed,
            got: buffer_size,
        });
    }
    // Keep element indices inside u32 and leave room for alignment slack.
    let max_binding = limits.max_binding.min(1 << 31);
    let slack = limits.offset_alignment + 4;
    let max_rows = max_binding.saturating_sub(slack) / row_bytes;
    if max_rows == 0 {
        return Err(Error::RowTooLarge {
            row_bytes,
            max_binding,
        });
    }
    let max_rows = max_rows.min(u64::from(limits.max_workgroups.max(1))) as u32;
    let mut chunks = Vec::new();
    let mut row_start = 0u32;
    while row_start < rows {
        let n = max_rows.min(rows - row_start);
        let byte_start = offset + u64::from(row_start) * row_bytes;
        let bind_offset = byte_start - byte_start % limits.offset_alignment;
        let byte_end = offset + u64::from(row_start + n) * row_bytes;
        let bind_size = (byte_end - bind_offset).div_ceil(4) * 4;
        if bind_offset + bind_size > buffer_size {
            return Err(Error::BufferTooSmall {
                what: "logits (rounded up to 4 bytes)",
                needed: bind_offset + bind_size,
                got: buffer_size,
            });
        }
        chunks.push(Chunk {
            row_start,
            rows: n,
            bind_offset,
            bind_size,
            elem_base: ((byte_start - bind_offset) / esize) as u32,
        });
        row_start += n;
    }
    Ok(chunks)
}
