//! WGSL sources, embedded at compile time, composed by `#include "file"` so
//! shared code (Philox, float keys, reductions) lives in one file.

use crate::{Error, Result};

/// Every WGSL file in `shaders/`, by name.
pub const SOURCES: &[(&str, &str)] = &[
    ("philox.wgsl", include_str!("../shaders/philox.wgsl")),
    ("keys.wgsl", include_str!("../shaders/keys.wgsl")),
    ("logits.wgsl", include_str!("../shaders/logits.wgsl")),
    ("sampling.wgsl", include_str!("../shaders/sampling.wgsl")),
    (
        "philox_words.wgsl",
        include_str!("../shaders/philox_words.wgsl"),
    ),
    ("read_once.wgsl", include_str!("../shaders/read_once.wgsl")),
    ("compact.wgsl", include_str!("../shaders/compact.wgsl")),
    ("posterior.wgsl", include_str!("../shaders/posterior.wgsl")),
    ("voting.wgsl", include_str!("../shaders/voting.wgsl")),
    ("tail.wgsl", include_str!("../shaders/tail.wgsl")),
];

/// The embedded text of one shader file.
pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// One compiled form of a kernel: the composed WGSL and the device features it
/// needs.
#[derive(Clone, Debug)]
pub struct ShaderVariant {
    /// Label for pipelines and error messages.
    pub label: String,
    /// Entry point name.
    pub entry_point: &'static str,
    /// Full WGSL text, includes resolved.
    pub source: String,
    /// Device features the variant requires.
    pub features: wgpu::Features,
}

impl ShaderVariant {
    /// Builds the variant's compute pipeline (layout `None`: derived from the
    /// shader).
    pub fn compute_pipeline(
        &self,
        device: &wgpu::Device,
        layout: Option<&wgpu::PipelineLayout>,
    ) -> wgpu::ComputePipeline {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&self.label),
            source: wgpu::ShaderSource::Wgsl(self.source.as_str().into()),
        });
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&self.label),
            layout,
            module: &module,
            entry_point: Some(self.entry_point),
            compilation_options: Default::default(),
            cache: None,
        })
    }
}

/// Resolves `#include "name"` lines (each file at most once) after `prelude`.
///
/// ```
/// let wgsl = rollcall::shader::compose("sampling.wgsl", "const LOGITS_DTYPE: u32 = 0u;").unwrap();
/// assert!(wgsl.contains("fn philox4x32_10"));
/// ```
pub fn compose(name: &str, prelude: &str) -> Result<String> {
    let mut out = String::from(prelude);
    out.push('\n');
    let mut seen = Vec::new();
    append(name, &mut out, &mut seen)?;
    Ok(out)
}

fn append(name: &str, out: &mut String, seen: &mut Vec<String>) -> Result<()> {
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
                append(inner, out, seen)?;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// A bind group layout of buffers: (binding, kind) with kind `None` for a
/// uniform, else `Some(read_only)` for storage.
pub(crate) fn buffer_layout(
    device: &wgpu::Device,
    label: &str,
    bindings: &[(u32, Option<bool>)],
) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match kind {
                    None => wgpu::BufferBindingType::Uniform,
                    Some(read_only) => wgpu::BufferBindingType::Storage { read_only },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// Every shader variant the crate can build, for validation without a device.
pub fn all_variants() -> Result<Vec<ShaderVariant>> {
    let (fewest, most) = crate::sampling::CANDIDATE_RANGE;
    let mut all = crate::sampling::shader_variants(fewest, "sample_rows")?;
    all.extend(crate::sampling::shader_variants(most, "sample_rows")?);
    all.extend(crate::sampling::shader_variants(most, "stream_partials")?);
    all.extend(crate::philox::shader_variants()?);
    all.extend(crate::reference::vector_shader_variants()?);
    all.extend(crate::reference::exp_shader_variants()?);
    all.extend(crate::compact::shader_variants()?);
    all.extend(crate::voting::shader_variants(1)?);
    all.extend(crate::voting::shader_variants(
        crate::voting::DEFAULT_CAPACITY,
    )?);
    all.extend(crate::tail::shader_variants()?);
    Ok(all)
}
