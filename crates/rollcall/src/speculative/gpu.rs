//! Verification's GPU side: the sampler draws and probes every position,
//! then `shaders/speculative.wgsl` decides and, for drafts with a
//! distribution, draws the residual.

use super::{
    check_drafts, check_host_call, sampled_rows, validate_verify_params, verify_rows,
    DraftDistribution, Drafts, GpuVerdict, Layout, Verification, VerifyInfo, VerifyOptions,
};
use crate::gpu::buffer::GrowBuffer;
use crate::gpu::logits::{
    plan_chunks, Chunk, DispatchRecords, LogitsKernel, LogitsKernelKey, LogitsShader,
};
use crate::gpu::shader::{compose, Binding, PlainKernel, ShaderVariant};
use crate::sampling::edits::{
    EditState, GpuHistoryInfo, GpuPositionHistory, HistoryKernels, RowHistory, NO_REQUEST,
};
use crate::sampling::mask::{check_mask_rows, TokenMask};
use crate::sampling::{GpuRowParams, HostMask, SampleBatch, Sampler, MAX_TOP_LOGPROBS};
use crate::{Error, GpuContext, HostLogits, LogitsBinding, LogitsDtype, Result, RowStatus};
use crate::{SamplingParams, NO_TOKEN};
use std::sync::{Arc, OnceLock};

/// Invocations per workgroup of the small kernels.
const SMALL_WG: u32 = 64;
/// Bytes of a request's verdict in [`VerifyBatch::verdicts`].
const VERDICT_BYTES: u64 = std::mem::size_of::<GpuVerdict>() as u64;

