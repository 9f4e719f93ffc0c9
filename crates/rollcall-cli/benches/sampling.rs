//! Sampler throughput: the GPU engine path (logits already resident, one
//! submit and a wait per iteration), the CPU twin, and the read-once kernel
//! that is the yardstick, at batch 1, 64 and 256 × vocab 32000 and 128256, f32
//! and bf16. Throughput is in bytes of logits, so criterion reports GB/s. For
//! bf16 the read-once yardstick reads the same bytes as plain words (a
//! decoding read is slower per byte and would flatter the ratio).
//!
//! Sized to finish in a few minutes on a small CPU-only machine: 10 samples,
//! short warm-up and measurement, flat sampling (every sample runs the same
//! number of iterations, so slow cases cost 10 iterations, not 55). The CPU
//! twin is single-threaded; it is measured at every batch because even at
//! 256 × 128256 with top-k and top-p it takes about a second per iteration,
//! which keeps the whole run under about three minutes. If it grows slower,
//! skip it at batch 256 rather than lengthen the run.
// These play an engine that submits on its own queue, uncounted.
#![allow(clippy::disallowed_methods)]

mod common;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use half::bf16;
use rollcall::internals::ReadOnce;
use rollcall::{
    sampling::cpu, GpuContext, HostLogits, LogitsBinding, LogitsDtype, SampleBatch, Sampler,
    SamplingParams,
};
use rollcall_cli::bench::PlainRead;
use rollcall_cli::synthetic::{self, LogitsShape};
use std::hint::black_box;

const BATCHES: [u32; 3] = [1, 64, 256];
const VOCABS: [u32; 2] = [32000, 128256];
const DTYPES: [LogitsDtype; 2] = [LogitsDtype::F32, LogitsDtype::Bf16];

fn modes() -> [(&'static str, SamplingParams); 2] {
    [
        ("plain", SamplingParams::new(1.0)),
        (
            "top-k50-top-p0.9",
            SamplingParams::new(1.0).top_k(50).top_p(0.9),
        ),
    ]
}

fn params(rows: u32, base: SamplingParams) -> Vec<SamplingParams> {
    (0..u64::from(rows)).map(|r| base.seed(r)).collect()
}

fn bench_sampling(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("a GPU adapter");
    let sampler = Sampler::new(&ctx).expect("sampling pipelines build");
    let read_once = ReadOnce::new(&ctx).expect("read-once pipelines build");
    let max_rows = BATCHES.iter().copied().max().unwrap_or(1);
    let mut batch = SampleBatch::new(&ctx, max_rows).expect("a sampling batch");
    let sums = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench row sums"),
        size: u64::from(max_rows) * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });

    for &vocab in &VOCABS {
        for &rows in &BATCHES {
            let values = synthetic::logits(rows as usize, vocab as usize, LogitsShape::Model, 7);
            let halves: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            for &dtype in &DTYPES {
                let host = match dtype {
                    LogitsDtype::Bf16 => HostLogits::Bf16(&halves),
                    _ => HostLogits::F32(&values),
                };
                let bytes = host.bytes();
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4) * 4, 0);
                let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench logits"),
                    size: padded.len() as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                ctx.queue.write_buffer(&buffer, 0, &padded);
                drop(padded);
                ctx.wait().expect("the device finishes its work");
                let binding = LogitsBinding {
                    buffer: &buffer,
                    offset: 0,
                    rows,
                    vocab,
                    dtype,
                };

                let mut group = c.benchmark_group(format!("{rows}x{vocab}/{dtype:?}"));
                group.throughput(Throughput::Bytes(bytes.len() as u64));
                group.sampling_mode(SamplingMode::Flat);

                let words = (dtype != LogitsDtype::F32)
                    .then(|| PlainRead::with_rows(&ctx, rows, vocab.div_ceil(2)));
                group.bench_function("read-once", |b| {
                    b.iter(|| {
                        let mut encoder = ctx.device.create_command_encoder(&Default::default());
                        match &words {
                            Some(words) => words.encode(&read_once, &mut encoder),
                            None => read_once.encode(&mut encoder, &binding, &sums),
                        }
                        .expect("read-once encodes");
                        ctx.queue.submit([encoder.finish()]);
                        ctx.wait().expect("the device finishes its work");
                    })
                });
                for (mode, base) in modes() {
                    let params = params(rows, base);
                    batch.set_params(&params).expect("valid parameters");
                    group.bench_function(format!("gpu/{mode}"), |b| {
                        b.iter(|| {
                            let mut encoder =
                                ctx.device.create_command_encoder(&Default::default());
                            sampler
                                .encode(&mut encoder, &binding, &mut batch)
                                .expect("sampler encodes");
                            ctx.queue.submit([encoder.finish()]);
                            ctx.wait().expect("the device finishes its work");
                        })
                    });
                    group.bench_function(format!("cpu-twin/{mode}"), |b| {
                        b.iter(|| black_box(cpu::sample(host, vocab, &params).expect("valid call")))
                    });
                }
                group.finish();
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_sampling
}
criterion_main!(benches);
