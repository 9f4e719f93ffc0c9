//! Adaptive majority voting (OptPO and its peers): per-prompt vote tables on
//! the GPU, with a CPU twin.
//!
//! This module holds the vote-counting kernel: each round's answers arrive as
//! one ragged batch (one segment of votes per prompt) and are folded into
//! per-prompt tables of up to `capacity` distinct answers in first-seen order.
//! Answers past the capacity are counted in [`PromptVotes::overflow`]: they
//! count as votes (against the leader), never as a consensus. Ties between
//! answers go to the one seen first (the lower table slot).

use crate::{Error, GpuContext, Result};
use std::sync::Arc;

/// Default distinct answers kept per prompt.
pub const DEFAULT_CAPACITY: u32 = 16;

/// A prompt's running totals, as the shader stores them (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PromptVotes {
    /// Votes so far.
    pub total: u32,
    /// Table slots in use.
    pub distinct: u32,
    /// Votes for answers that found no slot.
    pub overflow: u32,
    /// Answer of the newest run of equal consecutive votes.
    pub run_answer: u32,
    /// Length of that run.
    pub run_length: u32,
    /// Tokens spent, low word.
    pub tokens_lo: u32,
    /// Tokens spent, high word.
    pub tokens_hi: u32,
    /// Padding.
    pub pad: u32,
}

impl PromptVotes {
    /// Tokens spent on this prompt.
    pub fn tokens(&self) -> u64 {
        u64::from(self.tokens_lo) | (u64::from(self.tokens_hi) << 32)
    }
}

/// One prompt's votes in a round: `count` answers starting at `start`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Segment {
    /// Prompt index.
    pub prompt: u32,
    /// First vote of the segment in the round's answers.
    pub start: u32,
    /// Votes in the segment.
    pub count: u32,
    /// Padding.
    pub pad: u32,
}

/// A round of votes: segments over `answers` (and optionally the tokens each
/// rollout spent).
#[derive(Clone, Copy, Debug)]
pub struct RoundVotes<'a> {
    /// One segment per prompt that voted this round; no prompt twice.
    pub segments: &'a [Segment],
    /// Answer ids (hashed by the engine).
    pub answers: &'a [u32],
    /// Tokens per rollout, if the engine reports them.
    pub tokens: Option<&'a [u32]>,
}

impl RoundVotes<'_> {
    /// Checks the round against `prompts` tables before any GPU work.
    pub fn validate(&self, prompts: u32) -> Result<()> {
        if let Some(t) = self.tokens {
            if t.len() != self.answers.len() {
                return Err(Error::TokensLengthMismatch {
                    answers: self.answers.len(),
                    tokens: t.len(),
                });
            }
        }
        let mut seen = vec![false; prompts as usize];
        for (i, s) in self.segments.iter().enumerate() {
            let end = u64::from(s.start) + u64::from(s.count);
            if s.prompt >= prompts || end > self.answers.len() as u64 || seen[s.prompt as usize] {
                return Err(Error::InvalidSegment {
                    segment: i,
                    reason: if s.prompt >= prompts {
                        format!("prompt {} of {prompts}", s.prompt)
                    } else if seen[s.prompt as usize] {
                        format!("prompt {} appears twice in one round", s.prompt)
                    } else {
                        format!(
                            "votes {}..{end} past the {} answers",
                            s.start,
                            self.answers.len()
                        )
                    },
                });
            }
            seen[s.prompt as usize] = true;
        }
        Ok(())
    }
}

/// CPU twin of the vote tables.
///
/// ```
/// use rollcall::voting::{CpuVoteTables, RoundVotes, Segment};
/// let mut tables = CpuVoteTables::new(2, 4);
/// let segments = [Segment { prompt: 1, start: 0, count: 3, pad: 0 }];
/// tables.count(&RoundVotes { segments: &segments, answers: &[7, 9, 7], tokens: None }).unwrap();
/// assert_eq!(tables.table(1), &[[7, 2], [9, 1]]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CpuVoteTables {
    capacity: u32,
    votes: Vec<PromptVotes>,
    tables: Vec<[u32; 2]>,
}

impl CpuVoteTables {
    /// Empty tables for `prompts` prompts of `capacity` answers each.
    pub fn new(prompts: u32, capacity: u32) -> Self {
        Self {
            capacity,
            votes: vec![PromptVotes::default(); prompts as usize],
            tables: vec![[0, 0]; prompts as usize * capacity as usize],
        }
    }

