//! Voting: the incremental voter, the one-shot replay, TTRL's majority
//! rewards and GRPO's advantages (verl's conventions or rollcall's).

use crate::rules::{rule_arg, Rule};
use crate::{
    call_error, error, gpu_context, read_f32, read_ids, rollcall_error, to_numpy, to_numpy2, Array,
    CallError, Device,
};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rollcall::voting::calibrated::{CalibratedRounds, CalibratedRoundsGpu};
use rollcall::voting::cpu::VoteTables;
use rollcall::voting::{
    rewards, Allocation, ReplayEngine, RoundVotes, RuleConfig, Scheduler, Segment, StopRule,
    VoteTables as GpuVoteTables,
};

/// `(need_more, counts)`: a bool mask over the prompts and int64 counts.
type Request<'py> = (Bound<'py, PyArray1<bool>>, Bound<'py, PyArray1<i64>>);
/// Two int64 arrays (ids and counts, or a table's answers and votes).
type IdArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);
/// Rewards shaped like the answers and the consensus per prompt.
type Rewards<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<i64>>);

/// The vote tables a voter counts into: the CPU twin's, or the GPU's (whose
/// rule runs on the GPU too).
enum Tables {
    Cpu(VoteTables),
    Gpu(Box<GpuVoteTables>),
}

/// What the rule said about one prompt: stopped, consensus, confidence and
/// the fewest more votes that could stop it.
struct Said {
    stopped: bool,
    consensus: u32,
    confidence: f32,
    next: u32,
}

/// The voter's state, free of Python: the tables, the rule, and per prompt
/// what the last decision said. Each round decides every live prompt, as
/// `rollcall::voting::cpu::run` and the GPU's `Scheduler` do.
struct Core {
    config: RuleConfig,
    /// The calibrated rule's batch state (its prior is refitted each
    /// round): on the CPU, or on the GPU over the GPU tables. The GPU
    /// tables decide every other rule themselves.
    calibrated: Option<CalibratedRounds>,
    calibrated_gpu: Option<CalibratedRoundsGpu>,
    fewest: bool,
    chunk: u32,
    tables: Tables,
    /// Votes counted per prompt.
    counted: Vec<u32>,
    live: Vec<bool>,
    wants: Vec<u32>,
    consensus: Vec<u32>,
    confidence: Vec<f32>,
    stopped_in: Vec<u32>,
    rounds: u32,
}

impl Core {
    /// A voter's state on the CPU twin, or on `gpu`'s tables (the rule is
    /// checked for the GPU first: the library refuses there what its GPU
    /// kernels cannot run).
    fn new(
        prompts: u32,
        capacity: u32,
        config: RuleConfig,
        fewest: bool,
        chunk: u32,
        gpu: Option<&rollcall::GpuContext>,
    ) -> rollcall::Result<Self> {
        let is_calibrated = matches!(config.rule, StopRule::Calibrated { .. });
        let (tables, calibrated, calibrated_gpu) = match gpu {
            None => {
                let calibrated = match is_calibrated {
                    true => Some(CalibratedRounds::new(&config)?),
                    false => None,
                };
                (
                    Tables::Cpu(VoteTables::new(prompts, capacity)?),
                    calibrated,
                    None,
                )
            }
            Some(ctx) => {
                if !is_calibrated {
                    config.validate()?;
                }
                let tables = GpuVoteTables::new(ctx, prompts, capacity)?;
                let calibrated_gpu = match is_calibrated {
                    true => Some(CalibratedRoundsGpu::new(&tables, &config)?),
                    false => None,
                };
                (Tables::Gpu(Box::new(tables)), None, calibrated_gpu)
            }
        };
        let first = chunk.max(config.min_votes).min(config.max_votes);
        let n = prompts as usize;
        Ok(Core {
            config,
            calibrated,
            calibrated_gpu,
            fewest,
            chunk,
            tables,
            counted: vec![0; n],
            live: vec![true; n],
            wants: vec![first; n],
            consensus: vec![u32::MAX; n],
            confidence: vec![0.0; n],
            stopped_in: vec![0; n],
            rounds: 0,
        })
    }

    fn votes(&self, prompt: usize) -> u32 {
        self.counted[prompt]
    }

    fn device(&self) -> Device {
        match self.tables {
            Tables::Cpu(_) => Device::Cpu,
            Tables::Gpu(_) => Device::Gpu,
        }
    }

    /// One prompt's table in first-seen order (`[answer, votes]`).
    fn table(&mut self, prompt: u32) -> rollcall::Result<Vec<[u32; 2]>> {
        match &mut self.tables {
            Tables::Cpu(t) => Ok(t.table(prompt)?.to_vec()),
            Tables::Gpu(t) => {
                let prompts = t.prompts();
                if prompt >= prompts {
                    return Err(rollcall::Error::PromptOutOfRange { prompt, prompts });
                }
                let (votes, tables) = t.read()?;
                let capacity = tables.len() / prompts as usize;
                let start = prompt as usize * capacity;
                let used = (votes[prompt as usize].distinct as usize).min(capacity);
                Ok(tables[start..start + used].to_vec())
            }
        }
    }

