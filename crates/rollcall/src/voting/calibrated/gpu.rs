//! The calibrated rule on the GPU (calibrated.wgsl): the batch prior's EM
//! steps and the decisions run over the vote tables where they live.
//!
//! One model buffer holds, as f32: the batch's weights, each component's
//! ln w, ln(1 − w) and β, the log rising factorials (from the f64 twin) and
//! the race table, which the `races` kernel fills once per scheduler. A
//! round records `steps` EM steps (`expect` over every prompt, each lane
//! summing the posteriors of `LANE_PROMPTS` prompts and each workgroup its
//! lanes'; `maximise` adding those sums in a fixed order) and then
//! `calibrated_decide` over the live list: a round's result does not depend
//! on the adapter's scheduling.
//!
//! A prompt's likelihood under each component changes only with its votes:
//! it is cached (scaled by the largest, with a stamp) once they change, so
//! EM steps multiply cached words by the weights instead of re-reading the
//! tables. Likelihoods and risks are computed once per count state
//! (`evidence_states` and `calibrated_states` fill small tables of them
//! each round; see the shader).

use super::{
    checked_delta, CalibratedModel, CATEGORIES, COMPONENTS, FIRST_EM_STEPS, LATER_EM_STEPS,
    MIN_VOTES,
};
use crate::gpu::buffer::GrowBuffer;
use crate::gpu::shader::{layout_and_pipelines, Binding, ShaderVariant};
use crate::voting::rules::RuleConfig;
use crate::voting::VoteTables;
use crate::{GpuContext, Result};
use std::sync::Arc;

/// Invocations per workgroup (`WG` in voting.wgsl).
const WORKGROUP: u32 = crate::voting::gpu::WORKGROUP;

// `expect` and `maximise` keep one lane's sums a row of workgroup memory
// and add a component a lane.
const _: () = assert!(COMPONENTS as u32 <= WORKGROUP);
// A round refits the weights, and its first `expect` completes the cache
// `evidence_states` begins.
const _: () = assert!(FIRST_EM_STEPS >= 1 && LATER_EM_STEPS >= 1);

/// The kernels' uniform (`CalibratedParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct CalibratedParams {
    pub(crate) prompts: u32,
    pub(crate) groups: u32,
    pub(crate) groups_x: u32,
    pub(crate) listed: u32,
    pub(crate) delta: f32,
    pub(crate) min_votes: u32,
    pub(crate) races: u32,
    pub(crate) cache_split: u32,
    pub(crate) state_slots: u32,
    pub(crate) _pad: [u32; 3],
}

/// Where each part of the model buffer starts (in f32 words), for a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModelLayout {
    pub(crate) budget: u32,
    pub(crate) weights: u32,
    /// Each component's pseudo-count per EM step.
    pub(crate) pseudo_counts: u32,
    pub(crate) ln_share: u32,
    pub(crate) ln_rest_share: u32,
    pub(crate) concentration: u32,
    /// The least risk at two votes, from the batch's agreement (one word,
    /// written by `maximise`).
    pub(crate) two_vote_risk: u32,
    /// ln β^(c) per component and c ≤ budget.
    pub(crate) rest_one: u32,
    /// A choice's log-likelihood term per component, n and c ≤ n.
    pub(crate) choice: u32,
    /// exp(choice − its maximum over c), per component, n and c.
    pub(crate) choice_exp: u32,
    /// The maximum over c, per component and n.
    pub(crate) choice_max: u32,
    pub(crate) races: u32,
    /// Entries of one race block: Σ_{n < budget} (n + 1)².
    pub(crate) race_block: u32,
}

impl ModelLayout {
    pub(crate) fn new(budget: u32) -> Self {
        let c = COMPONENTS as u32;
        let side = budget + 1;
        let rest_one = 5 * c + 1;
        let choice = rest_one + c * side;
        let choice_exp = choice + c * side * side;
        let choice_max = choice_exp + c * side * side;
        Self {
            budget,
            weights: 0,
            pseudo_counts: c,
            ln_share: 2 * c,
            ln_rest_share: 3 * c,
            concentration: 4 * c,
            two_vote_risk: 5 * c,
            rest_one,
            choice,
            choice_exp,
            choice_max,
            races: choice_max + c * side,
            race_block: races_before(budget),
        }
    }

    /// Race-table entries: a block per (side, tie), each entry the
    /// components' values side by side.
    pub(crate) fn race_entries(&self) -> u32 {
        4 * COMPONENTS as u32 * self.race_block
    }

    /// Words of the whole buffer.
    pub(crate) fn words(&self) -> u64 {
        u64::from(self.races) + u64::from(self.race_entries())
    }

    /// The race-table word of an entry (the shader's `race_index`).
    #[cfg(test)]
    pub(crate) fn race_index(
        &self,
        g: u32,
        leader_dominant: bool,
        tie: bool,
        n: u32,
        c_dom: u32,
        c_other: u32,
    ) -> u32 {
        let side = u32::from(!leader_dominant);
        let entry = (side * 2 + u32::from(tie)) * self.race_block
            + races_before(n)
            + c_dom * (n + 1)
            + c_other;
        self.races + entry * COMPONENTS as u32 + g
    }

