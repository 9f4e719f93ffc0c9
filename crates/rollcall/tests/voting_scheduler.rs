//! The round scheduler on the GPU against its CPU twin, with a replay engine.

mod common;

use rand::Rng;
use rollcall::voting::cpu::run as run_cpu;
use rollcall::voting::{Allocation, ReplayEngine, Scheduler};
use rollcall::voting::{RuleConfig, StopRule};

fn recorded(prompts: usize, budget: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = common::rng(seed);
    (0..prompts)
        .map(|p| {
            // From unanimous to split prompts.
            let spread = 1 + (p % 7) as u32;
            (0..budget)
                .map(|_| rng.random_range(0..spread).min(rng.random_range(0..spread)))
                .collect()
        })
        .collect()
}

#[test]
fn gpu_scheduler_matches_its_twin() {
    let Some(ctx) = common::gpu() else { return };
    let data = recorded(777, 40, 3);
    for rule in [
        StopRule::CONSOL_SPRT,
        StopRule::Beta {
            threshold: 0.95,
            prior: 1.0,
        },
        StopRule::EscWindow { window: 5 },
        StopRule::FixedBudget,
    ] {
        for allocation in [
            Allocation::Chunk(1),
            Allocation::Chunk(3),
            Allocation::FewestToPass { first: 2 },
        ] {
            let config = RuleConfig {
                rule,
                min_votes: 2,
                max_votes: 40,
            };
            let mut scheduler =
                Scheduler::new(&ctx, data.len() as u32, 16, config, allocation).unwrap();
            let gpu = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
            let cpu = run_cpu(
                data.len() as u32,
                16,
                config,
                allocation,
                &mut ReplayEngine::new(data.clone()),
            )
            .unwrap();
            assert_eq!(gpu.rounds, cpu.rounds, "{rule:?}");
            assert_eq!(gpu.rollouts, cpu.rollouts);
            for (p, (g, c)) in gpu.prompts.iter().zip(&cpu.prompts).enumerate() {
                assert_eq!(
                    (g.consensus, g.rollouts, g.stopped_in_round),
                    (c.consensus, c.rollouts, c.stopped_in_round),
                    "{rule:?} prompt {p}"
                );
                assert!((g.confidence - c.confidence).abs() < 1e-4);
            }
            assert_eq!(gpu.rewards, cpu.rewards);
            for (g, c) in gpu.advantages.iter().zip(&cpu.advantages) {
                assert!((g - c).abs() < 1e-4 * c.abs().max(1.0));
            }
            if rule == StopRule::FixedBudget {
                assert!(gpu.prompts.iter().all(|p| p.rollouts == 40));
            } else {
                let mean =
                    gpu.prompts.iter().map(|p| p.rollouts as f64).sum::<f64>() / data.len() as f64;
                assert!(mean < 40.0, "{rule:?} saves rollouts: {mean}");
            }
        }
    }
}

/// A scheduler runs batch after batch: each run starts from empty tables.
#[test]
fn a_scheduler_can_run_again() {
    let Some(ctx) = common::gpu() else { return };
    let config = RuleConfig {
        rule: StopRule::EscWindow { window: 5 },
        min_votes: 1,
        max_votes: 40,
    };
    let mut scheduler = Scheduler::new(&ctx, 50, 16, config, Allocation::Chunk(1)).unwrap();
    for seed in 0..3 {
        let data = recorded(50, 40, seed);
        let gpu = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
        let cpu = run_cpu(
            50,
            16,
            config,
            Allocation::Chunk(1),
            &mut ReplayEngine::new(data),
        )
        .unwrap();
        assert_eq!(gpu.rollouts, cpu.rollouts, "run {seed}");
        assert_eq!(gpu.rewards, cpu.rewards);
    }
}

/// An engine that returns the wrong number of rollouts is an error for the
/// scheduler and its twin alike.
#[test]
fn a_misbehaving_engine_is_an_error() {
    use rollcall::voting::{Rollout, RolloutEngine};
    struct Off(i64);
    impl RolloutEngine for Off {
        fn generate(&mut self, _prompts: &[u32], counts: &[u32]) -> rollcall::Result<Vec<Rollout>> {
            let n = counts.iter().sum::<u32>() as i64 + self.0;
            Ok(vec![Rollout::default(); n.max(0) as usize])
        }
    }
    let config = RuleConfig {
        rule: StopRule::CONSOL_SPRT,
        min_votes: 1,
        max_votes: 10,
    };
    for off in [-1i64, 5] {
        assert!(
            run_cpu(8, 4, config, Allocation::Chunk(2), &mut Off(off)).is_err(),
            "twin, {off}"
        );
        if let Some(ctx) = common::gpu() {
            let mut scheduler = Scheduler::new(&ctx, 8, 4, config, Allocation::Chunk(2)).unwrap();
            assert!(scheduler.run(&mut Off(off)).is_err(), "gpu, {off}");
        }
    }
}
