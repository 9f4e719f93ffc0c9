//! Tail kernels on the GPU against their CPU twin on random ragged batches:
//! the order exactly, the estimators to rounding, and the estimate routes
//! (an invocation or a workgroup per segment) against each other bit for
//! bit.

mod common;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rollcall::internals::EstimateRoute;
use rollcall::tail::{cpu, Estimates, Estimator, SegmentStatus, TailStats, NO_INDEX};

/// Segment sizes that stress the kernels: empty, one, around the workgroup
/// (256), the per-pass chunk (2048) and the tile (1024), and 4096.
const AWKWARD_SIZES: &[u32] = &[
    0, 1, 2, 3, 4, 5, 7, 8, 16, 31, 64, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049, 4096,
];

#[derive(Clone, Copy, Debug)]
enum Population {
    Gaussian,
    /// Few distinct values: ties everywhere.
    Ties,
    /// 0/1 rewards.
    Binary,
    /// Exponential (a heavier tail).
    Exponential,
    /// Gaussian with ±0, ±inf mixed in (order tests only).
    Special,
}

fn draw(rng: &mut ChaCha8Rng, population: Population) -> f32 {
    match population {
        Population::Gaussian => {
            let u: f32 = rng.random_range(1e-7..1.0);
            let v: f32 = rng.random();
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos() * 3.0 + 1.0
        }
        Population::Ties => rng.random_range(0..4) as f32 * 0.5,
        Population::Binary => rng.random_range(0..2) as f32,
        Population::Exponential => -rng.random_range(1e-7f32..1.0).ln(),
        Population::Special => match rng.random_range(0..8) {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => 0.0,
            3 => -0.0,
            _ => rng.random_range(-2.0..2.0),
        },
    }
}

fn batch(rng: &mut ChaCha8Rng, sizes: &[u32], population: Population) -> (Vec<f32>, Vec<u32>) {
    let mut offsets = vec![0u32];
    let mut rewards = Vec::new();
    for &m in sizes {
        for _ in 0..m {
            rewards.push(draw(rng, population));
        }
        offsets.push(rewards.len() as u32);
    }
    (rewards, offsets)
}

fn random_sizes(rng: &mut ChaCha8Rng, segments: usize, max: u32) -> Vec<u32> {
    (0..segments)
        .map(|_| {
            if rng.random_bool(0.2) {
                AWKWARD_SIZES[rng.random_range(0..AWKWARD_SIZES.len())].min(max)
            } else {
                rng.random_range(0..=64)
            }
        })
        .collect()
}

