//! The portable benchmark behind `rollcall bench`: every kernel family on the
//! chosen adapter over a grid of sizes, each timed against a kernel that only
//! reads the same number of bytes once, interleaved in the same run, plus the
//! CPU twin's time on the same input.
//!
//! Bytes are what the job must move at the least: its inputs read once and
//! its outputs written once (intermediate passes are the kernel's own cost and
//! show up in the ratio). Ratio = read-once time of those bytes / kernel time:
//! 1.0 means the kernel runs at the speed of a plain read.

use crate::synthetic::{self, LogitsShape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollcall::compact::{cpu::compact as compact_cpu, CompactScratch, Compactor};
use rollcall::internals::ReadOnce;
use rollcall::internals::{GpuTimer, Timing};
use rollcall::sampling::cpu as sampling_cpu;
use rollcall::tail::{cpu as tail_cpu, Estimator, TailStats};
use rollcall::voting::{cpu::VoteTables as CpuVoteTables, RoundVotes, Segment};
use rollcall::voting::{Allocation, Scheduler};
use rollcall::voting::{RuleConfig, StopRule};
use rollcall::{
    Error, GpuContext, LogitsBinding, LogitsDtype, Result, SampleBatch, Sampler, SamplingParams,
};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed runs per kernel (after one warm-up), interleaved with the
    /// reference.
    pub iters: usize,
    /// A small grid (seconds, for smoke tests) instead of the full one.
    pub quick: bool,
    /// Families to run: any of `sampling`, `voting`, `compact`, `tail`.
    pub families: Vec<String>,
    /// Also time the CPU twin.
    pub cpu_twin: bool,
    /// Time only the rows whose `"{kernel} {size}"` contains one of these
    /// (all rows when empty): for A/B runs of one kernel.
    pub only: Vec<String>,
}

impl BenchOptions {
    /// Whether the row `kernel` at `size` is to be timed.
    ///
    /// ```
    /// let options = rollcall_cli::bench::BenchOptions {
    ///     only: vec!["plain T=1, f32 256 x".into()],
    ///     ..Default::default()
    /// };
    /// assert!(options.selects("plain T=1, f32", "256 x 128256 model-like"));
    /// assert!(!options.selects("greedy, f32", "256 x 128256 model-like"));
    /// assert!(rollcall_cli::bench::BenchOptions::default().selects("greedy, f32", "1 x 1024"));
    /// ```
    pub fn selects(&self, kernel: &str, size: &str) -> bool {
        let label = format!("{kernel} {size}");
        self.only.is_empty() || self.only.iter().any(|o| label.contains(o.as_str()))
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            iters: 10,
            quick: false,
            families: ["sampling", "voting", "compact", "tail"]
                .map(String::from)
                .to_vec(),
            cpu_twin: true,
            only: Vec::new(),
        }
    }
}

/// One kernel at one size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    /// Kernel family.
    pub family: String,
    /// Kernel and its settings.
    pub kernel: String,
    /// Problem size.
    pub size: String,
    /// `gpu timestamps` or `wall clock`.
    pub timing_source: String,
    /// Runs back to back in each timed span (one submit), kernel and
    /// read-once alike; times are per run (see [`MIN_SPAN`]).
    pub repeats: u32,
    /// Median kernel time, milliseconds.
    pub median_ms: f64,
    /// Fastest kernel time, milliseconds.
    pub min_ms: f64,
    /// Bytes the job must read.
    pub bytes_read: u64,
    /// Bytes the job must write.
    pub bytes_written: u64,
    /// (read + written) / median time, GB/s.
    pub gb_per_s: f64,
    /// Median time of the read-once kernel over the same number of bytes.
    pub read_once_ms: f64,
    /// Read-once bandwidth, GB/s (over the bytes it read: the kernel's, to
    /// within a word per row).
    pub read_once_gb_per_s: f64,
    /// Time the read-once kernel takes for the kernel's bytes (at its
    /// measured bandwidth) / median_ms.
    pub ratio_to_read_once: f64,
    /// CPU twin on the same input (one run), milliseconds.
    pub cpu_twin_ms: Option<f64>,
    /// The ratio against the row-per-workgroup read alone (equal to
    /// `ratio_to_read_once` when that read was the faster).
    pub ratio_to_rows_read: f64,
    /// Which read the ratio is taken against: `rows` (one workgroup a row
    /// of the kernel's input) or `filled grid` (the same bytes as enough
    /// rows to fill the adapter, [`FILL_ROWS`], when that read was faster).
    pub yardstick: String,
}

/// Rows of the filled-grid yardstick: more workgroups than a large GPU
/// keeps resident (see the cost model, docs/PERFORMANCE.md section 9).
pub const FILL_ROWS: u32 = 2048;

/// A plain read of a number of bytes: the read-once kernel over a buffer of
/// that many bytes (rounded up to whole words, and to fewer than one word per
/// row more) as f32 words, in rows of up to 128 Ki words (512 KiB, like a row
/// of logits: the read-once kernel gives each row a workgroup, so much shorter
/// rows would time its per-row overhead). The yardstick for kernels whose
/// input is not f32 logits: votes, flags, rewards, and (shaped like the
/// logits, [`PlainRead::with_rows`]) 16-bit logits.
///
/// ```no_run
/// use rollcall_cli::bench::PlainRead;
/// use rollcall::internals::ReadOnce;
/// let ctx = rollcall::GpuContext::new()?;
/// let read_once = ReadOnce::new(&ctx)?;
/// let plain = PlainRead::new(&ctx, 256 * 128_256 * 2); // as many bytes as 256 bf16 rows
/// let timing = rollcall::internals::time_gpu(&ctx, 10, |e| plain.encode(&read_once, e))?;
/// println!("{} bytes in {:?}", plain.bytes(), timing.median);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct PlainRead {
    buffer: wgpu::Buffer,
    sums: wgpu::Buffer,
    rows: u32,
    row_words: u32,
    /// Bytes it actually reads.
    bytes: u64,
}

const REFERENCE_ROW: u32 = 131_072;

impl PlainRead {
    /// A device buffer of at least `bytes` bytes (zeroed, as wgpu clears new
    /// buffers) and room for its row sums.
    pub fn new(ctx: &GpuContext, bytes: u64) -> Self {
        let words = bytes.div_ceil(4).max(1);
        let rows = words.div_ceil(u64::from(REFERENCE_ROW)) as u32;
        let row_words = words.div_ceil(u64::from(rows)) as u32;
        Self::with_rows(ctx, rows, row_words)
    }

    /// A read of `rows` rows of `row_words` words each (at least 1 of each),
    /// one workgroup per row: the shape of a logits matrix, which the read's
    /// speed depends on. For 16-bit logits, `rows` = batch and `row_words` =
    /// vocab / 2 rounded up.
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let words = rollcall_cli::bench::PlainRead::with_rows(&ctx, 256, 128_256 / 2);
    /// assert_eq!(words.bytes(), 256 * 128_256 * 2);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn with_rows(ctx: &GpuContext, rows: u32, row_words: u32) -> Self {
        let (rows, row_words) = (rows.max(1), row_words.max(1));
        let buffer = storage_buffer(
            ctx,
            "rollcall bench reference",
            u64::from(rows) * u64::from(row_words) * 4,
        );
        let sums = storage_buffer(ctx, "rollcall bench reference sums", u64::from(rows) * 4);
        Self {
            buffer,
            sums,
            rows,
            row_words,
            bytes: u64::from(rows) * u64::from(row_words) * 4,
        }
    }

    /// Bytes one run reads.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records one read of the buffer with `read_once`.
    pub fn encode(&self, read_once: &ReadOnce, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        read_once.encode(
            encoder,
            &LogitsBinding {
                buffer: &self.buffer,
                offset: 0,
                rows: self.rows,
                vocab: self.row_words,
                dtype: LogitsDtype::F32,
            },
            &self.sums,
        )
    }
}

