//! CPU twin of `shaders/sampling.wgsl`: the same streams, the same Philox
//! words, the same fixed-point masses and the same f32 operations, so its
//! tokens match the GPU's except where two candidates are within rounding of
//! each other ([`RowTrace`] says how close each decision was).

use super::edits::{HistoryTwin, OwnedLogits};
use super::{
    validate_host_call, GpuRowParams, GpuRowState, HostLogits, LogprobsMode, RowStatus,
    SampleOptions, SampleResult, Samples, SamplingParams, TopLogprob, GROUP, NO_TOKEN,
    STATE_HAS_INF, STATE_MIN_P, STATE_SIGMA, STREAMS, TILE_GROUPS,
};
use crate::math::fold::tree_fold;
use crate::math::keys::{canonical_bits, is_finite_bits, key_from_bits, u64_to_f32};
use crate::math::philox::{exponential_from_bits, philox4x32_10};
use crate::Result;

pub(crate) const POS_INF_BITS: u32 = 0x7F80_0000;
const NEG_INF_BITS: u32 = 0xFF80_0000;
pub(crate) const PURPOSE_STREAM: u32 = 0;
pub(crate) const PURPOSE_TOKEN: u32 = 1;

/// Samples every row on the CPU with the GPU's semantics.
///
/// ```
/// use rollcall::{sampling::cpu, HostLogits, SamplingParams};
/// let logits = [0.0f32, 5.0, 1.0];
/// let out = cpu::sample(HostLogits::F32(&logits), 3, &[SamplingParams::greedy()]).unwrap();
/// assert_eq!(out[0].token, 1);
/// ```
pub fn sample(
    logits: HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
) -> Result<Vec<SampleResult>> {
    Ok(sample_with(logits, vocab, params, &SampleOptions::default())?.results)
}

/// [`sample`] with masks, histories, top log-probabilities and draws from
/// shared rows (the twin of
/// [`Sampler::sample_with`](crate::Sampler::sample_with)).
///
/// ```
/// use rollcall::sampling::{cpu, mask, HostMask, SampleOptions};
/// use rollcall::{HostLogits, SamplingParams};
/// let words = mask::allow_only(3, &[0, 2])?;
/// let options = SampleOptions::default().mask(HostMask { words: &words, rows: &[Some(0)] });
/// let params = [SamplingParams::greedy().top_logprobs(2)];
/// let out = cpu::sample_with(HostLogits::F32(&[0.0, 5.0, 1.0]), 3, &params, &options)?;
/// assert_eq!(out.results[0].token, 2);
/// assert_eq!(out.top_logprobs[0].iter().map(|e| e.token).collect::<Vec<_>>(), [2, 0]);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn sample_with(
    logits: HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
    options: &SampleOptions<'_>,
) -> Result<Samples> {
    let (traces, top_logprobs) = sample_traced_with(logits, vocab, params, options)?;
    Ok(Samples {
        results: traces.into_iter().map(|trace| trace.result).collect(),
        top_logprobs,
    })
}

/// [`sample_with`], reporting for each row how close its decisions came to
/// flipping (see [`RowTrace`]).
pub fn sample_traced_with(
    logits: HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
    options: &SampleOptions<'_>,
) -> Result<(Vec<RowTrace>, Vec<Vec<TopLogprob>>)> {
    let (gpu_params, _) = super::validate_options_call(&logits, vocab, params, options)?;
    if let Some(m) = &options.mask {
        super::mask::check_host_mask(m, vocab, params.len())?;
    }
    let room = options.check_histories(params)?;
    let edits = match options.histories {
        Some(histories) => {
            let mut twin = HistoryTwin::new(params.len() as u32, room)?;
            for (r, h) in histories.iter().enumerate() {
                twin.set_row(r as u32, vocab, h)?;
            }
            twin.set_penalties(params)?;
            Some(twin)
        }
        None => None,
    };
    let v = vocab as usize;
    let mut traces = Vec::with_capacity(params.len());
    let mut tops = Vec::with_capacity(params.len());
    for (r, p) in gpu_params.iter().enumerate() {
        let mask = super::mask::host_row(options.mask.as_ref(), r, vocab);
        let source = options.logits_rows.map_or(r, |rows| rows[r] as usize);
        let row = logits.slice(source * v, (source + 1) * v);
        // The row as the sampler reads it: with bias, penalties and stop
        // tokens applied (raw log-probabilities read the row as given).
        let edited = match &edits {
            Some(twin) => Some(twin.edit_row(r as u32, row)?),
            None => None,
        };
        let processed = edited.as_ref().map_or(row, OwnedLogits::as_host);
        let mut trace = sample_row_traced(processed, p, mask);
        let raw = options.logprobs == LogprobsMode::Raw;
        if p.top_logprobs > 0 || raw {
            let z = if raw {
                z_bits(row, 1.0, None)
            } else {
                let inv_t = if p.is_greedy() {
                    1.0
                } else {
                    p.inv_temperature
                };
                z_bits(processed, inv_t, mask)
            };
            let (top, sampled) = row_logprobs(&z, p.top_logprobs, trace.result.token);
            if raw && trace.result.status == RowStatus::Ok {
                trace.result.logprob = sampled;
            }
            tops.push(top);
        } else {
            tops.push(Vec::new());
        }
        traces.push(trace);
    }
    Ok((traces, tops))
}