/// The draft's distribution on the engine path.
#[derive(Clone, Copy, Debug)]
pub enum DraftBinding<'a> {
    /// None: deterministic drafts.
    Deterministic,
    /// The draft model's logits, one row per draft token (`Σ lens` rows).
    Logits(LogitsBinding<'a>),
    /// The draft's probabilities, one row per draft token.
    Probs(LogitsBinding<'a>),
}

impl DraftBinding<'_> {
    fn values(&self) -> Option<&LogitsBinding<'_>> {
        match self {
            DraftBinding::Deterministic => None,
            DraftBinding::Logits(b) | DraftBinding::Probs(b) => Some(b),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct SmallKey {
    entry_point: &'static str,
    draft_dtype: usize,
}

impl crate::gpu::cache::PipelineKey for SmallKey {
    type Built = PlainKernel;
}

fn small_kernel(
    ctx: &GpuContext,
    entry_point: &'static str,
    draft_dtype: LogitsDtype,
    bindings: &[(u32, Binding)],
) -> Result<Arc<PlainKernel>> {
    let key = SmallKey {
        entry_point,
        draft_dtype: draft_dtype.index(),
    };
    ctx.pipelines(&key, || {
        let variant = small_variant(entry_point, draft_dtype)?;
        Ok(PlainKernel::build(&ctx.device, &variant, bindings))
    })
}

/// A small kernel's shader: it reads no logits (the includes' constants
/// are set to anything valid).
fn small_variant(entry_point: &'static str, draft_dtype: LogitsDtype) -> Result<ShaderVariant> {
    Ok(ShaderVariant {
        label: format!("speculative/{entry_point}/{draft_dtype:?}"),
        entry_point,
        source: compose(
            "speculative.wgsl",
            &format!(
                "const MASKED: bool = false;\nconst DRAFT_DTYPE: u32 = {}u;",
                draft_dtype.index()
            ),
        )?,
    })
}

/// The residual kernel's shader (one pipeline for every target dtype, with
/// vector loads).
fn residual_shader(draft_dtype: LogitsDtype, masked: bool) -> Result<LogitsShader> {
    crate::gpu::logits::logits_shader(
        &format!("speculative/residual_rows/{draft_dtype:?}/{masked}"),
        "speculative.wgsl",
        "residual_rows",
        &format!(
            "const MASKED: bool = {masked};\nconst DRAFT_DTYPE: u32 = {}u;",
            draft_dtype.index()
        ),
        true,
    )
}

/// Every variant of the family, for the shader tests.
#[cfg(test)]
pub(crate) fn shader_variants() -> Result<Vec<ShaderVariant>> {
    let mut all = Vec::new();
    for dtype in LogitsDtype::ALL {
        for entry in ["set_probes", "verify_rows", "log_probs"] {
            all.push(small_variant(entry, dtype)?);
        }
        for masked in [false, true] {
            all.push(residual_shader(dtype, masked)?.variant);
        }
    }
    Ok(all)
}

const UNIFORM: Binding = Binding::Uniform(None);
const READ: Binding = Binding::Read;
const WRITE: Binding = Binding::ReadWrite;

/// The verifier: the sampler's pipelines and the verification kernels,
/// built once per context.
///
/// ```no_run
/// use rollcall::speculative::{Drafts, Verifier, VerifyOptions};
/// use rollcall::{GpuContext, HostLogits, SamplingParams};
/// let ctx = GpuContext::new()?;
/// let mut verifier = Verifier::new(&ctx)?;
/// // One request, two draft tokens, three target positions of vocabulary 4.
/// let target = vec![0.0f32; 3 * 4];
/// let drafts = Drafts { tokens: &[2, 1], lens: &[2] };
/// let out = verifier.verify(HostLogits::F32(&target), 4, &[SamplingParams::new(1.0).seed(5)],
///                           &drafts, &VerifyOptions::default())?;
/// assert_eq!(out[0].tokens.len() as u32, out[0].accepted + 1);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct Verifier {
    ctx: GpuContext,
    sampler: Sampler,
    set_probes: Arc<PlainKernel>,
    verify: Arc<PlainKernel>,
    /// Per draft dtype, built on first use.
    log_probs: [OnceLock<Arc<PlainKernel>>; 3],
    /// Per (draft dtype, masked), built on first use.
    residual: [OnceLock<LogitsKernel>; 6],
    stand_in: wgpu::Buffer,
    max_chunk_bytes: Option<u64>,
    history_kernels: OnceLock<Arc<HistoryKernels>>,
    host: Option<HostBuffers>,
}

/// Reused by the host path; grown, never shrunk.
struct HostBuffers {
    batch: VerifyBatch,
    target: GrowBuffer,
    draft: GrowBuffer,
    tokens: GrowBuffer,
    masks: GrowBuffer,
    readback: GrowBuffer,
}

impl Verifier {
    /// Builds the sampling and verification pipelines on `ctx`.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let f32 = LogitsDtype::F32;
        Ok(Self {
            ctx: ctx.clone(),
            sampler: Sampler::new(ctx)?,
            set_probes: small_kernel(
                ctx,
                "set_probes",
                f32,
                &[(10, UNIFORM), (12, READ), (13, WRITE), (14, READ)],
            )?,
            verify: small_kernel(
                ctx,
                "verify_rows",
                f32,
                &[
                    (10, UNIFORM),
                    (11, READ),
                    (12, READ),
                    (15, READ),
                    (16, READ),
                    (17, WRITE),
                    (18, WRITE),
                    (19, WRITE),
                    (20, WRITE),
                ],
            )?,
            log_probs: Default::default(),
            residual: Default::default(),
            stand_in: ctx.create_buffer(
                "rollcall verify stand-in",
                16,
                wgpu::BufferUsages::STORAGE,
            )?,
            max_chunk_bytes: None,
            history_kernels: OnceLock::new(),
            host: None,
        })
    }

    /// Caps the bytes of logits (and of draft rows) bound per dispatch,
    /// below the adapter's own binding limit: the same results in more
    /// dispatches. For tests of chunking (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.sampler = self.sampler.with_max_chunk_bytes(bytes);
        self.max_chunk_bytes = Some(bytes);
        for cell in &mut self.residual {
            if let Some(kernel) = cell.get_mut() {
                kernel.set_max_chunk_bytes(bytes);
            }
        }
        self
    }

    fn history_kernels(&self) -> Result<&HistoryKernels> {
        if let Some(k) = self.history_kernels.get() {
            return Ok(k);
        }
        let built = HistoryKernels::new(&self.ctx)?;
        Ok(self.history_kernels.get_or_init(|| built))
    }

    fn log_probs_kernel(&self, dtype: LogitsDtype) -> Result<&PlainKernel> {
        let cell = &self.log_probs[dtype.index()];
        if let Some(k) = cell.get() {
            return Ok(k);
        }
        let built = small_kernel(
            &self.ctx,
            "log_probs",
            dtype,
            &[(10, UNIFORM), (21, READ), (22, WRITE)],
        )?;
        Ok(cell.get_or_init(|| built))
    }

    fn residual_kernel(&self, draft_dtype: LogitsDtype, masked: bool) -> Result<&LogitsKernel> {
        let index = draft_dtype.index() * 2 + usize::from(masked);
        let cell = &self.residual[index];
        if let Some(k) = cell.get() {
            return Ok(k);
        }
        // Bindings 2..7: verdicts, states, draft values (read), emitted
        // tokens, masks (read), emitted log-probabilities; 8: the vectors.
        let key = LogitsKernelKey {
            kernel: "residual_rows",
            constant: index as u32,
            extra: &[true, true, true, false, true, false],
        };
        let mut built = LogitsKernel::new(&self.ctx, "rollcall speculative residual", key, || {
            residual_shader(draft_dtype, masked)
        })?;
        if let Some(bytes) = self.max_chunk_bytes {
            built.set_max_chunk_bytes(bytes);
        }
        Ok(cell.get_or_init(|| built))
    }

    /// Engine path: records the verification of `batch`'s requests into
    /// `encoder`. `target` holds the target logits of every position (`Σ
    /// (lens + 1)` rows, request by request); `draft_tokens` the draft tokens
    /// as `u32`, back to back from offset 0 (`STORAGE` usage); `draft` their
    /// distribution, if any; `mask` the token masks the batch's mask rows
    /// name. Outputs land in the batch's buffers; nothing is submitted or
    /// read back. Shapes are checked before any work.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        target: &LogitsBinding<'_>,
        draft_tokens: &wgpu::Buffer,
        draft: &DraftBinding<'_>,
        mask: Option<&TokenMask<'_>>,
        batch: &mut VerifyBatch,
    ) -> Result<()> {
        let layout = &batch.layout.clone();
        let vocab = target.vocab;
        if target.rows != layout.targets {
            return Err(Error::InvalidDrafts(format!(
                "target logits have {} rows; the requests' positions need {}",
                target.rows, layout.targets
            )));
        }
        if let Some(values) = draft.values() {
            if values.rows != layout.drafts || values.vocab != vocab {
                return Err(Error::InvalidDrafts(format!(
                    "draft distributions are {} rows of {}; the batch needs {} rows of {vocab}",
                    values.rows, values.vocab, layout.drafts
                )));
            }
        }
        let token_bytes = u64::from(layout.drafts) * 4;
        if draft_tokens.size() < token_bytes {
            return Err(Error::BufferTooSmall {
                what: "draft tokens",
                needed: token_bytes,
                got: draft_tokens.size(),
            });
        }
        if let Some(rows) = &batch.mask_rows {
            if rows.len() != layout.targets as usize {
                return Err(Error::InvalidMask(format!(
                    "{} mask row entries for {} target positions",
                    rows.len(),
                    layout.targets
                )));
            }
        }
        if batch.params.is_empty() {
            return Ok(());
        }
        let with_draft_rows = draft.values().is_some();
        let probabilities = matches!(draft, DraftBinding::Probs(_));
        let (rows, sources) = sampled_rows(
            &batch.params,
            layout,
            &batch.lens,
            with_draft_rows,
            probabilities,
            batch.mask_rows.as_deref(),
        );
        let draft_rows = if with_draft_rows { layout.drafts } else { 0 };
        batch.samples.set_gpu_params(&rows)?;
        let ctx = &self.ctx;
        // Histories: every target position samples from its request's with
        // the drafts before it (draft rows from none).
        let with_history = batch.history.as_ref().is_some_and(EditState::is_active);
        if let Some(history) = &batch.history {
            let appends = batch.max_drafts + 1;
            if with_history {
                history.check_appends(batch.params.len() as u32, appends)?;
            }
            let mut sources = vec![None; draft_rows as usize];
            let mut positions = vec![
                GpuPositionHistory {
                    request: NO_REQUEST,
                    ..Default::default()
                };
                draft_rows as usize
            ];
            for (r, &d) in batch.lens.iter().enumerate() {
                for i in 0..=d {
                    sources.push(with_history.then_some((r as u32, i + 1)));
                    positions.push(GpuPositionHistory {
                        request: if with_history { r as u32 } else { NO_REQUEST },
                        first_draft: layout.first_draft[r],
                        prefix: i,
                        pad: 0,
                    });
                }
            }
            batch
                .samples
                .edits_mut()?
                .take_params_from(history, &sources)?;
            ctx.queue
                .write_buffer(&batch.positions, 0, bytemuck::cast_slice(&positions));
        }
        ctx.queue
            .write_buffer(&batch.probe_sources, 0, bytemuck::cast_slice(&sources));

        // The draft values as the residual reads them (the caller's logits,
        // or the log-probabilities `log_probs` writes, f32), and the groups
        // of requests each residual dispatch binds.
        let residual_dtype = match draft {
            DraftBinding::Logits(b) => b.dtype,
            _ => LogitsDtype::F32,
        };
        if let DraftBinding::Probs(_) = draft {
            let bytes = u64::from(layout.drafts) * u64::from(vocab) * 4;
            batch.log_probs.reserve_doubling(ctx, bytes.max(4))?;
        }
        let limits = self.residual_kernel(residual_dtype, false)?.chunk_limits();
        let groups = if with_draft_rows {
            residual_groups(
                layout,
                &batch.lens,
                target,
                residual_dtype,
                draft_rows,
                limits,
            )?
        } else {
            Vec::new()
        };
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
        let mut draft_elem = vec![0u32; batch.lens.len()];
        for group in &groups {
            let shift = draft_shift(
                draft_value_offset(draft, group.first_draft, vocab),
                align,
                residual_dtype,
            );
            for r in group.chunk.row_start..group.chunk.row_start + group.chunk.rows {
                let e = u64::from(layout.first_draft[r as usize] - group.first_draft)
                    * u64::from(vocab)
                    + u64::from(shift);
                draft_elem[r as usize] = u32::try_from(e).unwrap_or(u32::MAX);
            }
        }
        let requests = verify_rows(
            &batch.params,
            layout,
            &batch.lens,
            with_draft_rows,
            &draft_elem,
        );
        ctx.queue
            .write_buffer(&batch.requests, 0, bytemuck::cast_slice(&requests));
        let tokens_binding = if layout.drafts == 0 {
            &self.stand_in
        } else {
            draft_tokens
        };

        // Probe tokens into the sampled rows' parameters.
        let probe_grid = self.write_info(
            &batch.info[0],
            batch.samples_rows(),
            0,
            0,
            draft_rows,
            batch.max_drafts,
        );
        self.dispatch_small(
            encoder,
            &self.set_probes,
            &[
                (10, batch.info[0].as_entire_binding()),
                (12, tokens_binding.as_entire_binding()),
                (13, batch.samples.params_buffer().as_entire_binding()),
                (14, batch.probe_sources.as_entire_binding()),
            ],
            probe_grid,
        );

        if with_history {
            if let (Some(history), Some(sampled)) = (&batch.history, batch.samples.take_edits()) {
                self.history_kernels()?.encode_expand(
                    ctx,
                    encoder,
                    &batch.history_info[0],
                    &batch.positions,
                    draft_rows + layout.targets,
                    history,
                    &sampled,
                    tokens_binding,
                );
                batch.samples.put_edits(Some(sampled));
            }
        }

        // Draft rows (with no history), then target rows.
        if let DraftBinding::Probs(b) = draft {
            batch.grow_group_records(ctx, groups.len())?;
            let kernel = self.log_probs_kernel(b.dtype)?;
            for (g, group) in groups.iter().enumerate() {
                if group.drafts == 0 {
                    continue;
                }
                let (input, in_shift) = draft_range(
                    b.buffer,
                    b.offset,
                    b.dtype,
                    vocab,
                    group,
                    align,
                    limits.max_binding,
                )?;
                let (output, out_shift) = draft_range(
                    batch.log_probs.buffer(),
                    0,
                    LogitsDtype::F32,
                    vocab,
                    group,
                    align,
                    limits.max_binding,
                )?;
                let info = &batch.group_info[g];
                let grid = self.write_info(
                    info,
                    group.drafts * vocab,
                    in_shift,
                    out_shift,
                    draft_rows,
                    batch.max_drafts,
                );
                self.dispatch_small(
                    encoder,
                    kernel,
                    &[
                        (10, info.as_entire_binding()),
                        (21, wgpu::BindingResource::Buffer(input)),
                        (22, wgpu::BindingResource::Buffer(output)),
                    ],
                    grid,
                );
            }
        }
        if draft_rows > 0 {
            let scratch_binding;
            let values = match draft {
                DraftBinding::Probs(_) => {
                    scratch_binding = LogitsBinding {
                        buffer: batch.log_probs.buffer(),
                        offset: 0,
                        rows: layout.drafts,
                        vocab,
                        dtype: LogitsDtype::F32,
                    };
                    &scratch_binding
                }
                _ => draft.values().unwrap_or(target),
            };
            let chunks = self.sampler.plan(values)?;
            // A second record set: one submit reads the last records written
            // to a set.
            std::mem::swap(&mut batch.samples.records, &mut batch.draft_records);
            let edits = batch.samples.take_edits();
            let masks = self.sampler.mask_binding(mask, &batch.samples, vocab)?;
            let result = self.sampler.encode_batch(
                encoder,
                values,
                &mut batch.samples,
                &chunks,
                0,
                draft_rows,
                draft_rows + layout.targets,
                masks,
            );
            batch.samples.put_edits(edits);
            std::mem::swap(&mut batch.samples.records, &mut batch.draft_records);
            result?;
        }
        let target_chunks = self.sampler.plan(target)?;
        let masks = self.sampler.mask_binding(mask, &batch.samples, vocab)?;
        self.sampler.encode_batch(
            encoder,
            target,
            &mut batch.samples,
            &target_chunks,
            draft_rows,
            layout.targets,
            draft_rows + layout.targets,
            masks,
        )?;

        // Decide.
        let requests_count = batch.params.len() as u32;
        let grid = self.write_info(
            &batch.info[2],
            requests_count,
            0,
            0,
            draft_rows,
            batch.max_drafts,
        );
        self.dispatch_small(
            encoder,
            &self.verify,
            &[
                (10, batch.info[2].as_entire_binding()),
                (11, batch.requests.as_entire_binding()),
                (12, tokens_binding.as_entire_binding()),
                (15, batch.samples.tokens().as_entire_binding()),
                (16, batch.samples.results().as_entire_binding()),
                (17, batch.verdicts.as_entire_binding()),
                (18, batch.tokens.as_entire_binding()),
                (19, batch.logprobs.as_entire_binding()),
                (20, batch.acceptance.as_entire_binding()),
            ],
            grid,
        );

        // The residual draws and the accepted drafts' log-probabilities.
        if with_draft_rows {
            let masked = batch.samples_masked();
            let kernel = self.residual_kernel(residual_dtype, masked)?;
            // The residual reads the target as sampled: with the histories'
            // edits, applied again around it.
            let edits = if with_history {
                batch.samples.take_edits()
            } else {
                None
            };
            if let Some(mut state) = edits {
                let kernels = self.sampler.edit_kernels()?;
                kernels.encode_apply(encoder, target, &target_chunks, &mut state, draft_rows)?;
                batch.samples.put_edits(Some(state));
            }
            batch.grow_group_records(ctx, groups.len())?;
            let (values_buffer, values_offset) = match draft {
                DraftBinding::Logits(b) => (b.buffer, b.offset),
                _ => (batch.log_probs.buffer(), 0),
            };
            for (g, group) in groups.iter().enumerate() {
                let values = if group.drafts == 0 {
                    self.stand_in.as_entire_binding()
                } else {
                    let (range, _) = draft_range(
                        values_buffer,
                        values_offset,
                        residual_dtype,
                        vocab,
                        group,
                        align,
                        limits.max_binding,
                    )?;
                    wgpu::BindingResource::Buffer(range)
                };
                let masks = self.sampler.mask_binding(mask, &batch.samples, vocab)?;
                let extra = [
                    batch.verdicts.as_entire_binding(),
                    batch.samples.top_logprobs().as_entire_binding(),
                    values,
                    batch.tokens.as_entire_binding(),
                    masks,
                    batch.logprobs.as_entire_binding(),
                ];
                kernel.encode(
                    encoder,
                    target,
                    std::slice::from_ref(&group.chunk),
                    &mut batch.group_records[g],
                    &extra,
                    0,
                )?;
            }
            if let (true, Some(mut state)) = (with_history, batch.samples.take_edits()) {
                let kernels = self.sampler.edit_kernels()?;
                let result = kernels.encode_restore_append(
                    encoder,
                    target,
                    &target_chunks,
                    &mut state,
                    batch.samples.tokens(),
                    batch.samples.results(),
                    draft_rows,
                );
                batch.samples.put_edits(Some(state));
                result?;
            }
        }

        // The emitted tokens join their requests' histories.
        if let (true, Some(history)) = (with_history, &mut batch.history) {
            let requests = batch.params.len() as u32;
            self.history_kernels()?.encode_append(
                ctx,
                encoder,
                &batch.history_info[1],
                history,
                requests,
                vocab,
                &batch.verdicts,
                &batch.tokens,
            );
            history.note_appends(requests, batch.max_drafts + 1);
        }
        Ok(())
    }

    /// Writes a small kernel's record for `rows` invocations and returns its
    /// grid.
    fn write_info(
        &self,
        info: &wgpu::Buffer,
        rows: u32,
        elem_base: u32,
        out_elem_base: u32,
        draft_rows: u32,
        stride: u32,
    ) -> (u32, u32) {
        let max = self
            .ctx
            .limits()
            .max_compute_workgroups_per_dimension
            .max(1);
        let groups = rows.div_ceil(SMALL_WG).max(1);
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        let record = VerifyInfo {
            requests: rows,
            stride,
            draft_rows,
            rows,
            grid_width: x * SMALL_WG,
            elem_base,
            out_elem_base,
            pad: 0,
        };
        self.ctx
            .queue
            .write_buffer(info, 0, bytemuck::bytes_of(&record));
        (x, y)
    }

    fn dispatch_small(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kernel: &PlainKernel,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
        grid: (u32, u32),
    ) {
        kernel.dispatch(
            &self.ctx.device,
            encoder,
            "rollcall speculative",
            bindings,
            grid,
        );
    }

    /// Host path: verifies `params.len()` requests (see the module docs) and
    /// returns one outcome per request; one submit and one readback.
    pub fn verify(
        &mut self,
        target: HostLogits<'_>,
        vocab: u32,
        params: &[SamplingParams],
        drafts: &Drafts<'_>,
        options: &VerifyOptions<'_>,
    ) -> Result<Vec<Verification>> {
        validate_verify_params(params, options.histories.is_some())?;
        let layout = check_drafts(drafts, params.len(), vocab)?;
        check_host_call(&target, vocab, &layout, options)?;
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let mut host = match self.host.take() {
            Some(host) => host,
            None => HostBuffers::new(&self.ctx)?,
        };
        let result = self.verify_with(&mut host, target, vocab, params, drafts, options, &layout);
        self.host = Some(host);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn verify_with(
        &self,
        host: &mut HostBuffers,
        target: HostLogits<'_>,
        vocab: u32,
        params: &[SamplingParams],
        drafts: &Drafts<'_>,
        options: &VerifyOptions<'_>,
        layout: &Layout,
    ) -> Result<Vec<Verification>> {
        let ctx = &self.ctx;
        let requests = params.len() as u32;
        // A batch with this call's histories, or the reused one.
        let mut with_history = match options.histories {
            Some(histories) => {
                let room = super::history_room(histories, layout.max_drafts)?;
                let mut batch = VerifyBatch::with_history(ctx, requests, layout.max_drafts, room)?;
                for (r, h) in histories.iter().enumerate() {
                    batch.set_history(r as u32, vocab, h)?;
                }
                Some(batch)
            }
            None => None,
        };
        if with_history.is_none()
            && (host.batch.capacity < requests || host.batch.max_drafts < layout.max_drafts)
        {
            let capacity = host.batch.capacity.max(requests);
            let max_drafts = host.batch.max_drafts.max(layout.max_drafts);
            host.batch = VerifyBatch::new(ctx, capacity, max_drafts)?;
        }
        let batch = with_history.as_mut().unwrap_or(&mut host.batch);
        batch.set_requests(params, drafts.lens)?;
        if let Some(mask) = &options.mask {
            batch.set_mask_rows(mask.rows)?;
        }
        let target_buffer = host.target.write(ctx, target.bytes())?;
        let token_buffer = host
            .tokens
            .write(ctx, bytemuck::cast_slice(drafts.tokens))?;
        let draft_bytes: &[u8] = match &options.draft {
            DraftDistribution::Deterministic => &[],
            DraftDistribution::Logits(v) | DraftDistribution::Probs(v) => v.bytes(),
        };
        let draft_buffer = host.draft.write(ctx, draft_bytes)?;
        let mask_words = options
            .mask
            .as_ref()
            .map_or(&[][..], |m: &HostMask<'_>| m.words);
        let mask_buffer = host.masks.write(ctx, bytemuck::cast_slice(mask_words))?;
        let target_binding = LogitsBinding {
            buffer: target_buffer,
            offset: 0,
            rows: layout.targets,
            vocab,
            dtype: target.dtype(),
        };
        let draft_binding = |v: &HostLogits<'_>| LogitsBinding {
            buffer: draft_buffer,
            offset: 0,
            rows: layout.drafts,
            vocab,
            dtype: v.dtype(),
        };
        let draft = match &options.draft {
            DraftDistribution::Deterministic => DraftBinding::Deterministic,
            DraftDistribution::Logits(v) => DraftBinding::Logits(draft_binding(v)),
            DraftDistribution::Probs(v) => DraftBinding::Probs(draft_binding(v)),
        };
        let mask = options.mask.as_ref().map(|m| TokenMask {
            buffer: mask_buffer,
            offset: 0,
            rows: (m.words.len() / crate::sampling::mask::words_per_row(vocab)) as u32,
        });
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.encode(
            &mut encoder,
            &target_binding,
            token_buffer,
            &draft,
            mask.as_ref(),
            batch,
        )?;
        let stride = u64::from(batch.max_drafts);
        let n = u64::from(requests);
        let sizes = [
            n * VERDICT_BYTES,
            n * (stride + 1) * 4,
            n * (stride + 1) * 4,
            n * stride * 4,
        ];
        let total: u64 = sizes.iter().sum();
        host.readback.reserve(ctx, total.max(4))?;
        let readback = host.readback.buffer();
        let sources = [
            &batch.verdicts,
            &batch.tokens,
            &batch.logprobs,
            &batch.acceptance,
        ];
        let mut at = 0;
        for (source, &size) in sources.iter().zip(&sizes) {
            if size > 0 {
                encoder.copy_buffer_to_buffer(source, 0, readback, at, size);
            }
            at += size;
        }
        ctx.submit(encoder.finish());
        let bytes = ctx.read_buffer(readback, total)?;
        let (verdicts, rest) = bytes.split_at(sizes[0] as usize);
        let (tokens, rest) = rest.split_at(sizes[1] as usize);
        let (logprobs, acceptance) = rest.split_at(sizes[2] as usize);
        let verdicts: &[GpuVerdict] = bytemuck::cast_slice(verdicts);
        let tokens: &[u32] = bytemuck::cast_slice(tokens);
        let logprobs: &[f32] = bytemuck::cast_slice(logprobs);
        let acceptance: &[f32] = bytemuck::cast_slice(acceptance);
        let (stride, width) = (stride as usize, stride as usize + 1);
        Ok(verdicts
            .iter()
            .enumerate()
            .map(|(r, v)| {
                let emitted = v.emitted as usize;
                Verification {
                    accepted: v.accepted,
                    tokens: tokens[r * width..r * width + emitted].to_vec(),
                    logprobs: logprobs[r * width..r * width + emitted].to_vec(),
                    acceptance: acceptance[r * stride..r * stride + drafts.lens[r] as usize]
                        .to_vec(),
                    status: if v.status == RowStatus::Ok.code() {
                        RowStatus::Ok
                    } else {
                        RowStatus::NoValidToken
                    },
                }
            })
            .collect())
    }
}

