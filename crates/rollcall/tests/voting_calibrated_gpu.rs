//! The calibrated rule on the GPU against its f64 CPU twin: round by round
//! on the same tables (weights, confidences, decisions) over awkward shapes,
//! and whole batches through the scheduler.

mod common;

use rand::Rng;
use rollcall::voting::calibrated::{CalibratedRounds, CalibratedRoundsGpu, COMPONENTS};
use rollcall::voting::cpu::{run as run_cpu, VoteTables as CpuVoteTables};
use rollcall::voting::{
    Allocation, ReplayEngine, RoundVotes, RuleConfig, Scheduler, Segment, StopRule, VoteTables,
};

/// Weights: the GPU sums posteriors in f32 in its own order (measured gap
/// on lavapipe: 4e-7).
const WEIGHT_TOLERANCE: f32 = 2e-5;
/// Risk (1 − confidence): f32 exps and logs of log-likelihoods of a few
/// hundred in magnitude (measured gap on lavapipe: 5e-6).
const RISK_TOLERANCE: f32 = 2e-4;

fn config(delta: f32, min_votes: u32, budget: u32) -> RuleConfig {
    RuleConfig {
        rule: StopRule::Calibrated { delta },
        min_votes,
        max_votes: budget,
    }
}

/// One round of votes for the prompts below the budget: 0 to 4 each, from
/// unanimous (prompt 0 mod 5) to split prompts, some answers past a small
/// table's capacity.
fn round_of(
    prompts: u32,
    totals: &mut [u32],
    budget: u32,
    rng: &mut impl Rng,
) -> (Vec<Segment>, Vec<u32>) {
    let mut segments = Vec::new();
    let mut answers = Vec::new();
    for p in 0..prompts {
        let room = budget - totals[p as usize];
        let count = rng.random_range(0..=4u32).min(room);
        if count == 0 {
            continue;
        }
        segments.push(Segment {
            prompt: p,
            start: answers.len() as u32,
            count,
        });
        let spread = 1 + p % 5 * 3;
        for _ in 0..count {
            answers.push(rng.random_range(0..spread).min(rng.random_range(0..spread)));
        }
        totals[p as usize] += count;
    }
    (segments, answers)
}

#[test]
fn gpu_rounds_match_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(21);
    let mut compared = 0;
    let mut stops = 0;
    let (mut worst_weight, mut worst_risk) = (0f32, 0f32);
    for (prompts, capacity, budget, delta, min_votes) in [
        (0, 16, 10, 0.01, 1),
        (1, 16, 40, 0.01, 1),
        (63, 4, 12, 0.05, 3),
        (65, 16, 40, 0.005, 2),
        (300, 16, 40, 0.02, 1),
        (130, 1, 7, 0.1, 1),
        (70, 64, 64, 0.01, 1),
        // Past one expect workgroup's 1 024 prompts, the last one partial.
        (2500, 16, 40, 0.01, 2),
    ] {
        let config = config(delta, min_votes, budget);
        let mut gpu_tables = VoteTables::new(&ctx, prompts, capacity).unwrap();
        let mut cpu_tables = CpuVoteTables::new(prompts, capacity).unwrap();
        let mut gpu = CalibratedRoundsGpu::new(&gpu_tables, &config).unwrap();
        let mut twin = CalibratedRounds::new(&config).unwrap();
        let mut totals = vec![0u32; prompts as usize];
        for round in 0..6 {
            let (segments, answers) = round_of(prompts, &mut totals, budget, &mut rng);
            let votes = RoundVotes {
                segments: &segments,
                answers: &answers,
                tokens: None,
            };
            gpu_tables.count(&votes).unwrap();
            cpu_tables.count(&votes).unwrap();
            // Live: a random subset in a random order.
            let mut live: Vec<u32> = (0..prompts).filter(|_| rng.random::<f32>() < 0.7).collect();
            for i in (1..live.len()).rev() {
                live.swap(i, rng.random_range(0..=i));
            }
            let (decisions, weights) = gpu.decide_round(&gpu_tables, &live).unwrap();
            let expected = twin.decide_round(&cpu_tables, &live).unwrap();
            let at =
                format!("{prompts} prompts, capacity {capacity}, budget {budget}, round {round}");
            assert_eq!(weights.len(), COMPONENTS);
            for (g, (&w, &c)) in weights.iter().zip(twin.prior().weights()).enumerate() {
                worst_weight = worst_weight.max((w - c as f32).abs());
                assert!(
                    (w - c as f32).abs() <= WEIGHT_TOLERANCE,
                    "{at}: weight {g}: GPU {w}, twin {c}"
                );
            }
            assert_eq!(decisions.len(), live.len());
            for ((g, c), &p) in decisions.iter().zip(&expected).zip(&live) {
                assert_eq!(
                    (g.consensus, g.votes),
                    (c.consensus, c.votes),
                    "{at}: prompt {p}"
                );
                let (risk, twin_risk) = (1.0 - g.confidence, 1.0 - c.confidence);
                worst_risk = worst_risk.max((risk - twin_risk).abs());
                assert!(
                    (risk - twin_risk).abs() <= RISK_TOLERANCE,
                    "{at}: prompt {p}: risk GPU {risk}, twin {twin_risk}"
                );
                // Decisions agree unless the twin's risk is within the
                // tolerance of δ.
                if (twin_risk - delta).abs() > RISK_TOLERANCE {
                    assert_eq!(g.stopped, c.stopped, "{at}: prompt {p}: risk {twin_risk}");
                }
                stops += usize::from(c.stopped);
                compared += 1;
            }
        }
    }
    eprintln!(
        "{compared} decisions, {stops} stops; worst weight gap {worst_weight:e}, worst risk gap {worst_risk:e}"
    );
    assert!(
        compared > 1000 && stops > 100,
        "{compared} decisions, {stops} stops"
    );
}