/// How long one timed span of a small kernel should last: shorter kernels
/// run back to back in one span (one submit), as many times as a calibration
/// says fills it (at most [`MAX_REPEATS`]), and each run is charged the span's
/// time over the count. The span is bracketed by two timestamp passes, and an
/// empty bracket costs an adapter time of its own (0.04-0.12 ms on lavapipe,
/// see [`timing_bracket`]); a single run of a 0.3 ms kernel would carry it
/// whole. In an engine the sampler's dispatches ride in the model's
/// command buffer and never pay it.
pub const MIN_SPAN: Duration = Duration::from_millis(4);

/// Most runs of a kernel put in one timed span.
pub const MAX_REPEATS: u32 = 64;

/// How many runs of a kernel that takes `one_run` fill a timed span of at
/// least `span`: 1 to [`MAX_REPEATS`].
///
/// ```
/// use rollcall_cli::bench::{runs_per_span, MAX_REPEATS};
/// use std::time::Duration;
/// let ms = Duration::from_micros;
/// assert_eq!(runs_per_span(ms(4000), ms(300)), 14);
/// assert_eq!(runs_per_span(ms(4000), ms(30_000)), 1);
/// assert_eq!(runs_per_span(ms(4000), Duration::ZERO), MAX_REPEATS);
/// ```
pub fn runs_per_span(span: Duration, one_run: Duration) -> u32 {
    let runs = span.as_secs_f64() / one_run.as_secs_f64().max(1e-9);
    (runs.ceil() as u32).clamp(1, MAX_REPEATS)
}

/// Times `kernel` and `reference` alternately (one warm-up each first);
/// `setup` runs, untimed and waited for, before every run of `kernel`.
/// With `min_span`, both are recorded back to back in each timed span as
/// many times (at most [`MAX_REPEATS`]) as it takes the faster of the two to
/// fill it (calibrated on short spans, less an empty span's cost), and the
/// times are per run; the count is returned last. Only
/// for kernels that give the same result when run again on their output
/// state (`setup` runs once per span).
///
/// ```no_run
/// use rollcall_cli::bench::{time_interleaved, PlainRead, MIN_SPAN};
/// use rollcall::internals::ReadOnce;
/// let ctx = rollcall::GpuContext::new()?;
/// let read_once = ReadOnce::new(&ctx)?;
/// let (small, large) = (PlainRead::new(&ctx, 4096), PlainRead::new(&ctx, 1 << 20));
/// let (t_small, t_large, runs) = time_interleaved(
///     &ctx,
///     10,
///     Some(MIN_SPAN),
///     |_| {},
///     |e| small.encode(&read_once, e),
///     |e| large.encode(&read_once, e),
/// )?;
/// println!("{:?} vs {:?} per run, {runs} runs a span", t_small.median, t_large.median);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn time_interleaved(
    ctx: &GpuContext,
    iters: usize,
    min_span: Option<Duration>,
    mut setup: impl FnMut(&mut wgpu::CommandEncoder),
    mut kernel: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
    mut reference: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<(Timing, Timing, u32)> {
    let mut timer = GpuTimer::new(ctx);
    let mut prepare = || -> Result<()> {
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        setup(&mut encoder);
        ctx.submit(encoder.finish());
        ctx.wait()
    };
    prepare()?;
    timer.measure(&mut kernel)?;
    timer.measure(&mut reference)?;
    let repeats = match min_span {
        None => 1,
        Some(span) => {
            // Per-run times from spans of a few runs less an empty span's
            // cost (fastest of two each), sized on the faster of kernel and
            // reference so that both spans fill `span`.
            const RUNS: u32 = 4;
            let mut fastest = |f: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>| {
                let mut once = || timer.measure(|e| (0..RUNS).try_for_each(|_| f(e)));
                Ok::<_, Error>(once()?.min(once()?))
            };
            let empty = fastest(&mut |_| Ok(()))?;
            let kernel_runs = fastest(&mut kernel)?;
            let reference_runs = fastest(&mut reference)?;
            let per_run = kernel_runs.min(reference_runs).saturating_sub(empty) / RUNS;
            runs_per_span(span, per_run)
        }
    };
    let mut repeated = |f: &mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>| {
        timer
            .measure(|e| (0..repeats).try_for_each(|_| f(e)))
            .map(|t| t / repeats)
    };
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..iters.max(1) {
        prepare()?;
        a.push(repeated(&mut kernel)?);
        b.push(repeated(&mut reference)?);
    }
    let source = timer.source();
    Ok((
        Timing::from_samples(a, source),
        Timing::from_samples(b, source),
        repeats,
    ))
}

/// The time an empty timed span takes on this adapter (median of `iters`):
/// the cost of the timing bracket itself, which a single run of a kernel
/// also carries (see [`MIN_SPAN`]).
///
/// ```no_run
/// let ctx = rollcall::GpuContext::new()?;
/// let bracket = rollcall_cli::bench::timing_bracket(&ctx, 10)?;
/// println!("an empty timed span: {:?}", bracket.median);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn timing_bracket(ctx: &GpuContext, iters: usize) -> Result<Timing> {
    rollcall::internals::time_gpu(ctx, iters, |_| Ok(()))
}

/// One row; the reference read `reference_bytes`, and its time is scaled to
/// the bytes the kernel moves for the ratio.
#[allow(clippy::too_many_arguments)]
fn row(
    family: &str,
    kernel: String,
    size: String,
    timing: &Timing,
    reference: &Timing,
    reference_bytes: u64,
    bytes_read: u64,
    bytes_written: u64,
    cpu: Option<Duration>,
    repeats: u32,
) -> BenchRow {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let moved = (bytes_read + bytes_written) as f64;
    let gbps = |d: Duration| moved / d.as_secs_f64().max(1e-12) / 1e9;
    let reference_secs = reference.median.as_secs_f64().max(1e-12);
    let reference_gbps = reference_bytes as f64 / reference_secs / 1e9;
    BenchRow {
        family: family.into(),
        kernel,
        size,
        timing_source: timing.source.to_string(),
        repeats,
        median_ms: ms(timing.median),
        min_ms: ms(timing.min),
        bytes_read,
        bytes_written,
        gb_per_s: gbps(timing.median),
        read_once_ms: ms(reference.median),
        read_once_gb_per_s: reference_gbps,
        // Read-once time of the kernel's own byte count / kernel time.
        ratio_to_read_once: moved / (reference_gbps * 1e9) / timing.median.as_secs_f64().max(1e-12),
        cpu_twin_ms: cpu.map(ms),
        ratio_to_rows_read: moved / (reference_gbps * 1e9) / timing.median.as_secs_f64().max(1e-12),
        yardstick: "rows".into(),
    }
}

/// How much faster than the row-per-workgroup read `rows_read` the same
/// bytes read as [`FILL_ROWS`] rows (at least the input's rows): the two
/// timed in alternation. Above 1, the filled grid is the faster yardstick.
fn fill_factor(
    ctx: &GpuContext,
    iters: usize,
    read_once: &ReadOnce,
    bytes: u64,
    input_rows: u32,
    mut rows_read: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let rows = FILL_ROWS.max(input_rows);
    let words = bytes.div_ceil(4).div_ceil(u64::from(rows)).max(1) as u32;
    let grid = PlainRead::with_rows(ctx, rows, words);
    let (grid_time, rows_time, _) = time_interleaved(
        ctx,
        iters,
        None,
        |_| {},
        |e| grid.encode(read_once, e),
        &mut rows_read,
    )?;
    // Per byte: the grid reads up to a word a row more.
    let grid_per_byte = grid_time.median.as_secs_f64() / grid.bytes() as f64;
    let rows_per_byte = rows_time.median.as_secs_f64() / bytes.max(1) as f64;
    Ok(rows_per_byte / grid_per_byte.max(1e-18))
}

