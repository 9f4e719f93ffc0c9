//! The sampler's GPU side: pipelines built once per context, the engine path
//! (record into the caller's encoder) and the host path (slices in, `Vec` out).

use super::{
    plan_chunks, shader_variants, validate_host_call, validate_params, Chunk, ChunkLimits,
    GpuRowParams, HostLogits, LogitsDtype, RowStatus, SampleResult, SamplingParams,
};
use crate::{Error, GpuContext, Result};
use std::num::NonZeroU64;

/// Uniform entries are this far apart so any of them can be bound.
const INFO_STRIDE: u64 = 256;
/// Host path: largest upload per submission.
const DEFAULT_HOST_CHUNK_BYTES: u64 = 64 << 20;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct ChunkInfo {
    rows: u32,
    vocab: u32,
    elem_base: u32,
    row_base: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct GpuRowResult {
    logprob: f32,
    status: u32,
    kept: u32,
    pad: u32,
}

/// Logits that already live on the GPU: `rows × vocab` elements of `dtype`
/// starting at byte `offset` (a multiple of 4) of `buffer` (usage `STORAGE`).
#[derive(Clone, Copy, Debug)]
pub struct LogitsBinding<'a> {
    /// The engine's logits buffer.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of row 0.
    pub offset: u64,
    /// Rows in the batch.
    pub rows: u32,
    /// Tokens per row.
    pub vocab: u32,
    /// Element type.
    pub dtype: LogitsDtype,
}

/// Per-batch GPU state for the engine path: row parameters, outputs, and the
/// dispatch records. Create once, reuse every step.
///
/// Outputs: [`SampleBatch::tokens`] holds one `u32` token per row (ready to
/// feed an embedding lookup); [`SampleBatch::results`] holds per row
/// `{ logprob: f32, status: u32 (0 ok, 1 no valid token), kept: u32, pad: u32 }`.
///
/// Parameter and dispatch writes go through `Queue::write_buffer`, so they
/// take effect at the next submit: encode one batch at most once per submit.
pub struct SampleBatch {
    queue: wgpu::Queue,
    device: wgpu::Device,
    params: wgpu::Buffer,
    tokens: wgpu::Buffer,
    results: wgpu::Buffer,
    info: wgpu::Buffer,
    info_slots: u64,
    capacity: u32,
    rows: u32,
}

impl SampleBatch {
    /// Buffers for up to `capacity` rows.
    ///
    /// ```no_run
    /// # let ctx = rollcall::GpuContext::new()?;
    /// let mut batch = rollcall::SampleBatch::new(&ctx, 64);
    /// batch.set_params(&vec![rollcall::SamplingParams::new(0.8).seed(7); 64])?;
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn new(ctx: &GpuContext, capacity: u32) -> Self {
        let capacity = capacity.max(1);
        let storage = |label, size: u64, extra| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
                mapped_at_creation: false,
            })
        };
        let cap = u64::from(capacity);
        let info_slots = 4;
        Self {
            queue: ctx.queue.clone(),
            device: ctx.device.clone(),
            params: storage(
                "rollcall sampling params",
                cap * std::mem::size_of::<GpuRowParams>() as u64,
                wgpu::BufferUsages::empty(),
            ),
            tokens: storage(
                "rollcall sampled tokens",
                cap * 4,
                wgpu::BufferUsages::COPY_SRC,
            ),
            results: storage(
                "rollcall sampling results",
                cap * 16,
                wgpu::BufferUsages::COPY_SRC,
            ),
            info: Self::info_buffer(&ctx.device, info_slots),
            info_slots,
            capacity,
            rows: 0,
        }
    }

    fn info_buffer(device: &wgpu::Device, slots: u64) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("rollcall sampling dispatch records"),
            size: slots * INFO_STRIDE,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Validates and uploads one parameter set per row (the batch's row count).
    pub fn set_params(&mut self, params: &[SamplingParams]) -> Result<()> {
        let gpu = validate_params(params)?;
        self.set_gpu_params(&gpu)
    }

    fn set_gpu_params(&mut self, gpu: &[GpuRowParams]) -> Result<()> {
        if gpu.len() > self.capacity as usize {
            return Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: gpu.len(),
            });
        }
        if !gpu.is_empty() {
            self.queue
                .write_buffer(&self.params, 0, bytemuck::cast_slice(gpu));
        }
        self.rows = gpu.len() as u32;
        Ok(())
    }

    /// Rows set by the last [`SampleBatch::set_params`].
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Most rows this batch can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// One `u32` token per row.
    pub fn tokens(&self) -> &wgpu::Buffer {
        &self.tokens
    }

    /// 16 bytes per row: logprob (f32), status (u32), kept (u32), padding.
    pub fn results(&self) -> &wgpu::Buffer {
        &self.results
    }

    /// Makes room for `n` dispatch records (allocates only when a batch shape
    /// needs more chunks than any before it).
    fn reserve_info(&mut self, n: u64) {
        if n > self.info_slots {
            self.info_slots = n.next_power_of_two();
            self.info = Self::info_buffer(&self.device, self.info_slots);
        }
    }
}

