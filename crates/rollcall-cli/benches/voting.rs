//! One voting round (count 4 votes per prompt, the Beta rule, compaction of
//! the live prompts, the small readback) through `Scheduler::encode_round`,
//! GPU and CPU twin, at 10 000 and 100 000 prompts; and compaction alone at
//! 1 and 10 million flags. Small enough to run in about a minute on a
//! CPU-only machine (`cargo bench --bench voting`).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollcall::compact::{cpu::compact as compact_cpu, CompactScratch, Compactor};
use rollcall::voting::RoundVotes;
use rollcall::voting::{Allocation, Scheduler};
use rollcall::GpuContext;
use std::hint::black_box;
use wgpu::util::DeviceExt;

fn bench_voting(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("a GPU adapter");
    let config = rollcall_cli::bench::voting_rule();
    for prompts in [10_000u32, 100_000] {
        let (segments, answers) = rollcall_cli::bench::voting_round(prompts, 3);
        let votes = RoundVotes {
            segments: &segments,
            answers: &answers,
            tokens: None,
        };
        let live: Vec<u32> = (0..prompts).collect();
        let mut scheduler =
            Scheduler::new(&ctx, prompts, 16, config, Allocation::Chunk(4)).expect("scheduler");
        let mut group = c.benchmark_group(format!("voting-round/{prompts}"));
        group.throughput(Throughput::Elements(u64::from(prompts)));
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("gpu", |b| {
            b.iter(|| {
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                scheduler
                    .encode_round(&mut encoder, &votes, &live, true)
                    .expect("round encodes");
                ctx.submit(encoder.finish());
                ctx.wait().expect("the device finishes its work");
            })
        });
        group.bench_function("cpu-twin", |b| {
            b.iter(|| {
                black_box(
                    rollcall_cli::bench::voting_round_cpu(&votes, prompts, 16, &config)
                        .expect("valid round"),
                )
            })
        });
        group.finish();
    }

    let compactor = Compactor::new(&ctx).expect("compaction pipelines");
    for n in [1_000_000u32, 10_000_000] {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let keep: Vec<u32> = (0..n).map(|_| u32::from(rng.random_bool(0.5))).collect();
        let flags = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bench flags"),
                contents: bytemuck::cast_slice(&keep),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let storage = |size| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench compaction output"),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (out, count) = (storage(u64::from(n) * 4), storage(4));
        let scratch = CompactScratch::new(&ctx, n).expect("compaction scratch");
        let mut group = c.benchmark_group(format!("compact/{n}"));
        group.throughput(Throughput::Bytes(u64::from(n) * 4));
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("gpu", |b| {
            b.iter(|| {
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                compactor
                    .encode(&mut encoder, &flags, n, &scratch, &out, &count)
                    .expect("compaction encodes");
                ctx.submit(encoder.finish());
                ctx.wait().expect("the device finishes its work");
            })
        });
        group.bench_function("cpu-twin", |b| b.iter(|| black_box(compact_cpu(&keep))));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_voting
}
criterion_main!(benches);
