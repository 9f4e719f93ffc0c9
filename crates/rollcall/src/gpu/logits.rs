//! What every kernel over a `rows × vocab` logits matrix shares: dtypes, host
//! and GPU views of the logits, cutting a batch into dispatches that fit the
//! adapter's binding limit, the per-dispatch records (which also name the
//! dtype: one pipeline serves every dtype), and that pipeline built once.

use crate::gpu::buffer::GrowBuffer;
use crate::gpu::shader::ShaderVariant;
use crate::{Error, GpuContext, Result};
use half::{bf16, f16};
use std::num::NonZeroU64;
use std::sync::OnceLock;

/// Dispatch records sit this far apart in their uniform buffer so any one can
/// be bound (the largest `min_uniform_buffer_offset_alignment` allowed).
const RECORD_STRIDE: u64 = 256;

/// Cap on the logits bound per dispatch (and uploaded per submit on host
/// paths) on a CPU adapter, where it was tuned; other adapters bind up to
/// their own limit (fewer, larger dispatches: a 256 × 128 256 f32 batch is
/// one dispatch, not two dependent ones).
pub const DEFAULT_MAX_CHUNK_BYTES: u64 = 64 << 20;

/// Element type of the logits.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogitsDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16 (the high half of an f32).
    Bf16,
}

impl LogitsDtype {
    /// Bytes per element.
    pub fn size_bytes(self) -> u64 {
        match self {
            LogitsDtype::F32 => 4,
            LogitsDtype::F16 | LogitsDtype::Bf16 => 2,
        }
    }
    pub(crate) fn index(self) -> usize {
        match self {
            LogitsDtype::F32 => 0,
            LogitsDtype::F16 => 1,
            LogitsDtype::Bf16 => 2,
        }
    }
    /// All dtypes.
    pub const ALL: [LogitsDtype; 3] = [LogitsDtype::F32, LogitsDtype::F16, LogitsDtype::Bf16];
}

/// Host logits, row-major `rows × vocab`.
///
/// ```
/// let data = vec![0.0f32; 8];
/// let logits = rollcall::HostLogits::F32(&data);
/// assert_eq!(logits.len(), 8);
/// ```
#[derive(Clone, Copy, Debug)]
pub enum HostLogits<'a> {
    /// f32 logits.
    F32(&'a [f32]),
    /// f16 logits.
    F16(&'a [f16]),
    /// bf16 logits.
    Bf16(&'a [bf16]),
}

impl HostLogits<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostLogits::F32(s) => s.len(),
            HostLogits::F16(s) => s.len(),
            HostLogits::Bf16(s) => s.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element type.
    pub fn dtype(&self) -> LogitsDtype {
        match self {
            HostLogits::F32(_) => LogitsDtype::F32,
            HostLogits::F16(_) => LogitsDtype::F16,
            HostLogits::Bf16(_) => LogitsDtype::Bf16,
        }
    }
    /// Raw bytes, as they would sit in a GPU buffer.
    pub fn bytes(&self) -> &[u8] {
        match self {
            HostLogits::F32(s) => bytemuck::cast_slice(s),
            HostLogits::F16(s) => bytemuck::cast_slice(s),
            HostLogits::Bf16(s) => bytemuck::cast_slice(s),
        }
    }
    /// Element `i` as f32 (exact for every dtype).
    pub(crate) fn get_f32(&self, i: usize) -> f32 {
        match self {
            HostLogits::F32(s) => s[i],
            HostLogits::F16(s) => s[i].to_f32(),
            HostLogits::Bf16(s) => s[i].to_f32(),
        }
    }
    /// Row `row` of a `rows × vocab` view, or `None` past the end.
    ///
    /// ```
    /// let data = [1.0f32, 2.0, 3.0, 4.0];
    /// let logits = rollcall::HostLogits::F32(&data);
    /// assert_eq!(logits.row(1, 2).map(|r| r.len()), Some(2));
    /// assert!(logits.row(2, 2).is_none());
    /// ```
    pub fn row(&self, row: usize, vocab: usize) -> Option<Self> {
        let start = row.checked_mul(vocab)?;
        let end = start.checked_add(vocab)?;
        (end <= self.len()).then(|| self.slice(start, end))
    }

    /// Elements `start..end`, as another view.
    pub(crate) fn slice(&self, start: usize, end: usize) -> Self {
        match self {
            HostLogits::F32(s) => HostLogits::F32(&s[start..end]),
            HostLogits::F16(s) => HostLogits::F16(&s[start..end]),
            HostLogits::Bf16(s) => HostLogits::Bf16(&s[start..end]),
        }
    }
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

/// How a `rows × vocab` logits range is cut into dispatches that each fit the
/// adapter's binding limit and workgroup-count limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First row of the chunk.
    pub row_start: u32,
    /// Rows in the chunk.
    pub rows: u32,
    /// Byte offset of the binding (aligned).
    pub bind_offset: u64,
    /// Byte size of the binding (a multiple of 4).
    pub bind_size: u64,
    /// Element index of the chunk's first logit inside the binding.
    pub elem_base: u32,
    /// For a chunk of rows that each name the logits row they read (several
    /// draws from one row): the logits row at `elem_base`. `None`: row `i`
    /// of the chunk reads the chunk's logits row `i`.
    pub logits_base: Option<u32>,
}

/// Limits that decide chunking.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLimits {
    /// Largest storage binding, bytes.
    pub max_binding: u64,
    /// Storage offset alignment, bytes.
    pub offset_alignment: u64,
    /// Largest dispatch in one dimension.
    pub max_workgroups: u32,
}

