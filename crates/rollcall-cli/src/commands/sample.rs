//! `rollcall sample`: a synthetic batch sampled on the adapter, every row
//! checked against the CPU twin, and the sampler timed against a kernel that
//! only reads the same logits once.

use super::{cli_name, ensure_fits, product, slow_adapter_note, total, Bound, CliResult};
use clap::ValueEnum;
use half::{bf16, f16};
use rollcall::internals::ReadOnce;
use rollcall::internals::SplitRows;
use rollcall::sampling::cpu;
use rollcall::{
    GpuContext, HostLogits, LogitsBinding, RowStatus, SampleBatch, SampleResult, Sampler,
    SamplingParams,
};
use rollcall_cli::synthetic::{self, LogitsShape};
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Near-tie tolerance for GPU/CPU disagreements.
const NEAR_TIE: f32 = 1e-4;
/// Log-probabilities of matching tokens may differ by this much (relative,
/// at least absolute) across devices.
const LOGPROB_TOLERANCE: f32 = 1e-3;
/// Real mismatches printed in detail.
const MAX_REPORTED_MISMATCHES: usize = 5;

#[derive(clap::Args)]
pub struct SampleArgs {
    /// Rows in the batch.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Tokens per row.
    #[arg(long, default_value_t = 128256)]
    vocab: u32,
    /// Element type of the logits.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Sampling temperature (below 1e-5 is greedy).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Keep the k most likely tokens; 0 is off.
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Nucleus mass; 1 is off.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Relative probability floor; 0 is off.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Seed of the synthetic logits; row r samples with seed + r.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Distribution of the synthetic logits: `model` (a few dozen tokens hold
    /// most mass over a Gaussian body) or `flat` (all near-equal, worst case).
    #[arg(long, value_enum, default_value_t = Shape::Model)]
    shape: Shape,
    /// Timed iterations of each kernel (interleaved).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// How rows are laid over dispatches (`SplitRows`): the adapter's default,
    /// the first pass per row or per tile in its own dispatch, or fused into
    /// the draw. Every route gives the same bits.
    #[arg(long, value_enum, default_value_t = Route::Auto)]
    route: Route,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Route {
    Auto,
    Never,
    Always,
    Fused,
}

impl Route {
    fn split_rows(self) -> SplitRows {
        match self {
            Route::Auto => SplitRows::Auto,
            Route::Never => SplitRows::Never,
            Route::Always => SplitRows::Always,
            Route::Fused => SplitRows::Fused,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn size_bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Shape {
    Model,
    Flat,
}

/// Owned host logits of one dtype.
enum OwnedLogits {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl OwnedLogits {
    fn new(values: Vec<f32>, dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => OwnedLogits::F32(values),
            Dtype::F16 => OwnedLogits::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            Dtype::Bf16 => OwnedLogits::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
        }
    }
    fn view(&self) -> HostLogits<'_> {
        match self {
            OwnedLogits::F32(v) => HostLogits::F32(v),
            OwnedLogits::F16(v) => HostLogits::F16(v),
            OwnedLogits::Bf16(v) => HostLogits::Bf16(v),
        }
    }
}

#[derive(Serialize)]
struct Config {
    batch: u32,
    vocab: u32,
    dtype: Dtype,
    shape: Shape,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    seed: u64,
    iters: usize,
    route: Route,
}

#[derive(Serialize)]
struct Check {
    rows: usize,
    exact: usize,
    near_tie: usize,
    mismatch: usize,
    /// Rows where the engine path (the timed one) drew another token than the
    /// host path.
    engine_vs_host_mismatch: usize,
}

#[derive(Serialize)]
struct Throughput {
    median_ms: f64,
    min_ms: f64,
    gb_per_s: f64,
    tokens_per_s: f64,
}

impl Throughput {
    fn new(median: Duration, min: Duration, bytes: u64, rows: u32) -> Self {
        let secs = median.as_secs_f64();
        Self {
            median_ms: secs * 1e3,
            min_ms: min.as_secs_f64() * 1e3,
            gb_per_s: bytes as f64 / secs / 1e9,
            tokens_per_s: f64::from(rows) / secs,
        }
    }
}

#[derive(Serialize)]
struct Report {
    adapter: String,
    config: Config,
    check: Check,
    timing_source: String,
    bytes_per_batch: u64,
    sampler: Throughput,
    read_once: Throughput,
    /// Sampler throughput divided by read-once throughput on the same buffer.
    sampler_to_read_once: f64,
    /// Runs of each kernel back to back in one timed span (times are per run).
    runs_per_span: u32,
    /// What the read-once reference read: `logits` (f32, the same binding) or
    /// `words` (16-bit logits: the same number of bytes as plain words).
    read_once_reads: String,
    cpu_twin: Throughput,
}

/// The batch's sizes, checked before anything of their size is allocated.
struct Sizes {
    rows: u32,
    vocab: u32,
    dtype: Dtype,
}

impl Sizes {
    /// How the sizes were asked for, in the refusal.
    fn subject(&self) -> String {
        format!(
            "--batch {} x --vocab {} ({})",
            self.rows,
            self.vocab,
            cli_name(self.dtype)
        )
    }

    fn elements(&self) -> Option<u64> {
        product(&[u64::from(self.rows), u64::from(self.vocab)])
    }

    /// Bytes of the logits in their dtype.
    fn logits_bytes(&self) -> Option<u64> {
        product(&[self.elements()?, self.dtype.size_bytes()])
    }

    /// The host memory the command holds at its peak (an upper estimate).
    /// Per logit: the logits in their dtype, their padded upload copy and
    /// wgpu's staging copy of it (3 x 4 bytes for f32), or, while 16-bit
    /// logits are converted, the f32 draws beside the result (4 + 2). Per
    /// row: the parameters, the CPU twin's traces, the results and the
    /// readbacks.
    fn host_bytes(&self) -> Option<u64> {
        use std::mem::size_of;
        let size = self.dtype.size_bytes();
        let per_logit = (3 * size).max(4 + size);
        let per_row = size_of::<SamplingParams>()
            + 3 * GPU_ROW_PARAMS_BYTES as usize
            + size_of::<cpu::RowTrace>()
            + 2 * size_of::<SampleResult>()
            + HOST_READBACK_BYTES_PER_ROW;
        total(&[
            product(&[self.elements()?, per_logit]),
            Some(4),
            product(&[u64::from(self.rows), per_row as u64]),
        ])
    }

    fn check_host(&self) -> CliResult<()> {
        ensure_fits(
            &self.subject(),
            "the logits, their upload copies and per-row state",
            self.host_bytes(),
            Bound::Host,
        )?;
        Ok(())
    }

    /// The logits' buffer (and, for 16-bit logits, the read-once reference's
    /// buffer of as many words) must fit one device buffer; the per-row
    /// buffers, bound whole, one storage binding (the parameters are the
    /// largest).
    fn check_device(&self, ctx: &GpuContext) -> CliResult<()> {
        let rows = u64::from(self.rows.max(1));
        let words = product(&[rows, u64::from(self.vocab.div_ceil(2)), 4]);
        let logits = self.logits_bytes().map(|b| b.div_ceil(4) * 4);
        let largest = match self.dtype {
            Dtype::F32 => logits,
            Dtype::F16 | Dtype::Bf16 => logits.zip(words).map(|(l, w)| l.max(w)),
        };
        ensure_fits(
            &self.subject(),
            &format!("the {} logits", cli_name(self.dtype)),
            largest,
            Bound::buffer(ctx),
        )?;
        ensure_fits(
            &format!("--batch {}", self.rows),
            "the per-row sampling parameters",
            product(&[rows, GPU_ROW_PARAMS_BYTES]),
            Bound::binding(ctx),
        )?;
        Ok(())
    }
}

/// Bytes of one row's parameters on the device: the sampler keeps them in a
/// buffer bound whole, and two host copies.
const GPU_ROW_PARAMS_BYTES: u64 = rollcall::SampleBatch::PARAMS_BYTES_PER_ROW;

/// Host bytes per row the results are read back through: the sampler's
/// tokens and results (20) and the engine path's tokens (4).
const HOST_READBACK_BYTES_PER_ROW: usize = 24;

pub fn run(args: &SampleArgs) -> CliResult<ExitCode> {
    let (rows, vocab) = (args.batch, args.vocab);
    let row_params = |r: u64| {
        SamplingParams::new(args.temperature)
            .top_k(args.top_k)
            .top_p(args.top_p)
            .min_p(args.min_p)
            .seed(args.seed.wrapping_add(r))
    };
    // Rows differ only in their seeds, so row 0 is refused if any row is:
    // bad parameters are reported before sizes (checked on a one-token row).
    if rows > 0 {
        cpu::sample_traced(HostLogits::F32(&[0.0]), &row_params(0))?;
    }
    if vocab == 0 {
        return Err(rollcall::Error::EmptyVocab.into());
    }
    let sizes = Sizes {
        rows,
        vocab,
        dtype: args.dtype,
    };
    sizes.check_host()?;
    let params: Vec<SamplingParams> = (0..u64::from(rows)).map(row_params).collect();
    // The device opens before the logits are drawn, so that sizes the
    // adapter cannot hold are refused before any large allocation.
    let ctx = GpuContext::new()?;
    sizes.check_device(&ctx)?;
    let shape = match args.shape {
        Shape::Model => LogitsShape::Model,
        Shape::Flat => LogitsShape::Flat,
    };
    let values = synthetic::logits(rows as usize, vocab as usize, shape, args.seed);
    let owned = OwnedLogits::new(values, args.dtype);
    let logits = owned.view();
    let dtype = logits.dtype();

    let mut sampler = Sampler::new(&ctx)?.with_split_rows(args.route.split_rows());
    let read_once = ReadOnce::new(&ctx)?;

    // Correctness: the host path against the CPU twin, row by row.
    let gpu = sampler.sample(logits, vocab, &params)?;
    let v = vocab as usize;
    let cpu_start = Instant::now();
    let traces: Vec<cpu::RowTrace> = params
        .iter()
        .enumerate()
        .map(|(r, p)| {
            let row = logits.row(r, v).ok_or(rollcall::Error::LengthMismatch {
                what: "synthetic logits",
                expected: params.len() * v,
                got: logits.len(),
            })?;
            cpu::sample_traced(row, p)
        })
        .collect::<rollcall::Result<_>>()?;
    let cpu_time = cpu_start.elapsed();
    let mut check = Check {
        rows: gpu.len(),
        exact: 0,
        near_tie: 0,
        mismatch: 0,
        engine_vs_host_mismatch: 0,
    };
    for (r, (g, trace)) in gpu.iter().zip(&traces).enumerate() {
        if same_result(g, &trace.result) {
            check.exact += 1;
        } else if trace.is_near_tie(NEAR_TIE) {
            check.near_tie += 1;
        } else {
            check.mismatch += 1;
            if check.mismatch <= MAX_REPORTED_MISMATCHES {
                eprintln!(
                    "row {r}: gpu {:?} vs cpu {:?} (top-p margin {}, stream gap {}, token gap {})",
                    g, trace.result, trace.top_p_margin, trace.stream_gap, trace.token_gap
                );
            }
        }
    }

    // Timing: the engine path and the read-once kernel on one resident buffer.
    let device = &ctx.device;
    let bytes = logits.bytes();
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().div_ceil(4) * 4, 0);
    let logits_buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("rollcall cli logits"),
        size: padded.len().max(4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue.write_buffer(&logits_buffer, 0, &padded);
    drop(padded);
    let sums = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("rollcall cli row sums"),
        size: u64::from(rows.max(1)) * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mut batch = SampleBatch::new(&ctx, rows)?;
    batch.set_params(&params)?;
    let binding = LogitsBinding {
        buffer: &logits_buffer,
        offset: 0,
        rows,
        vocab,
        dtype,
    };
    // The yardstick reads the same bytes once: f32 logits through the same
    // binding, 16-bit logits as plain words (a decoding read is slower per
    // byte and would flatter the ratio). Short batches run back to back in
    // one timed span, as in `rollcall bench`.
    let plain_read = (dtype != rollcall::LogitsDtype::F32)
        .then(|| rollcall_cli::bench::PlainRead::with_rows(&ctx, rows, vocab.div_ceil(2)));
    let iters = args.iters.max(1);
    let (sampler_timing, read_once_timing, runs) = rollcall_cli::bench::time_interleaved(
        &ctx,
        iters,
        Some(rollcall_cli::bench::MIN_SPAN),
        |_| {},
        |e| sampler.encode(e, &binding, &mut batch),
        |e| match &plain_read {
            Some(words) => words.encode(&read_once, e),
            None => read_once.encode(e, &binding, &sums),
        },
    )?;
    let source = sampler_timing.source;
    let reference_bytes = plain_read
        .as_ref()
        .map_or(bytes.len() as u64, |words| words.bytes())
        .max(1);
    check.engine_vs_host_mismatch = engine_vs_host(&ctx, &batch, &gpu)?;

    let batch_bytes = u64::from(rows) * u64::from(vocab) * dtype.size_bytes();
    let report = Report {
        adapter: ctx.describe(),
        config: Config {
            batch: rows,
            vocab,
            dtype: args.dtype,
            shape: args.shape,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            seed: args.seed,
            iters,
            route: args.route,
        },
        timing_source: source.to_string(),
        bytes_per_batch: batch_bytes,
        sampler: Throughput::new(sampler_timing.median, sampler_timing.min, batch_bytes, rows),
        read_once: Throughput::new(
            read_once_timing.median,
            read_once_timing.min,
            batch_bytes,
            rows,
        ),
        // Scaled to the logits' bytes (a word read may read a few more).
        sampler_to_read_once: read_once_timing.median.as_secs_f64()
            * (batch_bytes as f64 / reference_bytes as f64)
            / sampler_timing.median.as_secs_f64(),
        runs_per_span: runs,
        read_once_reads: if plain_read.is_some() {
            "words"
        } else {
            "logits"
        }
        .into(),
        cpu_twin: Throughput::new(cpu_time, cpu_time, batch_bytes, rows),
        check,
    };
    let note = slow_adapter_note(ctx.adapter_info());
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
        // Standard output stays one JSON object.
        if let Some(note) = note {
            eprintln!("{note}");
        }
    } else {
        print_table(&report, note);
    }
    Ok(
        if report.check.mismatch > 0 || report.check.engine_vs_host_mismatch > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// Same token, status and kept count, and a log-probability within tolerance.
fn same_result(gpu: &SampleResult, cpu: &SampleResult) -> bool {
    let logprob_close = match (gpu.status, cpu.status) {
        (RowStatus::NoValidToken, RowStatus::NoValidToken) => true,
        _ => {
            (gpu.logprob == cpu.logprob)
                || (gpu.logprob - cpu.logprob).abs()
                    <= LOGPROB_TOLERANCE * cpu.logprob.abs().max(1.0)
        }
    };
    gpu.token == cpu.token && gpu.status == cpu.status && gpu.kept == cpu.kept && logprob_close
}

/// Rows whose engine-path token (left in `batch` by the timed runs) differs
/// from the host path's.
fn engine_vs_host(
    ctx: &GpuContext,
    batch: &SampleBatch,
    host: &[SampleResult],
) -> rollcall::Result<usize> {
    let size = (host.len() as u64 * 4).max(4);
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("rollcall cli tokens readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    encoder.copy_buffer_to_buffer(batch.tokens(), 0, &readback, 0, size);
    ctx.submit(encoder.finish());
    let bytes = ctx.read_buffer(&readback, size)?;
    let tokens: &[u32] = bytemuck::cast_slice(&bytes);
    Ok(host
        .iter()
        .zip(tokens)
        .filter(|(h, &t)| h.token != t)
        .count())
}

fn print_table(r: &Report, note: Option<&str>) {
    let c = &r.config;
    println!("adapter: {}", r.adapter);
    if let Some(note) = note {
        println!("{note}");
    }
    println!(
        "batch {} x vocab {} {}, shape {}, temperature {}, top-k {}, top-p {}, min-p {}, seed {}",
        c.batch,
        c.vocab,
        cli_name(c.dtype),
        cli_name(c.shape),
        c.temperature,
        c.top_k,
        c.top_p,
        c.min_p,
        c.seed
    );
    let k = &r.check;
    println!(
        "check vs CPU twin: {} rows, {} exact, {} near-tie disagreements, {} mismatches; \
         engine path vs host path: {} differing tokens",
        k.rows, k.exact, k.near_tie, k.mismatch, k.engine_vs_host_mismatch
    );
    println!(
        "timing: {} interleaved iterations ({}, {} runs per timed span), {:.1} MB of logits per batch",
        c.iters,
        r.timing_source,
        r.runs_per_span,
        r.bytes_per_batch as f64 / 1e6
    );
    if r.read_once_reads == "words" {
        println!("read-once: the same number of bytes read as plain words (16-bit logits)");
    }
    println!();
    println!(
        "{:<12} {:>12} {:>12} {:>10} {:>14}",
        "kernel", "median ms", "min ms", "GB/s", "tokens/s"
    );
    for (name, t) in [
        ("sampler", &r.sampler),
        ("read-once", &r.read_once),
        ("CPU twin", &r.cpu_twin),
    ] {
        println!(
            "{:<12} {:>12.3} {:>12.3} {:>10.2} {:>14.0}",
            name, t.median_ms, t.min_ms, t.gb_per_s, t.tokens_per_s
        );
    }
    println!();
    println!(
        "sampler / read-once throughput: {:.3}x (1.0 = sampling costs one read of the logits)",
        r.sampler_to_read_once
    );
    println!("CPU twin: one run, single thread, not counted in the ratio");
}