/// The sampler: one compute pipeline per logits dtype, built once.
///
/// ```no_run
/// use rollcall::{GpuContext, HostLogits, Sampler, SamplingParams};
/// let ctx = GpuContext::new()?;
/// let mut sampler = Sampler::new(&ctx)?;
/// let logits = vec![0.5f32; 2 * 1000];
/// let params = [SamplingParams::new(0.8).top_p(0.9).seed(1), SamplingParams::greedy()];
/// let out = sampler.sample(HostLogits::F32(&logits), 1000, &params)?;
/// assert_eq!(out.len(), 2);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct Sampler {
    kernels: Kernels,
    host: Option<HostBuffers>,
}

/// What is built once per context: the layout and one pipeline per dtype.
struct Kernels {
    ctx: GpuContext,
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    max_chunk_bytes: u64,
}

struct HostBuffers {
    batch: SampleBatch,
    upload: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl Sampler {
    /// Compiles the sampling pipelines on `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let device = &ctx.device;
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("rollcall sampling"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(16),
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, true),
                storage(3, false),
                storage(4, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("rollcall sampling"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipelines = shader_variants()?
            .iter()
            .map(|variant| {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&variant.label),
                    source: wgpu::ShaderSource::Wgsl(variant.source.as_str().into()),
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&variant.label),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(variant.entry_point),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })
            .collect();
        Ok(Self {
            kernels: Kernels {
                ctx: ctx.clone(),
                layout,
                pipelines,
                max_chunk_bytes: DEFAULT_HOST_CHUNK_BYTES,
            },
            host: None,
        })
    }