/// How close a row's decisions came to flipping, for comparing devices whose
/// `exp` and `log` differ in the last place.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowTrace {
    /// The twin's result.
    pub result: SampleResult,
    /// Relative distance of the top-p target from the nearest cumulative mass
    /// on either side of the threshold (infinite when top-p is off).
    pub top_p_margin: f32,
    /// Gap between the best and second-best stream in the stream race.
    pub stream_gap: f32,
    /// Gap between the best and second-best token in the chosen stream.
    pub token_gap: f32,
}

impl RowTrace {
    /// Whether another device could, by rounding alone, draw another token.
    pub fn is_near_tie(&self, tolerance: f32) -> bool {
        self.top_p_margin < tolerance || self.stream_gap < tolerance || self.token_gap < tolerance
    }
}

/// Canonical bits of `z = l * inv_t`: NaN and −inf become −inf, −0 becomes +0.
pub(crate) fn scaled_bits(raw: f32, inv_t: f32) -> u32 {
    let bits = raw.to_bits();
    if !is_finite_bits(bits) {
        return canonical_bits(bits);
    }
    canonical_bits((raw * inv_t).to_bits())
}

/// Fixed-point weight `exp(z - max) * 2^32`, saturated, as the shader computes it.
pub(crate) fn fixed_weight(z_bits: u32, row_max: f32) -> u32 {
    if !is_finite_bits(z_bits) {
        return 0;
    }
    let w = (f32::from_bits(z_bits) - row_max).exp();
    if w >= 1.0 {
        u32::MAX
    } else {
        (w * 4_294_967_296.0) as u32
    }
}

#[derive(Clone, Copy, Default)]
struct Online {
    max: f32,
    mass: f32,
}

impl Online {
    fn add(self, z: f32) -> Self {
        if self.mass == 0.0 {
            Online { max: z, mass: 1.0 }
        } else if z > self.max {
            Online {
                max: z,
                mass: self.mass * (self.max - z).exp() + 1.0,
            }
        } else {
            Online {
                max: self.max,
                mass: self.mass + (z - self.max).exp(),
            }
        }
    }
    /// One group of up to four values (`None` for non-finite ones), as the
    /// shader's branch-free `online_add_group` does: the new maximum over the
    /// state's and the group's, one rescale, the values' weights summed
    /// pairwise. An empty state counts as maximum `f32::MIN`.
    fn add_group(self, z: [Option<f32>; 4]) -> Self {
        let prev_max = if self.mass == 0.0 { f32::MIN } else { self.max };
        let m = z.iter().flatten().fold(prev_max, |m, &v| m.max(v));
        let e = z.map(|v| v.map_or(0.0, |v| (v - m).exp()));
        Online {
            max: m,
            mass: self.mass * (prev_max - m).exp() + ((e[0] + e[1]) + (e[2] + e[3])),
        }
    }

    fn merge(self, other: Self) -> Self {
        if self.mass == 0.0 {
            other
        } else if other.mass == 0.0 {
            self
        } else {
            let m = self.max.max(other.max);
            Online {
                max: m,
                mass: self.mass * (self.max - m).exp() + other.mass * (other.max - m).exp(),
            }
        }
    }
}

/// The tokens of stream `s`, in the order the stream visits them.
pub(crate) fn stream_tokens(s: u32, vocab: u32) -> impl Iterator<Item = u32> {
    (0..)
        .map(move |n| s + n * STREAMS)
        .take_while(move |g| g * GROUP < vocab)
        .flat_map(move |g| (g * GROUP..(g * GROUP + GROUP).min(vocab)).map(move |i| (g, i)))
        .map(|(_, i)| i)
}

