//! The reductions' fixed shape (`shaders/shared/fold.wgsl`): the complete
//! binary tree over the workgroup's values, neighbours first. The shader
//! folds it in registers or across subgroups of any size from 8 lanes; the
//! twin folds it here, so float sums and merged softmax states carry the
//! same bits on every route.

/// `f` over `values` (a power-of-two count) as the complete binary tree,
/// neighbours first: values 2i and 2i + 1, then pairs of pairs, ...; the
/// lower half is always the left operand.
pub fn tree_fold<T: Copy>(values: &[T], f: impl Fn(T, T) -> T) -> T {
    debug_assert!(values.len().is_power_of_two(), "a complete tree");
    let mut level = values.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|pair| f(pair[0], pair[1])).collect();
    }
    level[0]
}

#[cfg(test)]
pub(crate) use gpu::shader_variants;
#[cfg(any(test, feature = "internals"))]
pub use gpu::{FoldValues, FoldedValues, FOLD_WIDTH};

#[cfg(any(test, feature = "internals"))]
mod gpu {
    use crate::gpu::shader::{layout_and_pipelines, Binding, ShaderVariant};
    use crate::{Error, GpuContext, Result};

    /// Values one workgroup of `fold_values` reduces.
    pub const FOLD_WIDTH: usize = 256;

    /// One workgroup's reductions in one form, as `fold_values` writes them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct FoldedValues {
        /// `reduce_stats`: the merged (max, mass) state's bits.
        pub state_bits: [u32; 2],
        /// `reduce_sums`: the sums of the maxima and of the masses, as bits.
        pub sum_bits: [u32; 2],
        /// The counts' total (both reductions give it).
        pub count: u32,
        /// Whether the workgroup folded by subgroups.
        pub by_subgroups: bool,
    }

    /// The sampling kernels' reductions run on given values by
    /// `shaders/fold_values.wgsl`, in both forms: for checking a device's
    /// subgroup form against its workgroup form and the twin.
    pub struct FoldValues {
        ctx: GpuContext,
        pipeline: std::sync::Arc<(wgpu::BindGroupLayout, wgpu::ComputePipeline)>,
    }

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct FoldValuesKey;

    impl crate::gpu::cache::PipelineKey for FoldValuesKey {
        type Built = (wgpu::BindGroupLayout, wgpu::ComputePipeline);
    }

    /// The kernel's text: with subgroup operations only for a device that
    /// has them.
    pub(crate) fn shader_variants(subgroups: bool) -> Result<Vec<ShaderVariant>> {
        let substitutes: &[(&str, &str)] = if subgroups {
            &[]
        } else {
            &[("shared/subgroups.wgsl", "shared/no_subgroups.wgsl")]
        };
        Ok(vec![ShaderVariant {
            label: format!(
                "fold_values/{}",
                if subgroups { "subgroups" } else { "workgroup" }
            ),
            entry_point: "fold_values",
            source: crate::gpu::shader::compose_with("fold_values.wgsl", "", substitutes)?,
        }])
    }

    impl FoldValues {
        /// Builds the pipeline (with subgroup operations if the device has
        /// the feature).
        pub fn new(ctx: &GpuContext) -> Result<Self> {
            let subgroups = ctx.features().contains(wgpu::Features::SUBGROUP);
            let pipeline = ctx.pipelines(&FoldValuesKey, || {
                let bindings = [(0, Binding::Read), (1, Binding::ReadWrite)];
                let (layout, mut pipelines) = layout_and_pipelines(
                    &ctx.device,
                    "fold values",
                    &bindings,
                    &shader_variants(subgroups)?,
                );
                Ok((layout, pipelines.remove(0)))
            })?;
            Ok(Self {
                ctx: ctx.clone(),
                pipeline,
            })
        }

        /// Folds each run of [`FOLD_WIDTH`] (max, mass, count) values: the
        /// workgroup form's results for every run, then the subgroup form's.
        pub fn fold(
            &self,
            states: &[[f32; 2]],
            counts: &[u32],
        ) -> Result<(Vec<FoldedValues>, Vec<FoldedValues>)> {
            if states.len() != counts.len()
                || states.is_empty()
                || !states.len().is_multiple_of(FOLD_WIDTH)
            {
                return Err(Error::InvalidArgument(format!(
                    "{} states and {} counts: need equal counts, a positive multiple of {FOLD_WIDTH}",
                    states.len(),
                    counts.len()
                )));
            }
            let groups = states.len() / FOLD_WIDTH;
            let most = self.ctx.limits().max_compute_workgroups_per_dimension as usize;
            if groups > most {
                return Err(Error::InvalidArgument(format!(
                    "{groups} runs of {FOLD_WIDTH}: at most {most} per call"
                )));
            }
            self.ctx
                .scoped("fold values", || self.fold_on(states, counts, groups))
        }

        fn fold_on(
            &self,
            states: &[[f32; 2]],
            counts: &[u32],
            groups: usize,
        ) -> Result<(Vec<FoldedValues>, Vec<FoldedValues>)> {
            let ctx = &self.ctx;
            let packed: Vec<[u32; 4]> = states
                .iter()
                .zip(counts)
                .map(|(s, &c)| [s[0].to_bits(), s[1].to_bits(), c, 0])
                .collect();
            let input = ctx.create_bound_buffer(
                "fold inputs",
                (packed.len() * 16) as u64,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            )?;
            ctx.queue
                .write_buffer(&input, 0, bytemuck::cast_slice(&packed));
            let size = (groups * 2 * 2 * 16) as u64;
            let output = ctx.create_bound_buffer(
                "fold outputs",
                size,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            )?;
            let readback = ctx.create_buffer(
                "fold readback",
                size,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?;
            let (layout, pipeline) = &*self.pipeline;
            let bind_group = crate::gpu::shader::bind_buffers(
                &ctx.device,
                "fold values",
                layout,
                &[(0, &input), (1, &output)],
            );
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(groups as u32, 2, 1);
            }
            encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, size);
            ctx.submit(encoder.finish());
            let bytes = ctx.read_buffer(&readback, size)?;
            let words: &[[u32; 4]] = bytemuck::cast_slice(&bytes);
            let results: Vec<FoldedValues> = words
                .chunks(2)
                .map(|w| FoldedValues {
                    state_bits: [w[0][0], w[0][1]],
                    sum_bits: [w[1][0], w[1][1]],
                    count: w[0][2],
                    by_subgroups: w[0][3] != 0,
                })
                .collect();
            let (workgroup, subgroups) = results.split_at(groups);
            Ok((workgroup.to_vec(), subgroups.to_vec()))
        }
    }
}