/// One residual dispatch: whole requests whose target rows fit one binding
/// (`chunk`: its rows are the requests) and whose draft rows
/// (`first_draft..first_draft + drafts`) fit another.
struct Group {
    chunk: Chunk,
    first_draft: u32,
    drafts: u32,
}

/// The residual kernel's dispatches, request by request.
fn residual_groups(
    layout: &Layout,
    lens: &[u32],
    target: &LogitsBinding<'_>,
    draft_dtype: LogitsDtype,
    draft_rows: u32,
    limits: crate::gpu::logits::ChunkLimits,
) -> Result<Vec<Group>> {
    let row_bytes = u64::from(target.vocab) * target.dtype.size_bytes();
    let draft_row_bytes = u64::from(target.vocab) * draft_dtype.size_bytes();
    let max_binding = limits.max_binding.min(1 << 31);
    let room = max_binding.saturating_sub(limits.offset_alignment + 4);
    let max_rows = room / row_bytes;
    let max_drafts = room / draft_row_bytes;
    let max_requests = limits.max_workgroups.max(1) as usize;
    let mut groups = Vec::new();
    let mut r = 0usize;
    while r < lens.len() {
        let mut end = r;
        let (mut rows, mut drafts) = (0u64, 0u64);
        while end < lens.len() && end - r < max_requests {
            let (next_rows, next_drafts) = (u64::from(lens[end]) + 1, u64::from(lens[end]));
            if end > r && (rows + next_rows > max_rows || drafts + next_drafts > max_drafts) {
                break;
            }
            rows += next_rows;
            drafts += next_drafts;
            end += 1;
        }
        if rows > max_rows || drafts > max_drafts {
            return Err(Error::TooLarge {
                what: "one request's target positions or drafts",
                bytes: (rows * row_bytes).max(drafts * draft_row_bytes),
                limit: max_binding,
            });
        }
        let first = layout.first_target[r];
        let planned = plan_chunks(
            rows as u32,
            target.vocab,
            target.dtype,
            target.offset + u64::from(first) * row_bytes,
            target.buffer.size(),
            limits,
        )?;
        let [chunk] = planned.as_slice() else {
            return Err(Error::TooLarge {
                what: "one request's target positions",
                bytes: rows * row_bytes,
                limit: max_binding,
            });
        };
        groups.push(Group {
            chunk: Chunk {
                row_start: r as u32,
                rows: (end - r) as u32,
                logits_base: Some(draft_rows + first),
                ..*chunk
            },
            first_draft: layout.first_draft[r],
            drafts: drafts as u32,
        });
        r = end;
    }
    Ok(groups)
}

