// Logit edits, applied to the logits in place before sampling and undone
// after it (vLLM v1 order): logit bias, the repetition, frequency and
// presence penalties, and the min_tokens ban of stop tokens. Then the row's
// sampled token joins its token history. One workgroup of WG invocations per
// row; the CPU twin is `sampling/edits.rs`.
//
// Per row, a token history: a dense list of entries (token, counts, bias,
// saved delta), `distinct` long, holding every token that can be edited:
// prompt and output tokens, biased tokens and stop tokens; and an
// open-addressing hash index over it of `1 << slot_shift` slots (linear
// probing from `(token * HASH_MULTIPLIER) >> (32 - slot_shift)`), each the
// position of an entry or NO_ENTRY. The edits walk the list only; the index
// is read by the append alone. A token not in the history is never touched.
// A row's list has room for half its slots.
//
// Edited value of a token with logit l (decoded to f32), each arithmetic step
// followed by `canonical` (below):
//   v = l + bias                             (bias != 0)
//   v = v > 0 ? v * inv_repetition : v * repetition
//                                            (repetition on; in prompt or count > 0)
//   v = v - frequency * count; v = v - presence  (count > 0; each when != 0)
//   v = -inf                                 (stop token, produced < min_tokens)
// A token none of these touch keeps its bits. f32 logits store v; f16 and
// bf16 logits store v rounded to nearest-even in their dtype (integer ops,
// bit for bit the `half` crate's `from_f32`).
//
// Two 16-bit logits share a 32-bit word (across rows too when vocab is odd),
// so the logits are bound as atomics and every edit is an `atomicXor` of the
// old bits with the new ones in place: only the token's half changes. The
// delta is kept in the entry (`saved`) and XORed back by `restore_and_append`,
// which leaves the buffer bit-identical to before `apply_edits`.
//
// Bit identity with the twin assumes the adapter rounds each product and
// sum (Vulkan and Metal round f32 add and multiply correctly) and does not
// fuse a product into the next subtraction: the product passes through
// `canonical`, an integer select, before it is subtracted, and the tests
// compare every edited bit with the twin's on the adapter they run on.

#include "shared/chunk.wgsl"

const WG: u32 = 64u;
const NO_ENTRY: u32 = 0xFFFFFFFFu;  // a free index slot
// HistoryEntry.counts: output occurrences in bits 0..=29 (saturating), then flags.
const COUNT_MASK: u32 = 0x3FFFFFFFu;
const IN_PROMPT: u32 = 0x40000000u;
const STOP_TOKEN: u32 = 0x80000000u;
const HASH_MULTIPLIER: u32 = 0x9E3779B1u;
// EditParams.flags.
const FLAG_PENALTIES: u32 = 1u;  // a penalty is on: edit, and track the history
const FLAG_BIAS: u32 = 2u;       // some entry has a bias
const FLAG_STOP: u32 = 4u;       // some entry is a stop token and min_tokens > 0
const STATUS_OK: u32 = 0u;
const CANONICAL_NAN_BITS: u32 = 0x7FC00000u;

struct HistoryEntry {
    token: u32,
    counts: u32,  // count | IN_PROMPT | STOP_TOKEN
    bias: f32,    // 0: none
    saved: u32,   // the XOR delta apply_edits wrote into the logits
}

// Written by the host only.
struct EditParams {
    repetition: f32,
    inv_repetition: f32,  // 1 / repetition rounded once on the host
    presence: f32,
    frequency: f32,
    min_tokens: u32,
    flags: u32,
    slot_shift: u32,      // log2 of the index slots per row (1..=30)
    _pad: u32,
}

// Written by the host at `set_row`, then by the kernels.
struct EditRowState {
    produced: u32,  // output tokens so far
    distinct: u32,  // entries in the list
    applied: u32,   // 1 between apply_edits and restore_and_append
    _pad: u32,
}

// The sampler's per-row result (its `RowResult`).
struct RowResult {
    logprob: f32,
    status: u32,
    kept: u32,
    probe_logprob: f32,
}

@group(0) @binding(1) var<storage, read_write> logits: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read> params: array<EditParams>;
@group(0) @binding(3) var<storage, read_write> row_state: array<EditRowState>;
// Row r's list: entries[r << (slot_shift - 1) ..][..distinct].
@group(0) @binding(4) var<storage, read_write> entries: array<HistoryEntry>;
// restore_and_append only: the sampler's outputs, and the hash index (row
// r's slots: index[r << slot_shift ..]).
@group(0) @binding(5) var<storage, read> sampled_tokens: array<u32>;
@group(0) @binding(6) var<storage, read> sampled_results: array<RowResult>;
@group(0) @binding(7) var<storage, read_write> index: array<u32>;

