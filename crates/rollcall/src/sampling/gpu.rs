//! The sampler's GPU side: pipelines built once per context, the engine path
//! (record into the caller's encoder) and the host path (slices in, `Vec` out).

use super::edits::{EditKernels, EditState, RowHistory};
use super::mask::{check_host_mask, check_mask_rows, words_per_row, TokenMask};
use super::{
    candidate_capacity, check_logits_rows, gather_chunks, plan_chunks, shader,
    validate_options_call, validate_params, Features, GpuRowParams, HostLogits, LogitsBinding,
    LogprobsMode, RowStatus, SampleOptions, SampleResult, Samples, SamplingParams, TopLogprob,
    CANDIDATE_RANGE, MAX_TOP_LOGPROBS, NO_MASK, TILE_TOKENS, TOP_LOGPROB_BYTES,
};
use crate::gpu::buffer::{write_padded, GrowBuffer};
use crate::gpu::logits::{DispatchRecords, LogitsKernel, LogitsKernelKey};
use crate::{Error, GpuContext, Result};
use std::sync::OnceLock;

/// A row's result as the shader writes it (`RowResult` there).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuRowResult {
    pub(crate) logprob: f32,
    pub(crate) status: u32,
    pub(crate) kept: u32,
    /// ln of the probed token's probability (0 when the row probes none).
    pub(crate) probe_logprob: f32,
}

/// Bytes of a row's token in the tokens buffer.
const TOKEN_BYTES: u64 = std::mem::size_of::<u32>() as u64;
/// Bytes of a row's result in the results buffer.
const RESULT_BYTES: u64 = std::mem::size_of::<GpuRowResult>() as u64;

/// Per-batch GPU state for the engine path: row parameters, outputs, and the
/// dispatch records. Create once, reuse every step.
///
/// Outputs: [`SampleBatch::tokens`] holds one `u32` token per row (ready to
/// feed an embedding lookup); [`SampleBatch::results`] holds per row
/// `{ logprob: f32, status: u32 (0 ok, 1 no valid token), kept: u32, pad: u32 }`
/// (`pad` is 0).
///
/// Parameter and dispatch writes go through `Queue::write_buffer`, so they
/// take effect at the next submit: encode one batch at most once per submit
/// (or several times over the same logits binding, which writes the same
/// records: the benchmarks repeat a batch this way). `encode` picks the
/// drawing kernel from the parameters set at that moment, so call
/// [`SampleBatch::set_params`] before the `encode` it applies to and not
/// again before that submit (a later call would change the parameters the
/// GPU reads but not the kernel chosen: filters could be skipped).
pub struct SampleBatch {
    ctx: GpuContext,
    /// Per-stream pass-1 states of a separate first pass; grown on demand.
    partials: GrowBuffer,
    params: wgpu::Buffer,
    /// The rows' parameters as uploaded: the host picks the drawing kernel of
    /// each dispatch from them (the small one only when no row is filtered).
    host_params: Vec<GpuRowParams>,
    tokens: wgpu::Buffer,
    results: wgpu::Buffer,
    /// MAX_TOP_LOGPROBS (token, logprob) entries per row.
    top: wgpu::Buffer,
    logprobs: LogprobsMode,
    /// Token histories, biases and stop tokens per row, when the batch was
    /// created with room for them.
    edits: Option<EditState>,
    /// Whether rows name the logits row they read
    /// ([`SampleBatch::set_logits_rows`]).
    gathers: bool,
    pub(crate) records: DispatchRecords,
    capacity: u32,
    rows: u32,
}

impl SampleBatch {
    /// Bytes of one row's parameters on the device: the largest per-row
    /// buffer of a batch (each is bound whole).
    pub const PARAMS_BYTES_PER_ROW: u64 = std::mem::size_of::<GpuRowParams>() as u64;

    /// Buffers for up to `capacity` rows. Each of its per-row buffers is
    /// bound whole, so a capacity whose parameters
    /// ([`SampleBatch::PARAMS_BYTES_PER_ROW`] a row) pass the
    /// device's storage binding limit is [`Error::TooLarge`].
    ///
    /// ```no_run
    /// # let ctx = rollcall::GpuContext::new()?;
    /// let mut batch = rollcall::SampleBatch::new(&ctx, 64)?;
    /// batch.set_params(&vec![rollcall::SamplingParams::new(0.8).seed(7); 64])?;
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn new(ctx: &GpuContext, capacity: u32) -> Result<Self> {
        let capacity = capacity.max(1);
        let storage = |label, bytes_per_row: u64, extra| {
            ctx.create_bound_buffer(
                label,
                u64::from(capacity) * bytes_per_row,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
            )
        };
        Ok(Self {
            params: storage(
                "rollcall sampling params",
                std::mem::size_of::<GpuRowParams>() as u64,
                wgpu::BufferUsages::empty(),
            )?,
            host_params: Vec::with_capacity(capacity as usize),
            tokens: storage(
                "rollcall sampled tokens",
                TOKEN_BYTES,
                wgpu::BufferUsages::COPY_SRC,
            )?,
            results: storage(
                "rollcall sampling results",
                RESULT_BYTES,
                wgpu::BufferUsages::COPY_SRC,
            )?,
            top: storage(
                "rollcall top logprobs",
                u64::from(MAX_TOP_LOGPROBS) * TOP_LOGPROB_BYTES,
                wgpu::BufferUsages::COPY_SRC,
            )?,
            logprobs: LogprobsMode::Processed,
            edits: None,
            gathers: false,
            partials: GrowBuffer::with_size(
                ctx,
                "rollcall sampling partials",
                wgpu::BufferUsages::STORAGE,
                PARTIAL_BYTES,
            )?,
            records: DispatchRecords::new(ctx)?,
            ctx: ctx.clone(),
            capacity,
            rows: 0,
        })
    }

