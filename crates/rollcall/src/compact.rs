//! Stream compaction on the GPU: the indices whose flag is set, in order, and
//! their count. The voting scheduler uses it to launch only live prompts.
//!
//! Reduce-then-scan in three dispatches (count per block of flags, one
//! workgroup scans the block counts, scatter), so no workgroup waits on
//! another: portable to adapters without forward-progress guarantees. Each
//! flag is read twice (count and scatter); each kept index written once.
//!
//! Blocks are sized per adapter: on a GPU 1 024 flags (4 an invocation, so
//! neighbouring invocations read neighbouring words, and 10⁶ flags launch
//! ~980 workgroups, more than a large GPU's multiprocessors); on a CPU
//! adapter 8 192 (32 an invocation: fewer workgroups and barriers). The
//! output is the same.

use crate::gpu::shader::ShaderVariant;
use crate::{Error, GpuContext, Result};
use std::num::NonZeroU64;
use std::sync::Arc;

/// Invocations of a compaction workgroup.
const WG: u32 = 256;

/// Flags an invocation handles on a CPU adapter.
const CPU_PER_THREAD: u32 = 32;

/// Flags an invocation handles on other adapters.
const GPU_PER_THREAD: u32 = 4;

/// Flags one workgroup handles on a CPU adapter (the larger block).
#[cfg(any(test, feature = "internals"))]
pub(crate) const BLOCK: u32 = WG * CPU_PER_THREAD;

/// Flags one workgroup handles on other adapters (the smaller block, which
/// sizes the scratch).
pub(crate) const GPU_BLOCK: u32 = WG * GPU_PER_THREAD;

/// The kernels' uniform (`CompactParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct CompactParams {
    pub(crate) n: u32,
    pub(crate) blocks: u32,
    pub(crate) blocks_x: u32,
    pub(crate) with_values: u32,
}

/// The CPU twin.
pub mod cpu {
    /// The indices `i` with `keep[i] != 0`, in increasing order.
    ///
    /// ```
    /// assert_eq!(rollcall::compact::cpu::compact(&[0, 3, 0, 1]), vec![1, 3]);
    /// ```
    pub fn compact(keep: &[u32]) -> Vec<u32> {
        keep.iter()
            .enumerate()
            .filter(|(_, &k)| k != 0)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

/// The shader's three entry points, `per_thread` flags an invocation.
pub(crate) fn shader_variants(per_thread: u32) -> Result<Vec<ShaderVariant>> {
    let prelude = format!("const PER_THREAD: u32 = {per_thread}u;");
    ["count_blocks", "scan_blocks", "scatter"]
        .into_iter()
        .map(|entry_point| {
            Ok(ShaderVariant {
                label: format!("compact/{entry_point}/{per_thread}"),
                entry_point,
                source: crate::gpu::shader::compose("compact.wgsl", &prelude)?,
            })
        })
        .collect()
}

/// The compaction kernels of one block size (flags an invocation).
#[derive(Clone, PartialEq, Eq, Hash)]
struct CompactKey {
    per_thread: u32,
}

impl crate::gpu::cache::PipelineKey for CompactKey {
    type Built = Pipelines;
}

struct Pipelines {
    layout: wgpu::BindGroupLayout,
    count: wgpu::ComputePipeline,
    scan: wgpu::ComputePipeline,
    scatter: wgpu::ComputePipeline,
}

/// Scratch space for one compaction of up to `capacity` flags: the block
/// offsets and the dispatch parameters. Its parameter write takes effect at
/// the next submit: encode it at most once per submit.
pub struct CompactScratch {
    params: wgpu::Buffer,
    block_offsets: wgpu::Buffer,
    /// Bound as the value output when no values are compacted.
    spare: wgpu::Buffer,
    capacity: u32,
}

impl CompactScratch {
    /// Scratch for up to `capacity` flags (4 bytes per block of 1 024 flags,
    /// bound whole: past the storage binding limit it is
    /// [`Error::TooLarge`]).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let scratch = rollcall::compact::CompactScratch::new(&ctx, 100_000)?;
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn new(ctx: &GpuContext, capacity: u32) -> Result<Self> {
        let blocks = capacity.div_ceil(GPU_BLOCK).max(1);
        Ok(Self {
            params: ctx.create_buffer(
                "rollcall compact params",
                std::mem::size_of::<CompactParams>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )?,
            block_offsets: ctx.create_bound_buffer(
                "rollcall compact block offsets",
                u64::from(blocks) * 4,
                wgpu::BufferUsages::STORAGE,
            )?,
            spare: ctx.create_buffer("rollcall compact spare", 4, wgpu::BufferUsages::STORAGE)?,
            capacity,
        })
    }
}

/// The compaction kernels, built once per context.
///
/// ```no_run
/// let ctx = rollcall::GpuContext::new()?;
/// let compactor = rollcall::compact::Compactor::new(&ctx)?;
/// assert_eq!(compactor.compact(&[1, 0, 0, 7])?, vec![0, 3]);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct Compactor {
    ctx: GpuContext,
    built: Arc<Pipelines>,
    grid_width: u32,
    per_thread: u32,
}

impl Compactor {
    /// Builds (or reuses) the pipelines on `ctx`, with the block size for
    /// its adapter.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let cpu = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
        Self::with_per_thread(ctx, if cpu { CPU_PER_THREAD } else { GPU_PER_THREAD })
    }

