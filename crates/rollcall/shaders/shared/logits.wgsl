// Bindings and loads shared by every kernel over a `rows x vocab` logits
// matrix: binding 0 is this dispatch's record, binding 1 the logits as 32-bit
// words (f32, or two f16/bf16 each). `LOGITS_DTYPE` (0 = f32, 1 = f16,
// 2 = bf16) is prepended by the host.

#include "shared/keys.wgsl"

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;  // (the loads take every value but the two above as bf16)

struct ChunkInfo {
    rows: u32,       // rows in this dispatch
    vocab: u32,
    elem_base: u32,  // element offset of row 0 inside the bound logits range
    row_base: u32,   // index of row 0 in the kernel's per-row buffers
    tiles: u32,      // per-stream partials per row written by a split pass (0: none)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> chunk: ChunkInfo;
@group(0) @binding(1) var<storage, read> logits: array<u32>;

// Logit `i` of dispatch row `row`, exactly as stored (f16 decoded by integer
// ops, so no f16 capability is needed).
fn load_logit(row: u32, i: u32) -> f32 {
    let e = chunk.elem_base + row * chunk.vocab + i;
    if LOGITS_DTYPE == DTYPE_F32 {
        return bitcast<f32>(logits[e]);
    }
    let word = logits[e >> 1u];
    return decode_half(select(word & 0xFFFFu, word >> 16u, (e & 1u) == 1u));
}

// The f32 of 16-bit logit bits (f16 or bf16, as LOGITS_DTYPE says).
fn decode_half(half_bits: u32) -> f32 {
    if LOGITS_DTYPE == DTYPE_F16 {
        return bitcast<f32>(f32_bits_from_f16_bits(half_bits));
    }
    return bitcast<f32>(half_bits << 16u);
}

// Logits base..base+3 of a 16-bit dispatch row `row` (base + 4 <= vocab).
// When the first sits at an even element (even vocab and offset: the usual
// case; the same for every invocation of a row) the four are two words, read
// with two loads instead of four.
fn load_half_group(row: u32, base: u32) -> vec4<f32> {
    let e = chunk.elem_base + row * chunk.vocab + base;
    if (e & 1u) == 0u {
        let lo = logits[e >> 1u];
        let hi = logits[(e >> 1u) + 1u];
        return vec4<f32>(decode_half(lo & 0xFFFFu), decode_half(lo >> 16u),
                         decode_half(hi & 0xFFFFu), decode_half(hi >> 16u));
    }
    return vec4<f32>(load_logit(row, base), load_logit(row, base + 1u),
                     load_logit(row, base + 2u), load_logit(row, base + 3u));
}