#[test]
fn order_and_top_k_match_the_twin_exactly() {
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap();
    let mut rng = common::rng(41);
    for (round, population) in [
        Population::Gaussian,
        Population::Ties,
        Population::Special,
        Population::Binary,
    ]
    .into_iter()
    .enumerate()
    {
        let mut sizes = AWKWARD_SIZES.to_vec();
        sizes.extend(random_sizes(&mut rng, 300, 4096));
        let (rewards, offsets) = batch(&mut rng, &sizes, population);
        let gpu = tail.order(&rewards, &offsets).unwrap();
        let twin = cpu::order(&rewards, &offsets).unwrap();
        assert_eq!(gpu.ranks, twin.ranks, "ranks, {population:?}");
        assert_eq!(gpu.sorted_index, twin.sorted_index, "order, {population:?}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&gpu.sorted_values), bits(&twin.sorted_values));
        // Sortedness and stability, checked independently of the twin.
        for w in offsets.windows(2) {
            let (s, e) = (w[0] as usize, w[1] as usize);
            for p in s + 1..e {
                let (a, b) = (twin.sorted_values[p - 1], twin.sorted_values[p]);
                assert!(a >= b || (a == 0.0 && b == 0.0), "not descending");
                if a == b {
                    assert!(
                        twin.sorted_index[p - 1] < twin.sorted_index[p],
                        "not stable"
                    );
                }
            }
        }
        for k in [1u32, 3, 16, 300] {
            let gpu = tail.top_k(&rewards, &offsets, k).unwrap();
            let twin = cpu::top_k(&rewards, &offsets, k).unwrap();
            assert_eq!(gpu.indices, twin.indices, "top-{k}, {population:?}");
            assert_eq!(bits(&gpu.values), bits(&twin.values), "top-{k} values");
            assert_eq!(gpu.ranks, twin.ranks);
        }
        eprintln!(
            "order round {round} ({population:?}): {} rewards",
            rewards.len()
        );
    }
}

#[test]
fn many_segments_use_a_two_dimensional_grid() {
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap().with_grid_width(7);
    let mut rng = common::rng(42);
    let mut sizes = random_sizes(&mut rng, 5000, 300);
    // More large segments (one workgroup each) than the grid is wide.
    sizes.extend([1500; 10]);
    let (rewards, offsets) = batch(&mut rng, &sizes, Population::Ties);
    let gpu = tail.order(&rewards, &offsets).unwrap();
    assert_eq!(gpu, cpu::order(&rewards, &offsets).unwrap());
    let top = tail.top_k(&rewards, &offsets, 40).unwrap();
    assert_eq!(top, cpu::top_k(&rewards, &offsets, 40).unwrap());
    let est = Estimator::Tea { n: 64, alpha: 0.25 };
    let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
    let twin = cpu::estimate(&rewards, &offsets, est).unwrap();
    compare(
        "TEA on a 2-D grid",
        &rewards,
        &offsets,
        &gpu,
        &twin,
        1e-4,
        false,
    );
}

#[test]
fn longest_segment_and_extreme_values() {
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap();
    let mut rng = common::rng(44);
    // One segment of MAX_SEGMENT rewards beside small ones.
    let sizes = [3, rollcall::tail::MAX_SEGMENT, 5];
    let (rewards, offsets) = batch(&mut rng, &sizes, Population::Ties);
    assert_eq!(
        tail.order(&rewards, &offsets).unwrap(),
        cpu::order(&rewards, &offsets).unwrap()
    );
    for est in [
        Estimator::Tea {
            n: 128,
            alpha: 0.25,
        },
        Estimator::ExpectedMax { n: 512 },
    ] {
        let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
        let twin = cpu::estimate(&rewards, &offsets, est).unwrap();
        compare(
            &format!("{est:?}, longest"),
            &rewards,
            &offsets,
            &gpu,
            &twin,
            1e-4,
            false,
        );
    }
    // Huge, tiny and subnormal finite rewards: the order is exact and the
    // estimators agree with the twin.
    let extremes = [
        f32::MAX,
        -f32::MAX,
        1e30,
        -1e30,
        1e-30,
        f32::MIN_POSITIVE,
        1e-42,
        -1e-42,
        0.0,
        -0.0,
    ];
    let rewards: Vec<f32> = (0..400)
        .map(|i| extremes[(i * 7) % extremes.len()])
        .collect();
    let offsets = [0u32, 10, 17, 100, 400];
    assert_eq!(
        tail.order(&rewards, &offsets).unwrap(),
        cpu::order(&rewards, &offsets).unwrap()
    );
    let small: Vec<f32> = rewards
        .iter()
        .map(|&r| r.clamp(-1e30, 1e30) * 1e-8)
        .collect();
    for est in [
        Estimator::ExpectedMax { n: 4 },
        Estimator::Tea { n: 64, alpha: 0.25 },
        Estimator::Gpd { n: 64, alpha: 0.25 },
        Estimator::Grpo { eps: 1e-4 },
    ] {
        let gpu = tail.estimate(&small, &offsets, est).unwrap();
        let twin = cpu::estimate(&small, &offsets, est).unwrap();
        assert_eq!(gpu.status, twin.status, "{est:?}");
        for (g, c) in gpu.values.iter().zip(&twin.values) {
            assert!(
                g.to_bits() == c.to_bits() || (g - c).abs() <= 1e-4 * c.abs(),
                "{est:?}: {g} vs {c}"
            );
        }
    }
}

/// Largest |GPU − twin| relative to the segment's scale, over values and
/// advantages.
fn compare(
    name: &str,
    rewards: &[f32],
    offsets: &[u32],
    gpu: &rollcall::tail::Estimates,
    twin: &rollcall::tail::Estimates,
    tolerance: f32,
    jackknife: bool,
) {
    assert_eq!(gpu.status, twin.status, "{name}: status");
    for (s, w) in offsets.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let scale = rewards[start..end]
            .iter()
            .chain(&twin.advantages[start..end])
            .chain(std::iter::once(&twin.values[s]))
            .filter(|x| x.is_finite())
            .fold(1.0f32, |a, &x| a.max(x.abs()));
        let (g, c) = (gpu.values[s], twin.values[s]);
        assert!(
            (g.is_nan() && c.is_nan()) || (g - c).abs() <= tolerance * scale,
            "{name}: segment {s} (m = {}) value {g} vs twin {c}",
            end - start
        );
        // The GPD's jackknife advantages are differences of moments scaled
        // by m − 1: f32 rounding (and the GPU's fused multiply-adds) shows at
        // about 1e-4 of the segment's scale past m = 1000 (both sides are
        // that close to an exact refit: `tail_estimators.rs`).
        let amplified = if jackknife { 1e-3 * scale } else { 0.0 };
        for i in start..end {
            let (g, c) = (gpu.advantages[i], twin.advantages[i]);
            assert!(
                (g - c).abs() <= tolerance * scale + amplified,
                "{name}: segment {s} (m = {}) rollout {} advantage {g} vs twin {c}",
                end - start,
                i - start
            );
        }
    }
}