    /// A batch that also keeps, per row, a token history on the GPU for the
    /// penalties (room for `distinct_tokens` distinct tokens a row), logit
    /// biases and `min_tokens` stop tokens ([`SampleBatch::set_history`]).
    /// Each encode applies them to the logits in place before sampling,
    /// undoes them after, and appends each row's sampled token to its
    /// history: a decode loop sends no history from the host. A step after
    /// which a penalised row could hold more distinct tokens is refused
    /// ([`Error::HistoryFull`]).
    pub fn with_history(ctx: &GpuContext, capacity: u32, distinct_tokens: u32) -> Result<Self> {
        let mut batch = Self::new(ctx, capacity)?;
        batch.edits = Some(EditState::new(ctx, batch.capacity, distinct_tokens)?);
        Ok(batch)
    }

    /// Sets row `row`'s history (prompt and output tokens so far), logit
    /// biases and stop tokens, for logits of `vocab` tokens; checks every
    /// token id and bias first.
    pub fn set_history(&mut self, row: u32, vocab: u32, history: &RowHistory<'_>) -> Result<()> {
        self.edits_mut()?.set_row(row, vocab, history)
    }

    /// Forgets row `row`'s history, biases and stop tokens (a finished
    /// request; the slot's next request sets its own).
    pub fn clear_history(&mut self, row: u32) -> Result<()> {
        self.edits_mut()?.clear_row(row);
        Ok(())
    }

    /// The batch's histories, taken out (none is applied while out).
    pub(crate) fn take_edits(&mut self) -> Option<EditState> {
        self.edits.take()
    }

    /// Puts back what [`SampleBatch::take_edits`] took.
    pub(crate) fn put_edits(&mut self, edits: Option<EditState>) {
        self.edits = edits;
    }

    pub(crate) fn edits_mut(&mut self) -> Result<&mut EditState> {
        self.edits.as_mut().ok_or_else(|| {
            Error::InvalidArgument(
                "this batch keeps no token history: create it with SampleBatch::with_history"
                    .into(),
            )
        })
    }

    /// Validates and uploads one parameter set per row (the batch's row
    /// count). No row reads a token mask until
    /// [`SampleBatch::set_mask_rows`] says so. Penalties need a batch made
    /// with [`SampleBatch::with_history`].
    pub fn set_params(&mut self, params: &[SamplingParams]) -> Result<()> {
        let gpu = validate_params(params)?;
        match &mut self.edits {
            Some(edits) => edits.set_penalties(params)?,
            None => {
                if let Some(row) = params.iter().position(SamplingParams::uses_penalties) {
                    return Err(Error::InvalidArgument(format!(
                        "row {row} has penalties, which need a token history: create the batch \
                         with SampleBatch::with_history"
                    )));
                }
            }
        }
        self.set_gpu_params(&gpu)
    }

    /// Which mask row each batch row reads (`None`: no mask), one entry per
    /// row of the last [`SampleBatch::set_params`]; the masks themselves are
    /// bound at [`Sampler::encode_masked`], which checks that every named
    /// row is there. A batch in which no row reads a mask reads none.
    pub fn set_mask_rows(&mut self, rows: &[Option<u32>]) -> Result<()> {
        check_mask_rows(rows, self.rows as usize, u64::from(u32::MAX))?;
        for (p, m) in self.host_params.iter_mut().zip(rows) {
            p.mask_row = m.unwrap_or(NO_MASK);
        }
        if !self.host_params.is_empty() {
            self.ctx
                .queue
                .write_buffer(&self.params, 0, bytemuck::cast_slice(&self.host_params));
        }
        Ok(())
    }

    /// Several draws from one logits row (vLLM's `n`, best-of-n): batch row
    /// `i` reads logits row `rows[i]` (non-decreasing; one entry per row of
    /// the last [`SampleBatch::set_params`], which resets this), so the
    /// logits binding holds fewer rows than the batch. Each draw keeps its
    /// own seed and step and gets the token a copy of the row would give;
    /// nothing is copied. Not with a token history in force (its edits are
    /// made in place, in rows draws would share).
    pub fn set_logits_rows(&mut self, rows: &[u32]) -> Result<()> {
        if rows.len() != self.rows as usize {
            return Err(Error::LengthMismatch {
                what: "logits rows (one per batch row)",
                expected: self.rows as usize,
                got: rows.len(),
            });
        }
        check_logits_rows(rows, u32::MAX)?;
        for (p, &row) in self.host_params.iter_mut().zip(rows) {
            p.logits_row = row;
        }
        self.gathers = true;
        if !self.host_params.is_empty() {
            self.ctx
                .queue
                .write_buffer(&self.params, 0, bytemuck::cast_slice(&self.host_params));
        }
        Ok(())
    }

