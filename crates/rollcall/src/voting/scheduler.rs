//! The round scheduler: which prompts get how many more rollouts, the engine
//! generates them, and counting, the stopping rule and compaction run on the
//! GPU. Per round: one submit and one small readback (the compacted list of
//! live prompts and its length). Memory is proportional to the prompts and
//! the rollouts in flight.

use super::calibrated::CalibratedGpu;
use super::gpu::DECISION_BYTES;
use super::rules::{DecideParams, GpuRule, RuleConfig, StopRule};
use super::{GpuDecision, RoundVotes, Segment, VoteTables};
use crate::compact::{CompactScratch, Compactor};
use crate::{Error, GpuContext, Result};

/// One generated rollout: its answer id (hashed by the engine) and the tokens
/// it spent.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// Answer id.
    pub answer: u32,
    /// Tokens spent.
    pub tokens: u32,
}

/// What an engine implements: generate `counts[i]` more rollouts for prompt
/// `prompts[i]`, returned concatenated in request order.
pub trait RolloutEngine {
    /// Generates the round's rollouts.
    fn generate(&mut self, prompts: &[u32], counts: &[u32]) -> Result<Vec<Rollout>>;
}

/// How many rollouts a live prompt gets next.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// A fixed number per round (the first round gives at least the rule's
    /// minimum).
    Chunk(u32),
    /// ConSol's: the fewest more rollouts that would stop the prompt if they
    /// all agreed with its leader (computed on the GPU by the rule itself),
    /// capped by the budget; the first round gives `first` (at least the
    /// rule's minimum).
    FewestToPass {
        /// Rollouts in the first round.
        first: u32,
    },
}

impl Allocation {
    fn first(self) -> u32 {
        match self {
            Allocation::Chunk(c) => c,
            Allocation::FewestToPass { first } => first,
        }
    }
}

/// A prompt's outcome.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PromptOutcome {
    /// The consensus answer id (`u32::MAX` if the prompt got no votes).
    pub consensus: u32,
    /// The rule's confidence.
    pub confidence: f32,
    /// Rollouts used.
    pub rollouts: u32,
    /// Round in which it stopped (1-based).
    pub stopped_in_round: u32,
}

/// Everything a run produced.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Per prompt.
    pub prompts: Vec<PromptOutcome>,
    /// Per rollout, grouped by prompt in generation order.
    pub rollouts: Vec<(u32, Rollout)>,
    /// TTRL reward per rollout (same order).
    pub rewards: Vec<f32>,
    /// GRPO advantage per rollout (same order).
    pub advantages: Vec<f32>,
    /// Rounds run.
    pub rounds: u32,
}

/// The scheduler for one batch of prompts.
///
/// ```no_run
/// use rollcall::voting::{RuleConfig, StopRule};
/// use rollcall::voting::{Allocation, Rollout, RolloutEngine, Scheduler};
/// struct Echo;
/// impl RolloutEngine for Echo {
///     fn generate(&mut self, prompts: &[u32], counts: &[u32]) -> rollcall::Result<Vec<Rollout>> {
///         Ok(prompts.iter().zip(counts).flat_map(|(&p, &c)| (0..c).map(move |_| Rollout { answer: p % 3, tokens: 10 })).collect())
///     }
/// }
/// let ctx = rollcall::GpuContext::new()?;
/// let config = RuleConfig { rule: StopRule::CONSOL_SPRT, min_votes: 1, max_votes: 40 };
/// let mut scheduler = Scheduler::new(&ctx, 100, 16, config, Allocation::Chunk(1))?;
/// let outcome = scheduler.run(&mut Echo)?;
/// assert!(outcome.prompts.iter().all(|p| p.rollouts == 3));
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct Scheduler {
    ctx: GpuContext,
    tables: VoteTables,
    compactor: Compactor,
    scratch: CompactScratch,
    rule: SchedulerRule,
    config: RuleConfig,
    allocation: Allocation,
    prompts: u32,
    params: wgpu::Buffer,
    list: wgpu::Buffer,
    decisions: wgpu::Buffer,
    keep: wgpu::Buffer,
    next: wgpu::Buffer,
    compacted_next: wgpu::Buffer,
    compacted: wgpu::Buffer,
    count: wgpu::Buffer,
    readback: wgpu::Buffer,
}

