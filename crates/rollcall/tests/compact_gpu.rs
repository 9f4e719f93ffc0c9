//! GPU compaction against its CPU twin: nothing lost, nothing duplicated,
//! order kept, from 0 to 10 million flags, with the CPU adapter's blocks and
//! the GPU's (forced). Fails without an adapter unless
//! ROLLCALL_ALLOW_NO_GPU=1.

mod common;

use rand::Rng;
use rollcall::compact::{cpu::compact as compact_cpu, CompactScratch, Compactor};

/// The adapter's compactor, then each block size forced.
fn compactors(ctx: &rollcall::GpuContext) -> Vec<(&'static str, Compactor)> {
    vec![
        (
            "cpu blocks",
            Compactor::new(ctx).unwrap().with_cpu_routes(true).unwrap(),
        ),
        (
            "gpu blocks",
            Compactor::new(ctx).unwrap().with_cpu_routes(false).unwrap(),
        ),
    ]
}

fn flags(n: usize, density: f64, seed: u64) -> Vec<u32> {
    let mut rng = common::rng(seed);
    (0..n)
        .map(|_| {
            if rng.random_bool(density) {
                rng.random_range(1..u32::MAX)
            } else {
                0
            }
        })
        .collect()
}

#[test]
fn compaction_matches_the_twin_on_awkward_sizes() {
    let Some(ctx) = common::gpu() else { return };
    for (route, compactor) in compactors(&ctx) {
        for (k, &n) in [
            0usize, 1, 2, 3, 255, 256, 257, 1023, 1024, 1025, 4095, 4097, 8191, 8192, 8193, 100_003,
        ]
        .iter()
        .enumerate()
        {
            for (d, &density) in [0.0, 1.0, 0.5, 0.01].iter().enumerate() {
                let keep = flags(n, density, (k * 10 + d) as u64);
                assert_eq!(
                    compactor.compact(&keep).unwrap(),
                    compact_cpu(&keep),
                    "{route}: n {n} density {density}"
                );
            }
        }
    }
}

#[test]
fn compaction_of_ten_million_flags() {
    let Some(ctx) = common::gpu() else { return };
    let keep = flags(10_000_000, 0.3, 99);
    let want = compact_cpu(&keep);
    for (route, compactor) in compactors(&ctx) {
        let got = compactor.compact(&keep).unwrap();
        assert_eq!(got.len(), want.len(), "{route}");
        assert!(
            got == want,
            "{route}: ten million flags: first difference at {:?}",
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}

/// A narrow grid forces the 2-D dispatch the adapter would use past 67
/// million flags.
#[test]
fn compaction_on_a_two_dimensional_grid() {
    let Some(ctx) = common::gpu() else { return };
    let block = rollcall::internals::COMPACT_BLOCK as usize;
    for (route, compactor) in compactors(&ctx) {
        let compactor = compactor.with_grid_width(7);
        for n in [7 * block, 7 * block + 1, 50 * block + 3, 333_333] {
            let keep = flags(n, 0.4, n as u64);
            assert_eq!(
                compactor.compact(&keep).unwrap(),
                compact_cpu(&keep),
                "{route}: n {n}"
            );
        }
    }
}

#[test]
fn compaction_rejects_small_buffers() {
    let Some(ctx) = common::gpu() else { return };
    let compactor = Compactor::new(&ctx).unwrap();
    let buffer = |size| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let scratch = CompactScratch::new(&ctx, 100).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = compactor.encode(
        &mut encoder,
        &buffer(40),
        100,
        &scratch,
        &buffer(400),
        &buffer(4),
    );
    assert!(
        matches!(
            err,
            Err(rollcall::Error::BufferTooSmall {
                needed: 400,
                got: 40,
                ..
            })
        ),
        "{err:?}"
    );
    let err = compactor.encode(
        &mut encoder,
        &buffer(400),
        100,
        &scratch,
        &buffer(396),
        &buffer(4),
    );
    assert!(
        matches!(err, Err(rollcall::Error::BufferTooSmall { .. })),
        "{err:?}"
    );
    let err = compactor.encode(
        &mut encoder,
        &buffer(800),
        200,
        &scratch,
        &buffer(800),
        &buffer(4),
    );
    assert!(
        matches!(
            err,
            Err(rollcall::Error::BatchCapacity {
                capacity: 100,
                rows: 200
            })
        ),
        "{err:?}"
    );
}