fn recorded(prompts: usize, budget: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = common::rng(seed);
    (0..prompts)
        .map(|p| {
            let spread = 1 + (p % 9) as u32;
            (0..budget)
                .map(|_| rng.random_range(0..spread).min(rng.random_range(0..spread)))
                .collect()
        })
        .collect()
}

/// Prompts with the same consensus and rollouts in both outcomes.
fn identical(a: &rollcall::voting::Outcome, b: &rollcall::voting::Outcome) -> usize {
    (a.prompts.iter().zip(&b.prompts))
        .filter(|(x, y)| (x.consensus, x.rollouts) == (y.consensus, y.rollouts))
        .count()
}

/// Whole batches: the GPU scheduler runs the calibrated rule as its twin's
/// scheduler does. A decision may differ only where f32 and f64 risks fall
/// on either side of δ, after which that prompt's rounds differ; nearly
/// every prompt must match exactly.
#[test]
fn the_scheduler_runs_the_calibrated_rule_as_its_twin() {
    let Some(ctx) = common::gpu() else { return };
    let data = recorded(500, 40, 5);
    for allocation in [Allocation::Chunk(1), Allocation::FewestToPass { first: 2 }] {
        for delta in [0.005, 0.05] {
            let config = config(delta, 2, 40);
            let mut scheduler = Scheduler::new(&ctx, 500, 16, config, allocation).unwrap();
            let gpu = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
            let cpu = run_cpu(
                500,
                16,
                config,
                allocation,
                &mut ReplayEngine::new(data.clone()),
            )
            .unwrap();
            let same = identical(&gpu, &cpu);
            eprintln!(
                "{allocation:?}, delta {delta}: {same}/500 prompts identical, rounds {} v {}",
                gpu.rounds, cpu.rounds
            );
            assert!(same >= 495, "{allocation:?}, delta {delta}: {same}/500");
            let mean = |o: &rollcall::voting::Outcome| {
                o.prompts.iter().map(|p| f64::from(p.rollouts)).sum::<f64>() / 500.0
            };
            assert!(mean(&gpu) < 40.0 && (mean(&gpu) - mean(&cpu)).abs() < 0.2);
            // A new batch restarts from the hyperprior and fresh tables:
            // the same run again gives the same outcome, and other answers
            // (a cached evidence of the last batch would be stale) the
            // twin's.
            let again = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
            assert_eq!(again.prompts, gpu.prompts);
            let other = recorded(500, 40, 6);
            let gpu = scheduler
                .run(&mut ReplayEngine::new(other.clone()))
                .unwrap();
            let cpu = run_cpu(500, 16, config, allocation, &mut ReplayEngine::new(other)).unwrap();
            let same = identical(&gpu, &cpu);
            assert!(same >= 495, "second batch: {same}/500");
        }
    }
}

