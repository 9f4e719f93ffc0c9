// Batched token sampling: one workgroup per row, 256 streams per row.
//
// Token i belongs to stream (i / 4) % 256, and every stream visits its tokens
// in increasing order. That layout is part of the contract: it fixes the draw
// for a (row, seed, step) on every batch size, position and adapter.
//
// Passes over a row's logits:
//   greedy, or temperature only:  1 (+ a replay of one stream, 1/256 of the row)
//   min-p only:                   2
//   top-k and/or top-p:           2 + up to 4 radix rounds per filter
// The draw is exact: a stream is picked by an exponential race over the
// streams' kept masses, then a token inside it by a race over its tokens, so
// random numbers are drawn per stream and for one stream's tokens only.
//
#include "philox.wgsl"
#include "logits.wgsl"

const WG: u32 = 256u;
const GROUP: u32 = 4u;
const FLAG_GREEDY: u32 = 1u;
const FLAG_MIN_P: u32 = 2u;
const STATUS_OK: u32 = 0u;
const STATUS_NO_VALID_TOKEN: u32 = 1u;

const PURPOSE_STREAM: u32 = 0u;
const PURPOSE_TOKEN: u32 = 1u;

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct RowResult {
    logprob: f32,
    status: u32,
    kept: u32,
    _pad: u32,
}

@group(0) @binding(2) var<storage, read> params: array<RowParams>;
@group(0) @binding(3) var<storage, read_write> out_tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_results: array<RowResult>;

// Per-stream state, then tree reductions over it.
var<workgroup> w_max: array<f32, WG>;
var<workgroup> w_mass: array<f32, WG>;
var<workgroup> w_count: array<u32, WG>;   // +inf tokens, or kept tokens
var<workgroup> w_key: array<u32, WG>;     // greedy: best key
var<workgroup> w_index: array<u32, WG>;   // greedy: best index; race: winner
var<workgroup> w_race: array<f32, WG>;
// Radix-select histograms: one bucket per invocation.
var<workgroup> h_count: array<atomic<u32>, 256>;
var<workgroup> h_mass_lo: array<atomic<u32>, 256>;
var<workgroup> h_mass_hi: array<atomic<u32>, 256>;
var<workgroup> h_max_key: array<atomic<u32>, 256>;
// Radix-select state, written by invocation 0.
var<workgroup> sel_prefix: u32;
var<workgroup> sel_mask: u32;
var<workgroup> sel_above: vec2<u32>;
var<workgroup> sel_target: f32;
var<workgroup> sel_done: u32;
var<workgroup> sel_result: u32;
var<workgroup> row_params: RowParams;

// Canonical bits of the scaled logit z = l * (1 / T).
fn scaled_bits(row: u32, i: u32, inv_t: f32) -> u32 {
    let raw = bitcast<u32>(load_logit(row, i));
    if !is_finite_bits(raw) {
        return canonical_bits(raw);
    }
    return canonical_bits(bitcast<u32>(bitcast<f32>(raw) * inv_t));
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
    return !s.use_min_p || (bitcast<f32>(z_bits) - s.row_max) >= s.log_min_p;
}