    /// The constants prepended to the shader.
    fn prelude(&self, capacity: u32) -> String {
        let mut prelude = format!(
            "const CAPACITY: u32 = {capacity}u;\n{}const COMPONENTS: u32 = {COMPONENTS}u;\n\
             const CATEGORIES: u32 = {CATEGORIES}u;\nconst BUDGET: u32 = {}u;\n\
             const MIN_VOTES: u32 = {MIN_VOTES}u;\n",
            crate::voting::rules::rule_kind_prelude(),
            self.budget,
        );
        for (name, offset) in self.offsets() {
            prelude.push_str(&format!("const {name}: u32 = {offset}u;\n"));
        }
        prelude
    }

    /// The parts' offsets (and the race block's size) by their shader names.
    pub(crate) fn offsets(&self) -> [(&'static str, u32); 12] {
        [
            ("WEIGHTS", self.weights),
            ("PSEUDO_COUNTS", self.pseudo_counts),
            ("LN_SHARE", self.ln_share),
            ("LN_REST_SHARE", self.ln_rest_share),
            ("CONCENTRATION", self.concentration),
            ("TWO_VOTE_RISK", self.two_vote_risk),
            ("REST_ONE", self.rest_one),
            ("CHOICE", self.choice),
            ("CHOICE_EXP", self.choice_exp),
            ("CHOICE_MAX", self.choice_max),
            ("RACES", self.races),
            ("RACE_BLOCK", self.race_block),
        ]
    }
}

/// Σ_{k < n} (k + 1)²: race entries before the block of `n` votes so far.
fn races_before(n: u32) -> u32 {
    n * (n + 1) * (2 * n + 1) / 6
}

/// The shader's entry points for `capacity` answers a prompt and `budget`.
pub(crate) fn shader_variants(capacity: u32, budget: u32) -> Result<Vec<ShaderVariant>> {
    let source = crate::gpu::shader::compose(
        "calibrated.wgsl",
        &ModelLayout::new(budget).prelude(capacity),
    )?;
    Ok([
        "races",
        "expect",
        "maximise",
        "calibrated_decide",
        "calibrated_states",
        "evidence_states",
    ]
    .into_iter()
    .map(|entry_point| ShaderVariant {
        label: format!("calibrated/{entry_point}/{capacity}/{budget}"),
        entry_point,
        source: source.clone(),
    })
    .collect())
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CalibratedKey {
    capacity: u32,
    budget: u32,
}

impl crate::gpu::cache::PipelineKey for CalibratedKey {
    type Built = Pipelines;
}

struct Pipelines {
    races: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    expect: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    maximise: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    decide: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    states: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
    evidence_states: (wgpu::BindGroupLayout, wgpu::ComputePipeline),
}

impl Pipelines {
    fn build(ctx: &GpuContext, capacity: u32, budget: u32) -> Result<Self> {
        let variants = shader_variants(capacity, budget)?;
        let (uniform, read, write) = (Binding::Uniform(None), Binding::Read, Binding::ReadWrite);
        let build = |label: &str, bindings: &[(u32, Binding)], variant: &ShaderVariant| {
            let (layout, mut pipelines) =
                layout_and_pipelines(&ctx.device, label, bindings, std::slice::from_ref(variant));
            (layout, pipelines.remove(0))
        };
        Ok(Self {
            races: build(
                "rollcall calibrated races",
                &[(30, uniform), (35, write)],
                &variants[0],
            ),
            expect: build(
                "rollcall calibrated expect",
                &[
                    (30, uniform),
                    (32, read),
                    (34, read),
                    (36, write),
                    (41, write),
                    (42, write),
                    (46, write),
                    (47, write),
                ],
                &variants[1],
            ),
            maximise: build(
                "rollcall calibrated maximise",
                &[(30, uniform), (35, write), (37, read)],
                &variants[2],
            ),
            decide: build(
                "rollcall calibrated decide",
                &[
                    (30, uniform),
                    (31, read),
                    (32, read),
                    (33, read),
                    (34, read),
                    (38, write),
                    (39, write),
                    (44, write),
                    (45, write),
                ],
                &variants[3],
            ),
            states: build(
                "rollcall calibrated states",
                &[
                    (30, uniform),
                    (31, read),
                    (32, read),
                    (33, read),
                    (34, read),
                    (43, write),
                    (44, write),
                    (45, write),
                ],
                &variants[4],
            ),
            evidence_states: build(
                "rollcall calibrated evidence states",
                &[
                    (30, uniform),
                    (32, read),
                    (33, read),
                    (34, read),
                    (41, write),
                    (42, write),
                    (43, write),
                    (46, write),
                    (47, write),
                ],
                &variants[5],
            ),
        })
    }
}

/// The calibrated rule's GPU state for one batch of `prompts` prompts: the
/// model buffer (weights refitted each round) and the workgroups' sums.
pub(crate) struct CalibratedGpu {
    ctx: GpuContext,
    built: Arc<Pipelines>,
    layout: ModelLayout,
    delta: f32,
    min_votes: u32,
    prompts: u32,
    capacity: u32,
    params: wgpu::Buffer,
    model: wgpu::Buffer,
    group_sums: wgpu::Buffer,
    /// Prompts whose evidence is cached in `evidence[0]`; the rest in
    /// `evidence[1]`.
    cache_split: u32,
    evidence: [wgpu::Buffer; 2],
    /// Slots of each state table in use (`STATE_SLOTS`; fewer in tests).
    state_slots: u32,
    /// Each slot's first prompt + 1 (cleared each round; the risk table's
    /// slots, then the likelihood table's), a risk state's risk (then one a
    /// position, for prompts whose state found no slot), each live prompt's
    /// index into it by position, a multiset's likelihoods and each
    /// prompt's likelihood slot. The per-position ones grow with the list.
    state_owner: wgpu::Buffer,
    state_risk: GrowBuffer,
    state_of: GrowBuffer,
    state_likelihoods: wgpu::Buffer,
    likelihood_state_of: wgpu::Buffer,
}

/// Slots of each state table: a live prompt's risk is computed once per
/// count state (a few hundred in a batch at 30 votes), and the likelihoods
/// of prompts whose votes changed once per multiset of counts, by the
/// state's first prompt. A prompt whose state finds no slot computes its
/// own.
pub(crate) const STATE_SLOTS: u32 = 4096;
const _: () = assert!(STATE_SLOTS.is_power_of_two());

/// Words of a prompt's cached evidence: 52 likelihoods (scaled by the
/// largest), a stamp and its pairwise agreement (`CACHE_WORDS` in the
/// shader).
pub(crate) const CACHE_WORDS: u64 = COMPONENTS as u64 + 2;

/// Words of a workgroup's sums: the posteriors, the agreements and their
/// count (`SUM_WORDS` in the shader).
pub(crate) const SUM_WORDS: u64 = COMPONENTS as u64 + 2;

/// Prompts an `expect` lane adds before its workgroup adds the lanes
/// (`LANE_PROMPTS` in the shader).
pub(crate) const LANE_PROMPTS: u32 = 16;

/// `expect`'s workgroups (each writes one sum) for `prompts` prompts.
fn expect_groups(prompts: u32) -> u32 {
    prompts.div_ceil(WORKGROUP * LANE_PROMPTS)
}

impl CalibratedGpu {
    /// Checks `config` as the twin does, uploads the model and records the
    /// race table's construction (submitted here, not waited on).
    pub(crate) fn new(
        ctx: &GpuContext,
        prompts: u32,
        capacity: u32,
        config: &RuleConfig,
    ) -> Result<Self> {
        let delta = checked_delta(config)?;
        let budget = config.max_votes;
        let layout = ModelLayout::new(budget);
        let built = ctx.pipelines(&CalibratedKey { capacity, budget }, || {
            Pipelines::build(ctx, capacity, budget)
        })?;
        use wgpu::BufferUsages as U;
        let model = ctx.create_bound_buffer(
            "rollcall calibrated model",
            layout.words() * 4,
            U::STORAGE | U::COPY_DST | U::COPY_SRC,
        )?;
        let groups = expect_groups(prompts);
        let group_sums = ctx.create_bound_buffer(
            "rollcall calibrated workgroup sums",
            u64::from(groups.max(1)) * SUM_WORDS * 4,
            U::STORAGE,
        )?;
        // The evidence cache over two bindings, each within the limit.
        let per_binding = ctx.limits().max_storage_buffer_binding_size / (CACHE_WORDS * 4);
        let cache_split = u64::from(prompts).min(per_binding) as u32;
        let evidence = [
            ctx.create_bound_buffer(
                "rollcall calibrated evidence",
                u64::from(cache_split.max(1)) * CACHE_WORDS * 4,
                U::STORAGE | U::COPY_DST,
            )?,
            ctx.create_bound_buffer(
                "rollcall calibrated evidence, past the first binding",
                u64::from((prompts - cache_split).max(1)) * CACHE_WORDS * 4,
                U::STORAGE | U::COPY_DST,
            )?,
        ];
        let state_buffer =
            |label, words: u64| ctx.create_bound_buffer(label, words * 4, U::STORAGE | U::COPY_DST);
        let state_owner = state_buffer(
            "rollcall calibrated state owners",
            2 * u64::from(STATE_SLOTS),
        )?;
        let state_likelihoods = state_buffer(
            "rollcall calibrated state likelihoods",
            u64::from(STATE_SLOTS) * COMPONENTS as u64,
        )?;
        let likelihood_state_of = state_buffer(
            "rollcall calibrated likelihood states of the prompts",
            u64::from(prompts.max(1)),
        )?;
        let positions = u64::from(prompts.max(1));
        let state_risk = GrowBuffer::with_size(
            ctx,
            "rollcall calibrated state risks",
            U::STORAGE,
            (u64::from(STATE_SLOTS) + positions) * 4,
        )?;
        let state_of = GrowBuffer::with_size(
            ctx,
            "rollcall calibrated states of the live prompts",
            U::STORAGE,
            positions * 4,
        )?;
        let params = ctx.create_buffer(
            "rollcall calibrated params",
            std::mem::size_of::<CalibratedParams>() as u64,
            U::UNIFORM | U::COPY_DST,
        )?;
        let this = Self {
            ctx: ctx.clone(),
            built,
            layout,
            delta,
            min_votes: config.min_votes,
            prompts,
            capacity,
            params,
            model,
            group_sums,
            cache_split,
            evidence,
            state_slots: STATE_SLOTS,
            state_owner,
            state_risk,
            state_of,
            state_likelihoods,
            likelihood_state_of,
        };
        ctx.queue
            .write_buffer(&this.model, 0, bytemuck::cast_slice(&this.constants()));
        this.write_params(0);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let (layout, pipeline) = &this.built.races;
        let group = crate::gpu::shader::bind_buffers(
            &ctx.device,
            "rollcall calibrated races",
            layout,
            &[(30, &this.params), (35, &this.model)],
        );
        this.dispatch(
            &mut encoder,
            pipeline,
            &group,
            this.layout.race_entries().div_ceil(WORKGROUP),
        );
        ctx.submit(encoder.finish());
        Ok(this)
    }

    /// The model buffer up to the race table: the starting weights, the
    /// pseudo-counts, the per-component constants, the
    /// two-vote bound, then the choice tables from the twin's f64 values.
    fn constants(&self) -> Vec<f32> {
        let twin = CalibratedModel::new(self.layout.budget);
        let side = self.layout.budget as usize + 1;
        let components = || (0..COMPONENTS).map(super::component);
        let mut words = self.constants_head();
        words.extend(super::pseudo_counts().iter().map(|&p| p as f32));
        words.extend(components().map(|(w, _)| w.ln() as f32));
        words.extend(components().map(|(w, _)| (1.0 - w).ln() as f32));
        words.extend(components().map(|(_, beta)| beta as f32));
        // The two-vote bound before any fit: no stop at two votes.
        words.push(1.0);
        words.extend(twin.rest_one.iter().map(|&v| v as f32));
        // choice(g, n, c) for c ≤ n (0 past n: never read), its maximum
        // over c and exp(choice − maximum), in f64 before rounding.
        let mut choice = vec![0.0f64; COMPONENTS * side * side];
        let mut maximum = vec![f64::NEG_INFINITY; COMPONENTS * side];
        for g in 0..COMPONENTS {
            let (w, _) = super::component(g);
            for n in 0..side {
                for c in 0..=n {
                    let v = c as f64 * w.ln() + (n - c) as f64 * (1.0 - w).ln()
                        - twin.rest_one[g * side + c]
                        - twin.rest_all[g * side + n - c];
                    choice[(g * side + n) * side + c] = v;
                    maximum[g * side + n] = maximum[g * side + n].max(v);
                }
            }
        }
        words.extend(choice.iter().map(|&v| v as f32));
        words.extend((0..choice.len()).map(|i| {
            let (gn, c) = (i / side, i % side);
            if c > gn % side {
                0.0
            } else {
                (choice[i] - maximum[gn]).exp() as f32
            }
        }));
        words.extend(maximum.iter().map(|&v| v as f32));
        debug_assert_eq!(words.len() as u32, self.layout.races);
        words
    }

    /// The starting weights (the hyperprior, as the twin's
    /// `BatchPrior::default`): the first words of the model.
    fn constants_head(&self) -> Vec<f32> {
        let start = super::BatchPrior::default();
        start.weights().iter().map(|&w| w as f32).collect()
    }

    /// The uniform for a round over `listed` live prompts.
    fn write_params(&self, listed: u32) {
        let groups = expect_groups(self.prompts);
        let params = CalibratedParams {
            prompts: self.prompts,
            groups,
            groups_x: self.grid_width(),
            listed,
            delta: self.delta,
            min_votes: self.min_votes,
            races: self.layout.race_entries(),
            cache_split: self.cache_split,
            state_slots: self.state_slots,
            _pad: [0; 3],
        };
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
    }

    fn grid_width(&self) -> u32 {
        self.ctx
            .limits()
            .max_compute_workgroups_per_dimension
            .max(1)
    }

    /// Records a pass of `groups` workgroups (a 2-D grid past the limit).
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        groups: u32,
    ) {
        if groups == 0 {
            return;
        }
        let max_x = self.grid_width();
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(groups.min(max_x), groups.div_ceil(max_x), 1);
    }

    /// Makes room for a live list of `listed` positions (the scheduler's
    /// lists are never longer than the batch; [`CalibratedRoundsGpu`]'s may
    /// repeat prompts).
    pub(crate) fn reserve_list(&mut self, listed: u32) -> Result<()> {
        let positions = u64::from(listed.max(1));
        self.state_of.reserve(&self.ctx, positions * 4)?;
        self.state_risk
            .reserve(&self.ctx, (u64::from(STATE_SLOTS) + positions) * 4)?;
        Ok(())
    }

    /// Records one round: `first` restarts the weights from the hyperprior and
    /// runs the first round's EM steps (else the later rounds'), then the
    /// decisions of the `listed` prompts of `list` into `decisions` (by
    /// prompt), `keep` and `next` (by position). The uniform and, on a
    /// first round, the weights are written with `queue.write_buffer`:
    /// record one round per submit. A list longer than the batch needs
    /// [`Self::reserve_list`] first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_round(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        tables: &VoteTables,
        list: &wgpu::Buffer,
        listed: u32,
        first: bool,
        decisions: &wgpu::Buffer,
        keep: &wgpu::Buffer,
        next: &wgpu::Buffer,
    ) {
        debug_assert!(
            u64::from(listed) * 4 <= self.state_of.buffer().size()
                && (u64::from(STATE_SLOTS) + u64::from(listed)) * 4
                    <= self.state_risk.buffer().size(),
            "a list longer than the batch needs reserve_list"
        );
        self.write_params(listed);
        if first {
            let uniform = &self.constants_head();
            self.ctx
                .queue
                .write_buffer(&self.model, 0, bytemuck::cast_slice(uniform));
        }
        let device = &self.ctx.device;
        let bind = crate::gpu::shader::bind_buffers;
        let expect = bind(
            device,
            "rollcall calibrated expect",
            &self.built.expect.0,
            &[
                (30, &self.params),
                (32, tables.votes_buffer()),
                (34, &self.model),
                (36, &self.group_sums),
                (41, &self.evidence[0]),
                (42, &self.evidence[1]),
                (46, &self.state_likelihoods),
                (47, &self.likelihood_state_of),
            ],
        );
        let evidence_states = bind(
            device,
            "rollcall calibrated evidence states",
            &self.built.evidence_states.0,
            &[
                (30, &self.params),
                (32, tables.votes_buffer()),
                (33, tables.tables_buffer()),
                (34, &self.model),
                (41, &self.evidence[0]),
                (42, &self.evidence[1]),
                (43, &self.state_owner),
                (46, &self.state_likelihoods),
                (47, &self.likelihood_state_of),
            ],
        );
        let maximise = bind(
            device,
            "rollcall calibrated maximise",
            &self.built.maximise.0,
            &[
                (30, &self.params),
                (35, &self.model),
                (37, &self.group_sums),
            ],
        );
        let steps = if first {
            FIRST_EM_STEPS
        } else {
            LATER_EM_STEPS
        };
        // The state tables start empty each round; prompts whose votes
        // changed find their likelihoods before the first `expect`.
        encoder.clear_buffer(&self.state_owner, 0, None);
        self.dispatch(
            encoder,
            &self.built.evidence_states.1,
            &evidence_states,
            self.prompts.div_ceil(WORKGROUP),
        );
        for _ in 0..steps {
            self.dispatch(
                encoder,
                &self.built.expect.1,
                &expect,
                expect_groups(self.prompts),
            );
            self.dispatch(encoder, &self.built.maximise.1, &maximise, 1);
        }
        if listed == 0 {
            return;
        }
        let states = bind(
            device,
            "rollcall calibrated states",
            &self.built.states.0,
            &[
                (30, &self.params),
                (31, list),
                (32, tables.votes_buffer()),
                (33, tables.tables_buffer()),
                (34, &self.model),
                (43, &self.state_owner),
                (44, self.state_risk.buffer()),
                (45, self.state_of.buffer()),
            ],
        );
        self.dispatch(
            encoder,
            &self.built.states.1,
            &states,
            listed.div_ceil(WORKGROUP),
        );
        let decide = bind(
            device,
            "rollcall calibrated decide",
            &self.built.decide.0,
            &[
                (30, &self.params),
                (31, list),
                (32, tables.votes_buffer()),
                (33, tables.tables_buffer()),
                (34, &self.model),
                (38, decisions),
                (39, keep),
                (44, self.state_risk.buffer()),
                (45, self.state_of.buffer()),
            ],
        );
        self.dispatch(
            encoder,
            &self.built.decide.1,
            &decide,
            listed.div_ceil(WORKGROUP),
        );
        // A live prompt gets one more rollout: its next equals its keep flag.
        encoder.copy_buffer_to_buffer(keep, 0, next, 0, u64::from(listed) * 4);
    }

