//! WGSL sources, embedded at compile time, composed by `#include "file"` so
//! shared code (Philox, float keys, reductions) lives in one file.

use crate::{Error, Result};

#[cfg(test)]
pub(crate) fn all_sources() -> &'static [(&'static str, &'static str)] {
    SOURCES
}

/// Every WGSL file under `shaders/`, by its path there.
const SOURCES: &[(&str, &str)] = &[
    (
        "shared/keys.wgsl",
        include_str!("../../shaders/shared/keys.wgsl"),
    ),
    (
        "shared/philox.wgsl",
        include_str!("../../shaders/shared/philox.wgsl"),
    ),
    (
        "shared/special.wgsl",
        include_str!("../../shaders/shared/special.wgsl"),
    ),
    (
        "shared/chunk.wgsl",
        include_str!("../../shaders/shared/chunk.wgsl"),
    ),
    (
        "shared/row_state.wgsl",
        include_str!("../../shaders/shared/row_state.wgsl"),
    ),
    (
        "shared/mask.wgsl",
        include_str!("../../shaders/shared/mask.wgsl"),
    ),
    (
        "shared/logits.wgsl",
        include_str!("../../shaders/shared/logits.wgsl"),
    ),
    (
        "shared/subgroups.wgsl",
        include_str!("../../shaders/shared/subgroups.wgsl"),
    ),
    (
        "shared/fold.wgsl",
        include_str!("../../shaders/shared/fold.wgsl"),
    ),
    (
        "shared/segment.wgsl",
        include_str!("../../shaders/shared/segment.wgsl"),
    ),
    (
        "shared/no_subgroups.wgsl",
        include_str!("../../shaders/shared/no_subgroups.wgsl"),
    ),
    ("sampling.wgsl", include_str!("../../shaders/sampling.wgsl")),
    ("edits.wgsl", include_str!("../../shaders/edits.wgsl")),
    (
        "speculative.wgsl",
        include_str!("../../shaders/speculative.wgsl"),
    ),
    (
        "read_once.wgsl",
        include_str!("../../shaders/read_once.wgsl"),
    ),
    (
        "fold_values.wgsl",
        include_str!("../../shaders/fold_values.wgsl"),
    ),
    (
        "philox_words.wgsl",
        include_str!("../../shaders/philox_words.wgsl"),
    ),
    ("compact.wgsl", include_str!("../../shaders/compact.wgsl")),
    (
        "posterior.wgsl",
        include_str!("../../shaders/posterior.wgsl"),
    ),
    ("voting.wgsl", include_str!("../../shaders/voting.wgsl")),
    (
        "calibrated.wgsl",
        include_str!("../../shaders/calibrated.wgsl"),
    ),
    ("tail.wgsl", include_str!("../../shaders/tail.wgsl")),
];

/// The embedded text of one shader file.
pub(crate) fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// One compiled form of a kernel: its composed WGSL and entry point.
#[derive(Clone, Debug)]
pub(crate) struct ShaderVariant {
    /// Label for pipelines and error messages.
    pub(crate) label: String,
    /// Entry point name.
    pub(crate) entry_point: &'static str,
    /// Full WGSL text, includes resolved.
    pub(crate) source: String,
}

impl ShaderVariant {
    /// Builds the variant's compute pipeline over `layout`.
    pub(crate) fn compute_pipeline(
        &self,
        device: &wgpu::Device,
        layout: &wgpu::PipelineLayout,
    ) -> wgpu::ComputePipeline {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&self.label),
            source: wgpu::ShaderSource::Wgsl(self.source.as_str().into()),
        });
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&self.label),
            layout: Some(layout),
            module: &module,
            entry_point: Some(self.entry_point),
            compilation_options: Default::default(),
            cache: None,
        })
    }
}

/// Resolves `#include "name"` lines (each file at most once) after `prelude`.
///
pub(crate) fn compose(name: &str, prelude: &str) -> Result<String> {
    compose_with(name, prelude, &[])
}

/// [`compose`], with each `(file, instead)` of `substitutes` included as
/// `instead` (one interface, two implementations: e.g. the reductions with
/// or without subgroup operations).
pub(crate) fn compose_with(
    name: &str,
    prelude: &str,
    substitutes: &[(&str, &str)],
) -> Result<String> {
    let mut out = String::from(prelude);
    out.push('\n');
    let mut seen = Vec::new();
    append(name, &mut out, &mut seen, substitutes)?;
    Ok(out)
}

fn append(
    name: &str,
    out: &mut String,
    seen: &mut Vec<String>,
    substitutes: &[(&str, &str)],
) -> Result<()> {
    let name = substitutes
        .iter()
        .find(|(file, _)| *file == name)
        .map_or(name, |(_, instead)| instead);
    if seen.iter().any(|s| s == name) {
        return Ok(());
    }
    seen.push(name.to_string());
    let text = source(name).ok_or_else(|| Error::Shader {
        name: name.to_string(),
        reason: "no such embedded file".into(),
    })?;
    for line in text.lines() {
        match line.trim().strip_prefix("#include") {
            Some(rest) => {
                let inner = rest.trim().trim_matches('"');
                append(inner, out, seen, substitutes)?;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// How a kernel binds one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Binding {
    /// A uniform buffer, optionally with its minimum size.
    Uniform(Option<u64>),
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// A bind group layout of buffers at the given binding numbers.
pub(crate) fn buffer_layout(
    device: &wgpu::Device,
    label: &str,
    bindings: &[(u32, Binding)],
) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match kind {
                    Binding::Uniform(_) => wgpu::BufferBindingType::Uniform,
                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: match kind {
                    Binding::Uniform(size) => size.and_then(std::num::NonZeroU64::new),
                    _ => None,
                },
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// A bind group layout and the pipelines of `variants` over it: every kernel
/// of the crate is built this way (explicit layouts, one per bind set).
pub(crate) fn layout_and_pipelines(
    device: &wgpu::Device,
    label: &str,
    bindings: &[(u32, Binding)],
    variants: &[ShaderVariant],
) -> (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>) {
    let (layout, pipeline_layout) = layouts(device, label, bindings);
    let pipelines = variants
        .iter()
        .map(|v| v.compute_pipeline(device, &pipeline_layout))
        .collect();
    (layout, pipelines)
}

/// The bind group layout of `bindings` and a pipeline layout of it alone.
pub(crate) fn layouts(
    device: &wgpu::Device,
    label: &str,
    bindings: &[(u32, Binding)],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let layout = buffer_layout(device, label, bindings);
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    (layout, pipeline_layout)
}

/// A kernel of one entry point over an explicit layout, dispatched over a
/// grid of its own (no logits chunking): the small kernels of a family.
pub(crate) struct PlainKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl PlainKernel {
    /// Builds `variant`'s pipeline over a layout of `bindings`.
    pub(crate) fn build(
        device: &wgpu::Device,
        variant: &ShaderVariant,
        bindings: &[(u32, Binding)],
    ) -> Self {
        let (layout, pipelines) = layout_and_pipelines(
            device,
            &variant.label,
            bindings,
            std::slice::from_ref(variant),
        );
        let pipeline = pipelines
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable!("one variant, one pipeline"));
        Self { layout, pipeline }
    }

    /// Records one dispatch of `grid` workgroups with `resources` bound.
    pub(crate) fn dispatch(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        resources: &[(u32, wgpu::BindingResource<'_>)],
        grid: (u32, u32),
    ) {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(grid.0, grid.1, 1);
    }
}

/// A bind group of whole buffers at the given binding numbers.
pub(crate) fn bind_buffers(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
        .iter()
        .map(|&(binding, buffer)| wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}
