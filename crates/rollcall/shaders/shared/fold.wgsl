// The reductions over a workgroup's WG = 256 values (one a stream, in
// red_f, red_g, red_u), shared by the sampling kernels and checked against
// the twin's `math::fold::tree_fold` by `fold_values.wgsl`. The includer
// defines WG.

#include "shared/subgroups.wgsl"

// Reduction results, written by invocation 0 and read by all in one
// uniform load.
struct Broadcast {
    f0: f32,
    f1: f32,
    u0: u32,
    u1: u32,
}

// Values to reduce, one an invocation.
var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_g: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> broadcast: Broadcast;

// Two (max, mass) states combined (the later one second), as the row
// reduction does.
fn merge_state(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    if a.y == 0.0 {
        return b;
    }
    if b.y == 0.0 {
        return a;
    }
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// The float reductions over the workgroup's 256 values (one a stream) all
// fold the same complete binary tree, neighbours first (values 2i and
// 2i + 1, then pairs of pairs, ...; the lower half is always the left
// operand), as the twin's `tree_fold`. Two forms give its bits: FOLD
// lanes each fold a 16-value subtree in registers, then invocation 0 folds
// their 16 results; or, with subgroups, every lane folds 8-value subtrees
// across its subgroup by shuffles and invocation 0 folds the 32 results.
// Either way 3 barriers and a tree of depth 8 (a sequential fold of the
// same values is 30 steps deep). Integer sums and the arg-max folds are
// order-free. Each reduction ends in a barrier after its last read of
// red_*, so callers may write red_* again right after one.
const FOLD: u32 = 16u;

// Results of the subgroup form's 8-value subtrees.
var<workgroup> octet_f: array<f32, 32>;
var<workgroup> octet_g: array<f32, 32>;
var<workgroup> octet_u: array<u32, 32>;

// The (max, mass) tree over 16 states in registers.
fn tree_states(leaves: array<vec2<f32>, 16>) -> vec2<f32> {
    var a = leaves;
    for (var step = 1u; step < 16u; step *= 2u) {
        for (var j = 0u; j < 16u; j += 2u * step) {
            a[j] = merge_state(a[j], a[j + step]);
        }
    }
    return a[0];
}

// The sum tree over 16 pairs in registers.
fn tree_sums(leaves: array<vec2<f32>, 16>) -> vec2<f32> {
    var a = leaves;
    for (var step = 1u; step < 16u; step *= 2u) {
        for (var j = 0u; j < 16u; j += 2u * step) {
            a[j] = a[j] + a[j + step];
        }
    }
    return a[0];
}

// The first level of a reduction, between its first two barriers: the
// subtrees of 16 values (red_f, red_g at every 16th place), or with
// subgroups of 8 (octet_*). `sums` picks the sum tree over the state tree.
fn fold_first_level(t: u32, sums: bool) {
    if fold_by_subgroups {
        // The lane's leaf; partners differ in one of its low three bits.
        let leaf = subgroup_leaf();
        var v = vec2<f32>(red_f[leaf], red_g[leaf]);
        var u = red_u[leaf];
        for (var bit = 1u; bit < 8u; bit *= 2u) {
            let other = shuffle_xor_f32x2(v, bit);
            u += shuffle_xor_u32(u, bit);
            let low = (leaf & bit) == 0u;
            let left = select(other, v, low);
            let right = select(v, other, low);
            if sums {
                v = left + right;
            } else {
                v = merge_state(left, right);
            }
        }
        if (leaf & 7u) == 0u {
            octet_f[leaf / 8u] = v.x;
            octet_g[leaf / 8u] = v.y;
            octet_u[leaf / 8u] = u;
        }
    } else if t < FOLD {
        var leaves: array<vec2<f32>, 16>;
        var u = 0u;
        for (var j = 0u; j < 16u; j++) {
            leaves[j] = vec2<f32>(red_f[t * FOLD + j], red_g[t * FOLD + j]);
            u += red_u[t * FOLD + j];
        }
        var v: vec2<f32>;
        if sums {
            v = tree_sums(leaves);
        } else {
            v = tree_states(leaves);
        }
        red_f[t * FOLD] = v.x;
        red_g[t * FOLD] = v.y;
        red_u[t * FOLD] = u;
    }
}

// The top of a reduction, on invocation 0 after the second barrier: the 16
// subtrees' results (from 32 octets with subgroups) and their total u.
fn fold_top_level(sums: bool) -> Broadcast {
    var leaves: array<vec2<f32>, 16>;
    var u = 0u;
    for (var j = 0u; j < 16u; j++) {
        if fold_by_subgroups {
            let left = vec2<f32>(octet_f[2u * j], octet_g[2u * j]);
            let right = vec2<f32>(octet_f[2u * j + 1u], octet_g[2u * j + 1u]);
            if sums {
                leaves[j] = left + right;
            } else {
                leaves[j] = merge_state(left, right);
            }
            u += octet_u[2u * j] + octet_u[2u * j + 1u];
        } else {
            leaves[j] = vec2<f32>(red_f[j * FOLD], red_g[j * FOLD]);
            u += red_u[j * FOLD];
        }
    }
    var v: vec2<f32>;
    if sums {
        v = tree_sums(leaves);
    } else {
        v = tree_states(leaves);
    }
    return Broadcast(v.x, v.y, u, 0u);
}

// Row (max, mass) of the stream states (max in red_f, mass in red_g) and the
// sum of red_u, to every invocation.
fn reduce_stats(t: u32) -> Broadcast {
    workgroupBarrier();
    fold_first_level(t, false);
    workgroupBarrier();
    if t == 0u {
        broadcast = fold_top_level(false);
    }
    return workgroupUniformLoad(&broadcast);
}
// The row's Σz (f0), Σz² (f1) and finite count (u0) from the streams' (in
// red_f, red_g, red_u), folded in the shape of `reduce_stats`.
fn reduce_sums(t: u32) -> Broadcast {
    workgroupBarrier();
    fold_first_level(t, true);
    workgroupBarrier();
    if t == 0u {
        broadcast = fold_top_level(true);
    }
    return workgroupUniformLoad(&broadcast);
}
