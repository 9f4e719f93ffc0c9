// The reductions' subgroup form, for a device with the subgroup feature.
// `shared/no_subgroups.wgsl` is the same interface without subgroup
// operations (the host includes one or the other as this file); a kernel
// takes its invocation as an `Invocation` and calls `init_subgroup_folds`
// first, in uniform control flow.

struct Invocation {
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_invocation_id) subgroup_lane: u32,
    @builtin(subgroup_size) subgroup_size: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

// Whether this workgroup's reductions fold by subgroups, and the value
// (leaf) this lane folds then.
var<private> fold_by_subgroups: bool;
var<private> lane_leaf: u32;
var<workgroup> subgroup_misfit: atomic<u32>;
var<workgroup> subgroups_fit: u32;

// Decides for the whole workgroup: subgroups fold when `wanted` (uniform)
// and every subgroup is full with a multiple of 8 lanes, so that subgroup
// × size + lane is a permutation of the invocations and a lane's partners
// in the low three bits of its leaf are in its subgroup. Whatever the
// subgroup size, the tree folded is the same. Two barriers when wanted.
fn init_subgroup_folds(inv: Invocation, invocations: u32, wanted: bool) {
    fold_by_subgroups = false;
    lane_leaf = inv.subgroup * inv.subgroup_size + inv.subgroup_lane;
    if wanted {
        let fits = inv.subgroup_size % 8u == 0u && inv.subgroup_size * inv.subgroups == invocations;
        if !fits {
            atomicOr(&subgroup_misfit, 1u);
        }
        workgroupBarrier();
        if inv.index == 0u {
            subgroups_fit = select(0u, 1u, atomicLoad(&subgroup_misfit) == 0u);
        }
        fold_by_subgroups = workgroupUniformLoad(&subgroups_fit) != 0u;
    }
}

fn subgroup_leaf() -> u32 {
    return lane_leaf;
}

fn shuffle_xor_f32x2(v: vec2<f32>, mask: u32) -> vec2<f32> {
    return subgroupShuffleXor(v, mask);
}

fn shuffle_xor_u32(v: u32, mask: u32) -> u32 {
    return subgroupShuffleXor(v, mask);
}
