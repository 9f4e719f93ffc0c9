//! The sampling kernels' reductions (`shaders/shared/fold.wgsl`) fold one
//! fixed tree in both forms: across subgroups where the device has them,
//! in registers and workgroup memory otherwise. Both forms give the same
//! bits on the device, the sums are the twin's `tree_fold` bit for bit, and
//! the data tell that tree from other orders.

mod common;

use rand::Rng;
use rollcall::internals::{tree_fold, FoldValues, FoldedValues, FOLD_WIDTH};

/// The twin's (max, mass) merge, with the host's `exp` (an ulp from the
/// device's).
fn merge(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    if a[1] == 0.0 {
        return b;
    }
    if b[1] == 0.0 {
        return a;
    }
    let m = a[0].max(b[0]);
    [m, a[1] * (a[0] - m).exp() + b[1] * (b[0] - m).exp()]
}

fn add(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    [a[0] + b[0], a[1] + b[1]]
}

/// Runs of stream-like states: maxima over a wide range, masses from 0
/// (an empty stream, maximum f32::MIN) to 10⁶, values of mixed sign and
/// magnitude so that the order of adding shows in the bits.
fn runs(rng: &mut impl Rng, runs: usize) -> (Vec<[f32; 2]>, Vec<u32>) {
    let n = runs * FOLD_WIDTH;
    let mut states = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    for i in 0..n {
        let kind = (i / FOLD_WIDTH) % 4;
        // Mixed signs and magnitudes: sums round differently in another order.
        let spread = rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-3..4));
        let state = match rng.random_range(0..10) {
            0 => [f32::MIN, 0.0],
            _ if kind == 0 => [spread, rng.random_range(0.5..4.0)],
            _ if kind == 1 => [spread.clamp(-60.0, 60.0), rng.random_range(0.0..1e6)],
            _ if kind == 2 => [
                spread * 10.0,
                rng.random_range(1.0..2.0) * 10f32.powi(rng.random_range(-6..6)),
            ],
            _ => [
                spread.clamp(-20.0, 20.0),
                f32::from_bits(rng.random_range(1..0x0080_0000)),
            ],
        };
        states.push(state);
        counts.push(rng.random_range(0..1000));
    }
    (states, counts)
}

fn sequential(values: &[[f32; 2]], f: impl Fn([f32; 2], [f32; 2]) -> [f32; 2]) -> [f32; 2] {
    values[1..].iter().fold(values[0], |a, &b| f(a, b))
}

/// The tree with the halves' partners first (i with i + 128, ...): the
/// shape a subgroup fold over invocation order would take on a driver that
/// numbers lanes otherwise.
fn halves_first(values: &[[f32; 2]], f: impl Fn([f32; 2], [f32; 2]) -> [f32; 2]) -> [f32; 2] {
    let mut level = values.to_vec();
    while level.len() > 1 {
        let half = level.len() / 2;
        level = (0..half).map(|i| f(level[i], level[i + half])).collect();
    }
    level[0]
}

fn bits(v: [f32; 2]) -> [u32; 2] {
    [v[0].to_bits(), v[1].to_bits()]
}

#[test]
fn both_forms_fold_the_twins_tree() {
    let Some(ctx) = common::gpu() else { return };
    let folds = FoldValues::new(&ctx).unwrap();
    let mut rng = common::rng(31);
    let run_count = 64;
    let (states, counts) = runs(&mut rng, run_count);
    let (workgroup, subgroups) = folds.fold(&states, &counts).unwrap();
    assert_eq!((workgroup.len(), subgroups.len()), (run_count, run_count));

    // Where the device has subgroups of 8 lanes or more (lavapipe: 8), the
    // subgroup form must have run: otherwise this test would compare the
    // workgroup form with itself.
    let info = ctx.adapter_info();
    let subgroups_expected =
        ctx.features().contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 8;
    eprintln!(
        "{}: subgroups {}-{} lanes, subgroup form expected: {subgroups_expected}",
        info.name, info.subgroup_min_size, info.subgroup_max_size
    );
    let (mut orders_told, mut halves_told) = (0, 0);
    for r in 0..run_count {
        let run = &states[r * FOLD_WIDTH..(r + 1) * FOLD_WIDTH];
        let w: FoldedValues = workgroup[r];
        let s: FoldedValues = subgroups[r];
        assert!(!w.by_subgroups, "run {r}: the workgroup form was asked for");
        assert_eq!(s.by_subgroups, subgroups_expected, "run {r}");
        // Same bits in both forms, the merged states included.
        assert_eq!(
            w,
            FoldedValues {
                by_subgroups: false,
                ..s
            },
            "run {r}"
        );
        // The counts' total.
        let total: u32 = counts[r * FOLD_WIDTH..(r + 1) * FOLD_WIDTH].iter().sum();
        assert_eq!(w.count, total, "run {r}");
        // Sums: the twin's tree, bit for bit.
        let twin_sums = tree_fold(run, add);
        assert_eq!(w.sum_bits, bits(twin_sums), "run {r}: sums {twin_sums:?}");
        // Merged states: the twin's tree up to the host's exp.
        let twin = tree_fold(run, merge);
        let got = [
            f32::from_bits(w.state_bits[0]),
            f32::from_bits(w.state_bits[1]),
        ];
        assert_eq!(got[0].to_bits(), twin[0].to_bits(), "run {r}: maximum");
        assert!(
            (got[1] - twin[1]).abs() <= 1e-5 * twin[1].abs(),
            "run {r}: mass {} vs twin {}",
            got[1],
            twin[1]
        );
        orders_told += usize::from(bits(sequential(run, add)) != bits(twin_sums));
        halves_told += usize::from(bits(halves_first(run, add)) != bits(twin_sums));
    }
    // The data tell the tree from a sequential fold and from another tree
    // in many runs, so a form folding in another order would fail above.
    eprintln!("sequential told apart in {orders_told} runs, halves-first in {halves_told}");
    assert!(orders_told > run_count / 4, "{orders_told} of {run_count}");
    assert!(halves_told > run_count / 4, "{halves_told} of {run_count}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(ctx) = common::gpu() else { return };
    let folds = FoldValues::new(&ctx).unwrap();
    for (states, counts) in [(0, 0), (255, 255), (256, 255), (257, 257)] {
        let err = folds
            .fold(&vec![[0.0, 0.0]; states], &vec![0; counts])
            .unwrap_err();
        assert!(
            matches!(err, rollcall::Error::InvalidArgument(_)),
            "{states}, {counts}: {err}"
        );
    }
}