    /// Counts a round (segments name live prompts only) and decides every
    /// live prompt.
    fn feed(&mut self, segments: &[Segment], answers: &[u32]) -> rollcall::Result<()> {
        let round = RoundVotes {
            segments,
            answers,
            tokens: None,
        };
        match &mut self.tables {
            Tables::Cpu(t) => t.count(&round)?,
            Tables::Gpu(t) => t.count(&round)?,
        }
        for s in segments {
            let c = &mut self.counted[s.prompt as usize];
            *c = c.wrapping_add(s.count);
        }
        self.rounds += 1;
        let live: Vec<u32> = (0..self.live.len() as u32)
            .filter(|&p| self.live[p as usize])
            .collect();
        let said: Vec<Said> = match &mut self.tables {
            Tables::Cpu(t) => {
                let decisions = match self.calibrated.as_mut() {
                    Some(rounds) => rounds.decide_round(t, &live)?,
                    None => live
                        .iter()
                        .map(|&p| t.decide(&self.config, p))
                        .collect::<rollcall::Result<_>>()?,
                };
                decisions
                    .iter()
                    .map(|d| Said {
                        stopped: d.stopped,
                        consensus: d.consensus,
                        confidence: d.confidence,
                        next: d.next,
                    })
                    .collect()
            }
            Tables::Gpu(t) if self.calibrated_gpu.is_some() => {
                let rounds = self.calibrated_gpu.as_mut().expect("checked by the guard");
                let (decisions, _weights) = rounds.decide_round(t, &live)?;
                decisions
                    .iter()
                    .map(|d| Said {
                        stopped: d.stopped,
                        consensus: d.consensus,
                        confidence: d.confidence,
                        next: u32::from(!d.stopped),
                    })
                    .collect()
            }
            Tables::Gpu(t) => {
                let read = t.decide(&self.config, &live)?;
                read.decisions
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Said {
                        stopped: d.stopped,
                        consensus: d.consensus,
                        confidence: d.confidence,
                        next: read.next.get(i).copied().unwrap_or(0),
                    })
                    .collect()
            }
        };
        if said.len() != live.len() {
            return Err(rollcall::Error::Device(format!(
                "{} decisions for {} live prompts",
                said.len(),
                live.len()
            )));
        }
        for (&p, d) in live.iter().zip(&said) {
            let p = p as usize;
            self.consensus[p] = d.consensus;
            self.confidence[p] = d.confidence;
            if d.stopped {
                self.live[p] = false;
                self.stopped_in[p] = self.rounds;
                self.wants[p] = 0;
            } else {
                let want = if self.fewest { d.next } else { self.chunk };
                let left = self.config.max_votes.saturating_sub(self.votes(p));
                self.wants[p] = want.min(left);
            }
        }
        Ok(())
    }
}

/// The GPU context when `device` is the GPU (opens it on first use; call
/// with the GIL released).
fn context_for(device: Device, what: &str) -> Result<Option<rollcall::GpuContext>, CallError> {
    Ok(match device {
        Device::Cpu => None,
        Device::Gpu => Some(gpu_context(what)?),
    })
}

fn device_name(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Gpu => "gpu",
    }
}

/// Parses `allocation` and `chunk`.
fn allocation(py: Python<'_>, allocation: &str, chunk: u32) -> PyResult<bool> {
    if chunk == 0 {
        return Err(error(
            py,
            "InvalidValueError",
            "chunk must be at least 1 (rollouts per prompt per round)",
        ));
    }
    match allocation {
        "chunk" => Ok(false),
        "fewest" | "fewest-to-pass" => Ok(true),
        other => Err(error(
            py,
            "InvalidValueError",
            format!("allocation must be \"chunk\" or \"fewest\", got {other:?}"),
        )),
    }
}

/// Checks the prompt count and capacity before allocating tables.
fn check_sizes(py: Python<'_>, prompts: usize, capacity: u32) -> PyResult<u32> {
    if !(1..=256).contains(&capacity) {
        return Err(error(
            py,
            "InvalidValueError",
            format!("capacity must be 1 to 256 distinct answers per prompt, got {capacity}"),
        ));
    }
    u32::try_from(prompts).map_err(|_| {
        error(
            py,
            "InvalidValueError",
            format!("{prompts} prompts: at most {}", u32::MAX),
        )
    })
}