/// Byte offset of draft row `first` of the residual's draft values.
fn draft_value_offset(draft: &DraftBinding<'_>, first: u32, vocab: u32) -> u64 {
    match draft {
        DraftBinding::Logits(b) => {
            b.offset + u64::from(first) * u64::from(vocab) * b.dtype.size_bytes()
        }
        _ => u64::from(first) * u64::from(vocab) * 4,
    }
}

/// The element a range starting at byte `offset` begins at once its
/// binding offset is aligned down.
fn draft_shift(offset: u64, align: u64, dtype: LogitsDtype) -> u32 {
    ((offset % align) / dtype.size_bytes()) as u32
}

/// A group's draft rows of `buffer` (values of `dtype` from byte `offset`)
/// as a binding aligned down, and the element its first value sits at.
fn draft_range<'a>(
    buffer: &'a wgpu::Buffer,
    offset: u64,
    dtype: LogitsDtype,
    vocab: u32,
    group: &Group,
    align: u64,
    max_binding: u64,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    let esize = dtype.size_bytes();
    if !offset.is_multiple_of(esize) {
        return Err(Error::MisalignedOffset(offset));
    }
    let start = offset + u64::from(group.first_draft) * u64::from(vocab) * esize;
    let bytes = u64::from(group.drafts) * u64::from(vocab) * esize;
    let bind_offset = start - start % align;
    let size = (start - bind_offset + bytes).div_ceil(4).max(1) * 4;
    if bind_offset + size > buffer.size() {
        return Err(Error::BufferTooSmall {
            what: "draft distributions",
            needed: bind_offset + size,
            got: buffer.size(),
        });
    }
    if size > max_binding {
        return Err(Error::TooLarge {
            what: "a dispatch's draft rows",
            bytes: size,
            limit: max_binding,
        });
    }
    Ok((
        wgpu::BufferBinding {
            buffer,
            offset: bind_offset,
            size: std::num::NonZeroU64::new(size),
        },
        ((start - bind_offset) / esize) as u32,
    ))
}

