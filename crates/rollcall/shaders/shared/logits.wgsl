// Read-only loads shared by every kernel that reads a `rows x vocab` logits
// matrix: binding 0 is this dispatch's record (`shared/chunk.wgsl`), binding
// 1 the logits as 32-bit words (f32, or two f16/bf16 each), of the dtype
// the record names.

#include "shared/chunk.wgsl"

@group(0) @binding(1) var<storage, read> logits: array<u32>;

// Logit `i` of dispatch row `row`, exactly as stored (f16 decoded by integer
// ops, so no f16 capability is needed).
fn load_logit(row: u32, i: u32) -> f32 {
    let e = chunk.elem_base + row * chunk.vocab + i;
    if logits_dtype() == DTYPE_F32 {
        return bitcast<f32>(logits[e]);
    }
    let word = logits[e >> 1u];
    return decode_half(select(word & 0xFFFFu, word >> 16u, (e & 1u) == 1u));
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

