//! GPU time of an encoded workload: timestamp queries written at the start and
//! end of the workload when the device has `TIMESTAMP_QUERY`, otherwise wall
//! time around submit and wait.
//!
//! Timestamps need only `TIMESTAMP_QUERY`: the workload is bracketed by two
//! empty compute passes whose `timestamp_writes` mark its beginning and end, so
//! kernels that open their own passes (like the sampler's) are timed as they
//! are.

use crate::{GpuContext, Result};
use std::time::{Duration, Instant};

/// How a [`Timing`] was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingSource {
    /// Timestamp queries on the device, bracketing the workload.
    Timestamps,
    /// Host wall time around submit and a blocking wait (includes submission
    /// and synchronisation overhead).
    WallClock,
}

impl std::fmt::Display for TimingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimingSource::Timestamps => "gpu timestamps",
            TimingSource::WallClock => "wall clock",
        })
    }
}

/// Per-iteration times of a workload and their minimum and median.
///
/// ```
/// use rollcall::internals::{Timing, TimingSource};
/// use std::time::Duration;
/// let t = Timing::from_samples(
///     vec![Duration::from_millis(3), Duration::from_millis(1), Duration::from_millis(2)],
///     TimingSource::WallClock,
/// );
/// assert_eq!(t.min, Duration::from_millis(1));
/// assert_eq!(t.median, Duration::from_millis(2));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// One time per iteration, in the order they ran.
    pub samples: Vec<Duration>,
    /// The fastest iteration.
    pub min: Duration,
    /// The median iteration (mean of the middle two for an even count).
    pub median: Duration,
    /// How the samples were measured.
    pub source: TimingSource,
}

impl Timing {
    /// Summarises `samples` (zero min and median when there are none).
    pub fn from_samples(samples: Vec<Duration>, source: TimingSource) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = match n {
            0 => Duration::ZERO,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
        Self {
            min: sorted.first().copied().unwrap_or(Duration::ZERO),
            median,
            samples,
            source,
        }
    }
}

/// Query set and buffers for one pair of timestamps.
struct Stamps {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

/// Measures one workload at a time; keeps its query set and buffers between
/// measurements. Each measurement is its own submit and waits for the GPU, so
/// workloads that stage writes with `Queue::write_buffer` (like
/// [`Sampler::encode`](crate::Sampler::encode)) can be measured repeatedly.
///
/// ```no_run
/// use rollcall::internals::GpuTimer;
/// let ctx = rollcall::GpuContext::new()?;
/// let mut timer = GpuTimer::new(&ctx);
/// let elapsed = timer.measure(|encoder| {
///     encoder.begin_compute_pass(&Default::default()); // the workload goes here
///     Ok(())
/// })?;
/// println!("{elapsed:?} ({})", timer.source());
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct GpuTimer {
    ctx: GpuContext,
    stamps: Option<Stamps>,
}

impl GpuTimer {
    /// Uses timestamp queries when the device has `TIMESTAMP_QUERY`, wall
    /// time otherwise.
    pub fn new(ctx: &GpuContext) -> Self {
        let device = &ctx.device;
        let stamps = ctx
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| Stamps {
                query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("rollcall timing"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                }),
                resolve: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("rollcall timing resolve"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("rollcall timing readback"),
                    size: 16,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period_ns: f64::from(ctx.queue.get_timestamp_period()),
            });
        Self {
            ctx: ctx.clone(),
            stamps,
        }
    }

