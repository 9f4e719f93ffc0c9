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
// The bound logits range again, as 4-word vectors, read when the record says
// so (f32 rows on a 16-byte boundary), as the sampler does.
@group(0) @binding(3) var<storage, read> logits_vec4: array<vec4<u32>>;

var<workgroup> w_sum: array<f32, WG>;

// Logits base..base+3 of `row` (0 past the row's end), or their exp(l - 64).
// The f32 group load is written out here as in the sampler; 16-bit groups
// share the sampler's `load_half_group` (two word loads).
fn load_group(row: u32, base: u32, vocab: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if base + GROUP <= vocab {
        if vec4_loads() {
            v = bitcast<vec4<f32>>(logits_vec4[(chunk.elem_base + row * vocab + base) >> 2u]);
        } else if logits_dtype() != DTYPE_F32 {
            v = load_half_group(row, base);
        } else {
            v = vec4<f32>(load_logit(row, base), load_logit(row, base + 1u),
                          load_logit(row, base + 2u), load_logit(row, base + 3u));
        }
        if EXP_PER_LOGIT {
            v = exp(v - EXP_SHIFT);
        }
    } else {
        for (var j = 0u; base + j < vocab; j++) {
            v[j] = load_logit(row, base + j);
            if EXP_PER_LOGIT {
                v[j] = exp(v[j] - EXP_SHIFT);
            }
        }
    }
    return v;
}

@compute @workgroup_size(256)
fn read_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wid.x;
    let vocab = chunk.vocab;
    // Four independent sums, so the loop is bound by loads, not by the
    // latency of one chain of additions; two groups are loaded before
    // either is added (twice the loads in flight, the sums in the same
    // order), as the sampler's first pass does.
    var sum = vec4<f32>(0.0);
    for (var g = t; g * GROUP < vocab; g += 2u * WG) {
        let second = (g + WG) * GROUP < vocab;
        var pair = array<vec4<f32>, 2>(load_group(row, g * GROUP, vocab),
                                       load_group(row, select(g, g + WG, second) * GROUP, vocab));
        sum += pair[0];
        if second {
            sum += pair[1];
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