// f32 `x` after an arithmetic step: NaN becomes the one quiet NaN and a
// subnormal a zero of its sign, so results depend neither on NaN payloads
// nor on whether the adapter flushes subnormals.
fn canonical(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x7FFFFFFFu) > 0x7F800000u {
        return bitcast<f32>(CANONICAL_NAN_BITS);
    }
    if (bits & 0x7F800000u) == 0u {
        return bitcast<f32>(bits & 0x80000000u);
    }
    return x;
}

struct Edit {
    changed: bool,
    value: f32,
}

// The edited value of logit `l` of the token of `entry` (see the top).
fn edit_logit(l: f32, entry: HistoryEntry, p: EditParams, ban: bool) -> Edit {
    if ban && (entry.counts & STOP_TOKEN) != 0u {
        return Edit(true, bitcast<f32>(F32_NEG_INF_BITS));
    }
    let count = entry.counts & COUNT_MASK;
    let penalties = (p.flags & FLAG_PENALTIES) != 0u;
    let add_bias = entry.bias != 0.0;
    let repeat = penalties && p.repetition != 1.0
        && (count > 0u || (entry.counts & IN_PROMPT) != 0u);
    let frequency = penalties && count > 0u && p.frequency != 0.0;
    let presence = penalties && count > 0u && p.presence != 0.0;
    if !(add_bias || repeat || frequency || presence) {
        return Edit(false, l);
    }
    var v = canonical(l);
    if add_bias {
        v = canonical(v + entry.bias);
    }
    if repeat {
        if v > 0.0 {
            v = canonical(v * p.inv_repetition);
        } else {
            v = canonical(v * p.repetition);
        }
    }
    if frequency {
        let cost = canonical(p.frequency * f32(count));
        v = canonical(v - cost);
    }
    if presence {
        v = canonical(v - p.presence);
    }
    return Edit(true, v);
}

// IEEE half bits of f32 bits, rounded to nearest-even: subnormal halves,
// overflow to inf, NaN kept NaN (quiet bit set, top payload bits kept).
fn f16_bits_from_f32_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let exponent = x & 0x7F800000u;
    let mantissa = x & 0x007FFFFFu;
    if exponent == 0x7F800000u {
        let quiet = select(0u, 0x0200u, mantissa != 0u);
        return sign | 0x7C00u | quiet | (mantissa >> 13u);
    }
    let half_exponent = i32(exponent >> 23u) - 112;  // - 127 + 15
    if half_exponent >= 31 {
        return sign | 0x7C00u;
    }
    if half_exponent <= 0 {
        // Subnormal half (or zero): the mantissa with its leading one,
        // shifted right by 14..=24 places.
        if half_exponent < -10 {
            return sign;
        }
        let full = mantissa | 0x00800000u;
        let shift = u32(14 - half_exponent);
        let round_bit = 1u << (shift - 1u);
        var bits = full >> shift;
        // Round up when above half, or at half with an odd result.
        if (full & round_bit) != 0u && (full & (3u * round_bit - 1u)) != 0u {
            bits += 1u;
        }
        return sign | bits;
    }
    let bits = sign | (u32(half_exponent) << 10u) | (mantissa >> 13u);
    // A carry out of the mantissa bumps the exponent (to inf past the top).
    if (mantissa & 0x1000u) != 0u && (mantissa & 0x2FFFu) != 0u {
        return bits + 1u;
    }
    return bits;
}

// bfloat16 bits of f32 bits, rounded to nearest-even; NaN kept NaN (quiet
// bit set).
fn bf16_bits_from_f32_bits(x: u32) -> u32 {
    if (x & 0x7FFFFFFFu) > 0x7F800000u {
        return (x >> 16u) | 0x0040u;
    }
    let bits = x >> 16u;
    if (x & 0x8000u) != 0u && (x & 0x17FFFu) != 0u {
        return bits + 1u;
    }
    return bits;
}