    /// Caps the bytes of logits bound per dispatch (and uploaded per submit
    /// on the host path), below the adapter's own binding limit.
    pub fn with_max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.kernels.max_chunk_bytes = bytes.max(1);
        self
    }

    /// Engine path: records the sampling of `logits` with `batch`'s parameters
    /// into `encoder`. Results land in `batch.tokens()` and `batch.results()`;
    /// nothing is read back and nothing waits on the GPU.
    ///
    /// ```no_run
    /// use rollcall::{GpuContext, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams};
    /// # let ctx = GpuContext::new()?;
    /// # let logits_buffer: wgpu::Buffer = unimplemented!();
    /// let sampler = Sampler::new(&ctx)?;
    /// let mut batch = SampleBatch::new(&ctx, 8);
    /// batch.set_params(&[SamplingParams::new(0.7).top_k(40).seed(9); 8])?;
    /// let mut encoder = ctx.device.create_command_encoder(&Default::default());
    /// let logits = LogitsBinding { buffer: &logits_buffer, offset: 0, rows: 8, vocab: 32000, dtype: LogitsDtype::Bf16 };
    /// sampler.encode(&mut encoder, &logits, &mut batch)?;
    /// ctx.queue.submit([encoder.finish()]);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        batch: &mut SampleBatch,
    ) -> Result<()> {
        if logits.rows != batch.rows {
            return Err(Error::ParamCountMismatch {
                expected: logits.rows as usize,
                got: batch.rows as usize,
            });
        }
        let chunks = plan_chunks(
            logits.rows,
            logits.vocab,
            logits.dtype,
            logits.offset,
            logits.buffer.size(),
            self.kernels.chunk_limits(),
        )?;
        self.kernels.encode_chunks(encoder, logits, batch, &chunks, 0);
        Ok(())
    }

    /// Host path: samples `params.len()` rows of `vocab` logits and returns one
    /// result per row. Uploads in chunks of at most the chunk size, so batches
    /// larger than the adapter's binding limit work.
    pub fn sample(
        &mut self,
        logits: HostLogits<'_>,
        vocab: u32,
        params: &[SamplingParams],
    ) -> Result<Vec<SampleResult>> {
        let gpu_params = validate_host_call(&logits, vocab, params)?;
        let rows = params.len() as u32;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let dtype = logits.dtype();
        let row_bytes = u64::from(vocab) * dtype.size_bytes();
        // Plan the host chunks as if the rows sat at offset 0 of one buffer.
        let host_chunks = plan_chunks(
            rows,
            vocab,
            dtype,
            0,
            (u64::from(rows) * row_bytes).div_ceil(4) * 4,
            ChunkLimits {
                offset_alignment: 4,
                ..self.kernels.chunk_limits()
            },
        )?;
        let upload_bytes = host_chunks
            .iter()
            .map(|c| (u64::from(c.rows) * row_bytes).div_ceil(4) * 4)
            .max()
            .unwrap_or(4);
        self.ensure_host_buffers(rows, upload_bytes);
        let kernels = &self.kernels;
        let host = self.host.as_mut().expect("host buffers were just ensured");
        host.batch.set_gpu_params(&gpu_params)?;
        let device_limits = kernels.chunk_limits();
        let bytes = logits.bytes();
        for chunk in &host_chunks {
            let start = (u64::from(chunk.row_start) * row_bytes) as usize;
            let len = (u64::from(chunk.rows) * row_bytes) as usize;
            write_padded(&kernels.ctx.queue, &host.upload, &bytes[start..start + len]);
            let binding = LogitsBinding {
                buffer: &host.upload,
                offset: 0,
                rows: chunk.rows,
                vocab,
                dtype,
            };
            let device_chunks = plan_chunks(
                chunk.rows,
                vocab,
                dtype,
                0,
                host.upload.size(),
                device_limits,
            )?;
            let mut encoder = kernels
                .ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            kernels.encode_chunks(&mut encoder, &binding, &mut host.batch, &device_chunks, chunk.row_start);
            kernels.ctx.queue.submit([encoder.finish()]);
        }
        self.read_results(rows)
    }

    fn ensure_host_buffers(&mut self, rows: u32, upload_bytes: u64) {
        let fits = self.host.as_ref().is_some_and(|h| {
            h.batch.capacity >= rows && h.upload.size() >= upload_bytes
        });
        if fits {
            return;
        }
        let capacity = self
            .host
            .as_ref()
            .map_or(rows, |h| h.batch.capacity.max(rows));
        let upload_size = self
            .host
            .as_ref()
            .map_or(upload_bytes, |h| h.upload.size().max(upload_bytes));
        let ctx = &self.kernels.ctx;
        let device = &ctx.device;
        self.host = Some(HostBuffers {
            batch: SampleBatch::new(ctx, capacity),
            upload: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("rollcall logits upload"),
                size: upload_size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("rollcall results readback"),
                size: u64::from(capacity) * 20,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        });
    }

    /// Copies tokens and results to the readback buffer and maps it: the host
    /// path's one wait on the GPU.
    fn read_results(&mut self, rows: u32) -> Result<Vec<SampleResult>> {
        let host = self.host.as_ref().expect("host buffers exist after sampling");
        let ctx = &self.kernels.ctx;
        let n = u64::from(rows);
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        encoder.copy_buffer_to_buffer(&host.batch.tokens, 0, &host.readback, 0, n * 4);
        encoder.copy_buffer_to_buffer(&host.batch.results, 0, &host.readback, n * 4, n * 16);
        ctx.queue.submit([encoder.finish()]);
        let bytes = read_buffer(ctx, &host.readback, n * 20)?;
        let tokens: &[u32] = bytemuck::cast_slice(&bytes[..(n * 4) as usize]);
        let results: &[GpuRowResult] = bytemuck::cast_slice(&bytes[(n * 4) as usize..]);
        Ok(tokens
            .iter()
            .zip(results)
            .map(|(&token, r)| SampleResult {
                token,
                logprob: r.logprob,
                kept: r.kept,
                status: if r.status == 0 {
                    RowStatus::Ok
                } else {
                    RowStatus::NoValidToken
                },
            })
            .collect())
    }
}

