//! The vote tables on the GPU: counting, the rules, rewards.

use super::{check_prompt, rules, GpuPromptVotes, PromptVotes, RoundVotes, Segment};
use crate::gpu::buffer::GrowBuffer;
use crate::{Error, GpuContext, Result};
use std::mem::size_of;
use std::sync::Arc;

/// Invocations per workgroup of every voting kernel (`WG` in the shader):
/// one per segment or listed prompt.
pub(crate) const WORKGROUP: u32 = 64;

/// `count_votes`'s uniform (`CountParams` in the shader).
pub(crate) type CountParams = [u32; 4];

/// `count_votes`'s uniform for a round of `segments` segments.
pub(crate) fn count_params(segments: u32, has_tokens: bool) -> CountParams {
    [segments, u32::from(has_tokens), 0, 0]
}

/// `rewards_and_advantages`'s uniform (`RewardParams` in the shader), as
/// bytes.
pub(crate) type RewardParams = [u8; 16];

/// `rewards_and_advantages`'s uniform: `segments` segments, GRPO's `eps`,
/// and whether the rewards come from answers and consensus (else given).
pub(crate) fn reward_params(segments: u32, eps: f32, majority: bool) -> RewardParams {
    let mut params = [0u8; 16];
    params[..4].copy_from_slice(&segments.to_le_bytes());
    params[4..8].copy_from_slice(&eps.to_le_bytes());
    params[8..12].copy_from_slice(&u32::from(majority).to_le_bytes());
    params
}

/// Bytes of one table entry, `(answer, votes)`.
const TABLE_ENTRY_BYTES: u64 = size_of::<[u32; 2]>() as u64;
/// Bytes of one prompt's totals.
const VOTES_BYTES: u64 = size_of::<GpuPromptVotes>() as u64;
/// Bytes of one prompt's decision.
pub(crate) const DECISION_BYTES: u64 = size_of::<GpuDecision>() as u64;

/// The voting shader's entry points (counting, then the rules) for
/// `capacity` answers per prompt.
pub(crate) fn shader_variants(capacity: u32) -> Result<Vec<crate::gpu::shader::ShaderVariant>> {
    let source = crate::gpu::shader::compose(
        "voting.wgsl",
        &format!(
            "const CAPACITY: u32 = {capacity}u;\n{}",
            rules::rule_kind_prelude()
        ),
    )?;
    Ok([
        "count_votes",
        "decide",
        "rewards_and_advantages",
        "count_votes_wide",
        "decide_wide",
        "rewards_and_advantages_wide",
    ]
    .into_iter()
    .map(|entry_point| crate::gpu::shader::ShaderVariant {
        label: format!("voting/{entry_point}/{capacity}"),
        entry_point,
        source: source.clone(),
    })
    .collect())
}

/// What [`VoteTables::decide`] reads back, in list order.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideReadback {
    /// Decisions.
    pub decisions: Vec<PromptDecision>,
    /// 1 for prompts still active.
    pub keep: Vec<u32>,
    /// For live prompts, the fewest more votes that could stop them.
    pub next: Vec<u32>,
}

/// One prompt's decision as [`VoteTables::decide`] reads it back.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PromptDecision {
    /// Whether the prompt stops.
    pub stopped: bool,
    /// The consensus answer id (`u32::MAX` without votes).
    pub consensus: u32,
    /// The rule's confidence.
    pub confidence: f32,
    /// Votes used.
    pub votes: u32,
}

/// A decision as the GPU writes it (`Decision` in voting.wgsl, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuDecision {
    /// 1 when the prompt stops.
    pub(crate) stopped: u32,
    /// The consensus answer id (`u32::MAX` without votes).
    pub(crate) consensus: u32,
    /// The rule's confidence.
    pub(crate) confidence: f32,
    /// Votes used.
    pub(crate) votes: u32,
}

impl From<GpuDecision> for PromptDecision {
    fn from(d: GpuDecision) -> Self {
        PromptDecision {
            stopped: d.stopped != 0,
            consensus: d.consensus,
            confidence: d.confidence,
            votes: d.votes,
        }
    }
}