impl HostBuffers {
    fn new(ctx: &GpuContext) -> Result<Self> {
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        Ok(Self {
            batch: VerifyBatch::new(ctx, 1, 1)?,
            target: GrowBuffer::bound_in_ranges(
                ctx,
                "rollcall verify target upload",
                storage,
                256,
            )?,
            draft: GrowBuffer::new(ctx, "rollcall verify draft upload", storage)?,
            tokens: GrowBuffer::new(ctx, "rollcall verify draft tokens", storage)?,
            masks: GrowBuffer::new(ctx, "rollcall verify masks", storage)?,
            readback: GrowBuffer::new(
                ctx,
                "rollcall verify readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?,
        })
    }
}

/// Per-batch GPU state of verification for the engine path: the requests'
/// parameters and draft lengths, the sampled rows, and the outputs. Create
/// once, reuse every step.
///
/// ```no_run
/// use rollcall::speculative::{DraftBinding, VerifyBatch, Verifier};
/// use rollcall::{GpuContext, LogitsBinding, LogitsDtype, SamplingParams};
/// # let ctx = GpuContext::new()?;
/// # let (target_logits, draft_tokens): (wgpu::Buffer, wgpu::Buffer) = unimplemented!();
/// let verifier = Verifier::new(&ctx)?;
/// // 8 requests of up to 4 drafts; this step they have 4, 0, 2, ... drafts.
/// let mut batch = VerifyBatch::new(&ctx, 8, 4)?;
/// let lens = [4, 0, 2, 4, 1, 3, 4, 4];
/// batch.set_requests(&[SamplingParams::new(0.8).top_p(0.95).seed(1).step(40); 8], &lens)?;
/// let positions: u32 = lens.iter().map(|d| d + 1).sum();
/// let target = LogitsBinding {
///     buffer: &target_logits, offset: 0, rows: positions, vocab: 128_256, dtype: LogitsDtype::Bf16,
/// };
/// let mut encoder = ctx.device.create_command_encoder(&Default::default());
/// verifier.encode(&mut encoder, &target, &draft_tokens, &DraftBinding::Deterministic, None, &mut batch)?;
/// ctx.submit(encoder.finish());
/// // batch.tokens(): 5 slots a request, the emitted tokens then NO_TOKEN.
/// # Ok::<(), rollcall::Error>(())
/// ```
///
/// Outputs, per request `r` (with `k` = the batch's `max_drafts`):
/// [`VerifyBatch::verdicts`] holds `{ accepted: u32, emitted: u32, status:
/// u32 (0 ok, 1 no valid token), ... }` in 32 bytes; [`VerifyBatch::tokens`]
/// `k + 1` `u32` from `r · (k + 1)`, the emitted tokens then [`NO_TOKEN`];
/// [`VerifyBatch::logprobs`] their `f32` log-probabilities (−inf past them);
/// [`VerifyBatch::acceptance`] `k` `f32` from `r · k`, the acceptance
/// probability of each draft position (0 past the first rejection and the
/// request's drafts).
pub struct VerifyBatch {
    samples: SampleBatch,
    draft_records: DispatchRecords,
    /// One record set per residual dispatch group (a submit reads the last
    /// records written to a set), and the groups' `log_probs` records.
    group_records: Vec<DispatchRecords>,
    group_info: Vec<wgpu::Buffer>,
    requests: wgpu::Buffer,
    probe_sources: wgpu::Buffer,
    /// The small kernels' records: probes, log-probabilities, verification.
    info: [wgpu::Buffer; 3],
    verdicts: wgpu::Buffer,
    tokens: wgpu::Buffer,
    logprobs: wgpu::Buffer,
    acceptance: wgpu::Buffer,
    log_probs: GrowBuffer,
    /// Per request: its token history (bias, penalties, stop tokens), when
    /// the batch keeps them; each sampled target row samples from a copy.
    history: Option<EditState>,
    /// Per sampled row: where its history comes from.
    positions: wgpu::Buffer,
    history_info: [wgpu::Buffer; 2],
    params: Vec<GpuRowParams>,
    lens: Vec<u32>,
    layout: Layout,
    mask_rows: Option<Vec<Option<u32>>>,
    capacity: u32,
    max_drafts: u32,
}

impl VerifyBatch {
    /// Bytes of a request's record in [`VerifyBatch::verdicts`].
    pub const VERDICT_BYTES: u64 = VERDICT_BYTES;

