//! CPU twin of `shaders/speculative.wgsl` (with the sampling twin for the
//! draws): the same rows, Philox words and f32 operations, so its tokens
//! match the GPU's except where a decision is within rounding
//! ([`VerificationTrace::margin`] says how close).

use super::{
    accept_uniform, check_drafts, check_host_call, history_room, log_probability, sampled_rows,
    validate_verify_params, verify_rows, DraftDistribution, Drafts, GpuVerifyRow, Verification,
    VerifyOptions, MODE_DONE, MODE_FILL, MODE_RESIDUAL, PURPOSE_RESIDUAL_STREAM,
    PURPOSE_RESIDUAL_TOKEN, VERIFY_COMPARE,
};
use crate::math::philox::{exponential_from_bits, philox4x32_10};
use crate::sampling::cpu::{
    mask_allows, race_winner, sample_row_probed, scaled_bits, stream_tokens, Probed,
};
use crate::sampling::edits::{HistoryTwin, OwnedLogits};
use crate::sampling::mask::words_per_row;
use crate::sampling::{GpuRowState, NO_MASK, NO_PROBE, STATE_HAS_INF};
use crate::{HostLogits, Result, RowStatus, SamplingParams, NO_TOKEN};

const NEG_INF_BITS: u32 = 0xFF80_0000;

/// Verifies every request on the CPU with the GPU's semantics.
///
/// ```
/// use rollcall::speculative::{cpu, Drafts, VerifyOptions};
/// use rollcall::{HostLogits, SamplingParams};
/// // Two positions of a 3-token vocabulary; the draft guessed token 1.
/// let target = [0.0f32, 9.0, 0.0, 5.0, 0.0, 0.0];
/// let drafts = Drafts { tokens: &[1], lens: &[1] };
/// let out = cpu::verify(HostLogits::F32(&target), 3, &[SamplingParams::greedy()], &drafts,
///                       &VerifyOptions::default())?;
/// assert_eq!(out[0].accepted, 1);
/// assert_eq!(out[0].tokens, [1, 0]); // the draft, then the bonus token
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn verify(
    target: HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
    drafts: &Drafts<'_>,
    options: &VerifyOptions<'_>,
) -> Result<Vec<Verification>> {
    Ok(verify_traced(target, vocab, params, drafts, options)?
        .into_iter()
        .map(|t| t.verification)
        .collect())
}

/// A request's outcome with how close its decisions came to flipping.
#[derive(Clone, Debug, PartialEq)]
pub struct VerificationTrace {
    /// The twin's outcome.
    pub verification: Verification,
    /// The smallest gap among the decisions that shaped the outcome: the
    /// draws' races and top-p margins (as [`RowTrace`](crate::sampling::cpu::RowTrace)),
    /// `|ln u − ln(p / q)|` of each acceptance test, and the residual
    /// draw's races. Another device's rounding can only change a request
    /// whose margin is tiny.
    pub margin: f32,
}