#[test]
fn estimators_match_the_twin_on_ragged_batches() {
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap();
    let mut rng = common::rng(43);
    let estimators = [
        Estimator::ExpectedMax { n: 1 },
        Estimator::ExpectedMax { n: 8 },
        Estimator::ExpectedMax { n: 64 },
        Estimator::PassAtK {
            k: 4,
            threshold: 0.5,
        },
        Estimator::PassAtK {
            k: 1,
            threshold: 0.5,
        },
        Estimator::Tea {
            n: 128,
            alpha: 0.25,
        },
        Estimator::Tea { n: 512, alpha: 0.1 },
        Estimator::PrefixTea {
            n: 128,
            alpha: 0.25,
            prefixes: 4,
        },
        Estimator::PrefixTea {
            n: 256,
            alpha: 0.3,
            prefixes: 2,
        },
        Estimator::Gpd {
            n: 128,
            alpha: 0.25,
        },
        Estimator::Gpd {
            n: 1000,
            alpha: 0.1,
        },
        Estimator::Grpo { eps: 1e-4 },
    ];
    for population in [
        Population::Gaussian,
        Population::Ties,
        Population::Binary,
        Population::Exponential,
    ] {
        let mut sizes = AWKWARD_SIZES.to_vec();
        sizes.extend(random_sizes(&mut rng, 200, 4096));
        let (rewards, offsets) = batch(&mut rng, &sizes, population);
        for est in estimators {
            let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
            let twin = cpu::estimate(&rewards, &offsets, est).unwrap();
            // Rounding differences only (GPU exp/log and fused multiply-adds).
            compare(
                &format!("{est:?} on {population:?}"),
                &rewards,
                &offsets,
                &gpu,
                &twin,
                1e-4,
                matches!(est, Estimator::Gpd { .. }),
            );
        }
    }
}