/// Largest key t (among keys ≥ `lo_key`) whose weight W(key ≥ t) reaches the
/// target, and the relative margin of that decision (mass mode).
fn select_threshold(
    keyed: &mut [(u32, u32)],
    lo_key: u32,
    reached: impl Fn(u64) -> bool,
) -> (u32, u64, u64) {
    keyed.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
    let mut cum = 0u64;
    let mut i = 0;
    while i < keyed.len() && keyed[i].0 >= lo_key {
        let key = keyed[i].0;
        let above = cum;
        while i < keyed.len() && keyed[i].0 == key {
            cum += u64::from(keyed[i].1);
            i += 1;
        }
        if reached(cum) {
            return (key, above, cum);
        }
    }
    (lo_key, cum, cum)
}

/// Samples one row (all of `row` is the vocabulary) with `params` and reports
/// how close each decision came to flipping.
///
/// ```
/// use rollcall::{sampling::cpu, HostLogits, SamplingParams};
/// let trace = cpu::sample_traced(HostLogits::F32(&[0.0, 5.0]), &SamplingParams::new(1.0))?;
/// assert!(trace.result.token < 2 && trace.stream_gap >= 0.0);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn sample_traced(row: HostLogits<'_>, params: &SamplingParams) -> Result<RowTrace> {
    let vocab = u32::try_from(row.len()).map_err(|_| {
        crate::Error::InvalidArgument(format!("a row of {} logits is past u32 tokens", row.len()))
    })?;
    let gpu = validate_host_call(&row, vocab, std::slice::from_ref(params))?;
    Ok(sample_row_traced(row, &gpu[0], None))
}

/// Whether token `i` is allowed by a mask row (`None`: no mask).
pub(crate) fn mask_allows(mask: Option<&[u32]>, i: usize) -> bool {
    mask.is_none_or(|words| (words[i / 32] >> (i % 32)) & 1 == 1)
}

/// A group's (Σz, Σz²) over its finite values, in the shader's order.
fn group_sums(z: [Option<f32>; 4]) -> (f32, f32) {
    let v = z.map(|v| v.unwrap_or(0.0));
    let q = v.map(|v| v * v);
    ((v[0] + v[1]) + (v[2] + v[3]), (q[0] + q[1]) + (q[2] + q[3]))
}

/// Pass 1's per-stream results.
struct PassOne {
    stream_state: Vec<Online>,
    stream_inf: Vec<u32>,
    stream_finite: Vec<u32>,
    stream_sums: Vec<(f32, f32)>,
}

/// Pass 1 over a row's canonical z bits, as the shader folds it.
fn pass_one(z: &[u32]) -> PassOne {
    let vocab = z.len() as u32;
    // Pass 1, per stream, tile by tile: each tile's state from the stream's
    // groups in it, then the tiles folded in order (what the shader does in
    // one workgroup or across a split pass).
    let mut stream_state = vec![Online::default(); STREAMS as usize];
    let mut stream_inf = vec![0u32; STREAMS as usize];
    let mut stream_finite = vec![0u32; STREAMS as usize];
    let mut stream_sums = vec![(0.0f32, 0.0f32); STREAMS as usize];
    let groups = vocab.div_ceil(GROUP);
    let tile_groups = TILE_GROUPS * STREAMS;
    for tile_start in (0..groups).step_by(tile_groups as usize) {
        let mut tile_state = vec![Online::default(); STREAMS as usize];
        let mut tile_sums = vec![(0.0f32, 0.0f32); STREAMS as usize];
        for g in tile_start..groups.min(tile_start + tile_groups) {
            let s = (g % STREAMS) as usize;
            let mut group = [None; 4];
            for (j, slot) in group.iter_mut().enumerate() {
                let i = (g * GROUP) as usize + j;
                if let Some(&bits) = z.get(i) {
                    if bits == POS_INF_BITS {
                        stream_inf[s] += 1;
                    } else if is_finite_bits(bits) {
                        stream_finite[s] += 1;
                        *slot = Some(f32::from_bits(bits));
                    }
                }
            }
            if group.iter().any(Option::is_some) {
                tile_state[s] = tile_state[s].add_group(group);
            }
            let (s1, s2) = group_sums(group);
            tile_sums[s] = (tile_sums[s].0 + s1, tile_sums[s].1 + s2);
        }
        for (state, tile) in stream_state.iter_mut().zip(tile_state) {
            *state = state.merge(tile);
        }
        for (sums, tile) in stream_sums.iter_mut().zip(tile_sums) {
            *sums = (sums.0 + tile.0, sums.1 + tile.1);
        }
    }
    PassOne {
        stream_state,
        stream_inf,
        stream_finite,
        stream_sums,
    }
}