    fn with_per_thread(ctx: &GpuContext, per_thread: u32) -> Result<Self> {
        let built = ctx.pipelines(&CompactKey { per_thread }, || {
            use crate::gpu::shader::{layout_and_pipelines, Binding};
            let (read, write) = (Binding::Read, Binding::ReadWrite);
            let bindings = [
                (0, Binding::Uniform(None)),
                (1, read),
                (2, write),
                (3, write),
                (4, write),
                (5, read),
                (6, write),
            ];
            let (layout, pipelines) = layout_and_pipelines(
                &ctx.device,
                "rollcall compact",
                &bindings,
                &shader_variants(per_thread)?,
            );
            let [count, scan, scatter] = <[_; 3]>::try_from(pipelines)
                .unwrap_or_else(|_| unreachable!("three entry points"));
            Ok(Pipelines {
                count,
                scan,
                scatter,
                layout,
            })
        })?;
        Ok(Self {
            ctx: ctx.clone(),
            built,
            grid_width: ctx.limits().max_compute_workgroups_per_dimension.max(1),
            per_thread,
        })
    }

    /// Forces the CPU adapter's block size (8 192 flags) or the GPU's
    /// (1 024): for tests of both on any adapter (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_cpu_routes(self, cpu: bool) -> Result<Self> {
        let per_thread = if cpu { CPU_PER_THREAD } else { GPU_PER_THREAD };
        Ok(Self {
            grid_width: self.grid_width,
            ..Self::with_per_thread(&self.ctx, per_thread)?
        })
    }

    /// Flags one workgroup handles.
    fn block(&self) -> u32 {
        WG * self.per_thread
    }

    /// Caps the workgroups along x, so that large inputs use a 2-D grid (the
    /// adapter's own cap, 65 535 by default, is otherwise reached only past
    /// 67 million flags): for tests and for adapters with smaller limits.
    /// For tests of the 2-D grid (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_grid_width(mut self, width: u32) -> Self {
        self.grid_width = width.clamp(1, self.grid_width);
        self
    }

    /// Records the compaction of the first `n` flags of `keep` (one `u32` per
    /// flag, nonzero = kept): the kept indices, in order, go to the start of
    /// `out_indices`, their count to the first word of `out_count`. Nothing is
    /// read back.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        keep: &wgpu::Buffer,
        n: u32,
        scratch: &CompactScratch,
        out_indices: &wgpu::Buffer,
        out_count: &wgpu::Buffer,
    ) -> Result<()> {
        self.encode_with_values(encoder, keep, n, scratch, out_indices, out_count, None)
    }

    /// Like [`Compactor::encode`], and also moves `values[i]` (one `u32` per
    /// flag) of every kept `i` to `out_values`, in the same order.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_with_values(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        keep: &wgpu::Buffer,
        n: u32,
        scratch: &CompactScratch,
        out_indices: &wgpu::Buffer,
        out_count: &wgpu::Buffer,
        values: Option<(&wgpu::Buffer, &wgpu::Buffer)>,
    ) -> Result<()> {
        let bytes = u64::from(n) * 4;
        let check = |what, buffer: &wgpu::Buffer, needed: u64| {
            if buffer.size() < needed {
                Err(Error::BufferTooSmall {
                    what,
                    needed,
                    got: buffer.size(),
                })
            } else {
                Ok(())
            }
        };
        check("compaction flags", keep, bytes.max(4))?;
        check("compacted indices", out_indices, bytes.max(4))?;
        check("compacted count", out_count, 4)?;
        if let Some((values, out_values)) = values {
            check("compaction values", values, bytes.max(4))?;
            check("compacted values", out_values, bytes.max(4))?;
        }
        if n > scratch.capacity {
            return Err(Error::BatchCapacity {
                capacity: scratch.capacity as usize,
                rows: n as usize,
            });
        }
        let max_binding = self.ctx.limits().max_storage_buffer_binding_size;
        if bytes > max_binding {
            return Err(Error::TooLarge {
                what: "compaction flags (one binding)",
                bytes,
                limit: max_binding,
            });
        }
        let blocks = n.div_ceil(self.block());
        let blocks_x = blocks.clamp(1, self.grid_width);
        let params = CompactParams {
            n,
            blocks,
            blocks_x,
            with_values: u32::from(values.is_some()),
        };
        self.ctx
            .queue
            .write_buffer(&scratch.params, 0, bytemuck::bytes_of(&params));
        // Zero-sized bindings are not allowed: bind at least one word.
        fn at_least_word(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: 0,
                size: NonZeroU64::new(size.max(4)),
            })
        }
        let bind_group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("rollcall compact"),
                layout: &self.built.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: scratch.params.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: at_least_word(keep, bytes),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: scratch.block_offsets.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: at_least_word(out_indices, bytes),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: out_count.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 5,
                        resource: at_least_word(values.map_or(keep, |v| v.0), bytes),
                    },
                    wgpu::BindGroupEntry {
                        binding: 6,
                        resource: match values {
                            Some((_, out_values)) => at_least_word(out_values, bytes),
                            None => scratch.spare.as_entire_binding(),
                        },
                    },
                ],
            });
        let grid = (blocks_x, blocks.div_ceil(blocks_x), 1);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("rollcall compact"),
            timestamp_writes: None,
        });
        pass.set_bind_group(0, &bind_group, &[]);
        if blocks > 0 {
            pass.set_pipeline(&self.built.count);
            pass.dispatch_workgroups(grid.0, grid.1, grid.2);
        }
        pass.set_pipeline(&self.built.scan);
        pass.dispatch_workgroups(1, 1, 1);
        if blocks > 0 {
            pass.set_pipeline(&self.built.scatter);
            pass.dispatch_workgroups(grid.0, grid.1, grid.2);
        }
        Ok(())
    }

    /// Host path: uploads the flags, compacts, and reads back the kept indices.
    pub fn compact(&self, keep: &[u32]) -> Result<Vec<u32>> {
        let n = u32::try_from(keep.len()).map_err(|_| Error::BatchCapacity {
            capacity: u32::MAX as usize,
            rows: keep.len(),
        })?;
        // The flags and the indices are bound whole: check before allocating.
        let bytes = (u64::from(n) * 4).max(4);
        let limit = self.ctx.whole_binding_limit(wgpu::BufferUsages::STORAGE);
        if bytes > limit {
            return Err(Error::TooLarge {
                what: "compaction flags (one binding)",
                bytes,
                limit,
            });
        }
        self.ctx
            .scoped("compaction", || self.compact_on(keep, n, bytes))
    }

    fn compact_on(&self, keep: &[u32], n: u32, bytes: u64) -> Result<Vec<u32>> {
        let ctx = &self.ctx;
        let flags = ctx.create_bound_buffer(
            "rollcall compact flags",
            bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        if !keep.is_empty() {
            ctx.queue
                .write_buffer(&flags, 0, bytemuck::cast_slice(keep));
        }
        let storage = |label, size| {
            ctx.create_bound_buffer(
                label,
                size,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            )
        };
        let indices = storage("rollcall compacted indices", bytes)?;
        let count = storage("rollcall compacted count", 4)?;
        let readback = ctx.create_buffer(
            "rollcall compact readback",
            bytes + 4,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let scratch = CompactScratch::new(ctx, n)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.encode(&mut encoder, &flags, n, &scratch, &indices, &count)?;
        encoder.copy_buffer_to_buffer(&count, 0, &readback, 0, 4);
        encoder.copy_buffer_to_buffer(&indices, 0, &readback, 4, bytes);
        ctx.submit(encoder.finish());
        let data = ctx.read_buffer(&readback, bytes + 4)?;
        let words: &[u32] = bytemuck::cast_slice(&data);
        let kept = (words[0] as usize).min(keep.len());
        Ok(words[1..1 + kept].to_vec())
    }
}