/// Flattens rows of ids (-1 padding) into answers and one segment per row.
fn segments_of(
    ids: &Array<i64>,
    prompts: impl Fn(usize) -> u32,
) -> (Vec<Segment>, Vec<u32>, Vec<usize>) {
    let (rows, cols) = ids.rows_cols();
    let mut segments = Vec::with_capacity(rows);
    let mut answers = Vec::with_capacity(ids.data.len());
    let mut positions = Vec::with_capacity(ids.data.len());
    for r in 0..rows {
        let start = answers.len() as u32;
        for (c, &v) in ids.data[r * cols..(r + 1) * cols].iter().enumerate() {
            if v >= 0 {
                answers.push(v as u32);
                positions.push(r * cols + c);
            }
        }
        segments.push(Segment {
            prompt: prompts(r),
            start,
            count: answers.len() as u32 - start,
        });
    }
    (segments, answers, positions)
}

/// Consensus id as Python sees it: -1 for none.
fn id_out(v: u32) -> i64 {
    if v == u32::MAX {
        -1
    } else {
        i64::from(v)
    }
}

/// An incremental voter over a batch of prompts: feed each round's answers,
/// get back which prompts need more rollouts and how many.
///
/// `Voter(prompts, rule, *, capacity=16, allocation="chunk", chunk=4)`:
/// `rule` is a `rollcall.Rule` or a rule name (budgets 1 to 64); `capacity`
/// is the distinct answers kept per prompt (1 to 256; answers past it count
/// as votes against the leader); `allocation` "chunk" asks `chunk` more
/// rollouts per live prompt each round, "fewest" asks the fewest that could
/// stop the prompt if they all agreed with its leader (ConSol's), with
/// `chunk` in the first round. The first round asks
/// `max(chunk, rule.min_votes)`; no request passes `rule.max_votes`.
///
/// Semantics match rollcall's CPU round loop (`voting::cpu::run`): ties go to
/// the answer seen first; a prompt stops at `max_votes` or once the rule is
/// met past `min_votes`.
///
/// `device="gpu"` keeps the vote tables on the GPU and runs the rule there
/// (each `feed` is one count and one decide on the device, one small
/// readback); rules the GPU refuses raise
/// `InvalidRuleError`. Consensus, votes, requests and rounds are the CPU's;
/// the confidence agrees to 1e-4 (the GPU's exp and log), so the Beta and
/// Dirichlet rules may stop a prompt a round apart when its probability
/// lies within rounding of the threshold.
#[pyclass(module = "rollcall")]
pub(crate) struct Voter {
    core: Core,
    rule: Rule,
}

#[pymethods]
impl Voter {
    #[new]
    #[pyo3(signature = (prompts, rule, *, capacity = 16, allocation = "chunk", chunk = 4, device = "cpu"))]
    fn new(
        py: Python<'_>,
        prompts: usize,
        rule: &Bound<'_, PyAny>,
        capacity: u32,
        allocation: &str,
        chunk: u32,
        device: &str,
    ) -> PyResult<Self> {
        let device = Device::parse(py, device)?;
        let rule = rule_arg(py, rule)?;
        let fewest = self::allocation(py, allocation, chunk)?;
        let prompts = check_sizes(py, prompts, capacity)?;
        let config = rule.config;
        let core = py
            .detach(|| -> Result<Core, CallError> {
                let ctx = context_for(device, "Voter")?;
                Ok(Core::new(
                    prompts,
                    capacity,
                    config,
                    fewest,
                    chunk,
                    ctx.as_ref(),
                )?)
            })
            .map_err(|e| call_error(py, e))?;
        Ok(Voter { core, rule })
    }

