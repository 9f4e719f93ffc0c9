// Batched token sampling: one workgroup per row, 256 streams per row.
//
// Kernels: `sample_rows` runs pass 1 and draws (or draws from the partials
// of a separate pass 1); `stream_partials` is pass 1 alone, per row or per
// tile of a row, leaving each stream's state; `finish_rows` draws greedy
// and temperature-only rows from those states in 16 invocations. Every
// route gives the same bits (the host picks one per batch: `SplitRows`).
//
// Token i belongs to stream (i / 4) % 256 and every stream visits its groups
// of 4 tokens in increasing order. That layout is part of the contract: it
// fixes the draw for a (row, seed, step) on every batch size, position and
// adapter. The draw is exact: a stream is picked by an exponential race over
// the streams' kept masses, then a token inside it by a race over its kept
// tokens, so random numbers are drawn per stream and for one stream only.
//
// Passes over a row's logits:
//   greedy, or temperature only: 1 (+ the chosen stream's 1/256 of the row,
//     + the streams that hold a NaN or +inf logit, read again with masks)
//   filtered (top-k, top-p, min-p): 1, plus the streams whose maximum reaches
//     a bound on the kept set's boundary, when that boundary lies among the
//     tokens gathered into workgroup memory (the usual case: a heavy head);
//     else 2 + up to 4 radix rounds per filter over the row (exact fallback).
// Both routes compute the same thresholds and the same stream masses, so the
// token does not depend on which one ran.
//
// `CANDIDATES` (workgroup-memory capacity of the gather) is prepended by the
// host; like the record's `loads` (dtype, vector reads) it changes speed,
// never results. So is `TILE_GROUPS`, which fixes the results (see below), and the
// batch's features: `MASKED` (some row reads a token bitmask: every load ANDs
// the token's bit in, so a batch without masks reads none) and `SIGMA_SUMS`
// (some row uses top-nσ: pass 1 also sums z and z² per stream).

#include "shared/philox.wgsl"
#include "shared/logits.wgsl"
#include "shared/row_state.wgsl"
#include "shared/mask.wgsl"
#include "shared/fold.wgsl"

const WG: u32 = 256u;
const GROUP: u32 = 4u;
// A stream accumulates its groups tile by tile (TILE_GROUPS of its groups,
// TILE_TOKENS of the row's tokens) and folds the tiles' states in order, so a
// split pass that computes the tiles in separate workgroups gives the same
// bits, and the token does not depend on the split.
// TILE_GROUPS is prepended by the host (`sampling::TILE_GROUPS`).
const TILE_TOKENS: u32 = TILE_GROUPS * WG * GROUP;

const FLAG_GREEDY: u32 = 1u;
const FLAG_MIN_P: u32 = 2u;
const FLAG_TOP_N_SIGMA: u32 = 4u;
// The row's distribution goes to its first top log-probability slots as a
// `StateRecord` (rows that ask for top log-probabilities never ask for it).
const FLAG_WRITE_STATE: u32 = 8u;
const MAX_TOP_LOGPROBS: u32 = 20u;
const STATUS_OK: u32 = 0u;
const STATUS_NO_VALID_TOKEN: u32 = 1u;

const PURPOSE_STREAM: u32 = 0u;
const PURPOSE_TOKEN: u32 = 1u;


const F32_LOWEST: f32 = -3.40282347e38;

struct RowParams {
    inv_temperature: f32,
    top_k: u32,        // 0 or >= vocab: off
    top_p: f32,        // >= 1: off
    log_min_p: f32,    // used when FLAG_MIN_P is set
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    flags: u32,
    mask_row: u32,     // NO_MASK: the row reads no token mask
    top_n_sigma: f32,  // used when FLAG_TOP_N_SIGMA is set
    top_logprobs: u32, // 0..=MAX_TOP_LOGPROBS entries for `top_logprobs`
    logits_row: u32,   // the logits row it reads, when the chunk gathers
    probe: u32,        // a token whose probability the row reports, or NO_INDEX
    _pad1: u32,
    _pad2: u32,
}

// The row of this dispatch's logits that dispatch row `index` reads: its
// own, or (several draws from one row) the one its parameters name.
fn logits_row(p: RowParams, index: u32) -> u32 {
    return select(index, p.logits_row - chunk.logits_base, chunk.gather != 0u);
}

struct RowResult {
    logprob: f32,
    status: u32,
    kept: u32,
    // ln of the probed token's probability under the row's processed,
    // filtered distribution (greedy: 0 for the arg-max, else -inf); 0 when
    // the row probes no token.
    probe_logprob: f32,
}

@group(0) @binding(2) var<storage, read> params: array<RowParams>;
@group(0) @binding(3) var<storage, read_write> out_tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_results: array<RowResult>;

// One stream's pass-1 state over one tile of a row.
struct StreamPartial {
    max: f32,
    mass: f32,
    inf_count: u32,
    finite_count: u32,
    best_key: u32,
    best_index: u32,
    sum_z: f32,    // Σz and Σz² of the finite tokens (SIGMA_SUMS; else 0)
    sum_z2: f32,
}

// Written by `stream_partials`, read by `sample_rows` or `finish_rows` when
// chunk.tiles != 0: (row * tiles + tile) * WG + stream (tiles == 1: one
// partial for the whole row).
@group(0) @binding(5) var<storage, read_write> partials: array<StreamPartial>;
// The bound logits range again, as 4-word vectors (its size rounded down to
// 16 bytes): read instead of `logits` when the record says so, which the
// host does for f32 rows that start on a 16-byte boundary.
@group(0) @binding(8) var<storage, read> logits_vec4: array<vec4<u32>>;
// `top_logprobs`' output: MAX_TOP_LOGPROBS (token, logprob bits) per row,
// the most likely first; entries past the row's request or its valid tokens
// hold (NO_INDEX, -inf).
@group(0) @binding(7) var<storage, read_write> top_out: array<vec2<u32>>;
// Reductions and per-stream values (with red_f, red_g, red_u of
// `shared/fold.wgsl`).
var<workgroup> red_v: array<u32, WG>;
var<workgroup> stream_max_key: array<u32, WG>;
// Radix-select histograms: one bucket per invocation.
var<workgroup> h_count: array<atomic<u32>, 256>;
var<workgroup> h_mass_lo: array<atomic<u32>, 256>;
var<workgroup> h_mass_hi: array<atomic<u32>, 256>;
var<workgroup> h_max_key: array<atomic<u32>, 256>;
// Sums of FOLD runs: of histogram buckets, of sorted candidates, or of scan values.
var<workgroup> run_sums: array<vec2<u32>, FOLD>;
// Gathered candidates: (key, token), appended in each stream's visiting order.
var<workgroup> cand_key: array<u32, CANDIDATES>;
var<workgroup> cand_index: array<u32, CANDIDATES>;
var<workgroup> cand_count: atomic<u32>;
// The candidates' keys sorted, descending (and their tokens, after the wide
// routes' sort).
var<workgroup> sorted_key: array<u32, CANDIDATES>;
var<workgroup> sorted_weight: array<u32, CANDIDATES>;
// Scalars written by invocation 0 and read by all.
var<workgroup> sel_prefix: u32;
var<workgroup> sel_mask: u32;
var<workgroup> sel_above: vec2<u32>;
var<workgroup> sel_target: f32;
var<workgroup> sel_done: u32;
var<workgroup> sel_found: u32;
var<workgroup> sel_result: u32;
var<workgroup> shared_u32: u32;

// Canonical bits of the scaled logit z = l * (1 / T): NaN and -inf become -inf,
// -0 becomes +0.
fn scaled_bits(row: u32, i: u32, inv_t: f32) -> u32 {
    if MASKED && ((mask_word(i) >> (i & 31u)) & 1u) == 0u {
        return F32_NEG_INF_BITS;
    }
    return scaled_logit_bits(bitcast<u32>(load_logit(row, i)), inv_t);
}

// Fixed-point weight exp(z - m) * 2^32, saturated; exact integer sums of these
// make top-p's masses independent of summation order.
fn fixed_weight(z_bits: u32, row_max: f32) -> u32 {
    if !is_finite_bits(z_bits) {
        return 0u;
    }
    let w = exp(bitcast<f32>(z_bits) - row_max);
    if w >= 1.0 {
        return 0xFFFFFFFFu;
    }
    return u32(w * 4294967296.0);
}

struct RowState {
    row_max: f32,
    has_inf: bool,
    threshold_key: u32,
    use_min_p: bool,
    log_min_p: f32,
    // top-nσ without a square root or a division (both are inexact in
    // WGSL): z is kept unless (max - z)² · N² > n² · (N·Σz² - (Σz)²).
    use_sigma: bool,
    sigma_n2: f32,
    sigma_rhs: f32,
}

// The floors relative to the row's maximum: min-p and top-nσ. A NaN
// right-hand side (sums that overflowed) keeps every token.
fn passes_floors(z: f32, s: RowState) -> bool {
    let d = s.row_max - z;
    return (!s.use_min_p || (z - s.row_max) >= s.log_min_p)
        && (!SIGMA_SUMS || !s.use_sigma || !((d * d) * s.sigma_n2 > s.sigma_rhs));
}

// Whether a token can be drawn after all filters.
fn is_kept(z_bits: u32, s: RowState) -> bool {
    if s.has_inf {
        return z_bits == F32_POS_INF_BITS;
    }
    if !is_finite_bits(z_bits) {
        return false;
    }
    if key_from_bits(z_bits) < s.threshold_key {
        return false;
    }
    return passes_floors(bitcast<f32>(z_bits), s);
}

// Scaled bits of tokens base..base+3, classified afterwards by their bits;
// tokens past the row's end read as -inf. inv_t is a positive normal number
// (the host clamps it), so an IEEE product keeps inf and NaN non-finite.
// The f32 loads are written out here (masking non-finite logits before the
// multiply, or a shared load helper, made the pass slower on a CPU adapter);
// 16-bit groups use the shared `load_half_group` (two word loads, not four).
fn load_scaled_group(row: u32, base: u32, vocab: u32, inv_t: f32) -> vec4<u32> {
    let bits = load_scaled_group_unmasked(row, base, vocab, inv_t);
    if MASKED {
        // base is a multiple of 4: the group's four bits share one word.
        let allowed = (vec4<u32>(mask_word(base) >> (base & 31u)) & vec4<u32>(1u, 2u, 4u, 8u)) != vec4<u32>(0u);
        return select(vec4<u32>(F32_NEG_INF_BITS), bits, allowed);
    }
    return bits;
}

