//! `rollcall check`: on whatever adapter the machine has, every kernel
//! family against its CPU twin and every sampling route against the others
//! (the GPU routes and the CPU adapter's, forced either way), on rows with
//! NaN, ±inf and ties; then a benchmark grid. For the first run on a new
//! GPU: one command, one JSON file to share.

use crate::bench::{tail_batch, TAIL_ESTIMATORS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollcall::internals::{CountRoute, DecideRoute, EstimateRoute, RewardRoute, SplitRows};
use rollcall::sampling::{cpu as sampling_cpu, mask, HostMask, SampleOptions};
use rollcall::speculative::{
    cpu as verify_cpu, DraftDistribution, Drafts, Verifier, VerifyOptions,
};
use rollcall::voting::{
    cpu::run as run_cpu, cpu::VoteTables as CpuVoteTables, Allocation, ReplayEngine, RoundVotes,
    RuleConfig, Scheduler, Segment, StopRule, VoteTables,
};
use rollcall::{GpuContext, HostLogits, LogitsDtype, Result, Sampler, SamplingParams};
use std::time::Instant;

/// Decisions closer than this to a tie may go either way between devices
/// (exp and log differ in the last place); they are counted, not compared.
const NEAR_TIE: f32 = 1e-4;

/// One check's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckResult {
    /// What was checked.
    pub name: String,
    /// Whether every comparison held.
    pub passed: bool,
    /// Rows, requests, prompts or segments compared.
    pub compared: u64,
    /// Of those, left out as near ties.
    pub near_ties: u64,
    /// The first difference, or what was covered.
    pub detail: String,
    /// Wall time.
    pub seconds: f64,
}

/// What one check function reports: compared, near ties, and the first
/// difference found (`None`: none).
struct Found {
    compared: u64,
    near_ties: u64,
    first_difference: Option<String>,
    covered: String,
}

impl Found {
    fn new(covered: impl Into<String>) -> Self {
        Self {
            compared: 0,
            near_ties: 0,
            first_difference: None,
            covered: covered.into(),
        }
    }

    fn differ(&mut self, what: String) {
        if self.first_difference.is_none() {
            self.first_difference = Some(what);
        }
    }
}

/// Runs every check on `ctx` (`quick`: smaller inputs), calling `progress`
/// before each.
pub fn run_checks(
    ctx: &GpuContext,
    quick: bool,
    mut progress: impl FnMut(&str),
) -> Vec<CheckResult> {
    type CheckFn = fn(&GpuContext, bool) -> Result<Found>;
    let checks: [(&str, CheckFn); 7] = [
        (
            "sampling: every route against the others and the twin",
            sampling_routes,
        ),
        (
            "sampling: masks, penalties, top-20 log-probabilities",
            sampling_features,
        ),
        ("speculative verification against the twin", speculative),
        ("voting scheduler against the twin", voting),
        ("calibrated rule's rounds against the twin", calibrated),
        ("best-of-N tail estimators against the twin", tail),
        ("stream compaction against the twin", compaction),
    ];
    checks
        .iter()
        .map(|(name, check)| {
            progress(name);
            let start = Instant::now();
            let outcome = check(ctx, quick);
            let seconds = start.elapsed().as_secs_f64();
            match outcome {
                Ok(found) => CheckResult {
                    name: name.to_string(),
                    passed: found.first_difference.is_none() && found.compared > 0,
                    compared: found.compared,
                    near_ties: found.near_ties,
                    detail: found.first_difference.unwrap_or(found.covered),
                    seconds,
                },
                Err(e) => CheckResult {
                    name: name.to_string(),
                    passed: false,
                    compared: 0,
                    near_ties: 0,
                    detail: format!("error: {e}"),
                    seconds,
                },
            }
        })
        .collect()
}

/// Logits like a model's (a heavy head over a Gaussian-ish body), with
/// special rows: all NaN and −inf, one +inf, exact ties at the top.
fn test_logits(rng: &mut ChaCha8Rng, rows: usize, vocab: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * vocab);
    for r in 0..rows {
        let mut row: Vec<f32> = (0..vocab).map(|_| rng.random_range(-4.0f32..2.0)).collect();
        for _ in 0..vocab.min(40) {
            let i = rng.random_range(0..vocab);
            row[i] = rng.random_range(4.0f32..12.0);
        }
        match r % 8 {
            5 => row.iter_mut().enumerate().for_each(|(i, x)| {
                *x = if i % 3 == 0 {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                }
            }),
            6 => row[rng.random_range(0..vocab)] = f32::INFINITY,
            7 if vocab > 2 => {
                let top = row.iter().copied().fold(f32::MIN, f32::max) + 1.0;
                row[0] = top;
                row[vocab - 1] = top;
            }
            _ => {}
        }
        out.extend(row);
    }
    out
}