/// [`verify`], reporting how close each request's decisions were.
pub fn verify_traced(
    target: HostLogits<'_>,
    vocab: u32,
    params: &[SamplingParams],
    drafts: &Drafts<'_>,
    options: &VerifyOptions<'_>,
) -> Result<Vec<VerificationTrace>> {
    let gpu_params = validate_verify_params(params, options.histories.is_some())?;
    let layout = check_drafts(drafts, params.len(), vocab)?;
    check_host_call(&target, vocab, &layout, options)?;
    let v = vocab as usize;
    let with_draft_rows = !matches!(options.draft, DraftDistribution::Deterministic);
    let probabilities = matches!(options.draft, DraftDistribution::Probs(_));
    let (rows, sources) = sampled_rows(
        &gpu_params,
        &layout,
        drafts.lens,
        with_draft_rows,
        probabilities,
        options.mask.as_ref().map(|m| m.rows),
    );
    // Draft probabilities are read in log space, as the GPU writes them.
    let log_probs: Vec<f32> = match &options.draft {
        DraftDistribution::Probs(p) => (0..p.len())
            .map(|i| log_probability(p.get_f32(i)))
            .collect(),
        _ => Vec::new(),
    };
    let draft_values = match &options.draft {
        DraftDistribution::Deterministic => None,
        DraftDistribution::Logits(l) => Some(*l),
        DraftDistribution::Probs(_) => Some(HostLogits::F32(&log_probs)),
    };
    let draft_rows = if with_draft_rows { layout.drafts } else { 0 } as usize;
    let mask_row = |mask_row: u32| -> Option<&[u32]> {
        let mask = options.mask.as_ref()?;
        if mask_row == NO_MASK {
            return None;
        }
        let per_row = words_per_row(vocab);
        let m = mask_row as usize;
        Some(&mask.words[m * per_row..(m + 1) * per_row])
    };
    // Target rows as the sampler reads them: with the request's bias,
    // penalties and stop tokens over its history and the drafts before the
    // position.
    let mut edited: Vec<Option<OwnedLogits>> = Vec::new();
    if let Some(histories) = options.histories {
        let room = history_room(histories, layout.max_drafts)?;
        for (r, &d) in drafts.lens.iter().enumerate() {
            for i in 0..=d {
                let t = (layout.first_target[r] + i) as usize;
                let mut twin = HistoryTwin::new(1, room)?;
                twin.set_row(0, vocab, &histories[r])?;
                twin.set_penalties(std::slice::from_ref(&params[r]))?;
                let first = layout.first_draft[r] as usize;
                for &x in &drafts.tokens[first..first + i as usize] {
                    twin.append(0, x);
                }
                edited.push(Some(twin.edit_row(0, target.slice(t * v, (t + 1) * v))?));
            }
        }
    }
    let row_values = |s: usize| -> HostLogits<'_> {
        match (s < draft_rows, draft_values) {
            (true, Some(d)) => d.slice(s * v, (s + 1) * v),
            _ => match edited.get(s - draft_rows) {
                Some(Some(row)) => row.as_host(),
                _ => target.slice((s - draft_rows) * v, (s - draft_rows + 1) * v),
            },
        }
    };
    let sampled: Vec<Probed> = rows
        .iter()
        .enumerate()
        .map(|(s, p)| {
            let probe = (sources[s] != NO_PROBE).then(|| drafts.tokens[sources[s] as usize]);
            sample_row_probed(row_values(s), p, mask_row(p.mask_row), probe)
        })
        .collect();
    let requests = verify_rows(&gpu_params, &layout, drafts.lens, with_draft_rows, &[]);
    Ok(requests
        .iter()
        .map(|q| {
            let mut out = verify_request(q, draft_rows as u32, drafts.tokens, &sampled);
            if out.mode != MODE_DONE {
                let residual = Residual {
                    vocab,
                    values: &row_values,
                    mask_row: &mask_row,
                };
                residual.finish(q, draft_rows, &sampled, &mut out);
            }
            out.trace()
        })
        .collect())
}

/// A request's outcome while it is built, as `verify_rows` leaves it.
struct Outcome {
    accepted: u32,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    acceptance: Vec<f32>,
    status: RowStatus,
    mode: u32,
    margin: f32,
}

impl Outcome {
    fn trace(self) -> VerificationTrace {
        VerificationTrace {
            verification: Verification {
                accepted: self.accepted,
                tokens: self.tokens,
                logprobs: self.logprobs,
                acceptance: self.acceptance,
                status: self.status,
            },
            margin: self.margin,
        }
    }
}

fn row_margin(p: &Probed) -> f32 {
    let t = &p.trace;
    t.top_p_margin.min(t.stream_gap).min(t.token_gap)
}

/// The shader's `verify_rows` for one request (emitted tokens trimmed to
/// `accepted + 1`).
fn verify_request(
    q: &GpuVerifyRow,
    draft_rows: u32,
    tokens: &[u32],
    sampled: &[Probed],
) -> Outcome {
    let compare = q.flags & VERIFY_COMPARE != 0;
    let mut out = Outcome {
        accepted: 0,
        tokens: Vec::new(),
        logprobs: Vec::new(),
        acceptance: vec![0.0; q.drafts as usize],
        status: RowStatus::Ok,
        mode: if compare { MODE_DONE } else { MODE_FILL },
        margin: f32::INFINITY,
    };
    for i in 0..q.drafts {
        let s = &sampled[(draft_rows + q.first_target + i) as usize];
        let result = s.trace.result;
        if result.status != RowStatus::Ok {
            out.status = RowStatus::NoValidToken;
            out.tokens.push(NO_TOKEN);
            out.logprobs.push(f32::NEG_INFINITY);
            return out;
        }
        let x = tokens[(q.first_draft + i) as usize];
        let log_p = s.probe_logprob;
        if compare {
            out.acceptance[i as usize] = if log_p == f32::NEG_INFINITY {
                0.0
            } else {
                log_p.exp()
            };
            out.margin = out.margin.min(row_margin(s));
            out.tokens.push(result.token);
            out.logprobs.push(result.logprob);
            if result.token != x {
                return out;
            }
            out.accepted += 1;
            continue;
        }
        let draft = &sampled[(q.first_draft + i) as usize];
        let log_q = draft.probe_logprob;
        let q_positive = draft.trace.result.status == RowStatus::Ok && log_q != f32::NEG_INFINITY;
        let p_positive = log_p != f32::NEG_INFINITY;
        let log_ratio = log_p - log_q;
        if q_positive && p_positive {
            out.acceptance[i as usize] = log_ratio.min(0.0).exp();
            let log_u = accept_uniform(q.seed, q.step, i).ln();
            out.margin = out.margin.min((log_u - log_ratio).abs());
            if log_u <= log_ratio {
                out.tokens.push(x);
                out.logprobs.push(f32::NEG_INFINITY); // filled by the residual step
                out.accepted += 1;
                continue;
            }
        }
        out.tokens.push(result.token);
        out.logprobs.push(result.logprob);
        if q_positive {
            out.mode = MODE_RESIDUAL;
        } else {
            out.margin = out.margin.min(row_margin(s));
        }
        return out;
    }
    let s = &sampled[(draft_rows + q.first_target + q.drafts) as usize];
    if s.trace.result.status == RowStatus::Ok {
        out.margin = out.margin.min(row_margin(s));
        out.tokens.push(s.trace.result.token);
        out.logprobs.push(s.trace.result.logprob);
    } else {
        out.status = RowStatus::NoValidToken;
        out.tokens.push(NO_TOKEN);
        out.logprobs.push(f32::NEG_INFINITY);
    }
    out
}