    /// Counts one round of answers and decides every live prompt.
    ///
    /// `answers`: integer ids shaped (prompts, votes), -1 as padding (any
    /// number of votes per row, padding anywhere); with `prompts` (1-D,
    /// distinct prompt indices), shaped (len(prompts), votes) for those
    /// prompts only. Rows of stopped prompts must be all padding.
    /// Returns `(need_more, counts)`: a bool mask over all prompts and the
    /// rollouts each live prompt should get next (0 where stopped).
    #[pyo3(signature = (answers, prompts = None))]
    fn feed<'py>(
        mut slf: PyRefMut<'py, Self>,
        py: Python<'py>,
        answers: &Bound<'py, PyAny>,
        prompts: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Request<'py>> {
        let n = slf.core.live.len();
        let ids = read_ids(answers, "answers", &[2], " shaped (prompts, votes)")?;
        let (rows, _) = ids.rows_cols();
        let rows_to_prompt: Vec<u32> = match prompts {
            None => {
                if rows != n {
                    return Err(error(
                        py,
                        "ShapeError",
                        format!(
                            "answers: expected {n} rows (one per prompt; pass prompts= for a subset), got shape {:?}",
                            ids.shape
                        ),
                    ));
                }
                (0..n as u32).collect()
            }
            Some(p) => {
                let list = crate::read_u32(p, "prompts", &[1], "")?;
                if list.data.len() != rows {
                    return Err(error(
                        py,
                        "ShapeError",
                        format!(
                            "prompts has {} entries but answers has {rows} rows",
                            list.data.len()
                        ),
                    ));
                }
                let mut seen = vec![false; n];
                for &q in &list.data {
                    let q = q as usize;
                    if q >= n {
                        return Err(error(
                            py,
                            "InvalidValueError",
                            format!("prompts: index {q} out of range for {n} prompts"),
                        ));
                    }
                    if std::mem::replace(&mut seen[q], true) {
                        return Err(error(
                            py,
                            "InvalidValueError",
                            format!("prompts: index {q} appears twice"),
                        ));
                    }
                }
                list.data
            }
        };
        let (segments, flat, _) = segments_of(&ids, |r| rows_to_prompt[r]);
        if let Some(s) = segments
            .iter()
            .find(|s| s.count > 0 && !slf.core.live[s.prompt as usize])
        {
            return Err(error(
                py,
                "InvalidValueError",
                format!(
                    "prompt {} stopped in round {}: pad its row with -1 (or start a new Voter)",
                    s.prompt, slf.core.stopped_in[s.prompt as usize]
                ),
            ));
        }
        if flat.len() > u32::MAX as usize {
            return Err(error(
                py,
                "InvalidValueError",
                "more than 2^32 answers in one round",
            ));
        }
        let core = &mut slf.core;
        py.detach(|| core.feed(&segments, &flat))
            .map_err(|e| rollcall_error(py, e))?;
        slf.request(py)
    }

    /// What to generate next: `(need_more, counts)` as `feed` returns it.
    fn request<'py>(&self, py: Python<'py>) -> PyResult<Request<'py>> {
        Ok((self.live(py), self.requests(py)))
    }

    /// Bool mask of the prompts that need more rollouts.
    #[getter]
    fn live<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<bool>> {
        to_numpy(py, self.core.live.clone())
    }

    /// Rollouts each prompt should get next (0 once stopped).
    #[getter]
    fn requests<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        to_numpy(py, self.core.wants.iter().map(|&w| i64::from(w)).collect())
    }

    /// Each prompt's consensus answer id (the leader; -1 before any vote).
    #[getter]
    fn consensus<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        to_numpy(py, self.core.consensus.iter().map(|&c| id_out(c)).collect())
    }

    /// The rule's confidence in each prompt's leader, in [0, 1].
    #[getter]
    fn confidence<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        to_numpy(py, self.core.confidence.clone())
    }

    /// Votes counted per prompt.
    #[getter]
    fn votes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let n = self.core.live.len();
        to_numpy(py, (0..n).map(|p| i64::from(self.core.votes(p))).collect())
    }

    /// Round (1-based) in which each prompt stopped; 0 while live.
    #[getter]
    fn stopped_in_round<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        to_numpy(
            py,
            self.core.stopped_in.iter().map(|&r| i64::from(r)).collect(),
        )
    }

    /// Rounds fed so far.
    #[getter]
    fn rounds(&self) -> u32 {
        self.core.rounds
    }

    /// Whether every prompt has stopped.
    #[getter]
    fn done(&self) -> bool {
        !self.core.live.iter().any(|&l| l)
    }

    /// Prompts in the batch.
    #[getter]
    fn prompts(&self) -> usize {
        self.core.live.len()
    }

    /// The stopping rule.
    #[getter]
    fn rule(&self) -> Rule {
        self.rule.clone()
    }

    /// Where the voter runs: "cpu" or "gpu".
    #[getter]
    fn device(&self) -> &'static str {
        device_name(self.core.device())
    }

    /// One prompt's vote table in first-seen order: `(answer_ids, counts)`
    /// (on the GPU, a readback of the tables).
    fn table<'py>(&mut self, py: Python<'py>, prompt: usize) -> PyResult<IdArrays<'py>> {
        let p = u32::try_from(prompt).unwrap_or(u32::MAX);
        let core = &mut self.core;
        let table = py
            .detach(|| core.table(p))
            .map_err(|e| rollcall_error(py, e))?;
        Ok((
            to_numpy(py, table.iter().map(|e| i64::from(e[0])).collect()),
            to_numpy(py, table.iter().map(|e| i64::from(e[1])).collect()),
        ))
    }

    fn __repr__(&self) -> String {
        let live = self.core.live.iter().filter(|&&l| l).count();
        let device = match self.core.device() {
            Device::Cpu => "",
            Device::Gpu => ", device=\"gpu\"",
        };
        format!(
            "Voter(prompts={}, live={live}, rounds={}, rule={}{device})",
            self.core.live.len(),
            self.core.rounds,
            self.rule.__repr__()
        )
    }
}

/// The arguments `replay` and `_twin_replay` share, read and checked.
struct ReplayArgs {
    device: Device,
    rule: Rule,
    fewest: bool,
    chunk: u32,
    capacity: u32,
    ids: Array<i64>,
    prompts: u32,
}

