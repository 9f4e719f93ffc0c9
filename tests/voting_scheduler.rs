//! The round scheduler on the GPU against its CPU twin, with a replay engine.

mod common;

use rand::Rng;
use rollcall::voting::rules::{RuleConfig, StopRule};
use rollcall::voting::scheduler::{run_cpu, Allocation, ReplayEngine, Scheduler};

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
