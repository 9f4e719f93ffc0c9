//! The yardstick for sampler throughput: a kernel that only reads the same
//! logits once, with the sampler's layout and dispatch structure, and sums each
//! row (one f32 per row, so the reads cannot be optimized away).
//!
//! Sampler throughput is reported as a ratio to this kernel on the same adapter
//! and the same buffer: 1.0 would mean sampling costs no more than reading the
//! logits once.

use crate::gpu::logits::{DispatchRecords, LogitsKernel, LogitsKernelKey, LogitsShader};
use crate::{Error, GpuContext, HostLogits, LogitsBinding, Result};
use std::sync::Mutex;

/// The read-once shader: `exp_per_logit` also takes one `exp` per logit
/// (see [`ReadOnce::with_exp_per_logit`]); `vector_loads` reads f32 rows that
/// start on a 16-byte boundary four logits at a time, as the sampler does
/// (see [`ReadOnce::with_vector_loads`]).
pub(crate) fn shader(exp_per_logit: bool, vector_loads: bool) -> Result<LogitsShader> {
    let label = match (exp_per_logit, vector_loads) {
        (true, _) => "read_rows/exp",
        (false, true) => "read_once/vec4",
        (false, false) => "read_once",
    };
    crate::gpu::logits::logits_shader(
        label,
        "read_once.wgsl",
        "read_rows",
        &format!("const EXP_PER_LOGIT: bool = {exp_per_logit};"),
        vector_loads,
    )
}

/// The read-once kernel: one pipeline for every logits dtype, built once.
///
/// [`ReadOnce::encode`] records, into the caller's encoder, one pass that reads
/// every logit of a [`LogitsBinding`] once (same workgroup layout, element
/// order and chunking as [`Sampler::encode`](crate::Sampler::encode)) and
/// writes each row's sum as an f32 to `out`.
///
/// Dispatch records go through `Queue::write_buffer`, so they take effect at
/// the next submit: encode at most once per submit, like the sampler (or
/// several times over the same binding, which writes the same records).
///
/// ```no_run
/// use rollcall::internals::ReadOnce;
/// use rollcall::{GpuContext, LogitsBinding, LogitsDtype};
/// let ctx = GpuContext::new()?;
/// let read_once = ReadOnce::new(&ctx)?;
/// let (rows, vocab) = (8u32, 32000u32);
/// let logits = vec![0.25f32; (rows * vocab) as usize];
/// let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
///     label: None,
///     size: (logits.len() * 4) as u64,
///     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
///     mapped_at_creation: false,
/// });
/// ctx.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&logits));
/// let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
///     label: None,
///     size: u64::from(rows) * 4,
///     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
///     mapped_at_creation: false,
/// });
/// let binding = LogitsBinding { buffer: &buffer, offset: 0, rows, vocab, dtype: LogitsDtype::F32 };
/// let mut encoder = ctx.device.create_command_encoder(&Default::default());
/// read_once.encode(&mut encoder, &binding, &out)?;
/// ctx.submit(encoder.finish());
///
/// // Or from host memory, reading the sums back:
/// let sums = read_once.sum_rows(rollcall::HostLogits::F32(&logits), vocab)?;
/// assert_eq!(sums[0], 8000.0);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct ReadOnce {
    kernel: LogitsKernel,
    records: Mutex<DispatchRecords>,
}

