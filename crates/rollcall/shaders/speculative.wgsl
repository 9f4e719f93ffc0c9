// Speculative decoding's verification step (Leviathan et al. 2023, Chen et
// al. 2023), after the sampling kernels have drawn every target position and
// probed the draft token there:
//
//   set_probes     (engine path) writes each sampled row's probe token from
//                  the caller's draft tokens into its parameters;
//   log_probs      draft probabilities to log space, so that the sampling
//                  kernels read them as the draft's logits (T = 1, no filter);
//   verify_rows    one invocation per request: accepts or rejects each draft
//                  token, writes the emitted tokens, their log-probabilities
//                  and each position's acceptance probability;
//   residual_rows  one workgroup per request with a probabilistic draft: the
//                  accepted drafts' log-probabilities, and at the first
//                  rejection a draw from max(0, p - q) (one pass over that
//                  position's target and draft rows, then one stream of both).
//
// The sampled rows sit in one batch: the draft rows (request r's position i
// at first_draft + i) first, then the target rows (at draft_rows +
// first_target + i; position `drafts` is the bonus position). Position i of a
// request samples with step + i.
//
// `MASKED` and `DRAFT_DTYPE` are prepended by the host; the target's dtype
// is in each dispatch's record.

#include "shared/philox.wgsl"
#include "shared/logits.wgsl"
#include "shared/row_state.wgsl"
#include "shared/mask.wgsl"

const WG: u32 = 256u;
const GROUP: u32 = 4u;
const STATUS_OK: u32 = 0u;
const STATUS_NO_VALID_TOKEN: u32 = 1u;
// Philox purposes (the sampler's stream and token races use 0 and 1).
const PURPOSE_ACCEPT: u32 = 2u;
const PURPOSE_RESIDUAL_STREAM: u32 = 3u;
const PURPOSE_RESIDUAL_TOKEN: u32 = 4u;
// The sampling kernels' `RowParams`, as words: its size and where `probe` is.
const PARAMS_WORDS: u32 = 16u;
const PROBE_WORD: u32 = 13u;
// VerifyRow.flags: accept exactly when the draw equals the draft token
// (greedy rows, and drafts without a distribution).
const VERIFY_COMPARE: u32 = 1u;
// Verdict.mode.
const MODE_DONE: u32 = 0u;
const MODE_FILL: u32 = 1u;      // probabilistic: fill the accepted drafts' log-probabilities
const MODE_RESIDUAL: u32 = 2u;  // ... and draw the residual at position `accepted`


// The sampling kernels' result of one row (`RowResult` in sampling.wgsl).
struct RowResult {
    logprob: f32,
    status: u32,
    kept: u32,
    probe_logprob: f32,
}

struct VerifyRow {
    first_target: u32,  // the request's first target row (position 0)
    drafts: u32,        // draft tokens, 0..=stride
    first_draft: u32,   // its first draft token (and draft row)
    flags: u32,         // VERIFY_COMPARE
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    draft_elem: u32,    // element of its first draft row in the residual dispatch's draft binding
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Per request: the outcome (first three words, read by the caller) and what
// `residual_rows` needs.
struct Verdict {
    accepted: u32,
    emitted: u32,
    status: u32,
    mode: u32,
    first_target: u32,  // sampled-batch row of position 0
    draft_row: u32,     // sampled-batch row of position 0's draft
    draft_elem: u32,
    out_base: u32,      // first output slot: request * (stride + 1)
}

struct VerifyInfo {
    requests: u32,
    stride: u32,        // the most draft tokens a request can have
    draft_rows: u32,    // the target rows start after them
    rows: u32,          // sampled rows (set_probes) or elements (log_probs)
    grid_width: u32,    // invocations per row of the dispatch grid
    elem_base: u32,     // (log_probs) the element of the first probability in its binding
    out_elem_base: u32, // (log_probs) and of the first log-probability in its own
    _pad2: u32,
}

// ---- Small kernels (bindings 10 and up) ----

@group(0) @binding(10) var<uniform> info: VerifyInfo;
@group(0) @binding(11) var<storage, read> requests: array<VerifyRow>;
@group(0) @binding(12) var<storage, read> draft_tokens: array<u32>;
@group(0) @binding(13) var<storage, read_write> params_words: array<u32>;
@group(0) @binding(14) var<storage, read> probe_sources: array<u32>;
@group(0) @binding(15) var<storage, read> sampled_tokens: array<u32>;
@group(0) @binding(16) var<storage, read> sampled_results: array<RowResult>;
@group(0) @binding(17) var<storage, read_write> verdicts_out: array<Verdict>;
@group(0) @binding(18) var<storage, read_write> emitted_tokens: array<u32>;
@group(0) @binding(19) var<storage, read_write> emitted_logprobs: array<f32>;
@group(0) @binding(20) var<storage, read_write> acceptance: array<f32>;
@group(0) @binding(21) var<storage, read> probs_in: array<u32>;
@group(0) @binding(22) var<storage, read_write> log_probs_out: array<u32>;

fn grid_index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * info.grid_width;
}

