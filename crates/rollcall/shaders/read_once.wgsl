// Reference kernel: reads every logit of every row exactly once and sums the
// row, so sampler throughput can be reported against a kernel that does
// nothing but read the same logits.
//
// With `EXP_PER_LOGIT` (prepended by the host) it sums exp(logit - 64)
// instead: the least arithmetic an exact sampler that reports the token's
// log-probability must add (the normaliser needs an exp per token), so its
// ratio to the plain read is the ceiling for such a sampler on the adapter.
//
// The layout is the sampler's: one workgroup of 256 invocations per row, token
// i belongs to invocation (i / 4) % 256, and each invocation walks its groups of
// 4 in increasing order, loading a group of four at a time as the sampler's
// first pass does. The per-row sum is written out so the reads cannot be optimized away.

#include "shared/logits.wgsl"

const WG: u32 = 256u;
const GROUP: u32 = 4u;
const EXP_SHIFT: f32 = 64.0;

@group(0) @binding(2) var<storage, read_write> out_sums: array<f32>;
// The bound logits range again, as 4-word vectors, read by the VEC4_LOADS
// variant (f32 rows on a 16-byte boundary), as the sampler does.
@group(0) @binding(3) var<storage, read> logits_vec4: array<vec4<u32>>;

var<workgroup> w_sum: array<f32, WG>;

@compute @workgroup_size(256)
fn read_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wid.x;
    let vocab = chunk.vocab;
    // Four independent sums, so the loop is bound by loads, not by the
    // latency of one chain of additions. The f32 group load is written out
    // here (not a shared helper): on a CPU adapter the helper form read more
    // slowly, and this kernel must be the fastest plain read we can write.
    // 16-bit groups share the sampler's `load_half_group` (two word loads;
    // not timed against a written-out copy).
    var sum = vec4<f32>(0.0);
    for (var g = t; g * GROUP < vocab; g += WG) {
        let base = g * GROUP;
        if base + GROUP <= vocab {
            var v: vec4<f32>;
            if VEC4_LOADS {
                v = bitcast<vec4<f32>>(logits_vec4[(chunk.elem_base + row * vocab + base) >> 2u]);
            } else if LOGITS_DTYPE != DTYPE_F32 {
                v = load_half_group(row, base);
            } else {
                v = vec4<f32>(load_logit(row, base), load_logit(row, base + 1u),
                              load_logit(row, base + 2u), load_logit(row, base + 3u));
            }
            if EXP_PER_LOGIT {
                sum += exp(v - EXP_SHIFT);
            } else {
                sum += v;
            }
        } else {
            var tail = vec4<f32>(0.0);
            for (var j = 0u; base + j < vocab; j++) {
                tail[j] = load_logit(row, base + j);
                if EXP_PER_LOGIT {
                    tail[j] = exp(tail[j] - EXP_SHIFT);
                }
            }
            sum += tail;
        }
    }
    w_sum[t] = (sum.x + sum.y) + (sum.z + sum.w);
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride {
            w_sum[t] = w_sum[t] + w_sum[t + stride];
        }
    }
    if t == 0u {
        out_sums[chunk.row_base + row] = w_sum[0];
    }
}