    /// Buffers for up to `capacity` requests of up to `max_drafts` draft
    /// tokens each.
    pub fn new(ctx: &GpuContext, capacity: u32, max_drafts: u32) -> Result<Self> {
        Self::build(ctx, capacity, max_drafts, None)
    }

    /// A batch that also keeps, per request, a token history on the GPU for
    /// logit bias, penalties and `min_tokens` (room for `distinct_tokens`
    /// distinct tokens a request: its prompt and output, biased and stop
    /// tokens, and the `max_drafts + 1` tokens a step can add). Each
    /// target position samples with its request's history and the drafts
    /// before it; the emitted tokens join the history. A step that could
    /// overflow a history is refused ([`Error::HistoryFull`]).
    pub fn with_history(
        ctx: &GpuContext,
        capacity: u32,
        max_drafts: u32,
        distinct_tokens: u32,
    ) -> Result<Self> {
        Self::build(ctx, capacity, max_drafts, Some(distinct_tokens))
    }

    /// Sets request `row`'s history for logits of `vocab` tokens (see
    /// [`SampleBatch::set_history`]).
    pub fn set_history(&mut self, row: u32, vocab: u32, history: &RowHistory<'_>) -> Result<()> {
        self.history_mut()?.set_row(row, vocab, history)
    }