/// A scheduler's next batch starts afresh: its weights after the batch are
/// those of a new scheduler's, bit for bit (nothing of the last batch, such
/// as a prompt's cached evidence at the same vote total, carries over).
#[test]
fn a_reused_scheduler_forgets_the_last_batch() {
    let Some(ctx) = common::gpu() else { return };
    let config = config(0.01, 2, 40);
    // Unanimous prompts stop at 2 votes; the next batch's prompts reach 2
    // votes with other counts.
    let first = vec![vec![7u32; 40]; 300];
    let second = recorded(300, 40, 8);
    let mut reused = Scheduler::new(&ctx, 300, 16, config, Allocation::Chunk(1)).unwrap();
    reused.run(&mut ReplayEngine::new(first)).unwrap();
    let outcome = reused.run(&mut ReplayEngine::new(second.clone())).unwrap();
    let mut fresh = Scheduler::new(&ctx, 300, 16, config, Allocation::Chunk(1)).unwrap();
    let expected = fresh.run(&mut ReplayEngine::new(second)).unwrap();
    let differ = (outcome.prompts.iter().zip(&expected.prompts))
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differ, 0,
        "{differ} of 300 prompts differ from a fresh scheduler's"
    );
    let weights = reused.calibrated_weights().unwrap().unwrap();
    assert_eq!(weights.len(), COMPONENTS);
    assert_eq!(weights, fresh.calibrated_weights().unwrap().unwrap());
}

#[test]
fn bad_calibrated_settings_are_typed_errors_before_gpu_work() {
    let Some(ctx) = common::gpu() else { return };
    for bad in [
        config(f32::NAN, 1, 40),
        config(1.5, 1, 40),
        config(0.01, 1, 65),
        config(0.01, 1, 0),
        config(0.01, 41, 40),
    ] {
        let err = Scheduler::new(&ctx, 10, 16, bad, Allocation::Chunk(1)).err();
        assert!(
            matches!(err, Some(rollcall::Error::InvalidRule(_))),
            "{bad:?}: {err:?}"
        );
    }
    let err = Scheduler::new(&ctx, 10, 0, config(0.01, 1, 40), Allocation::Chunk(1)).err();
    assert!(
        matches!(err, Some(rollcall::Error::InvalidCapacity(0))),
        "{err:?}"
    );
    // Per prompt, without the batch, the rule has no GPU form.
    let mut tables = VoteTables::new(&ctx, 4, 16).unwrap();
    let err = tables.decide(&config(0.01, 1, 40), &[0, 1]).err();
    assert!(
        matches!(err, Some(rollcall::Error::InvalidRule(_))),
        "{err:?}"
    );
}

/// Tables, as counted, to both sides: the GPU's and the twin's.
fn counted(
    ctx: &rollcall::GpuContext,
    prompts: u32,
    answers_of: impl Fn(u32) -> Vec<u32>,
) -> (VoteTables, CpuVoteTables) {
    let mut gpu = VoteTables::new(ctx, prompts, 16).unwrap();
    let mut cpu = CpuVoteTables::new(prompts, 16).unwrap();
    let (segments, answers) = segments_of(prompts, answers_of);
    let votes = RoundVotes {
        segments: &segments,
        answers: &answers,
        tokens: None,
    };
    gpu.count(&votes).unwrap();
    cpu.count(&votes).unwrap();
    (gpu, cpu)
}

fn segments_of(prompts: u32, answers_of: impl Fn(u32) -> Vec<u32>) -> (Vec<Segment>, Vec<u32>) {
    let mut segments = Vec::new();
    let mut answers = Vec::new();
    for p in 0..prompts {
        let own = answers_of(p);
        segments.push(Segment {
            prompt: p,
            start: answers.len() as u32,
            count: own.len() as u32,
        });
        answers.extend(own);
    }
    (segments, answers)
}