// Each sampled row's probe: the draft token at its position, or none.
@compute @workgroup_size(64)
fn set_probes(@builtin(global_invocation_id) gid: vec3<u32>) {
    let v = grid_index(gid);
    if v >= info.rows {
        return;
    }
    let source = probe_sources[v];
    params_words[v * PARAMS_WORDS + PROBE_WORD] = select(NO_INDEX, draft_tokens[source], source != NO_INDEX);
}

// A 16-bit value of `DRAFT_DTYPE` as f32 bits.
fn draft_half_bits(h: u32) -> u32 {
    if DRAFT_DTYPE == DTYPE_F16 {
        return f32_bits_from_f16_bits(h);
    }
    return h << 16u;
}

// Where element e of a `DRAFT_DTYPE` array sits: its word, and (16-bit
// values) which half.
fn draft_word(e: u32) -> u32 {
    return select(e >> 1u, e, DRAFT_DTYPE == DTYPE_F32);
}

// Element e of a `DRAFT_DTYPE` array as f32 bits, from its word.
fn draft_element(word: u32, e: u32) -> u32 {
    if DRAFT_DTYPE == DTYPE_F32 {
        return word;
    }
    return draft_half_bits(select(word & 0xFFFFu, word >> 16u, (e & 1u) == 1u));
}

// ln of a probability's bits: positive normal numbers only (0, subnormals,
// negatives and NaN are -inf; +inf stays +inf).
fn log_probability_bits(bits: u32) -> u32 {
    if bits == F32_POS_INF_BITS {
        return bits;
    }
    let exponent = (bits >> 23u) & 0xFFu;
    if (bits & 0x80000000u) != 0u || exponent == 0u || exponent == 0xFFu {
        return F32_NEG_INF_BITS;
    }
    return bitcast<u32>(log(bitcast<f32>(bits)));
}

@compute @workgroup_size(64)
fn log_probs(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = grid_index(gid);
    if e >= info.rows {
        return;
    }
    let source = info.elem_base + e;
    log_probs_out[info.out_elem_base + e] = log_probability_bits(draft_element(probs_in[draft_word(source)], source));
}

// The uniform (0, 1] of position `offset` after the request's step.
fn accept_uniform(q: VerifyRow, offset: u32) -> f32 {
    let lo = q.step_lo + offset;
    let hi = q.step_hi + select(0u, 1u, lo < q.step_lo);
    let words = philox4x32_10(vec4<u32>(0u, lo, hi, PURPOSE_ACCEPT), vec2<u32>(q.seed_lo, q.seed_hi));
    return (f32(words[0] >> 8u) + 1.0) * 5.9604645e-8;
}

fn is_neg_inf(x: f32) -> bool {
    return bitcast<u32>(x) == F32_NEG_INF_BITS;
}