    /// Always uses host wall time around submit and wait, even when the device
    /// has timestamps (to include submission and synchronisation overhead).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let timer = rollcall::internals::GpuTimer::wall_clock(&ctx);
    /// assert_eq!(timer.source(), rollcall::internals::TimingSource::WallClock);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn wall_clock(ctx: &GpuContext) -> Self {
        Self {
            ctx: ctx.clone(),
            stamps: None,
        }
    }

    /// How measurements are taken. A timer falls back to wall time for good
    /// if the device ever returns an end timestamp before its start.
    pub fn source(&self) -> TimingSource {
        if self.stamps.is_some() {
            TimingSource::Timestamps
        } else {
            TimingSource::WallClock
        }
    }

    /// Records the workload with `record` into a fresh encoder, submits it,
    /// waits for the GPU and returns the time the workload took (a device
    /// error while recording or running it comes back as `Err`).
    pub fn measure<F>(&mut self, record: F) -> Result<Duration>
    where
        F: FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    {
        let ctx = self.ctx.clone();
        ctx.scoped("timed workload", || self.measure_unscoped(record))
    }

    fn measure_unscoped<F>(&mut self, record: F) -> Result<Duration>
    where
        F: FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    {
        let device = &self.ctx.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("rollcall timing"),
        });
        let Some(stamps) = &self.stamps else {
            record(&mut encoder)?;
            return self.wall_time(encoder);
        };
        let stamp_pass = |encoder: &mut wgpu::CommandEncoder, begin, end| {
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rollcall timestamp"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &stamps.query_set,
                    beginning_of_pass_write_index: begin,
                    end_of_pass_write_index: end,
                }),
            });
        };
        stamp_pass(&mut encoder, Some(0), None);
        record(&mut encoder)?;
        stamp_pass(&mut encoder, None, Some(1));
        encoder.resolve_query_set(&stamps.query_set, 0..2, &stamps.resolve, 0);
        encoder.copy_buffer_to_buffer(&stamps.resolve, 0, &stamps.readback, 0, 16);
        let started = Instant::now();
        self.ctx.submit(encoder.finish());
        let bytes = self.ctx.read_buffer(&stamps.readback, 16)?;
        let wall = started.elapsed();
        let ticks: [u64; 2] = bytemuck::pod_read_unaligned(&bytes);
        if ticks[1] == 0 || ticks[1] < ticks[0] {
            // The device's timestamps are unusable: time with the host from now on.
            self.stamps = None;
            return Ok(wall);
        }
        let ns = (ticks[1] - ticks[0]) as f64 * stamps.period_ns;
        Ok(Duration::from_nanos(ns.round() as u64))
    }

    fn wall_time(&self, encoder: wgpu::CommandEncoder) -> Result<Duration> {
        let commands = encoder.finish();
        // Drain earlier work so only this workload is timed.
        self.ctx.wait()?;
        let started = Instant::now();
        self.ctx.submit(commands);
        self.ctx.wait()?;
        Ok(started.elapsed())
    }
}

/// Times a workload: one untimed warm-up run, then `iterations` (at least 1)
/// timed runs, each recorded by `record` into its own encoder and submit.
///
/// ```no_run
/// use rollcall::{internals::time_gpu, GpuContext, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams};
/// let ctx = GpuContext::new()?;
/// # let logits_buffer: wgpu::Buffer = unimplemented!();
/// let sampler = Sampler::new(&ctx)?;
/// let mut batch = SampleBatch::new(&ctx, 64)?;
/// batch.set_params(&[SamplingParams::new(1.0).seed(3); 64])?;
/// let logits = LogitsBinding { buffer: &logits_buffer, offset: 0, rows: 64, vocab: 128256, dtype: LogitsDtype::F32 };
/// let timing = time_gpu(&ctx, 10, |encoder| sampler.encode(encoder, &logits, &mut batch))?;
/// println!("median {:?}, min {:?} ({})", timing.median, timing.min, timing.source);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn time_gpu<F>(ctx: &GpuContext, iterations: usize, mut record: F) -> Result<Timing>
where
    F: FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
{
    let mut timer = GpuTimer::new(ctx);
    timer.measure(&mut record)?;
    let samples = (0..iterations.max(1))
        .map(|_| timer.measure(&mut record))
        .collect::<Result<Vec<_>>>()?;
    Ok(Timing::from_samples(samples, timer.source()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let ms = Duration::from_millis;
        let t = Timing::from_samples(vec![ms(4), ms(1), ms(3), ms(2)], TimingSource::Timestamps);
        assert_eq!(t.min, ms(1));
        assert_eq!(t.median, Duration::from_micros(2500));
        assert_eq!(t.samples.len(), 4);
        let empty = Timing::from_samples(Vec::new(), TimingSource::WallClock);
        assert_eq!(empty.median, Duration::ZERO);
    }

    #[test]
    fn times_an_empty_workload() {
        let ctx = match GpuContext::new() {
            Ok(ctx) => ctx,
            Err(e) if std::env::var("ROLLCALL_ALLOW_NO_GPU").as_deref() == Ok("1") => {
                eprintln!("skipping GPU test: {e}");
                return;
            }
            Err(e) => panic!("GPU test needs an adapter: {e}"),
        };
        let timing = time_gpu(&ctx, 3, |encoder| {
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            Ok(())
        })
        .unwrap();
        assert_eq!(timing.samples.len(), 3);
        assert!(timing.min <= timing.median);
        assert!(timing.median < Duration::from_secs(5));
    }
}