/// Vote tables resident on the GPU for `prompts` prompts, and the voting
/// kernels (built once per context and capacity).
///
/// ```no_run
/// use rollcall::voting::{RoundVotes, Segment, VoteTables};
/// let ctx = rollcall::GpuContext::new()?;
/// let mut tables = VoteTables::new(&ctx, 1000, 16)?;
/// let segments = [Segment { prompt: 3, start: 0, count: 2 }];
/// tables.count(&RoundVotes { segments: &segments, answers: &[5, 5], tokens: None })?;
/// let (votes, table) = tables.read()?;
/// assert_eq!(votes[3].total, 2);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct VoteTables {
    ctx: GpuContext,
    pipelines: Arc<Pipelines>,
    capacity: u32,
    prompts: u32,
    votes: wgpu::Buffer,
    tables: wgpu::Buffer,
    count_params: wgpu::Buffer,
    /// Round uploads, grown when a round is larger than any before it.
    round_segments: GrowBuffer,
    round_answers: GrowBuffer,
    round_tokens: GrowBuffer,
    /// Host-path buffers of `decide`, `rewards` and `read`, grown on demand.
    host: HostBuffers,
    count_route: CountRoute,
    decide_route: DecideRoute,
    reward_route: RewardRoute,
    /// The adapter is a CPU (lavapipe): one invocation a segment (and a
    /// listed prompt) always.
    cpu_adapter: bool,
    /// Which tables these are, and how many resets were recorded on them:
    /// what the calibrated rule's evidence cache was taken from.
    identity: u64,
    resets: std::sync::atomic::AtomicU64,
}

/// The next `VoteTables::identity`.
static NEXT_TABLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How a round's votes are counted (feature `internals`: for tests and
/// benchmarks; results never depend on it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub enum CountRoute {
    /// Chosen per round and adapter: on GPUs a workgroup per segment when
    /// segments average [`WIDE_COUNT_MIN_VOTES`] votes or more, else (and
    /// always on CPU adapters) an invocation per segment.
    #[default]
    Auto,
    /// An invocation per segment, votes in order.
    PerInvocation,
    /// A workgroup per segment, [`WORKGROUP`] votes at a time.
    PerWorkgroup,
}

/// How the rule runs over the listed prompts (feature `internals`: for tests
/// and benchmarks; results never depend on it, bit for bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub enum DecideRoute {
    /// Chosen by adapter: on GPUs a workgroup per prompt, on CPU adapters
    /// (where each workgroup barrier is a coroutine switch) an invocation
    /// per prompt.
    #[default]
    Auto,
    /// An invocation per prompt: the leader scan, the rule and ConSol's
    /// fewest-votes search in one serial loop each.
    PerInvocation,
    /// A workgroup per prompt: the leader and runner-up reduced over
    /// [`WORKGROUP`] lanes, ConSol's fewest-votes search [`WORKGROUP`]
    /// candidate counts at a time (one rule evaluation a lane).
    PerWorkgroup,
}

/// How rewards and GRPO advantages run over the segments (feature
/// `internals`: for tests and benchmarks; results never depend on it, bit
/// for bit: both kernels sum in the segment shape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub enum RewardRoute {
    /// Chosen by adapter: on GPUs a workgroup per segment, on CPU adapters
    /// (where each workgroup barrier is a coroutine switch) an invocation
    /// per segment.
    #[default]
    Auto,
    /// An invocation per segment: the segment shape run serially.
    PerInvocation,
    /// A workgroup per segment: a lane a block of the shape, 2 barriers.
    PerWorkgroup,
}

/// Mean votes per segment from which GPUs count with a workgroup per
/// segment: below it most of a workgroup's lanes would idle, above it one
/// invocation's serial loop (a table search per vote) is the round's
/// latency (RL shapes: 64 rollouts per prompt in one round).
pub(crate) const WIDE_COUNT_MIN_VOTES: usize = 8;

/// What the voting pipelines depend on: the cache key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct VotingKey {
    capacity: u32,
}

impl crate::gpu::cache::PipelineKey for VotingKey {
    type Built = Pipelines;
}

/// One layout and pipeline per entry point (each binds its own buffers).
struct Pipelines {
    count: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    /// `count_votes_wide`: a workgroup per segment, same bindings.
    count_wide: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    decide: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    /// `decide_wide`: a workgroup per listed prompt, same bindings.
    decide_wide: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    rewards: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    /// `rewards_and_advantages_wide`: a workgroup per segment, same bindings.
    rewards_wide: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
}