fn load_scaled_group_unmasked(row: u32, base: u32, vocab: u32, inv_t: f32) -> vec4<u32> {
    if vec4_loads() && base + GROUP <= vocab {
        let word = chunk.elem_base + row * chunk.vocab + base;
        return bitcast<vec4<u32>>(bitcast<vec4<f32>>(logits_vec4[word >> 2u]) * inv_t);
    }
    if logits_dtype() != DTYPE_F32 && base + GROUP <= vocab {
        return bitcast<vec4<u32>>(load_half_group(row, base) * inv_t);
    }
    if base + GROUP <= vocab {
        return bitcast<vec4<u32>>(vec4<f32>(load_logit(row, base), load_logit(row, base + 1u),
                                            load_logit(row, base + 2u), load_logit(row, base + 3u)) * inv_t);
    }
    var bits = vec4<u32>(F32_NEG_INF_BITS);
    for (var j = 0u; base + j < vocab; j++) {
        bits[j] = bitcast<u32>(load_logit(row, base + j) * inv_t);
    }
    return bits;
}

// Online (max, mass) update with one finite value.
fn online_add(state: vec2<f32>, z: f32) -> vec2<f32> {
    if state.y == 0.0 {
        return vec2<f32>(z, 1.0);
    }
    if z > state.x {
        return vec2<f32>(z, state.y * exp(state.x - z) + 1.0);
    }
    return vec2<f32>(state.x, state.y + exp(z - state.x));
}

// Online (max, mass) update with a group of four values (`live` marks the
// finite ones), without branches: SIMD-on-CPU drivers run both sides of a
// divergent `if` under a mask, paying the rescale and the exps twice. An
// empty state carries max F32_LOWEST and mass 0; the rescale factor is then
// irrelevant (0 * it).
fn online_add_group(state: vec2<f32>, z: vec4<f32>, live: vec4<bool>) -> vec2<f32> {
    let zl = select(vec4<f32>(F32_LOWEST), z, live);
    let m = max(state.x, max(max(zl.x, zl.y), max(zl.z, zl.w)));
    let e = select(vec4<f32>(0.0), exp(zl - m), live);
    // When the maximum did not rise this multiplies by exp(0), exactly 1 on
    // every adapter we know (and in the twin); Vulkan would allow a few ulps.
    // Selecting 1.0 instead is much slower on a CPU adapter.
    return vec2<f32>(m, state.y * exp(state.x - m) + ((e.x + e.y) + (e.z + e.w)));
}

const EMPTY_STATE: vec2<f32> = vec2<f32>(F32_LOWEST, 0.0);

fn histogram_add(key: u32, z_bits: u32, by_mass: bool, prefix: u32, mask: u32, shift: u32, row_max: f32) {
    if (key & mask) != prefix {
        return;
    }
    let digit = (key >> shift) & 0xFFu;
    atomicAdd(&h_count[digit], 1u);
    atomicMax(&h_max_key[digit], key);
    if by_mass {
        let w = fixed_weight(z_bits, row_max);
        let old = atomicAdd(&h_mass_lo[digit], w);
        if old > 0xFFFFFFFFu - w {
            atomicAdd(&h_mass_hi[digit], 1u);
        }
    }
}

// Largest key t (among keys >= lo_key of the row's tokens, or with `from_row`
// false of the streams' maxima) whose weight W(key >= t)
// reaches the target: a count of tokens (top-k), or a fixed-point mass (top-p:
// `mass_target`, or top_p times the source's own total when `mass_target` < 0).
// MSB-first radix select, 8 bits a round, exits early once the boundary
// bucket's largest key alone reaches the target. Returns (threshold, found).
fn select_threshold(t: u32, from_row: bool, row: u32, vocab: u32, inv_t: f32, by_mass: bool,
                    lo_key: u32, count_target: u32, top_p: f32, mass_target: f32,
                    row_max: f32) -> vec2<u32> {
    if t == 0u {
        sel_prefix = 0u;
        sel_mask = 0u;
        sel_above = vec2<u32>(0u, 0u);
        sel_done = 0u;
        sel_found = 0u;
        sel_result = lo_key;
        sel_target = mass_target;
    }
    for (var round = 0u; round < 4u; round++) {
        atomicStore(&h_count[t], 0u);
        atomicStore(&h_mass_lo[t], 0u);
        atomicStore(&h_mass_hi[t], 0u);
        atomicStore(&h_max_key[t], 0u);
        workgroupBarrier();
        let shift = 24u - 8u * round;
        let prefix = sel_prefix;
        let mask = sel_mask;
        if from_row {
            for (var g = t; g * GROUP < vocab; g += WG) {
                for (var j = 0u; j < GROUP; j++) {
                    let i = g * GROUP + j;
                    if i >= vocab {
                        break;
                    }
                    let z_bits = scaled_bits(row, i, inv_t);
                    let key = key_from_bits(z_bits);
                    if key >= lo_key {
                        histogram_add(key, z_bits, by_mass, prefix, mask, shift, row_max);
                    }
                }
            }
        } else {
            let key = stream_max_key[t];
            if key >= lo_key {
                histogram_add(key, bits_from_key(key), by_mass, prefix, mask, shift, row_max);
            }
        }
        workgroupBarrier();
        // The buckets in FOLD runs from the top (run r: buckets 255 - FOLD r
        // down): FOLD lanes sum a run each, then one invocation walks the
        // runs and, inside the run where the weight from the top first
        // reaches the target, its buckets (2 x FOLD steps, not 256; integer
        // sums, so the boundary is the one a walk over every bucket finds).
        if t < FOLD {
            var sum = vec2<u32>(0u, 0u);
            for (var j = 0u; j < FOLD; j++) {
                sum = add_u64(sum, bucket_weight(255u - (t * FOLD + j), by_mass));
            }
            run_sums[t] = sum;
        }
        workgroupBarrier();
        if t == 0u {
            if by_mass && round == 0u && sel_target < 0.0 {
                var total = vec2<u32>(0u, 0u);
                for (var r = 0u; r < FOLD; r++) {
                    total = add_u64(total, run_sums[r]);
                }
                sel_target = top_p * u64_to_f32(total);
            }
            var above = sel_above;
            var boundary = 256u;
            for (var r = 0u; r < FOLD && boundary == 256u; r++) {
                if !reaches(add_u64(above, run_sums[r]), by_mass, count_target) {
                    above = add_u64(above, run_sums[r]);
                    continue;
                }
                // (A run of empty buckets finds nothing and adds nothing.)
                for (var j = 0u; j < FOLD; j++) {
                    let b = 255u - (r * FOLD + j);
                    if atomicLoad(&h_count[b]) == 0u {
                        continue;
                    }
                    let cum = add_u64(above, bucket_weight(b, by_mass));
                    if reaches(cum, by_mass, count_target) {
                        boundary = b;
                        break;
                    }
                    above = cum;
                }
            }
            settle_round(boundary, above, round, prefix, mask, shift, by_mass, lo_key, count_target, row_max);
        }
        if workgroupUniformLoad(&sel_done) != 0u {
            break;
        }
    }
    let result = workgroupUniformLoad(&sel_result);
    return vec2<u32>(result, workgroupUniformLoad(&sel_found));
}

// Bucket b's weight in a round: its count, or its fixed-point mass.
fn bucket_weight(b: u32, by_mass: bool) -> vec2<u32> {
    if by_mass {
        return vec2<u32>(atomicLoad(&h_mass_hi[b]), atomicLoad(&h_mass_lo[b]));
    }
    return vec2<u32>(0u, atomicLoad(&h_count[b]));
}

// Whether a cumulative weight reaches the round's target.
fn reaches(cum: vec2<u32>, by_mass: bool, count_target: u32) -> bool {
    if by_mass {
        return u64_to_f32(cum) >= sel_target;
    }
    return cum.x != 0u || cum.y >= count_target;
}

// One invocation ends a radix round: `boundary` (256: none) is the bucket
// where the weight from the top first reaches the target, `above` the
// weight of the keys above it (this round's and earlier rounds').
fn settle_round(boundary: u32, above: vec2<u32>, round: u32, prefix: u32, mask: u32, shift: u32,
                by_mass: bool, lo_key: u32, count_target: u32, row_max: f32) {
    if boundary == 256u {
        // The source's weight never reaches the target.
        sel_result = lo_key;
        sel_done = 1u;
        return;
    }
    let max_key = atomicLoad(&h_max_key[boundary]);
    var top_weight = vec2<u32>(0u, 1u);
    if by_mass {
        top_weight = vec2<u32>(0u, fixed_weight(bits_from_key(max_key), row_max));
    }
    if reaches(add_u64(above, top_weight), by_mass, count_target) {
        sel_result = max_key;
        sel_found = 1u;
        sel_done = 1u;
    } else if round == 3u {
        sel_result = prefix | boundary;
        sel_found = 1u;
        sel_done = 1u;
    } else {
        sel_prefix = prefix | (boundary << shift);
        sel_mask = mask | (0xFFu << shift);
        sel_above = above;
    }
}

// Thresholds among the `n` gathered candidates (which hold every token at or
// above the bound): the candidates' keys sorted (descending; a workgroup
// sort on GPUs, a ranking on CPU adapters), then one walk down them finds
// the k-th largest key and the largest key whose mass at or above it
// reaches the top-p target (over the top-k set when top-k is on, else
// `row_mass_target`). The same thresholds as radix selection over the
// candidates, without rounds. Returns (threshold, found); found is 0 when
// the top-p boundary lies below them.
fn select_among_candidates(t: u32, n: u32, use_top_k: bool, k: u32, use_top_p: bool, top_p: f32,
                           row_mass_target: f32, row_max: f32) -> vec2<u32> {
    if WIDE_ROUTES {
        sort_candidates_wide(t, n);
    } else {
        rank_candidates(t, n);
    }
    return walk_sorted_candidates(t, n, use_top_k, k, use_top_p, top_p, row_mass_target, row_max);
}

