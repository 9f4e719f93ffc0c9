//! A decode loop on burn's wgpu backend with rollcall as its sampler, on one
//! device and queue: burn computes the logits, rollcall samples straight
//! from burn's logits buffer (penalties' history kept on the device), and
//! the sampled tokens are copied into the tensor burn reads as the next
//! step's input. The host reads tokens back only every `readback_every`
//! steps. Two baselines run the same model: burn's own way (logits read
//! back, sampled on the host, tokens uploaded) and rollcall's CPU twin on
//! the read-back logits.

use burn::backend::Cube;
use burn::cubecl::wgpu::{AutoCompiler, WgpuResource, WgpuServer};
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderAutoregressiveCache, TransformerEncoderConfig,
    TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn_cubecl::tensor::CubeTensor;
use rand::{Rng, SeedableRng};
use rollcall::sampling::{cpu as twin, RowHistory, SampleOptions};
use rollcall::{
    GpuContext, HostLogits, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams,
};
use std::time::{Duration, Instant};

/// The model and the loop's shape.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct DecodeConfig {
    /// Sequences decoded together.
    pub batch: usize,
    /// Tokens generated per sequence.
    pub steps: usize,
    /// Vocabulary (logits per row).
    pub vocab: usize,
    /// Model width.
    pub width: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// The GPU path reads the tokens back every this many steps (and at the end).
    pub readback_every: usize,
    /// Weights and sampling seeds.
    pub seed: u64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            batch: 16,
            steps: 64,
            vocab: 32_000,
            width: 128,
            layers: 2,
            readback_every: 16,
            seed: 42,
        }
    }
}

/// Prompt length of every sequence.
pub const PROMPT: usize = 4;

/// A small decoder-only transformer with random weights (from the device's
/// seed): token and position embeddings, pre-norm blocks with causal
/// attention, a final norm and the output projection.
#[derive(Module, Debug)]
pub struct TinyLm {
    tokens: Embedding,
    positions: Embedding,
    blocks: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
}

impl TinyLm {
    /// The model for `config` on `device`.
    pub fn new(config: &DecodeConfig, device: &Device) -> Self {
        let d = config.width;
        Self {
            tokens: EmbeddingConfig::new(config.vocab, d).init(device),
            positions: EmbeddingConfig::new(PROMPT + config.steps, d).init(device),
            blocks: TransformerEncoderConfig::new(d, 4 * d, 4, config.layers)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(device),
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, config.vocab).init(device),
        }
    }

    /// An empty key/value cache for [`TinyLm::forward`].
    pub fn new_cache(&self) -> TransformerEncoderAutoregressiveCache {
        self.blocks.new_autoregressive_cache()
    }

    /// Logits of each sequence's last position, `[batch, vocab]`. `cache`
    /// holds the earlier positions' keys, values and activations (burn's
    /// autoregressive cache): only the newest position goes through the
    /// projections and the MLP.
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        cache: &mut TransformerEncoderAutoregressiveCache,
    ) -> Tensor<2> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let d = self.norm.gamma.dims()[0];
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device)
            .reshape([1, s])
            .repeat_dim(0, b);
        let x = self.tokens.forward(tokens) + self.positions.forward(positions);
        let mask = generate_autoregressive_mask(b, s, &device);
        let h = self.blocks.forward_autoregressive_inference(
            TransformerEncoderInput::new(x).mask_attn(mask),
            cache,
        );
        let last = h.slice([0..b, s - 1..s, 0..d]).reshape([b, d]);
        self.head.forward(self.norm.forward(last))
    }
}

/// How a variant samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Variant {
    /// rollcall on the GPU, from burn's logits buffer; tokens stay on the device.
    RollcallGpu,
    /// rollcall's CPU twin on the logits read back; tokens uploaded.
    RollcallTwin,
    /// burn's way: logits read back, sampled on the host (argmax, or a
    /// sort-based top-k/top-p draw), tokens uploaded.
    HostBaseline,
}