@compute @workgroup_size(64)
fn verify_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = grid_index(gid);
    if r >= info.requests {
        return;
    }
    let q = requests[r];
    let out_base = r * (info.stride + 1u);
    for (var i = 0u; i <= info.stride; i++) {
        emitted_tokens[out_base + i] = NO_INDEX;
        emitted_logprobs[out_base + i] = bitcast<f32>(F32_NEG_INF_BITS);
    }
    for (var i = 0u; i < info.stride; i++) {
        acceptance[r * info.stride + i] = 0.0;
    }
    let compare = (q.flags & VERIFY_COMPARE) != 0u;
    var verdict = Verdict(0u, 0u, STATUS_OK, select(MODE_FILL, MODE_DONE, compare),
                          info.draft_rows + q.first_target, q.first_draft, q.draft_elem, out_base);
    var rejected = false;
    for (var i = 0u; i < q.drafts; i++) {
        let row = info.draft_rows + q.first_target + i;
        let result = sampled_results[row];
        let drawn = sampled_tokens[row];
        if result.status != STATUS_OK {
            verdict.status = STATUS_NO_VALID_TOKEN;
            rejected = true;
            break;
        }
        let x = draft_tokens[q.first_draft + i];
        let log_p = result.probe_logprob;
        if compare {
            // q is one-hot on x: min(1, p / q) = p(x).
            acceptance[r * info.stride + i] = select(exp(log_p), 0.0, is_neg_inf(log_p));
            emitted_tokens[out_base + i] = drawn;
            emitted_logprobs[out_base + i] = result.logprob;
            if drawn != x {
                rejected = true;
                break;
            }
            verdict.accepted += 1u;
            continue;
        }
        let draft = sampled_results[q.first_draft + i];
        let log_q = draft.probe_logprob;
        let q_positive = draft.status == STATUS_OK && !is_neg_inf(log_q);
        let p_positive = !is_neg_inf(log_p);
        let log_ratio = log_p - log_q;
        if q_positive && p_positive {
            acceptance[r * info.stride + i] = exp(min(0.0, log_ratio));
        }
        if q_positive && p_positive && log(accept_uniform(q, i)) <= log_ratio {
            // Its log-probability comes from `residual_rows`.
            emitted_tokens[out_base + i] = x;
            verdict.accepted += 1u;
            continue;
        }
        // Rejected: the residual max(0, p - q), or p itself where q is 0
        // (the draw at this position is a sample of p).
        emitted_tokens[out_base + i] = drawn;
        emitted_logprobs[out_base + i] = result.logprob;
        if q_positive {
            verdict.mode = MODE_RESIDUAL;
        }
        rejected = true;
        break;
    }
    if !rejected {
        // Every draft accepted: the bonus token from the last position.
        let row = info.draft_rows + q.first_target + q.drafts;
        let result = sampled_results[row];
        if result.status == STATUS_OK {
            emitted_tokens[out_base + q.drafts] = sampled_tokens[row];
            emitted_logprobs[out_base + q.drafts] = result.logprob;
        } else {
            verdict.status = STATUS_NO_VALID_TOKEN;
        }
    }
    verdict.emitted = verdict.accepted + 1u;
    verdicts_out[r] = verdict;
}

// ---- The residual draw (a kernel over the target logits) ----

@group(0) @binding(2) var<storage, read> verdicts: array<Verdict>;
// The sampled rows' top log-probability slots, which hold their states.
struct StateSlot {
    state: StateRecord,
    rest: array<vec4<u32>, 6>,
}
@group(0) @binding(3) var<storage, read> states: array<StateSlot>;
@group(0) @binding(4) var<storage, read> draft_values: array<u32>;
@group(0) @binding(5) var<storage, read_write> out_tokens: array<u32>;
@group(0) @binding(7) var<storage, read_write> out_logprobs: array<f32>;
// (6: masks, `shared/mask.wgsl`; 8: the logits as vectors, unused.)

var<workgroup> race_key: array<f32, WG>;
var<workgroup> race_index: array<u32, WG>;

// Row `row` of the dispatch's target logits, token i, scaled and masked.
fn target_bits(row: u32, i: u32, st: StateRecord) -> u32 {
    if !mask_allows(st.mask_row, i) {
        return F32_NEG_INF_BITS;
    }
    return scaled_logit_bits(bitcast<u32>(load_logit(row, i)), st.inv_temperature);
}

fn draft_logit_bits(elem: u32, i: u32, st: StateRecord) -> u32 {
    if !mask_allows(st.mask_row, i) {
        return F32_NEG_INF_BITS;
    }
    let e = elem + i;
    return scaled_logit_bits(draft_element(draft_values[draft_word(e)], e), st.inv_temperature);
}

// max(0, p(i) - q(i)).
fn residual_weight(row: u32, elem: u32, i: u32, target_st: StateRecord, draft_st: StateRecord) -> f32 {
    let p = state_probability(target_st, target_bits(row, i, target_st));
    let q = state_probability(draft_st, draft_logit_bits(elem, i, draft_st));
    return max(0.0, p - q);
}