/// Takes `rows` against the faster yardstick: divides their ratios (and the
/// read's time) by `factor` when it is above 1.
fn apply_fill_factor(rows: &mut [BenchRow], factor: f64) {
    if factor <= 1.0 {
        return;
    }
    for r in rows {
        r.ratio_to_read_once /= factor;
        r.read_once_ms /= factor;
        r.read_once_gb_per_s *= factor;
        r.yardstick = "filled grid".into();
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Times `kernel` (each run after an untimed `setup`) in alternation with a
/// plain read of the `bytes` (read, written) it moves, then the CPU twin by
/// `cpu`, and makes the row.
#[allow(clippy::too_many_arguments)]
fn read_once_row(
    ctx: &GpuContext,
    options: &BenchOptions,
    read_once: &ReadOnce,
    (family, kernel_name, size): (&str, String, String),
    (bytes_read, bytes_written): (u64, u64),
    setup: impl FnMut(&mut wgpu::CommandEncoder),
    kernel: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
    cpu: impl FnOnce() -> Result<Option<Duration>>,
) -> Result<BenchRow> {
    let reference = PlainRead::new(ctx, bytes_read + bytes_written);
    let (timing, reference_timing, repeats) =
        time_interleaved(ctx, options.iters, None, setup, kernel, |e| {
            reference.encode(read_once, e)
        })?;
    Ok(row(
        family,
        kernel_name,
        size,
        &timing,
        &reference_timing,
        reference.bytes,
        bytes_read,
        bytes_written,
        cpu()?,
        repeats,
    ))
}

/// One tail estimator over one batch, timed as a bench row.
struct TailTiming<'a> {
    est: Estimator,
    rewards: &'a [f32],
    offsets: &'a [u32],
}

impl TailTiming<'_> {
    /// `encode` (the estimator, with or without its sort) in alternation
    /// with a read of the bytes it moves: rewards and offsets in, one value
    /// and status per segment and one advantage per rollout out.
    fn row(
        &self,
        ctx: &GpuContext,
        options: &BenchOptions,
        read_once: &ReadOnce,
        kernel_name: String,
        size: String,
        encode: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<BenchRow> {
        let n = self.rewards.len() as u64;
        let s = (self.offsets.len() as u64).saturating_sub(1);
        let bytes_read = 4 * n + 4 * (s + 1);
        let bytes_written = 4 * n + 8 * s;
        read_once_row(
            ctx,
            options,
            read_once,
            ("tail", kernel_name, size),
            (bytes_read, bytes_written),
            |_| {},
            encode,
            || {
                let est = self.est;
                Ok(options.cpu_twin.then(|| {
                    timed(|| {
                        std::hint::black_box(tail_cpu::estimate(self.rewards, self.offsets, est))
                    })
                    .1
                }))
            },
        )
    }
}

/// The CPU twin's time for `twin` when asked (`None` otherwise); its
/// error, if any, is the bench's.
fn twin_time<T>(asked: bool, twin: impl FnOnce() -> Result<T>) -> Result<Option<Duration>> {
    if !asked {
        return Ok(None);
    }
    let (out, t) = timed(twin);
    std::hint::black_box(out?);
    Ok(Some(t))
}

/// Runs the benchmark grid, calling `progress` before each kernel.
///
/// ```no_run
/// let ctx = rollcall::GpuContext::new()?;
/// let options = rollcall_cli::bench::BenchOptions { quick: true, ..Default::default() };
/// for row in rollcall_cli::bench::run(&ctx, &options, |_| {})? {
///     println!("{} {} {}: {:.2}x read-once", row.family, row.kernel, row.size, row.ratio_to_read_once);
/// }
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn run(
    ctx: &GpuContext,
    options: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<BenchRow>> {
    for f in &options.families {
        if !["sampling", "voting", "compact", "tail"].contains(&f.as_str()) {
            return Err(Error::Data(format!(
                "unknown bench family `{f}` (sampling, voting, compact, tail)"
            )));
        }
    }
    if !(1..=10_000).contains(&options.iters) {
        return Err(Error::Data(format!(
            "bench iterations must be 1 to 10000, got {}",
            options.iters
        )));
    }
    let wants = |f: &str| options.families.iter().any(|x| x == f);
    progress("read-once with vector loads");
    let probe = vector_read_probe(ctx, options)?;
    let mut grid = Grid {
        ctx,
        options,
        read_once: ReadOnce::new(ctx)?,
        rows: vec![probe],
        progress: &mut progress,
    };
    if wants("sampling") {
        grid.sampling()?;
        grid.speculative()?;
    }
    if wants("voting") {
        grid.voting()?;
    }
    if wants("compact") {
        grid.compact()?;
    }
    if wants("tail") {
        grid.tail()?;
    }
    Ok(grid.rows)
}

/// Synthetic f32 logits on the device, with room for the read-once kernel's
/// row sums.
struct DeviceLogits {
    /// The logits in f32; stored on the device as `dtype` (rounded).
    host: Vec<f32>,
    /// `host` rounded to `dtype` (empty for f32).
    f16: Vec<half::f16>,
    bf16: Vec<half::bf16>,
    dtype: LogitsDtype,
    buffer: wgpu::Buffer,
    sums: wgpu::Buffer,
    rows: u32,
    vocab: u32,
}

impl DeviceLogits {
    fn new(ctx: &GpuContext, rows: u32, vocab: u32, shape: LogitsShape) -> Self {
        Self::with_dtype(ctx, rows, vocab, shape, LogitsDtype::F32)
    }

    fn with_dtype(
        ctx: &GpuContext,
        rows: u32,
        vocab: u32,
        shape: LogitsShape,
        dtype: LogitsDtype,
    ) -> Self {
        let host = synthetic::logits(rows as usize, vocab as usize, shape, 7);
        let bytes = (host.len() as u64 * dtype.size_bytes()).next_multiple_of(4);
        let buffer = storage_buffer(ctx, "rollcall bench logits", bytes);
        let sums = storage_buffer(ctx, "rollcall bench row sums", u64::from(rows) * 4);
        let mut logits = Self {
            host,
            f16: Vec::new(),
            bf16: Vec::new(),
            dtype,
            buffer,
            sums,
            rows,
            vocab,
        };
        logits.upload(ctx);
        logits
    }

    /// Writes `host` (after a change), rounded to the dtype, to the device.
    fn upload(&mut self, ctx: &GpuContext) {
        let bytes: &[u8] = match self.dtype {
            LogitsDtype::F32 => bytemuck::cast_slice(&self.host),
            LogitsDtype::F16 => {
                self.f16 = self.host.iter().map(|&x| half::f16::from_f32(x)).collect();
                bytemuck::cast_slice(&self.f16)
            }
            LogitsDtype::Bf16 => {
                self.bf16 = self.host.iter().map(|&x| half::bf16::from_f32(x)).collect();
                bytemuck::cast_slice(&self.bf16)
            }
        };
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(4), 0);
        ctx.queue.write_buffer(&self.buffer, 0, &padded);
    }

    /// The logits as stored, for the CPU twin.
    fn host_logits(&self) -> rollcall::HostLogits<'_> {
        match self.dtype {
            LogitsDtype::F32 => rollcall::HostLogits::F32(&self.host),
            LogitsDtype::F16 => rollcall::HostLogits::F16(&self.f16),
            LogitsDtype::Bf16 => rollcall::HostLogits::Bf16(&self.bf16),
        }
    }

    /// Bytes of logits on the device (without the padding to a word).
    fn bytes(&self) -> u64 {
        self.host.len() as u64 * self.dtype.size_bytes()
    }

    fn binding(&self) -> LogitsBinding<'_> {
        LogitsBinding {
            buffer: &self.buffer,
            offset: 0,
            rows: self.rows,
            vocab: self.vocab,
            dtype: self.dtype,
        }
    }
}

/// The read-once kernel over `logits`, or over `words` (the same number of
/// bytes as plain words) when given.
fn yardstick(
    read_once: &ReadOnce,
    words: Option<&PlainRead>,
    logits: &DeviceLogits,
    encoder: &mut wgpu::CommandEncoder,
) -> Result<()> {
    match words {
        Some(words) => words.encode(read_once, encoder),
        None => read_once.encode(encoder, &logits.binding(), &logits.sums),
    }
}

/// Kernel name of the row that times the read-once kernel with vector loads
/// against the yardstick (the same read with four scalar loads per group).
pub const YARDSTICK_PROBE: &str = "read-once, vector loads (yardstick probe)";