    /// Forgets request `row`'s history.
    pub fn clear_history(&mut self, row: u32) -> Result<()> {
        self.history_mut()?.clear_row(row);
        Ok(())
    }

    fn history_mut(&mut self) -> Result<&mut EditState> {
        self.history.as_mut().ok_or_else(|| {
            Error::InvalidArgument(
                "this batch keeps no token history: create it with VerifyBatch::with_history"
                    .into(),
            )
        })
    }

    fn build(
        ctx: &GpuContext,
        capacity: u32,
        max_drafts: u32,
        distinct: Option<u32>,
    ) -> Result<Self> {
        let capacity = capacity.max(1);
        let rows = u64::from(capacity) * (2 * u64::from(max_drafts) + 1);
        let rows = u32::try_from(rows).map_err(|_| Error::BatchCapacity {
            capacity: u32::MAX as usize,
            rows: rows as usize,
        })?;
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let out = storage | wgpu::BufferUsages::COPY_SRC;
        let n = u64::from(capacity);
        let k = u64::from(max_drafts);
        let uniform = || {
            ctx.create_buffer(
                "rollcall verify record",
                std::mem::size_of::<VerifyInfo>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )
        };
        let small_uniform = || {
            ctx.create_buffer(
                "rollcall verify history record",
                std::mem::size_of::<GpuHistoryInfo>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )
        };
        Ok(Self {
            samples: match distinct {
                Some(d) => SampleBatch::with_history(ctx, rows, d)?,
                None => SampleBatch::new(ctx, rows)?,
            },
            history: match distinct {
                Some(d) => Some(EditState::new(ctx, capacity, d)?),
                None => None,
            },
            positions: ctx.create_bound_buffer(
                "rollcall verify positions",
                u64::from(rows) * std::mem::size_of::<GpuPositionHistory>() as u64,
                storage,
            )?,
            history_info: [small_uniform()?, small_uniform()?],
            draft_records: DispatchRecords::new(ctx)?,
            group_records: Vec::new(),
            group_info: Vec::new(),
            requests: ctx.create_bound_buffer(
                "rollcall verify requests",
                n * std::mem::size_of::<super::GpuVerifyRow>() as u64,
                storage,
            )?,
            probe_sources: ctx.create_bound_buffer(
                "rollcall verify probes",
                u64::from(rows) * 4,
                storage,
            )?,
            info: [uniform()?, uniform()?, uniform()?],
            verdicts: ctx.create_bound_buffer("rollcall verdicts", n * VERDICT_BYTES, out)?,
            tokens: ctx.create_bound_buffer("rollcall verified tokens", n * (k + 1) * 4, out)?,
            logprobs: ctx.create_bound_buffer(
                "rollcall verified logprobs",
                n * (k + 1) * 4,
                out,
            )?,
            acceptance: ctx.create_bound_buffer(
                "rollcall acceptance probabilities",
                (n * k * 4).max(4),
                out,
            )?,
            log_probs: GrowBuffer::bound_in_ranges(
                ctx,
                "rollcall draft log-probabilities",
                wgpu::BufferUsages::STORAGE,
                256,
            )?,
            params: Vec::new(),
            lens: Vec::new(),
            layout: Layout::default(),
            mask_rows: None,
            capacity,
            max_drafts,
        })
    }

