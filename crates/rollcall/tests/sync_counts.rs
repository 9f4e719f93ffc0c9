//! CPU–GPU round trips, counted: the sampler's engine path never submits or
//! waits, a scheduler round is one submit and one readback, and the tail
//! kernels' host calls are one of each.
// These play an engine that submits on its own queue, uncounted.
#![allow(clippy::disallowed_methods)]

mod common;

use rand::Rng;
use rollcall::tail::{Estimator, TailStats};
use rollcall::voting::{Allocation, ReplayEngine, Scheduler};
use rollcall::voting::{RuleConfig, StopRule};
use rollcall::{LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams};
use wgpu::util::DeviceExt;

/// The counts are per context and the tests share one: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn sampler_engine_path_never_submits_or_waits() {
    let _serial = serial();
    let Some(ctx) = common::gpu() else { return };
    let (rows, vocab) = (8u32, 5000u32);
    let mut rng = common::rng(5);
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("engine logits"),
            contents: bytemuck::cast_slice(&logits),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let sampler = Sampler::new(&ctx).unwrap();
    let mut batch = SampleBatch::new(&ctx, rows).unwrap();
    batch
        .set_params(&vec![
            SamplingParams::new(0.8).top_k(20).top_p(0.9).seed(1);
            rows as usize
        ])
        .unwrap();
    let binding = LogitsBinding {
        buffer: &buffer,
        offset: 0,
        rows,
        vocab,
        dtype: LogitsDtype::F32,
    };
    let before = ctx.sync_counts();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    for _ in 0..10 {
        sampler.encode(&mut encoder, &binding, &mut batch).unwrap();
    }
    let during = ctx.sync_counts() - before;
    assert_eq!(
        (during.submits, during.readbacks),
        (0, 0),
        "engine path synchronised"
    );
    // The engine submits; the work was really recorded.
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(rows) * 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(batch.tokens(), 0, &readback, 0, u64::from(rows) * 4);
    ctx.queue.submit([encoder.finish()]);
    let out = ctx.read_buffer(&readback, u64::from(rows) * 4).unwrap();
    let tokens: &[u32] = bytemuck::cast_slice(&out);
    assert!(tokens.iter().all(|&t| t < vocab));
}

#[test]
fn a_scheduler_round_is_one_submit_and_one_readback() {
    let _serial = serial();
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(6);
    let data: Vec<Vec<u32>> = (0..300)
        .map(|p| (0..40).map(|_| rng.random_range(0..1 + p % 5)).collect())
        .collect();
    for allocation in [Allocation::Chunk(1), Allocation::FewestToPass { first: 2 }] {
        let config = RuleConfig {
            rule: StopRule::CONSOL_SPRT,
            min_votes: 1,
            max_votes: 40,
        };
        let mut scheduler = Scheduler::new(&ctx, 300, 16, config, allocation).unwrap();
        let before = ctx.sync_counts();
        let out = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
        let spent = ctx.sync_counts() - before;
        assert!(out.rounds > 3);
        // Rounds, then two at the end: the decisions, and rewards/advantages.
        let expected = u64::from(out.rounds) + 2;
        assert_eq!(
            spent.submits, expected,
            "{allocation:?}: {spent:?}, {} rounds",
            out.rounds
        );
        assert_eq!(spent.readbacks, expected, "{allocation:?}");
    }
}

#[test]
fn tail_host_calls_are_one_round_trip() {
    let _serial = serial();
    let Some(ctx) = common::gpu() else { return };
    let mut tail = TailStats::new(&ctx).unwrap();
    let rewards: Vec<f32> = (0..640).map(|i| ((i * 7919) % 113) as f32).collect();
    let offsets: Vec<u32> = (0..=10).map(|s| s * 64).collect();
    for _ in 0..2 {
        let before = ctx.sync_counts();
        tail.estimate(&rewards, &offsets, Estimator::Tea { n: 64, alpha: 0.25 })
            .unwrap();
        tail.order(&rewards, &offsets).unwrap();
        let spent = ctx.sync_counts() - before;
        assert_eq!((spent.submits, spent.readbacks), (2, 2));
    }
}
