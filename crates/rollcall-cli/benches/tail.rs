//! Segmented sort plus one estimator per segment, GPU (rewards resident, one
//! submit and a wait per iteration) and CPU twin, at 4096 prompts × 64
//! rollouts and 64 prompts × 4096 rollouts (`cargo bench --bench tail`).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use rollcall::tail::{cpu, TailStats};
use rollcall::GpuContext;
use std::hint::black_box;

fn bench_tail(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("a GPU adapter");
    for (segments, m) in [(4096u32, 64u32), (64, 4096)] {
        let (rewards, offsets) = rollcall_cli::bench::tail_batch(segments, m);
        let mut tail = TailStats::new(&ctx).expect("tail pipelines");
        tail.upload(&rewards, &offsets).expect("valid batch");
        let mut group = c.benchmark_group(format!("tail/{segments}x{m}"));
        group.throughput(Throughput::Bytes(u64::from(segments * m) * 4));
        group.sampling_mode(SamplingMode::Flat);
        for est in rollcall_cli::bench::TAIL_ESTIMATORS {
            group.bench_function(format!("gpu/{}", est.name()), |b| {
                b.iter(|| {
                    let mut encoder = ctx.device.create_command_encoder(&Default::default());
                    tail.encode_estimate(&mut encoder, est)
                        .expect("estimate encodes");
                    ctx.submit(encoder.finish());
                    ctx.wait().expect("the device finishes its work");
                })
            });
            group.bench_function(format!("cpu-twin/{}", est.name()), |b| {
                b.iter(|| black_box(cpu::estimate(&rewards, &offsets, est).expect("valid")))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_tail
}
criterion_main!(benches);