#[test]
fn degenerate_segments() {
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap();
    // Empty, one rollout, all equal, ties at the TEA threshold, k > m.
    let rewards = [
        0.7, // one
        2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, // flat
        5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 1.0, 0.0, // ties at the threshold (k = 2..)
    ];
    let offsets = [0u32, 0, 1, 9, 17, 17];
    for est in [
        Estimator::ExpectedMax { n: 4 },
        Estimator::Tea {
            n: 128,
            alpha: 0.25,
        },
        Estimator::PrefixTea {
            n: 128,
            alpha: 0.25,
            prefixes: 4,
        },
        Estimator::Gpd {
            n: 128,
            alpha: 0.25,
        },
        Estimator::PassAtK {
            k: 4,
            threshold: 2.5,
        },
        Estimator::Grpo { eps: 1e-4 },
    ] {
        let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
        let twin = cpu::estimate(&rewards, &offsets, est).unwrap();
        compare(
            &format!("{est:?}"),
            &rewards,
            &offsets,
            &gpu,
            &twin,
            1e-5,
            true,
        );
        assert_eq!(gpu.status[0], SegmentStatus::Empty);
        assert_eq!(gpu.status[4], SegmentStatus::Empty);
        assert!(gpu.values[0].is_nan() && gpu.values[4].is_nan());
        // One rollout: too few for every tail estimator (GRPO: flat, 0).
        match est {
            Estimator::Grpo { .. } => {
                assert_eq!(gpu.status[1], SegmentStatus::Flat);
                assert_eq!(gpu.advantages[0], 0.0);
            }
            _ => assert_eq!(gpu.status[1], SegmentStatus::TooFew, "{est:?}"),
        }
        // All equal: the value is the level, no advantage anywhere.
        let level = gpu.values[2];
        match est {
            Estimator::PassAtK { .. } => assert_eq!(level, 0.0),
            // Prefix-TEA's f32 weights sum to 1 within a few ulps.
            _ => assert!((level - 2.0).abs() < 1e-5, "{est:?}: flat value {level}"),
        }
        let flat = &gpu.advantages[1..9];
        match est {
            // PKPO's weights carry no baseline: equal rewards, equal weights.
            Estimator::ExpectedMax { .. } => assert!(flat.iter().all(|&a| a == flat[0])),
            _ => assert!(flat.iter().all(|&a| a.abs() < 1e-5), "{est:?}: {flat:?}"),
        }
    }
    // Ties at the TEA threshold (k = 2: threshold 4.0, then a tie at 3.0
    // for k = 3): every tied rollout gets the same advantage.
    let est = Estimator::Tea {
        n: 128,
        alpha: 0.375,
    };
    let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
    let tied = &gpu.advantages[11..15];
    assert!(tied.iter().all(|&a| a == tied[0]), "{tied:?}");
    assert_eq!(tied[0], 0.0, "a reward at the threshold gets 0");
    // PKPO: equal rewards share credit.
    let gpu = tail
        .estimate(&rewards, &offsets, Estimator::ExpectedMax { n: 4 })
        .unwrap();
    let tied = &gpu.advantages[11..15];
    assert!(tied.iter().all(|&a| a == tied[0]), "{tied:?}");
    // Top-k wider than a segment pads.
    let top = tail.top_k(&rewards, &offsets, 3).unwrap();
    assert_eq!(&top.indices[3..6], &[0, NO_INDEX, NO_INDEX]);
    assert_eq!(top.values[4], f32::NEG_INFINITY);
}