// CPU adapters: each invocation ranks its candidates against all n (few
// invocations, no sorting network) into sorted_key.
fn rank_candidates(t: u32, n: u32) {
    workgroupBarrier();
    for (var c = t; c < n; c += WG) {
        let key = cand_key[c];
        var rank = 0u;
        for (var j = 0u; j < n; j++) {
            let other = cand_key[j];
            if other > key || (other == key && j < c) {
                rank += 1u;
            }
        }
        sorted_key[rank] = key;
    }
    workgroupBarrier();
}

// A stream's key in the stream race (x) and whether it takes part (y != 0):
// ln of its kept weight less ln of its exponential. With +inf in the row the
// weight is the stream's kept count (its +inf tokens); otherwise its kept
// mass relative to the row's maximum. Shared by both drawing kernels.
fn race_key(has_inf: bool, kept_count: u32, kept_max: f32, kept_mass: f32, log_kept_mass: f32,
            row_max: f32, log_e: f32) -> vec2<f32> {
    if has_inf {
        return vec2<f32>(log(f32(kept_count)) - log_e, select(0.0, 1.0, kept_count != 0u));
    }
    return vec2<f32>(((kept_max - row_max) + log_kept_mass) - log_e, select(0.0, 1.0, kept_mass != 0.0));
}

// Whether (key k2, token i2) beats (k1, i1) for the greedy arg-max: the
// larger key, ties to the lower token.
fn key_beats(k2: u32, i2: u32, k1: u32, i1: u32) -> bool {
    return k2 > k1 || (k2 == k1 && i2 < i1);
}

// Whether entry (k2, i2) beats (k1, i1) in a race: NO_INDEX never wins, ties
// go to the lower index (so the fold order does not matter).
fn race_beats(k2: f32, i2: u32, k1: f32, i1: u32) -> bool {
    return i2 != NO_INDEX && (i1 == NO_INDEX || k2 > k1 || (k2 == k1 && i2 < i1));
}

struct RaceResult {
    winner: u32,
    // Sum of red_v.
    sum: u32,
}

// Arg-max over (race key in red_f, index in red_u); sums red_v alongside.
// The result is invocation 0's only, and red_* may be written again only
// after a barrier (see `reduce_race`).
fn fold_race(t: u32) -> RaceResult {
    workgroupBarrier();
    if t < FOLD {
        var k = red_f[t * FOLD];
        var i = red_u[t * FOLD];
        var sum = red_v[t * FOLD];
        for (var j = t * FOLD + 1u; j < (t + 1u) * FOLD; j++) {
            if race_beats(red_f[j], red_u[j], k, i) {
                k = red_f[j];
                i = red_u[j];
            }
            sum += red_v[j];
        }
        red_f[t * FOLD] = k;
        red_u[t * FOLD] = i;
        red_v[t * FOLD] = sum;
    }
    workgroupBarrier();
    var result = RaceResult(NO_INDEX, 0u);
    if t == 0u {
        var k = red_f[0];
        var i = red_u[0];
        var sum = red_v[0];
        for (var j = FOLD; j < WG; j += FOLD) {
            if race_beats(red_f[j], red_u[j], k, i) {
                k = red_f[j];
                i = red_u[j];
            }
            sum += red_v[j];
        }
        result = RaceResult(i, sum);
    }
    return result;
}

// `fold_race`, to every invocation.
fn reduce_race(t: u32) -> RaceResult {
    let r = fold_race(t);
    if t == 0u {
        broadcast = Broadcast(0.0, 0.0, r.winner, r.sum);
    }
    let b = workgroupUniformLoad(&broadcast);
    return RaceResult(b.u0, b.u1);
}

// Arg-max over (red_u key, red_v index) pairs, ties to the lower index; the
// result is invocation 0's only.
fn fold_argmax_key(t: u32) -> vec2<u32> {
    workgroupBarrier();
    if t < FOLD {
        var k = red_u[t * FOLD];
        var i = red_v[t * FOLD];
        for (var j = t * FOLD + 1u; j < (t + 1u) * FOLD; j++) {
            if key_beats(red_u[j], red_v[j], k, i) {
                k = red_u[j];
                i = red_v[j];
            }
        }
        red_u[t * FOLD] = k;
        red_v[t * FOLD] = i;
    }
    workgroupBarrier();
    var best = vec2<u32>(0u, NO_INDEX);
    if t == 0u {
        var k = red_u[0];
        var i = red_v[0];
        for (var j = FOLD; j < WG; j += FOLD) {
            if key_beats(red_u[j], red_v[j], k, i) {
                k = red_u[j];
                i = red_v[j];
            }
        }
        best = vec2<u32>(k, i);
    }
    return best;
}

// Whether output row `out_index` probes a token.
fn p_probes(out_index: u32) -> bool {
    return params[out_index].probe != NO_INDEX;
}

// ln of the probed token's probability under the row's kept set: `s` its
// filters, `kept` the kept tokens' (max, mass) folded in stream order, with
// +inf in the row uniform over the +inf tokens. A token past the row's end
// has probability 0; a row that probes none gets 0.
fn probe_logprob(p: RowParams, row: u32, vocab: u32, inv_t: f32, s: RowState, row_inf: u32,
                 kept: vec2<f32>) -> f32 {
    if p.probe == NO_INDEX {
        return 0.0;
    }
    let x = p.probe;
    let neg_inf = bitcast<f32>(F32_NEG_INF_BITS);
    if x >= vocab {
        return neg_inf;
    }
    let z_bits = scaled_bits(row, x, inv_t);
    if !is_kept(z_bits, s) {
        return neg_inf;
    }
    if s.has_inf {
        return -log(f32(row_inf));
    }
    return (bitcast<f32>(z_bits) - kept.x) - log(kept.y);
}

// The greedy distribution puts all its mass on the arg-max.
fn greedy_probe_logprob(p: RowParams, argmax: u32) -> f32 {
    if p.probe == NO_INDEX {
        return 0.0;
    }
    return select(bitcast<f32>(F32_NEG_INF_BITS), 0.0, p.probe == argmax);
}

// The row's `StateRecord` into its top log-probability slots.
fn write_state(p: RowParams, out_index: u32, s: RowState, log_mass: f32, kept: vec2<f32>, row_inf: u32) {
    if (p.flags & FLAG_WRITE_STATE) == 0u {
        return;
    }
    let flags = select(0u, STATE_HAS_INF, s.has_inf) | select(0u, STATE_MIN_P, s.use_min_p)
        | select(0u, STATE_SIGMA, s.use_sigma);
    let base = out_index * MAX_TOP_LOGPROBS;
    top_out[base] = vec2<u32>(bitcast<u32>(s.row_max), bitcast<u32>(log_mass));
    top_out[base + 1u] = vec2<u32>(bitcast<u32>(kept.x), bitcast<u32>(log(kept.y)));
    top_out[base + 2u] = vec2<u32>(s.threshold_key, flags);
    top_out[base + 3u] = vec2<u32>(bitcast<u32>(s.log_min_p), bitcast<u32>(s.sigma_n2));
    top_out[base + 4u] = vec2<u32>(bitcast<u32>(s.sigma_rhs), row_inf);
    top_out[base + 5u] = vec2<u32>(bitcast<u32>(p.inv_temperature), p.mask_row);
    top_out[base + 6u] = vec2<u32>(p.seed_lo, p.seed_hi);
    top_out[base + 7u] = vec2<u32>(p.step_lo, p.step_hi);
}

fn write_no_valid(t: u32, out_index: u32) {
    if t == 0u {
        out_tokens[out_index] = NO_INDEX;
        let neg_inf = bitcast<f32>(F32_NEG_INF_BITS);
        out_results[out_index] = RowResult(neg_inf, STATUS_NO_VALID_TOKEN, 0u, select(0.0, neg_inf, p_probes(out_index)));
    }
}

fn empty_partial() -> StreamPartial {
    return StreamPartial(F32_LOWEST, 0.0, 0u, 0u, 0u, NO_INDEX, 0.0, 0.0);
}

// `part` folded into `acc` (a later tile of a stream, or a later stream or
// group of streams): states merged, counts summed, the larger key kept (the
// lower token on ties; a partial without a token has key 0 and NO_INDEX, so
// it never wins).
fn fold_partial(acc: StreamPartial, part: StreamPartial) -> StreamPartial {
    var out = acc;
    let state = merge_state(vec2<f32>(acc.max, acc.mass), vec2<f32>(part.max, part.mass));
    out.max = state.x;
    out.mass = state.y;
    out.inf_count += part.inf_count;
    out.finite_count += part.finite_count;
    if SIGMA_SUMS {
        out.sum_z = acc.sum_z + part.sum_z;
        out.sum_z2 = acc.sum_z2 + part.sum_z2;
    }
    if key_beats(part.best_key, part.best_index, acc.best_key, acc.best_index) {
        out.best_key = part.best_key;
        out.best_index = part.best_index;
    }
    return out;
}

// The tree of `reduce_stats` over 16 partials in registers (states merged,
// sums added, counts and the arg-max key alike: order-free).
fn tree_partials(leaves: array<StreamPartial, 16>) -> StreamPartial {
    var a = leaves;
    for (var step = 1u; step < 16u; step *= 2u) {
        for (var j = 0u; j < 16u; j += 2u * step) {
            a[j] = fold_partial(a[j], a[j + step]);
        }
    }
    return a[0];
}

// Pass 1 over a stream's groups first, first + WG, ... below `last` (a whole
// row, or one tile for the split pass): online max and mass of the finite
// tokens, folded at every tile boundary, counts of +inf and finite tokens,
// and for greedy rows the arg-max key. One flat loop per mode (nested tile
// loops, or a call per tile, were slower on a CPU adapter). `sample_rows`
// calls the mode's function directly; the split pass goes through this
// dispatcher.
fn stream_pass(row: u32, first: u32, last: u32, vocab: u32, inv_t: f32, greedy: bool) -> StreamPartial {
    if greedy {
        return greedy_pass(row, first, last, vocab);
    }
    return sampling_pass(row, first, last, vocab, inv_t);
}