impl Variant {
    /// All variants, in report order.
    pub const ALL: [Variant; 3] = [
        Variant::RollcallGpu,
        Variant::RollcallTwin,
        Variant::HostBaseline,
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Variant::RollcallGpu => "rollcall (GPU, on burn's buffer)",
            Variant::RollcallTwin => "rollcall CPU twin (logits read back)",
            Variant::HostBaseline => "host sampling (logits read back)",
        }
    }
}

/// Row r's sampling parameters at `step`: every fourth row greedy, the
/// others seeded top-k + top-p with a repetition penalty (history on the
/// device for the GPU path).
pub fn row_params(config: &DecodeConfig, row: usize, step: usize) -> SamplingParams {
    if row.is_multiple_of(4) {
        return SamplingParams::greedy();
    }
    SamplingParams::new(0.8)
        .top_k(50)
        .top_p(0.95)
        .penalties(1.1, 0.0, 0.0)
        .seed(config.seed.wrapping_mul(1_000_003).wrapping_add(row as u64))
        .step(step as u64)
}

/// One variant's run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DecodeReport {
    /// The variant.
    pub variant: Variant,
    /// Tokens generated per sequence.
    pub tokens: Vec<Vec<u32>>,
    /// Whole-loop wall time per step, ms (no waits but the variant's own);
    /// like every time here, the median over the rounds.
    pub step_ms: f64,
    /// Generated tokens per second over the loop.
    pub tokens_per_second: f64,
    /// Per step, from a second run that waits after each phase: forward
    /// time and sampling time (including the variant's copies), ms.
    pub forward_ms: f64,
    /// See `forward_ms`.
    pub sampling_ms: f64,
    /// rollcall's queue submissions per step (GPU path), or 0.
    pub rollcall_submits_per_step: f64,
    /// Host readbacks per step: rollcall's (GPU path) or the logits
    /// readbacks (host variants).
    pub readbacks_per_step: f64,
}

/// Runs the model once per variant over the same prompts.
pub struct Decoder {
    config: DecodeConfig,
    device: Device,
    ctx: GpuContext,
    model: TinyLm,
}

/// What can go wrong in the loop: burn's side or rollcall's.
#[derive(Debug)]
pub enum EngineError {
    /// burn failed (device, flush, readback) or its tensor hides its buffer.
    Burn(String),
    /// rollcall returned an error.
    Rollcall(rollcall::Error),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Burn(e) => write!(f, "burn: {e}"),
            EngineError::Rollcall(e) => write!(f, "rollcall: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<rollcall::Error> for EngineError {
    fn from(e: rollcall::Error) -> Self {
        EngineError::Rollcall(e)
    }
}

fn burn_error(e: impl std::fmt::Debug) -> EngineError {
    EngineError::Burn(format!("{e:?}"))
}

/// A concrete cube tensor (no copy); an error if the backend fuses kernels.
pub fn cube<const R: usize, K>(t: Tensor<R, K>) -> Result<CubeTensor, EngineError>
where
    K: burn::tensor::BackendPrimitive<Cube, Primitive = CubeTensor> + burn::tensor::kind::Basic,
{
    t.try_into_primitive::<Cube>().map_err(|_| {
        EngineError::Burn("built with kernel fusion: its tensors hide their buffers".into())
    })
}

/// The buffer, byte offset and size behind a contiguous cube tensor, and the
/// pin that keeps the allocation in place while held: hold it (and the
/// tensor) until rollcall's work on the buffer is submitted. Getting it
/// also submits burn's pending work on this thread.
pub fn buffer_of(t: &CubeTensor) -> Result<(WgpuResource, impl Sized), EngineError> {
    if !t.is_contiguous() || t.meta.is_tiled() {
        return Err(EngineError::Burn(
            "the tensor is not contiguous: rollcall reads rows back to back".into(),
        ));
    }
    let pinned = t
        .client
        .get_resource::<WgpuServer<AutoCompiler>>(t.handle.clone())
        .map_err(burn_error)?;
    Ok((pinned.resource().clone(), pinned))
}

impl Decoder {
    /// Opens burn's wgpu device (the adapter `WGPU_BACKEND` allows), hands its
    /// device and queue to rollcall, and builds the model.
    pub fn new(config: DecodeConfig) -> Result<Self, EngineError> {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup()
            .map_err(|e| EngineError::Burn(format!("no wgpu device: {e:?}")))?;
        let ctx = GpuContext::from_device(setup.device.clone(), setup.queue.clone());
        device.seed(config.seed);
        let model = TinyLm::new(&config, &device);
        Ok(Self {
            config,
            device,
            ctx,
            model,
        })
    }