impl ReplayArgs {
    fn read(
        py: Python<'_>,
        answers: &Bound<'_, PyAny>,
        rule: &Bound<'_, PyAny>,
        capacity: u32,
        allocation: &str,
        chunk: u32,
        device: &str,
    ) -> PyResult<Self> {
        let device = Device::parse(py, device)?;
        let rule = rule_arg(py, rule)?;
        let fewest = self::allocation(py, allocation, chunk)?;
        let ids = read_ids(answers, "answers", &[2], " shaped (prompts, votes)")?;
        let prompts = check_sizes(py, ids.rows_cols().0, capacity)?;
        Ok(ReplayArgs {
            device,
            rule,
            fewest,
            chunk,
            capacity,
            ids,
            prompts,
        })
    }

    /// Each row's answers (padding skipped) with their columns.
    fn recorded(&self) -> Vec<Vec<(u32, usize)>> {
        let (rows, cols) = self.ids.rows_cols();
        (0..rows)
            .map(|r| {
                self.ids.data[r * cols..(r + 1) * cols]
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v >= 0)
                    .map(|(c, &v)| (v as u32, c))
                    .collect()
            })
            .collect()
    }
}

/// One-shot replay of recorded answers through a stopping rule.
///
/// `answers`: integer ids shaped (prompts, votes), -1 as padding; each
/// prompt reveals its answers in column order, as many per round as the
/// allocation asks (see `Voter`). A prompt whose recorded answers run out
/// before it stops is marked `exhausted` and keeps its last decision.
/// Returns a dict of arrays: `consensus` (-1: no votes), `confidence`,
/// `votes`, `stopped_in_round`, `exhausted`, `used` (bool, shaped like
/// `answers`: the answers revealed) and `rounds` (an int).
///
/// `device="gpu"` counts and decides on the GPU (rollcall's `VoteTables`,
/// the kernels of its round `Scheduler`: one count, one decide and one small
/// readback per round) and returns the same keys and dtypes. Rules the GPU
/// refuses raise `InvalidRuleError`. Consensus,
/// votes, rounds, `exhausted` and `used` equal the CPU's; `confidence`
/// agrees to 1e-4 (f32 on both sides, the GPU's exp and log differ in the
/// last bits), so Beta and Dirichlet may stop a prompt whose probability is
/// within rounding of the threshold a round apart.
#[pyfunction]
#[pyo3(signature = (answers, rule, *, capacity = 16, allocation = "chunk", chunk = 1, device = "cpu"))]
fn replay<'py>(
    py: Python<'py>,
    answers: &Bound<'py, PyAny>,
    rule: &Bound<'py, PyAny>,
    capacity: u32,
    allocation: &str,
    chunk: u32,
    device: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let args = ReplayArgs::read(py, answers, rule, capacity, allocation, chunk, device)?;
    let (rows, cols) = args.ids.rows_cols();
    let recorded = args.recorded();
    let (core, exhausted, used) = py
        .detach(|| -> Result<(Core, Vec<bool>, Vec<bool>), CallError> {
            let ctx = context_for(args.device, "replay")?;
            let mut core = Core::new(
                args.prompts,
                args.capacity,
                args.rule.config,
                args.fewest,
                args.chunk,
                ctx.as_ref(),
            )?;
            let mut next = vec![0usize; rows];
            let mut exhausted = vec![false; rows];
            let mut used = vec![false; rows * cols];
            loop {
                let mut segments = Vec::new();
                let mut flat = Vec::new();
                for p in 0..rows {
                    if !core.live[p] {
                        continue;
                    }
                    let left = recorded[p].len() - next[p];
                    if left == 0 {
                        exhausted[p] = true;
                        core.live[p] = false;
                        core.wants[p] = 0;
                        core.stopped_in[p] = core.rounds;
                        continue;
                    }
                    let take = (core.wants[p] as usize).min(left);
                    segments.push(Segment {
                        prompt: p as u32,
                        start: flat.len() as u32,
                        count: take as u32,
                    });
                    for &(v, c) in &recorded[p][next[p]..next[p] + take] {
                        flat.push(v);
                        used[p * cols + c] = true;
                    }
                    next[p] += take;
                }
                if segments.is_empty() {
                    return Ok((core, exhausted, used));
                }
                core.feed(&segments, &flat)?;
            }
        })
        .map_err(|e| call_error(py, e))?;
    let out = PyDict::new(py);
    out.set_item(
        "consensus",
        to_numpy(py, core.consensus.iter().map(|&c| id_out(c)).collect()),
    )?;
    out.set_item("confidence", to_numpy(py, core.confidence.clone()))?;
    out.set_item(
        "votes",
        to_numpy(py, (0..rows).map(|p| i64::from(core.votes(p))).collect()),
    )?;
    out.set_item(
        "stopped_in_round",
        to_numpy(py, core.stopped_in.iter().map(|&r| i64::from(r)).collect()),
    )?;
    out.set_item("exhausted", to_numpy(py, exhausted))?;
    out.set_item("used", to_numpy2(py, used, rows, cols)?)?;
    out.set_item("rounds", core.rounds)?;
    Ok(out)
}