#[test]
fn bad_input_is_refused_before_gpu_work() {
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap();
    use rollcall::Error;
    let est = Estimator::Tea { n: 8, alpha: 0.25 };
    assert!(matches!(
        tail.estimate(&[1.0, f32::NAN], &[0, 2], est),
        Err(Error::NonFiniteReward { index: 1, .. })
    ));
    assert!(matches!(
        tail.estimate(&[1.0, f32::INFINITY], &[0, 2], est),
        Err(Error::NonFiniteReward { index: 1, .. })
    ));
    assert!(tail.order(&[1.0, f32::INFINITY], &[0, 2]).is_ok());
    assert!(matches!(
        tail.order(&[f32::NAN], &[0, 1]),
        Err(Error::NonFiniteReward { index: 0, .. })
    ));
    for offsets in [&[][..], &[1, 2][..], &[0, 2, 1, 2][..], &[0, 1][..]] {
        assert!(
            matches!(
                tail.estimate(&[1.0, 2.0], offsets, est),
                Err(Error::InvalidSegment { .. })
            ),
            "{offsets:?}"
        );
    }
    let long = vec![0.0; rollcall::tail::MAX_SEGMENT as usize + 1];
    assert!(matches!(
        tail.order(&long, &[0, long.len() as u32]),
        Err(Error::InvalidSegment { .. })
    ));
    for bad in [
        Estimator::ExpectedMax { n: 0 },
        Estimator::Tea { n: 8, alpha: 0.0 },
        Estimator::Gpd {
            n: 8,
            alpha: f32::NAN,
        },
        Estimator::PrefixTea {
            n: 8,
            alpha: 0.25,
            prefixes: 9,
        },
        Estimator::PassAtK {
            k: 0,
            threshold: 0.5,
        },
        Estimator::Grpo { eps: -1.0 },
    ] {
        assert!(
            matches!(
                tail.estimate(&[1.0, 2.0], &[0, 2], bad),
                Err(Error::InvalidEstimator(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        tail.top_k(&[1.0], &[0, 1], 0),
        Err(Error::InvalidArgument(_))
    ));
    // The engine path estimates only an uploaded batch: order and top_k
    // replace it.
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    tail.upload(&[1.0, 2.0], &[0, 2]).unwrap();
    tail.top_k(&[1.0, f32::INFINITY], &[0, 2], 1).unwrap();
    assert!(matches!(
        tail.encode_estimate(&mut encoder, est),
        Err(Error::NothingUploaded(_))
    ));
    tail.upload(&[1.0, 2.0], &[0, 2]).unwrap();
    assert!(tail.encode_estimate(&mut encoder, est).is_ok());
    // The empty batch is fine.
    let empty = tail.estimate(&[], &[0], est).unwrap();
    assert!(empty.values.is_empty() && empty.advantages.is_empty());
    let empty = tail.order(&[], &[0, 0, 0]).unwrap();
    assert!(empty.ranks.is_empty());
}

/// Every estimator the route tests run (each kind, small and large N, α and
/// prefixes).
fn route_estimators() -> Vec<Estimator> {
    vec![
        Estimator::ExpectedMax { n: 1 },
        Estimator::ExpectedMax { n: 8 },
        Estimator::ExpectedMax { n: 64 },
        Estimator::PassAtK {
            k: 4,
            threshold: 0.5,
        },
        Estimator::PassAtK {
            k: 1,
            threshold: 0.5,
        },
        Estimator::Tea {
            n: 128,
            alpha: 0.25,
        },
        Estimator::Tea { n: 512, alpha: 0.1 },
        Estimator::PrefixTea {
            n: 128,
            alpha: 0.25,
            prefixes: 4,
        },
        Estimator::PrefixTea {
            n: 256,
            alpha: 0.6,
            prefixes: 8,
        },
        Estimator::Gpd {
            n: 128,
            alpha: 0.25,
        },
        Estimator::Gpd {
            n: 1000,
            alpha: 0.1,
        },
        Estimator::Grpo { eps: 1e-4 },
        Estimator::Grpo { eps: 0.0 },
    ]
}

/// One `TailStats` per estimate route (Auto: the adapter's choice).
fn every_estimate_route(ctx: &rollcall::GpuContext) -> Vec<(EstimateRoute, TailStats)> {
    [
        EstimateRoute::Auto,
        EstimateRoute::PerInvocation,
        EstimateRoute::PerWorkgroup,
    ]
    .into_iter()
    .map(|route| {
        (
            route,
            TailStats::new(ctx).unwrap().with_estimate_route(route),
        )
    })
    .collect()
}

/// Values (NaN as NaN), statuses and advantages of `got` equal `want`'s bit
/// for bit.
fn assert_same_estimates(want: &Estimates, got: &Estimates, offsets: &[u32], context: &str) {
    assert_eq!(want.status, got.status, "{context}: status");
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for (s, w) in offsets.windows(2).enumerate() {
        let m = w[1] - w[0];
        assert!(
            same(want.values[s], got.values[s]),
            "{context}: segment {s} (m = {m}) value {} vs {}",
            want.values[s],
            got.values[s]
        );
        for i in w[0] as usize..w[1] as usize {
            assert!(
                same(want.advantages[i], got.advantages[i]),
                "{context}: segment {s} (m = {m}) rollout {} advantage {} vs {}",
                i - w[0] as usize,
                want.advantages[i],
                got.advantages[i]
            );
        }
    }
}

/// Every estimate route on ragged batches of every population: the routes
/// alike bit for bit, each against the twin to rounding (as above).
#[test]
fn estimate_routes_agree_bit_for_bit() {
    let Some(ctx) = common::gpu() else { return };
    let mut routes = every_estimate_route(&ctx);
    let mut rng = common::rng(61);
    for population in [
        Population::Gaussian,
        Population::Ties,
        Population::Binary,
        Population::Exponential,
    ] {
        let mut sizes = AWKWARD_SIZES.to_vec();
        sizes.extend([63, 65, 127, 129, 4095]);
        sizes.extend(random_sizes(&mut rng, 150, 4096));
        // Not a multiple of 64 segments.
        if sizes.len().is_multiple_of(64) {
            sizes.push(3);
        }
        sizes.shuffle(&mut rng);
        let (rewards, offsets) = batch(&mut rng, &sizes, population);
        for est in route_estimators() {
            let twin = cpu::estimate(&rewards, &offsets, est).unwrap();
            let mut first: Option<Estimates> = None;
            for (route, tail) in &mut routes {
                let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
                let context = format!("{est:?} on {population:?}, {route:?}");
                compare(
                    &context,
                    &rewards,
                    &offsets,
                    &gpu,
                    &twin,
                    1e-4,
                    matches!(est, Estimator::Gpd { .. }),
                );
                match &first {
                    Some(f) => assert_same_estimates(f, &gpu, &offsets, &context),
                    None => first = Some(gpu),
                }
            }
        }
    }
}

/// The routes at the segment shape's edges: segments of 0, 1, 2, 63, 64,
/// 65 and 4 096 rollouts, flat segments and tied tails, 67 segments over a
/// two-dimensional grid (4 workgroups along x). The estimators take finite
/// rewards only: NaN and ±inf are refused on every route before GPU work.
#[test]
fn estimate_routes_at_the_shape_edges() {
    let Some(ctx) = common::gpu() else { return };
    let mut routes: Vec<(EstimateRoute, TailStats)> = every_estimate_route(&ctx)
        .into_iter()
        .map(|(route, tail)| (route, tail.with_grid_width(4)))
        .collect();
    let mut rng = common::rng(67);
    let edges = [0u32, 1, 2, 63, 64, 65, 4096];
    for population in [Population::Gaussian, Population::Ties, Population::Binary] {
        let mut sizes: Vec<u32> = edges.iter().cycle().take(60).copied().collect();
        sizes.extend([127, 128, 129, 191, 192, 193, 4095]);
        assert_eq!(sizes.len(), 67);
        let (mut rewards, offsets) = batch(&mut rng, &sizes, population);
        // Every fifth segment flat; every seventh with a tied top quarter.
        for (s, w) in offsets.windows(2).enumerate() {
            let segment = &mut rewards[w[0] as usize..w[1] as usize];
            if s % 5 == 0 {
                segment.fill(1.5);
            } else if s % 7 == 0 {
                let top = segment.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let quarter = segment.len().div_ceil(4);
                segment[..quarter].fill(top);
            }
        }
        for est in route_estimators() {
            let twin = cpu::estimate(&rewards, &offsets, est).unwrap();
            let mut first: Option<Estimates> = None;
            for (route, tail) in &mut routes {
                let gpu = tail.estimate(&rewards, &offsets, est).unwrap();
                let context = format!("edges: {est:?} on {population:?}, {route:?}");
                compare(
                    &context,
                    &rewards,
                    &offsets,
                    &gpu,
                    &twin,
                    1e-4,
                    matches!(est, Estimator::Gpd { .. }),
                );
                match &first {
                    Some(f) => assert_same_estimates(f, &gpu, &offsets, &context),
                    None => first = Some(gpu),
                }
            }
        }
    }
    for (route, tail) in &mut routes {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = tail
                .estimate(&[0.5, bad, 1.0], &[0, 3], Estimator::Grpo { eps: 1e-4 })
                .unwrap_err();
            assert!(
                matches!(err, rollcall::Error::NonFiniteReward { index: 1, .. }),
                "{route:?}: {err:?}"
            );
        }
    }
}