impl Kernels {
    fn chunk_limits(&self) -> ChunkLimits {
        let limits = self.ctx.limits();
        ChunkLimits {
            max_binding: limits.max_storage_buffer_binding_size.min(self.max_chunk_bytes),
            offset_alignment: u64::from(limits.min_storage_buffer_offset_alignment),
            max_workgroups: limits.max_compute_workgroups_per_dimension,
        }
    }

    /// Records the chunks; dispatch record `c` describes chunk `c`, whose rows
    /// start at `row_base + chunk.row_start` in the batch.
    fn encode_chunks(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        batch: &mut SampleBatch,
        chunks: &[Chunk],
        row_base: u32,
    ) {
        batch.reserve_info(chunks.len() as u64);
        let mut records = vec![0u8; chunks.len() * INFO_STRIDE as usize];
        for (c, chunk) in chunks.iter().enumerate() {
            let info = ChunkInfo {
                rows: chunk.rows,
                vocab: logits.vocab,
                elem_base: chunk.elem_base,
                row_base: row_base + chunk.row_start,
            };
            let at = c * INFO_STRIDE as usize;
            records[at..at + 16].copy_from_slice(bytemuck::bytes_of(&info));
        }
        if !records.is_empty() {
            self.ctx.queue.write_buffer(&batch.info, 0, &records);
        }
        let pipeline = &self.pipelines[logits.dtype.index()];
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("rollcall sampling"),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        for (c, chunk) in chunks.iter().enumerate() {
            let bind_group = self
                .ctx
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("rollcall sampling"),
                    layout: &self.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &batch.info,
                                offset: c as u64 * INFO_STRIDE,
                                size: NonZeroU64::new(16),
                            }),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: batch.params.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: logits.buffer,
                                offset: chunk.bind_offset,
                                size: NonZeroU64::new(chunk.bind_size),
                            }),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: batch.tokens.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 4,
                            resource: batch.results.as_entire_binding(),
                        },
                    ],
                });
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(chunk.rows, 1, 1);
        }
    }

}

/// `write_buffer` needs a multiple of 4 bytes: the tail goes in a padded word.
fn write_padded(queue: &wgpu::Queue, buffer: &wgpu::Buffer, bytes: &[u8]) {
    let whole = bytes.len() / 4 * 4;
    if whole > 0 {
        queue.write_buffer(buffer, 0, &bytes[..whole]);
    }
    if whole < bytes.len() {
        let mut tail = [0u8; 4];
        tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
        queue.write_buffer(buffer, whole as u64, &tail);
    }
}

/// Maps `buffer` for reading and copies out its first `size` bytes.
pub(crate) fn read_buffer(ctx: &GpuContext, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    let slice = buffer.slice(..size);
    let (sender, receiver) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Readback(e.to_string()))?;
    receiver
        .recv()
        .map_err(|e| Error::Readback(e.to_string()))?
        .map_err(|e| Error::Readback(e.to_string()))?;
    let data = slice
        .get_mapped_range()
        .map_err(|e| Error::Readback(e.to_string()))?
        .to_vec();
    buffer.unmap();
    Ok(data)
}
