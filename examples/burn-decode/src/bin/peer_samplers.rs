//! `cargo run -p rollcall-burn-decode --release --bin peer-samplers [--features candle] -- [--json] [--reps N]`
//!
//! The samplers Rust engines use today against rollcall, on the same logits
//! in the same run, at batch 1, 16 and 256 over vocabularies of 32 000 and
//! 128 256 tokens, for two settings (temperature 0.8 alone, and top-k 50
//! then top-p 0.9):
//! - candle-transformers' `LogitsProcessor` (with `--features candle`), one
//!   row at a time as candle engines call it, on host logits;
//! - a sort-based host sampler as llama-burn does it (softmax order by a full
//!   sort, top-k, the top-p cut, one draw);
//! - rollcall's CPU twin (the whole batch at once);
//! - rollcall on the GPU from logits already on the device (an engine's
//!   case: one submit, the tokens read back), and from host logits
//!   (uploaded, sampled, read back).
//!
//! Every measure is repeated in alternation (one of each per round, so a
//! slow spell of the machine hits all of them alike) and the median is kept.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rollcall::{
    GpuContext, HostLogits, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams,
};
use rollcall_burn_decode::host_sample;
use serde::Serialize;
use wgpu::util::DeviceExt;

const BATCHES: [usize; 3] = [1, 16, 256];
const VOCABS: [usize; 2] = [32_000, 128_256];

#[derive(Clone, Copy, Serialize)]
enum Setting {
    /// Temperature 0.8 over the whole vocabulary.
    Plain,
    /// Temperature 0.8, top-k 50, then top-p 0.9.
    TopKTopP,
}

impl Setting {
    fn params(self, row: usize) -> SamplingParams {
        let p = SamplingParams::new(0.8).seed(1 + row as u64).step(3);
        match self {
            Setting::Plain => p,
            Setting::TopKTopP => p.top_k(50).top_p(0.9),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Setting::Plain => "T 0.8",
            Setting::TopKTopP => "T 0.8, top-k 50, top-p 0.9",
        }
    }
}