// The group update is `online_add_group` written out (the call was slower on
// a CPU adapter), and without its masks: a -inf token (masked, or padding past the row's end)
// adds exp(-inf) = 0 and never raises the maximum (the state's maximum starts
// at F32_LOWEST), so for streams of finite and -inf logits, the common case,
// the masks change no bit and only the -inf tokens need counting. A NaN or
// +inf token makes the mass NaN (exp(NaN) and exp(inf - inf) are NaN, and NaN
// survives every later update and tile fold): such a stream is read again by
// `careful_pass`, so every stream gets the masked update's bits. This relies
// on IEEE arithmetic for inf and NaN (exp(-inf) = +0, inf - inf and exp(NaN)
// NaN, NaN kept through * and +), which WGSL lets an implementation drop:
// the GPU-vs-twin and split-vs-unsplit tests with NaN and +-inf rows check it
// on each adapter they run on (run them on a new backend). Dropping the
// masks and the per-token checks for +inf and NaN is what makes plain rows
// run near the speed of a plain read.
fn sampling_pass(row: u32, first: u32, last: u32, vocab: u32, inv_t: f32) -> StreamPartial {
    var state = EMPTY_STATE;
    var lmax = F32_LOWEST;
    var lsum = 0.0;
    var neg_inf = 0u;
    // top-nσ's sums (SIGMA_SUMS), tile by tile like the state.
    var sums = vec2<f32>(0.0);
    var tile_sums = vec2<f32>(0.0);
    var tile_end = first + WG * TILE_GROUPS;
    // Two groups are loaded before either updates the state: twice the
    // loads in flight, the updates in the same order (the same bits). A pair
    // never straddles a tile (a stream meets TILE_GROUPS, an even number, of
    // its groups in a tile). Past `last` the second is all -inf, which adds
    // exactly nothing to the state and is not counted.
    for (var g = first; g < last; g += 2u * WG) {
        if g >= tile_end {
            state = merge_state(state, vec2<f32>(lmax, lsum));
            lmax = F32_LOWEST;
            lsum = 0.0;
            if SIGMA_SUMS {
                sums = sums + tile_sums;
                tile_sums = vec2<f32>(0.0);
            }
            tile_end += WG * TILE_GROUPS;
        }
        let second = g + WG < last;
        var pair = array<vec4<u32>, 2>(
            load_scaled_group(row, g * GROUP, vocab, inv_t),
            select(vec4<u32>(F32_NEG_INF_BITS), load_scaled_group(row, (g + WG) * GROUP, vocab, inv_t),
                   vec4<bool>(second)));
        for (var k = 0u; k < 2u; k++) {
            let bits = pair[k];
            let neg = bits == vec4<u32>(F32_NEG_INF_BITS);
            let is_neg_inf = select(vec4<u32>(0u), vec4<u32>(1u), neg);
            neg_inf += (is_neg_inf.x + is_neg_inf.y) + (is_neg_inf.z + is_neg_inf.w);
            let z = bitcast<vec4<f32>>(bits);
            let m = max(lmax, max(max(z.x, z.y), max(z.z, z.w)));
            let e = exp(z - m);
            lsum = lsum * exp(lmax - m) + ((e.x + e.y) + (e.z + e.w));
            lmax = m;
            if SIGMA_SUMS {
                // (NaN and +inf send the stream to `careful_pass`.)
                tile_sums = tile_sums + group_sums(select(z, vec4<f32>(0.0), neg));
            }
        }
        neg_inf -= select(0u, GROUP, !second);
    }
    state = merge_state(state, vec2<f32>(lmax, lsum));
    if is_nan_bits(bitcast<u32>(state.y)) {
        return careful_pass(row, first, last, vocab, inv_t);
    }
    sums = sums + tile_sums;
    return StreamPartial(state.x, state.y, 0u, tokens_visited(first, last) - neg_inf, 0u, NO_INDEX,
                         sums.x, sums.y);
}

// A group's (Σz, Σz²) over its finite values (the others given as 0), in a
// fixed order; products and sums are separate operations so that no
// compiler fuses them (the twin computes the same roundings).
fn group_sums(z: vec4<f32>) -> vec2<f32> {
    let q = z * z;
    return vec2<f32>((z.x + z.y) + (z.z + z.w), (q.x + q.y) + (q.z + q.w));
}

// Tested on the bits: a compiler may assume that x == x. (A +inf mass, which
// the update cannot make, needs no test; testing for non-finite is slower.)
fn is_nan_bits(bits: u32) -> bool {
    return (bits & 0x7FFFFFFFu) > F32_POS_INF_BITS;
}

// Tokens in a stream's groups first, first + WG, ... below `last`, counting
// the padding of the row's last group (it loads as -inf).
fn tokens_visited(first: u32, last: u32) -> u32 {
    return select(0u, (last - first + WG - 1u) / WG, last > first) * GROUP;
}

// `sampling_pass` for a stream holding NaN or +inf: the masked update
// (`online_add_group` over the finite tokens) and the counts of +inf and
// finite tokens.
fn careful_pass(row: u32, first: u32, last: u32, vocab: u32, inv_t: f32) -> StreamPartial {
    var state = EMPTY_STATE;
    var local = EMPTY_STATE;
    var inf_count = 0u;
    var finite_count = 0u;
    var sums = vec2<f32>(0.0);
    var tile_sums = vec2<f32>(0.0);
    var tile_end = first + WG * TILE_GROUPS;
    for (var g = first; g < last; g += WG) {
        if g >= tile_end {
            state = merge_state(state, local);
            local = EMPTY_STATE;
            if SIGMA_SUMS {
                sums = sums + tile_sums;
                tile_sums = vec2<f32>(0.0);
            }
            tile_end += WG * TILE_GROUPS;
        }
        let bits = load_scaled_group(row, g * GROUP, vocab, inv_t);
        let finite = (bits & vec4<u32>(0x7F800000u)) != vec4<u32>(0x7F800000u);
        local = online_add_group(local, bitcast<vec4<f32>>(bits), finite);
        let is_inf = select(vec4<u32>(0u), vec4<u32>(1u), bits == vec4<u32>(F32_POS_INF_BITS));
        let is_finite = select(vec4<u32>(0u), vec4<u32>(1u), finite);
        inf_count += (is_inf.x + is_inf.y) + (is_inf.z + is_inf.w);
        finite_count += (is_finite.x + is_finite.y) + (is_finite.z + is_finite.w);
        if SIGMA_SUMS {
            tile_sums = tile_sums + group_sums(select(vec4<f32>(0.0), bitcast<vec4<f32>>(bits), finite));
        }
    }
    state = merge_state(state, local);
    sums = sums + tile_sums;
    return StreamPartial(state.x, state.y, inf_count, finite_count, 0u, NO_INDEX, sums.x, sums.y);
}

// (+inf count, finite count, first +inf token or NO_INDEX) of a stream's
// groups first, first + WG, ... below `last`, given its count of non-finite
// tokens per lane (tokens past the vocabulary load as -inf and count there)
// and the largest bits it met read as i32 (only +inf and +NaN reach
// 0x7F800000 that way: -inf and masked tokens do not). Only a stream that
// met +inf or +NaN reads its groups again, so rows masked with -inf cost
// one read (measured: 1/64 of the tokens masked, 0.58 of a read against
// 0.52 when any non-finite token sent its stream back). Used by greedy rows;
// `sampling_pass` counts -inf tokens itself.
fn stream_counts(row: u32, first: u32, last: u32, vocab: u32, inv_t: f32, nonfinite: vec4<u32>,
                 top_bits: vec4<i32>) -> vec3<u32> {
    let groups = select(0u, (last - first + WG - 1u) / WG, last > first);
    let nonfinite_total = (nonfinite.x + nonfinite.y) + (nonfinite.z + nonfinite.w);
    var inf_count = 0u;
    var first_inf = NO_INDEX;
    if any(top_bits >= vec4<i32>(0x7F800000)) {
        for (var g = first; g < last; g += WG) {
            let bits = load_scaled_group(row, g * GROUP, vocab, inv_t);
            for (var j = 0u; j < GROUP; j++) {
                if bits[j] == F32_POS_INF_BITS {
                    inf_count += 1u;
                    if first_inf == NO_INDEX {
                        first_inf = g * GROUP + j;
                    }
                }
            }
        }
    }
    return vec3<u32>(inf_count, groups * GROUP - nonfinite_total, first_inf);
}

// `stream_pass` for greedy rows (read with 1/T = 1): also the arg-max, kept
// as a float compared in token order (the lowest index among ties, -0 tying
// +0), with +inf tokens found apart. Branch-free like `sampling_pass`; the
// arg-max needs no tiles (it is exact in any order).
fn greedy_pass(row: u32, first: u32, last: u32, vocab: u32) -> StreamPartial {
    var state = EMPTY_STATE;
    var local = EMPTY_STATE;
    var nonfinite = vec4<u32>(0u);
    var top_bits = vec4<i32>(-2147483647 - 1);
    var tile_end = first + WG * TILE_GROUPS;
    var best_value = F32_LOWEST;
    var best_index = NO_INDEX;
    // Two groups in flight, as in `sampling_pass`: a missing second group
    // is all -inf (no finite token: it changes neither the state nor the
    // arg-max) and is taken off the non-finite counts.
    for (var g = first; g < last; g += 2u * WG) {
        if g >= tile_end {
            state = merge_state(state, local);
            local = EMPTY_STATE;
            tile_end += WG * TILE_GROUPS;
        }
        let second = g + WG < last;
        var pair = array<vec4<u32>, 2>(
            load_scaled_group(row, g * GROUP, vocab, 1.0),
            select(vec4<u32>(F32_NEG_INF_BITS), load_scaled_group(row, (g + WG) * GROUP, vocab, 1.0),
                   vec4<bool>(second)));
        for (var k = 0u; k < 2u; k++) {
            let base = (g + k * WG) * GROUP;
            let bits = pair[k];
            let finite = (bits & vec4<u32>(0x7F800000u)) != vec4<u32>(0x7F800000u);
            nonfinite += vec4<u32>(!finite);
            top_bits = max(top_bits, bitcast<vec4<i32>>(bits));
            local = online_add_group(local, bitcast<vec4<f32>>(bits), finite);
            // The group's best finite value and its first position.
            let z = select(vec4<f32>(F32_LOWEST), bitcast<vec4<f32>>(bits), finite);
            let group_best = max(max(z.x, z.y), max(z.z, z.w));
            let at = select(select(select(3u, 2u, finite.z && z.z == group_best),
                                   1u, finite.y && z.y == group_best),
                            0u, finite.x && z.x == group_best);
            let better = any(finite) && (best_index == NO_INDEX || group_best > best_value);
            best_value = select(best_value, group_best, better);
            best_index = select(best_index, base + at, better);
        }
        nonfinite -= vec4<u32>(select(0u, 1u, !second));
    }
    state = merge_state(state, local);
    let counts = stream_counts(row, first, last, vocab, 1.0, nonfinite, top_bits);
    var best_key = select(key_from_bits(canonical_bits(bitcast<u32>(best_value))), 0u, best_index == NO_INDEX);
    if counts.z != NO_INDEX {
        best_key = KEY_POS_INF;
        best_index = counts.z;
    }
    return StreamPartial(state.x, state.y, counts.x, counts.y, best_key, best_index, 0.0, 0.0);
}