/// How the scheduler's rule runs: per prompt from its table, or the
/// calibrated rule with the batch's prior.
enum SchedulerRule {
    PerPrompt(GpuRule),
    Calibrated(Box<CalibratedGpu>),
}

impl Scheduler {
    /// A scheduler for `prompts` prompts with vote tables of `capacity`.
    /// The calibrated rule builds its race table here (one submit).
    pub fn new(
        ctx: &GpuContext,
        prompts: u32,
        capacity: u32,
        config: RuleConfig,
        allocation: Allocation,
    ) -> Result<Self> {
        let rule = match config.rule {
            StopRule::Calibrated { .. } => {
                if !(1..=256).contains(&capacity) {
                    return Err(Error::InvalidCapacity(capacity));
                }
                SchedulerRule::Calibrated(Box::new(CalibratedGpu::new(
                    ctx, prompts, capacity, &config,
                )?))
            }
            _ => SchedulerRule::PerPrompt(config.gpu_form()?),
        };
        if allocation.first() == 0 {
            return Err(Error::InvalidArgument(format!(
                "an allocation needs at least 1 rollout, got {allocation:?}"
            )));
        }
        let words = u64::from(prompts).max(1) * 4;
        let decision_bytes = u64::from(prompts).max(1) * DECISION_BYTES;
        // Every buffer but the readback is bound whole.
        let buffer = |label, size, usage| ctx.create_bound_buffer(label, size, usage);
        use wgpu::BufferUsages as U;
        Ok(Self {
            tables: VoteTables::new(ctx, prompts, capacity)?,
            compactor: Compactor::new(ctx)?,
            scratch: CompactScratch::new(ctx, prompts)?,
            params: buffer(
                "rollcall scheduler rule",
                std::mem::size_of::<DecideParams>() as u64,
                U::UNIFORM | U::COPY_DST,
            )?,
            list: buffer("rollcall live prompts", words, U::STORAGE | U::COPY_DST)?,
            decisions: buffer(
                "rollcall decisions",
                decision_bytes,
                U::STORAGE | U::COPY_SRC,
            )?,
            // The calibrated rule copies keep into next.
            keep: buffer("rollcall keep flags", words, U::STORAGE | U::COPY_SRC)?,
            next: buffer("rollcall next rollouts", words, U::STORAGE | U::COPY_DST)?,
            compacted_next: buffer(
                "rollcall compacted next rollouts",
                words,
                U::STORAGE | U::COPY_SRC,
            )?,
            compacted: buffer(
                "rollcall compacted positions",
                words,
                U::STORAGE | U::COPY_SRC,
            )?,
            count: buffer("rollcall live count", 4, U::STORAGE | U::COPY_SRC)?,
            // The decisions, or a round's count and two words per prompt.
            readback: ctx.create_buffer(
                "rollcall scheduler readback",
                decision_bytes.max(4 + 2 * words),
                U::MAP_READ | U::COPY_DST,
            )?,
            ctx: ctx.clone(),
            rule,
            config,
            allocation,
            prompts,
        })
    }

    /// The calibrated rule's batch weights as last refitted (`None` for
    /// other rules): for tests.
    #[cfg(feature = "internals")]
    pub fn calibrated_weights(&self) -> Result<Option<Vec<f32>>> {
        match &self.rule {
            SchedulerRule::Calibrated(calibrated) => calibrated.read_weights().map(Some),
            SchedulerRule::PerPrompt(_) => Ok(None),
        }
    }

    /// Forces how the rule runs over each round's live prompts (same
    /// results either way).
    #[cfg(feature = "internals")]
    pub fn with_decide_route(mut self, route: super::gpu::DecideRoute) -> Self {
        self.tables.set_decide_route(route);
        self
    }

    /// Forces how the rewards of [`Scheduler::run`] run (same results either
    /// way).
    #[cfg(feature = "internals")]
    pub fn with_reward_route(mut self, route: super::gpu::RewardRoute) -> Self {
        self.tables.set_reward_route(route);
        self
    }