/// rollcall's own round loop with a `ReplayEngine`, for the tests: the CPU
/// twin's (`voting::cpu::run`) or, with `device="gpu"`, the GPU's
/// `Scheduler::run`. Every row must hold at least `max_votes` answers.
/// Returns its per-prompt outcome and its rewards and advantages (rollouts
/// grouped by prompt, in revealed order).
#[pyfunction]
#[pyo3(signature = (answers, rule, *, capacity = 16, allocation = "chunk", chunk = 1, device = "cpu"))]
fn _twin_replay<'py>(
    py: Python<'py>,
    answers: &Bound<'py, PyAny>,
    rule: &Bound<'py, PyAny>,
    capacity: u32,
    allocation: &str,
    chunk: u32,
    device: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let args = ReplayArgs::read(py, answers, rule, capacity, allocation, chunk, device)?;
    let recorded: Vec<Vec<u32>> = args
        .recorded()
        .into_iter()
        .map(|row| row.into_iter().map(|(v, _)| v).collect())
        .collect();
    let alloc = if args.fewest {
        Allocation::FewestToPass { first: args.chunk }
    } else {
        Allocation::Chunk(args.chunk)
    };
    let config = args.rule.config;
    let outcome = py
        .detach(|| -> Result<_, CallError> {
            let mut engine = ReplayEngine::new(recorded);
            Ok(match context_for(args.device, "_twin_replay")? {
                None => rollcall::voting::cpu::run(
                    args.prompts,
                    args.capacity,
                    config,
                    alloc,
                    &mut engine,
                )?,
                Some(ctx) => Scheduler::new(&ctx, args.prompts, args.capacity, config, alloc)?
                    .run(&mut engine)?,
            })
        })
        .map_err(|e| call_error(py, e))?;
    let out = PyDict::new(py);
    let p = &outcome.prompts;
    out.set_item(
        "consensus",
        to_numpy(py, p.iter().map(|o| id_out(o.consensus)).collect()),
    )?;
    out.set_item(
        "confidence",
        to_numpy(py, p.iter().map(|o| o.confidence).collect()),
    )?;
    out.set_item(
        "votes",
        to_numpy(py, p.iter().map(|o| i64::from(o.rollouts)).collect()),
    )?;
    out.set_item(
        "stopped_in_round",
        to_numpy(
            py,
            p.iter().map(|o| i64::from(o.stopped_in_round)).collect(),
        ),
    )?;
    out.set_item("rounds", outcome.rounds)?;
    out.set_item("rewards", to_numpy(py, outcome.rewards))?;
    out.set_item("advantages", to_numpy(py, outcome.advantages))?;
    Ok(out)
}

/// The leader of each prompt's table (ties to the answer seen first), or
/// `u32::MAX` without votes.
fn leaders(tables: &VoteTables) -> rollcall::Result<Vec<u32>> {
    (0..tables.prompts())
        .map(|p| {
            let table = tables.table(p)?;
            let mut best: Option<[u32; 2]> = None;
            for e in table {
                if best.is_none_or(|b| e[1] > b[1]) {
                    best = Some(*e);
                }
            }
            Ok(best.map_or(u32::MAX, |b| b[0]))
        })
        .collect()
}

/// TTRL's majority-vote rewards.
///
/// `answers`: integer ids shaped (prompts, votes), -1 as padding.
/// `consensus`: one id per prompt (-1: none, every reward 0), or None to
/// take each prompt's majority answer (ties to the answer seen first; up to
/// 256 distinct answers per prompt are tracked, later new answers count as
/// votes against the leader).
/// Returns `(rewards, consensus)`: float32 rewards shaped like `answers`
/// (1.0 where the answer is its prompt's consensus, 0.0 elsewhere and in
/// padding) and the int64 consensus.
///
/// `device="gpu"` counts the votes and picks the leaders in rollcall's GPU
/// `VoteTables` and computes the rewards there; the results equal the CPU's
/// exactly (ids and 0/1 rewards).
#[pyfunction]
#[pyo3(signature = (answers, consensus = None, *, device = "cpu"))]
fn majority_rewards<'py>(
    py: Python<'py>,
    answers: &Bound<'py, PyAny>,
    consensus: Option<&Bound<'py, PyAny>>,
    device: &str,
) -> PyResult<Rewards<'py>> {
    let device = Device::parse(py, device)?;
    let ids = read_ids(answers, "answers", &[2], " shaped (prompts, votes)")?;
    let (rows, cols) = ids.rows_cols();
    let prompts = check_sizes(py, rows, 1)?;
    let given: Option<Vec<u32>> = match consensus {
        None => None,
        Some(c) => {
            let c = read_ids(c, "consensus", &[1], " with one id per prompt")?;
            if c.data.len() != rows {
                return Err(error(
                    py,
                    "ShapeError",
                    format!(
                        "consensus has {} entries but answers has {rows} rows",
                        c.data.len()
                    ),
                ));
            }
            Some(
                c.data
                    .iter()
                    .map(|&v| if v < 0 { u32::MAX } else { v as u32 })
                    .collect(),
            )
        }
    };
    let (segments, flat, positions) = segments_of(&ids, |r| r as u32);
    let capacity = cols.clamp(1, 256) as u32;
    let (flat_rewards, consensus) = py
        .detach(|| -> Result<(Vec<f32>, Vec<u32>), CallError> {
            if let Some(ctx) = context_for(device, "majority_rewards")? {
                return Ok(gpu_majority(
                    &ctx, prompts, capacity, &segments, &flat, given,
                )?);
            }
            let consensus = match given {
                Some(c) => c,
                None => {
                    let mut tables = VoteTables::new(prompts, capacity)?;
                    tables.count(&RoundVotes {
                        segments: &segments,
                        answers: &flat,
                        tokens: None,
                    })?;
                    leaders(&tables)?
                }
            };
            Ok((
                rewards::majority_rewards(&segments, &flat, &consensus)?,
                consensus,
            ))
        })
        .map_err(|e| call_error(py, e))?;
    let mut out = vec![0.0f32; rows * cols];
    for (&pos, &r) in positions.iter().zip(&flat_rewards) {
        out[pos] = r;
    }
    Ok((
        to_numpy2(py, out, rows, cols)?,
        to_numpy(py, consensus.iter().map(|&c| id_out(c)).collect()),
    ))
}