// Pass 1 alone: workgroup (row, tile) writes every stream's state over that
// tile, or with chunk.tiles == 1 over the whole row; `sample_rows` or
// `finish_rows` then folds them instead of reading the row. It has no
// barrier and no early return, so that on SIMD-on-CPU drivers it runs at the
// speed of a plain read (either makes them run the loop under a mask).
@compute @workgroup_size(256)
fn stream_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let index = wid.x;
    let tile = wid.y;
    let p = params[chunk.row_base + index];
    let row = logits_row(p, index);
    // The raw variant reads the model's logits: no mask, no temperature.
    set_row_mask(select(p.mask_row, NO_MASK, RAW_LOGPROBS));
    let greedy = (p.flags & FLAG_GREEDY) != 0u;
    let inv_t = select(p.inv_temperature, 1.0, greedy || RAW_LOGPROBS);
    let first = tile * WG * TILE_GROUPS + t;
    let groups = (chunk.vocab + GROUP - 1u) / GROUP;
    // One partial per row covers the whole row (its tiles folded in order,
    // as `sample_rows` folds them).
    let last = select(min(first + WG * TILE_GROUPS, groups), groups, chunk.tiles == 1u);
    partials[((chunk.row_base + index) * chunk.tiles + tile) * WG + t] =
        stream_pass(row, first, last, chunk.vocab, inv_t, greedy);
}

// Lanes of `finish_rows`: lane j folds streams FOLD * j .. FOLD * j + FOLD - 1,
// which is the first level of the 256-invocation reductions, so both give
// the same bits.
const FINISH_WG: u32 = FOLD;

// Each lane's fold of its FOLD streams.
var<workgroup> lane_summary: array<StreamPartial, FINISH_WG>;
// Each lane's best entry of the stream race (token = stream) and of the
// token race, and the maximum of its stream race's winner.
const STREAM_RACE: u32 = 0u;
const TOKEN_RACE: u32 = 1u;
var<workgroup> lane_races: array<array<RaceEntry, FINISH_WG>, 2>;
var<workgroup> lane_stream_max: array<f32, FINISH_WG>;

// The winner among the lanes' entries of one race (ties to the lower token).
fn best_of_lanes(which: u32) -> RaceEntry {
    var best = RaceEntry(0.0, NO_INDEX);
    for (var j = 0u; j < FINISH_WG; j++) {
        let e = lane_races[which][j];
        if race_beats(e.race, e.token, best.race, best.token) {
            best = e;
        }
    }
    return best;
}

// A race entry: the largest race key met and its token (NO_INDEX: none).
struct RaceEntry {
    race: f32,
    token: u32,
}

// The race among stream `stream`'s kept tokens that one invocation replays:
// the stream's groups stream + 256 n for n = first, first + step, ..., with
// group g's Philox words for its tokens 4g..4g+3; the best entry, ties to
// the earlier token. Shared by both drawing kernels.
fn replay_stream(p: RowParams, row: u32, stream: u32, first: u32, step: u32, vocab: u32, inv_t: f32,
                 s: RowState, stream_max: f32) -> RaceEntry {
    var best = RaceEntry(0.0, NO_INDEX);
    for (var n = first; (stream + n * WG) * GROUP < vocab; n += step) {
        let g = stream + n * WG;
        let words = philox4x32_10(vec4<u32>(g, p.step_lo, p.step_hi, PURPOSE_TOKEN),
                                  vec2<u32>(p.seed_lo, p.seed_hi));
        for (var j = 0u; j < GROUP; j++) {
            let i = g * GROUP + j;
            if i >= vocab {
                break;
            }
            let z_bits = scaled_bits(row, i, inv_t);
            if !is_kept(z_bits, s) {
                continue;
            }
            var race = -log(exponential_from_bits(words[j]));
            if !s.has_inf {
                race += bitcast<f32>(z_bits) - stream_max;
            }
            if best.token == NO_INDEX || race > best.race {
                best = RaceEntry(race, i);
            }
        }
    }
    return best;
}

// Stream s's pass-1 state over the row, from a separate first pass: the
// row's partials (one per tile, or one for the whole row) folded in order.
fn row_partial(out_index: u32, s: u32) -> StreamPartial {
    var acc = empty_partial();
    for (var tile = 0u; tile < chunk.tiles; tile++) {
        acc = fold_partial(acc, partials[(out_index * chunk.tiles + tile) * WG + s]);
    }
    return acc;
}

// The draw for greedy and temperature-only rows from the partials of a
// separate first pass, in FINISH_WG invocations: the same reductions, races
// and bits as `sample_rows`, with 3 barriers among 16 invocations instead of
// 10 among 256: on a CPU adapter, where a barrier of a 256-wide workgroup
// costs microseconds per row, it draws in about half the time. The host uses
// it on CPU adapters only.
// The host sends it only dispatches whose rows all have no top-k, top-p or
// min-p in force (it would ignore them); `sample_rows` draws the others.
@compute @workgroup_size(FINISH_WG)
fn finish_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let index = wid.x;
    let p = params[chunk.row_base + index];
    let row = logits_row(p, index);
    set_row_mask(p.mask_row);
    let vocab = chunk.vocab;
    let greedy = (p.flags & FLAG_GREEDY) != 0u;
    let inv_t = select(p.inv_temperature, 1.0, greedy);
    let out_index = chunk.row_base + index;

    // First level: the tree over this lane's streams.
    var st_max: array<f32, FOLD>;
    var st_mass: array<f32, FOLD>;
    var st_inf: array<u32, FOLD>;
    var st_log_e: array<f32, FOLD>;
    var parts: array<StreamPartial, 16>;
    for (var j = 0u; j < FOLD; j++) {
        let part = row_partial(out_index, lane * FOLD + j);
        st_max[j] = part.max;
        st_mass[j] = part.mass;
        st_inf[j] = part.inf_count;
        parts[j] = part;
    }
    let acc = tree_partials(parts);
    if !greedy {
        // A Philox call serves four streams.
        for (var b = 0u; b < FOLD / 4u; b++) {
            let words = philox4x32_10(vec4<u32>(lane * (FOLD / 4u) + b, p.step_lo, p.step_hi, PURPOSE_STREAM),
                                      vec2<u32>(p.seed_lo, p.seed_hi));
            for (var w = 0u; w < 4u; w++) {
                st_log_e[b * 4u + w] = log(exponential_from_bits(words[w]));
            }
        }
    }
    lane_summary[lane] = acc;
    workgroupBarrier();

    // The top of the tree, by every lane alike (so all hold the same bits
    // and no broadcast is needed).
    var lanes: array<StreamPartial, 16>;
    for (var j = 0u; j < FINISH_WG; j++) {
        lanes[j] = lane_summary[j];
    }
    let summary = tree_partials(lanes);
    let row_state = vec2<f32>(summary.max, summary.mass);
    let row_inf = summary.inf_count;
    let row_finite = summary.finite_count;
    let row_key = summary.best_key;
    let row_index = summary.best_index;
    let row_max = row_state.x;
    let log_mass = log(row_state.y);
    let has_inf = row_inf != 0u;
    let valid = has_inf || row_state.y != 0.0;
    if greedy {
        if lane == 0u {
            if valid {
                var logprob = -log(f32(row_inf));
                if !has_inf {
                    logprob = (bitcast<f32>(bits_from_key(row_key)) - row_max) - log_mass;
                }
                out_tokens[out_index] = row_index;
                out_results[out_index] = RowResult(logprob, STATUS_OK, 1u, greedy_probe_logprob(p, row_index));
            } else {
                write_no_valid(0u, out_index);
            }
        }
        return;
    }

    // Stream race over this lane's streams (ties to the lower stream).
    var lane_best = RaceEntry(0.0, NO_INDEX);
    var lane_best_max = 0.0;
    for (var j = 0u; j < FOLD; j++) {
        let key = race_key(has_inf, st_inf[j], st_max[j], st_mass[j], log(st_mass[j]), row_max, st_log_e[j]);
        if key.y != 0.0 && (lane_best.token == NO_INDEX || key.x > lane_best.race) {
            lane_best = RaceEntry(key.x, lane * FOLD + j);
            lane_best_max = st_max[j];
        }
    }
    lane_races[STREAM_RACE][lane] = lane_best;
    lane_stream_max[lane] = lane_best_max;
    workgroupBarrier();
    let chosen = best_of_lanes(STREAM_RACE).token;

    // Race between the chosen stream's tokens (every finite token is kept,
    // or with +inf in the row every +inf token).
    let s = RowState(row_max, has_inf, 0u, false, 0.0, false, 0.0, 0.0);
    var best = RaceEntry(0.0, NO_INDEX);
    if chosen != NO_INDEX {
        // The chosen stream's lane kept its maximum.
        let stream_max = lane_stream_max[chosen / FOLD];
        best = replay_stream(p, row, chosen, lane, FINISH_WG, vocab, inv_t, s, stream_max);
    }
    lane_races[TOKEN_RACE][lane] = best;
    workgroupBarrier();
    if lane == 0u {
        let token = best_of_lanes(TOKEN_RACE).token;
        if !valid || token == NO_INDEX {
            write_no_valid(0u, out_index);
        } else {
            var logprob = -log(f32(row_inf));
            if !has_inf {
                let z = bitcast<f32>(scaled_bits(row, token, inv_t));
                logprob = (z - row_max) - log_mass;
            }
            out_tokens[out_index] = token;
            out_results[out_index] = RowResult(logprob, STATUS_OK, select(row_finite, row_inf, has_inf),
                                               probe_logprob(p, row, vocab, inv_t, s, row_inf, row_state));
            write_state(p, out_index, s, log_mass, row_state, row_inf);
        }
    }
}