// Edits token `token` of dispatch row `row` in place and returns the XOR
// delta it applied to the token's word (0: unchanged).
fn apply_to_logit(row: u32, token: u32, entry: HistoryEntry, p: EditParams, ban: bool) -> u32 {
    let e = chunk.elem_base + row * chunk.vocab + token;
    if logits_dtype() == DTYPE_F32 {
        let old_bits = atomicLoad(&logits[e]);
        let edit = edit_logit(bitcast<f32>(old_bits), entry, p, ban);
        if !edit.changed {
            return 0u;
        }
        let delta = old_bits ^ bitcast<u32>(edit.value);
        if delta != 0u {
            atomicXor(&logits[e], delta);
        }
        return delta;
    }
    let word = e >> 1u;
    let shift = (e & 1u) * 16u;
    let old_half = (atomicLoad(&logits[word]) >> shift) & 0xFFFFu;
    let edit = edit_logit(decode_half(old_half), entry, p, ban);
    if !edit.changed {
        return 0u;
    }
    var new_half: u32;
    if logits_dtype() == DTYPE_F16 {
        new_half = f16_bits_from_f32_bits(bitcast<u32>(edit.value));
    } else {
        new_half = bf16_bits_from_f32_bits(bitcast<u32>(edit.value));
    }
    let delta = (old_half ^ new_half) << shift;
    if delta != 0u {
        atomicXor(&logits[word], delta);
    }
    return delta;
}

// Row `r`'s entries in the list: `distinct`, within the list's room (a
// guard; the host keeps `distinct` within it).
fn list_len(r: u32, p: EditParams) -> u32 {
    return min(row_state[r].distinct, 1u << (p.slot_shift - 1u));
}

@compute @workgroup_size(WG)
fn apply_edits(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    let r = chunk.row_base + row;
    let p = params[r];
    let produced = row_state[r].produced;
    let ban = (p.flags & FLAG_STOP) != 0u && produced < p.min_tokens;
    let edits = (p.flags & (FLAG_PENALTIES | FLAG_BIAS)) != 0u || ban;
    let len = list_len(r, p);
    if len == 0u || !edits {
        return;
    }
    let base = r << (p.slot_shift - 1u);
    for (var i = lid; i < len; i += WG) {
        let entry = entries[base + i];
        if entry.token >= chunk.vocab {
            continue;
        }
        entries[base + i].saved = apply_to_logit(row, entry.token, entry, p, ban);
    }
    if lid == 0u {
        row_state[r].applied = 1u;
    }
}

// Adds the sampled `token` to row `r`'s history (invocation 0 only).
fn append_token(r: u32, token: u32, p: EditParams) {
    append_to_row(r, token, (p.flags & FLAG_PENALTIES) != 0u, p.slot_shift);
}

// Counts one more output token in row `r`, and with `track` adds `token` to
// its list (invocation 0 only).
fn append_to_row(r: u32, token: u32, track: bool, slot_shift: u32) {
    row_state[r].produced = max(row_state[r].produced, row_state[r].produced + 1u);
    if !track {
        return;
    }
    let mask = (1u << slot_shift) - 1u;
    let slots = r << slot_shift;
    let base = r << (slot_shift - 1u);
    var s = (token * HASH_MULTIPLIER) >> (32u - slot_shift);
    // The host refuses steps that could fill the list (half the slots), so
    // a free slot or the token is always found; the bounds only guard
    // against a hang or a write past the row.
    for (var probe = 0u; probe <= mask; probe += 1u) {
        let at = index[slots + s];
        if at == NO_ENTRY {
            let distinct = row_state[r].distinct;
            if distinct < (1u << (slot_shift - 1u)) {
                entries[base + distinct] = HistoryEntry(token, 1u, 0.0, 0u);
                index[slots + s] = distinct;
                row_state[r].distinct = distinct + 1u;
            }
            return;
        }
        if entries[base + at].token == token {
            let counts = entries[base + at].counts;
            if (counts & COUNT_MASK) != COUNT_MASK {
                entries[base + at].counts = counts + 1u;
            }
            return;
        }
        s = (s + 1u) & mask;
    }
}

