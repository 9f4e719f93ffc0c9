// Bindings and loads shared by every kernel over a `rows x vocab` logits
// matrix: binding 0 is this dispatch's record, binding 1 the logits as 32-bit
// words (f32, or two f16/bf16 each). `LOGITS_DTYPE` (0 = f32, 1 = f16,
// 2 = bf16) is prepended by the host.

#include "keys.wgsl"

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;

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
    let half_bits = select(word & 0xFFFFu, word >> 16u, (e & 1u) == 1u);
    if LOGITS_DTYPE == DTYPE_F16 {
        return bitcast<f32>(f32_bits_from_f16_bits(half_bits));
    }
    return bitcast<f32>(half_bits << 16u);
}