    /// Records the clearing of the evidence cache: tables were cleared (a
    /// new batch), so stamps no longer name the counts they were taken at.
    pub(crate) fn encode_clear_cache(&self, encoder: &mut wgpu::CommandEncoder) {
        for buffer in &self.evidence {
            encoder.clear_buffer(buffer, 0, None);
        }
    }

    /// Copies the weights into `out` (for reading back).
    pub(crate) fn encode_copy_weights(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        out: &wgpu::Buffer,
    ) {
        encoder.copy_buffer_to_buffer(&self.model, 0, out, 0, COMPONENTS as u64 * 4);
    }

    /// The batch's weights as last refitted, read back.
    #[cfg(feature = "internals")]
    pub(crate) fn read_weights(&self) -> Result<Vec<f32>> {
        self.read_words(COMPONENTS as u64)
    }

    /// The whole model buffer (weights, constants, race table), read back.
    #[cfg(test)]
    pub(crate) fn read_model(&self) -> Result<Vec<f32>> {
        self.read_words(self.layout.words())
    }

    /// The model buffer's first `words` words, read back.
    #[cfg(any(test, feature = "internals"))]
    fn read_words(&self, words: u64) -> Result<Vec<f32>> {
        let bytes = words * 4;
        let out = self.ctx.create_buffer(
            "rollcall calibrated model readback",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.model, 0, &out, 0, bytes);
        self.ctx.submit(encoder.finish());
        let data = self.ctx.read_buffer(&out, bytes)?;
        Ok(bytemuck::cast_slice(&data).to_vec())
    }