@compute @workgroup_size(WG)
fn restore_and_append(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let row = wid.x;
    let r = chunk.row_base + row;
    let p = params[r];
    if row_state[r].applied != 0u {
        let len = list_len(r, p);
        let base = r << (p.slot_shift - 1u);
        for (var i = lid; i < len; i += WG) {
            let delta = entries[base + i].saved;
            if delta == 0u {
                continue;
            }
            let e = chunk.elem_base + row * chunk.vocab + entries[base + i].token;
            let word = select(e >> 1u, e, logits_dtype() == DTYPE_F32);
            atomicXor(&logits[word], delta);
            entries[base + i].saved = 0u;
        }
    }
    workgroupBarrier();
    storageBarrier();
    if lid == 0u {
        row_state[r].applied = 0u;
        let token = sampled_tokens[r];
        if sampled_results[r].status == STATUS_OK && token < chunk.vocab {
            append_token(r, token, p);
        }
    }
}

// ---- Speculative verification (small kernels, bindings 10 and up) ----
//
// A request's history lives in a request table; each of its target
// positions samples from a copy of it (same slot_shift) with the draft
// tokens before the position appended, and the tokens verification emits
// join the request table afterwards.

struct HistoryInfo {
    rows: u32,        // sampled rows (expand) or requests (append)
    slot_shift: u32,
    vocab: u32,
    grid_width: u32,  // invocations per row of the dispatch grid
}

// Where a sampled row's history comes from: its request's row (NO_INDEX:
// none, the row keeps an empty history) and the draft tokens before it.
struct PositionHistory {
    request: u32,
    first_draft: u32,
    prefix: u32,
    _pad: u32,
}

// Verification's per-request record, as words (`Verdict` in
// speculative.wgsl).
const VERDICT_WORDS: u32 = 8u;
const VERDICT_EMITTED: u32 = 1u;
const VERDICT_OUT_BASE: u32 = 7u;

@group(0) @binding(10) var<uniform> history_info: HistoryInfo;
@group(0) @binding(11) var<storage, read> positions: array<PositionHistory>;
@group(0) @binding(12) var<storage, read> request_state: array<EditRowState>;
@group(0) @binding(13) var<storage, read> request_entries: array<HistoryEntry>;
@group(0) @binding(14) var<storage, read> request_index: array<u32>;
@group(0) @binding(15) var<storage, read> draft_tokens: array<u32>;
@group(0) @binding(16) var<storage, read> verdict_words: array<u32>;
@group(0) @binding(17) var<storage, read> emitted_tokens: array<u32>;

// Sampled row v's history: its request's, then the draft tokens before its
// position. Rows of no request are left as they are.
@compute @workgroup_size(WG)
fn expand_histories(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let v = wid.x + wid.y * history_info.grid_width;
    if v >= history_info.rows {
        return;
    }
    let source = positions[v];
    if source.request == NO_ENTRY {
        return;
    }
    let shift = history_info.slot_shift;
    let r = source.request;
    let state = request_state[r];
    let distinct = min(state.distinct, 1u << (shift - 1u));
    for (var i = lid; i < distinct; i += WG) {
        entries[(v << (shift - 1u)) + i] = request_entries[(r << (shift - 1u)) + i];
    }
    for (var s = lid; s < (1u << shift); s += WG) {
        index[(v << shift) + s] = request_index[(r << shift) + s];
    }
    workgroupBarrier();
    storageBarrier();
    if lid == 0u {
        row_state[v] = EditRowState(state.produced, distinct, 0u, 0u);
        for (var j = 0u; j < source.prefix; j++) {
            append_to_row(v, draft_tokens[source.first_draft + j], true, shift);
        }
    }
}

// Request r's emitted tokens join its history.
@compute @workgroup_size(WG)
fn append_emitted(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * history_info.grid_width;
    if r >= history_info.rows {
        return;
    }
    let p = params[r];
    let emitted = verdict_words[r * VERDICT_WORDS + VERDICT_EMITTED];
    let out_base = verdict_words[r * VERDICT_WORDS + VERDICT_OUT_BASE];
    for (var j = 0u; j < emitted; j++) {
        let token = emitted_tokens[out_base + j];
        if token < history_info.vocab {
            append_token(r, token, p);
        }
    }
}

// Tests only: f16 bits | bf16 bits << 16 of every f32 bit pattern in
// `round_in` (as `apply_edits` stores an edited 16-bit logit).
@group(0) @binding(8) var<storage, read> round_in: array<u32>;
@group(0) @binding(9) var<storage, read_write> round_out: array<u32>;

@compute @workgroup_size(WG)
fn round_to_halves(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * WG;
    if i < arrayLength(&round_in) {
        let x = round_in[i];
        round_out[i] = f16_bits_from_f32_bits(x) | (bf16_bits_from_f32_bits(x) << 16u);
    }
}