@compute @workgroup_size(256)
fn sample_rows(inv: Invocation) {
    let t = inv.index;
    let index = inv.workgroup.x;
    // (The wide routes fold by subgroups where the device has them.)
    init_subgroup_folds(inv, WG, WIDE_ROUTES);
    if t == 0u {
        atomicStore(&cand_count, 0u);
    }
    // Read by every invocation: a read-only buffer at a uniform index is
    // uniform, so no workgroup load (two barriers) is needed.
    let p = params[chunk.row_base + index];
    let row = logits_row(p, index);
    set_row_mask(p.mask_row);
    let vocab = chunk.vocab;
    let greedy = (p.flags & FLAG_GREEDY) != 0u;
    let inv_t = select(p.inv_temperature, 1.0, greedy);
    let out_index = chunk.row_base + index;

    // Pass 1, tile by tile (see `stream_pass`), or folded from a separate
    // first pass.
    let groups = (vocab + GROUP - 1u) / GROUP;
    var acc = empty_partial();
    if chunk.tiles != 0u {
        acc = row_partial(out_index, t);
    } else if greedy {
        acc = greedy_pass(row, t, groups, vocab);
    } else {
        acc = sampling_pass(row, t, groups, vocab, inv_t);
    }
    let state = vec2<f32>(acc.max, acc.mass);
    let inf_count = acc.inf_count;
    let finite_count = acc.finite_count;
    let stream_sums = vec2<f32>(acc.sum_z, acc.sum_z2);
    let best_key = acc.best_key;
    let best_index = acc.best_index;
    let stream_state = state;
    let use_top_k = p.top_k != 0u && p.top_k < vocab;
    let use_top_p = p.top_p < 1.0;
    let use_min_p = (p.flags & FLAG_MIN_P) != 0u;
    let use_sigma = SIGMA_SUMS && !greedy && (p.flags & FLAG_TOP_N_SIGMA) != 0u;
    red_f[t] = state.x;
    red_g[t] = state.y;
    red_u[t] = inf_count;
    let row_stats = reduce_stats(t);
    let row_max = row_stats.f0;
    let row_mass = row_stats.f1;
    let row_inf = row_stats.u0;
    let log_mass = log(row_mass);
    let has_inf = row_inf != 0u;
    if !has_inf && row_mass == 0.0 {
        write_no_valid(t, out_index);
        return;
    }

    if greedy {
        red_u[t] = best_key;
        red_v[t] = best_index;
        let best = fold_argmax_key(t);
        if t == 0u {
            var logprob = -log(f32(row_inf));
            if !has_inf {
                logprob = (bitcast<f32>(bits_from_key(best.x)) - row_max) - log_mass;
            }
            out_tokens[out_index] = best.y;
            out_results[out_index] = RowResult(logprob, STATUS_OK, 1u, greedy_probe_logprob(p, best.y));
        }
        return;
    }

    // Filters. With +inf present only the +inf tokens can be drawn.
    var s = RowState(row_max, has_inf, 0u, use_min_p, p.log_min_p, use_sigma, 0.0, 0.0);
    if use_sigma {
        // The row's N, Σz and Σz² (over finite tokens), folded like the stats.
        red_f[t] = stream_sums.x;
        red_g[t] = stream_sums.y;
        red_u[t] = finite_count;
        let sums = reduce_sums(t);
        let n = f32(sums.u0);
        let spread = n * sums.f1 - sums.f0 * sums.f0;
        s.sigma_n2 = n * n;
        s.sigma_rhs = (p.top_n_sigma * p.top_n_sigma) * select(spread, 0.0, spread < 0.0);
    }
    let filtered = !has_inf && (use_top_k || use_top_p || s.use_min_p || s.use_sigma);
    var kept_state = stream_state;
    var kept_count = select(finite_count, inf_count, has_inf);
    var from_candidates = false;
    var n_candidates = 0u;
    if filtered {
        // A lower bound for the gather from the streams' maxima: the k-th
        // largest of them (k tokens at least are >= it), or for top-p the
        // largest maximum whose maxima above carry the target mass.
        let stream_key = select(0u, key_from_bits(canonical_bits(bitcast<u32>(stream_state.x))), stream_state.y != 0.0);
        stream_max_key[t] = stream_key;
        // top-p's target mass: top_p times the row's mass from pass 1 (in
        // fixed-point units), or over the top-k set when top-k is on.
        let row_mass_target = (p.top_p * row_mass) * 4294967296.0;
        var gather_from = 0u;
        var bound_found = true;
        // (One call site for both: each inlined copy of the selection costs
        // a CPU adapter's compiler seconds.)
        if use_top_k || use_top_p {
            let bound = select_threshold(t, false, row, vocab, inv_t, !use_top_k, 1u,
                                         p.top_k, p.top_p, row_mass_target, row_max);
            gather_from = bound.x;
            bound_found = bound.y != 0u;
        }
        // Pass 2 over the streams whose maximum reaches the bound (for min-p
        // alone: the kept tokens), each stream read by one invocation in its
        // visiting order, so a stream's candidates sit in token order. Active
        // streams go to the first invocations: whole subgroups stay idle.
        let gather_floors = !use_top_k && !use_top_p;
        let stream_active = stream_key >= gather_from && stream_key != 0u
            && (!gather_floors || passes_floors(stream_state.x, s));
        // (select_threshold and reduce_stats end in a barrier.)
        let n_active = list_streams(t, stream_active);
        var gathered = 0u;
        if WIDE_ROUTES {
            if bound_found {
                gathered = gather_streams_wide(t, row, vocab, inv_t, n_active, gather_from, gather_floors, s);
            }
        } else {
            if bound_found && t < n_active {
                let stream = red_v[t];
                for (var g = stream; g * GROUP < vocab; g += WG) {
                    for (var j = 0u; j < GROUP && g * GROUP + j < vocab; j++) {
                        let i = g * GROUP + j;
                        let z_bits = scaled_bits(row, i, inv_t);
                        if is_gathered(z_bits, gather_from, gather_floors, s) {
                            let slot = atomicAdd(&cand_count, 1u);
                            if slot < CANDIDATES {
                                cand_key[slot] = key_from_bits(z_bits);
                                cand_index[slot] = i;
                            }
                        }
                    }
                }
            }
            workgroupBarrier();
            if t == 0u {
                shared_u32 = atomicLoad(&cand_count);
            }
            gathered = workgroupUniformLoad(&shared_u32);
        }
        from_candidates = bound_found && gathered <= CANDIDATES && (!use_top_k || gathered >= p.top_k);
        n_candidates = select(0u, gathered, from_candidates);

        var threshold = 0u;
        if from_candidates && (use_top_k || use_top_p) {
            let selected = select_among_candidates(t, n_candidates, use_top_k, p.top_k, use_top_p,
                                                   p.top_p, row_mass_target, row_max);
            threshold = selected.x;
            // The top-p boundary lies below the gathered tokens: take the exact route.
            from_candidates = selected.y != 0u;
        }
        if !from_candidates {
            // Top-k over the row, then top-p over the keys at or above its
            // threshold (a loop: one call site).
            threshold = 0u;
            let mass_target = select(row_mass_target, -1.0, use_top_k);
            for (var step = 0u; step < 2u; step++) {
                let by_mass = step == 1u;
                if select(use_top_k, use_top_p, by_mass) {
                    threshold = select_threshold(t, true, row, vocab, inv_t, by_mass, threshold,
                                                 p.top_k, p.top_p, mass_target, row_max).x;
                }
            }
        }
        s.threshold_key = threshold;

        // Per-stream kept mass, token by token in each stream's visiting order.
        kept_state = vec2<f32>(0.0, 0.0);
        kept_count = 0u;
        if from_candidates {
            // A stream's candidates sit in the order it appended them.
            for (var c = 0u; c < n_candidates; c++) {
                let i = cand_index[c];
                if ((i >> 2u) & (WG - 1u)) != t {
                    continue;
                }
                let z_bits = bits_from_key(cand_key[c]);
                if is_kept(z_bits, s) {
                    kept_count += 1u;
                    kept_state = online_add(kept_state, bitcast<f32>(z_bits));
                }
            }
        } else {
            for (var g = t; g * GROUP < vocab; g += WG) {
                for (var j = 0u; j < GROUP; j++) {
                    let i = g * GROUP + j;
                    if i >= vocab {
                        break;
                    }
                    let z_bits = scaled_bits(row, i, inv_t);
                    if is_kept(z_bits, s) {
                        kept_count += 1u;
                        kept_state = online_add(kept_state, bitcast<f32>(z_bits));
                    }
                }
            }
        }
    }

    // The kept set's (max, mass) for a probed token, folded like the stats.
    var probe_kept = vec2<f32>(row_max, row_mass);
    if filtered && (p.probe != NO_INDEX || (p.flags & FLAG_WRITE_STATE) != 0u) {
        // (Every route here passed a barrier after its last read of red_*.)
        red_f[t] = kept_state.x;
        red_g[t] = kept_state.y;
        red_u[t] = 0u;
        let kept_stats = reduce_stats(t);
        probe_kept = vec2<f32>(kept_stats.f0, kept_stats.f1);
    }

    // Race between streams: weight = kept mass (or +inf count), one exponential
    // each; a Philox call serves four streams (each invocation computes its
    // block's call: cheaper than sharing it through workgroup memory).
    let stream_words = philox4x32_10(vec4<u32>(t / 4u, p.step_lo, p.step_hi, PURPOSE_STREAM),
                                     vec2<u32>(p.seed_lo, p.seed_hi));
    let log_e = log(exponential_from_bits(stream_words[t & 3u]));
    let key = race_key(has_inf, kept_count, kept_state.x, kept_state.y, log(kept_state.y), row_max, log_e);
    // Every route here passed a barrier after its last read of red_*.
    red_f[t] = key.x;
    red_u[t] = select(NO_INDEX, t, key.y != 0.0);
    red_v[t] = kept_count;
    red_g[t] = kept_state.x;
    let race_result = reduce_race(t);
    let stream = race_result.winner;
    let total_kept = race_result.sum;
    if stream == NO_INDEX {
        // Unreachable: the row's maximum survives every filter.
        write_no_valid(t, out_index);
        return;
    }
    // Written before the race's first barrier and never since.
    let stream_max = red_g[stream];

    // Race between the chosen stream's kept tokens.
    var best_race = 0.0;
    var best_token = NO_INDEX;
    if from_candidates {
        for (var c = t; c < n_candidates; c += WG) {
            let i = cand_index[c];
            let z_bits = bits_from_key(cand_key[c]);
            if ((i >> 2u) & (WG - 1u)) != stream || !is_kept(z_bits, s) {
                continue;
            }
            let words = philox4x32_10(vec4<u32>(i >> 2u, p.step_lo, p.step_hi, PURPOSE_TOKEN),
                                      vec2<u32>(p.seed_lo, p.seed_hi));
            let race = -log(exponential_from_bits(words[i & 3u])) + (bitcast<f32>(z_bits) - stream_max);
            if best_token == NO_INDEX || race > best_race || (race == best_race && i < best_token) {
                best_race = race;
                best_token = i;
            }
        }
    } else {
        let replayed = replay_stream(p, row, stream, t, WG, vocab, inv_t, s, stream_max);
        best_race = replayed.race;
        best_token = replayed.token;
    }
    red_f[t] = best_race;
    red_u[t] = best_token;
    red_v[t] = 0u;
    // Only invocation 0 writes the result: no broadcast.
    let token = fold_race(t).winner;

    if t == 0u && token != NO_INDEX {
        var logprob = -log(f32(row_inf));
        if !has_inf {
            let z = bitcast<f32>(scaled_bits(row, token, inv_t));
            logprob = (z - row_max) - log_mass;
        }
        out_tokens[out_index] = token;
        out_results[out_index] = RowResult(logprob, STATUS_OK, total_kept,
                                           probe_logprob(p, row, vocab, inv_t, s, row_inf, probe_kept));
        write_state(p, out_index, s, log_mass, probe_kept, row_inf);
    }
}