/// The shader's `residual_rows` for one request.
struct Residual<'a, 'b> {
    vocab: u32,
    /// A sampled row's values (draft rows first, then target rows).
    values: &'a dyn Fn(usize) -> HostLogits<'b>,
    mask_row: &'a dyn Fn(u32) -> Option<&'b [u32]>,
}

impl Residual<'_, '_> {
    /// Scaled, masked bits of token `i` of sampled row `s` under `st`.
    fn bits(&self, s: usize, i: u32, st: &GpuRowState) -> u32 {
        if !mask_allows((self.mask_row)(st.mask_row), i as usize) {
            return NEG_INF_BITS;
        }
        scaled_bits((self.values)(s).get_f32(i as usize), st.inv_temperature)
    }

    fn logprob(&self, s: usize, token: u32, st: &GpuRowState) -> f32 {
        if st.flags & STATE_HAS_INF != 0 {
            return -(st.inf_count as f32).ln();
        }
        (f32::from_bits(self.bits(s, token, st)) - st.row_max) - st.log_mass
    }

    fn finish(&self, q: &GpuVerifyRow, draft_rows: usize, sampled: &[Probed], out: &mut Outcome) {
        let target_row = |i: u32| draft_rows + (q.first_target + i) as usize;
        let state = |s: usize| sampled[s].state.unwrap_or_default();
        for i in 0..out.accepted {
            let s = target_row(i);
            out.logprobs[i as usize] = self.logprob(s, out.tokens[i as usize], &state(s));
        }
        if out.mode != MODE_RESIDUAL {
            return;
        }
        let j = out.accepted;
        let (t_row, d_row) = (target_row(j), (q.first_draft + j) as usize);
        let (target, draft) = (state(t_row), state(d_row));
        let weight = |i: u32| {
            let p = target.probability(self.bits(t_row, i, &target));
            let q = draft.probability(self.bits(d_row, i, &draft));
            (p - q).max(0.0)
        };
        let key = target.seed;
        let stream_race = (0..crate::sampling::STREAMS).map(|s| {
            let mass: f32 = stream_tokens(s, self.vocab).fold(0.0, |acc, i| acc + weight(i));
            let words = philox4x32_10(
                [
                    s >> 2,
                    target.step[0],
                    target.step[1],
                    PURPOSE_RESIDUAL_STREAM,
                ],
                key,
            );
            let e = exponential_from_bits(words[(s & 3) as usize]);
            (s, (mass > 0.0).then(|| mass.ln() - e.ln()))
        });
        let (stream, stream_gap) = race_winner(stream_race);
        let Some(stream) = stream else {
            // p <= q everywhere (to rounding): the draw of p stays.
            out.margin = out.margin.min(row_margin(&sampled[t_row]));
            return;
        };
        let token_race = stream_tokens(stream, self.vocab).map(|i| {
            let g = i / crate::sampling::GROUP;
            let words = philox4x32_10(
                [g, target.step[0], target.step[1], PURPOSE_RESIDUAL_TOKEN],
                key,
            );
            let w = weight(i);
            let e = exponential_from_bits(words[(i % crate::sampling::GROUP) as usize]);
            (i, (w > 0.0).then(|| w.ln() - e.ln()))
        });
        let (token, token_gap) = race_winner(token_race);
        out.margin = out.margin.min(stream_gap).min(token_gap);
        if let Some(token) = token {
            out.tokens[j as usize] = token;
            out.logprobs[j as usize] = self.logprob(t_row, token, &target);
        }
    }
}