impl Pipelines {
    fn build(ctx: &GpuContext, capacity: u32) -> Result<Self> {
        use crate::gpu::shader::{layout_and_pipelines, Binding};
        let variants = shader_variants(capacity)?;
        let (uniform, read, write) = (Binding::Uniform(None), Binding::Read, Binding::ReadWrite);
        let build = |label: &str, bindings: &[(u32, Binding)], variant| {
            let (layout, mut pipelines) =
                layout_and_pipelines(&ctx.device, label, bindings, std::slice::from_ref(variant));
            (layout, pipelines.remove(0))
        };
        let count_bindings = [
            (0, uniform),
            (1, read),
            (2, read),
            (3, read),
            (4, write),
            (5, write),
        ];
        let decide_bindings = [
            (10, uniform),
            (11, read),
            (12, read),
            (13, read),
            (14, write),
            (15, write),
            (16, write),
        ];
        let reward_bindings = [
            (20, uniform),
            (21, read),
            (22, read),
            (23, read),
            (24, write),
            (25, write),
        ];
        Ok(Self {
            count: build("rollcall count votes", &count_bindings, &variants[0]),
            count_wide: build(
                "rollcall count votes, a workgroup a segment",
                &count_bindings,
                &variants[3],
            ),
            decide: build("rollcall decide", &decide_bindings, &variants[1]),
            decide_wide: build(
                "rollcall decide, a workgroup a prompt",
                &decide_bindings,
                &variants[4],
            ),
            rewards: build("rollcall rewards", &reward_bindings, &variants[2]),
            rewards_wide: build(
                "rollcall rewards, a workgroup a segment",
                &reward_bindings,
                &variants[5],
            ),
        })
    }
}

/// Buffers of the host-path calls, kept between calls.
struct HostBuffers {
    decide_params: wgpu::Buffer,
    reward_params: wgpu::Buffer,
    /// Inputs uploaded per call: the decide list, reward segments, answers,
    /// consensus and starting rewards.
    inputs: [GrowBuffer; 5],
    /// Outputs: decisions, keep flags, next votes, rewards, advantages.
    outputs: [GrowBuffer; 5],
    readback: GrowBuffer,
}