    /// Where the model's parts sit.
    #[cfg(test)]
    pub(crate) fn layout(&self) -> ModelLayout {
        self.layout
    }
}

/// The calibrated rule's rounds on the GPU over [`VoteTables`] the caller
/// counts into (the [`crate::voting::Scheduler`] runs the same kernels in its
/// rounds); the twin is [`super::CalibratedRounds`]. Each call is one submit
/// and one readback. Its weights carry over from call to call; the evidence
/// it caches by each prompt's vote total is dropped when a call is given
/// other tables, or tables reset (by [`VoteTables::encode_reset`]) since the
/// last call: tables cleared any other way need a new `CalibratedRoundsGpu`.
///
/// ```no_run
/// use rollcall::voting::calibrated::CalibratedRoundsGpu;
/// use rollcall::voting::{RoundVotes, RuleConfig, Segment, StopRule, VoteTables};
/// let ctx = rollcall::GpuContext::new()?;
/// let config = RuleConfig { rule: StopRule::Calibrated { delta: 0.01 }, min_votes: 2, max_votes: 40 };
/// let mut tables = VoteTables::new(&ctx, 2, 16)?;
/// let mut rounds = CalibratedRoundsGpu::new(&tables, &config)?;
/// let segments = [Segment { prompt: 0, start: 0, count: 2 }, Segment { prompt: 1, start: 2, count: 2 }];
/// tables.count(&RoundVotes { segments: &segments, answers: &[7, 7, 1, 2], tokens: None })?;
/// let (decisions, _weights) = rounds.decide_round(&tables, &[0, 1])?;
/// assert_eq!(decisions[0].consensus, 7);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct CalibratedRoundsGpu {
    gpu: CalibratedGpu,
    rounds: u32,
    list: crate::gpu::buffer::GrowBuffer,
    decisions: wgpu::Buffer,
    flags: [crate::gpu::buffer::GrowBuffer; 2],
    readback: crate::gpu::buffer::GrowBuffer,
    /// The generation of the tables the cache was taken from.
    cached_from: Option<(u64, u64)>,
}