/// Plans the dispatches for logits at `offset` in a buffer of `buffer_size`.
pub fn plan_chunks(
    rows: u32,
    vocab: u32,
    dtype: LogitsDtype,
    offset: u64,
    buffer_size: u64,
    limits: ChunkLimits,
) -> Result<Vec<Chunk>> {
    if vocab == 0 {
        return Err(Error::EmptyVocab);
    }
    if !offset.is_multiple_of(4) {
        return Err(Error::MisalignedOffset(offset));
    }
    let esize = dtype.size_bytes();
    let row_bytes = u64::from(vocab) * esize;
    // Saturating: an offset or shape past u64 needs more than any buffer has.
    let needed = u64::from(rows)
        .checked_mul(row_bytes)
        .and_then(|bytes| bytes.checked_add(offset))
        .unwrap_or(u64::MAX);
    if buffer_size < needed {
        return Err(Error::BufferTooSmall {
            what: "logits",
            needed,
            got: buffer_size,
        });
    }
    // Keep element indices inside u32 and leave room for alignment slack.
    let max_binding = limits.max_binding.min(1 << 31);
    let slack = limits.offset_alignment + 4;
    let max_rows = max_binding.saturating_sub(slack) / row_bytes;
    if max_rows == 0 {
        return Err(Error::RowTooLarge {
            row_bytes,
            max_binding,
        });
    }
    let max_rows = max_rows.min(u64::from(limits.max_workgroups.max(1))) as u32;
    let mut chunks = Vec::new();
    let mut row_start = 0u32;
    while row_start < rows {
        let n = max_rows.min(rows - row_start);
        let byte_start = offset + u64::from(row_start) * row_bytes;
        let bind_offset = byte_start - byte_start % limits.offset_alignment;
        let byte_end = offset + u64::from(row_start + n) * row_bytes;
        let bind_size = (byte_end - bind_offset).div_ceil(4) * 4;
        if bind_offset + bind_size > buffer_size {
            return Err(Error::BufferTooSmall {
                what: "logits (rounded up to 4 bytes)",
                needed: bind_offset + bind_size,
                got: buffer_size,
            });
        }
        chunks.push(Chunk {
            row_start,
            rows: n,
            bind_offset,
            bind_size,
            elem_base: ((byte_start - bind_offset) / esize) as u32,
            logits_base: None,
        });
        row_start += n;
    }
    Ok(chunks)
}

/// What one dispatch reads from `shaders/shared/logits.wgsl`'s `ChunkInfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ChunkInfo {
    pub(crate) rows: u32,
    pub(crate) vocab: u32,
    pub(crate) elem_base: u32,
    pub(crate) row_base: u32,
    /// Per-stream partials per row that a separate first pass wrote (0: none;
    /// 1: one for the whole row; more: one per tile of a split row).
    pub(crate) tiles: u32,
    /// 1 when the chunk's rows name their logits row (`logits_base` set).
    pub(crate) gather: u32,
    /// The logits row at `elem_base` when `gather` is 1.
    pub(crate) logits_base: u32,
    /// How the dispatch reads its logits: [`LogitsDtype::index`], plus
    /// [`LOADS_VEC4`] when f32 rows are read four at a time.
    pub(crate) loads: u32,
}