    /// The largest mask row a batch row reads, if any.
    fn max_mask_row(&self) -> Option<u32> {
        self.host_params
            .iter()
            .map(|p| p.mask_row)
            .filter(|&m| m != NO_MASK)
            .max()
    }

    pub(crate) fn set_gpu_params(&mut self, gpu: &[GpuRowParams]) -> Result<()> {
        if gpu.len() > self.capacity as usize {
            return Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: gpu.len(),
            });
        }
        if !gpu.is_empty() {
            self.ctx
                .queue
                .write_buffer(&self.params, 0, bytemuck::cast_slice(gpu));
        }
        self.host_params.clear();
        self.host_params.extend_from_slice(gpu);
        self.rows = gpu.len() as u32;
        self.gathers = gpu.iter().any(|p| p.logits_row != 0);
        Ok(())
    }

    /// The rows' parameters on the device (speculative verification writes
    /// the probe tokens there on the GPU).
    pub(crate) fn params_buffer(&self) -> &wgpu::Buffer {
        &self.params
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

    /// [`MAX_TOP_LOGPROBS`] entries of [`TOP_LOGPROB_BYTES`] per row: token
    /// (`u32`) and log-probability (`f32`), most likely first (ties to the
    /// lower token); entries past the row's `top_logprobs` or its valid
    /// tokens hold token [`NO_TOKEN`](super::NO_TOKEN) and −inf. Written
    /// only when some row asks for top log-probabilities or the mode is raw.
    pub fn top_logprobs(&self) -> &wgpu::Buffer {
        &self.top
    }

    /// What the batch's log-probabilities are taken from (processed by
    /// default); raw costs one more read of every row.
    pub fn set_logprobs_mode(&mut self, mode: LogprobsMode) {
        self.logprobs = mode;
    }

    /// Whether the top log-probabilities kernel runs for this batch.
    fn wants_logprobs(&self, rows: &[GpuRowParams]) -> bool {
        self.logprobs == LogprobsMode::Raw || rows.iter().any(|p| p.top_logprobs > 0)
    }
}

/// Bytes of one stream's state over one tile (`StreamPartial` in the shader;
/// the host never reads one, so it has no Rust mirror).
pub(crate) const PARTIAL_BYTES: u64 = 32;

/// How the sampler lays a batch's work over dispatches. The token, its
/// log-probability and the kept count are the same bits every way: only the
/// speed changes.
///
/// The first pass (each stream's online max and mass) either runs in its own
/// dispatch, which leaves 256 per-stream states per row (or per tile of
/// [`TILE_TOKENS`](super::TILE_TOKENS) tokens) in a buffer, or inside the
/// 256-invocation kernel that draws. After a separate first pass, a batch
/// whose rows are all greedy or temperature-only is drawn by a small kernel
/// of 16 invocations per row; a batch with a row that needs top-k, top-p or
/// min-p by the full kernel.
///
/// ```
/// use rollcall::internals::SplitRows;
/// assert_eq!(SplitRows::default(), SplitRows::Auto);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitRows {
    /// On a CPU adapter: [`SplitRows::Never`] for f32 batches with no
    /// filtered row (the full kernel's workgroup barriers are costly there;
    /// the small drawing kernel has few), else [`SplitRows::Fused`] (there a
    /// separate first pass is slower for filtered and 16-bit rows). On other
    /// adapters, [`SplitRows::Always`] when a batch has fewer than
    /// [`SPLIT_BELOW_ROWS`] rows that span 2 tiles or more (one workgroup a
    /// row would leave a GPU partly idle: see the cost model in
    /// docs/PERFORMANCE.md), else [`SplitRows::Fused`] (one dispatch).
    #[default]
    Auto,
    /// The first pass in its own dispatch, one workgroup per row.
    Never,
    /// The first pass in its own dispatch, one workgroup per tile of a row.
    Always,
    /// The first pass inside the drawing kernel: one dispatch, one workgroup
    /// per row. Also what the other modes fall back to when the per-stream
    /// states of a batch would pass the adapter's storage binding limit.
    Fused,
}

/// Batches below this many rows are split under [`SplitRows::Auto`] on
/// adapters that are not CPUs: the workgroups a large GPU keeps resident
/// (an H100: 132 SMs × 8 workgroups of 256 invocations), so that a batch
/// split into tiles fills it, and one that is not already does.
pub const SPLIT_BELOW_ROWS: u32 = 1024;

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
    ctx: GpuContext,
    candidates: u32,
    /// The kernels of each feature set ([`Features::index`]), built when a
    /// batch first needs them.
    kernels: [[OnceLock<Kernels>; super::FEATURE_SETS]; 2],
    max_chunk_bytes: Option<u64>,
    /// The logit-edit kernels, built when a batch first has edits.
    edit_kernels: OnceLock<EditKernels>,
    /// Bound in place of the masks when no row reads one.
    mask_stand_in: wgpu::Buffer,
    split: SplitRows,
    /// Routes for a CPU adapter (lavapipe): decided by the adapter, or forced
    /// either way for tests and benchmarks.
    cpu_routes: bool,
    host: Option<HostBuffers>,
}

/// The sampling kernels of one feature set.
struct Kernels {
    draw: LogitsKernel,
    partials: LogitsKernel,
    finish: LogitsKernel,
    top: LogitsKernel,
}