    /// Sets the requests' parameters and draft lengths (each at most the
    /// batch's `max_drafts`); clears the mask rows.
    pub fn set_requests(&mut self, params: &[SamplingParams], lens: &[u32]) -> Result<()> {
        let gpu = validate_verify_params(params, self.history.is_some())?;
        if params.len() > self.capacity as usize {
            return Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: params.len(),
            });
        }
        if lens.len() != params.len() {
            return Err(Error::InvalidDrafts(format!(
                "{} draft lengths for {} requests",
                lens.len(),
                params.len()
            )));
        }
        if let Some((r, &d)) = lens.iter().enumerate().find(|(_, &d)| d > self.max_drafts) {
            return Err(Error::InvalidDrafts(format!(
                "request {r} has {d} draft tokens; the batch holds at most {}",
                self.max_drafts
            )));
        }
        if let Some(history) = &mut self.history {
            history.set_penalties(params)?;
        }
        self.layout = Layout::of(lens)?;
        self.params = gpu;
        self.lens = lens.to_vec();
        self.mask_rows = None;
        Ok(())
    }

    /// The token mask row each target position reads (`Σ (lens + 1)`
    /// entries, request by request), or `None`; draft logits rows read their
    /// position's.
    pub fn set_mask_rows(&mut self, rows: &[Option<u32>]) -> Result<()> {
        check_mask_rows(rows, self.layout.targets as usize, u64::from(u32::MAX))?;
        self.mask_rows = Some(rows.to_vec());
        Ok(())
    }

    /// Per request: accepted and emitted counts and a status (see the type's
    /// docs).
    pub fn verdicts(&self) -> &wgpu::Buffer {
        &self.verdicts
    }

    /// Emitted tokens, `max_drafts + 1` slots per request.
    pub fn tokens(&self) -> &wgpu::Buffer {
        &self.tokens
    }

    /// The emitted tokens' log-probabilities, `max_drafts + 1` per request.
    pub fn logprobs(&self) -> &wgpu::Buffer {
        &self.logprobs
    }

    /// Acceptance probabilities, `max_drafts` per request.
    pub fn acceptance(&self) -> &wgpu::Buffer {
        &self.acceptance
    }

    /// Room for `groups` residual dispatch groups.
    fn grow_group_records(&mut self, ctx: &GpuContext, groups: usize) -> Result<()> {
        while self.group_records.len() < groups {
            self.group_records.push(DispatchRecords::new(ctx)?);
        }
        while self.group_info.len() < groups {
            self.group_info.push(ctx.create_buffer(
                "rollcall verify group record",
                std::mem::size_of::<VerifyInfo>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )?);
        }
        Ok(())
    }

    fn samples_rows(&self) -> u32 {
        self.samples.rows()
    }

    fn samples_masked(&self) -> bool {
        self.mask_rows
            .as_ref()
            .is_some_and(|rows| rows.iter().any(Option::is_some))
    }
}

// The states the residual kernel reads sit in the sampled rows' top
// log-probability slots.
const _: () = assert!(
    std::mem::size_of::<crate::sampling::GpuRowState>() as u64
        <= MAX_TOP_LOGPROBS as u64 * crate::sampling::TOP_LOGPROB_BYTES
);
// (NO_TOKEN is the shader's NO_INDEX.)
const _: () = assert!(NO_TOKEN == u32::MAX);