/// In [`ChunkInfo::loads`]: the rows are read through the vector view.
pub(crate) const LOADS_VEC4: u32 = 4;

/// Bytes of a dispatch record the shaders read.
pub(crate) const RECORD_BYTES: u64 = std::mem::size_of::<ChunkInfo>() as u64;

/// The uniform buffer of dispatch records, one per chunk, written with
/// `Queue::write_buffer`: the writes take effect at the next submit, so a
/// record set serves one encode per submit. Grows only when a batch needs more
/// chunks than any before it.
pub struct DispatchRecords {
    buffer: GrowBuffer,
}

impl DispatchRecords {
    /// Room for a few chunks.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            // Bound one record at a time.
            buffer: GrowBuffer::bound_in_ranges(
                ctx,
                "rollcall dispatch records",
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                4 * RECORD_STRIDE,
            )?,
        })
    }

    /// One record per chunk; `loads(chunk)` is the chunk's
    /// [`ChunkInfo::loads`].
    fn write(
        &mut self,
        ctx: &GpuContext,
        chunks: &[Chunk],
        vocab: u32,
        row_base: u32,
        tiles: u32,
        loads: impl Fn(&Chunk) -> u32,
    ) -> Result<()> {
        let mut bytes = vec![0u8; chunks.len() * RECORD_STRIDE as usize];
        for (c, chunk) in chunks.iter().enumerate() {
            let info = ChunkInfo {
                rows: chunk.rows,
                vocab,
                elem_base: chunk.elem_base,
                row_base: row_base + chunk.row_start,
                tiles,
                gather: u32::from(chunk.logits_base.is_some()),
                logits_base: chunk.logits_base.unwrap_or(0),
                loads: loads(chunk),
            };
            let at = c * RECORD_STRIDE as usize;
            bytes[at..at + RECORD_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&info));
        }
        self.buffer.write(ctx, &bytes)?;
        Ok(())
    }
}

/// A logits kernel's shader: one pipeline for every dtype (each dispatch's
/// record names its dtype), and whether the shader can read f32 rows
/// through the vector view.
#[derive(Clone, Debug)]
pub struct LogitsShader {
    pub(crate) variant: ShaderVariant,
    pub(crate) vector_loads: bool,
}

/// The shader of a logits kernel: `file`'s `entry_point` after `prelude`.
/// With `vector_loads`, f32 rows on 16-byte boundaries are read four logits
/// per load through the vector view (the shader must read the view when the
/// record's `loads` says so).
pub fn logits_shader(
    label: &str,
    file: &str,
    entry_point: &'static str,
    prelude: &str,
    vector_loads: bool,
) -> Result<LogitsShader> {
    logits_shader_with(label, file, entry_point, prelude, vector_loads, &[])
}

/// [`logits_shader`] with included files substituted (see
/// `gpu::shader::compose_with`).
pub(crate) fn logits_shader_with(
    label: &str,
    file: &str,
    entry_point: &'static str,
    prelude: &str,
    vector_loads: bool,
    substitutes: &[(&str, &str)],
) -> Result<LogitsShader> {
    Ok(LogitsShader {
        variant: ShaderVariant {
            label: label.to_string(),
            entry_point,
            source: crate::gpu::shader::compose_with(file, prelude, substitutes)?,
        },
        vector_loads,
    })
}

/// A kernel over logits, built once: binding 0 is the dispatch record, binding
/// 1 the logits, bindings 2.. the kernel's own buffers; one workgroup per row.
/// The binding after the kernel's own is the same logits range as
/// `array<vec4<u32>>`, read (when the shader has vector loads) for f32 rows
/// that start on a 16-byte boundary.
pub struct LogitsKernel {
    ctx: GpuContext,
    label: &'static str,
    built: std::sync::Arc<Pipelines>,
    max_chunk_bytes: u64,
}