    /// Records one round's GPU work into `encoder`: count `round`'s votes,
    /// run the rule over the `live` prompts, compact the survivors, and copy
    /// the live count, the surviving positions in `live` (and, with ConSol's
    /// allocation, their next allocations) into the readback buffer
    /// ([`Scheduler::run`] submits it and reads back `4 + 8 × live` bytes).
    /// `reset` first clears the tables (a new batch). The live list and rule
    /// parameters are written with `queue.write_buffer`, so record one round
    /// per submit.
    ///
    /// ```no_run
    /// use rollcall::voting::{Allocation, RuleConfig, Scheduler, StopRule};
    /// use rollcall::voting::{RoundVotes, Segment};
    /// let ctx = rollcall::GpuContext::new()?;
    /// let config = RuleConfig { rule: StopRule::CONSOL_SPRT, min_votes: 1, max_votes: 40 };
    /// let mut scheduler = Scheduler::new(&ctx, 2, 16, config, Allocation::Chunk(2))?;
    /// let segments = [
    ///     Segment { prompt: 0, start: 0, count: 2 },
    ///     Segment { prompt: 1, start: 2, count: 2 },
    /// ];
    /// let round = RoundVotes { segments: &segments, answers: &[5, 5, 1, 2], tokens: None };
    /// let mut encoder = ctx.device.create_command_encoder(&Default::default());
    /// scheduler.encode_round(&mut encoder, &round, &[0, 1], true)?;
    /// ctx.submit(encoder.finish());
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn encode_round(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        round: &RoundVotes<'_>,
        live: &[u32],
        reset: bool,
    ) -> Result<()> {
        let fewest = matches!(self.allocation, Allocation::FewestToPass { .. });
        if live.len() > self.prompts as usize {
            return Err(Error::BatchCapacity {
                capacity: self.prompts as usize,
                rows: live.len(),
            });
        }
        let n = live.len() as u32;
        for &prompt in live {
            super::check_prompt(prompt, self.prompts)?;
        }
        // Every check before any GPU work.
        round.validate(self.prompts)?;
        self.ctx
            .queue
            .write_buffer(&self.list, 0, bytemuck::cast_slice(live));
        if reset {
            self.encode_reset(encoder);
        }
        self.tables.encode_count(encoder, round)?;
        match &self.rule {
            SchedulerRule::PerPrompt(rule) => {
                let params = rule.decide_params(n, fewest);
                self.ctx.queue.write_buffer(&self.params, 0, &params);
                self.tables.encode_decide(
                    encoder,
                    &self.params,
                    &self.list,
                    n,
                    &self.decisions,
                    &self.keep,
                    &self.next,
                );
            }
            // A new batch (`reset`) refits its prior from uniform weights.
            SchedulerRule::Calibrated(calibrated) => calibrated.encode_round(
                encoder,
                &self.tables,
                &self.list,
                n,
                reset,
                &self.decisions,
                &self.keep,
                &self.next,
            ),
        }
        let values = fewest.then_some((&self.next, &self.compacted_next));
        self.compactor.encode_with_values(
            encoder,
            &self.keep,
            n,
            &self.scratch,
            &self.compacted,
            &self.count,
            values,
        )?;
        let live_bytes = u64::from(n) * 4;
        encoder.copy_buffer_to_buffer(&self.count, 0, &self.readback, 0, 4);
        if live_bytes > 0 {
            encoder.copy_buffer_to_buffer(&self.compacted, 0, &self.readback, 4, live_bytes);
        }
        if fewest && live_bytes > 0 {
            encoder.copy_buffer_to_buffer(
                &self.compacted_next,
                0,
                &self.readback,
                4 + live_bytes,
                live_bytes,
            );
        }
        Ok(())
    }

    /// Records the clearing of every prompt's vote table (a new batch; what
    /// `encode_round` does first when asked to reset), and of the calibrated
    /// rule's per-prompt evidence cache.
    pub fn encode_reset(&self, encoder: &mut wgpu::CommandEncoder) {
        self.tables.encode_reset(encoder);
        if let SchedulerRule::Calibrated(calibrated) = &self.rule {
            calibrated.encode_clear_cache(encoder);
        }
    }