fn assert_rounds_agree(
    gpu: &[rollcall::voting::PromptDecision],
    twin: &[rollcall::voting::Decision],
    at: &str,
) {
    for (p, (g, c)) in gpu.iter().zip(twin).enumerate() {
        let (risk, twin_risk) = (1.0 - g.confidence, 1.0 - c.confidence);
        assert!(
            (risk - twin_risk).abs() <= RISK_TOLERANCE,
            "{at}: prompt {p}: risk GPU {risk}, twin {twin_risk}"
        );
    }
}

/// The GPU caches each prompt's likelihoods by its vote total: a round on
/// other tables, or on these tables reset and recounted to the same totals
/// with other answers, must not refit the weights (and so decide) from the
/// last tables' likelihoods.
#[test]
fn other_or_reset_tables_are_read_afresh() {
    let Some(ctx) = common::gpu() else { return };
    let config = config(0.05, 1, 40);
    let prompts = 300;
    let live: Vec<u32> = (0..prompts).collect();
    // Every prompt unanimous at 28 votes (a decisive batch); then every
    // prompt at 15-13, the same total, where the risk depends on the
    // posterior.
    let unanimous = |p: u32| vec![p % 7; 28];
    let skewed = |p: u32| {
        (0..28)
            .map(|i| p % 7 + u32::from(i >= 15))
            .collect::<Vec<u32>>()
    };
    let (segments, answers) = segments_of(prompts, skewed);
    let skewed_votes = RoundVotes {
        segments: &segments,
        answers: &answers,
        tokens: None,
    };
    for reset in [false, true] {
        let (mut gpu_a, cpu_a) = counted(&ctx, prompts, unanimous);
        let (gpu_b, cpu_b) = counted(&ctx, prompts, skewed);
        let mut gpu = CalibratedRoundsGpu::new(&gpu_a, &config).unwrap();
        let mut twin = CalibratedRounds::new(&config).unwrap();
        let (g, _) = gpu.decide_round(&gpu_a, &live).unwrap();
        let c = twin.decide_round(&cpu_a, &live).unwrap();
        assert_rounds_agree(&g, &c, "unanimous tables");
        let (g, _) = if reset {
            // These tables reset and recounted as the skewed ones.
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            gpu_a.encode_reset(&mut encoder);
            ctx.submit(encoder.finish());
            gpu_a.count(&skewed_votes).unwrap();
            gpu.decide_round(&gpu_a, &live).unwrap()
        } else {
            gpu.decide_round(&gpu_b, &live).unwrap()
        };
        let c = twin.decide_round(&cpu_b, &live).unwrap();
        // A risk the stale evidence would get wrong.
        assert!(
            c[0].confidence < 0.95,
            "twin confidence {}",
            c[0].confidence
        );
        let at = if reset {
            "reset and recounted"
        } else {
            "other tables"
        };
        assert_rounds_agree(&g, &c, at);
    }
}

/// A live list longer than the batch, prompts repeated (the twin takes it
/// too), decides every position as the twin does.
#[test]
fn a_live_list_may_repeat_prompts() {
    let Some(ctx) = common::gpu() else { return };
    let config = config(0.01, 1, 40);
    let prompts = 40;
    // Unanimous (p mod 4 = 0) to split prompts, 2 to 10 votes.
    let (gpu_tables, cpu_tables) = counted(&ctx, prompts, |p| {
        (0..2 + p % 9)
            .map(|i| if p % 4 == 0 { 1 } else { (p + i * (p % 4)) % 3 })
            .collect()
    });
    let live: Vec<u32> = (0..5 * prompts).map(|i| i * 7 % prompts).collect();
    let mut gpu = CalibratedRoundsGpu::new(&gpu_tables, &config).unwrap();
    let mut twin = CalibratedRounds::new(&config).unwrap();
    let (g, _) = gpu.decide_round(&gpu_tables, &live).unwrap();
    let c = twin.decide_round(&cpu_tables, &live).unwrap();
    assert_eq!(g.len(), live.len());
    assert_rounds_agree(&g, &c, "200 positions over 40 prompts");
    let stops = c.iter().filter(|d| d.stopped).count();
    assert!(stops > 0 && stops < live.len(), "{stops} stops");
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        assert_eq!(g.stopped, c.stopped, "position {i}");
    }
}