/// The yardstick of every ratio is the read-once kernel with scalar loads: on
/// lavapipe it reads faster than the same kernel with one vector load per four
/// f32 logits (0.83-0.86 of it in quiet runs), though the sampler gains from
/// vector loads. A yardstick chosen per run by timing both flipped with the
/// machine's noise, so it is fixed, and this row ([`YARDSTICK_PROBE`], on
/// 64 x 128 256 f32, or 8 x 32 000 with `--quick`) shows the other read
/// against it: on an adapter where its ratio is above 1, the vector read is
/// the faster plain read, and the sampler's ratios should be divided by it.
fn vector_read_probe(ctx: &GpuContext, options: &BenchOptions) -> Result<BenchRow> {
    let (batch, vocab) = if options.quick {
        (8, 32_000)
    } else {
        (64, 128_256)
    };
    let logits = DeviceLogits::new(ctx, batch, vocab, LogitsShape::Model);
    let (binding, sums) = (logits.binding(), &logits.sums);
    let scalar = ReadOnce::new(ctx)?;
    let vector = ReadOnce::with_vector_loads(ctx)?;
    let (vector_timing, scalar_timing, repeats) = time_interleaved(
        ctx,
        options.iters,
        Some(MIN_SPAN),
        |_| {},
        |e| vector.encode(e, &binding, sums),
        |e| scalar.encode(e, &binding, sums),
    )?;
    let bytes = u64::from(batch) * u64::from(vocab) * 4;
    Ok(row(
        "sampling",
        YARDSTICK_PROBE.into(),
        format!("{batch} x {vocab} model-like"),
        &vector_timing,
        &scalar_timing,
        bytes,
        bytes,
        u64::from(batch) * 4,
        None,
        repeats,
    ))
}

/// The batch-1 target in one place: batch 1's time over batch 64's time per
/// row, plain sampling at vocab 128 256, unsplit (the adapter's default
/// route), with rows split, and for the
/// read-once kernel over the same logits (what one dispatch of one row costs
/// the adapter anyway). `None` where the grid lacks a row (`--quick`). The
/// batch-1 rows are short, so each timed span runs them back to back (see
/// [`MIN_SPAN`]): the times are a dispatch's cost inside a command buffer,
/// without the timing bracket's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct BatchOneRatios {
    /// Unsplit batch 1 / batch-64 per-row time (both on the default route).
    pub unsplit: Option<f64>,
    /// `SplitRows::Always` batch 1 / default-route batch-64 per-row time.
    pub split: Option<f64>,
    /// The read-once kernel's batch 1 / batch-64 per-row time.
    pub read_once: Option<f64>,
    /// The read-once kernel's time (ms) per run for one row of 1 024 logits:
    /// what one dispatch costs the adapter with next to nothing to read, a floor
    /// under every batch-1 time (and twice over for the split path's two
    /// dispatches).
    pub dispatch_floor_ms: Option<f64>,
}

/// [`BatchOneRatios`] from the rows of [`run`].
///
/// ```
/// use rollcall_cli::bench::{batch_one_ratios, BenchRow};
/// let row = |kernel: &str, size: &str, ms: f64, read_ms: f64| BenchRow {
///     family: "sampling".into(),
///     kernel: kernel.into(),
///     size: size.into(),
///     timing_source: "wall clock".into(),
///     repeats: 1,
///     median_ms: ms,
///     min_ms: ms,
///     bytes_read: 0,
///     bytes_written: 0,
///     gb_per_s: 0.0,
///     read_once_ms: read_ms,
///     read_once_gb_per_s: 0.0,
///     ratio_to_read_once: 0.0,
///     cpu_twin_ms: None,
///     ratio_to_rows_read: 0.0,
///     yardstick: "rows".into(),
/// };
/// let rows = [
///     row("plain T=1, f32", "1 x 128256 model-like", 0.4, 0.2),
///     row("plain T=1, rows split, f32", "1 x 128256 model-like", 0.3, 0.2),
///     row("plain T=1, f32", "64 x 128256 model-like", 12.8, 6.4),
///     row("plain T=1, f32", "1 x 1024 model-like", 0.1, 0.05),
/// ];
/// let r = batch_one_ratios(&rows);
/// let close = |x: Option<f64>, want: f64| (x.unwrap() - want).abs() < 1e-12;
/// assert!(close(r.unsplit, 2.0) && close(r.split, 1.5) && close(r.read_once, 2.0));
/// assert!(close(r.dispatch_floor_ms, 0.05));
/// ```
pub fn batch_one_ratios(rows: &[BenchRow]) -> BatchOneRatios {
    let find_size = |kernel: &str, size: &str| {
        rows.iter()
            .find(|r| r.family == "sampling" && r.kernel == kernel && r.size == size)
    };
    let find =
        |kernel: &str, batch: u32| find_size(kernel, &format!("{batch} x 128256 model-like"));
    let dispatch_floor_ms =
        find_size("plain T=1, f32", "1 x 1024 model-like").map(|r| r.read_once_ms);
    let Some(batch_64) = find("plain T=1, f32", 64) else {
        return BatchOneRatios {
            dispatch_floor_ms,
            ..Default::default()
        };
    };
    let per_row = batch_64.median_ms / 64.0;
    let read_per_row = batch_64.read_once_ms / 64.0;
    let unsplit = find("plain T=1, f32", 1);
    BatchOneRatios {
        unsplit: unsplit.map(|r| r.median_ms / per_row),
        split: find("plain T=1, rows split, f32", 1).map(|r| r.median_ms / per_row),
        read_once: unsplit.map(|r| r.read_once_ms / read_per_row),
        dispatch_floor_ms,
    }
}

/// What every family's benchmark shares: the adapter, the options, the
/// yardstick, and the rows measured so far.
struct Grid<'a> {
    ctx: &'a GpuContext,
    options: &'a BenchOptions,
    read_once: ReadOnce,
    rows: Vec<BenchRow>,
    progress: &'a mut dyn FnMut(&str),
}

/// The bench row with penalties over 512 history tokens and 16 biases a row.
const PENALTY_RUN: &str = "plain T=1, penalties (512 history) + 16 biases";

/// A bench row's history tokens and biases.
type PenaltyHistory = (Vec<u32>, Vec<(u32, f32)>);

/// Row `r`'s 512 history tokens and 16 biases for the penalty bench row.
fn penalty_history(r: u32, vocab: u32) -> PenaltyHistory {
    let token = |k: u32| (r.wrapping_mul(7919).wrapping_add(k.wrapping_mul(104_729))) % vocab;
    let tokens = (0..512).map(token).collect();
    let bias = (0..16).map(|k| (token(1000 + k), k as f32 - 8.0)).collect();
    (tokens, bias)
}

/// The bench row that samples with a token mask on every row.
const MASKED_RUN: &str = "plain T=1, bitmask on every row";

/// One mask row per batch row, shaped like a grammar's: runs of allowed and
/// banned tokens (about half allowed), different per row.
fn grammar_like_masks(rows: u32, vocab: u32) -> Vec<u32> {
    let per_row = rollcall::sampling::mask::words_per_row(vocab);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..rows as usize * per_row)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Whole words allowed or banned, with some mixed ones.
            match state % 4 {
                0 => 0,
                1 => u32::MAX,
                _ => (state >> 32) as u32,
            }
        })
        .collect()
}