// The top-N log-probabilities of each row (and, with RAW_LOGPROBS, the
// sampled token's log-probability rewritten under the raw logits), from the
// per-stream partials of a separate first pass: processed (after masks,
// edits and temperature; run before the edits are undone) or raw (the
// model's logits; run after a raw first pass over the restored logits).
// A bound from the stream maxima (the N-th largest: N tokens at least reach
// it) limits the gather to the streams whose maximum reaches it; the
// gathered tokens are ranked by key (ties to the lower token). A gather that
// overflows falls back to the exact N-th largest key by radix select, the
// tokens above it, and the ties at it in token order.
@compute @workgroup_size(256)
fn top_logprobs(inv: Invocation) {
    let t = inv.index;
    let index = inv.workgroup.x;
    // (The wide routes fold by subgroups where the device has them.)
    init_subgroup_folds(inv, WG, WIDE_ROUTES);
    if t == 0u {
        atomicStore(&cand_count, 0u);
    }
    let p = params[chunk.row_base + index];
    let row = logits_row(p, index);
    let greedy = (p.flags & FLAG_GREEDY) != 0u;
    set_row_mask(select(p.mask_row, NO_MASK, RAW_LOGPROBS));
    let inv_t = select(p.inv_temperature, 1.0, greedy || RAW_LOGPROBS);
    let vocab = chunk.vocab;
    let out_index = chunk.row_base + index;
    let n = min(p.top_logprobs, MAX_TOP_LOGPROBS);

    let acc = row_partial(out_index, t);
    red_f[t] = acc.max;
    red_g[t] = acc.mass;
    red_u[t] = acc.inf_count;
    let stats = reduce_stats(t);
    let row_max = stats.f0;
    let log_mass = log(stats.f1);
    let row_inf = stats.u0;
    let has_inf = row_inf != 0u;
    let valid = has_inf || stats.f1 != 0.0;

    if RAW_LOGPROBS && t == 0u && valid {
        let token = out_tokens[out_index];
        if token != NO_INDEX {
            out_results[out_index].logprob = logprob_of(scaled_bits(row, token, inv_t), has_inf, row_inf,
                                                        row_max, log_mass);
        }
    }
    if n == 0u || !valid {
        write_empty_entries(t, out_index, 0u);
        return;
    }

    // The bound: the n-th largest stream maximum (+inf for streams with +inf).
    var stream_key = select(0u, key_from_bits(canonical_bits(bitcast<u32>(acc.max))), acc.mass != 0.0);
    stream_key = select(stream_key, KEY_POS_INF, acc.inf_count != 0u);
    stream_max_key[t] = stream_key;
    let bound = select_threshold(t, false, row, vocab, inv_t, false, KEY_NEG_INF + 1u, n, 1.0, -1.0, row_max);
    let gather_from = max(bound.x, KEY_NEG_INF + 1u);
    // The streams that reach the bound, listed; their groups are shared out
    // over every invocation (one invocation per stream would leave most of
    // the workgroup idle: a few dozen streams reach the bound).
    let reaching = list_streams(t, stream_key >= gather_from);
    let stream_groups = (vocab + GROUP * WG - 1u) / (GROUP * WG);
    for (var w = t; w < reaching * stream_groups; w += WG) {
        gather_group(row, red_v[w % reaching] + (w / reaching) * WG, vocab, inv_t, gather_from, 0xFFFFFFFFu);
    }
    workgroupBarrier();
    if t == 0u {
        shared_u32 = atomicLoad(&cand_count);
    }
    var gathered = workgroupUniformLoad(&shared_u32);
    if gathered > CANDIDATES {
        // Exact: the n-th largest key over the row, every token above it
        // (fewer than n), then the ties at it in token order.
        let kth = select_threshold(t, true, row, vocab, inv_t, false, KEY_NEG_INF + 1u, n, 1.0, -1.0,
                                   row_max).x;
        if t == 0u {
            atomicStore(&cand_count, 0u);
        }
        workgroupBarrier();
        gather_stream(row, t, vocab, inv_t, kth + 1u, 0xFFFFFFFFu);
        workgroupBarrier();
        if t == 0u {
            shared_u32 = atomicLoad(&cand_count);
        }
        let above = workgroupUniformLoad(&shared_u32);
        gather_ties(row, t, vocab, inv_t, kth, n - min(above, n), above);
        gathered = min(above + (n - min(above, n)), CANDIDATES);
    }

    if WIDE_ROUTES {
        sort_candidates_wide(t, gathered);
        for (var rank = t; rank < min(n, gathered); rank += WG) {
            let lp = logprob_of(bits_from_key(sorted_key[rank]), has_inf, row_inf, row_max, log_mass);
            top_out[out_index * MAX_TOP_LOGPROBS + rank] = vec2<u32>(sorted_weight[rank], bitcast<u32>(lp));
        }
        write_empty_entries(t, out_index, min(n, gathered));
        return;
    }
    // Rank: larger key first, then the lower token.
    for (var c = t; c < gathered; c += WG) {
        let key = cand_key[c];
        let token = cand_index[c];
        var rank = 0u;
        for (var d = 0u; d < gathered; d++) {
            let other = cand_key[d];
            rank += select(0u, 1u, other > key || (other == key && cand_index[d] < token));
        }
        if rank < n {
            let lp = logprob_of(bits_from_key(key), has_inf, row_inf, row_max, log_mass);
            top_out[out_index * MAX_TOP_LOGPROBS + rank] = vec2<u32>(token, bitcast<u32>(lp));
        }
    }
    // Ranks below min(n, gathered) were written above: no entry twice.
    write_empty_entries(t, out_index, min(n, gathered));
}

// Entries from `first` on hold (NO_INDEX, -inf).
fn write_empty_entries(t: u32, out_index: u32, first: u32) {
    if t >= first && t < MAX_TOP_LOGPROBS {
        top_out[out_index * MAX_TOP_LOGPROBS + t] = vec2<u32>(NO_INDEX, F32_NEG_INF_BITS);
    }
}

// Lists the streams whose invocation passes `listed` in red_v (in stream
// order) and returns how many, to every invocation. The caller's last use
// of red_u and red_v must be behind a barrier.
fn list_streams(t: u32, listed: bool) -> u32 {
    if WIDE_ROUTES {
        return list_streams_wide(t, listed);
    }
    red_u[t] = select(0u, 1u, listed);
    workgroupBarrier();
    if t == 0u {
        var n = 0u;
        for (var k = 0u; k < WG; k++) {
            if red_u[k] != 0u {
                red_v[n] = k;
                n += 1u;
            }
        }
        shared_u32 = n;
    }
    return workgroupUniformLoad(&shared_u32);
}

// A token's log-probability: under the row's softmax, or with +inf in the
// row -ln(count) for +inf tokens and -inf for the others.
fn logprob_of(z_bits: u32, has_inf: bool, row_inf: u32, row_max: f32, log_mass: f32) -> f32 {
    if has_inf {
        return select(bitcast<f32>(F32_NEG_INF_BITS), -log(f32(row_inf)), z_bits == F32_POS_INF_BITS);
    }
    return (bitcast<f32>(z_bits) - row_max) - log_mass;
}

// Appends stream s's tokens with key in [lo, hi] to the candidates, in the
// stream's visiting order (slots past CANDIDATES are counted, not stored).
fn gather_stream(row: u32, s: u32, vocab: u32, inv_t: f32, lo: u32, hi: u32) {
    for (var g = s; g * GROUP < vocab; g += WG) {
        gather_group(row, g, vocab, inv_t, lo, hi);
    }
}

// Appends group g's tokens with key in [lo, hi] to the candidates.
fn gather_group(row: u32, g: u32, vocab: u32, inv_t: f32, lo: u32, hi: u32) {
    for (var j = 0u; j < GROUP; j++) {
        let i = g * GROUP + j;
        if i >= vocab {
            break;
        }
        let key = key_from_bits(scaled_bits(row, i, inv_t));
        if key >= lo && key <= hi {
            let slot = atomicAdd(&cand_count, 1u);
            if slot < CANDIDATES {
                cand_key[slot] = key;
                cand_index[slot] = i;
            }
        }
    }
}

