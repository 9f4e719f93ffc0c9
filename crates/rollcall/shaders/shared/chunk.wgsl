// What every kernel over a `rows x vocab` logits matrix shares whatever way
// it binds the logits: binding 0 is this dispatch's record, and 16-bit logit
// bits decode to f32 by integer ops. The record says how this dispatch
// reads its logits (`loads`: the dtype, and whether f32 rows are read as
// vectors), so one pipeline serves every dtype. The read-only loads are in
// `shared/logits.wgsl`; the edits kernel binds the logits as atomics.

#include "shared/keys.wgsl"

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;  // (the loads take every value but the two above as bf16)
// In `ChunkInfo::loads` above the dtype: f32 rows start on 16-byte
// boundaries and are read four at a time through the vector view.
const LOADS_VEC4: u32 = 4u;

struct ChunkInfo {
    rows: u32,       // rows in this dispatch
    vocab: u32,
    elem_base: u32,  // element offset of row 0 inside the bound logits range
    row_base: u32,   // index of row 0 in the kernel's per-row buffers
    tiles: u32,      // per-stream partials per row written by a split pass (0: none)
    gather: u32,     // 1: each row reads the logits row its parameters name
    logits_base: u32,  // (gather) the logits row at elem_base
    loads: u32,      // the logits' DTYPE_* | LOADS_VEC4 when read as vectors
}

@group(0) @binding(0) var<uniform> chunk: ChunkInfo;

// This dispatch's logits dtype (uniform: branches on it cost a GPU nothing).
fn logits_dtype() -> u32 {
    return chunk.loads & 3u;
}

// Whether this dispatch's f32 rows are read through the vector view.
fn vec4_loads() -> bool {
    return (chunk.loads & LOADS_VEC4) != 0u;
}

// The f32 of 16-bit logit bits (f16 or bf16, as the dtype says).
fn decode_half(half_bits: u32) -> f32 {
    if logits_dtype() == DTYPE_F16 {
        return bitcast<f32>(f32_bits_from_f16_bits(half_bits));
    }
    return bitcast<f32>(half_bits << 16u);
}