/// The layout and the pipeline, shared through the context's cache.
pub(crate) struct Pipelines {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// Compiled when a dispatch first needs it.
    shader: LogitsShader,
    pipeline: OnceLock<wgpu::ComputePipeline>,
    /// The binding of the vector view, and a 16-byte stand-in bound there
    /// when the logits range is shorter than one vector (the variant that
    /// reads the view is then not used).
    vec4_view: (u32, wgpu::Buffer),
    /// Whether the logits are bound read_write (the view is then always the
    /// stand-in: one dispatch cannot bind a range both ways).
    logits_writable: bool,
}

/// What the pipelines of a logits kernel depend on: the cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LogitsKernelKey {
    /// The kernel: its file's entry point, or a named variant of it.
    pub(crate) kernel: &'static str,
    /// A shader constant that changes the pipelines (the sampler's candidate
    /// capacity); 0 when there is none.
    pub(crate) constant: u32,
    /// The read-only flag of each of the kernel's own bindings, from 2 on:
    /// with the fixed bindings 0, 1 and the vector view, the layout.
    pub(crate) extra: &'static [bool],
}

impl crate::gpu::cache::PipelineKey for LogitsKernelKey {
    type Built = Pipelines;
}

/// The cache key of a kernel that binds the logits read_write
/// ([`LogitsKernel::with_writable_logits`]): a key type of its own, so its
/// pipelines never share an entry with a read-only kernel's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WritableLogitsKey(pub(crate) LogitsKernelKey);

impl crate::gpu::cache::PipelineKey for WritableLogitsKey {
    type Built = Pipelines;
}

impl LogitsKernel {
    /// The layout and the pipeline of `shader`, built once per context
    /// under `key`. The logits are also bound as `array<vec4<u32>>` at
    /// binding `2 + key.extra.len()`, read (when the shader has vector loads)
    /// for f32 rows that start on a 16-byte boundary of memory (vocab and the
    /// chunk's element offset multiples of 4, the binding's offset a multiple
    /// of 16): one load per four logits instead of four.
    pub(crate) fn new(
        ctx: &GpuContext,
        label: &'static str,
        key: LogitsKernelKey,
        shader: impl FnOnce() -> Result<LogitsShader>,
    ) -> Result<Self> {
        let built = ctx.pipelines(&key, || {
            Pipelines::build(ctx, label, shader()?, key.extra, false)
        })?;
        Ok(Self::with_pipelines(ctx, label, built))
    }

    /// Like [`LogitsKernel::new`], with the logits bound read_write at
    /// binding 1 (the kernel edits them in place). The vector view's binding
    /// is still in the layout but always holds a stand-in, and the shader
    /// has no vector loads.
    pub(crate) fn with_writable_logits(
        ctx: &GpuContext,
        label: &'static str,
        key: LogitsKernelKey,
        shader: impl FnOnce() -> Result<LogitsShader>,
    ) -> Result<Self> {
        let extra = key.extra;
        let built = ctx.pipelines(&WritableLogitsKey(key), || {
            Pipelines::build(ctx, label, shader()?, extra, true)
        })?;
        Ok(Self::with_pipelines(ctx, label, built))
    }

    fn with_pipelines(
        ctx: &GpuContext,
        label: &'static str,
        built: std::sync::Arc<Pipelines>,
    ) -> Self {
        Self {
            ctx: ctx.clone(),
            label,
            built,
            max_chunk_bytes: if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
                DEFAULT_MAX_CHUNK_BYTES
            } else {
                u64::MAX
            },
        }
    }
}

impl Pipelines {
    fn build(
        ctx: &GpuContext,
        label: &str,
        shader: LogitsShader,
        extra: &[bool],
        logits_writable: bool,
    ) -> Result<Self> {
        use crate::gpu::shader::{layouts, Binding};
        let device = &ctx.device;
        let logits = if logits_writable {
            Binding::ReadWrite
        } else {
            Binding::Read
        };
        let mut bindings = vec![(0, Binding::Uniform(Some(RECORD_BYTES))), (1, logits)];
        bindings.extend(extra.iter().enumerate().map(|(i, &read_only)| {
            let kind = if read_only {
                Binding::Read
            } else {
                Binding::ReadWrite
            };
            (2 + i as u32, kind)
        }));
        let vec4_binding = 2 + extra.len() as u32;
        bindings.push((vec4_binding, Binding::Read));
        let (layout, pipeline_layout) = layouts(device, label, &bindings);
        let stand_in = ctx.create_buffer(
            "rollcall logits vector view stand-in",
            16,
            wgpu::BufferUsages::STORAGE,
        )?;
        let vec4_view = (vec4_binding, stand_in);
        Ok(Self {
            layout,
            pipeline_layout,
            shader,
            pipeline: OnceLock::new(),
            vec4_view,
            logits_writable,
        })
    }