    /// rollcall's context on burn's device.
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    fn prompts(&self) -> Vec<i32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.config.seed);
        (0..self.config.batch * PROMPT)
            .map(|_| rng.random_range(0..self.config.vocab as i32))
            .collect()
    }

    fn params(&self, step: usize) -> Vec<SamplingParams> {
        (0..self.config.batch)
            .map(|r| row_params(&self.config, r, step))
            .collect()
    }

    /// Decodes with `variant`; with `waits`, waits after each phase to time
    /// the forward pass and the sampling apart.
    pub fn run(&self, variant: Variant, waits: bool) -> Result<Run, EngineError> {
        self.run_steps(variant, waits, self.config.steps)
    }

    /// Builds every pipeline both libraries need (a CPU adapter compiles
    /// them on first use): a few steps of each variant, untimed.
    pub fn warm_up(&self) -> Result<(), EngineError> {
        let steps = self.config.steps.min(2);
        for variant in Variant::ALL {
            for waits in [false, true] {
                self.run_steps(variant, waits, steps)?;
            }
        }
        Ok(())
    }

    fn run_steps(&self, variant: Variant, waits: bool, steps: usize) -> Result<Run, EngineError> {
        match variant {
            Variant::RollcallGpu => self.run_gpu(waits, steps),
            _ => self.run_host(variant, waits, steps),
        }
    }

    fn run_gpu(&self, waits: bool, steps: usize) -> Result<Run, EngineError> {
        let c = &DecodeConfig {
            steps,
            ..self.config
        };
        let (b, vocab) = (c.batch, c.vocab as u32);
        let prompts = self.prompts();
        let mut tokens = Tensor::<2, Int>::from_data(
            TensorData::new(prompts.clone(), [b, PROMPT]),
            &self.device,
        );
        let mut cache = self.model.new_cache();
        let sampler = Sampler::new(&self.ctx)?;
        let mut batch = SampleBatch::with_history(&self.ctx, b as u32, (PROMPT + c.steps) as u32)?;
        for r in 0..b {
            let prompt: Vec<u32> = prompts[r * PROMPT..(r + 1) * PROMPT]
                .iter()
                .map(|&t| t as u32)
                .collect();
            batch.set_history(
                r as u32,
                vocab,
                &RowHistory {
                    prompt: &prompt,
                    ..Default::default()
                },
            )?;
        }
        let readback = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("decode tokens readback"),
            size: (b * c.readback_every.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut generated = vec![Vec::with_capacity(c.steps); b];
        let before = self.ctx.sync_counts();
        let mut timing = PhaseTimes::default();
        let start = Instant::now();
        let mut pending = 0usize;
        for step in 0..c.steps {
            let t0 = Instant::now();
            let logits = cube(self.model.forward(tokens.clone(), &mut cache))?;
            let next = cube(Tensor::<2, Int>::zeros([b, 1], &self.device))?;
            let (logits_buffer, logits_pin) = buffer_of(&logits)?;
            let (next_buffer, next_pin) = buffer_of(&next)?;
            // Everything burn recorded (the forward pass, the zeros) is
            // submitted before rollcall's work on the shared queue.
            self.device.flush().map_err(burn_error)?;
            if waits {
                self.device.sync().map_err(burn_error)?;
            }
            let t1 = Instant::now();
            batch.set_params(&self.params(step))?;
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            let binding = LogitsBinding {
                buffer: &logits_buffer.buffer,
                offset: logits_buffer.offset,
                rows: b as u32,
                vocab,
                dtype: LogitsDtype::F32,
            };
            sampler.encode(&mut encoder, &binding, &mut batch)?;
            let bytes = (b * 4) as u64;
            // The tokens into burn's next input (u32 ids as i32: same bits)
            // and into the readback buffer's slot for this step.
            encoder.copy_buffer_to_buffer(
                batch.tokens(),
                0,
                &next_buffer.buffer,
                next_buffer.offset,
                bytes,
            );
            encoder.copy_buffer_to_buffer(
                batch.tokens(),
                0,
                &readback,
                (pending * b * 4) as u64,
                bytes,
            );
            self.ctx.submit(encoder.finish());
            // burn may reuse the allocations only after our submit.
            drop((logits_pin, next_pin, logits));
            pending += 1;
            let last = step + 1 == c.steps;
            if pending == c.readback_every || last {
                let words: Vec<u32> = bytemuck::pod_collect_to_vec(
                    &self.ctx.read_buffer(&readback, (pending * b * 4) as u64)?,
                );
                for s in 0..pending {
                    for (r, row) in generated.iter_mut().enumerate() {
                        row.push(words[s * b + r]);
                    }
                }
                pending = 0;
            } else if waits {
                self.ctx.wait()?;
            }
            let t2 = Instant::now();
            timing.add(t1 - t0, t2 - t1);
            let next = Tensor::<2, Int>::from_primitive::<Cube>(next);
            tokens = Tensor::cat(vec![tokens, next], 1);
        }
        let elapsed = start.elapsed();
        let counts = self.ctx.sync_counts() - before;
        Ok(Run {
            tokens: generated,
            elapsed,
            phases: timing,
            rollcall_submits: counts.submits,
            readbacks: counts.readbacks,
        })
    }

    fn run_host(&self, variant: Variant, waits: bool, steps: usize) -> Result<Run, EngineError> {
        let c = &DecodeConfig {
            steps,
            ..self.config
        };
        let (b, vocab) = (c.batch, c.vocab);
        let prompts = self.prompts();
        let mut tokens = Tensor::<2, Int>::from_data(
            TensorData::new(prompts.clone(), [b, PROMPT]),
            &self.device,
        );
        let prompt_rows: Vec<Vec<u32>> = (0..b)
            .map(|r| {
                prompts[r * PROMPT..(r + 1) * PROMPT]
                    .iter()
                    .map(|&t| t as u32)
                    .collect()
            })
            .collect();
        let mut generated: Vec<Vec<u32>> = vec![Vec::with_capacity(c.steps); b];
        let mut timing = PhaseTimes::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed);
        let mut cache = self.model.new_cache();
        let start = Instant::now();
        for step in 0..c.steps {
            let t0 = Instant::now();
            let logits = self.model.forward(tokens.clone(), &mut cache);
            if waits {
                self.device.sync().map_err(burn_error)?;
            }
            let t1 = Instant::now();
            let host: Vec<f32> = logits.into_data().try_to_vec::<f32>().map_err(burn_error)?;
            let params = self.params(step);
            let next: Vec<u32> = match variant {
                Variant::RollcallTwin => {
                    let histories: Vec<RowHistory> = (0..b)
                        .map(|r| RowHistory {
                            prompt: &prompt_rows[r],
                            output: &generated[r],
                            ..Default::default()
                        })
                        .collect();
                    let options = SampleOptions::default().histories(&histories);
                    twin::sample_with(HostLogits::F32(&host), vocab as u32, &params, &options)?
                        .results
                        .iter()
                        .map(|r| r.token)
                        .collect()
                }
                _ => (0..b)
                    .map(|r| {
                        let row = &host[r * vocab..(r + 1) * vocab];
                        host_sample(row, &params[r], &prompt_rows[r], &generated[r], &mut rng)
                    })
                    .collect(),
            };
            for (row, &t) in generated.iter_mut().zip(&next) {
                row.push(t);
            }
            let ids: Vec<i32> = next.iter().map(|&t| t as i32).collect();
            let next = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &self.device);
            tokens = Tensor::cat(vec![tokens, next], 1);
            timing.add(t1 - t0, t1.elapsed());
        }
        Ok(Run {
            tokens: generated,
            elapsed: start.elapsed(),
            phases: timing,
            rollcall_submits: 0,
            readbacks: c.steps as u64,
        })
    }

    /// Runs every variant `rounds` times in alternation (a slow spell of the
    /// machine hits every variant alike), each round twice: the loop as is,
    /// then with waits to time its phases apart. Reports the medians per
    /// step, in the order of [`Variant::ALL`].
    pub fn reports(&self, rounds: usize) -> Result<Vec<DecodeReport>, EngineError> {
        let rounds = rounds.max(1);
        let mut runs: Vec<Vec<(Run, Run)>> = Variant::ALL.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, &variant) in Variant::ALL.iter().enumerate() {
                let fast = self.run(variant, false)?;
                let timed = self.run(variant, true)?;
                runs[i].push((fast, timed));
            }
        }
        let steps = self.config.steps as f64;
        let median_ms = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3 / steps
        };
        Ok(Variant::ALL
            .iter()
            .zip(runs)
            .map(|(&variant, runs)| {
                let step_ms = median_ms(runs.iter().map(|(f, _)| f.elapsed).collect());
                let first = &runs[0].0;
                DecodeReport {
                    variant,
                    step_ms,
                    tokens_per_second: self.config.batch as f64 * 1e3 / step_ms,
                    forward_ms: median_ms(runs.iter().map(|(_, t)| t.phases.forward).collect()),
                    sampling_ms: median_ms(runs.iter().map(|(_, t)| t.phases.sampling).collect()),
                    rollcall_submits_per_step: first.rollcall_submits as f64 / steps,
                    readbacks_per_step: first.readbacks as f64 / steps,
                    tokens: first.tokens.clone(),
                }
            })
            .collect())
    }
}