    /// Folds a round of votes in, as the shader does.
    pub fn count(&mut self, round: &RoundVotes<'_>) -> Result<()> {
        round.validate(self.votes.len() as u32)?;
        let cap = self.capacity as usize;
        for s in round.segments {
            let state = &mut self.votes[s.prompt as usize];
            let table = &mut self.tables[s.prompt as usize * cap..][..cap];
            for v in s.start..s.start + s.count {
                let answer = round.answers[v as usize];
                let used = state.distinct as usize;
                match table[..used].iter().position(|e| e[0] == answer) {
                    Some(k) => table[k][1] += 1,
                    None if used < cap => {
                        table[used] = [answer, 1];
                        state.distinct += 1;
                    }
                    None => state.overflow += 1,
                }
                if state.total != 0 && answer == state.run_answer {
                    state.run_length += 1;
                } else {
                    state.run_answer = answer;
                    state.run_length = 1;
                }
                state.total += 1;
                if let Some(tokens) = round.tokens {
                    let t = u64::from(tokens[v as usize]) + state.tokens();
                    state.tokens_lo = t as u32;
                    state.tokens_hi = (t >> 32) as u32;
                }
            }
        }
        Ok(())
    }

    /// A prompt's totals.
    pub fn votes(&self, prompt: u32) -> &PromptVotes {
        &self.votes[prompt as usize]
    }

    /// A prompt's table in first-seen order: `[answer, votes]`.
    pub fn table(&self, prompt: u32) -> &[[u32; 2]] {
        let cap = self.capacity as usize;
        let used = self.votes[prompt as usize].distinct as usize;
        &self.tables[prompt as usize * cap..][..used]
    }
}

/// The voting shader's entry points (counting, then the rules) for
/// `capacity` answers per prompt.
pub fn shader_variants(capacity: u32) -> Result<Vec<crate::shader::ShaderVariant>> {
    let source = crate::shader::compose(
        "voting.wgsl",
        &format!("const CAPACITY: u32 = {capacity}u;"),
    )?;
    Ok(["count_votes", "decide", "rewards_and_advantages"]
        .into_iter()
        .map(|entry_point| crate::shader::ShaderVariant {
            label: format!("voting/{entry_point}/{capacity}"),
            entry_point,
            source: source.clone(),
            features: wgpu::Features::empty(),
        })
        .collect())
}

/// What [`GpuVoteTables::decide`] reads back, in list order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideReadback {
    /// Decisions.
    pub decisions: Vec<GpuDecision>,
    /// 1 for prompts still active.
    pub keep: Vec<u32>,
    /// For live prompts, the fewest more votes that could stop them.
    pub next: Vec<u32>,
}

/// A decision as the GPU writes it (16 bytes per prompt).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GpuDecision {
    /// 1 when the prompt stops.
    pub stopped: u32,
    /// The consensus answer id (`u32::MAX` without votes).
    pub consensus: u32,
    /// The rule's confidence.
    pub confidence: f32,
    /// Votes used.
    pub votes: u32,
}

/// Vote tables resident on the GPU for `prompts` prompts, and the counting
/// kernel (built once per context and capacity).
///
/// ```no_run
/// use rollcall::voting::{GpuVoteTables, RoundVotes, Segment};
/// let ctx = rollcall::GpuContext::new()?;
/// let mut tables = GpuVoteTables::new(&ctx, 1000, 16)?;
/// let segments = [Segment { prompt: 3, start: 0, count: 2, pad: 0 }];
/// tables.count(&RoundVotes { segments: &segments, answers: &[5, 5], tokens: None })?;
/// let (votes, table) = tables.read()?;
/// assert_eq!(votes[3].total, 2);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct GpuVoteTables {
    ctx: GpuContext,
    pipelines: Arc<[wgpu::ComputePipeline; 3]>,
    capacity: u32,
    prompts: u32,
    votes: wgpu::Buffer,
    tables: wgpu::Buffer,
    params: wgpu::Buffer,
    /// Round uploads, grown when a round is larger than any before it.
    round_segments: GrowBuffer,
    round_answers: GrowBuffer,
    round_tokens: GrowBuffer,
}

/// A storage buffer written with `Queue::write_buffer`, reallocated only when
/// a write needs more room than any before it.
struct GrowBuffer {
    label: &'static str,
    buffer: wgpu::Buffer,
}

impl GrowBuffer {
    fn new(device: &wgpu::Device, label: &'static str) -> Self {
        Self {
            label,
            buffer: Self::allocate(device, label, 256),
        }
    }