    /// Runs rounds until every prompt has stopped. Each round's GPU work and
    /// the final readback run in error scopes (the engine's generation does
    /// not): a device error comes back as `Err`.
    pub fn run(&mut self, engine: &mut dyn RolloutEngine) -> Result<Outcome> {
        let ctx = self.ctx.clone();
        let first = self.allocation.first().max(self.config.min_votes);
        let mut live: Vec<u32> = (0..self.prompts).collect();
        let mut wants: Vec<u32> = vec![first; live.len()];
        let mut used = vec![0u32; self.prompts as usize];
        let mut stopped_in = vec![0u32; self.prompts as usize];
        let mut history: Vec<(u32, Rollout)> = Vec::new();
        let mut rounds = 0u32;
        while !live.is_empty() {
            rounds += 1;
            let round = request_round(
                engine,
                &live,
                &wants,
                self.config.max_votes,
                &mut used,
                &mut history,
            )?;
            let (next, next_wants) = ctx.scoped("scheduler round", || {
                self.run_round(&round, &live, rounds == 1)
            })?;
            let mut alive = vec![false; self.prompts as usize];
            for &p in &next {
                alive[p as usize] = true;
            }
            for &p in &live {
                if !alive[p as usize] {
                    stopped_in[p as usize] = rounds;
                }
            }
            live = next;
            wants = next_wants;
        }

        // The end: decisions of every prompt, rewards and advantages.
        let decisions = ctx.scoped("scheduler decisions", || self.read_decisions())?;
        let prompts: Vec<PromptOutcome> = decisions
            .iter()
            .enumerate()
            .map(|(p, d)| PromptOutcome {
                consensus: d.consensus,
                confidence: d.confidence,
                rollouts: used[p],
                stopped_in_round: stopped_in[p],
            })
            .collect();
        let (segments, answers) = group_by_prompt(&mut history, &used)?;
        let consensus: Vec<u32> = prompts.iter().map(|p| p.consensus).collect();
        let (rewards, advantages) =
            self.tables
                .rewards(&segments, &answers, Some(&consensus), None, 1e-4)?;
        Ok(Outcome {
            prompts,
            rollouts: history,
            rewards,
            advantages,
            rounds,
        })
    }