/// One loop's tokens and times.
pub struct Run {
    /// Tokens generated per sequence.
    pub tokens: Vec<Vec<u32>>,
    /// Whole loop.
    pub elapsed: Duration,
    /// Per phase, summed over the steps.
    pub phases: PhaseTimes,
    /// rollcall's submits (GPU path).
    pub rollcall_submits: u64,
    /// Host readbacks.
    pub readbacks: u64,
}

/// Forward and sampling time summed over steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    /// Model forward.
    pub forward: Duration,
    /// Sampling and the token copies.
    pub sampling: Duration,
}

impl PhaseTimes {
    fn add(&mut self, forward: Duration, sampling: Duration) {
        self.forward += forward;
        self.sampling += sampling;
    }
}

/// What a Rust engine does on the host today (llama-burn's way): greedy
/// rows take the arg-max (ties to the lower token); others apply the
/// repetition penalty, temperature, top-k, then sort for top-p and draw.
pub fn host_sample(
    row: &[f32],
    p: &SamplingParams,
    prompt: &[u32],
    output: &[u32],
    rng: &mut impl Rng,
) -> u32 {
    if p.temperature == 0.0 {
        return argmax(row);
    }
    let mut z: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    if p.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = prompt.iter().chain(output).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for &t in &seen {
            let v = &mut z[t as usize].1;
            *v = if *v > 0.0 {
                *v / p.repetition_penalty
            } else {
                *v * p.repetition_penalty
            };
        }
    }
    z.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let k = if p.top_k == 0 {
        z.len()
    } else {
        (p.top_k as usize).min(z.len())
    };
    z.truncate(k);
    let max = z[0].1;
    let weights: Vec<f32> = z
        .iter()
        .map(|&(_, v)| ((v - max) / p.temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    let mut kept = 0.0;
    let mut n = 0;
    while n < weights.len() && kept < p.top_p * total {
        kept += weights[n];
        n += 1;
    }
    let mut u = rng.random::<f32>() * kept;
    for (i, w) in weights[..n.max(1)].iter().enumerate() {
        if u < *w {
            return z[i].0;
        }
        u -= w;
    }
    z[n.max(1) - 1].0
}

/// The largest logit's token, ties to the lower token (NaN never wins).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best as u32
}