/// Reused by the host path; grown, never shrunk.
struct HostBuffers {
    batch: SampleBatch,
    upload: GrowBuffer,
    masks: GrowBuffer,
    readback: GrowBuffer,
}

impl Sampler {
    /// Compiles the sampling pipelines on `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let candidates = candidate_capacity(ctx.limits().max_compute_workgroup_storage_size);
        Self::build(ctx, candidates)
    }

    /// Like [`Sampler::new`] with an explicit number of tokens gathered into
    /// workgroup memory per row (clamped to the range the kernel supports).
    /// It changes speed, never results: for tuning, and for tests that drive
    /// the gathered and the streaming routes over the same rows (feature
    /// `internals`).
    #[cfg(feature = "internals")]
    pub fn with_candidate_capacity(ctx: &GpuContext, candidates: u32) -> Result<Self> {
        Self::build(ctx, candidates)
    }

    fn build(ctx: &GpuContext, candidates: u32) -> Result<Self> {
        let fits = candidate_capacity(ctx.limits().max_compute_workgroup_storage_size);
        let candidates = candidates.clamp(CANDIDATE_RANGE.0, fits.max(CANDIDATE_RANGE.0));
        let sampler = Self {
            ctx: ctx.clone(),
            candidates,
            kernels: Default::default(),
            max_chunk_bytes: None,
            edit_kernels: OnceLock::new(),
            mask_stand_in: ctx.create_buffer(
                "rollcall mask stand-in",
                16,
                wgpu::BufferUsages::STORAGE,
            )?,
            split: SplitRows::Auto,
            cpu_routes: ctx.adapter_info().device_type == wgpu::DeviceType::Cpu,
            host: None,
        };
        // The plain kernels now, so that a device that cannot build them
        // fails here.
        sampler.kernels(Features::default())?;
        Ok(sampler)
    }

    /// The kernels of a feature set, built on first use (the context's
    /// cache shares them between samplers).
    fn kernels(&self, features: Features) -> Result<&Kernels> {
        let wide = !self.cpu_routes;
        let cell = &self.kernels[usize::from(wide)][features.index()];
        if let Some(kernels) = cell.get() {
            return Ok(kernels);
        }
        let candidates = self.candidates;
        // The wide routes fold by subgroups where the device has them (the
        // shader checks their shape and falls back to workgroup memory).
        let subgroups = self.ctx.features().contains(wgpu::Features::SUBGROUP);
        // Bindings 2..7: params (read), tokens, results, split partials,
        // masks (read), top log-probabilities; 8: the logits as vectors
        // (eight storage bindings: WebGPU's default limit).
        // Only the drawing and top log-probability kernels have wide
        // routes; the others share one pipeline between both forms.
        let build = |label: &'static str, entry_point: &'static str, wide: bool| {
            let key = LogitsKernelKey {
                kernel: entry_point,
                constant: candidates
                    | (features.index() as u32) << 16
                    | u32::from(wide) << 24
                    | u32::from(subgroups) << 25,
                extra: &[true, false, false, false, true, false],
            };
            let mut kernel = LogitsKernel::new(&self.ctx, label, key, || {
                shader(candidates, entry_point, features, wide, subgroups)
            })?;
            if let Some(bytes) = self.max_chunk_bytes {
                kernel.set_max_chunk_bytes(bytes);
            }
            Ok::<_, Error>(kernel)
        };
        let built = Kernels {
            draw: build("rollcall sampling", "sample_rows", wide)?,
            partials: build("rollcall sampling partials", "stream_partials", false)?,
            finish: build("rollcall sampling finish", "finish_rows", false)?,
            top: build("rollcall top logprobs", "top_logprobs", wide)?,
        };
        Ok(cell.get_or_init(|| built))
    }

    /// The logit-edit kernels, built on first use (they run over the
    /// sampler's chunks).
    pub(crate) fn edit_kernels(&self) -> Result<&EditKernels> {
        if let Some(kernels) = self.edit_kernels.get() {
            return Ok(kernels);
        }
        let built = EditKernels::new(&self.ctx)?;
        Ok(self.edit_kernels.get_or_init(|| built))
    }

    /// The plain kernels (built by the constructor).
    /// Plans `logits`' chunks for the sampling kernels.
    pub(crate) fn plan(&self, logits: &LogitsBinding<'_>) -> Result<Vec<super::Chunk>> {
        self.plain()?.draw.plan(logits)
    }

    fn plain(&self) -> Result<&Kernels> {
        self.kernels(Features::default())
    }

    /// How to lay rows over dispatches ([`SplitRows::Auto`] by default).
    ///
    /// ```no_run
    /// use rollcall::{internals::SplitRows, GpuContext, HostLogits, Sampler, SamplingParams};
    /// let ctx = GpuContext::new()?;
    /// let mut split = Sampler::new(&ctx)?.with_split_rows(SplitRows::Always);
    /// let mut whole = Sampler::new(&ctx)?.with_split_rows(SplitRows::Never);
    /// let logits = vec![0.25f32; 100_000];
    /// let params = [SamplingParams::new(1.0).seed(3)];
    /// let a = split.sample(HostLogits::F32(&logits), 100_000, &params)?;
    /// let b = whole.sample(HostLogits::F32(&logits), 100_000, &params)?;
    /// assert_eq!(a[0].token, b[0].token); // the split never changes the draw
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    /// For benchmarks and route tests (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_split_rows(mut self, split: SplitRows) -> Self {
        self.split = split;
        self
    }

    /// Takes the routes of a GPU (`false`) or of a CPU adapter (`true`)
    /// whatever the adapter is: the GPU routes draw with the 256-invocation
    /// kernel after a separate first pass, and split batches up to
    /// [`SPLIT_BELOW_ROWS`] rows; the CPU routes use the 16-invocation
    /// drawing kernel. Results never depend on it. For route tests and
    /// benchmarks (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_cpu_routes(mut self, cpu: bool) -> Self {
        self.cpu_routes = cpu;
        self
    }

    /// Caps the bytes of logits bound per dispatch (and uploaded per submit
    /// on the host path), below the adapter's own binding limit.
    /// For benchmarks and tests of chunking (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.max_chunk_bytes = Some(bytes);
        for cell in self.kernels.iter_mut().flatten() {
            if let Some(kernels) = cell.get_mut() {
                kernels.draw.set_max_chunk_bytes(bytes);
                kernels.partials.set_max_chunk_bytes(bytes);
                kernels.finish.set_max_chunk_bytes(bytes);
                kernels.top.set_max_chunk_bytes(bytes);
            }
        }
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
    /// let mut batch = SampleBatch::new(&ctx, 8)?;
    /// batch.set_params(&[SamplingParams::new(0.7).top_k(40).seed(9); 8])?;
    /// let mut encoder = ctx.device.create_command_encoder(&Default::default());
    /// let logits = LogitsBinding { buffer: &logits_buffer, offset: 0, rows: 8, vocab: 32000, dtype: LogitsDtype::Bf16 };
    /// sampler.encode(&mut encoder, &logits, &mut batch)?;
    /// ctx.submit(encoder.finish());
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        batch: &mut SampleBatch,
    ) -> Result<()> {
        self.encode_checked(encoder, logits, None, batch)
    }

    /// [`Sampler::encode`] with token masks: batch row `i` reads the mask
    /// row [`SampleBatch::set_mask_rows`] gave it, inside the sampling
    /// kernel's first pass. Refused before any work when a named mask row is
    /// past `mask.rows`, the rows pass the buffer's end, or the offset is not
    /// aligned.
    pub fn encode_masked(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        mask: &TokenMask<'_>,
        batch: &mut SampleBatch,
    ) -> Result<()> {
        self.encode_checked(encoder, logits, Some(mask), batch)
    }

    fn encode_checked(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        mask: Option<&TokenMask<'_>>,
        batch: &mut SampleBatch,
    ) -> Result<()> {
        let rows = batch.rows;
        let edits = batch.edits.as_ref().is_some_and(EditState::is_active);
        let chunks = if batch.gathers {
            let logits_rows: Vec<u32> = batch.host_params.iter().map(|p| p.logits_row).collect();
            check_logits_rows(&logits_rows, logits.rows)?;
            if edits {
                return Err(Error::InvalidArgument(
                    "a batch with logits rows cannot apply a token history's edits (they are \
                     made in place, in rows several draws share)"
                        .into(),
                ));
            }
            let max_rows = self.ctx.limits().max_compute_workgroups_per_dimension;
            let planned = self.plain()?.draw.plan(logits)?;
            gather_chunks(&planned, &logits_rows, 0, 0, max_rows)
        } else {
            if logits.rows != rows {
                return Err(Error::ParamCountMismatch {
                    expected: logits.rows as usize,
                    got: rows as usize,
                });
            }
            self.plain()?.draw.plan(logits)?
        };
        let mask_binding = self.mask_binding(mask, batch, logits.vocab)?;
        if let (true, Some(state)) = (edits, &batch.edits) {
            state.check_step(rows)?;
        }
        self.encode_batch(encoder, logits, batch, &chunks, 0, rows, rows, mask_binding)?;
        if let (true, Some(state)) = (edits, &mut batch.edits) {
            state.note_step(rows);
        }
        Ok(())
    }

    /// The binding of the batch's masks: the mask rows' range of the caller's
    /// buffer, or the stand-in when no row reads a mask.
    pub(crate) fn mask_binding<'a>(
        &'a self,
        mask: Option<&TokenMask<'a>>,
        batch: &SampleBatch,
        vocab: u32,
    ) -> Result<wgpu::BindingResource<'a>> {
        let Some(max_row) = batch.max_mask_row() else {
            return Ok(self.mask_stand_in.as_entire_binding());
        };
        let Some(mask) = mask else {
            return Err(Error::InvalidMask(format!(
                "batch rows read mask rows (up to {max_row}) but no mask was given"
            )));
        };
        if max_row >= mask.rows {
            return Err(Error::InvalidMask(format!(
                "a batch row reads mask row {max_row}, but the mask has {} rows",
                mask.rows
            )));
        }
        let bytes = u64::from(mask.rows) * words_per_row(vocab) as u64 * 4;
        let align = u64::from(self.ctx.limits().min_storage_buffer_offset_alignment);
        if !mask.offset.is_multiple_of(align) {
            return Err(Error::InvalidMask(format!(
                "offset {} is not a multiple of the device's storage offset alignment ({align})",
                mask.offset
            )));
        }
        if mask.offset.saturating_add(bytes) > mask.buffer.size() {
            return Err(Error::BufferTooSmall {
                what: "token mask",
                needed: mask.offset.saturating_add(bytes),
                got: mask.buffer.size(),
            });
        }
        let limit = self.ctx.limits().max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::TooLarge {
                what: "token mask binding",
                bytes,
                limit,
            });
        }
        Ok(wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: mask.buffer,
            offset: mask.offset,
            size: std::num::NonZeroU64::new(bytes),
        }))
    }

    /// Host path: samples `params.len()` rows of `vocab` logits and returns one
    /// result per row. Uploads in chunks of at most the chunk size, so batches
    /// larger than the adapter's binding limit work; waits for the GPU once.
    pub fn sample(
        &mut self,
        logits: HostLogits<'_>,
        vocab: u32,
        params: &[SamplingParams],
    ) -> Result<Vec<SampleResult>> {
        Ok(self
            .sample_with(logits, vocab, params, &SampleOptions::default())?
            .results)
    }

    /// [`Sampler::sample`] with token masks and top log-probabilities: the
    /// same bits as [`cpu::sample_with`](super::cpu::sample_with) but where
    /// exp and log differ by an ulp.
    pub fn sample_with(
        &mut self,
        logits: HostLogits<'_>,
        vocab: u32,
        params: &[SamplingParams],
        options: &SampleOptions<'_>,
    ) -> Result<Samples> {
        let (mut gpu_params, sources) = validate_options_call(&logits, vocab, params, options)?;
        let room = options.check_histories(params)?;
        if let Some(m) = &options.mask {
            check_host_mask(m, vocab, params.len())?;
            for (p, row) in gpu_params.iter_mut().zip(m.rows) {
                p.mask_row = row.unwrap_or(NO_MASK);
            }
        }
        // The call's histories, in tables of this call's size.
        let edits = match options.histories {
            Some(histories) if !gpu_params.is_empty() => {
                let mut state = EditState::new(&self.ctx, gpu_params.len() as u32, room)?;
                for (r, h) in histories.iter().enumerate() {
                    state.set_row(r as u32, vocab, h)?;
                }
                state.set_penalties(params)?;
                state.check_step(gpu_params.len() as u32)?;
                Some(state)
            }
            _ => None,
        };
        let ctx = self.ctx.clone();
        ctx.scoped("sampling", || {
            self.sample_validated(logits, vocab, sources, &gpu_params, options, edits)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn sample_validated(
        &mut self,
        logits: HostLogits<'_>,
        vocab: u32,
        sources: u32,
        gpu_params: &[GpuRowParams],
        options: &SampleOptions<'_>,
        edits: Option<EditState>,
    ) -> Result<Samples> {
        if gpu_params.is_empty() {
            return Ok(Samples::default());
        }
        // The caller checked `rows × vocab` against the slice's length.
        let rows = u32::try_from(gpu_params.len()).map_err(|_| Error::BatchCapacity {
            capacity: u32::MAX as usize,
            rows: gpu_params.len(),
        })?;
        let dtype = logits.dtype();
        let row_bytes = u64::from(vocab) * dtype.size_bytes();
        // Host chunks of the logits rows: as if they sat at offset 0 of one
        // buffer.
        let host_chunks = plan_chunks(
            sources,
            vocab,
            dtype,
            0,
            (u64::from(sources) * row_bytes).div_ceil(4) * 4,
            self.plain()?.draw.chunk_limits(),
        )?;
        let upload_bytes = host_chunks
            .iter()
            .map(|c| (u64::from(c.rows) * row_bytes).div_ceil(4) * 4)
            .max()
            .unwrap_or(4);
        let mask_words = options.mask.as_ref().map_or(&[][..], |m| m.words);
        let mut host = self.host_buffers(rows, upload_bytes, mask_words)?;
        host.batch.set_logprobs_mode(options.logprobs);
        host.batch.edits = edits;
        // Put back whatever happens: the buffers are reused by the next call.
        let result = self.upload_and_encode(
            &mut host,
            logits,
            vocab,
            gpu_params,
            &host_chunks,
            mask_words,
            options.logits_rows,
        );
        let result = result.and_then(|()| self.read_results(&host, gpu_params));
        self.host = Some(host);
        result
    }

    /// Uploads the logits chunk by chunk and records and submits the
    /// sampling of each.
    #[allow(clippy::too_many_arguments)]
    fn upload_and_encode(
        &self,
        host: &mut HostBuffers,
        logits: HostLogits<'_>,
        vocab: u32,
        gpu_params: &[GpuRowParams],
        host_chunks: &[super::Chunk],
        mask_words: &[u32],
        logits_rows: Option<&[u32]>,
    ) -> Result<()> {
        let ctx = &self.ctx;
        host.batch.set_gpu_params(gpu_params)?;
        let features = Features::of(gpu_params);
        if features.masked {
            write_padded(
                &ctx.queue,
                host.masks.buffer(),
                bytemuck::cast_slice(mask_words),
            );
        }
        let rows = host.batch.rows;
        let dtype = logits.dtype();
        let row_bytes = u64::from(vocab) * dtype.size_bytes();
        let bytes = logits.bytes();
        for chunk in host_chunks {
            let start = (u64::from(chunk.row_start) * row_bytes) as usize;
            let len = (u64::from(chunk.rows) * row_bytes) as usize;
            write_padded(&ctx.queue, host.upload.buffer(), &bytes[start..start + len]);
            let binding = LogitsBinding {
                buffer: host.upload.buffer(),
                offset: 0,
                rows: chunk.rows,
                vocab,
                dtype,
            };
            // The batch rows this chunk's logits serve.
            let (first, count) = match logits_rows {
                Some(rows) => {
                    let lo = rows.partition_point(|&r| r < chunk.row_start) as u32;
                    let hi = rows.partition_point(|&r| r < chunk.row_start + chunk.rows) as u32;
                    (lo, hi - lo)
                }
                None => (chunk.row_start, chunk.rows),
            };
            if count == 0 {
                continue;
            }
            let planned = self.plain()?.draw.plan(&binding)?;
            let device_chunks = match logits_rows {
                Some(rows) => {
                    let max_rows = ctx.limits().max_compute_workgroups_per_dimension;
                    gather_chunks(&planned, rows, chunk.row_start, first, max_rows)
                }
                None => planned,
            };
            let mask_binding = if features.masked {
                host.masks.buffer().as_entire_binding()
            } else {
                self.mask_stand_in.as_entire_binding()
            };
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            self.encode_batch(
                &mut encoder,
                &binding,
                &mut host.batch,
                &device_chunks,
                first,
                count,
                rows,
                mask_binding,
            )?;
            ctx.submit(encoder.finish());
        }
        Ok(())
    }

    /// Records the sampling of `chunks` (rows from `row_base` in `batch`'s
    /// buffers; `batch_rows` in the whole batch, which decides the split).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_batch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        batch: &mut SampleBatch,
        chunks: &[super::Chunk],
        row_base: u32,
        rows: u32,
        batch_rows: u32,
        masks: wgpu::BindingResource<'_>,
    ) -> Result<()> {
        let row_tiles = logits.vocab.div_ceil(TILE_TOKENS);
        let is_cpu = self.cpu_routes;
        let dispatch_params = batch
            .host_params
            .get(row_base as usize..(row_base + rows) as usize)
            .unwrap_or(&[]);
        let kernels = self.kernels(Features::of(dispatch_params))?;
        // The small finishing kernel draws only dispatches with no row that
        // needs top-k, top-p or min-p.
        // (A row without stored parameters counts as filtered: the full
        // kernel is right for every row.)
        let any_filtered = (row_base..row_base + rows).any(|r| {
            batch
                .host_params
                .get(r as usize)
                .is_none_or(|p| p.is_filtered(logits.vocab))
        });
        let f32_logits = logits.dtype == crate::LogitsDtype::F32;
        let mode = match self.split {
            SplitRows::Auto if is_cpu && (any_filtered || !f32_logits) => SplitRows::Fused,
            SplitRows::Auto if is_cpu => SplitRows::Never,
            SplitRows::Auto if batch_rows < SPLIT_BELOW_ROWS && row_tiles >= 2 => SplitRows::Always,
            SplitRows::Auto => SplitRows::Fused,
            mode => mode,
        };
        // Top log-probabilities read the per-stream states of a separate
        // first pass.
        let wants_logprobs = batch.wants_logprobs(dispatch_params);
        // Per-stream states per row left by a separate first pass (0: none).
        let mut tiles = match mode {
            SplitRows::Always => row_tiles,
            SplitRows::Never => 1,
            _ if wants_logprobs => 1,
            _ => 0,
        };
        if tiles != 0 {
            // Every row of the batch keeps its states: grow to fit, or (past
            // the binding limit) fuse the first pass into the draw: same bits.
            let needed = u64::from(row_base + rows)
                * u64::from(tiles)
                * u64::from(super::STREAMS)
                * PARTIAL_BYTES;
            let limit = self.ctx.whole_binding_limit(wgpu::BufferUsages::STORAGE);
            if needed > limit && wants_logprobs {
                return Err(Error::TooLarge {
                    what: "per-stream states for top log-probabilities",
                    bytes: needed,
                    limit,
                });
            } else if needed > limit {
                tiles = 0;
            } else {
                batch.partials.reserve_doubling(&batch.ctx, needed)?;
            }
        }
        let extra = [
            batch.params.as_entire_binding(),
            batch.tokens.as_entire_binding(),
            batch.results.as_entire_binding(),
            batch.partials.buffer().as_entire_binding(),
            masks,
            batch.top.as_entire_binding(),
        ];
        let records = &mut batch.records;
        // Bias, penalties and stop tokens, in place (undone below).
        let edits = match &mut batch.edits {
            Some(state) if state.is_active() => {
                self.edit_kernels()?
                    .encode_apply(encoder, logits, chunks, state, row_base)?;
                Some(state)
            }
            _ => None,
        };
        if tiles != 0 {
            kernels.partials.encode_tiled(
                encoder, logits, chunks, records, &extra, row_base, tiles, tiles,
            )?;
        }
        // The 16-invocation drawing kernel suits a CPU adapter (few
        // barriers); on a GPU it would leave most of a wave idle.
        let drawer = if tiles != 0 && !any_filtered && is_cpu {
            &kernels.finish
        } else {
            &kernels.draw
        };
        drawer.encode_tiled(encoder, logits, chunks, records, &extra, row_base, tiles, 1)?;
        // Every pass here writes the same records (same chunks and tiles):
        // the records are written through the queue and the last write of a
        // submit is what every dispatch of it reads.
        let raw = wants_logprobs && batch.logprobs == LogprobsMode::Raw;
        if wants_logprobs && !raw {
            // Processed: from the edited logits, before they are restored.
            kernels
                .top
                .encode_tiled(encoder, logits, chunks, records, &extra, row_base, tiles, 1)?;
        }
        if let Some(state) = edits {
            self.edit_kernels()?.encode_restore_append(
                encoder,
                logits,
                chunks,
                state,
                &batch.tokens,
                &batch.results,
                row_base,
            )?;
        }
        if raw {
            // A first pass over the model's logits (restored; no mask,
            // 1/T = 1), over the processed one's states, then the list.
            let raw = self.kernels(Features::RAW)?;
            raw.partials.encode_tiled(
                encoder, logits, chunks, records, &extra, row_base, tiles, tiles,
            )?;
            raw.top
                .encode_tiled(encoder, logits, chunks, records, &extra, row_base, tiles, 1)?;
        }
        Ok(())
    }

    /// The host path's buffers, taken out of the sampler (put them back),
    /// with room for `rows` rows and `upload_bytes` of logits.
    fn host_buffers(
        &mut self,
        rows: u32,
        upload_bytes: u64,
        mask_words: &[u32],
    ) -> Result<HostBuffers> {
        let ctx = &self.ctx;
        let mut host = match self.host.take() {
            Some(host) => host,
            None => HostBuffers {
                batch: SampleBatch::new(ctx, rows)?,
                // Bound a chunk at a time.
                upload: GrowBuffer::bound_in_ranges(
                    ctx,
                    "rollcall logits upload",
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    256,
                )?,
                masks: GrowBuffer::new(
                    ctx,
                    "rollcall mask upload",
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                )?,
                readback: GrowBuffer::new(
                    ctx,
                    "rollcall results readback",
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                )?,
            },
        };
        let grown = (|| {
            if host.batch.capacity < rows {
                host.batch = SampleBatch::new(ctx, rows)?;
            }
            host.upload.reserve_doubling(ctx, upload_bytes)?;
            host.masks
                .reserve_doubling(ctx, (mask_words.len() as u64 * 4).max(4))?;
            host.readback.reserve(
                ctx,
                u64::from(rows)
                    * (TOKEN_BYTES
                        + RESULT_BYTES
                        + u64::from(MAX_TOP_LOGPROBS) * TOP_LOGPROB_BYTES),
            )?;
            Ok(())
        })();
        match grown {
            Ok(()) => Ok(host),
            Err(e) => {
                self.host = Some(host);
                Err(e)
            }
        }
    }

    /// Copies tokens and results to the readback buffer and maps it: the host
    /// path's one wait on the GPU.
    fn read_results(&self, host: &HostBuffers, params: &[GpuRowParams]) -> Result<Samples> {
        let ctx = &self.ctx;
        let n = params.len() as u64;
        let wants_top = params.iter().any(|p| p.top_logprobs > 0);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let readback = host.readback.buffer();
        let (token_bytes, result_bytes) = (n * TOKEN_BYTES, n * RESULT_BYTES);
        let top_bytes = if wants_top {
            n * u64::from(MAX_TOP_LOGPROBS) * TOP_LOGPROB_BYTES
        } else {
            0
        };
        encoder.copy_buffer_to_buffer(&host.batch.tokens, 0, readback, 0, token_bytes);
        encoder.copy_buffer_to_buffer(&host.batch.results, 0, readback, token_bytes, result_bytes);
        if wants_top {
            encoder.copy_buffer_to_buffer(
                &host.batch.top,
                0,
                readback,
                token_bytes + result_bytes,
                top_bytes,
            );
        }
        ctx.submit(encoder.finish());
        let bytes = ctx.read_buffer(readback, token_bytes + result_bytes + top_bytes)?;
        let (token_end, result_end) = (token_bytes as usize, (token_bytes + result_bytes) as usize);
        let tokens: &[u32] = bytemuck::cast_slice(&bytes[..token_end]);
        let results: &[GpuRowResult] = bytemuck::cast_slice(&bytes[token_end..result_end]);
        let top: &[[u32; 2]] = bytemuck::cast_slice(&bytes[result_end..]);
        let results = tokens
            .iter()
            .zip(results)
            .map(|(&token, r)| SampleResult {
                token,
                logprob: r.logprob,
                kept: r.kept,
                status: if r.status == RowStatus::Ok.code() {
                    RowStatus::Ok
                } else {
                    RowStatus::NoValidToken
                },
            })
            .collect();
        let top_logprobs = params
            .iter()
            .enumerate()
            .map(|(r, p)| {
                let entries = top
                    .get(r * MAX_TOP_LOGPROBS as usize..)
                    .unwrap_or(&[])
                    .iter()
                    .take(p.top_logprobs as usize);
                entries
                    .take_while(|e| e[0] != super::NO_TOKEN)
                    .map(|e| TopLogprob {
                        token: e[0],
                        logprob: f32::from_bits(e[1]),
                    })
                    .collect()
            })
            .collect();
        Ok(Samples {
            results,
            top_logprobs,
        })
    }
}