// Whether (k2, i2) beats (k1, i1): the larger key, ties to the lower index;
// NO_INDEX never wins.
fn race_beats(k2: f32, i2: u32, k1: f32, i1: u32) -> bool {
    return i2 != NO_INDEX && (i1 == NO_INDEX || k2 > k1 || (k2 == k1 && i2 < i1));
}

// The winner of the entries in race_key / race_index, to every invocation.
fn race_winner(t: u32) -> u32 {
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        workgroupBarrier();
        if t < width && race_beats(race_key[t + width], race_index[t + width], race_key[t], race_index[t]) {
            race_key[t] = race_key[t + width];
            race_index[t] = race_index[t + width];
        }
    }
    return workgroupUniformLoad(&race_index[0]);
}

@compute @workgroup_size(256)
fn residual_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let v = verdicts[chunk.row_base + wid.x];
    if v.mode == MODE_DONE {
        return;
    }
    let vocab = chunk.vocab;
    // The accepted drafts' log-probabilities under the tgt's softmax(z).
    for (var i = t; i < v.accepted; i += WG) {
        let st = states[v.first_target + i].state;
        let x = out_tokens[v.out_base + i];
        let z = target_bits(v.first_target + i - chunk.logits_base, x, st);
        var logprob = (bitcast<f32>(z) - st.row_max) - st.log_mass;
        if (st.flags & STATE_HAS_INF) != 0u {
            logprob = -log(f32(st.inf_count));
        }
        out_logprobs[v.out_base + i] = logprob;
    }
    if v.mode != MODE_RESIDUAL {
        return;
    }
    let j = v.accepted;
    let tgt = states[v.first_target + j].state;
    let dft = states[v.draft_row + j].state;
    let row = v.first_target + j - chunk.logits_base;
    let elem = v.draft_elem + j * vocab;
    let seed = vec2<u32>(tgt.seed_lo, tgt.seed_hi);

    // Stream race over the residual mass of each stream.
    var mass = 0.0;
    for (var g = t; g * GROUP < vocab; g += WG) {
        for (var k = 0u; k < GROUP && g * GROUP + k < vocab; k++) {
            mass += residual_weight(row, elem, g * GROUP + k, tgt, dft);
        }
    }
    let stream_words = philox4x32_10(vec4<u32>(t / 4u, tgt.step_lo, tgt.step_hi, PURPOSE_RESIDUAL_STREAM), seed);
    race_key[t] = log(mass) - log(exponential_from_bits(stream_words[t & 3u]));
    race_index[t] = select(NO_INDEX, t, mass > 0.0);
    let stream = race_winner(t);
    if stream == NO_INDEX {
        // p <= q everywhere (to rounding): the draw of p stays.
        return;
    }

    // Token race inside the chosen stream, a group per invocation.
    var best_key = 0.0;
    var best = NO_INDEX;
    for (var n = t; (stream + n * WG) * GROUP < vocab; n += WG) {
        let g = stream + n * WG;
        let words = philox4x32_10(vec4<u32>(g, tgt.step_lo, tgt.step_hi, PURPOSE_RESIDUAL_TOKEN), seed);
        for (var k = 0u; k < GROUP && g * GROUP + k < vocab; k++) {
            let i = g * GROUP + k;
            let w = residual_weight(row, elem, i, tgt, dft);
            if w > 0.0 {
                let key = log(w) - log(exponential_from_bits(words[k]));
                if race_beats(key, i, best_key, best) {
                    best_key = key;
                    best = i;
                }
            }
        }
    }
    workgroupBarrier();
    race_key[t] = best_key;
    race_index[t] = best;
    let token = race_winner(t);
    if t == 0u && token != NO_INDEX {
        let z = target_bits(row, token, tgt);
        var logprob = (bitcast<f32>(z) - tgt.row_max) - tgt.log_mass;
        if (tgt.flags & STATE_HAS_INF) != 0u {
            logprob = -log(f32(tgt.inf_count));
        }
        out_tokens[v.out_base + j] = token;
        out_logprobs[v.out_base + j] = logprob;
    }
}