impl CalibratedRoundsGpu {
    /// For the prompts of `tables` and a `StopRule::Calibrated` config
    /// (errors as [`super::CalibratedRounds::new`]).
    pub fn new(tables: &VoteTables, config: &RuleConfig) -> Result<Self> {
        use crate::gpu::buffer::GrowBuffer;
        use wgpu::BufferUsages as U;
        let ctx = tables.ctx();
        let grow = |label| GrowBuffer::new(ctx, label, U::STORAGE | U::COPY_DST | U::COPY_SRC);
        Ok(Self {
            gpu: CalibratedGpu::new(ctx, tables.prompts(), tables.capacity(), config)?,
            rounds: 0,
            list: grow("rollcall calibrated list")?,
            decisions: ctx.create_bound_buffer(
                "rollcall calibrated decisions",
                u64::from(tables.prompts().max(1)) * crate::voting::gpu::DECISION_BYTES,
                U::STORAGE | U::COPY_SRC,
            )?,
            flags: [
                grow("rollcall calibrated keep")?,
                grow("rollcall calibrated next")?,
            ],
            readback: GrowBuffer::new(
                ctx,
                "rollcall calibrated readback",
                U::MAP_READ | U::COPY_DST,
            )?,
            cached_from: None,
        })
    }

    /// Refits the weights on every prompt of `tables` (the first call from
    /// uniform weights, 50 EM steps; later calls 5) and decides the `live`
    /// prompts, as the twin's `decide_round`: the decisions in `live`'s
    /// order and the weights after the round. `tables` must have as many
    /// prompts of the same capacity as those given to [`Self::new`]; a
    /// prompt out of range is [`crate::Error::PromptOutOfRange`].
    pub fn decide_round(
        &mut self,
        tables: &VoteTables,
        live: &[u32],
    ) -> Result<(Vec<crate::voting::PromptDecision>, Vec<f32>)> {
        if (tables.prompts(), tables.capacity()) != (self.gpu.prompts, self.gpu.capacity) {
            return Err(crate::Error::InvalidArgument(format!(
                "the calibrated rounds were made for {} prompts of capacity {}, got tables of {} and {}",
                self.gpu.prompts,
                self.gpu.capacity,
                tables.prompts(),
                tables.capacity()
            )));
        }
        for &p in live {
            crate::voting::check_prompt(p, tables.prompts())?;
        }
        let ctx = tables.ctx().clone();
        ctx.scoped("calibrated round", || {
            let n = live.len() as u32;
            let words = u64::from(n.max(1)) * 4;
            self.list.write(&ctx, bytemuck::cast_slice(live))?;
            self.flags[0].reserve(&ctx, words)?;
            self.flags[1].reserve(&ctx, words)?;
            self.gpu.reserve_list(n)?;
            let decision_bytes = u64::from(tables.prompts()) * crate::voting::gpu::DECISION_BYTES;
            let weight_bytes = COMPONENTS as u64 * 4;
            self.readback.reserve(&ctx, weight_bytes + decision_bytes)?;
            let (list, keep, next) = (
                self.list.buffer(),
                self.flags[0].buffer(),
                self.flags[1].buffer(),
            );
            let readback = self.readback.buffer();
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            // A prompt's cached evidence is keyed by its vote total: only
            // valid for the tables (and batch) it was taken from.
            let generation = tables.generation();
            if self.cached_from != Some(generation) {
                self.gpu.encode_clear_cache(&mut encoder);
                self.cached_from = Some(generation);
            }
            self.gpu.encode_round(
                &mut encoder,
                tables,
                list,
                n,
                self.rounds == 0,
                &self.decisions,
                keep,
                next,
            );
            self.gpu.encode_copy_weights(&mut encoder, readback);
            if decision_bytes > 0 {
                encoder.copy_buffer_to_buffer(
                    &self.decisions,
                    0,
                    readback,
                    weight_bytes,
                    decision_bytes,
                );
            }
            ctx.submit(encoder.finish());
            self.rounds += 1;
            let data = ctx.read_buffer(readback, weight_bytes + decision_bytes)?;
            let weights: Vec<f32> = bytemuck::cast_slice(&data[..weight_bytes as usize]).to_vec();
            let all: &[crate::voting::GpuDecision] =
                bytemuck::cast_slice(&data[weight_bytes as usize..]);
            let decisions = live.iter().map(|&p| all[p as usize].into()).collect();
            Ok((decisions, weights))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voting::rules::StopRule;
    use rand::{Rng, SeedableRng};

    fn config(budget: u32) -> RuleConfig {
        RuleConfig {
            rule: StopRule::Calibrated { delta: 0.01 },
            min_votes: 1,
            max_votes: budget,
        }
    }

    /// The GPU's constants and race table against the f64 twin: every
    /// entry at small budgets, a seeded sample at 40.
    #[test]
    fn the_model_buffer_matches_the_twin() {
        let Some(ctx) = GpuContext::for_tests() else {
            return;
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for budget in [1, 2, 7, 40] {
            let gpu = CalibratedGpu::new(&ctx, 5, 16, &config(budget)).unwrap();
            let model = gpu.read_model().unwrap();
            let layout = gpu.layout();
            assert_eq!(model.len() as u64, layout.words());
            assert_eq!(model[..layout.races as usize], gpu.constants()[..]);
            let mut twin = CalibratedModel::new(budget);
            let mut entries = Vec::new();
            for g in 0..COMPONENTS as u32 {
                for leader_dominant in [true, false] {
                    for tie in [false, true] {
                        for n in 0..budget {
                            for c_dom in 0..=n {
                                for c_other in 0..=n {
                                    entries.push((g, leader_dominant, tie, n, c_dom, c_other));
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(entries.len() as u32, layout.race_entries());
            let every = budget <= 7;
            let mut checked = 0;
            for &(g, leader_dominant, tie, n, c_dom, c_other) in &entries {
                if !every && rng.random::<f32>() > 0.004 {
                    continue;
                }
                let at = layout.race_index(g, leader_dominant, tie, n, c_dom, c_other);
                let got = model[at as usize];
                if c_dom + c_other > n {
                    assert_eq!(got, 0.0, "unused entry {at}");
                    continue;
                }
                let want = twin.race_entry(g as usize, leader_dominant, tie, n, c_dom, c_other);
                assert!(
                    (f64::from(got) - want).abs() <= 2e-5 + 1e-4 * want,
                    "budget {budget}, g {g}, leader dominant {leader_dominant}, tie {tie}, \
                     n {n}, {c_dom} v {c_other}: GPU {got}, twin {want}"
                );
                checked += 1;
            }
            assert!(
                checked >= if every { 200 } else { 5000 },
                "{checked} entries checked at budget {budget}"
            );
        }
    }

    /// A prompt's count state as the shader keys it: the counts before its
    /// leader (first seen) sorted descending, the leader's, those after
    /// sorted descending.
    fn state_of(votes: &[u32]) -> Vec<u32> {
        let mut counts: Vec<(u32, u32)> = Vec::new();
        for &v in votes {
            match counts.iter_mut().find(|(a, _)| *a == v) {
                Some((_, c)) => *c += 1,
                None => counts.push((v, 1)),
            }
        }
        let mut c: Vec<u32> = counts.iter().map(|&(_, c)| c).collect();
        let top = c.iter().copied().max().unwrap_or(0);
        let leader = c.iter().position(|&x| x == top).unwrap_or(0);
        c[..leader].sort_by(|a, b| b.cmp(a));
        if leader < c.len() {
            c[leader + 1..].sort_by(|a, b| b.cmp(a));
        }
        c
    }

    /// Risks and likelihoods read from the state tables equal, to the bit,
    /// those computed by the prompts themselves when the tables have one or
    /// two slots (most states find none): a state's values do not depend
    /// on which prompt, with its counts in which slots, computes them.
    /// Prompts of one state get the same bits. (That the key is fine
    /// enough, e.g. keeps which side of the leader a tie is on, is the twin
    /// equivalence tests' job: tests/voting_calibrated_gpu.rs.)
    #[test]
    fn state_risks_do_not_depend_on_the_prompt_computing_them() {
        use crate::voting::{RoundVotes, Segment};
        let Some(ctx) = GpuContext::for_tests() else {
            return;
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let prompts = 1500u32;
        let budget = 40;
        let mut config = config(budget);
        config.min_votes = 2;
        let mut runs = Vec::new();
        let mut all_votes = vec![Vec::new(); prompts as usize];
        // The same rounds of votes into three table sizes.
        let rounds: Vec<Vec<Vec<u32>>> = (0..4)
            .map(|_| {
                (0..prompts)
                    .map(|p| {
                        // Few answers: states repeat, in permuted slot orders.
                        let spread = 1 + p % 4;
                        (0..rng.random_range(1..=5))
                            .map(|_| rng.random_range(0..spread))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        for slots in [STATE_SLOTS, 1, 2] {
            let mut tables = VoteTables::new(&ctx, prompts, 16).unwrap();
            let mut rounds_gpu = CalibratedRoundsGpu::new(&tables, &config).unwrap();
            rounds_gpu.gpu.state_slots = slots;
            let mut decided = Vec::new();
            for round in &rounds {
                let mut segments = Vec::new();
                let mut answers = Vec::new();
                for (p, votes) in round.iter().enumerate() {
                    segments.push(Segment {
                        prompt: p as u32,
                        start: answers.len() as u32,
                        count: votes.len() as u32,
                    });
                    answers.extend(votes);
                    if slots == STATE_SLOTS {
                        all_votes[p].extend(votes);
                    }
                }
                tables
                    .count(&RoundVotes {
                        segments: &segments,
                        answers: &answers,
                        tokens: None,
                    })
                    .unwrap();
                let live: Vec<u32> = (0..prompts).rev().collect();
                let (decisions, weights) = rounds_gpu.decide_round(&tables, &live).unwrap();
                decided.push((decisions, weights));
                if slots == STATE_SLOTS {
                    // Prompts of one state (below the budget) share the bits.
                    let mut by_state = std::collections::HashMap::new();
                    for (d, &p) in decided.last().unwrap().0.iter().zip(&live) {
                        let state = state_of(&all_votes[p as usize]);
                        let bits = d.confidence.to_bits();
                        assert_eq!(
                            *by_state.entry(state.clone()).or_insert(bits),
                            bits,
                            "prompt {p}, state {state:?}"
                        );
                    }
                    assert!(
                        by_state.len() > 20 && by_state.len() < prompts as usize / 2,
                        "{} states",
                        by_state.len()
                    );
                }
            }
            runs.push(decided);
        }
        for run in &runs[1..] {
            for (round, ((a, wa), (b, wb))) in runs[0].iter().zip(run).enumerate() {
                let bits = |w: &[f32]| w.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(wa), bits(wb), "round {round}: weights");
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    assert_eq!(
                        (a.stopped, a.consensus, a.votes, a.confidence.to_bits()),
                        (b.stopped, b.consensus, b.votes, b.confidence.to_bits()),
                        "round {round}, position {i}"
                    );
                }
            }
        }
        let stops = runs[0]
            .last()
            .unwrap()
            .0
            .iter()
            .filter(|d| d.stopped)
            .count();
        assert!(stops > 100, "{stops} stops");
    }

    /// A repeated live list longer than the batch, with a one-slot risk
    /// table (most risks stored past the table, at their positions): each
    /// position decides as its prompt does in a list of the batch with
    /// the full table, to the bit.
    #[test]
    fn fallback_risks_past_the_batch_are_kept_by_position() {
        use crate::voting::{RoundVotes, Segment};
        let Some(ctx) = GpuContext::for_tests() else {
            return;
        };
        let prompts = 30u32;
        let mut segments = Vec::new();
        let mut answers = Vec::new();
        for p in 0..prompts {
            // Unanimous to split, 2 to 12 votes: many states.
            let votes: Vec<u32> = (0..2 + p % 11)
                .map(|i| {
                    if p % 5 == 0 {
                        3
                    } else {
                        (i * (1 + p % 4) + p) % (2 + p % 3)
                    }
                })
                .collect();
            segments.push(Segment {
                prompt: p,
                start: answers.len() as u32,
                count: votes.len() as u32,
            });
            answers.extend(votes);
        }
        let run = |slots: u32, live: &[u32]| {
            let mut tables = VoteTables::new(&ctx, prompts, 16).unwrap();
            tables
                .count(&RoundVotes {
                    segments: &segments,
                    answers: &answers,
                    tokens: None,
                })
                .unwrap();
            let mut rounds = CalibratedRoundsGpu::new(&tables, &config(40)).unwrap();
            rounds.gpu.state_slots = slots;
            rounds.decide_round(&tables, live).unwrap().0
        };
        let short: Vec<u32> = (0..prompts).collect();
        let long: Vec<u32> = (0..7 * prompts).map(|i| (i * 13 + 5) % prompts).collect();
        let want = run(STATE_SLOTS, &short);
        let got = run(1, &long);
        assert_eq!(got.len(), long.len());
        for (i, (d, &p)) in got.iter().zip(&long).enumerate() {
            let w = &want[p as usize];
            assert_eq!(
                (d.stopped, d.consensus, d.votes, d.confidence.to_bits()),
                (w.stopped, w.consensus, w.votes, w.confidence.to_bits()),
                "position {i}, prompt {p}"
            );
        }
        let stops = want.iter().filter(|d| d.stopped).count();
        assert!(stops > 0 && stops < want.len(), "{stops} stops");
    }
}
