// The interface of `shared/subgroups.wgsl` for a device without the
// subgroup feature: reductions always take their workgroup form.

struct Invocation {
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) index: u32,
}

const fold_by_subgroups: bool = false;
// The workgroup memory of the subgroup form's check, kept so that both
// forms use the same bytes (the host budgets one figure).
var<workgroup> subgroup_misfit: atomic<u32>;
var<workgroup> subgroups_fit: u32;

fn init_subgroup_folds(inv: Invocation, invocations: u32, wanted: bool) {
    if wanted && inv.index == invocations {
        // (Never true: keeps the check's memory in the module.)
        subgroups_fit = atomicLoad(&subgroup_misfit);
    }
}

fn subgroup_leaf() -> u32 {
    return 0u;
}

fn shuffle_xor_f32x2(v: vec2<f32>, mask: u32) -> vec2<f32> {
    return v;
}

fn shuffle_xor_u32(v: u32, mask: u32) -> u32 {
    return v;
}