// Largest key t (among keys >= lo_key) whose weight W(key >= t) reaches the
// target: a count of tokens (top-k), or top_p times the total fixed-point mass
// (top-p). MSB-first radix select, 8 bits a round, exits early once the
// boundary bucket's largest key alone reaches the target.
fn select_threshold(t: u32, row: u32, vocab: u32, inv_t: f32, by_mass: bool, lo_key: u32,
                    count_target: u32, top_p: f32, row_max: f32) -> u32 {
    if t == 0u {
        sel_prefix = 0u;
        sel_mask = 0u;
        sel_above = vec2<u32>(0u, 0u);
        sel_done = 0u;
        sel_result = lo_key;
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
        for (var g = t; g * GROUP < vocab; g += WG) {
            for (var j = 0u; j < GROUP; j++) {
                let i = g * GROUP + j;
                if i >= vocab {
                    break;
                }
                let z_bits = scaled_bits(row, i, inv_t);
                let key = key_from_bits(z_bits);
                if key < lo_key || (key & mask) != prefix {
                    continue;
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
        }
        workgroupBarrier();
        if t == 0u {
            if by_mass && round == 0u {
                var total = vec2<u32>(0u, 0u);
                for (var b = 0u; b < 256u; b++) {
                    total = add_u64(total, vec2<u32>(atomicLoad(&h_mass_hi[b]), atomicLoad(&h_mass_lo[b])));
                }
                sel_target = top_p * u64_to_f32(total);
            }
            var above = sel_above;
            var boundary = 256u;
            for (var b = 255; b >= 0; b--) {
                let c = atomicLoad(&h_count[b]);
                if c == 0u {
                    continue;
                }
                var cum: vec2<u32>;
                var reached: bool;
                if by_mass {
                    cum = add_u64(above, vec2<u32>(atomicLoad(&h_mass_hi[b]), atomicLoad(&h_mass_lo[b])));
                    reached = u64_to_f32(cum) >= sel_target;
                } else {
                    cum = add_u64(above, vec2<u32>(0u, c));
                    reached = cum.x != 0u || cum.y >= count_target;
                }
                if reached {
                    boundary = u32(b);
                    break;
                }
                above = cum;
            }
            if boundary == 256u {
                // Unreachable for valid targets; keep everything rather than nothing.
                sel_result = lo_key;
                sel_done = 1u;
            } else {
                let max_key = atomicLoad(&h_max_key[boundary]);
                var top_alone: bool;
                if by_mass {
                    let w = fixed_weight(bits_from_key(max_key), row_max);
                    top_alone = u64_to_f32(add_u64(above, vec2<u32>(0u, w))) >= sel_target;
                } else {
                    let cum = add_u64(above, vec2<u32>(0u, 1u));
                    top_alone = cum.x != 0u || cum.y >= count_target;
                }
                if top_alone {
                    sel_result = max_key;
                    sel_done = 1u;
                } else if round == 3u {
                    sel_result = prefix | boundary;
                    sel_done = 1u;
                } else {
                    sel_prefix = prefix | (boundary << shift);
                    sel_mask = mask | (0xFFu << shift);
                    sel_above = above;
                }
            }
        }
        if workgroupUniformLoad(&sel_done) != 0u {
            break;
        }
    }
    return workgroupUniformLoad(&sel_result);
}

// Combine stream states (max, mass) pairwise in a fixed tree; returns the row's
// (max, mass) to every invocation. Streams with no mass carry mass 0.
fn reduce_max_mass(t: u32) -> vec2<f32> {
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride {
            let m1 = w_max[t];
            let a1 = w_mass[t];
            let m2 = w_max[t + stride];
            let a2 = w_mass[t + stride];
            if a1 == 0.0 {
                w_max[t] = m2;
                w_mass[t] = a2;
            } else if a2 != 0.0 {
                let m = max(m1, m2);
                w_max[t] = m;
                w_mass[t] = a1 * exp(m1 - m) + a2 * exp(m2 - m);
            }
        }
    }
    let row_max = workgroupUniformLoad(&w_max[0]);
    return vec2<f32>(row_max, workgroupUniformLoad(&w_mass[0]));
}

fn reduce_sum_u32(t: u32) -> u32 {
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride {
            w_count[t] = w_count[t] + w_count[t + stride];
        }
    }
    return workgroupUniformLoad(&w_count[0]);
}

// Arg-max over (w_race, w_index) pairs; an index of NO_INDEX never wins, ties go
// to the lower index.
fn reduce_race(t: u32) -> u32 {
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride {
            let i2 = w_index[t + stride];
            if i2 != NO_INDEX {
                let i1 = w_index[t];
                let k1 = w_race[t];
                let k2 = w_race[t + stride];
                if i1 == NO_INDEX || k2 > k1 || (k2 == k1 && i2 < i1) {
                    w_race[t] = k2;
                    w_index[t] = i2;
                }
            }
        }
    }
    return workgroupUniformLoad(&w_index[0]);
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

