// The reductions of `shared/fold.wgsl` over given values, one workgroup per
// 256: exposes their fixed shape, so both forms on a device and the twin's
// `tree_fold` can be checked bit for bit. Workgroups with y = 1 fold by
// subgroups where the device can.

const WG: u32 = 256u;

#include "shared/fold.wgsl"

// Per value: (max bits, mass bits, count, 0).
@group(0) @binding(0) var<storage, read> fold_inputs: array<vec4<u32>>;
// Per workgroup (x, y), at 2 (y * groups + x): the `reduce_stats` result
// (max bits, mass bits, count sum, 1 when folded by subgroups), then the
// `reduce_sums` result of the same values (Σ max, Σ mass, count sum, 0).
@group(0) @binding(1) var<storage, read_write> fold_outputs: array<vec4<u32>>;

@compute @workgroup_size(256)
fn fold_values(inv: Invocation) {
    let t = inv.index;
    init_subgroup_folds(inv, WG, inv.workgroup.y == 1u);
    let groups = arrayLength(&fold_inputs) / WG;
    let v = fold_inputs[inv.workgroup.x * WG + t];
    red_f[t] = bitcast<f32>(v.x);
    red_g[t] = bitcast<f32>(v.y);
    red_u[t] = v.z;
    let stats = reduce_stats(t);
    red_f[t] = bitcast<f32>(v.x);
    red_g[t] = bitcast<f32>(v.y);
    red_u[t] = v.z;
    let sums = reduce_sums(t);
    if t == 0u {
        let out = 2u * (inv.workgroup.y * groups + inv.workgroup.x);
        fold_outputs[out] = vec4<u32>(bitcast<u32>(stats.f0), bitcast<u32>(stats.f1), stats.u0,
                                      select(0u, 1u, fold_by_subgroups));
        fold_outputs[out + 1u] = vec4<u32>(bitcast<u32>(sums.f0), bitcast<u32>(sums.f1), sums.u0, 0u);
    }
}