    /// The pipeline, compiled on first use (a device error comes back as
    /// `Err`).
    fn pipeline(&self, ctx: &GpuContext) -> Result<&wgpu::ComputePipeline> {
        if let Some(pipeline) = self.pipeline.get() {
            return Ok(pipeline);
        }
        let built = ctx.scoped("building pipelines", || {
            Ok(self
                .shader
                .variant
                .compute_pipeline(&ctx.device, &self.pipeline_layout))
        })?;
        Ok(self.pipeline.get_or_init(|| built))
    }
}

impl LogitsKernel {
    /// The context the kernel was built on.
    #[cfg(any(test, feature = "internals"))]
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    /// Caps the bytes of logits bound per dispatch.
    pub fn set_max_chunk_bytes(&mut self, bytes: u64) {
        self.max_chunk_bytes = bytes.max(1);
    }

    /// The limits `plan_chunks` works with on this device.
    pub fn chunk_limits(&self) -> ChunkLimits {
        let limits = self.ctx.limits();
        ChunkLimits {
            max_binding: limits
                .max_storage_buffer_binding_size
                .min(self.max_chunk_bytes),
            offset_alignment: u64::from(limits.min_storage_buffer_offset_alignment),
            max_workgroups: limits.max_compute_workgroups_per_dimension,
        }
    }

    /// Plans the chunks of `logits` on this device.
    pub fn plan(&self, logits: &LogitsBinding<'_>) -> Result<Vec<Chunk>> {
        plan_chunks(
            logits.rows,
            logits.vocab,
            logits.dtype,
            logits.offset,
            logits.buffer.size(),
            self.chunk_limits(),
        )
    }

    /// Records one pass: a dispatch per chunk, whose rows start at
    /// `row_base + chunk.row_start` in the kernel's own buffers.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        chunks: &[Chunk],
        records: &mut DispatchRecords,
        extra: &[wgpu::BindingResource<'_>],
        row_base: u32,
    ) -> Result<()> {
        self.encode_tiled(encoder, logits, chunks, records, extra, row_base, 0, 1)
    }