@compute @workgroup_size(256)
fn sample_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wid.x;
    if t == 0u {
        row_params = params[chunk.row_base + row];
    }
    let p = workgroupUniformLoad(&row_params);
    let vocab = chunk.vocab;
    let greedy = (p.flags & FLAG_GREEDY) != 0u;
    let inv_t = select(p.inv_temperature, 1.0, greedy);
    let out_index = chunk.row_base + row;

    // Pass 1: per-stream online max and mass of finite tokens, +inf count, and
    // the arg-max key (lowest index among ties).
    var state = vec2<f32>(0.0, 0.0);
    var inf_count = 0u;
    var finite_count = 0u;
    var best_key = 0u;
    var best_index = NO_INDEX;
    for (var g = t; g * GROUP < vocab; g += WG) {
        for (var j = 0u; j < GROUP; j++) {
            let i = g * GROUP + j;
            if i >= vocab {
                break;
            }
            let z_bits = scaled_bits(row, i, inv_t);
            let key = key_from_bits(z_bits);
            if key > best_key {
                best_key = key;
                best_index = i;
            }
            if z_bits == F32_POS_INF_BITS {
                inf_count += 1u;
            } else if is_finite_bits(z_bits) {
                finite_count += 1u;
                state = online_add(state, bitcast<f32>(z_bits));
            }
        }
    }
    let stream_state = state;
    let stream_inf = inf_count;
    w_max[t] = state.x;
    w_mass[t] = state.y;
    w_count[t] = inf_count;
    w_key[t] = best_key;
    w_index[t] = best_index;

    // Greedy winner: larger key, then lower index.
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride {
            let k2 = w_key[t + stride];
            let i2 = w_index[t + stride];
            if k2 > w_key[t] || (k2 == w_key[t] && i2 < w_index[t]) {
                w_key[t] = k2;
                w_index[t] = i2;
            }
        }
    }
    workgroupBarrier();
    let argmax_key = w_key[0];
    let argmax_index = w_index[0];
    let row_inf = reduce_sum_u32(t);
    let row_stats = reduce_max_mass(t);
    let row_max = row_stats.x;
    let log_mass = log(row_stats.y);
    let has_inf = row_inf != 0u;

    if !has_inf && row_stats.y == 0.0 {
        if t == 0u {
            out_tokens[out_index] = NO_INDEX;
            out_results[out_index] = RowResult(bitcast<f32>(F32_NEG_INF_BITS), STATUS_NO_VALID_TOKEN, 0u, 0u);
        }
        return;
    }
    if greedy {
        if t == 0u {
            var logprob = -log(f32(row_inf));
            if !has_inf {
                logprob = (bitcast<f32>(bits_from_key(argmax_key)) - row_max) - log_mass;
            }
            out_tokens[out_index] = argmax_index;
            out_results[out_index] = RowResult(logprob, STATUS_OK, 1u, 0u);
        }
        return;
    }

    // Filters. With +inf present only the +inf tokens can be drawn.
    var s = RowState(row_max, has_inf, 0u, (p.flags & FLAG_MIN_P) != 0u, p.log_min_p);
    let use_top_k = p.top_k != 0u && p.top_k < vocab;
    let use_top_p = p.top_p < 1.0;
    var kept_state = stream_state;
    var kept_count = finite_count;
    if has_inf {
        kept_count = inf_count;
    } else if use_top_k || use_top_p || s.use_min_p {
        var threshold = 0u;
        if use_top_k {
            threshold = select_threshold(t, row, vocab, inv_t, false, 0u, p.top_k, 1.0, row_max);
        }
        if use_top_p {
            threshold = select_threshold(t, row, vocab, inv_t, true, threshold, 0u, p.top_p, row_max);
        }
        s.threshold_key = threshold;
        // Pass 2: per-stream kept mass.
        kept_state = vec2<f32>(0.0, 0.0);
        kept_count = 0u;
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

    // Race between streams: weight = kept mass (or +inf count), one exponential each.
    let stream_bits = philox4x32_10(vec4<u32>(t >> 2u, p.step_lo, p.step_hi, PURPOSE_STREAM),
                                    vec2<u32>(p.seed_lo, p.seed_hi));
    let stream_e = exponential_from_bits(stream_bits[t & 3u]);
    var stream_weight_log = 0.0;
    var stream_live = false;
    if has_inf {
        stream_live = kept_count != 0u;
        stream_weight_log = log(f32(kept_count));
    } else {
        stream_live = kept_state.y != 0.0;
        stream_weight_log = (kept_state.x - row_max) + log(kept_state.y);
    }
    workgroupBarrier();
    w_count[t] = kept_count;
    w_race[t] = stream_weight_log - log(stream_e);
    w_index[t] = select(NO_INDEX, t, stream_live);
    w_max[t] = kept_state.x;
    let total_kept = reduce_sum_u32(t);
    let stream = reduce_race(t);
    if stream == NO_INDEX {
        // Unreachable: the row's maximum survives every filter.
        if t == 0u {
            out_tokens[out_index] = NO_INDEX;
            out_results[out_index] = RowResult(bitcast<f32>(F32_NEG_INF_BITS), STATUS_NO_VALID_TOKEN, 0u, 0u);
        }
        return;
    }
    let stream_max = workgroupUniformLoad(&w_max[stream]);

    // Replay the chosen stream: group g = stream + 256 * n holds tokens 4g..4g+3.
    var best_race = 0.0;
    var best_token = NO_INDEX;
    for (var n = t; (stream + n * WG) * GROUP < vocab; n += WG) {
        let g = stream + n * WG;
        let token_bits = philox4x32_10(vec4<u32>(g, p.step_lo, p.step_hi, PURPOSE_TOKEN),
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
            var race = -log(exponential_from_bits(token_bits[j]));
            if !has_inf {
                race += bitcast<f32>(z_bits) - stream_max;
            }
            if best_token == NO_INDEX || race > best_race {
                best_race = race;
                best_token = i;
            }
        }
    }
    workgroupBarrier();
    w_race[t] = best_race;
    w_index[t] = best_token;
    let token = reduce_race(t);

    if t == 0u && token != NO_INDEX {
        var logprob = -log(f32(row_inf));
        if !has_inf {
            let z = bitcast<f32>(scaled_bits(row, token, inv_t));
            logprob = (z - row_max) - log_mass;
        }
        out_tokens[out_index] = token;
        out_results[out_index] = RowResult(logprob, STATUS_OK, total_kept, 0u);
    }
}