// Stores the first `needed` tokens (in token order) whose key is `key` at
// candidate slots from `base`: each invocation counts the ties in its
// contiguous run of tokens, and an exclusive scan over the runs places them.
fn gather_ties(row: u32, t: u32, vocab: u32, inv_t: f32, key: u32, needed: u32, base: u32) {
    let per = (vocab + WG - 1u) / WG;
    let start = min(t * per, vocab);
    let end = min(start + per, vocab);
    var count = 0u;
    for (var i = start; i < end; i++) {
        count += select(0u, 1u, key_from_bits(scaled_bits(row, i, inv_t)) == key);
    }
    red_u[t] = count;
    workgroupBarrier();
    if t == 0u {
        var sum = 0u;
        for (var k = 0u; k < WG; k++) {
            let c = red_u[k];
            red_u[k] = sum;
            sum += c;
        }
    }
    workgroupBarrier();
    var at = red_u[t];
    for (var i = start; i < end && at < needed; i++) {
        if key_from_bits(scaled_bits(row, i, inv_t)) == key {
            if base + at < CANDIDATES {
                cand_key[base + at] = key;
                cand_index[base + at] = i;
            }
            at += 1u;
        }
    }
    workgroupBarrier();
}

// ---- Wide routes (WIDE_ROUTES, prepended by the host: non-CPU adapters) ----
// Where the CPU route runs a step on one invocation (the active-stream
// list) or on one invocation a stream (the gather), or ranks candidates by
// O(n²) comparisons, these share the step out over the workgroup. Their
// results are integers or positions, so they give the CPU route's bits.
// (The radix rounds' bucket walk is two-level on both routes.)

var<workgroup> scan_total: vec2<u32>;

// Exclusive prefix sums of the invocations' 64-bit (hi, lo) values in
// invocation order: FOLD lanes each sum FOLD consecutive values, then every
// invocation adds the sums and values before its own (integer sums: exact in
// any order; at most 2 × FOLD steps). Writes red_u and red_v, after a
// barrier (the callers' last reads of them); the caller then takes the
// total with `scanned_total`, whose barrier ends the scan.
fn scan_u64(t: u32, value: vec2<u32>) -> vec2<u32> {
    workgroupBarrier();
    red_u[t] = value.x;
    red_v[t] = value.y;
    workgroupBarrier();
    if t < FOLD {
        var acc = vec2<u32>(0u, 0u);
        for (var j = t * FOLD; j < (t + 1u) * FOLD; j++) {
            acc = add_u64(acc, vec2<u32>(red_u[j], red_v[j]));
        }
        run_sums[t] = acc;
    }
    workgroupBarrier();
    // The runs below this invocation's, then the values before it in its run.
    var before = vec2<u32>(0u, 0u);
    for (var r = 0u; r < t / FOLD; r++) {
        before = add_u64(before, run_sums[r]);
    }
    for (var j = t / FOLD * FOLD; j < t; j++) {
        before = add_u64(before, vec2<u32>(red_u[j], red_v[j]));
    }
    if t == 0u {
        var total = vec2<u32>(0u, 0u);
        for (var r = 0u; r < FOLD; r++) {
            total = add_u64(total, run_sums[r]);
        }
        scan_total = total;
    }
    return before;
}

// The last scan's total, to every invocation (uniform); its barrier also
// ends the scan's reads of red_u, red_v and run_sums.
fn scanned_total() -> vec2<u32> {
    return workgroupUniformLoad(&scan_total);
}

// `list_streams` by a scan of the flags. The list also goes to
// stream_max_key (no longer read once streams are listed), where the wide
// gather reads it while its own scan writes red_u and red_v.
fn list_streams_wide(t: u32, listed: bool) -> u32 {
    let before = scan_u64(t, vec2<u32>(0u, select(0u, 1u, listed))).y;
    let total = scanned_total().y;
    if listed {
        red_v[before] = t;
        stream_max_key[before] = t;
    }
    workgroupBarrier();
    return total;
}

// Whether the filtered gather takes a token: finite, key at or above the
// bound, and (for min-p or top-nσ alone) above the floors.
fn is_gathered(z_bits: u32, gather_from: u32, floors: bool, s: RowState) -> bool {
    return is_finite_bits(z_bits) && key_from_bits(z_bits) >= gather_from
        && (!floors || passes_floors(bitcast<f32>(z_bits), s));
}

// The filtered gather over the `n_active` streams listed in stream_max_key
// (by `list_streams_wide`), by every
// invocation: the streams' groups, stream after stream and each stream's in
// visiting order, are shared out in contiguous runs; each invocation counts
// its run's tokens, a scan places them, and a second read stores them. Each
// stream's tokens sit in its visiting order, as the one-invocation-a-stream
// gather leaves them. Returns the count (uniform); stores nothing past
// CANDIDATES.
fn gather_streams_wide(t: u32, row: u32, vocab: u32, inv_t: f32, n_active: u32, gather_from: u32,
                       floors: bool, s: RowState) -> u32 {
    let stream_groups = (vocab + GROUP * WG - 1u) / (GROUP * WG);
    let items = n_active * stream_groups;
    let per = (items + WG - 1u) / WG;
    let first = min(t * per, items);
    let last = min(first + per, items);
    var count = 0u;
    for (var w = first; w < last; w++) {
        let g = stream_max_key[w / stream_groups] + (w % stream_groups) * WG;
        for (var j = 0u; j < GROUP && g * GROUP + j < vocab; j++) {
            count += select(0u, 1u, is_gathered(scaled_bits(row, g * GROUP + j, inv_t), gather_from, floors, s));
        }
    }
    var slot = scan_u64(t, vec2<u32>(0u, count)).y;
    let total = scanned_total().y;
    if total <= CANDIDATES {
        for (var w = first; w < last; w++) {
            let g = stream_max_key[w / stream_groups] + (w % stream_groups) * WG;
            for (var j = 0u; j < GROUP && g * GROUP + j < vocab; j++) {
                let i = g * GROUP + j;
                let z_bits = scaled_bits(row, i, inv_t);
                if is_gathered(z_bits, gather_from, floors, s) {
                    cand_key[slot] = key_from_bits(z_bits);
                    cand_index[slot] = i;
                    slot += 1u;
                }
            }
        }
    }
    workgroupBarrier();
    return total;
}

// The `n` candidates (uniform) in sorted_key / sorted_weight (the latter
// holding tokens here): larger key first, ties to the lower token. A bitonic
// network whose comparators all point one way (each merge opens with a
// mirrored step), so slots past `n` act as keys below every other and never
// move: no padding is stored.
fn sort_candidates_wide(t: u32, n: u32) {
    for (var c = t; c < n; c += WG) {
        sorted_key[c] = cand_key[c];
        sorted_weight[c] = cand_index[c];
    }
    var size = 1u;
    while size < n {
        size <<= 1u;
    }
    for (var k = 2u; k <= size; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            workgroupBarrier();
            for (var c = t; c < (size >> 1u); c += WG) {
                let block = c / j;
                let offset = c % j;
                let a = block * 2u * j + offset;
                let b = select(a + j, block * k + k - 1u - offset, j == (k >> 1u));
                if b < n && key_beats(sorted_key[b], sorted_weight[b], sorted_key[a], sorted_weight[a]) {
                    let key = sorted_key[a];
                    let token = sorted_weight[a];
                    sorted_key[a] = sorted_key[b];
                    sorted_weight[a] = sorted_weight[b];
                    sorted_key[b] = key;
                    sorted_weight[b] = token;
                }
            }
        }
    }
    workgroupBarrier();
}

// `select_among_candidates` on the candidates' keys sorted into sorted_key
// (largest first): FOLD lanes sum the weights of FOLD runs of them, then
// one invocation finds the top-k domain (the k-th key and its ties) and
// walks the runs, and the candidates of the run where the mass first
// reaches the top-p target. Integer sums: the order of adding cannot
// change a bit.
fn walk_sorted_candidates(t: u32, n: u32, use_top_k: bool, k: u32, use_top_p: bool, top_p: f32,
                          row_mass_target: f32, row_max: f32) -> vec2<u32> {
    let per = max((n + FOLD - 1u) / FOLD, 1u);
    if t < FOLD {
        var sum = vec2<u32>(0u, 0u);
        for (var i = min(t * per, n); i < min((t + 1u) * per, n); i++) {
            sum = add_u64(sum, vec2<u32>(0u, fixed_weight(bits_from_key(sorted_key[i]), row_max)));
        }
        run_sums[t] = sum;
    }
    workgroupBarrier();
    if t == 0u {
        var threshold = 0u;
        var found = 1u;
        var domain = n;
        if use_top_k {
            // k <= n: the gather held at least k tokens.
            threshold = sorted_key[k - 1u];
            domain = k;
            while domain < n && sorted_key[domain] == threshold {
                domain += 1u;
            }
        }
        if use_top_p {
            // Whole runs inside the domain, then its last candidates.
            var mass_target = row_mass_target;
            if use_top_k {
                let whole = min(domain / per, FOLD);
                var total = vec2<u32>(0u, 0u);
                for (var r = 0u; r < whole; r++) {
                    total = add_u64(total, run_sums[r]);
                }
                for (var i = whole * per; i < domain; i++) {
                    total = add_u64(total, vec2<u32>(0u, fixed_weight(bits_from_key(sorted_key[i]), row_max)));
                }
                mass_target = top_p * u64_to_f32(total);
            }
            var cum = vec2<u32>(0u, 0u);
            found = 0u;
            for (var r = 0u; r < FOLD && found == 0u && r * per < domain; r++) {
                let last = min((r + 1u) * per, domain);
                // A whole run whose end stays below the target holds no
                // boundary (the mass only grows): add it at once.
                if last == min((r + 1u) * per, n) && u64_to_f32(add_u64(cum, run_sums[r])) < mass_target {
                    cum = add_u64(cum, run_sums[r]);
                    continue;
                }
                for (var i = r * per; i < last; i++) {
                    cum = add_u64(cum, vec2<u32>(0u, fixed_weight(bits_from_key(sorted_key[i]), row_max)));
                    // Equal keys count together: test at the end of their run.
                    if i + 1u < domain && sorted_key[i + 1u] == sorted_key[i] {
                        continue;
                    }
                    if u64_to_f32(cum) >= mass_target {
                        threshold = sorted_key[i];
                        found = 1u;
                        break;
                    }
                }
            }
        }
        sel_result = threshold;
        sel_found = found;
    }
    let result = workgroupUniformLoad(&sel_result);
    return vec2<u32>(result, workgroupUniformLoad(&sel_found));
}