/// [`majority_rewards`] on the GPU: the votes counted in GPU tables, each
/// prompt's leader from the GPU's decide (any rule's consensus is the
/// leader, ties to the answer seen first), the rewards from the GPU.
fn gpu_majority(
    ctx: &rollcall::GpuContext,
    prompts: u32,
    capacity: u32,
    segments: &[Segment],
    answers: &[u32],
    given: Option<Vec<u32>>,
) -> rollcall::Result<(Vec<f32>, Vec<u32>)> {
    // Given a consensus the tables only carry the prompt count.
    let capacity = if given.is_some() { 1 } else { capacity };
    let mut tables = GpuVoteTables::new(ctx, prompts, capacity)?;
    let consensus = match given {
        Some(c) => c,
        None => {
            tables.count(&RoundVotes {
                segments,
                answers,
                tokens: None,
            })?;
            let all: Vec<u32> = (0..prompts).collect();
            let leader = RuleConfig {
                rule: StopRule::FixedBudget,
                min_votes: 1,
                max_votes: 1,
            };
            tables
                .decide(&leader, &all)?
                .decisions
                .iter()
                .map(|d| d.consensus)
                .collect()
        }
    };
    let (rewards, _) = tables.rewards(segments, answers, Some(&consensus), None, 1e-4)?;
    Ok((rewards, consensus))
}