    /// Like [`LogitsKernel::encode`], with `tiles` in every record (the
    /// partials per row a separate first pass writes or reads) and `grid_y`
    /// workgroups along y per row.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_tiled(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        chunks: &[Chunk],
        records: &mut DispatchRecords,
        extra: &[wgpu::BindingResource<'_>],
        row_base: u32,
        tiles: u32,
        grid_y: u32,
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        // Rows on 16-byte boundaries of memory (the binding's offset too: a
        // driver may allow storage offsets finer than 16 bytes) read the
        // vector view; such rows end on a 16-byte boundary too, so the view
        // (the range rounded down to 16 bytes) is the whole range.
        let vec4_rows = |chunk: &Chunk| {
            self.built.shader.vector_loads
                && logits.dtype == LogitsDtype::F32
                && logits.vocab.is_multiple_of(4)
                && chunk.elem_base.is_multiple_of(4)
                && chunk.bind_offset.is_multiple_of(16)
                && chunk.bind_size >= 16
        };
        let loads = |chunk: &Chunk| {
            logits.dtype.index() as u32 | if vec4_rows(chunk) { LOADS_VEC4 } else { 0 }
        };
        records.write(&self.ctx, chunks, logits.vocab, row_base, tiles, loads)?;
        // Compiled before the pass opens (compiling reports device errors).
        let pipeline = self.built.pipeline(&self.ctx)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(self.label),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        for (c, chunk) in chunks.iter().enumerate() {
            // Whole 16-byte vectors of this chunk's bound range.
            let vec4_bytes = chunk.bind_size / 16 * 16;
            debug_assert!(!vec4_rows(chunk) || vec4_bytes == chunk.bind_size);
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: records.buffer.buffer(),
                        offset: c as u64 * RECORD_STRIDE,
                        size: NonZeroU64::new(RECORD_BYTES),
                    }),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: logits.buffer,
                        offset: chunk.bind_offset,
                        size: NonZeroU64::new(chunk.bind_size),
                    }),
                },
            ];
            entries.extend(extra.iter().enumerate().map(|(i, r)| wgpu::BindGroupEntry {
                binding: 2 + i as u32,
                resource: r.clone(),
            }));
            {
                let (binding, stand_in) = &self.built.vec4_view;
                // The rows of a vector-read chunk end on a 16-byte boundary
                // inside the range, so the rounded-down view covers them.
                let (buffer, offset, size) = if vec4_bytes > 0 && !self.built.logits_writable {
                    (logits.buffer, chunk.bind_offset, vec4_bytes)
                } else {
                    (stand_in, 0, 16)
                };
                entries.push(wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset,
                        size: NonZeroU64::new(size),
                    }),
                });
            }
            let bind_group = self
                .ctx
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(self.label),
                    layout: &self.built.layout,
                    entries: &entries,
                });
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(chunk.rows, grid_y.max(1), 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChunkLimits = ChunkLimits {
        max_binding: 4096,
        offset_alignment: 256,
        max_workgroups: 65535,
    };

    #[test]
    fn chunks_cover_every_row_once_within_limits() {
        for dtype in LogitsDtype::ALL {
            for &(rows, vocab, offset) in
                &[(1u32, 1u32, 0u64), (100, 7, 4), (33, 301, 260), (5, 900, 0)]
            {
                let size = offset + u64::from(rows) * u64::from(vocab) * dtype.size_bytes() + 4;
                let chunks = plan_chunks(rows, vocab, dtype, offset, size, LIMITS).unwrap();
                let mut next = 0;
                for c in &chunks {
                    assert_eq!(c.row_start, next);
                    next += c.rows;
                    assert_eq!(c.bind_offset % 256, 0);
                    assert_eq!(c.bind_size % 4, 0);
                    assert!(c.bind_size <= LIMITS.max_binding);
                    assert!(c.bind_offset + c.bind_size <= size);
                    let first =
                        offset + u64::from(c.row_start) * u64::from(vocab) * dtype.size_bytes();
                    assert_eq!(
                        c.bind_offset + u64::from(c.elem_base) * dtype.size_bytes(),
                        first
                    );
                }
                assert_eq!(next, rows);
            }
        }
    }

    #[test]
    fn chunking_errors_name_the_problem() {
        let f32 = LogitsDtype::F32;
        assert!(matches!(
            plan_chunks(1, 0, f32, 0, 64, LIMITS),
            Err(Error::EmptyVocab)
        ));
        assert!(matches!(
            plan_chunks(1, 4, f32, 2, 64, LIMITS),
            Err(Error::MisalignedOffset(2))
        ));
        assert!(matches!(
            plan_chunks(2, 10, f32, 0, 79, LIMITS),
            Err(Error::BufferTooSmall {
                needed: 80,
                got: 79,
                ..
            })
        ));
        assert!(matches!(
            plan_chunks(1, 2000, f32, 0, 8000, LIMITS),
            Err(Error::RowTooLarge {
                row_bytes: 8000,
                ..
            })
        ));
        assert!(plan_chunks(0, 10, f32, 0, 0, LIMITS).unwrap().is_empty());
        // An end past u64 is too small for any buffer, not a wrapped size.
        assert!(matches!(
            plan_chunks(1, 4, f32, u64::MAX - 3, 64, LIMITS),
            Err(Error::BufferTooSmall {
                needed: u64::MAX,
                ..
            })
        ));
        // Shapes and offsets past u64 need more than any buffer holds.
        assert!(matches!(
            plan_chunks(u32::MAX, u32::MAX, f32, 0, u64::MAX - 3, LIMITS),
            Err(Error::BufferTooSmall {
                needed: u64::MAX,
                ..
            })
        ));
        assert!(matches!(
            plan_chunks(1, 4, f32, u64::MAX - 3, u64::MAX - 3, LIMITS),
            Err(Error::BufferTooSmall {
                needed: u64::MAX,
                ..
            })
        ));
    }

    #[test]
    fn workgroup_limit_splits_rows() {
        let limits = ChunkLimits {
            max_workgroups: 3,
            ..LIMITS
        };
        let chunks = plan_chunks(10, 1, LogitsDtype::F32, 0, 40, limits).unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.rows).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
    }
}
