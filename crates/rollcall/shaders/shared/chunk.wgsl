// What every kernel over a `rows x vocab` logits matrix shares whatever way
// it binds the logits: binding 0 is this dispatch's record, and 16-bit logit
// bits decode to f32 by integer ops. `LOGITS_DTYPE` (0 = f32, 1 = f16,
// 2 = bf16) is prepended by the host. The read-only loads are in
// `shared/logits.wgsl`; the edits kernel binds the logits as atomics.

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
    gather: u32,     // 1: each row reads the logits row its parameters name
    logits_base: u32,  // (gather) the logits row at elem_base
    pad0: u32,
}

@group(0) @binding(0) var<uniform> chunk: ChunkInfo;

// The f32 of 16-bit logit bits (f16 or bf16, as LOGITS_DTYPE says).
fn decode_half(half_bits: u32) -> f32 {
    if LOGITS_DTYPE == DTYPE_F16 {
        return bitcast<f32>(f32_bits_from_f16_bits(half_bits));
    }
    return bitcast<f32>(half_bits << 16u);
}