/// A device-only storage buffer of `bytes` (at least one word).
fn storage_buffer(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A round of 4 votes per prompt over a few answers (most prompts agree):
/// the voting benchmarks' workload.
pub fn voting_round(prompts: u32, seed: u64) -> (Vec<Segment>, Vec<u32>) {
    votes_round(prompts, 4, seed)
}

/// A round of `per` votes for each of `prompts` prompts, answers as in
/// [`voting_round`].
fn votes_round(prompts: u32, per: u32, seed: u64) -> (Vec<Segment>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let segments = (0..prompts)
        .map(|p| Segment {
            prompt: p,
            start: p * per,
            count: per,
        })
        .collect();
    let answers = (0..prompts * per)
        .map(|_| {
            if rng.random_bool(0.7) {
                0
            } else {
                rng.random_range(1..6)
            }
        })
        .collect();
    (segments, answers)
}

/// The voting benchmarks' rule: Beta leader-vs-runner-up at 0.95, 1 to 64
/// votes.
pub fn voting_rule() -> RuleConfig {
    RuleConfig {
        rule: StopRule::Beta {
            threshold: 0.95,
            prior: 1.0,
        },
        min_votes: 1,
        max_votes: 64,
    }
}

/// The calibrated rule at δ = 1%, 2 to 40 votes (the budget of
/// docs/VOTING.md's measurements).
pub fn calibrated_voting_rule() -> RuleConfig {
    RuleConfig {
        rule: StopRule::Calibrated { delta: 0.01 },
        min_votes: 2,
        max_votes: 40,
    }
}

/// The CPU twin of a benchmark round of the calibrated rule: count `round`
/// into fresh tables, refit `rounds`' prior (50 EM steps its first round, 5
/// after), decide every prompt and compact the live ones.
fn calibrated_round_cpu(
    rounds: &mut rollcall::voting::calibrated::CalibratedRounds,
    round: &RoundVotes<'_>,
    prompts: u32,
    capacity: u32,
) -> Result<Vec<u32>> {
    let mut tables = CpuVoteTables::new(prompts, capacity)?;
    tables.count(round)?;
    let live: Vec<u32> = (0..prompts).collect();
    let keep: Vec<u32> = rounds
        .decide_round(&tables, &live)?
        .iter()
        .map(|d| u32::from(!d.stopped))
        .collect();
    Ok(compact_cpu(&keep))
}

/// The CPU twin of one benchmark round: count `round` into fresh tables of
/// `capacity` answers, decide every prompt by `config`, compact the live ones.
///
/// ```
/// let (segments, answers) = rollcall_cli::bench::voting_round(100, 3);
/// let round = rollcall::voting::RoundVotes { segments: &segments, answers: &answers, tokens: None };
/// let live = rollcall_cli::bench::voting_round_cpu(&round, 100, 16, &rollcall_cli::bench::voting_rule())?;
/// assert!(live.len() <= 100);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn voting_round_cpu(
    round: &RoundVotes<'_>,
    prompts: u32,
    capacity: u32,
    config: &RuleConfig,
) -> Result<Vec<u32>> {
    config.validate()?;
    let mut tables = CpuVoteTables::new(prompts, capacity)?;
    tables.count(round)?;
    let keep = (0..prompts)
        .map(|p| Ok(u32::from(!tables.decide(config, p)?.stopped)))
        .collect::<Result<Vec<u32>>>()?;
    Ok(compact_cpu(&keep))
}

/// The tail benchmarks' estimators.
pub const TAIL_ESTIMATORS: [Estimator; 3] = [
    Estimator::ExpectedMax { n: 8 },
    Estimator::Tea {
        n: 128,
        alpha: 0.25,
    },
    Estimator::Gpd {
        n: 128,
        alpha: 0.25,
    },
];

/// The tail benchmarks' batch: `segments` segments of `m` uniform rewards
/// (fixed seed), and their offsets.
///
/// ```
/// let (rewards, offsets) = rollcall_cli::bench::tail_batch(3, 4);
/// assert_eq!((rewards.len(), offsets), (12, vec![0, 4, 8, 12]));
/// ```
pub fn tail_batch(segments: u32, m: u32) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let rewards = (0..segments * m).map(|_| rng.random::<f32>()).collect();
    let offsets = (0..=segments).map(|s| s * m).collect();
    (rewards, offsets)
}