impl HostBuffers {
    fn new(ctx: &GpuContext) -> Result<Self> {
        let uniform = |label, size: usize| {
            ctx.create_buffer(
                label,
                size as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )
        };
        let grow = |label, usage| GrowBuffer::new(ctx, label, usage);
        // Inputs are copied from too: the given rewards seed the output.
        let input = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let output = input;
        Ok(Self {
            decide_params: uniform("rollcall decide params", size_of::<rules::DecideParams>())?,
            reward_params: uniform("rollcall reward params", size_of::<RewardParams>())?,
            inputs: [
                grow("rollcall decide list", input)?,
                grow("rollcall reward segments", input)?,
                grow("rollcall reward answers", input)?,
                grow("rollcall reward consensus", input)?,
                grow("rollcall rewards in", input)?,
            ],
            outputs: [
                grow("rollcall decisions", output)?,
                grow("rollcall keep flags", output)?,
                grow("rollcall next votes", output)?,
                grow("rollcall rewards", output)?,
                grow("rollcall advantages", output)?,
            ],
            readback: grow(
                "rollcall voting readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?,
        })
    }
}

impl VoteTables {
    /// Zeroed tables for `prompts` prompts of `capacity` (1 to 256) answers.
    /// The totals (32 bytes a prompt) and the tables (`8 × capacity` bytes a
    /// prompt) are each bound whole: past the device's storage binding limit
    /// they are [`Error::TooLarge`], before anything is allocated.
    pub fn new(ctx: &GpuContext, prompts: u32, capacity: u32) -> Result<Self> {
        if !(1..=256).contains(&capacity) {
            return Err(Error::InvalidCapacity(capacity));
        }
        // At most 2^32 × 256 × 8 bytes: no overflow in u64.
        let table_bytes = u64::from(prompts) * u64::from(capacity) * TABLE_ENTRY_BYTES;
        let vote_bytes = u64::from(prompts) * VOTES_BYTES;
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let limit = ctx.whole_binding_limit(usage);
        for (what, bytes) in [
            ("rollcall prompt votes", vote_bytes),
            ("rollcall vote tables", table_bytes),
        ] {
            if bytes > limit {
                return Err(Error::TooLarge { what, bytes, limit });
            }
        }
        let pipelines =
            ctx.pipelines(&VotingKey { capacity }, || Pipelines::build(ctx, capacity))?;
        let storage = |label, size: u64| ctx.create_bound_buffer(label, size.max(4), usage);
        let input = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        Ok(Self {
            votes: storage("rollcall prompt votes", vote_bytes)?,
            tables: storage("rollcall vote tables", table_bytes)?,
            count_params: ctx.create_buffer(
                "rollcall count params",
                size_of::<CountParams>() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )?,
            round_segments: GrowBuffer::new(ctx, "rollcall round segments", input)?,
            round_answers: GrowBuffer::new(ctx, "rollcall round answers", input)?,
            round_tokens: GrowBuffer::new(ctx, "rollcall round tokens", input)?,
            host: HostBuffers::new(ctx)?,
            ctx: ctx.clone(),
            pipelines,
            capacity,
            prompts,
            count_route: CountRoute::Auto,
            decide_route: DecideRoute::Auto,
            reward_route: RewardRoute::Auto,
            cpu_adapter: ctx.adapter_info().device_type == wgpu::DeviceType::Cpu,
            identity: NEXT_TABLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            resets: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// These tables' identity and the resets recorded on them so far: equal
    /// generations hold the same votes or more.
    pub(crate) fn generation(&self) -> (u64, u64) {
        let resets = self.resets.load(std::sync::atomic::Ordering::Relaxed);
        (self.identity, resets)
    }

    /// Forces how rounds are counted (same results either way).
    #[cfg(feature = "internals")]
    pub fn with_count_route(mut self, route: CountRoute) -> Self {
        self.count_route = route;
        self
    }

    /// Forces how the rule runs over listed prompts, by [`VoteTables::decide`]
    /// and by a scheduler's rounds (same results either way).
    #[cfg(feature = "internals")]
    pub fn with_decide_route(mut self, route: DecideRoute) -> Self {
        self.decide_route = route;
        self
    }

    /// Sets the decide route in place (a scheduler's own tables).
    #[cfg(feature = "internals")]
    pub(crate) fn set_decide_route(&mut self, route: DecideRoute) {
        self.decide_route = route;
    }

    /// Forces how rewards and advantages run, by [`VoteTables::rewards`] and
    /// a scheduler's rewards (same results either way).
    #[cfg(feature = "internals")]
    pub fn with_reward_route(mut self, route: RewardRoute) -> Self {
        self.reward_route = route;
        self
    }

    /// Sets the reward route in place (a scheduler's own tables).
    #[cfg(feature = "internals")]
    pub(crate) fn set_reward_route(&mut self, route: RewardRoute) {
        self.reward_route = route;
    }

    /// Whether rewards run with a workgroup per segment.
    fn rewards_wide(&self) -> bool {
        match self.reward_route {
            RewardRoute::PerInvocation => false,
            RewardRoute::PerWorkgroup => true,
            RewardRoute::Auto => !self.cpu_adapter,
        }
    }

    /// Whether the rule runs with a workgroup per listed prompt.
    fn decides_wide(&self) -> bool {
        match self.decide_route {
            DecideRoute::PerInvocation => false,
            DecideRoute::PerWorkgroup => true,
            DecideRoute::Auto => !self.cpu_adapter,
        }
    }

    /// Whether a round of `segments` is counted with a workgroup per
    /// segment (the votes are summed only where that decides it).
    fn counts_wide(&self, segments: &[super::Segment]) -> bool {
        match self.count_route {
            CountRoute::PerInvocation => false,
            CountRoute::PerWorkgroup => true,
            CountRoute::Auto if self.cpu_adapter => false,
            CountRoute::Auto => {
                let votes: usize = segments.iter().map(|s| s.count as usize).sum();
                votes >= segments.len().saturating_mul(WIDE_COUNT_MIN_VOTES)
            }
        }
    }

    /// Per-prompt totals, 32 bytes each: `total, distinct, overflow,
    /// run_answer, run_length, tokens_lo, tokens_hi, pad` as u32 (the fields
    /// of [`PromptVotes`], the tokens as two words).
    pub fn votes_buffer(&self) -> &wgpu::Buffer {
        &self.votes
    }

    /// Tables: `capacity` pairs `(answer, votes)` of u32 per prompt.
    pub fn tables_buffer(&self) -> &wgpu::Buffer {
        &self.tables
    }

    /// Uploads a round's votes and folds them in (one submit, no wait).
    pub fn count(&mut self, round: &RoundVotes<'_>) -> Result<()> {
        let ctx = self.ctx.clone();
        ctx.scoped("vote counting", || {
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            self.encode_count(&mut encoder, round)?;
            ctx.submit(encoder.finish());
            Ok(())
        })
    }

    /// Records the folding of a round's votes into `encoder` (the round's
    /// votes and parameters are written with `Queue::write_buffer` and take
    /// effect at the next submit, so record one count per submit).
    pub fn encode_count(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        round: &RoundVotes<'_>,
    ) -> Result<()> {
        round.validate(self.prompts)?;
        if round.segments.is_empty() {
            return Ok(());
        }
        let ctx = &self.ctx;
        // Each segment names a distinct prompt of `self.prompts` (validated).
        let n = round.segments.len() as u32;
        self.round_segments.write(
            ctx,
            bytemuck::cast_slice(&super::gpu_segments(round.segments)),
        )?;
        self.round_answers
            .write(ctx, bytemuck::cast_slice(round.answers))?;
        self.round_tokens
            .write(ctx, bytemuck::cast_slice(round.tokens.unwrap_or(&[])))?;
        let params = count_params(n, round.tokens.is_some());
        ctx.queue
            .write_buffer(&self.count_params, 0, bytemuck::cast_slice(&params));
        let wide = self.counts_wide(round.segments);
        let (layout, pipeline) = if wide {
            &self.pipelines.count_wide
        } else {
            &self.pipelines.count
        };
        let bind_group = crate::gpu::shader::bind_buffers(
            &ctx.device,
            "rollcall count votes",
            layout,
            &[
                (0, &self.count_params),
                (1, self.round_segments.buffer()),
                (2, self.round_answers.buffer()),
                (3, self.round_tokens.buffer()),
                (4, &self.votes),
                (5, &self.tables),
            ],
        );
        if wide {
            self.dispatch_groups(encoder, pipeline, &bind_group, n);
        } else {
            self.dispatch(encoder, pipeline, &bind_group, n);
        }
        Ok(())
    }

    /// Records the rules over the first `n` prompts of `list`: decisions to
    /// `decisions` (16 bytes per prompt, by prompt index), keep flags (1 =
    /// still active) to `keep` and, when asked, the fewest votes that could
    /// stop each live prompt to `next`, both by list position. `params` holds
    /// the rule's GPU form, then `n` and the ask (1 or 0) (48 bytes, uniform).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_decide(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        params: &wgpu::Buffer,
        list: &wgpu::Buffer,
        n: u32,
        decisions: &wgpu::Buffer,
        keep: &wgpu::Buffer,
        next: &wgpu::Buffer,
    ) {
        if n == 0 {
            return;
        }
        let wide = self.decides_wide();
        let (layout, pipeline) = if wide {
            &self.pipelines.decide_wide
        } else {
            &self.pipelines.decide
        };
        let bind_group = crate::gpu::shader::bind_buffers(
            &self.ctx.device,
            "rollcall decide",
            layout,
            &[
                (10, params),
                (11, list),
                (12, &self.votes),
                (13, &self.tables),
                (14, decisions),
                (15, keep),
                (16, next),
            ],
        );
        if wide {
            self.dispatch_groups(encoder, pipeline, &bind_group, n);
        } else {
            self.dispatch(encoder, pipeline, &bind_group, n);
        }
    }

    /// Records the zeroing of every table (a fresh batch).
    pub fn encode_reset(&self, encoder: &mut wgpu::CommandEncoder) {
        self.resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        encoder.clear_buffer(&self.votes, 0, None);
        encoder.clear_buffer(&self.tables, 0, None);
    }

    /// Records one pass of `pipeline` over `items` invocations
    /// ([`WORKGROUP`] a workgroup, a 2-D grid past the adapter's
    /// per-dimension limit).
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        items: u32,
    ) {
        self.dispatch_groups(encoder, pipeline, bind_group, items.div_ceil(WORKGROUP));
    }

    /// Records one pass of `pipeline` over `groups` workgroups (a 2-D grid
    /// past the adapter's per-dimension limit).
    fn dispatch_groups(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        groups: u32,
    ) {
        let max_x = self
            .ctx
            .limits()
            .max_compute_workgroups_per_dimension
            .max(1);
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(groups.min(max_x), groups.div_ceil(max_x), 1);
    }

    /// Prompts the tables hold.
    pub fn prompts(&self) -> u32 {
        self.prompts
    }

    /// Answers each prompt's table holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The context the tables live on.
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    /// Runs `rule` over the prompts in `list` and reads back, in list order,
    /// their decisions, keep flags (1 = still active) and the fewest more
    /// votes that could stop each live prompt (waits for the GPU).
    pub fn decide(&mut self, rule: &rules::RuleConfig, list: &[u32]) -> Result<DecideReadback> {
        self.decide_asking(rule, list, true)
    }

    /// [`VoteTables::decide`], with or without ConSol's fewest-votes search
    /// (without it `next` comes back empty).
    #[cfg(feature = "internals")]
    pub fn decide_with_fewest(
        &mut self,
        rule: &rules::RuleConfig,
        list: &[u32],
        want_fewest: bool,
    ) -> Result<DecideReadback> {
        self.decide_asking(rule, list, want_fewest)
    }

    /// Records the rule over `list` into `encoder` as [`VoteTables::decide`]
    /// runs it, without the readback (for timing; the list and parameters
    /// are written with `Queue::write_buffer`, so record one per submit).
    #[cfg(feature = "internals")]
    pub fn encode_decide_list(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        rule: &rules::RuleConfig,
        list: &[u32],
        want_fewest: bool,
    ) -> Result<()> {
        let (gpu_rule, n) = self.check_decide(rule, list)?;
        let ctx = self.ctx.clone();
        self.record_host_decide(&ctx, encoder, &gpu_rule, list, n, want_fewest)
    }

    /// The rule's GPU form and the list's length, every check done.
    fn check_decide(
        &self,
        rule: &rules::RuleConfig,
        list: &[u32],
    ) -> Result<(rules::GpuRule, u32)> {
        let gpu_rule = rule.gpu_form()?;
        for &prompt in list {
            check_prompt(prompt, self.prompts)?;
        }
        let n = u32::try_from(list.len()).map_err(|_| Error::BatchCapacity {
            capacity: u32::MAX as usize,
            rows: list.len(),
        })?;
        Ok((gpu_rule, n))
    }

    fn decide_asking(
        &mut self,
        rule: &rules::RuleConfig,
        list: &[u32],
        want_fewest: bool,
    ) -> Result<DecideReadback> {
        let (gpu_rule, n) = self.check_decide(rule, list)?;
        if n == 0 {
            return Ok(DecideReadback::default());
        }
        let ctx = self.ctx.clone();
        ctx.scoped("decide", || {
            self.decide_on(&ctx, &gpu_rule, list, n, want_fewest)
        })
    }

    /// Uploads `list` and the rule's parameters to the host-path buffers and
    /// records the rule over them (outputs in the host-path buffers).
    fn record_host_decide(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        gpu_rule: &rules::GpuRule,
        list: &[u32],
        n: u32,
        want_fewest: bool,
    ) -> Result<()> {
        let dbytes = u64::from(self.prompts) * DECISION_BYTES;
        let lbytes = u64::from(n) * 4;
        let host = &mut self.host;
        let [decisions, keep, next, ..] = &mut host.outputs;
        decisions.reserve(ctx, dbytes)?;
        keep.reserve(ctx, lbytes)?;
        next.reserve(ctx, lbytes)?;
        host.inputs[0].write(ctx, bytemuck::cast_slice(list))?;
        ctx.queue.write_buffer(
            &host.decide_params,
            0,
            &gpu_rule.decide_params(n, want_fewest),
        );
        self.encode_decide(
            encoder,
            &self.host.decide_params,
            self.host.inputs[0].buffer(),
            n,
            self.host.outputs[0].buffer(),
            self.host.outputs[1].buffer(),
            self.host.outputs[2].buffer(),
        );
        Ok(())
    }

    fn decide_on(
        &mut self,
        ctx: &GpuContext,
        gpu_rule: &rules::GpuRule,
        list: &[u32],
        n: u32,
        want_fewest: bool,
    ) -> Result<DecideReadback> {
        let dbytes = u64::from(self.prompts) * DECISION_BYTES;
        let lbytes = u64::from(n) * 4;
        self.host.readback.reserve(ctx, dbytes + 2 * lbytes)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_host_decide(ctx, &mut encoder, gpu_rule, list, n, want_fewest)?;
        let [decisions, keep, next, ..] = &self.host.outputs;
        let readback = self.host.readback.buffer();
        encoder.copy_buffer_to_buffer(decisions.buffer(), 0, readback, 0, dbytes);
        encoder.copy_buffer_to_buffer(keep.buffer(), 0, readback, dbytes, lbytes);
        encoder.copy_buffer_to_buffer(next.buffer(), 0, readback, dbytes + lbytes, lbytes);
        ctx.submit(encoder.finish());
        let data = ctx.read_buffer(readback, dbytes + 2 * lbytes)?;
        let all: &[GpuDecision] = bytemuck::cast_slice(&data[..dbytes as usize]);
        let words: &[u32] = bytemuck::cast_slice(&data[dbytes as usize..]);
        Ok(DecideReadback {
            decisions: list.iter().map(|&p| all[p as usize].into()).collect(),
            keep: words[..n as usize].to_vec(),
            next: if want_fewest {
                words[n as usize..].to_vec()
            } else {
                Vec::new()
            },
        })
    }

    /// Rewards and GRPO advantages on the GPU for rollouts grouped in
    /// `segments`: with `consensus` (one answer id per prompt), TTRL's majority
    /// rewards from `answers`; without, `given` rewards (one per rollout, NaN
    /// refused). Waits for the GPU and returns `(rewards, advantages)`.
    pub fn rewards(
        &mut self,
        segments: &[Segment],
        answers: &[u32],
        consensus: Option<&[u32]>,
        given: Option<&[f32]>,
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        // Exactly one source of rewards; segments in range and disjoint.
        let n = match (consensus, given) {
            (Some(c), None) => {
                if c.len() != self.prompts as usize {
                    return Err(Error::LengthMismatch {
                        what: "consensus answers (one per prompt)",
                        expected: self.prompts as usize,
                        got: c.len(),
                    });
                }
                answers.len()
            }
            (None, Some(g)) => g.len(),
            _ => {
                return Err(Error::InvalidArgument(
                    "rewards need either the consensus answers or given rewards, not both".into(),
                ))
            }
        };
        // The twins' checks, in their order.
        super::rewards::check_eps(eps)?;
        super::rewards::check_segments(segments, n, self.prompts)?;
        super::rewards::check_not_nan(given.unwrap_or(&[]))?;
        if segments.is_empty() || n == 0 {
            // No group: the given rewards (or 0) and no advantage.
            let rewards = given.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
            return Ok((rewards, vec![0.0; n]));
        }
        let ctx = self.ctx.clone();
        ctx.scoped("rewards", || {
            self.rewards_on(&ctx, segments, answers, consensus, given, eps, n)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn rewards_on(
        &mut self,
        ctx: &GpuContext,
        segments: &[Segment],
        answers: &[u32],
        consensus: Option<&[u32]>,
        given: Option<&[f32]>,
        eps: f32,
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let bytes = n as u64 * 4;
        self.host.readback.reserve(ctx, 2 * bytes)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        self.record_rewards(
            ctx,
            &mut encoder,
            segments,
            answers,
            consensus,
            given,
            eps,
            n,
        )?;
        let host = &self.host;
        let readback = host.readback.buffer();
        encoder.copy_buffer_to_buffer(host.outputs[3].buffer(), 0, readback, 0, bytes);
        encoder.copy_buffer_to_buffer(host.outputs[4].buffer(), 0, readback, bytes, bytes);
        ctx.submit(encoder.finish());
        let data = ctx.read_buffer(readback, 2 * bytes)?;
        let all: &[f32] = bytemuck::cast_slice(&data);
        Ok((all[..n].to_vec(), all[n..].to_vec()))
    }

    /// Records [`VoteTables::rewards`]' GPU work into `encoder` without the
    /// readback (for timing): the inputs are checked as there and written
    /// with `Queue::write_buffer`, so record one per submit. The results stay
    /// in the host-path buffers.
    #[cfg(feature = "internals")]
    pub fn encode_rewards(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        segments: &[Segment],
        given: &[f32],
        eps: f32,
    ) -> Result<()> {
        super::rewards::check_eps(eps)?;
        super::rewards::check_segments(segments, given.len(), self.prompts)?;
        super::rewards::check_not_nan(given)?;
        if segments.is_empty() || given.is_empty() {
            return Ok(());
        }
        let ctx = self.ctx.clone();
        self.record_rewards(
            &ctx,
            encoder,
            segments,
            &[],
            None,
            Some(given),
            eps,
            given.len(),
        )
    }

    /// Uploads the segments, answers, consensus and starting rewards and
    /// records the rewards kernel over them (outputs in the host-path
    /// buffers).
    #[allow(clippy::too_many_arguments)]
    fn record_rewards(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        segments: &[Segment],
        answers: &[u32],
        consensus: Option<&[u32]>,
        given: Option<&[f32]>,
        eps: f32,
        n: usize,
    ) -> Result<()> {
        let host = &mut self.host;
        // Each segment names a distinct prompt (validated): at most u32::MAX.
        let params = reward_params(segments.len() as u32, eps, consensus.is_some());
        ctx.queue.write_buffer(&host.reward_params, 0, &params);
        let bytes = n as u64 * 4;
        let [.., rewards, advantages] = &mut host.outputs;
        rewards.reserve(ctx, bytes)?;
        advantages.reserve(ctx, bytes)?;
        let decisions: Vec<GpuDecision> = consensus
            .unwrap_or(&[])
            .iter()
            .map(|&c| GpuDecision {
                consensus: c,
                ..Default::default()
            })
            .collect();
        let start: Vec<f32> = given.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
        let [_, segs, answers_in, consensus_in, rewards_in] = &mut host.inputs;
        segs.write(ctx, bytemuck::cast_slice(&super::gpu_segments(segments)))?;
        answers_in.write(ctx, bytemuck::cast_slice(answers))?;
        consensus_in.write(ctx, bytemuck::cast_slice(&decisions))?;
        rewards_in.write(ctx, bytemuck::cast_slice(&start))?;
        let host = &self.host;
        let wide = self.rewards_wide();
        let (layout, pipeline) = if wide {
            &self.pipelines.rewards_wide
        } else {
            &self.pipelines.rewards
        };
        let bind_group = crate::gpu::shader::bind_buffers(
            &ctx.device,
            "rollcall rewards",
            layout,
            &[
                (20, &host.reward_params),
                (21, host.inputs[1].buffer()),
                (22, host.inputs[2].buffer()),
                (23, host.inputs[3].buffer()),
                (24, host.outputs[3].buffer()),
                (25, host.outputs[4].buffer()),
            ],
        );
        // Rollouts in no segment get advantage 0, not an earlier call's.
        encoder.clear_buffer(host.outputs[4].buffer(), 0, Some(bytes));
        // The kernel adds to the rewards it finds: start from the given ones.
        encoder.copy_buffer_to_buffer(
            host.inputs[4].buffer(),
            0,
            host.outputs[3].buffer(),
            0,
            bytes,
        );
        let groups = segments.len() as u32;
        if wide {
            self.dispatch_groups(encoder, pipeline, &bind_group, groups);
        } else {
            self.dispatch(encoder, pipeline, &bind_group, groups);
        }
        Ok(())
    }

    /// Reads totals and tables back (waits for the GPU).
    pub fn read(&mut self) -> Result<(Vec<PromptVotes>, Vec<[u32; 2]>)> {
        let ctx = self.ctx.clone();
        ctx.scoped("reading vote tables", || self.read_on(&ctx))
    }

    fn read_on(&mut self, ctx: &GpuContext) -> Result<(Vec<PromptVotes>, Vec<[u32; 2]>)> {
        let vbytes = u64::from(self.prompts) * VOTES_BYTES;
        let tbytes = u64::from(self.prompts) * u64::from(self.capacity) * TABLE_ENTRY_BYTES;
        if vbytes == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        self.host.readback.reserve(ctx, vbytes + tbytes)?;
        let readback = self.host.readback.buffer();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.votes, 0, readback, 0, vbytes);
        encoder.copy_buffer_to_buffer(&self.tables, 0, readback, vbytes, tbytes);
        ctx.submit(encoder.finish());
        let data = ctx.read_buffer(readback, vbytes + tbytes)?;
        let votes = bytemuck::cast_slice::<u8, GpuPromptVotes>(&data[..vbytes as usize])
            .iter()
            .map(|&v| PromptVotes::from(v))
            .collect();
        let tables =
            bytemuck::cast_slice(&data[vbytes as usize..(vbytes + tbytes) as usize]).to_vec();
        Ok((votes, tables))
    }
}