/// Group ids 0..groups for `index` (any values numpy can sort), via
/// `numpy.unique(index, return_inverse=True)`.
fn group_ids(py: Python<'_>, index: &Bound<'_, PyAny>, len: usize) -> PyResult<Vec<usize>> {
    let np = py.import("numpy")?;
    let arr = np
        .call_method1("asarray", (index,))
        .map_err(|e| error(py, "DTypeError", format!("index: not an array ({e})")))?;
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    if shape != [len] {
        return Err(error(
            py,
            "ShapeError",
            format!("index: expected shape ({len},), one group id per score, got {shape:?}"),
        ));
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("return_inverse", true)?;
    let unique = np
        .call_method("unique", (arr,), Some(&kwargs))
        .map_err(|e| {
            error(
                py,
                "DTypeError",
                format!("index: group ids must be comparable values (numbers or strings): {e}"),
            )
        })?;
    let inverse = unique.get_item(1)?;
    let inverse: crate::Array<i64> = crate::read_ids(&inverse, "index", &[1], "")?;
    Ok(inverse.data.iter().map(|&v| v as usize).collect())
}

/// Advantages for one contiguous layout: `rewards` grouped by `segments`.
fn advantages_of(
    segments: &[Segment],
    rewards_sorted: &[f32],
    epsilon: f32,
    normalise: bool,
    verl: bool,
) -> rollcall::Result<Vec<f32>> {
    let mut adv = if normalise {
        rewards::group_advantages(segments, rewards_sorted, epsilon)?
    } else {
        // Still check epsilon and NaN as the normalised path does.
        rewards::group_advantages(segments, rewards_sorted, epsilon)?;
        let mut out = vec![0.0f32; rewards_sorted.len()];
        for s in segments {
            let range = s.start as usize..(s.start + s.count) as usize;
            let group = &rewards_sorted[range.clone()];
            let mean = group.iter().map(|&r| f64::from(r)).sum::<f64>() / group.len().max(1) as f64;
            for (a, &r) in out[range].iter_mut().zip(group) {
                *a = r - mean as f32;
            }
        }
        out
    };
    for s in segments.iter().filter(|s| s.count == 1) {
        let i = s.start as usize;
        // verl: a group of one has mean 0 and std 1; rollcall: advantage 0.
        adv[i] = match (verl, normalise) {
            (true, true) => rewards_sorted[i] / (1.0 + epsilon),
            (true, false) => rewards_sorted[i],
            (false, _) => 0.0,
        };
    }
    Ok(adv)
}

/// GRPO's group-normalised advantages.
///
/// `scores`: one score per response, 1-D with `index` (one group id per
/// response: any values, e.g. verl's uid strings, not necessarily
/// contiguous), or 2-D (prompts, rollouts) with each row a group and
/// `index=None`. `convention="verl"` follows verl's
/// `compute_grpo_outcome_advantage`: `(s − mean)/(std + epsilon)` with the
/// unbiased std (or `s − mean` when `norm_adv_by_std_in_grpo` is False), and
/// a group of one has mean 0 and std 1. `convention="rollcall"` is
/// rollcall's `group_advantages`: the same formula, but a group of one gets 0.
/// Either way a group whose scores are all equal gets exactly 0.
/// Returns float32 advantages shaped like `scores`.
#[pyfunction]
#[pyo3(signature = (scores, index = None, *, epsilon = 1e-6, norm_adv_by_std_in_grpo = true, convention = "verl"))]
fn grpo_advantages<'py>(
    py: Python<'py>,
    scores: &Bound<'py, PyAny>,
    index: Option<&Bound<'py, PyAny>>,
    epsilon: f64,
    norm_adv_by_std_in_grpo: bool,
    convention: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let verl = match convention {
        "verl" => true,
        "rollcall" => false,
        other => {
            return Err(error(
                py,
                "InvalidValueError",
                format!("convention must be \"verl\" or \"rollcall\", got {other:?}"),
            ))
        }
    };
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(error(
            py,
            "InvalidValueError",
            format!("epsilon must be finite and >= 0, got {epsilon}"),
        ));
    }
    let s = read_f32(scores, "scores", &[1, 2], "")?;
    if let Some(i) = s.data.iter().position(|v| !v.is_finite()) {
        return Err(error(
            py,
            "NonFiniteError",
            format!("scores: entry {i} is {}; scores must be finite", s.data[i]),
        ));
    }
    let n = s.data.len();
    let groups: Vec<usize> = match (s.shape.len(), index) {
        (2, None) => {
            let (_, cols) = s.rows_cols();
            (0..n).map(|i| i / cols.max(1)).collect()
        }
        (2, Some(_)) => {
            return Err(error(
                py,
                "ShapeError",
                "index must be None for 2-D scores (each row is a group)",
            ))
        }
        (_, None) => {
            return Err(error(
                py,
                "ShapeError",
                "1-D scores need index= (a group id per score), or pass scores shaped (prompts, rollouts)",
            ))
        }
        (_, Some(idx)) => group_ids(py, idx, n)?,
    };
    if n > u32::MAX as usize {
        return Err(error(py, "InvalidValueError", "more than 2^32 scores"));
    }
    let epsilon = epsilon as f32;
    let adv = py
        .detach(|| -> rollcall::Result<Vec<f32>> {
            // A stable counting sort by group: segments over contiguous groups.
            let count = groups.iter().copied().max().map_or(0, |g| g + 1);
            let mut sizes = vec![0u32; count];
            for &g in &groups {
                sizes[g] += 1;
            }
            let mut starts = vec![0u32; count];
            let mut acc = 0u32;
            for (g, &size) in sizes.iter().enumerate() {
                starts[g] = acc;
                acc += size;
            }
            let segments: Vec<Segment> = (0..count)
                .map(|g| Segment {
                    prompt: g as u32,
                    start: starts[g],
                    count: sizes[g],
                })
                .collect();
            let mut fill = starts.clone();
            let mut slot = vec![0usize; n];
            let mut sorted = vec![0.0f32; n];
            for (i, &g) in groups.iter().enumerate() {
                slot[i] = fill[g] as usize;
                sorted[slot[i]] = s.data[i];
                fill[g] += 1;
            }
            let adv = advantages_of(&segments, &sorted, epsilon, norm_adv_by_std_in_grpo, verl)?;
            Ok(slot.iter().map(|&k| adv[k]).collect())
        })
        .map_err(|e| rollcall_error(py, e))?;
    let out = to_numpy(py, adv);
    Ok(out.reshape(s.shape.clone())?.into_any())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Voter>()?;
    m.add_function(wrap_pyfunction!(replay, m)?)?;
    m.add_function(wrap_pyfunction!(_twin_replay, m)?)?;
    m.add_function(wrap_pyfunction!(majority_rewards, m)?)?;
    m.add_function(wrap_pyfunction!(grpo_advantages, m)?)?;
    Ok(())
}