impl Grid<'_> {
    fn sampling(&mut self) -> Result<()> {
        let (ctx, options) = (self.ctx, self.options);
        let read_once = &self.read_once;
        let (rows, progress) = (&mut self.rows, &mut self.progress);
        let sampler = Sampler::new(ctx)?;
        // Small batches split rows across workgroups on GPUs (not on CPU
        // adapters); time both ways. Large batches on GPUs take the
        // one-dispatch route (CPU adapters a separate first pass for plain
        // and greedy batches): time it beside the default.
        let split = Sampler::new(ctx)?.with_split_rows(rollcall::internals::SplitRows::Always);
        let fused = Sampler::new(ctx)?.with_split_rows(rollcall::internals::SplitRows::Fused);
        let with_exp = ReadOnce::with_exp_per_logit(ctx)?;
        use LogitsDtype::{Bf16, F16, F32};
        use LogitsShape::{Flat, Model};
        let sizes: &[(u32, u32, LogitsShape, LogitsDtype)] = if options.quick {
            &[(8, 32_000, Model, F32)]
        } else {
            &[
                // One row of next to nothing: the fixed cost of a dispatch.
                (1, 1_024, Model, F32),
                (1, 128_256, Model, F32),
                (64, 128_256, Model, F32),
                (256, 128_256, Model, F32),
                (256, 128_256, Flat, F32),
                (256, 32_000, Model, F32),
                // 16-bit logits: half the bytes, and a decode per logit.
                (256, 128_256, Model, F16),
                (256, 128_256, Model, Bf16),
            ]
        };
        let modes: [(&str, SamplingParams); 3] = [
            ("plain T=1", SamplingParams::new(1.0)),
            (
                "top-k 50 + top-p 0.9",
                SamplingParams::new(1.0).top_k(50).top_p(0.9),
            ),
            ("greedy", SamplingParams::greedy()),
        ];
        for &(batch, vocab, shape, dtype) in sizes {
            let dtype_name = match dtype {
                F32 => "f32",
                F16 => "f16",
                Bf16 => "bf16",
            };
            let shape_name = match shape {
                Model => "model-like",
                Flat => "flat",
            };
            let size = format!("{batch} x {vocab} {shape_name}");
            let ceiling_name = format!("read-once + exp per logit (ceiling), {dtype_name}");
            let mut runs: Vec<(String, SamplingParams, &Sampler)> = modes
                .iter()
                .filter(|(name, _)| !(matches!(shape, Flat) && *name == "greedy"))
                .map(|(name, p)| (name.to_string(), *p, &sampler))
                .collect();
            // Small batches: the split route beside the default.
            if batch < 32 {
                runs.push(("plain T=1, rows split".into(), modes[0].1, &split));
            }
            // The engine features: a grammar mask on every row, top-nσ.
            if batch >= 64 && matches!(shape, Model) && dtype == F32 {
                runs.push((MASKED_RUN.into(), modes[0].1, &sampler));
                runs.push((
                    "top-nσ 1.0".into(),
                    SamplingParams::new(1.0).top_n_sigma(1.0),
                    &sampler,
                ));
                runs.push((
                    PENALTY_RUN.into(),
                    SamplingParams::new(1.0).penalties(1.1, 0.5, 0.5),
                    &sampler,
                ));
                runs.push((
                    "plain T=1, top-20 logprobs".into(),
                    SamplingParams::new(1.0).top_logprobs(20),
                    &sampler,
                ));
            }
            // Masked rows (banned tokens, grammar masks, padded vocabularies
            // set to -inf) must not cost a second read: time them after the
            // clean ones, one token in 64 masked (every stream meets one).
            if batch >= 64 && matches!(shape, Model) && vocab == 128_256 && dtype == F32 {
                runs.push((
                    "plain T=1, 1/64 masked to -inf".into(),
                    modes[0].1,
                    &sampler,
                ));
                runs.push(("plain T=1, one dispatch".into(), modes[0].1, &fused));
            }
            runs.retain(|(name, _, _)| options.selects(&format!("{name}, {dtype_name}"), &size));
            let time_ceiling = options.selects(&ceiling_name, &size);
            if runs.is_empty() && !time_ceiling {
                continue;
            }
            let mut logits = DeviceLogits::with_dtype(ctx, batch, vocab, shape, dtype);
            let bytes = logits.bytes();
            // The yardstick reads the same bytes once: for 16-bit logits, as
            // words in rows shaped like the logits', without decoding them (a
            // decoding read is slower per byte, and would flatter the ratios).
            let word_read =
                (dtype != F32).then(|| PlainRead::with_rows(ctx, batch, vocab.div_ceil(2)));
            let reference_bytes = word_read.as_ref().map_or(bytes, |r| r.bytes);
            let first_row = rows.len();
            // The ceiling for an exact sampler that reports log-probabilities:
            // the same read with one exp per logit.
            if time_ceiling {
                progress(&format!("sampling read-once + exp, {dtype_name} {size}"));
                let (kernel, reference, repeats) = time_interleaved(
                    ctx,
                    options.iters,
                    Some(MIN_SPAN),
                    |_| {},
                    |e| with_exp.encode(e, &logits.binding(), &logits.sums),
                    |e| yardstick(read_once, word_read.as_ref(), &logits, e),
                )?;
                rows.push(row(
                    "sampling",
                    ceiling_name.clone(),
                    size.clone(),
                    &kernel,
                    &reference,
                    reference_bytes,
                    bytes,
                    u64::from(batch) * 4,
                    None,
                    repeats,
                ));
            }
            for (name, base, sampler) in &runs {
                if name.contains("masked") {
                    for (i, x) in logits.host.iter_mut().enumerate() {
                        if i % 64 == 0 {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                    logits.upload(ctx);
                }
                progress(&format!("sampling {name}, {dtype_name} {size}"));
                let binding = logits.binding();
                let params: Vec<SamplingParams> =
                    (0..u64::from(batch)).map(|r| base.seed(r)).collect();
                let penalised = name == PENALTY_RUN;
                let mut out = if penalised {
                    // Room for the 512 tokens and every timed step's append.
                    let mut out = SampleBatch::with_history(ctx, batch, 1000)?;
                    for r in 0..batch {
                        let (tokens, bias) = penalty_history(r, vocab);
                        out.set_history(
                            r,
                            vocab,
                            &rollcall::sampling::RowHistory {
                                prompt: &tokens[..256],
                                output: &tokens[256..],
                                logit_bias: &bias,
                                ..Default::default()
                            },
                        )?;
                    }
                    out
                } else {
                    SampleBatch::new(ctx, batch)?
                };
                out.set_params(&params)?;
                let masked = name == MASKED_RUN;
                let mask_words = if masked {
                    grammar_like_masks(batch, vocab)
                } else {
                    Vec::new()
                };
                let mask_buffer =
                    storage_buffer(ctx, "rollcall bench masks", mask_words.len() as u64 * 4);
                let mask_rows: Vec<Option<u32>> = (0..batch).map(Some).collect();
                if masked {
                    ctx.queue
                        .write_buffer(&mask_buffer, 0, bytemuck::cast_slice(&mask_words));
                    out.set_mask_rows(&mask_rows)?;
                }
                let token_mask = rollcall::sampling::TokenMask {
                    buffer: &mask_buffer,
                    offset: 0,
                    rows: batch,
                };
                let (kernel, reference, repeats) = time_interleaved(
                    ctx,
                    options.iters,
                    Some(MIN_SPAN),
                    |_| {},
                    |e| sampler.encode_masked(e, &binding, &token_mask, &mut out),
                    |e| yardstick(read_once, word_read.as_ref(), &logits, e),
                )?;
                let cpu = if options.cpu_twin {
                    let host_mask = rollcall::sampling::HostMask {
                        words: &mask_words,
                        rows: &mask_rows,
                    };
                    let histories: Vec<PenaltyHistory> =
                        (0..batch).map(|r| penalty_history(r, vocab)).collect();
                    let row_histories: Vec<rollcall::sampling::RowHistory> = histories
                        .iter()
                        .map(|(tokens, bias)| rollcall::sampling::RowHistory {
                            prompt: &tokens[..256],
                            output: &tokens[256..],
                            logit_bias: bias,
                            ..Default::default()
                        })
                        .collect();
                    let mut sample_options = rollcall::sampling::SampleOptions::default();
                    if masked {
                        sample_options = sample_options.mask(host_mask);
                    }
                    if penalised {
                        sample_options = sample_options.histories(&row_histories);
                    }
                    let (out, t) = timed(|| {
                        sampling_cpu::sample_with(
                            logits.host_logits(),
                            vocab,
                            &params,
                            &sample_options,
                        )
                    });
                    out?;
                    Some(t)
                } else {
                    None
                };
                rows.push(row(
                    "sampling",
                    format!("{name}, {dtype_name}"),
                    size.clone(),
                    &kernel,
                    &reference,
                    reference_bytes,
                    bytes,
                    u64::from(batch) * 20,
                    cpu,
                    repeats,
                ));
            }
            // Against the faster of the two reads of these bytes.
            let factor = fill_factor(ctx, options.iters, read_once, reference_bytes, batch, |e| {
                yardstick(read_once, word_read.as_ref(), &logits, e)
            })?;
            apply_fill_factor(&mut rows[first_row..], factor);
        }
        Ok(())
    }

    /// Speculative verification of `k` = 4 drafts a request: deterministic
    /// drafts (the target's most likely token at each position, as a good
    /// n-gram or greedy draft proposes), and drafts with their draft
    /// model's logits. Bytes: the target logits read once (and the draft
    /// logits for the second row).
    fn speculative(&mut self) -> Result<()> {
        use rollcall::speculative::{
            cpu as verify_cpu, DraftBinding, DraftDistribution, Drafts, Verifier, VerifyBatch,
            VerifyOptions,
        };
        let (ctx, options) = (self.ctx, self.options);
        let read_once = &self.read_once;
        let (rows, progress) = (&mut self.rows, &mut self.progress);
        let (requests, vocab) = if options.quick {
            (8, 32_000)
        } else {
            (64, 128_256)
        };
        let k = 4u32;
        let size = format!("{requests} x {k} drafts x {vocab} model-like");
        let kinds = [
            "speculative k=4, deterministic drafts, f32",
            "speculative k=4, draft logits, f32",
        ];
        if !kinds.iter().any(|name| options.selects(name, &size)) {
            return Ok(());
        }
        let target = DeviceLogits::new(ctx, requests * (k + 1), vocab, LogitsShape::Model);
        let draft = DeviceLogits::new(ctx, requests * k, vocab, LogitsShape::Model);
        let v = vocab as usize;
        let mut tokens = Vec::with_capacity((requests * k) as usize);
        for r in 0..requests {
            for i in 0..k {
                let row = &target.host[((r * (k + 1) + i) as usize) * v..][..v];
                let best = (0..v)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0);
                tokens.push(best as u32);
            }
        }
        let token_buffer =
            storage_buffer(ctx, "rollcall bench draft tokens", tokens.len() as u64 * 4);
        ctx.queue
            .write_buffer(&token_buffer, 0, bytemuck::cast_slice(&tokens));
        let params: Vec<SamplingParams> = (0..u64::from(requests))
            .map(|r| SamplingParams::new(1.0).seed(r))
            .collect();
        let lens = vec![k; requests as usize];
        let verifier = Verifier::new(ctx)?;
        let mut batch = VerifyBatch::new(ctx, requests, k)?;
        batch.set_requests(&params, &lens)?;
        let first_row = rows.len();
        for (name, with_logits) in kinds.iter().zip([false, true]) {
            if !options.selects(name, &size) {
                continue;
            }
            progress(&format!("sampling {name} {size}"));
            let draft_binding = if with_logits {
                DraftBinding::Logits(draft.binding())
            } else {
                DraftBinding::Deterministic
            };
            let (kernel, reference, repeats) = time_interleaved(
                ctx,
                options.iters,
                Some(MIN_SPAN),
                |_| {},
                |e| {
                    verifier.encode(
                        e,
                        &target.binding(),
                        &token_buffer,
                        &draft_binding,
                        None,
                        &mut batch,
                    )
                },
                |e| yardstick(read_once, None, &target, e),
            )?;
            let cpu = if options.cpu_twin {
                let verify_options = VerifyOptions {
                    draft: if with_logits {
                        DraftDistribution::Logits(draft.host_logits())
                    } else {
                        DraftDistribution::Deterministic
                    },
                    mask: None,
                    histories: None,
                };
                let drafts = Drafts {
                    tokens: &tokens,
                    lens: &lens,
                };
                let (out, t) = timed(|| {
                    verify_cpu::verify(
                        target.host_logits(),
                        vocab,
                        &params,
                        &drafts,
                        &verify_options,
                    )
                });
                out?;
                Some(t)
            } else {
                None
            };
            let bytes_read = target.bytes() + if with_logits { draft.bytes() } else { 0 };
            rows.push(row(
                "sampling",
                name.to_string(),
                size.clone(),
                &kernel,
                &reference,
                target.bytes(),
                bytes_read,
                u64::from(requests) * (u64::from(k) * 12 + 8 + 32),
                cpu,
                repeats,
            ));
        }
        let factor = fill_factor(
            ctx,
            options.iters,
            read_once,
            target.bytes(),
            target.rows,
            |e| yardstick(read_once, None, &target, e),
        )?;
        apply_fill_factor(&mut rows[first_row..], factor);
        Ok(())
    }

    fn voting(&mut self) -> Result<()> {
        let (ctx, options) = (self.ctx, self.options);
        let read_once = &self.read_once;
        let (rows, progress) = (&mut self.rows, &mut self.progress);
        let sizes: &[u32] = if options.quick {
            &[10_000]
        } else {
            &[10_000, 100_000, 1_000_000]
        };
        let capacity = 16;
        // The calibrated rule refits its prior over every prompt in each
        // round (5 EM steps after the first round's 50) before deciding.
        for (rule_name, config) in [
            ("Beta 0.95", voting_rule()),
            ("calibrated 1%", calibrated_voting_rule()),
        ] {
            let calibrated = matches!(config.rule, StopRule::Calibrated { .. });
            let kernel_name = format!("round: count 4 votes, {rule_name} rule, compaction");
            for &prompts in sizes {
                if !options.selects(&kernel_name, &format!("{prompts} prompts")) {
                    continue;
                }
                progress(&format!("voting round {prompts} prompts, {rule_name}"));
                let (segments, answers) = voting_round(prompts, 3);
                let live: Vec<u32> = (0..prompts).collect();
                let scheduler = std::cell::RefCell::new(Scheduler::new(
                    ctx,
                    prompts,
                    capacity,
                    config,
                    Allocation::Chunk(4),
                )?);
                let round = RoundVotes {
                    segments: &segments,
                    answers: &answers,
                    tokens: None,
                };
                let votes = answers.len() as u64;
                let p = u64::from(prompts);
                // Count: segments (16 B) and answers (4 B) read, per-prompt
                // totals (32 B) and 2 table entries (8 B) read and written.
                // Rule: list (4 B), totals and 2 entries read, decision (16 B)
                // and flag (4 B) written. Compaction: flags read, positions
                // written. The calibrated rule: a pass before its EM steps
                // reads each prompt's totals, cache stamp (4 B) and 2 entries
                // and writes its agreement (4 B) and likelihood slot (4 B);
                // the EM steps each read every prompt's totals and its cached
                // evidence (52 likelihoods, a stamp, its agreement), the first
                // also its slot (4 B; a multiset's likelihoods are computed
                // once, by its first prompt) and writes the cache, and they
                // write and read back the 52 posteriors and 2 agreement sums
                // per workgroup (`CALIBRATED_SUM_PROMPTS` prompts); a states
                // pass reads what the rule reads (list, totals, 2 entries)
                // and writes each live prompt's state slot (4 B), which its
                // decisions read (4 B), and the flags are copied (4 B read, 4
                // written). Reads of the small state tables (a state's
                // likelihoods or risk, its first prompt's table: shared by
                // the prompts of the state, a state's first prompt computing
                // its value) are not counted.
                let components = rollcall::voting::calibrated::COMPONENTS as u64;
                let words = components + 2;
                let (em_steps, cache) = if calibrated {
                    let steps = rollcall::voting::calibrated::LATER_EM_STEPS;
                    (u64::from(steps), words * 4)
                } else {
                    (0, 0)
                };
                let decide_extra = if calibrated {
                    (4 + 32 + 16) * p + 4 * p + 4 * p
                } else {
                    0
                };
                let per_sum = u64::from(rollcall::internals::CALIBRATED_SUM_PROMPTS);
                let sums = (p.div_ceil(per_sum) * words * 4) * em_steps;
                let em_read = em_steps.min(1) * (32 + 4 + 16 + 4) * p + em_steps * (32 + cache) * p;
                let bytes_read = 16 * p
                    + 4 * votes
                    + (32 + 16) * p
                    + (4 + 32 + 16) * p
                    + 4 * p
                    + em_read
                    + sums
                    + decide_extra;
                let bytes_written = (32 + 16) * p
                    + (16 + 4) * p
                    + 4 * p
                    + em_steps.min(1) * (cache + 4) * p
                    + sums
                    + if calibrated { 8 * p } else { 0 };
                // Each timed round starts from empty tables (cleared untimed);
                // the calibrated rule's weights carry over (a later round).
                rows.push(read_once_row(
                    ctx,
                    options,
                    read_once,
                    ("voting", kernel_name.clone(), format!("{prompts} prompts")),
                    (bytes_read, bytes_written),
                    |e| scheduler.borrow().encode_reset(e),
                    |e| scheduler.borrow_mut().encode_round(e, &round, &live, false),
                    || {
                        if !calibrated {
                            return twin_time(options.cpu_twin, || {
                                voting_round_cpu(&round, prompts, capacity, &config)
                            });
                        }
                        // The f64 twin's refit takes seconds a step past 10⁴
                        // prompts: timed there only.
                        let asked = options.cpu_twin && prompts <= 10_000;
                        let mut rounds =
                            rollcall::voting::calibrated::CalibratedRounds::new(&config)?;
                        if asked {
                            // The first round (50 EM steps), untimed.
                            calibrated_round_cpu(&mut rounds, &round, prompts, capacity)?;
                        }
                        twin_time(asked, || {
                            calibrated_round_cpu(&mut rounds, &round, prompts, capacity)
                        })
                    },
                )?);
            }
        }
        // An RL batch's round: every prompt's 64 rollouts at once, counted
        // with an invocation a prompt (a serial loop of 64 votes) and with a
        // workgroup a prompt (GPUs choose it from 8 votes a prompt).
        use rollcall::internals::CountRoute;
        let kernel_name = "count 64 votes a prompt (RL batch)";
        let prompts = 1024u32;
        for (route_name, route) in [
            ("an invocation a prompt", CountRoute::PerInvocation),
            ("a workgroup a prompt", CountRoute::PerWorkgroup),
        ] {
            let size = format!("{prompts} prompts, {route_name}");
            if !options.selects(kernel_name, &size) {
                continue;
            }
            progress(&format!("vote counting {size}"));
            let (segments, answers) = votes_round(prompts, 64, 4);
            let round = RoundVotes {
                segments: &segments,
                answers: &answers,
                tokens: None,
            };
            let tables = std::cell::RefCell::new(
                rollcall::voting::VoteTables::new(ctx, prompts, capacity)?.with_count_route(route),
            );
            let p = u64::from(prompts);
            // Segments (16 B) and answers (4 B) read; totals (32 B) and the
            // table entries used (6 answers, 8 B each) read and written.
            let bytes_read = 16 * p + 4 * answers.len() as u64 + (32 + 6 * 8) * p;
            let bytes_written = (32 + 6 * 8) * p;
            rows.push(read_once_row(
                ctx,
                options,
                read_once,
                ("voting", kernel_name.into(), size),
                (bytes_read, bytes_written),
                |e| tables.borrow().encode_reset(e),
                |e| tables.borrow_mut().encode_count(e, &round),
                || {
                    twin_time(options.cpu_twin, || {
                        CpuVoteTables::new(prompts, capacity)?.count(&round)
                    })
                },
            )?);
        }
        // The rule over that batch (a budget of 128, so prompts can stay
        // live), with an invocation a prompt (the leader scan, the rule and
        // ConSol's fewest-votes search in serial loops) and with a workgroup
        // a prompt (GPUs choose it).
        use rollcall::internals::DecideRoute;
        let kernel_name = "decide 64 votes a prompt (RL batch)";
        let (segments, answers) = votes_round(prompts, 64, 4);
        let round = RoundVotes {
            segments: &segments,
            answers: &answers,
            tokens: None,
        };
        let list: Vec<u32> = (0..prompts).collect();
        let rules = [
            (
                "Beta 0.95",
                StopRule::Beta {
                    threshold: 0.95,
                    prior: 1.0,
                },
                false,
            ),
            ("ConSol SPRT, fewest votes", StopRule::CONSOL_SPRT, true),
        ];
        for (rule_name, rule, want_fewest) in rules {
            let config = RuleConfig {
                rule,
                min_votes: 1,
                max_votes: 128,
            };
            for (route_name, route) in [
                ("an invocation a prompt", DecideRoute::PerInvocation),
                ("a workgroup a prompt", DecideRoute::PerWorkgroup),
            ] {
                let size = format!("{prompts} prompts, {rule_name}, {route_name}");
                if !options.selects(kernel_name, &size) {
                    continue;
                }
                progress(&format!("decide {size}"));
                let mut counted = rollcall::voting::VoteTables::new(ctx, prompts, capacity)?
                    .with_decide_route(route);
                counted.count(&round)?;
                let tables = std::cell::RefCell::new(counted);
                let p = u64::from(prompts);
                // List (4 B), totals (32 B) and the table entries used (6
                // answers, 8 B each) read; decision (16 B), keep flag (4 B)
                // and, asked, next votes (4 B) written.
                let bytes_read = (4 + 32 + 6 * 8) * p;
                let bytes_written = (16 + 4 + 4 * u64::from(want_fewest)) * p;
                rows.push(read_once_row(
                    ctx,
                    options,
                    read_once,
                    ("voting", kernel_name.into(), size),
                    (bytes_read, bytes_written),
                    |_| {},
                    |e| {
                        tables
                            .borrow_mut()
                            .encode_decide_list(e, &config, &list, want_fewest)
                    },
                    || {
                        twin_time(options.cpu_twin, || {
                            let mut twin = CpuVoteTables::new(prompts, capacity)?;
                            twin.count(&round)?;
                            (0..prompts)
                                .map(|p| twin.decide(&config, p))
                                .collect::<Result<Vec<_>>>()
                        })
                    },
                )?);
            }
        }
        // GRPO's rewards and advantages over that batch's 64 rollouts a
        // prompt (given rewards, a tenth of them tied), with an invocation
        // a prompt segment and with a workgroup a segment (GPUs choose it).
        use rollcall::internals::RewardRoute;
        let kernel_name = "GRPO rewards 64 a prompt (RL batch)";
        let per = 64u32;
        let segments: Vec<Segment> = (0..prompts)
            .map(|p| Segment {
                prompt: p,
                start: p * per,
                count: per,
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let given: Vec<f32> = (0..prompts * per)
            .map(|i| {
                if i % 10 == 0 {
                    0.5
                } else {
                    rng.random::<f32>()
                }
            })
            .collect();
        for (route_name, route) in [
            ("an invocation a prompt", RewardRoute::PerInvocation),
            ("a workgroup a prompt", RewardRoute::PerWorkgroup),
        ] {
            let size = format!("{prompts} prompts, {route_name}");
            if !options.selects(kernel_name, &size) {
                continue;
            }
            progress(&format!("rewards {size}"));
            let tables = std::cell::RefCell::new(
                rollcall::voting::VoteTables::new(ctx, prompts, capacity)?.with_reward_route(route),
            );
            let n = u64::from(prompts * per);
            // Segments (16 B a prompt) and rewards read; rewards and
            // advantages written.
            let bytes_read = 16 * u64::from(prompts) + 4 * n;
            let bytes_written = 8 * n;
            rows.push(read_once_row(
                ctx,
                options,
                read_once,
                ("voting", kernel_name.into(), size),
                (bytes_read, bytes_written),
                |_| {},
                |e| {
                    tables
                        .borrow_mut()
                        .encode_rewards(e, &segments, &given, 1e-4)
                },
                || {
                    twin_time(options.cpu_twin, || {
                        rollcall::voting::rewards::group_advantages(&segments, &given, 1e-4)
                    })
                },
            )?);
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<()> {
        let (ctx, options) = (self.ctx, self.options);
        let read_once = &self.read_once;
        let (rows, progress) = (&mut self.rows, &mut self.progress);
        use wgpu::util::DeviceExt;
        let sizes: &[u32] = if options.quick {
            &[100_000]
        } else {
            &[1_000_000, 10_000_000]
        };
        let compactor = Compactor::new(ctx)?;
        let kernel_name = "stream compaction, half kept";
        for &n in sizes {
            if !options.selects(kernel_name, &format!("{n} flags")) {
                continue;
            }
            progress(&format!("compaction {n} flags"));
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let keep: Vec<u32> = (0..n).map(|_| u32::from(rng.random_bool(0.5))).collect();
            let kept = keep.iter().filter(|&&k| k != 0).count() as u64;
            let flags = ctx
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("rollcall bench flags"),
                    contents: bytemuck::cast_slice(&keep),
                    usage: wgpu::BufferUsages::STORAGE,
                });
            let out = storage_buffer(ctx, "rollcall bench compacted", u64::from(n) * 4);
            let count = storage_buffer(ctx, "rollcall bench count", 4);
            let scratch = CompactScratch::new(ctx, n)?;
            let bytes_read = u64::from(n) * 4;
            let bytes_written = kept * 4 + 4;
            rows.push(read_once_row(
                ctx,
                options,
                read_once,
                ("compact", kernel_name.into(), format!("{n} flags")),
                (bytes_read, bytes_written),
                |_| {},
                |e| compactor.encode(e, &flags, n, &scratch, &out, &count),
                || {
                    Ok(options
                        .cpu_twin
                        .then(|| timed(|| std::hint::black_box(compact_cpu(&keep))).1))
                },
            )?);
        }
        Ok(())
    }

    fn tail(&mut self) -> Result<()> {
        let (ctx, options) = (self.ctx, self.options);
        let read_once = &self.read_once;
        let (rows, progress) = (&mut self.rows, &mut self.progress);
        let sizes: &[(u32, u32)] = if options.quick {
            &[(256, 64)]
        } else {
            &[(16_384, 16), (4_096, 64), (1_024, 256), (64, 4_096)]
        };
        for &(segments, m) in sizes {
            let size = format!("{segments} x {m}");
            let estimators: Vec<_> = TAIL_ESTIMATORS
                .into_iter()
                .filter(|est| options.selects(&format!("sort + {}", est.name()), &size))
                .collect();
            if estimators.is_empty() {
                continue;
            }
            let (rewards, offsets) = tail_batch(segments, m);
            let mut tail = TailStats::new(ctx)?;
            tail.upload(&rewards, &offsets)?;
            for est in estimators {
                progress(&format!("tail {} {size}", est.name()));
                let timing = TailTiming {
                    est,
                    rewards: &rewards,
                    offsets: &offsets,
                };
                rows.push(timing.row(
                    ctx,
                    options,
                    read_once,
                    format!("sort + {}", est.name()),
                    size.clone(),
                    |e| tail.encode_estimate(e, est),
                )?);
            }
        }
        // The estimators alone (the sort written once before) at the
        // long-segment RL shape on both estimate routes: an invocation a
        // segment (64 segments: one workgroup) and a workgroup a segment
        // (GPUs choose it).
        use rollcall::internals::EstimateRoute;
        let kernel_name = "estimate alone";
        let (segments, m) = (64u32, 4_096u32);
        let (rewards, offsets) = tail_batch(segments, m);
        // (Not in the quick grid: the sort of 4 096-reward segments alone
        // takes a few hundred milliseconds on a CPU adapter.)
        let timed_estimators = if options.quick {
            &[][..]
        } else {
            &TAIL_ESTIMATORS[1..]
        };
        for &est in timed_estimators {
            for (route_name, route) in [
                ("an invocation a segment", EstimateRoute::PerInvocation),
                ("a workgroup a segment", EstimateRoute::PerWorkgroup),
            ] {
                let size = format!("{segments} x {m}, {}, {route_name}", est.name());
                if !options.selects(kernel_name, &size) {
                    continue;
                }
                progress(&format!("tail {size}"));
                let mut tail = TailStats::new(ctx)?.with_estimate_route(route);
                tail.upload(&rewards, &offsets)?;
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                tail.encode_estimate(&mut encoder, est)?;
                ctx.submit(encoder.finish());
                let timing = TailTiming {
                    est,
                    rewards: &rewards,
                    offsets: &offsets,
                };
                rows.push(
                    timing.row(ctx, options, read_once, kernel_name.into(), size, |e| {
                        tail.encode_estimate_without_order(e, est)
                    })?,
                );
            }
        }
        Ok(())
    }
}