impl ReadOnce {
    /// Compiles the read-once pipelines on `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Self::build(ctx, "rollcall read-once", "read_rows", false, false)
    }

    /// Every read-once kernel binds the per-row sums at 2 and the vector view
    /// at 3 (the shader declares it; only the vector loads read it).
    fn build(
        ctx: &GpuContext,
        label: &'static str,
        kernel: &'static str,
        exp_per_logit: bool,
        vector_loads: bool,
    ) -> Result<Self> {
        let key = LogitsKernelKey {
            kernel,
            constant: 0,
            extra: &[false],
        };
        Ok(Self {
            kernel: LogitsKernel::new(ctx, label, key, || shader(exp_per_logit, vector_loads))?,
            records: Mutex::new(DispatchRecords::new(ctx)?),
        })
    }

    /// The same read with four f32 logits per load where rows start on a
    /// 16-byte boundary, as the sampler reads them. Which of the two reads is
    /// faster depends on the adapter; `rollcall bench` prints this one's
    /// ratio to the scalar read, its yardstick.
    ///
    /// ```no_run
    /// use rollcall::internals::ReadOnce;
    /// let ctx = rollcall::GpuContext::new()?;
    /// let vector = ReadOnce::with_vector_loads(&ctx)?;
    /// let sums = vector.sum_rows(rollcall::HostLogits::F32(&[1.0, 2.0, 3.0, 4.0]), 4)?;
    /// assert_eq!(sums[0], 10.0);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn with_vector_loads(ctx: &GpuContext) -> Result<Self> {
        Self::build(
            ctx,
            "rollcall read-once, vector loads",
            "read_rows/vec4",
            false,
            true,
        )
    }

    /// The same kernel summing `exp(logit - 64)` instead of the logits: one
    /// read plus one `exp` per logit, the least an exact sampler that reports
    /// log-probabilities must do. Its ratio to [`ReadOnce::new`]'s time is the
    /// ceiling for such a sampler's ratio on the adapter (`rollcall bench`
    /// prints it beside the sampler).
    ///
    /// ```no_run
    /// use rollcall::internals::ReadOnce;
    /// let ctx = rollcall::GpuContext::new()?;
    /// let with_exp = ReadOnce::with_exp_per_logit(&ctx)?;
    /// let sums = with_exp.sum_rows(rollcall::HostLogits::F32(&[64.0, 64.0]), 2)?;
    /// assert_eq!(sums[0], 2.0);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn with_exp_per_logit(ctx: &GpuContext) -> Result<Self> {
        Self::build(
            ctx,
            "rollcall read-once with exp",
            "read_rows/exp",
            true,
            false,
        )
    }

    /// Caps the bytes of logits bound per dispatch, below the adapter's own
    /// binding limit. Give it the value passed to
    /// [`Sampler::with_max_chunk_bytes`](crate::Sampler::with_max_chunk_bytes),
    /// if any, so both kernels dispatch alike.
    pub fn with_max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.kernel.set_max_chunk_bytes(bytes);
        self
    }

    /// Records the read of `logits` into `encoder`: row `r`'s sum lands at
    /// byte `4 * r` of `out` (usage `STORAGE`, at least `4 * rows` bytes).
    /// Nothing waits on the GPU.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let chunks = self.kernel.plan(logits)?;
        let out_needed = u64::from(logits.rows) * 4;
        if out.size() < out_needed {
            return Err(Error::BufferTooSmall {
                what: "read-once output",
                needed: out_needed,
                got: out.size(),
            });
        }
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.kernel.encode(
            encoder,
            logits,
            &chunks,
            &mut records,
            &[out.as_entire_binding()],
            0,
        )
    }

    /// Host convenience: uploads `rows × vocab` logits, runs the kernel and
    /// reads back one sum per row (waits for the GPU). Meant for checking the
    /// kernel; time [`ReadOnce::encode`] on a resident buffer instead.
    pub fn sum_rows(&self, logits: HostLogits<'_>, vocab: u32) -> Result<Vec<f32>> {
        if vocab == 0 {
            return Err(Error::EmptyVocab);
        }
        if !logits.len().is_multiple_of(vocab as usize) {
            return Err(Error::LogitsLengthMismatch {
                expected: logits.len().div_ceil(vocab as usize) * vocab as usize,
                got: logits.len(),
            });
        }
        let rows = u32::try_from(logits.len() / vocab as usize).map_err(|_| {
            Error::InvalidArgument(format!(
                "{} rows of {vocab} logits: more than u32::MAX rows",
                logits.len() / vocab as usize
            ))
        })?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let ctx = self.kernel.ctx();
        ctx.scoped("read-once sums", || {
            self.sum_rows_on(ctx, logits, rows, vocab)
        })
    }

    fn sum_rows_on(
        &self,
        ctx: &GpuContext,
        logits: HostLogits<'_>,
        rows: u32,
        vocab: u32,
    ) -> Result<Vec<f32>> {
        let bytes = logits.bytes();
        // Bound in chunks, each within the binding limit.
        let input = ctx.create_buffer(
            "rollcall read-once input",
            (bytes.len() as u64).div_ceil(4) * 4,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        crate::gpu::buffer::write_padded(&ctx.queue, &input, bytes);
        let out_size = u64::from(rows) * 4;
        let out = ctx.create_bound_buffer(
            "rollcall read-once sums",
            out_size,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let readback = ctx.create_buffer(
            "rollcall read-once readback",
            out_size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let binding = LogitsBinding {
            buffer: &input,
            offset: 0,
            rows,
            vocab,
            dtype: logits.dtype(),
        };
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        self.encode(&mut encoder, &binding, &out)?;
        encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, out_size);
        ctx.submit(encoder.finish());
        let data = ctx.read_buffer(&readback, out_size)?;
        Ok(bytemuck::cast_slice(&data).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogitsDtype;
    use half::{bf16, f16};

    fn ctx() -> Option<GpuContext> {
        GpuContext::for_tests()
    }

    /// The sum in the kernel's order: per invocation over its groups, then the
    /// fixed tree.
    fn twin_sums(logits: HostLogits<'_>, vocab: usize, term: impl Fn(f32) -> f32) -> Vec<f32> {
        let rows = logits.len() / vocab;
        (0..rows)
            .map(|r| {
                let mut partial = vec![0.0f32; 256];
                for i in 0..vocab {
                    partial[(i / 4) % 256] += term(logits.get_f32(r * vocab + i));
                }
                let mut stride = 128;
                while stride > 0 {
                    for t in 0..stride {
                        partial[t] += partial[t + stride];
                    }
                    stride /= 2;
                }
                partial[0]
            })
            .collect()
    }

    #[test]
    fn sums_match_the_twin_for_every_dtype_and_chunking() {
        let Some(ctx) = ctx() else { return };
        // Odd vocab: 16-bit rows start mid-word; small chunks force several
        // dispatch records with unaligned element bases.
        let (rows, vocab) = (37usize, 1001usize);
        let values: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 1000) as f32 / 64.0 - 7.0)
            .collect();
        let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let brains: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        for max_chunk in [u64::MAX, 9000] {
            let read_once = ReadOnce::new(&ctx).unwrap().with_max_chunk_bytes(max_chunk);
            for logits in [
                HostLogits::F32(&values),
                HostLogits::F16(&halves),
                HostLogits::Bf16(&brains),
            ] {
                let got = read_once.sum_rows(logits, vocab as u32).unwrap();
                let want = twin_sums(logits, vocab, |v| v);
                assert_eq!(got.len(), rows);
                for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-3 * w.abs().max(1.0),
                        "{:?} chunk {max_chunk} row {r}: {g} vs {w}",
                        logits.dtype()
                    );
                }
            }
        }
    }

    #[test]
    fn vector_loads_sum_like_the_twin() {
        let Some(ctx) = ctx() else { return };
        // 1024: rows on a 16-byte boundary (vector loads, unless a chunk's
        // base is not); 1001: never.
        for vocab in [1024usize, 1001] {
            let rows = 13usize;
            let values: Vec<f32> = (0..rows * vocab)
                .map(|i| ((i * 7919) % 1000) as f32 / 64.0 - 7.0)
                .collect();
            for max_chunk in [u64::MAX, 9000] {
                let vector = ReadOnce::with_vector_loads(&ctx)
                    .unwrap()
                    .with_max_chunk_bytes(max_chunk);
                let got = vector
                    .sum_rows(HostLogits::F32(&values), vocab as u32)
                    .unwrap();
                let want = twin_sums(HostLogits::F32(&values), vocab, |v| v);
                for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-3 * w.abs().max(1.0),
                        "vocab {vocab} chunk {max_chunk} row {r}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn exp_variant_sums_exp_of_every_logit() {
        let Some(ctx) = ctx() else { return };
        let (rows, vocab) = (5usize, 1029usize);
        let values: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 1000) as f32 / 64.0 + 50.0)
            .collect();
        let halves: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let with_exp = ReadOnce::with_exp_per_logit(&ctx).unwrap();
        for logits in [HostLogits::F32(&values), HostLogits::F16(&halves)] {
            let got = with_exp.sum_rows(logits, vocab as u32).unwrap();
            let want = twin_sums(logits, vocab, |v| (v - 64.0).exp());
            for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * w,
                    "{:?} row {r}: {g} vs {w}",
                    logits.dtype()
                );
            }
        }
    }

    #[test]
    fn rejects_a_small_output_buffer() {
        let Some(ctx) = ctx() else { return };
        let read_once = ReadOnce::new(&ctx).unwrap();
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4 * 64,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let out = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let binding = LogitsBinding {
            buffer: &buffer,
            offset: 0,
            rows: 2,
            vocab: 32,
            dtype: LogitsDtype::F32,
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        assert!(matches!(
            read_once.encode(&mut encoder, &binding, &out),
            Err(Error::BufferTooSmall { .. })
        ));
    }
}
