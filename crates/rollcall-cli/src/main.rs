//! `rollcall`: inspect the adapter, and check and time the sampler on a
//! synthetic batch against its CPU twin and a read-once kernel.

use clap::{Parser, Subcommand, ValueEnum};
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

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Portable GPU kernels for LLM sampling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, its features and key limits.
    Info,
    /// Sample a synthetic batch, check every row against the CPU twin, and time
    /// the sampler against a kernel that only reads the same logits once.
    Sample(SampleArgs),
    /// Replay recorded votes (or a synthetic workload) through the voting
    /// scheduler and print accuracy and mean samples per stopping rule.
    Vote(VoteArgs),
    /// Draw m rewards per prompt from a known reward family and print each
    /// best-of-N estimator's bias and spread against the true E[max of N]
    /// (optionally as an SVG chart against m).
    Tail(TailArgs),
    /// Time every kernel family over a grid of sizes on this adapter, against
    /// a kernel that only reads the same bytes once, and the CPU twin.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Families, comma-separated: sampling, voting, compact, tail.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sampling,voting,compact,tail"
    )]
    families: Vec<String>,
    /// Timed runs per kernel (interleaved with the read-once reference).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    iters: u32,
    /// A small grid that runs in seconds.
    #[arg(long)]
    quick: bool,
    /// Skip the CPU twin timings.
    #[arg(long)]
    no_cpu: bool,
    /// Time only the rows whose "kernel size" label contains this text
    /// (repeatable; e.g. --only "plain T=1, f32 256 x 128256").
    #[arg(long)]
    only: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TailArgs {
    /// Reward family: gaussian, uniform, exponential, gumbel, bernoulli.
    #[arg(long, default_value = "gaussian")]
    family: String,
    /// Location of the family (mean of the Gaussian, lower end of the uniform).
    #[arg(long, default_value_t = 0.0)]
    location: f64,
    /// Scale of the family (deviation, width, or mean of the exponential part).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Success probability of the bernoulli family.
    #[arg(long, default_value_t = 0.05)]
    p: f64,
    /// N of best-of-N.
    #[arg(long, default_value_t = 128)]
    n: u32,
    /// Rollouts per prompt, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128,256")]
    m: Vec<u32>,
    /// Prompts (segments) per m.
    #[arg(long, default_value_t = 4000)]
    prompts: u32,
    /// Estimators, comma-separated: exact, pass@k, tea, prefix-tea, gpd, grpo.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "exact,tea,prefix-tea,gpd"
    )]
    estimators: Vec<String>,
    /// Tail level α of TEA, Prefix-TEA and the GPD fit.
    #[arg(long, default_value_t = 0.25)]
    alpha: f32,
    /// Prefixes of Prefix-TEA.
    #[arg(long, default_value_t = 4)]
    prefixes: u32,
    /// Seed of the reward draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the CPU twin instead of the GPU kernels.
    #[arg(long)]
    cpu: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write bias and spread against m as an SVG chart to this file.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct VoteArgs {
    /// Vote files (JSON: {"questions": [{"truth", "answers": [...]}]}); none
    /// runs the embedded synthetic workload.
    #[arg(long = "file")]
    files: Vec<std::path::PathBuf>,
    /// Comma-separated rules: fixed, esc5, ac-beta, consol-sprt, dirichlet,
    /// optpo, majority, entropy.
    #[arg(
        long,
        default_value = "fixed,esc5,ac-beta,consol-sprt,dirichlet,optpo,majority,entropy"
    )]
    rules: String,
    /// Seeded shuffles per file.
    #[arg(long, default_value_t = 20)]
    shuffles: u32,
    /// Maximum votes per question.
    #[arg(long, default_value_t = 40)]
    max_votes: u32,
    /// Minimum votes before a rule may stop a question.
    #[arg(long, default_value_t = 1)]
    min_votes: u32,
    /// Questions in the synthetic workload.
    #[arg(long, default_value_t = 500)]
    synthetic_questions: usize,
    /// Rollouts per round: `one` (reveal one answer per round, the evaluation
    /// protocol) or `fewest` (ConSol's: the fewest that could pass the rule).
    #[arg(long, default_value = "one")]
    allocation: String,
    /// Run the CPU twin instead of the GPU kernels.
    #[arg(long)]
    cpu: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SampleArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Info => info(),
        Command::Sample(args) => sample(&args),
        Command::Vote(args) => vote(&args),
        Command::Tail(args) => tail(&args),
        Command::Bench(args) => bench(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn info() -> rollcall::Result<ExitCode> {
    let ctx = GpuContext::new()?;
    println!("{}", ctx.describe());
    let names: Vec<&str> = ctx.features().iter_names().map(|(name, _)| name).collect();
    println!(
        "device features: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    let l = ctx.limits();
    let rows: [(&str, String); 9] = [
        (
            "max buffer size",
            format!("{} MiB", l.max_buffer_size >> 20),
        ),
        (
            "max storage binding",
            format!("{} MiB", l.max_storage_buffer_binding_size >> 20),
        ),
        (
            "storage offset alignment",
            format!("{} B", l.min_storage_buffer_offset_alignment),
        ),
        (
            "uniform offset alignment",
            format!("{} B", l.min_uniform_buffer_offset_alignment),
        ),
        (
            "max workgroups per dimension",
            l.max_compute_workgroups_per_dimension.to_string(),
        ),
        (
            "max invocations per workgroup",
            l.max_compute_invocations_per_workgroup.to_string(),
        ),
        (
            "workgroup memory",
            format!("{} KiB", l.max_compute_workgroup_storage_size >> 10),
        ),
        (
            "storage buffers per stage",
            l.max_storage_buffers_per_shader_stage.to_string(),
        ),
        (
            "timestamp period",
            if ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
                format!("{} ns", ctx.queue.get_timestamp_period())
            } else {
                "no timestamps".to_string()
            },
        ),
    ];
    for (name, value) in rows {
        println!("  {name:<30} {value}");
    }
    Ok(ExitCode::SUCCESS)
}

fn sample(args: &SampleArgs) -> rollcall::Result<ExitCode> {
    let (rows, vocab) = (args.batch, args.vocab);
    let params: Vec<SamplingParams> = (0..u64::from(rows))
        .map(|r| {
            SamplingParams::new(args.temperature)
                .top_k(args.top_k)
                .top_p(args.top_p)
                .min_p(args.min_p)
                .seed(args.seed.wrapping_add(r))
        })
        .collect();
    if vocab == 0 {
        return Err(rollcall::Error::EmptyVocab);
    }
    let shape = match args.shape {
        Shape::Model => LogitsShape::Model,
        Shape::Flat => LogitsShape::Flat,
    };
    let values = synthetic::logits(rows as usize, vocab as usize, shape, args.seed);
    let owned = OwnedLogits::new(values, args.dtype);
    let logits = owned.view();
    let dtype = logits.dtype();

    let ctx = GpuContext::new()?;
    let mut sampler = Sampler::new(&ctx)?.with_split_rows(args.route.split_rows());
    let read_once = ReadOnce::new(&ctx)?;

    // Correctness: the host path against the CPU twin, row by row.
    let gpu = sampler.sample(logits, vocab, &params)?;
    let v = vocab as usize;
    let cpu_start = Instant::now();
    let traces: Vec<cpu::RowTrace> = params
        .iter()
        .enumerate()
        .map(|(r, p)| cpu::sample_traced(logits.slice(r * v, (r + 1) * v), p))
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
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
    } else {
        print_table(&report);
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

fn print_table(r: &Report) {
    let c = &r.config;
    println!("adapter: {}", r.adapter);
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

/// A value's name as typed on the command line.
fn cli_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn vote(args: &VoteArgs) -> rollcall::Result<ExitCode> {
    use rollcall_cli::replay::{parse_vote_file, preset, replay, synthetic_workload, Backend};
    let mut sets = Vec::new();
    if args.files.is_empty() {
        sets.push((
            "synthetic".to_string(),
            synthetic_workload(args.synthetic_questions, 40, 7),
        ));
    }
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| rollcall::Error::Data(format!("{}: {e}", path.display())))?;
        let name = path
            .file_stem()
            .map_or("votes".into(), |s| s.to_string_lossy().into_owned());
        sets.push((name, parse_vote_file(&text)?));
    }
    let allocation = match args.allocation.as_str() {
        "one" => rollcall::voting::scheduler::Allocation::Chunk(1),
        "fewest" => rollcall::voting::scheduler::Allocation::FewestToPass { first: 1 },
        other => {
            return Err(rollcall::Error::InvalidRule(format!(
                "unknown allocation {other:?} (one, fewest)"
            )))
        }
    };
    let rules: Vec<&str> = args
        .rules
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let mut configs = Vec::new();
    for name in &rules {
        let mut config = preset(name, args.max_votes)
            .ok_or_else(|| rollcall::Error::InvalidRule(format!("unknown rule {name:?}")))?;
        config.min_votes = args.min_votes.min(config.max_votes);
        configs.push((*name, config));
    }
    let ctx = if args.cpu {
        None
    } else {
        Some(GpuContext::new()?)
    };
    let backend = match &ctx {
        Some(ctx) => Backend::Gpu(ctx),
        None => Backend::Cpu,
    };
    let mut results = Vec::new();
    for (set, problems) in &sets {
        for (name, config) in &configs {
            let score = replay(
                problems,
                *config,
                allocation,
                args.shuffles,
                &backend,
                |done, total| {
                    eprint!("\r{set} {name}: shuffle {done}/{total}   ");
                },
            )?;
            eprintln!();
            results.push(serde_json::json!({
                "set": set, "questions": problems.len(), "rule": name,
                "accuracy": score.accuracy, "mean_samples": score.mean_samples,
            }));
        }
    }
    if args.json {
        let out = serde_json::json!({
            "backend": if args.cpu { "cpu twin".to_string() } else { ctx.as_ref().map(|c| c.describe()).unwrap_or_default() },
            "shuffles": args.shuffles, "max_votes": args.max_votes, "results": results,
        });
        println!("{out}");
    } else {
        println!(
            "{:<28} {:<22} {:>9} {:>13}",
            "set", "rule", "accuracy", "mean samples"
        );
        for r in &results {
            println!(
                "{:<28} {:<22} {:>9.3} {:>13.2}",
                r["set"].as_str().unwrap_or(""),
                r["rule"].as_str().unwrap_or(""),
                r["accuracy"].as_f64().unwrap_or(0.0),
                r["mean_samples"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tail(args: &TailArgs) -> rollcall::Result<ExitCode> {
    use rollcall::tail::{Estimator, TailStats};
    use rollcall_cli::study::{study, RewardFamily, StudyBackend};
    let family = RewardFamily::parse(&args.family, args.location, args.scale, args.p)?;
    let (n, alpha) = (args.n, args.alpha);
    let estimators = args
        .estimators
        .iter()
        .map(|name| {
            Ok(match name.trim() {
                "exact" => Estimator::ExpectedMax { n },
                "pass@k" => Estimator::PassAtK {
                    k: n,
                    threshold: 0.5,
                },
                "tea" => Estimator::Tea { n, alpha },
                "prefix-tea" => Estimator::PrefixTea {
                    n,
                    alpha,
                    prefixes: args.prefixes,
                },
                "gpd" => Estimator::Gpd { n, alpha },
                "grpo" => Estimator::Grpo { eps: 1e-4 },
                other => {
                    return Err(rollcall::Error::InvalidEstimator(format!(
                        "unknown estimator `{other}` (exact, pass@k, tea, prefix-tea, gpd, grpo)"
                    )))
                }
            })
        })
        .collect::<rollcall::Result<Vec<_>>>()?;
    for e in &estimators {
        e.validate()?;
    }
    if let Some(&m) = args
        .m
        .iter()
        .find(|&&m| m == 0 || m > rollcall::tail::MAX_SEGMENT)
    {
        return Err(rollcall::Error::InvalidEstimator(format!(
            "--m {m}: rollouts per prompt must be 1 to {}",
            rollcall::tail::MAX_SEGMENT
        )));
    }
    if args.m.is_empty() || args.prompts == 0 {
        return Err(rollcall::Error::InvalidEstimator(
            "--m and --prompts must not be empty or 0".into(),
        ));
    }
    let ctx;
    let mut kernels;
    let (backend, device) = if args.cpu {
        (StudyBackend::Cpu, "CPU twin".to_string())
    } else {
        ctx = GpuContext::new()?;
        kernels = TailStats::new(&ctx)?;
        (StudyBackend::Gpu(&mut kernels), ctx.describe())
    };
    let truth = family.best_of(n);
    let rows = study(
        family,
        n,
        &args.m,
        args.prompts,
        &estimators,
        args.seed,
        backend,
    )?;
    if let Some(path) = &args.svg {
        write_tail_svg(
            path,
            &rows,
            &format!("{family:?}, best of {n}: E = {truth:.4}"),
        )
        .map_err(|e| rollcall::Error::Data(format!("writing {}: {e}", path.display())))?;
    }
    if args.json {
        let out = serde_json::json!({
            "family": format!("{family:?}"),
            "n": n,
            "true_best_of_n": truth,
            "prompts": args.prompts,
            "alpha": alpha,
            "device": device,
            "rows": rows,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{device}");
    println!(
        "{family:?}: true E[max of {n}] = {truth:.4}; {} prompts per m, alpha {alpha}",
        args.prompts
    );
    println!(
        "{:<11} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "estimator", "m", "bias", "spread", "rmse", "no value"
    );
    for r in &rows {
        println!(
            "{:<11} {:>6} {:>10.4} {:>10.4} {:>10.4} {:>9}",
            r.estimator, r.m, r.bias, r.spread, r.rmse, r.no_value
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Two panels, bias and spread against m (log scale), one line per estimator.
fn write_tail_svg(
    path: &std::path::Path,
    rows: &[rollcall_cli::study::StudyRow],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let panels = root.split_evenly((1, 2));
    let mut names: Vec<&str> = rows.iter().map(|r| r.estimator.as_str()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let log_m = |m: u32| f64::from(m).log2();
    let x_lo = rows
        .iter()
        .map(|r| log_m(r.m))
        .fold(f64::INFINITY, f64::min);
    let x_hi = rows
        .iter()
        .map(|r| log_m(r.m))
        .fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_lo < x_hi {
        (x_lo, x_hi)
    } else {
        (x_lo - 1.0, x_lo + 1.0)
    };
    for (panel, (label, pick)) in panels.iter().zip([
        (
            "bias",
            (|r: &rollcall_cli::study::StudyRow| r.bias) as fn(&_) -> f64,
        ),
        ("spread", |r: &rollcall_cli::study::StudyRow| r.spread),
    ]) {
        let finite: Vec<f64> = rows.iter().map(pick).filter(|v| v.is_finite()).collect();
        let lo = finite.iter().cloned().fold(0.0f64, f64::min);
        let hi = finite.iter().cloned().fold(0.0f64, f64::max);
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(panel)
            .caption(label, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("rollouts per prompt m")
            .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.estimator == *name && pick(r).is_finite())
                .map(|r| (log_m(r.m), pick(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn bench(args: &BenchArgs) -> rollcall::Result<ExitCode> {
    use rollcall_cli::bench::{run, BenchOptions};
    let ctx = GpuContext::new()?;
    let options = BenchOptions {
        iters: args.iters as usize,
        quick: args.quick,
        families: args.families.iter().map(|f| f.trim().to_string()).collect(),
        cpu_twin: !args.no_cpu,
        only: args.only.clone(),
    };
    let rows = run(&ctx, &options, |what| eprint!("\r{what:<60}"))?;
    eprint!("\r{:<60}\r", "");
    let bracket_ms = rollcall_cli::bench::timing_bracket(&ctx, options.iters)?
        .median
        .as_secs_f64()
        * 1e3;
    let batch_one = rollcall_cli::bench::batch_one_ratios(&rows);
    if args.json {
        let out = serde_json::json!({
            "adapter": ctx.describe(),
            "iters": options.iters,
            "timing_bracket_ms": bracket_ms,
            "min_span_ms": rollcall_cli::bench::MIN_SPAN.as_secs_f64() * 1e3,
            "rows": rows,
            "batch_one_over_batch_64_per_row": batch_one,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", ctx.describe());
    println!(
        "times: median of {} runs ({}); ratio = read-once time of the same bytes / kernel time",
        options.iters,
        rows.first().map_or("-", |r| r.timing_source.as_str())
    );
    println!(
        "an empty timed span costs {bracket_ms:.3} ms here; sampling kernels shorter than {} ms \
         run back to back in one span (runs column) and are charged the span / runs",
        rollcall_cli::bench::MIN_SPAN.as_millis()
    );
    if let Some(probe) = rows
        .iter()
        .find(|r| r.kernel == rollcall_cli::bench::YARDSTICK_PROBE)
    {
        println!(
            "yardstick: read-once with scalar loads; with vector loads it reads at {:.2} of it \
             (above 1: divide the ratios by that)",
            probe.ratio_to_read_once
        );
    }
    println!(
        "{:<9} {:<46} {:<26} {:>10} {:>5} {:>10} {:>8} {:>10} {:>7} {:>10}",
        "family",
        "kernel",
        "size",
        "time ms",
        "runs",
        "MB moved",
        "GB/s",
        "read ms",
        "ratio",
        "cpu ms"
    );
    for r in &rows {
        println!(
            "{:<9} {:<46} {:<26} {:>10.3} {:>5} {:>10.2} {:>8.2} {:>10.3} {:>7.2} {:>10}",
            r.family,
            r.kernel,
            r.size,
            r.median_ms,
            r.repeats,
            (r.bytes_read + r.bytes_written) as f64 / 1e6,
            r.gb_per_s,
            r.read_once_ms,
            r.ratio_to_read_once,
            r.cpu_twin_ms.map_or("-".to_string(), |t| format!("{t:.1}"))
        );
    }
    if let (Some(unsplit), Some(split), Some(read_once)) =
        (batch_one.unsplit, batch_one.split, batch_one.read_once)
    {
        println!(
            "batch 1 / batch-64 per-row time, plain 128256: {unsplit:.2}x unsplit, \
             {split:.2}x rows split (read-once kernel: {read_once:.2}x)"
        );
    }
    if let Some(floor) = batch_one.dispatch_floor_ms {
        println!("one dispatch of next to nothing (read-once, 1 x 1024): {floor:.3} ms");
    }
    Ok(ExitCode::SUCCESS)
}