fn test_params(rng: &mut ChaCha8Rng, rows: usize) -> Vec<SamplingParams> {
    (0..rows)
        .map(|r| {
            let p = SamplingParams::new([0.0, 0.7, 1.0, 1.5][r % 4])
                .seed(rng.random())
                .step(r as u64);
            match r % 5 {
                1 => p.top_k(40),
                2 => p.top_p(0.9),
                3 => p.top_k(50).top_p(0.95).min_p(0.02),
                4 => p.top_n_sigma(1.0),
                _ => p,
            }
        })
        .collect()
}

/// Logits of one dtype, owned.
enum Owned {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    Bf16(Vec<half::bf16>),
}

impl Owned {
    fn new(values: &[f32], dtype: LogitsDtype) -> Self {
        match dtype {
            LogitsDtype::F32 => Owned::F32(values.to_vec()),
            LogitsDtype::F16 => {
                Owned::F16(values.iter().map(|&x| half::f16::from_f32(x)).collect())
            }
            LogitsDtype::Bf16 => {
                Owned::Bf16(values.iter().map(|&x| half::bf16::from_f32(x)).collect())
            }
        }
    }

    fn view(&self) -> HostLogits<'_> {
        match self {
            Owned::F32(v) => HostLogits::F32(v),
            Owned::F16(v) => HostLogits::F16(v),
            Owned::Bf16(v) => HostLogits::Bf16(v),
        }
    }
}

/// Compares a GPU row with the twin's trace: tokens, kept counts and status
/// exactly, log-probabilities within 2e-4, near ties counted instead.
fn compare_row(
    found: &mut Found,
    gpu: &rollcall::SampleResult,
    trace: &sampling_cpu::RowTrace,
    what: impl Fn() -> String,
) {
    found.compared += 1;
    if trace.is_near_tie(NEAR_TIE) {
        found.near_ties += 1;
        return;
    }
    let twin = &trace.result;
    let logprob_close = gpu.logprob.to_bits() == twin.logprob.to_bits()
        || (gpu.logprob - twin.logprob).abs() <= 2e-4 * twin.logprob.abs().max(1.0);
    if gpu.token != twin.token
        || gpu.status != twin.status
        || gpu.kept != twin.kept
        || !logprob_close
    {
        found.differ(format!("{}: gpu {gpu:?}, twin {twin:?}", what()));
    }
}