/// Rows' top log-probabilities (as many as each asks, fewer when fewer
/// tokens are valid): ranked by key, ties to the lower token, each under the
/// softmax of the z bits `mode` says (processed: the draw's; raw: the
/// model's logits) with pass 1's statistics. Also returns each row's
/// sampled-token log-probability under that softmax.
fn row_logprobs(z: &[u32], n: u32, token: u32) -> (Vec<TopLogprob>, f32) {
    let PassOne {
        stream_state,
        stream_inf,
        ..
    } = pass_one(z);
    let row_inf: u32 = stream_inf.iter().sum();
    let row = tree_fold(&stream_state, Online::merge);
    let has_inf = row_inf != 0;
    if !has_inf && row.mass == 0.0 {
        return (Vec::new(), f32::NEG_INFINITY);
    }
    let log_mass = row.mass.ln();
    let logprob_of = |bits: u32| {
        if has_inf {
            if bits == POS_INF_BITS {
                -(row_inf as f32).ln()
            } else {
                f32::NEG_INFINITY
            }
        } else {
            (f32::from_bits(bits) - row.max) - log_mass
        }
    };
    let mut valid: Vec<(u32, u32)> = z
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != NEG_INF_BITS)
        .map(|(i, &b)| (key_from_bits(b), i as u32))
        .collect();
    valid.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let top = valid
        .iter()
        .take(n as usize)
        .map(|&(_, token)| TopLogprob {
            token,
            logprob: logprob_of(z[token as usize]),
        })
        .collect();
    let sampled = z
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&b| logprob_of(b));
    (top, sampled)
}

/// A row's z bits: the logits scaled by `inv_t`, masked, canonical.
fn z_bits(row: HostLogits<'_>, inv_t: f32, mask: Option<&[u32]>) -> Vec<u32> {
    (0..row.len())
        .map(|i| {
            if mask_allows(mask, i) {
                scaled_bits(row.get_f32(i), inv_t)
            } else {
                NEG_INF_BITS
            }
        })
        .collect()
}

/// Samples one row (its `vocab` logits, and its mask row if it has one) and
/// reports how close each decision was.
pub(crate) fn sample_row_traced(
    row: HostLogits<'_>,
    p: &GpuRowParams,
    mask: Option<&[u32]>,
) -> RowTrace {
    sample_row_inner(row, p, mask, None).0
}

/// One row's draw with what speculative verification reads besides it.
pub(crate) struct Probed {
    pub trace: RowTrace,
    /// ln of the probed token's probability under the kept set (the
    /// shader's `probe_logprob`; 0 without a probe).
    pub probe_logprob: f32,
    /// The row's distribution (rows that drew by a race; not greedy rows or
    /// rows with no valid token).
    pub state: Option<GpuRowState>,
}

/// [`sample_row_traced`], also probing a token and returning the row's
/// distribution.
pub(crate) fn sample_row_probed(
    row: HostLogits<'_>,
    p: &GpuRowParams,
    mask: Option<&[u32]>,
    probe: Option<u32>,
) -> Probed {
    let (trace, probe_logprob, state) = sample_row_inner(row, p, mask, probe);
    Probed {
        trace,
        probe_logprob,
        state,
    }
}

