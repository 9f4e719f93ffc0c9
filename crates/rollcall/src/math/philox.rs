//! Philox4x32-10 (Salmon et al., SC'11), the counter-based generator shared by
//! the GPU kernels and their CPU twins: a pure function of (counter, key).

pub(crate) const M0: u32 = 0xD251_1F53;
pub(crate) const M1: u32 = 0xCD9E_8D57;
pub(crate) const W0: u32 = 0x9E37_79B9;
pub(crate) const W1: u32 = 0xBB67_AE85;

/// Ten Philox rounds of `counter` under `key`; identical to `philox4x32_10` in
/// `shaders/philox.wgsl`.
///
/// ```
/// // Random123 known-answer vector.
/// assert_eq!(
///     rollcall::internals::philox4x32_10([0; 4], [0; 2]),
///     [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
/// );
/// ```
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// Standard exponential from one 32-bit word, with full resolution near zero;
/// the same f32 operations as `exponential_from_bits` in the shader.
///
/// ```
/// let e = rollcall::internals::exponential_from_bits(0);
/// assert!(e > 0.0 && e < 1e-9);
/// ```
pub fn exponential_from_bits(x: u32) -> f32 {
    let v = ((x as f32) + 0.5) * 2.328_306_4e-10_f32;
    let v = v.min(0.999_999_94);
    if v < 0.0625 {
        return v
            * (1.0
                + v * (0.5
                    + v * (0.333_333_34
                        + v * (0.25
                            + v * (0.2 + v * (0.166_666_67 + v * (0.142_857_15 + v * 0.125)))))));
    }
    -(1.0 - v).ln()
}

#[cfg(any(test, feature = "internals"))]
/// Random123 known-answer vectors for philox4x32_10 (`kat_vectors`):
/// (counter, key, output words).
pub const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    (
        [0; 4],
        [0; 2],
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ),
    (
        [0xffffffff; 4],
        [0xffffffff; 2],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

/// Splits a u64 into (low, high) u32 words, the order the shaders use.
pub fn split_u64(x: u64) -> [u32; 2] {
    [x as u32, (x >> 32) as u32]
}

/// Philox words computed on the GPU by `shaders/philox_words.wgsl`, the same
/// function the sampling kernels use; for checking a device against the twin.
///
/// ```no_run
/// let ctx = rollcall::GpuContext::new()?;
/// let philox = rollcall::internals::PhiloxWords::new(&ctx)?;
/// let words = philox.generate(&[([0; 4], [0; 2])])?;
/// assert_eq!(words[0], rollcall::internals::philox4x32_10([0; 4], [0; 2]));
/// # Ok::<(), rollcall::Error>(())
/// ```
#[cfg(any(test, feature = "internals"))]
pub struct PhiloxWords {
    ctx: crate::GpuContext,
    pipeline: std::sync::Arc<(wgpu::BindGroupLayout, wgpu::ComputePipeline)>,
}

#[cfg(any(test, feature = "internals"))]
#[derive(Clone, PartialEq, Eq, Hash)]
struct PhiloxWordsKey;

#[cfg(any(test, feature = "internals"))]
impl crate::gpu::cache::PipelineKey for PhiloxWordsKey {
    type Built = (wgpu::BindGroupLayout, wgpu::ComputePipeline);
}

#[cfg(any(test, feature = "internals"))]
/// One (counter, key) as the shader reads it (`PhiloxInput` there).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PhiloxInput {
    pub(crate) counter: [u32; 4],
    pub(crate) key: [u32; 2],
    pub(crate) pad: [u32; 2],
}

#[cfg(any(test, feature = "internals"))]
/// Invocations per workgroup of `philox_words` (one per input).
pub(crate) const WORKGROUP: u32 = 64;

#[cfg(any(test, feature = "internals"))]
impl PhiloxWords {
    /// Builds the pipeline.
    pub fn new(ctx: &crate::GpuContext) -> crate::Result<Self> {
        let pipeline = ctx.pipelines(&PhiloxWordsKey, || {
            use crate::gpu::shader::{layout_and_pipelines, Binding};
            let bindings = [(0, Binding::Read), (1, Binding::ReadWrite)];
            let (layout, mut pipelines) =
                layout_and_pipelines(&ctx.device, "philox", &bindings, &shader_variants()?);
            Ok((layout, pipelines.remove(0)))
        })?;
        Ok(Self {
            ctx: ctx.clone(),
            pipeline,
        })
    }

    /// The four output words for each (counter, key).
    pub fn generate(&self, inputs: &[([u32; 4], [u32; 2])]) -> crate::Result<Vec<[u32; 4]>> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        // One dispatch of 64 per workgroup along x.
        let most = u64::from(self.ctx.limits().max_compute_workgroups_per_dimension) * 64;
        if inputs.len() as u64 > most {
            return Err(crate::Error::InvalidArgument(format!(
                "{} Philox inputs: at most {most} per call",
                inputs.len()
            )));
        }
        self.ctx.scoped("philox words", || self.generate_on(inputs))
    }

    fn generate_on(&self, inputs: &[([u32; 4], [u32; 2])]) -> crate::Result<Vec<[u32; 4]>> {
        let ctx = &self.ctx;
        let device = &ctx.device;
        let packed: Vec<PhiloxInput> = inputs
            .iter()
            .map(|&(counter, key)| PhiloxInput {
                counter,
                key,
                pad: [0; 2],
            })
            .collect();
        let input = ctx.create_bound_buffer(
            "philox inputs",
            (packed.len() * std::mem::size_of::<PhiloxInput>()) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        ctx.queue
            .write_buffer(&input, 0, bytemuck::cast_slice(&packed));
        let size = (inputs.len() * std::mem::size_of::<[u32; 4]>()) as u64;
        let output = ctx.create_bound_buffer(
            "philox outputs",
            size,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let readback = ctx.create_buffer(
            "philox readback",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let (layout, pipeline) = &*self.pipeline;
        let bind_group = crate::gpu::shader::bind_buffers(
            device,
            "philox",
            layout,
            &[(0, &input), (1, &output)],
        );
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups((inputs.len() as u32).div_ceil(WORKGROUP), 1, 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, size);
        ctx.submit(encoder.finish());
        let bytes = ctx.read_buffer(&readback, size)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }
}

#[cfg(any(test, feature = "internals"))]
/// The shader variant behind [`PhiloxWords`].
pub fn shader_variants() -> crate::Result<Vec<crate::gpu::shader::ShaderVariant>> {
    Ok(vec![crate::gpu::shader::ShaderVariant {
        label: "philox_words".into(),
        entry_point: "philox_words",
        source: crate::gpu::shader::compose("philox_words.wgsl", "")?,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_vectors() {
        for (counter, key, expected) in KNOWN_ANSWERS {
            assert_eq!(philox4x32_10(counter, key), expected);
        }
    }

    #[test]
    fn exponential_has_no_floor_at_two_to_minus_24() {
        // The smallest words give exponentials far below 2^-24 ≈ 6e-8.
        assert!(exponential_from_bits(0) < 1e-9);
        assert!(exponential_from_bits(1) < 1e-9);
        assert!(exponential_from_bits(1) > exponential_from_bits(0));
        // Mean of the map over an even grid of words is 1 (a standard exponential).
        let n = 1 << 20;
        let mean: f64 = (0..n)
            .map(|i| f64::from(exponential_from_bits((i as u32) << 12)))
            .sum::<f64>()
            / n as f64;
        assert!((mean - 1.0).abs() < 1e-3, "mean {mean}");
    }
}