    /// One round on the GPU: count, decide and compact, one submit and one
    /// small readback. Returns the prompts still live and what each gets next.
    fn run_round(
        &mut self,
        round: &Round,
        live: &[u32],
        reset: bool,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let fewest = matches!(self.allocation, Allocation::FewestToPass { .. });
        let n = live.len();
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        self.encode_round(
            &mut encoder,
            &RoundVotes {
                segments: &round.segments,
                answers: &round.answers,
                tokens: Some(&round.tokens),
            },
            live,
            reset,
        )?;
        let live_bytes = n as u64 * 4;
        self.ctx.submit(encoder.finish());
        // One small readback: the count, the live positions (and, for
        // ConSol's allocation, what each live prompt gets next).
        let data = self.ctx.read_buffer(&self.readback, 4 + 2 * live_bytes)?;
        let words: &[u32] = bytemuck::cast_slice(&data);
        let still = (words[0] as usize).min(n);
        // Positions come from the device: a bad one is a device fault, not
        // a panic.
        let next = words[1..1 + still]
            .iter()
            .map(|&i| {
                live.get(i as usize).copied().ok_or_else(|| {
                    Error::Device(format!(
                        "compaction returned position {i} of {n} live prompts"
                    ))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        let wants = if fewest {
            words[1 + n..1 + n + still].to_vec()
        } else {
            vec![self.allocation.first(); still]
        };
        Ok((next, wants))
    }

    /// Every prompt's decision (one readback).
    fn read_decisions(&self) -> Result<Vec<GpuDecision>> {
        let total = u64::from(self.prompts) * DECISION_BYTES;
        if total == 0 {
            return Ok(Vec::new());
        }
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.decisions, 0, &self.readback, 0, total);
        self.ctx.submit(encoder.finish());
        let data = self.ctx.read_buffer(&self.readback, total)?;
        Ok(bytemuck::cast_slice(&data).to_vec())
    }
}

/// One round of requests: how many rollouts each live prompt gets, the
/// engine's answers, and the bookkeeping the scheduler and its twin share.
struct Round {
    segments: Vec<Segment>,
    answers: Vec<u32>,
    tokens: Vec<u32>,
}

fn request_round(
    engine: &mut dyn RolloutEngine,
    live: &[u32],
    wants: &[u32],
    max_votes: u32,
    used: &mut [u32],
    history: &mut Vec<(u32, Rollout)>,
) -> Result<Round> {
    let counts: Vec<u32> = live
        .iter()
        .zip(wants)
        .map(|(&p, &want)| want.min(max_votes.saturating_sub(used[p as usize])))
        .collect();
    // Votes are indexed with u32 on the GPU.
    let requested: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if requested > u64::from(u32::MAX) {
        return Err(Error::InvalidArgument(format!(
            "a round of {requested} rollouts: more than u32::MAX (fewer prompts or votes)"
        )));
    }
    // Every rule stops a prompt at the budget and asks a live one for at
    // least one rollout: a round asking none would repeat forever (the
    // tables would not change), so it can only come from unwritten
    // decisions.
    if requested == 0 && !live.is_empty() {
        return Err(Error::Device(format!(
            "{} prompts were kept live without a rollout to ask for (decisions not written)",
            live.len()
        )));
    }
    let rollouts = engine.generate(live, &counts)?;
    check_round_size(&rollouts, &counts)?;
    let mut segments = Vec::with_capacity(live.len());
    let mut start = 0u32;
    for (&p, &c) in live.iter().zip(&counts) {
        segments.push(Segment {
            prompt: p,
            start,
            count: c,
        });
        for r in &rollouts[start as usize..(start + c) as usize] {
            history.push((p, *r));
        }
        start += c;
        used[p as usize] += c;
    }
    Ok(Round {
        segments,
        answers: rollouts.iter().map(|r| r.answer).collect(),
        tokens: rollouts.iter().map(|r| r.tokens).collect(),
    })
}

/// Orders the rollouts by prompt (generation order kept within a prompt) and
/// returns one segment per prompt over them, with their answers.
fn group_by_prompt(
    history: &mut [(u32, Rollout)],
    used: &[u32],
) -> Result<(Vec<Segment>, Vec<u32>)> {
    // Rewards are indexed with u32 on the GPU.
    if u32::try_from(history.len()).is_err() {
        return Err(Error::InvalidArgument(format!(
            "{} rollouts in all: more than u32::MAX (fewer prompts or votes)",
            history.len()
        )));
    }
    history.sort_by_key(|&(p, _)| p);
    let mut segments = Vec::with_capacity(used.len());
    let mut start = 0u32;
    for (p, &u) in used.iter().enumerate() {
        segments.push(Segment {
            prompt: p as u32,
            start,
            count: u,
        });
        start += u;
    }
    Ok((segments, history.iter().map(|(_, r)| r.answer).collect()))
}

/// The engine must return exactly the rollouts it was asked for.
fn check_round_size(rollouts: &[Rollout], counts: &[u32]) -> Result<()> {
    let expected: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if rollouts.len() as u64 != expected {
        return Err(Error::LengthMismatch {
            what: "rollouts from the engine (as many as requested)",
            expected: expected as usize,
            got: rollouts.len(),
        });
    }
    Ok(())
}

/// CPU twin of [`Scheduler::run`]: the same rounds with the twin's tables,
/// rules and rewards.
pub fn run_cpu(
    prompts: u32,
    capacity: u32,
    config: RuleConfig,
    allocation: Allocation,
    engine: &mut dyn RolloutEngine,
) -> Result<Outcome> {
    use super::calibrated::CalibratedRounds;
    use super::cpu::VoteTables as CpuVoteTables;
    use super::rewards::{group_advantages, majority_rewards};
    use super::rules::{decide, StopRule};
    // The calibrated rule decides with the batch's prior, refitted each round.
    let mut calibrated = match config.rule {
        StopRule::Calibrated { .. } => Some(CalibratedRounds::new(&config)?),
        _ => None,
    };
    let rule = match calibrated {
        // Any per-prompt form: only its budgets are used below.
        Some(_) => RuleConfig {
            rule: StopRule::FixedBudget,
            ..config
        }
        .gpu_form()?,
        None => config.gpu_form()?,
    };
    if allocation.first() == 0 {
        return Err(Error::InvalidArgument(format!(
            "an allocation needs at least 1 rollout, got {allocation:?}"
        )));
    }
    // The GPU's tables hold 1 to 256 answers per prompt: refuse the same.
    if !(1..=256).contains(&capacity) {
        return Err(Error::InvalidCapacity(capacity));
    }
    let fewest = matches!(allocation, Allocation::FewestToPass { .. });
    let mut tables = CpuVoteTables::new(prompts, capacity)?;
    let mut live: Vec<u32> = (0..prompts).collect();
    let mut wants = vec![allocation.first().max(config.min_votes); live.len()];
    let mut used = vec![0u32; prompts as usize];
    let mut outcome = vec![
        PromptOutcome {
            consensus: u32::MAX,
            confidence: 0.0,
            rollouts: 0,
            stopped_in_round: 0
        };
        prompts as usize
    ];
    let mut history = Vec::new();
    let mut rounds = 0;
    while !live.is_empty() {
        rounds += 1;
        let round = request_round(
            engine,
            &live,
            &wants,
            config.max_votes,
            &mut used,
            &mut history,
        )?;
        tables.count(&RoundVotes {
            segments: &round.segments,
            answers: &round.answers,
            tokens: Some(&round.tokens),
        })?;
        let batch_decisions = match calibrated.as_mut() {
            Some(rounds) => Some(rounds.decide_round(&tables, &live)?),
            None => None,
        };
        let mut next = Vec::new();
        let mut next_wants = Vec::new();
        for (i, &p) in live.iter().enumerate() {
            let d = match &batch_decisions {
                Some(decisions) => decisions[i],
                None => decide(&rule, tables.votes(p)?, tables.table(p)?),
            };
            outcome[p as usize] = PromptOutcome {
                consensus: d.consensus,
                confidence: d.confidence,
                rollouts: used[p as usize],
                stopped_in_round: if d.stopped { rounds } else { 0 },
            };
            if !d.stopped {
                next.push(p);
                next_wants.push(if fewest { d.next } else { allocation.first() });
            }
        }
        live = next;
        wants = next_wants;
    }
    let (segments, answers) = group_by_prompt(&mut history, &used)?;
    let consensus: Vec<u32> = outcome.iter().map(|p| p.consensus).collect();
    let rewards = majority_rewards(&segments, &answers, &consensus)?;
    let advantages = group_advantages(&segments, &rewards, 1e-4)?;
    Ok(Outcome {
        prompts: outcome,
        rollouts: history,
        rewards,
        advantages,
        rounds,
    })
}

/// An engine that replays recorded answers: prompt `p` reveals `answers[p]`
/// in order (after a seeded shuffle, if the caller shuffled them).
pub struct ReplayEngine {
    answers: Vec<Vec<u32>>,
    next: Vec<usize>,
}

impl ReplayEngine {
    /// Replays `answers[p]` for prompt p.
    pub fn new(answers: Vec<Vec<u32>>) -> Self {
        let next = vec![0; answers.len()];
        Self { answers, next }
    }
}

impl RolloutEngine for ReplayEngine {
    fn generate(&mut self, prompts: &[u32], counts: &[u32]) -> Result<Vec<Rollout>> {
        let mut out = Vec::new();
        for (&p, &c) in prompts.iter().zip(counts) {
            let list = self
                .answers
                .get(p as usize)
                .ok_or(Error::PromptOutOfRange {
                    prompt: p,
                    prompts: u32::try_from(self.answers.len()).unwrap_or(u32::MAX),
                })?;
            for _ in 0..c {
                let i = self.next[p as usize];
                let answer = *list.get(i).ok_or_else(|| {
                    Error::Data(format!(
                        "prompt {p} has only {} recorded answers",
                        list.len()
                    ))
                })?;
                out.push(Rollout { answer, tokens: 0 });
                self.next[p as usize] += 1;
            }
        }
        Ok(out)
    }
}