#[derive(Serialize)]
struct Row {
    setting: &'static str,
    batch: usize,
    vocab: usize,
    /// Rows sampled per second, median over the rounds, per sampler.
    rows_per_s: Vec<(&'static str, f64)>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut json = false;
    let mut reps = 7usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--reps" => {
                reps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--reps needs a positive number")?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let ctx = GpuContext::new().map_err(|e| e.to_string())?;
    let mut sampler = Sampler::new(&ctx).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for setting in [Setting::Plain, Setting::TopKTopP] {
        for vocab in VOCABS {
            for batch in BATCHES {
                rows.push(
                    measure(&ctx, &mut sampler, setting, batch, vocab, reps)
                        .map_err(|e| e.to_string())?,
                );
            }
        }
    }
    if json {
        let out = serde_json::json!({ "adapter": ctx.describe(), "reps": reps, "rows": rows });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("adapter: {}", ctx.describe());
    println!("rows sampled per second (median of {reps} rounds); ratio = rollcall GPU, logits on the device / that sampler");
    let names: Vec<&str> = rows[0].rows_per_s.iter().map(|(n, _)| *n).collect();
    println!("| setting | batch | vocab | {} |", names.join(" | "));
    println!("|---|---:|---:|{}", "---:|".repeat(names.len()));
    for row in &rows {
        let engine = row.rows_per_s[0].1;
        let cells: Vec<String> = row
            .rows_per_s
            .iter()
            .enumerate()
            .map(|(i, (_, r))| {
                if i == 0 {
                    format!("{r:.0}")
                } else {
                    format!("{r:.0} ({:.2}×)", engine / r)
                }
            })
            .collect();
        println!(
            "| {} | {} | {} | {} |",
            row.setting,
            row.batch,
            row.vocab,
            cells.join(" | ")
        );
    }
    Ok(())
}

/// Seeded logits shaped like a language model's: a few clear leaders over
/// a long tail (a sum of uniforms, plus a boost for 1 token in 500).
fn logits(batch: usize, vocab: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64((batch * vocab) as u64);
    (0..batch * vocab)
        .map(|_| {
            let base: f32 = (0..4).map(|_| rng.random::<f32>()).sum::<f32>() * 2.0;
            if rng.random::<f32>() < 0.002 {
                base + 6.0
            } else {
                base
            }
        })
        .collect()
}

type Timed<'a> = Box<dyn FnMut() -> rollcall::Result<Duration> + 'a>;

fn measure(
    ctx: &GpuContext,
    sampler: &mut Sampler,
    setting: Setting,
    batch: usize,
    vocab: usize,
    reps: usize,
) -> rollcall::Result<Row> {
    let host = logits(batch, vocab);
    let params: Vec<SamplingParams> = (0..batch).map(|r| setting.params(r)).collect();
    let device_logits = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("peer bench logits"),
            contents: bytemuck::cast_slice(&host),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let engine_sampler = Sampler::new(ctx)?;
    let mut engine_batch = SampleBatch::new(ctx, batch as u32)?;
    engine_batch.set_params(&params)?;
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("peer bench tokens"),
        size: (batch * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut samplers: Vec<(&'static str, Timed)> = Vec::new();
    samplers.push((
        "rollcall GPU, logits on the device",
        Box::new(|| {
            let t = Instant::now();
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            let binding = LogitsBinding {
                buffer: &device_logits,
                offset: 0,
                rows: batch as u32,
                vocab: vocab as u32,
                dtype: LogitsDtype::F32,
            };
            engine_sampler.encode(&mut encoder, &binding, &mut engine_batch)?;
            encoder.copy_buffer_to_buffer(
                engine_batch.tokens(),
                0,
                &readback,
                0,
                (batch * 4) as u64,
            );
            ctx.submit(encoder.finish());
            let tokens = ctx.read_buffer(&readback, (batch * 4) as u64)?;
            std::hint::black_box(tokens);
            Ok(t.elapsed())
        }),
    ));
    samplers.push((
        "rollcall GPU, host logits",
        Box::new(|| {
            let t = Instant::now();
            let out = sampler.sample(HostLogits::F32(&host), vocab as u32, &params)?;
            std::hint::black_box(out);
            Ok(t.elapsed())
        }),
    ));
    samplers.push((
        "rollcall CPU twin",
        Box::new(|| {
            let t = Instant::now();
            let out =
                rollcall::sampling::cpu::sample(HostLogits::F32(&host), vocab as u32, &params)?;
            std::hint::black_box(out);
            Ok(t.elapsed())
        }),
    ));
    samplers.push((
        "host sort (llama-burn's way)",
        Box::new(|| {
            let t = Instant::now();
            for (r, p) in params.iter().enumerate() {
                let row = &host[r * vocab..(r + 1) * vocab];
                std::hint::black_box(host_sample(row, p, &[], &[], &mut rng));
            }
            Ok(t.elapsed())
        }),
    ));
    #[cfg(feature = "candle")]
    samplers.push(("candle LogitsProcessor", candle_peer(setting, batch, vocab)));

    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(reps); samplers.len()];
    // One untimed round: pipelines compiled, buffers allocated.
    for (_, f) in samplers.iter_mut() {
        f()?;
    }
    for _ in 0..reps {
        for (i, (_, f)) in samplers.iter_mut().enumerate() {
            times[i].push(f()?);
        }
    }
    let rows_per_s = samplers
        .iter()
        .zip(times.iter_mut())
        .map(|((name, _), t)| {
            t.sort();
            (*name, batch as f64 / t[t.len() / 2].as_secs_f64())
        })
        .collect();
    Ok(Row {
        setting: setting.name(),
        batch,
        vocab,
        rows_per_s,
    })
}

/// candle's sampler as candle engines call it: one `LogitsProcessor` per
/// sequence, `sample` on that row's logits tensor (already a tensor on the
/// host: the engine's model produced it).
#[cfg(feature = "candle")]
fn candle_peer(setting: Setting, batch: usize, vocab: usize) -> Timed<'static> {
    use candle_core::{Device, Tensor};
    use candle_transformers::generation::{LogitsProcessor, Sampling};
    let host = logits(batch, vocab);
    let tensors: Vec<Tensor> = (0..batch)
        .map(|r| Tensor::from_slice(&host[r * vocab..(r + 1) * vocab], vocab, &Device::Cpu))
        .collect::<Result<_, _>>()
        .expect("a host tensor");
    let sampling = match setting {
        Setting::Plain => Sampling::All { temperature: 0.8 },
        Setting::TopKTopP => Sampling::TopKThenTopP {
            k: 50,
            p: 0.9,
            temperature: 0.8,
        },
    };
    let mut processors: Vec<LogitsProcessor> = (0..batch)
        .map(|r| LogitsProcessor::from_sampling(1 + r as u64, sampling.clone()))
        .collect();
    Box::new(move || {
        let t = Instant::now();
        for (p, x) in processors.iter_mut().zip(&tensors) {
            let token = p
                .sample(x)
                .map_err(|e| rollcall::Error::InvalidArgument(format!("candle: {e}")))?;
            std::hint::black_box(token);
        }
        Ok(t.elapsed())
    })
}