fn sample_row_inner(
    row: HostLogits<'_>,
    p: &GpuRowParams,
    mask: Option<&[u32]>,
    probe: Option<u32>,
) -> (RowTrace, f32, Option<GpuRowState>) {
    let vocab = row.len() as u32;
    let no_probe = if probe.is_some() {
        f32::NEG_INFINITY
    } else {
        0.0
    };
    let inv_t = if p.is_greedy() {
        1.0
    } else {
        p.inv_temperature
    };
    let z = z_bits(row, inv_t, mask);
    let no_valid = RowTrace {
        result: SampleResult {
            token: NO_TOKEN,
            logprob: f32::NEG_INFINITY,
            kept: 0,
            status: RowStatus::NoValidToken,
        },
        top_p_margin: f32::INFINITY,
        stream_gap: f32::INFINITY,
        token_gap: f32::INFINITY,
    };

    let PassOne {
        stream_state,
        stream_inf,
        stream_finite,
        stream_sums,
    } = pass_one(&z);
    let row_inf: u32 = stream_inf.iter().sum();
    let row = tree_fold(&stream_state, Online::merge);
    let has_inf = row_inf != 0;
    if !has_inf && row.mass == 0.0 {
        return (no_valid, no_probe, None);
    }
    let log_mass = row.mass.ln();
    let logprob_of = |token: u32| {
        if has_inf {
            -(row_inf as f32).ln()
        } else {
            (f32::from_bits(z[token as usize]) - row.max) - log_mass
        }
    };
    if p.is_greedy() {
        let mut best = 0usize;
        for i in 1..z.len() {
            if key_from_bits(z[i]) > key_from_bits(z[best]) {
                best = i;
            }
        }
        let trace = RowTrace {
            result: SampleResult {
                token: best as u32,
                logprob: logprob_of(best as u32),
                kept: 1,
                status: RowStatus::Ok,
            },
            ..no_valid
        };
        let probed = match probe {
            Some(x) if x == best as u32 => 0.0,
            Some(_) => f32::NEG_INFINITY,
            None => 0.0,
        };
        return (trace, probed, None);
    }

    // Filters.
    let use_top_k = p.top_k != 0 && p.top_k < vocab;
    let use_top_p = p.top_p < 1.0;
    let use_min_p = p.uses_min_p();
    let use_sigma = p.uses_top_n_sigma();
    // top-nσ as the shader tests it: (max - z)² · N² > n² · (N·Σz² - (Σz)²)
    // drops z, with no square root or division.
    let (sigma_n2, sigma_rhs) = if use_sigma {
        let (s1, s2) = tree_fold(&stream_sums, |a, b| (a.0 + b.0, a.1 + b.1));
        let n = stream_finite.iter().sum::<u32>() as f32;
        let spread = n * s2 - s1 * s1;
        let spread = if spread < 0.0 { 0.0 } else { spread };
        (n * n, (p.top_n_sigma * p.top_n_sigma) * spread)
    } else {
        (0.0, 0.0)
    };
    let passes_floors = |z: f32| {
        let d = row.max - z;
        (!use_min_p || (z - row.max) >= p.log_min_p)
            && (!use_sigma
                || (d * d) * sigma_n2 <= sigma_rhs
                || (sigma_rhs.is_nan() || ((d * d) * sigma_n2).is_nan()))
    };
    let mut threshold = 0u32;
    let mut top_p_margin = f32::INFINITY;
    if !has_inf && use_top_k {
        let mut keyed: Vec<(u32, u32)> = z.iter().map(|&b| (key_from_bits(b), 1)).collect();
        let k = u64::from(p.top_k);
        threshold = select_threshold(&mut keyed, 0, |cum| cum >= k).0;
    }
    if !has_inf && use_top_p {
        let mut keyed: Vec<(u32, u32)> = z
            .iter()
            .filter(|&&b| key_from_bits(b) >= threshold)
            .map(|&b| (key_from_bits(b), fixed_weight(b, row.max)))
            .collect();
        // Over the top-k set: its exact fixed-point mass; otherwise the row's
        // mass from pass 1, in fixed-point units.
        let target = if use_top_k {
            let total: u64 = keyed.iter().map(|e| u64::from(e.1)).sum();
            p.top_p * u64_to_f32(total)
        } else {
            (p.top_p * row.mass) * 4_294_967_296.0
        };
        let (t, above, at) =
            select_threshold(&mut keyed, threshold, |cum| u64_to_f32(cum) >= target);
        threshold = t;
        // A flip needs the target between W(> t) and W(>= t) to move across one
        // of them; with a zero target (top_p = 0) neither side can move.
        if target > 0.0 {
            let at_side = (u64_to_f32(at) - target) / target;
            let above_side = if above > 0 {
                (target - u64_to_f32(above)) / target
            } else {
                f32::INFINITY
            };
            top_p_margin = at_side.min(above_side);
        }
    }
    let is_kept = |bits: u32| -> bool {
        if has_inf {
            return bits == POS_INF_BITS;
        }
        is_finite_bits(bits)
            && key_from_bits(bits) >= threshold
            && passes_floors(f32::from_bits(bits))
    };

    // Pass 2: kept mass per stream.
    let filtered = !has_inf && (use_top_k || use_top_p || use_min_p || use_sigma);
    let mut kept_state = stream_state;
    let mut kept_count = if has_inf { stream_inf } else { stream_finite };
    if filtered {
        for s in 0..STREAMS {
            let mut state = Online::default();
            let mut count = 0;
            for i in stream_tokens(s, vocab) {
                let bits = z[i as usize];
                if is_kept(bits) {
                    count += 1;
                    state = state.add(f32::from_bits(bits));
                }
            }
            kept_state[s as usize] = state;
            kept_count[s as usize] = count;
        }
    }

    // The probed token under the kept set, normalised by the kept states
    // folded like the stats.
    let kept = tree_fold(&kept_state, Online::merge);
    let probed = probe.map_or(0.0, |x| {
        let Some(&zb) = z.get(x as usize) else {
            return f32::NEG_INFINITY;
        };
        if !is_kept(zb) {
            f32::NEG_INFINITY
        } else if has_inf {
            -(row_inf as f32).ln()
        } else {
            (f32::from_bits(zb) - kept.max) - kept.mass.ln()
        }
    });
    let flag = |on: bool, bit: u32| if on { bit } else { 0 };
    let state = GpuRowState {
        row_max: row.max,
        log_mass,
        kept_max: kept.max,
        log_kept_mass: kept.mass.ln(),
        threshold_key: threshold,
        flags: flag(has_inf, STATE_HAS_INF)
            | flag(use_min_p, STATE_MIN_P)
            | flag(use_sigma, STATE_SIGMA),
        log_min_p: p.log_min_p,
        sigma_n2,
        sigma_rhs,
        inf_count: row_inf,
        inv_temperature: p.inv_temperature,
        mask_row: p.mask_row,
        seed: p.seed,
        step: p.step,
    };

    // Stream race.
    let key = p.seed;
    let race: Vec<Option<f32>> = (0..STREAMS)
        .map(|s| {
            let bits = philox4x32_10([s >> 2, p.step[0], p.step[1], PURPOSE_STREAM], key);
            let e = exponential_from_bits(bits[(s & 3) as usize]);
            let (live, weight_log) = if has_inf {
                let c = kept_count[s as usize];
                (c != 0, (c as f32).ln())
            } else {
                let st = kept_state[s as usize];
                (st.mass != 0.0, (st.max - row.max) + st.mass.ln())
            };
            live.then(|| weight_log - e.ln())
        })
        .collect();
    let (stream, stream_gap) = race_winner(race.iter().enumerate().map(|(s, k)| (s as u32, *k)));
    let Some(stream) = stream else {
        return (no_valid, no_probe, None);
    };
    let stream_max = kept_state[stream as usize].max;

    // Token race inside the chosen stream.
    let token_race = stream_tokens(stream, vocab).map(|i| {
        let g = i / GROUP;
        let bits = philox4x32_10([g, p.step[0], p.step[1], PURPOSE_TOKEN], key);
        let zb = z[i as usize];
        if !is_kept(zb) {
            return (i, None);
        }
        let mut r = -exponential_from_bits(bits[(i % GROUP) as usize]).ln();
        if !has_inf {
            r += f32::from_bits(zb) - stream_max;
        }
        (i, Some(r))
    });
    let (token, token_gap) = race_winner(token_race);
    let Some(token) = token else {
        return (no_valid, no_probe, None);
    };
    let trace = RowTrace {
        result: SampleResult {
            token,
            logprob: logprob_of(token),
            kept: kept_count.iter().sum(),
            status: RowStatus::Ok,
        },
        top_p_margin,
        stream_gap,
        token_gap,
    };
    (trace, probed, Some(state))
}

/// Winner of a race (largest key, lowest index among ties) and its gap to the
/// runner-up.
pub(crate) fn race_winner(entries: impl Iterator<Item = (u32, Option<f32>)>) -> (Option<u32>, f32) {
    let mut best: Option<(u32, f32)> = None;
    let mut second = f32::NEG_INFINITY;
    for (i, k) in entries {
        let Some(k) = k else { continue };
        match best {
            Some((_, bk)) if k > bk => {
                second = bk;
                best = Some((i, k));
            }
            Some(_) => second = second.max(k),
            None => best = Some((i, k)),
        }
    }
    match best {
        Some((i, k)) => (Some(i), k - second),
        None => (None, f32::INFINITY),
    }
}