    fn allocate(device: &wgpu::Device, label: &str, size: u64) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Writes `bytes` (a multiple of 4) at offset 0.
    fn write(&mut self, ctx: &GpuContext, bytes: &[u8]) -> &wgpu::Buffer {
        let needed = (bytes.len() as u64).max(4);
        if needed > self.buffer.size() {
            self.buffer = Self::allocate(&ctx.device, self.label, needed.next_power_of_two());
        }
        if !bytes.is_empty() {
            ctx.queue.write_buffer(&self.buffer, 0, bytes);
        }
        &self.buffer
    }
}

impl GpuVoteTables {
    /// Zeroed tables for `prompts` prompts of `capacity` (1 to 256) answers.
    pub fn new(ctx: &GpuContext, prompts: u32, capacity: u32) -> Result<Self> {
        if !(1..=256).contains(&capacity) {
            return Err(Error::InvalidCapacity(capacity));
        }
        let pipelines = ctx.cached(&format!("voting/{capacity}"), || {
            let variants = shader_variants(capacity)?;
            Ok([
                variants[0].compute_pipeline(&ctx.device, None),
                variants[1].compute_pipeline(&ctx.device, None),
                variants[2].compute_pipeline(&ctx.device, None),
            ])
        })?;
        let storage = |label, size: u64| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.max(4),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            votes: storage("rollcall prompt votes", u64::from(prompts) * 32),
            tables: storage(
                "rollcall vote tables",
                u64::from(prompts) * u64::from(capacity) * 8,
            ),
            params: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("rollcall count params"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            round_segments: GrowBuffer::new(&ctx.device, "rollcall round segments"),
            round_answers: GrowBuffer::new(&ctx.device, "rollcall round answers"),
            round_tokens: GrowBuffer::new(&ctx.device, "rollcall round tokens"),
            ctx: ctx.clone(),
            pipelines,
            capacity,
            prompts,
        })
    }

    /// Per-prompt totals (32 bytes each, [`PromptVotes`]).
    pub fn votes_buffer(&self) -> &wgpu::Buffer {
        &self.votes
    }

    /// Tables: `capacity` pairs `(answer, votes)` of u32 per prompt.
    pub fn tables_buffer(&self) -> &wgpu::Buffer {
        &self.tables
    }

    /// Uploads a round's votes and folds them in (one submit, no wait).
    pub fn count(&mut self, round: &RoundVotes<'_>) -> Result<()> {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        self.encode_count(&mut encoder, round)?;
        self.ctx.submit(encoder.finish());
        Ok(())
    }

    /// Records the folding of a round's votes into `encoder` (the round's
    /// votes are uploaded to fresh buffers; its parameters take effect at the
    /// next submit, so record one count per submit).
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
        let segments = self
            .round_segments
            .write(ctx, bytemuck::cast_slice(round.segments));
        let answers = self
            .round_answers
            .write(ctx, bytemuck::cast_slice(round.answers));
        let tokens = self
            .round_tokens
            .write(ctx, bytemuck::cast_slice(round.tokens.unwrap_or(&[])));
        let device = &ctx.device;
        let n = round.segments.len() as u32;
        let params = [n, u32::from(round.tokens.is_some()), 0, 0];
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(&params));
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rollcall count votes"),
            layout: &self.pipelines[0].get_bind_group_layout(0),
            entries: &[
                (0, self.params.as_entire_binding()),
                (1, segments.as_entire_binding()),
                (2, answers.as_entire_binding()),
                (3, tokens.as_entire_binding()),
                (4, self.votes.as_entire_binding()),
                (5, self.tables.as_entire_binding()),
            ]
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }),
        });
        self.dispatch(encoder, 0, &bind_group, n);
        Ok(())
    }

    /// Records the rules over the first `n` prompts of `list`: decisions to
    /// `decisions` (16 bytes per prompt, by prompt index), keep flags (1 =
    /// still active) to `keep` and, when asked, the fewest votes that could
    /// stop each live prompt to `next`, both by list position. `params` holds
    /// the [`rules::GpuRule`], then `n` and the ask (1 or 0) (48 bytes,
    /// uniform).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_decide(
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
        let bind_group = self
            .ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("rollcall decide"),
                layout: &self.pipelines[1].get_bind_group_layout(0),
                entries: &[
                    (10, params.as_entire_binding()),
                    (11, list.as_entire_binding()),
                    (12, self.votes.as_entire_binding()),
                    (13, self.tables.as_entire_binding()),
                    (14, decisions.as_entire_binding()),
                    (15, keep.as_entire_binding()),
                    (16, next.as_entire_binding()),
                ]
                .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }),
            });
        self.dispatch(encoder, 1, &bind_group, n);
    }

    /// Records the zeroing of every table (a fresh batch).
    pub fn encode_reset(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.votes, 0, None);
        encoder.clear_buffer(&self.tables, 0, None);
    }

    /// Records one pass of pipeline `pipeline` over `items` invocations (64 a
    /// workgroup, a 2-D grid past the adapter's per-dimension limit).
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: usize,
        bind_group: &wgpu::BindGroup,
        items: u32,
    ) {
        let groups = items.div_ceil(64);
        let max_x = self
            .ctx
            .limits()
            .max_compute_workgroups_per_dimension
            .max(1);
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&self.pipelines[pipeline]);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(groups.min(max_x), groups.div_ceil(max_x), 1);
    }

    /// Prompts the tables hold.
    pub fn prompts(&self) -> u32 {
        self.prompts
    }

    /// The context the tables live on.
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    /// Runs `rule` over the prompts in `list` and reads back, in list order,
    /// their decisions, keep flags (1 = still active) and the fewest more
    /// votes that could stop each live prompt (waits for the GPU).
    pub fn decide(&self, rule: &rules::RuleConfig, list: &[u32]) -> Result<DecideReadback> {
        use wgpu::util::DeviceExt;
        let gpu_rule = rule.to_gpu()?;
        if let Some(&bad) = list.iter().find(|&&p| p >= self.prompts) {
            return Err(Error::InvalidSegment {
                segment: 0,
                reason: format!("prompt {bad} of {}", self.prompts),
            });
        }
        if list.is_empty() {
            return Ok(DecideReadback::default());
        }
        let device = &self.ctx.device;
        let n = list.len() as u32;
        let params = gpu_rule.decide_params(n, true);
        let init = |label, contents: &[u8], usage| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        let params = init(
            "rollcall decide params",
            &params,
            wgpu::BufferUsages::UNIFORM,
        );
        let list_buffer = init(
            "rollcall decide list",
            bytemuck::cast_slice(list),
            wgpu::BufferUsages::STORAGE,
        );
        let out = |label, size| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let dbytes = u64::from(self.prompts) * 16;
        let lbytes = u64::from(n) * 4;
        let decisions = out("rollcall decisions", dbytes.max(16));
        let keep = out("rollcall keep flags", lbytes);
        let next = out("rollcall next votes", lbytes);
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("rollcall decide readback"),
            size: dbytes + 2 * lbytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        self.encode_decide(
            &mut encoder,
            &params,
            &list_buffer,
            n,
            &decisions,
            &keep,
            &next,
        );
        encoder.copy_buffer_to_buffer(&decisions, 0, &readback, 0, dbytes);
        encoder.copy_buffer_to_buffer(&keep, 0, &readback, dbytes, lbytes);
        encoder.copy_buffer_to_buffer(&next, 0, &readback, dbytes + lbytes, lbytes);
        self.ctx.submit(encoder.finish());
        let data = self.ctx.read_buffer(&readback, dbytes + 2 * lbytes)?;
        let all: &[GpuDecision] = bytemuck::cast_slice(&data[..dbytes as usize]);
        let words: &[u32] = bytemuck::cast_slice(&data[dbytes as usize..]);
        Ok(DecideReadback {
            decisions: list.iter().map(|&p| all[p as usize]).collect(),
            keep: words[..n as usize].to_vec(),
            next: words[n as usize..].to_vec(),
        })
    }

    /// Rewards and GRPO advantages on the GPU for rollouts grouped in
    /// `segments`: with `consensus` (one answer id per prompt), TTRL's majority
    /// rewards from `answers`; without, `given` rewards (one per rollout).
    /// Waits for the GPU and returns `(rewards, advantages)`.
    pub fn rewards(
        &self,
        segments: &[Segment],
        answers: &[u32],
        consensus: Option<&[u32]>,
        given: Option<&[f32]>,
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        use wgpu::util::DeviceExt;
        // Exactly one source of rewards; segments in range and disjoint.
        let n = match (consensus, given) {
            (Some(c), None) => {
                if c.len() != self.prompts as usize {
                    return Err(Error::ParamCountMismatch {
                        expected: self.prompts as usize,
                        got: c.len(),
                    });
                }
                answers.len()
            }
            (None, Some(g)) => g.len(),
            _ => {
                return Err(Error::InvalidRule(
                    "rewards need either the consensus answers or given rewards".into(),
                ))
            }
        };
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::InvalidRule(format!(
                "eps must be finite and >= 0, got {eps}"
            )));
        }
        let stand_in = vec![0u32; n];
        RoundVotes {
            segments,
            answers: &stand_in,
            tokens: None,
        }
        .validate(self.prompts)?;
        let mut spans: Vec<(u32, u32)> = segments
            .iter()
            .map(|s| (s.start, s.start + s.count))
            .collect();
        spans.sort_unstable();
        if let Some(i) = spans.windows(2).position(|w| w[0].1 > w[1].0) {
            return Err(Error::InvalidSegment {
                segment: i,
                reason: "reward segments overlap".into(),
            });
        }
        if segments.is_empty() || n == 0 {
            return Ok((vec![0.0; n], vec![0.0; n]));
        }
        let device = &self.ctx.device;
        let init = |label, contents: &[u8], usage| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        let storage = wgpu::BufferUsages::STORAGE;
        let mut params = [0u8; 16];
        params[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        params[4..8].copy_from_slice(&eps.to_le_bytes());
        params[8..12].copy_from_slice(&u32::from(consensus.is_some()).to_le_bytes());
        let params = init(
            "rollcall reward params",
            &params,
            wgpu::BufferUsages::UNIFORM,
        );
        let segs = init(
            "rollcall reward segments",
            bytemuck::cast_slice(segments),
            storage,
        );
        let answers_buffer = init(
            "rollcall reward answers",
            bytemuck::cast_slice(if answers.is_empty() {
                &[0u32][..]
            } else {
                answers
            }),
            storage,
        );
        let decisions: Vec<GpuDecision> = consensus
            .unwrap_or(&[0])
            .iter()
            .map(|&c| GpuDecision {
                consensus: c,
                ..Default::default()
            })
            .collect();
        let decisions = init(
            "rollcall reward consensus",
            bytemuck::cast_slice(&decisions),
            storage,
        );
        let start: Vec<f32> = given.map_or_else(|| vec![0.0; n], <[f32]>::to_vec);
        let rewards = init(
            "rollcall rewards",
            bytemuck::cast_slice(&start),
            storage | wgpu::BufferUsages::COPY_SRC,
        );
        let advantages = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("rollcall advantages"),
            size: n as u64 * 4,
            usage: storage | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rollcall rewards"),
            layout: &self.pipelines[2].get_bind_group_layout(0),
            entries: &[
                (20, params.as_entire_binding()),
                (21, segs.as_entire_binding()),
                (22, answers_buffer.as_entire_binding()),
                (23, decisions.as_entire_binding()),
                (24, rewards.as_entire_binding()),
                (25, advantages.as_entire_binding()),
            ]
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }),
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("rollcall rewards readback"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        self.dispatch(&mut encoder, 2, &bind_group, segments.len() as u32);
        encoder.copy_buffer_to_buffer(&rewards, 0, &readback, 0, n as u64 * 4);
        encoder.copy_buffer_to_buffer(&advantages, 0, &readback, n as u64 * 4, n as u64 * 4);
        self.ctx.submit(encoder.finish());
        let data = self.ctx.read_buffer(&readback, n as u64 * 8)?;
        let all: &[f32] = bytemuck::cast_slice(&data);
        Ok((all[..n].to_vec(), all[n..].to_vec()))
    }

    /// Reads totals and tables back (waits for the GPU).
    pub fn read(&self) -> Result<(Vec<PromptVotes>, Vec<[u32; 2]>)> {
        let device = &self.ctx.device;
        let vbytes = u64::from(self.prompts) * 32;
        let tbytes = u64::from(self.prompts) * u64::from(self.capacity) * 8;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("rollcall votes readback"),
            size: (vbytes + tbytes).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.votes, 0, &readback, 0, vbytes);
        encoder.copy_buffer_to_buffer(&self.tables, 0, &readback, vbytes, tbytes);
        self.ctx.submit(encoder.finish());
        let data = self.ctx.read_buffer(&readback, (vbytes + tbytes).max(4))?;
        let votes = bytemuck::cast_slice(&data[..vbytes as usize]).to_vec();
        let tables =
            bytemuck::cast_slice(&data[vbytes as usize..(vbytes + tbytes) as usize]).to_vec();
        Ok((votes, tables))
    }
}

pub mod posterior;
pub mod rewards;
pub mod rules;
pub mod scheduler;