fn sampling_routes(ctx: &GpuContext, quick: bool) -> Result<Found> {
    let routes = [
        ("cpu/split", SplitRows::Always, true),
        ("cpu/separate first pass", SplitRows::Never, true),
        ("cpu/fused", SplitRows::Fused, true),
        ("gpu/split", SplitRows::Always, false),
        ("gpu/separate first pass", SplitRows::Never, false),
        ("gpu/fused", SplitRows::Fused, false),
    ];
    let mut samplers: Vec<(&str, Sampler)> = Vec::new();
    for (name, split, cpu) in routes {
        samplers.push((
            name,
            Sampler::new(ctx)?
                .with_split_rows(split)
                .with_cpu_routes(cpu),
        ));
    }
    let vocabs: &[usize] = if quick {
        &[1, 1000, 40_000]
    } else {
        &[1, 1000, 40_000, 128_256]
    };
    let rows = if quick { 16 } else { 40 };
    let mut found = Found::new(format!(
        "{} routes, vocabularies {vocabs:?}, f32/f16/bf16, greedy/temperature/top-k/top-p/min-p/top-nσ, NaN, ±inf and tied rows",
        routes.len()
    ));
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for &vocab in vocabs {
        let values = test_logits(&mut rng, rows, vocab);
        let params = test_params(&mut rng, rows);
        for dtype in LogitsDtype::ALL {
            let logits = Owned::new(&values, dtype);
            let (traces, _) = sampling_cpu::sample_traced_with(
                logits.view(),
                vocab as u32,
                &params,
                &SampleOptions::default(),
            )?;
            let mut first: Option<Vec<rollcall::SampleResult>> = None;
            for (name, sampler) in &mut samplers {
                let out = sampler.sample(logits.view(), vocab as u32, &params)?;
                match &first {
                    None => {
                        for (r, (g, t)) in out.iter().zip(&traces).enumerate() {
                            compare_row(&mut found, g, t, || {
                                format!("{name} vocab {vocab} {dtype:?} row {r}")
                            });
                        }
                        first = Some(out);
                    }
                    Some(reference) => {
                        // Routes agree bit for bit, ties and all.
                        for (r, (a, b)) in out.iter().zip(reference).enumerate() {
                            found.compared += 1;
                            if (a.token, a.kept, a.status, a.logprob.to_bits())
                                != (b.token, b.kept, b.status, b.logprob.to_bits())
                            {
                                found.differ(format!(
                                    "route {name} against {}: vocab {vocab} {dtype:?} row {r}: {a:?} vs {b:?}",
                                    routes[0].0
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// A row's history tokens (prompt then output) and biases.
type PenaltyHistory = (Vec<u32>, Vec<(u32, f32)>);

fn sampling_features(ctx: &GpuContext, quick: bool) -> Result<Found> {
    let mut sampler = Sampler::new(ctx)?;
    let (rows, vocab) = if quick { (12, 5_000) } else { (32, 128_256) };
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let values = test_logits(&mut rng, rows, vocab);
    let params: Vec<SamplingParams> = test_params(&mut rng, rows)
        .into_iter()
        .enumerate()
        .map(|(r, p)| {
            let p = p.top_logprobs(20);
            if r % 2 == 0 {
                p.penalties(1.2, 0.5, 0.3)
            } else {
                p
            }
        })
        .collect();
    let v = vocab as u32;
    let histories_tokens: Vec<PenaltyHistory> = (0..rows)
        .map(|_| {
            let tokens = (0..300).map(|_| rng.random_range(0..v)).collect();
            let bias = (0..8)
                .map(|_| (rng.random_range(0..v), rng.random_range(-3.0f32..3.0)))
                .collect();
            (tokens, bias)
        })
        .collect();
    let histories: Vec<rollcall::sampling::RowHistory> = histories_tokens
        .iter()
        .map(|(tokens, bias)| rollcall::sampling::RowHistory {
            prompt: &tokens[..200],
            output: &tokens[200..],
            logit_bias: bias,
            ..Default::default()
        })
        .collect();
    let mut words = Vec::new();
    let mut mask_rows = Vec::new();
    for r in 0..rows {
        if r % 3 == 0 {
            mask_rows.push(None);
        } else {
            let allowed: Vec<u32> = (0..v).filter(|_| rng.random_bool(0.3)).collect();
            mask_rows.push(Some((words.len() / mask::words_per_row(v)) as u32));
            words.extend(mask::allow_only(v, &allowed)?);
        }
    }
    let options = SampleOptions::default()
        .mask(HostMask {
            words: &words,
            rows: &mask_rows,
        })
        .histories(&histories);
    let mut found = Found::new(format!("{rows} rows x {vocab}: bitmasks, bias, penalties over a 300-token history, top-20 log-probabilities"));
    let gpu = sampler.sample_with(HostLogits::F32(&values), v, &params, &options)?;
    let (traces, tops) =
        sampling_cpu::sample_traced_with(HostLogits::F32(&values), v, &params, &options)?;
    for (r, (g, t)) in gpu.results.iter().zip(&traces).enumerate() {
        compare_row(&mut found, g, t, || format!("row {r}"));
        if t.is_near_tie(NEAR_TIE) {
            continue;
        }
        let (a, b) = (&gpu.top_logprobs[r], &tops[r]);
        let same = a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                let same_value = x.logprob.to_bits() == y.logprob.to_bits()
                    || (x.logprob - y.logprob).abs() <= 2e-4 * y.logprob.abs().max(1.0);
                // Tokens may trade places only within rounding of each other.
                same_value
                    && (x.token == y.token
                        || x.logprob.to_bits() == y.logprob.to_bits()
                        || (x.logprob - y.logprob).abs() < 1e-5)
            });
        if !same {
            found.differ(format!(
                "row {r} top log-probabilities: gpu {a:?}, twin {b:?}"
            ));
        }
    }
    Ok(found)
}

fn speculative(ctx: &GpuContext, quick: bool) -> Result<Found> {
    let mut verifier = Verifier::new(ctx)?;
    let (requests, vocab) = if quick { (12, 2_000) } else { (48, 128_256) };
    let k = 4u32;
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let lens: Vec<u32> = (0..requests).map(|_| rng.random_range(0..=k)).collect();
    let targets: usize = lens.iter().map(|&d| d as usize + 1).sum();
    let drafts_total: usize = lens.iter().map(|&d| d as usize).sum();
    let target = test_logits(&mut rng, targets, vocab);
    let draft = test_logits(&mut rng, drafts_total, vocab);
    let probs: Vec<f32> = draft
        .chunks(vocab)
        .flat_map(|row| {
            let m = row
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .fold(f32::MIN, f32::max);
            let e: Vec<f32> = row
                .iter()
                .map(|&x| if x.is_finite() { (x - m).exp() } else { 0.0 })
                .collect();
            let s: f32 = e.iter().sum();
            e.into_iter()
                .map(move |x| if s > 0.0 { x / s } else { 0.0 })
                .collect::<Vec<_>>()
        })
        .collect();
    let tokens: Vec<u32> = (0..drafts_total)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    let params = test_params(&mut rng, requests);
    let drafts = Drafts {
        tokens: &tokens,
        lens: &lens,
    };
    let mut found = Found::new(format!(
        "{requests} requests of 0..{k} drafts x {vocab}: deterministic drafts, draft logits, draft probabilities"
    ));
    for (kind, distribution) in [
        ("deterministic", DraftDistribution::Deterministic),
        (
            "draft logits",
            DraftDistribution::Logits(HostLogits::F32(&draft)),
        ),
        (
            "draft probabilities",
            DraftDistribution::Probs(HostLogits::F32(&probs)),
        ),
    ] {
        let options = VerifyOptions {
            draft: distribution,
            mask: None,
            histories: None,
        };
        let gpu = verifier.verify(
            HostLogits::F32(&target),
            vocab as u32,
            &params,
            &drafts,
            &options,
        )?;
        let twin = verify_cpu::verify_traced(
            HostLogits::F32(&target),
            vocab as u32,
            &params,
            &drafts,
            &options,
        )?;
        for (r, (g, t)) in gpu.iter().zip(&twin).enumerate() {
            found.compared += 1;
            if t.margin < NEAR_TIE {
                found.near_ties += 1;
                continue;
            }
            let c = &t.verification;
            let close = g.logprobs.len() == c.logprobs.len()
                && g.logprobs.iter().zip(&c.logprobs).all(|(a, b)| {
                    a.to_bits() == b.to_bits() || (a - b).abs() <= 2e-4 * b.abs().max(1.0)
                });
            if g.accepted != c.accepted || g.tokens != c.tokens || g.status != c.status || !close {
                found.differ(format!("{kind} request {r}: gpu {g:?}, twin {c:?}"));
            }
        }
    }
    Ok(found)
}

fn voting(ctx: &GpuContext, quick: bool) -> Result<Found> {
    let prompts = if quick { 2_000 } else { 50_000 };
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    // Skewed answers: some prompts decisive, some split.
    let answers: Vec<Vec<u32>> = (0..prompts)
        .map(|p| {
            let spread = 1 + p % 6;
            (0..32).map(|_| rng.random_range(0..spread)).collect()
        })
        .collect();
    // Integer rules: the GPU and the twin decide exactly alike.
    let mut found = Found::new(format!("{prompts} prompts x up to 32 votes: ESC window 4, fixed budget; consensus, rollouts, rounds, rewards, advantages; vote tables on both counting routes; decisions and fewest votes on both decide routes (SPRT, Beta 0.95, majority 0.8, ESC 4; a budget of 100); GRPO rewards on both reward routes"));
    // The vote tables on both counting routes: a round of 28 votes a prompt
    // (as an RL batch sends), then one of 4 (as the scheduler does).
    for route in [CountRoute::PerInvocation, CountRoute::PerWorkgroup] {
        let mut gpu = VoteTables::new(ctx, prompts, 8)?.with_count_route(route);
        let mut twin = CpuVoteTables::new(prompts, 8)?;
        for votes in [0..28, 28..32] {
            let mut segments = Vec::new();
            let mut round = Vec::new();
            for (p, all) in answers.iter().enumerate() {
                segments.push(Segment {
                    prompt: p as u32,
                    start: round.len() as u32,
                    count: votes.len() as u32,
                });
                round.extend(&all[votes.clone()]);
            }
            let round = RoundVotes {
                segments: &segments,
                answers: &round,
                tokens: None,
            };
            gpu.count(&round)?;
            twin.count(&round)?;
        }
        let (totals, tables) = gpu.read()?;
        for p in 0..prompts {
            found.compared += 1;
            let used = totals[p as usize].distinct as usize;
            let table = &tables[p as usize * 8..][..used];
            if &totals[p as usize] != twin.votes(p)? || table != twin.table(p)? {
                found.differ(format!(
                    "{route:?} prompt {p}: vote table differs from the twin"
                ));
            }
        }
    }
    found = decide_routes(ctx, prompts, &answers, found)?;
    found = reward_routes(ctx, prompts, &answers, found)?;
    for rule in [StopRule::EscWindow { window: 4 }, StopRule::FixedBudget] {
        let config = RuleConfig {
            rule,
            min_votes: 2,
            max_votes: 32,
        };
        let mut scheduler = Scheduler::new(ctx, prompts, 8, config, Allocation::Chunk(4))?;
        let gpu = scheduler.run(&mut ReplayEngine::new(answers.clone()))?;
        let twin = run_cpu(
            prompts,
            8,
            config,
            Allocation::Chunk(4),
            &mut ReplayEngine::new(answers.clone()),
        )?;
        for (p, (g, t)) in gpu.prompts.iter().zip(&twin.prompts).enumerate() {
            found.compared += 1;
            if (g.consensus, g.rollouts, g.stopped_in_round)
                != (t.consensus, t.rollouts, t.stopped_in_round)
            {
                found.differ(format!("{rule:?} prompt {p}: gpu {g:?}, twin {t:?}"));
            }
        }
        if gpu.rewards != twin.rewards {
            found.differ(format!("{rule:?}: rewards differ"));
        }
        let advantages_close = gpu.advantages.len() == twin.advantages.len()
            && gpu
                .advantages
                .iter()
                .zip(&twin.advantages)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * b.abs().max(1.0));
        if !advantages_close {
            found.differ(format!("{rule:?}: advantages differ"));
        }
    }
    Ok(found)
}

/// The calibrated rule's rounds (EM refit and decisions) on the GPU against
/// the f64 twin on the same tables: weights within 2e-5, risks within 2e-4,
/// decisions alike unless the twin's risk is within 2e-4 of δ (a near tie).
fn calibrated(ctx: &GpuContext, quick: bool) -> Result<Found> {
    use rollcall::voting::calibrated::{CalibratedRounds, CalibratedRoundsGpu};
    const WEIGHT_TOLERANCE: f64 = 2e-5;
    const RISK_TOLERANCE: f32 = 2e-4;
    let prompts: u32 = if quick { 500 } else { 4_000 };
    let (delta, capacity) = (0.01f32, 16);
    let config = RuleConfig {
        rule: StopRule::Calibrated { delta },
        min_votes: 2,
        max_votes: 40,
    };
    let mut found = Found::new(format!(
        "{prompts} prompts, 6 rounds of 0 to 4 votes, budget 40, delta 1 %: weights, risks, decisions"
    ));
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    let mut gpu_tables = VoteTables::new(ctx, prompts, capacity)?;
    let mut cpu_tables = CpuVoteTables::new(prompts, capacity)?;
    let mut gpu = CalibratedRoundsGpu::new(&gpu_tables, &config)?;
    let mut twin = CalibratedRounds::new(&config)?;
    let mut totals = vec![0u32; prompts as usize];
    for round in 0..6 {
        let mut segments = Vec::new();
        let mut answers = Vec::new();
        for p in 0..prompts {
            let count = rng.random_range(0..=4u32).min(40 - totals[p as usize]);
            if count == 0 {
                continue;
            }
            segments.push(Segment {
                prompt: p,
                start: answers.len() as u32,
                count,
            });
            let spread = 1 + p % 5 * 3;
            answers.extend(
                (0..count).map(|_| rng.random_range(0..spread).min(rng.random_range(0..spread))),
            );
            totals[p as usize] += count;
        }
        let votes = RoundVotes {
            segments: &segments,
            answers: &answers,
            tokens: None,
        };
        gpu_tables.count(&votes)?;
        cpu_tables.count(&votes)?;
        let live: Vec<u32> = (0..prompts).collect();
        let (decisions, weights) = gpu.decide_round(&gpu_tables, &live)?;
        let expected = twin.decide_round(&cpu_tables, &live)?;
        for (g, (&w, &c)) in weights.iter().zip(twin.prior().weights()).enumerate() {
            if (f64::from(w) - c).abs() > WEIGHT_TOLERANCE {
                found.differ(format!("round {round}: weight {g}: gpu {w}, twin {c}"));
            }
        }
        for ((g, c), p) in decisions.iter().zip(&expected).zip(0..) {
            found.compared += 1;
            let (risk, twin_risk) = (1.0 - g.confidence, 1.0 - c.confidence);
            if (g.consensus, g.votes) != (c.consensus, c.votes)
                || (risk - twin_risk).abs() > RISK_TOLERANCE
            {
                found.differ(format!("round {round}, prompt {p}: gpu {g:?}, twin {c:?}"));
            } else if (twin_risk - delta).abs() <= RISK_TOLERANCE {
                found.near_ties += 1;
            } else if g.stopped != c.stopped {
                found.differ(format!(
                    "round {round}, prompt {p}: gpu stopped {}, twin {}",
                    g.stopped, c.stopped
                ));
            }
        }
    }
    Ok(found)
}

/// The rule on both decide routes over every prompt's 32 votes: the routes
/// alike bit for bit, and the twin's decisions and fewest votes (a budget of
/// 100 puts ConSol's fewest-votes search past the workgroup route's first
/// chunk of 64); a Beta probability within [`NEAR_TIE`] of its threshold is
/// a near tie.
fn decide_routes(
    ctx: &GpuContext,
    prompts: u32,
    answers: &[Vec<u32>],
    mut found: Found,
) -> Result<Found> {
    let mut twin = CpuVoteTables::new(prompts, 8)?;
    let mut tables = Vec::new();
    for route in [DecideRoute::PerInvocation, DecideRoute::PerWorkgroup] {
        tables.push((
            route,
            VoteTables::new(ctx, prompts, 8)?.with_decide_route(route),
        ));
    }
    let segments: Vec<Segment> = (0..prompts)
        .map(|p| Segment {
            prompt: p,
            start: p * 32,
            count: 32,
        })
        .collect();
    let all: Vec<u32> = answers.concat();
    let round = RoundVotes {
        segments: &segments,
        answers: &all,
        tokens: None,
    };
    twin.count(&round)?;
    for (_, gpu) in &mut tables {
        gpu.count(&round)?;
    }
    let list: Vec<u32> = (0..prompts).collect();
    let rules = [
        StopRule::CONSOL_SPRT,
        StopRule::Beta {
            threshold: 0.95,
            prior: 1.0,
        },
        StopRule::Majority { share: 0.8 },
        StopRule::EscWindow { window: 4 },
    ];
    for rule in rules {
        let config = RuleConfig {
            rule,
            min_votes: 2,
            max_votes: 100,
        };
        let mut first: Option<rollcall::voting::DecideReadback> = None;
        for (route, gpu) in &mut tables {
            let got = gpu.decide(&config, &list)?;
            for (i, &p) in list.iter().enumerate() {
                found.compared += 1;
                let (d, live) = (got.decisions[i], got.keep[i] == 1);
                let t = twin.decide(&config, p)?;
                if let Some(f) = &first {
                    let e = f.decisions[i];
                    let same = (d.stopped, d.consensus, d.confidence.to_bits(), d.votes)
                        == (e.stopped, e.consensus, e.confidence.to_bits(), e.votes)
                        && got.keep[i] == f.keep[i]
                        && (!live || got.next[i] == f.next[i]);
                    if !same {
                        found.differ(format!(
                            "{route:?} {rule:?} prompt {p}: {d:?} next {} against the other route's {e:?} next {}",
                            got.next[i], f.next[i]
                        ));
                    }
                }
                if let StopRule::Beta { threshold, .. } = rule {
                    if (t.confidence - threshold).abs() < NEAR_TIE {
                        found.near_ties += 1;
                        continue;
                    }
                }
                let agrees = (d.stopped, d.consensus, d.votes) == (t.stopped, t.consensus, t.votes)
                    && live != t.stopped
                    && (!live || got.next[i] == t.next)
                    && (d.confidence - t.confidence).abs() <= NEAR_TIE;
                if !agrees {
                    found.differ(format!(
                        "{route:?} {rule:?} prompt {p}: gpu {d:?} next {}, twin {t:?}",
                        got.next[i]
                    ));
                }
            }
            first.get_or_insert(got);
        }
    }
    Ok(found)
}

/// GRPO's rewards and advantages on both reward routes over every prompt's
/// 32 votes (majority rewards), then over given rewards with ties, ±0 and
/// ±inf in groups of 1 to 129: the routes alike bit for bit (NaN as NaN),
/// the twin's rewards exactly and advantages to 1e-5.
fn reward_routes(
    ctx: &GpuContext,
    prompts: u32,
    answers: &[Vec<u32>],
    mut found: Found,
) -> Result<Found> {
    use rollcall::voting::rewards::{group_advantages, majority_rewards};
    let all: Vec<u32> = answers.concat();
    let majority: Vec<Segment> = (0..prompts)
        .map(|p| Segment {
            prompt: p,
            start: p * 32,
            count: 32,
        })
        .collect();
    let consensus: Vec<u32> = answers.iter().map(|a| a[0]).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let mut given_segments = Vec::new();
    let mut n = 0u32;
    for p in 0..prompts.min(2_000) {
        let count = [1, 2, 63, 64, 65, 129][p as usize % 6];
        given_segments.push(Segment {
            prompt: p,
            start: n,
            count,
        });
        n += count;
    }
    let given: Vec<f32> = (0..n)
        .map(|_| match rng.random_range(0..50) {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => -0.0,
            3..=20 => 0.5,
            _ => rng.random_range(-2.0f32..2.0),
        })
        .collect();
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    // (segments, answers, consensus, given rewards).
    type RewardCase<'a> = (
        &'a [Segment],
        &'a [u32],
        Option<&'a [u32]>,
        Option<&'a [f32]>,
    );
    let cases: [RewardCase; 2] = [
        (&majority, &all, Some(&consensus), None),
        (&given_segments, &[], None, Some(&given)),
    ];
    for (segments, votes, c, g) in cases {
        let want_rewards = match (c, g) {
            (Some(c), _) => majority_rewards(segments, votes, c)?,
            (_, Some(g)) => g.to_vec(),
            _ => unreachable!("each case has a reward source"),
        };
        let want = group_advantages(segments, &want_rewards, 1e-4)?;
        let mut first: Option<Vec<f32>> = None;
        for route in [RewardRoute::PerInvocation, RewardRoute::PerWorkgroup] {
            let mut gpu = VoteTables::new(ctx, prompts, 8)?.with_reward_route(route);
            let (rewards, advantages) = gpu.rewards(segments, votes, c, g, 1e-4)?;
            found.compared += segments.len() as u64;
            if let Some(i) = (0..rewards.len()).find(|&i| {
                !same(rewards[i], want_rewards[i])
                    || !(same(advantages[i], want[i])
                        || (advantages[i] - want[i]).abs() <= 1e-5 * want[i].abs().max(1.0))
            }) {
                found.differ(format!(
                    "{route:?} rollout {i}: reward {} advantage {}, twin {} {}",
                    rewards[i], advantages[i], want_rewards[i], want[i]
                ));
            }
            if let Some(f) = &first {
                if let Some(i) = (0..advantages.len()).find(|&i| !same(advantages[i], f[i])) {
                    found.differ(format!(
                        "{route:?} rollout {i}: advantage {} against the other route's {}",
                        advantages[i], f[i]
                    ));
                }
            }
            first.get_or_insert(advantages);
        }
    }
    Ok(found)
}

fn tail(ctx: &GpuContext, quick: bool) -> Result<Found> {
    let (segments, m) = if quick { (256, 64) } else { (4_096, 64) };
    let (mut rewards, offsets) = tail_batch(segments, m);
    // Ties: a tenth of the rewards on a grid of ten values.
    for (i, x) in rewards.iter_mut().enumerate() {
        if i % 10 == 0 {
            *x = (*x * 10.0).floor() / 10.0;
        }
    }
    let mut routes = Vec::new();
    for route in [EstimateRoute::PerInvocation, EstimateRoute::PerWorkgroup] {
        routes.push((
            route,
            rollcall::tail::TailStats::new(ctx)?.with_estimate_route(route),
        ));
    }
    let mut found = Found::new(format!(
        "{segments} segments x {m}, with ties: {} estimators on both estimate routes (alike bit for bit)",
        TAIL_ESTIMATORS.len() + 3
    ));
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let estimators = TAIL_ESTIMATORS.into_iter().chain([
        rollcall::tail::Estimator::PassAtK {
            k: 4,
            threshold: 0.5,
        },
        rollcall::tail::Estimator::PrefixTea {
            n: 128,
            alpha: 0.25,
            prefixes: 4,
        },
        rollcall::tail::Estimator::Grpo { eps: 1e-4 },
    ]);
    for est in estimators {
        let twin = rollcall::tail::cpu::estimate(&rewards, &offsets, est)?;
        let mut first: Option<rollcall::tail::Estimates> = None;
        for (route, stats) in &mut routes {
            let gpu = stats.estimate(&rewards, &offsets, est)?;
            if let Some(f) = &first {
                let values = (0..f.values.len()).find(|&s| !same(f.values[s], gpu.values[s]));
                let advantages =
                    (0..f.advantages.len()).find(|&i| !same(f.advantages[i], gpu.advantages[i]));
                if f.status != gpu.status || values.is_some() || advantages.is_some() {
                    found.differ(format!(
                    "{} {route:?}: differs from the other route (segment {values:?}, rollout {advantages:?})",
                    est.name()
                ));
                }
            }
            // Differences relative to the segment's scale (its largest reward,
            // advantage or value), as the tail tests measure them; the GPD's
            // jackknife advantages (differences of moments scaled by m − 1)
            // are allowed 1e-3 of it more.
            let jackknife = matches!(est, rollcall::tail::Estimator::Gpd { .. });
            for (s, w) in offsets.windows(2).enumerate() {
                let (start, end) = (w[0] as usize, w[1] as usize);
                let scale = rewards[start..end]
                    .iter()
                    .chain(&twin.advantages[start..end])
                    .chain(std::iter::once(&twin.values[s]))
                    .filter(|x| x.is_finite())
                    .fold(1.0f32, |a, &x| a.max(x.abs()));
                let (g, c) = (gpu.values[s], twin.values[s]);
                found.compared += 1;
                if gpu.status[s] != twin.status[s]
                    || !((g.is_nan() && c.is_nan()) || (g - c).abs() <= 1e-4 * scale)
                {
                    found.differ(format!("{} segment {s}: gpu {g} vs twin {c}", est.name()));
                }
                let allowed = 1e-4 * scale + if jackknife { 1e-3 * scale } else { 0.0 };
                if let Some(i) =
                    (start..end).find(|&i| (gpu.advantages[i] - twin.advantages[i]).abs() > allowed)
                {
                    found.differ(format!(
                        "{} segment {s} rollout {}: advantage {} vs twin {}",
                        est.name(),
                        i - start,
                        gpu.advantages[i],
                        twin.advantages[i]
                    ));
                }
            }
            first.get_or_insert(gpu);
        }
    }
    Ok(found)
}

fn compaction(ctx: &GpuContext, quick: bool) -> Result<Found> {
    let compactor = rollcall::compact::Compactor::new(ctx)?;
    let mut found = Found::new("flags of 1, 8 191, 8 193 and 10^5 (10^6) entries, half kept");
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    let sizes: &[usize] = if quick {
        &[1, 8_191, 8_193, 100_000]
    } else {
        &[1, 8_191, 8_193, 1_000_000]
    };
    for &n in sizes {
        let flags: Vec<u32> = (0..n).map(|_| u32::from(rng.random_bool(0.5))).collect();
        let gpu = compactor.compact(&flags)?;
        let twin = rollcall::compact::cpu::compact(&flags);
        found.compared += 1;
        if gpu != twin {
            found.differ(format!("{n} flags: the kept positions differ"));
        }
    }
    Ok(found)
}

/// The benchmark rows the check runs: the headline workloads, a few minutes
/// on lavapipe.
pub const BENCH_ROWS: [&str; 9] = [
    "plain T=1, f32 256 x 128256 model",
    "top-k 50 + top-p 0.9, f32 256 x 128256 model",
    "greedy, f32 256 x 128256 model",
    "plain T=1, bf16 256 x 128256 model",
    "speculative k=4, deterministic drafts",
    "1000000 prompts",
    "1024 prompts, ",
    "1000000 flags",
    "4096 x 64",
];
