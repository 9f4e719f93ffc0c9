//! Stopping rules: GPU against CPU twin on random vote tables, and each rule
//! against the anchors' published behaviour.

mod common;

use rand::Rng;
use rollcall::voting::cpu::decide;
use rollcall::voting::{
    cpu::VoteTables as CpuVoteTables, PromptVotes, RoundVotes, Segment, VoteTables as GpuVoteTables,
};
use rollcall::voting::{RuleConfig, StopRule};
use rollcall::Error;

fn table_of(counts: &[u32]) -> (PromptVotes, Vec<[u32; 2]>) {
    let total = counts.iter().sum();
    let votes = PromptVotes {
        total,
        distinct: counts.len() as u32,
        ..Default::default()
    };
    (
        votes,
        counts
            .iter()
            .enumerate()
            .map(|(k, &c)| [100 + k as u32, c])
            .collect(),
    )
}

fn stops(rule: StopRule, counts: &[u32]) -> bool {
    let config = RuleConfig {
        rule,
        min_votes: 1,
        max_votes: 1000,
    };
    let (votes, table) = table_of(counts);
    decide(&config, &votes, &table).unwrap().stopped
}

#[test]
fn gpu_decisions_match_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(5);
    let prompts = 600u32;
    let capacity = 8u32;
    let mut gpu = GpuVoteTables::new(&ctx, prompts, capacity).unwrap();
    let mut cpu = CpuVoteTables::new(prompts, capacity).unwrap();
    // Prompts from decisive to split, over several rounds.
    for _ in 0..4 {
        let mut segments = Vec::new();
        let mut answers = Vec::new();
        for p in 0..prompts {
            let count = rng.random_range(0..12);
            let spread = 1 + p % 9;
            segments.push(Segment {
                prompt: p,
                start: answers.len() as u32,
                count,
            });
            for _ in 0..count {
                let a = rng.random_range(0..spread).min(rng.random_range(0..spread));
                answers.push(a);
            }
        }
        let round = RoundVotes {
            segments: &segments,
            answers: &answers,
            tokens: None,
        };
        gpu.count(&round).unwrap();
        cpu.count(&round).unwrap();
    }
    let list: Vec<u32> = (0..prompts).rev().collect();
    let mut near = 0;
    for rule in common::all_rules() {
        for (min_votes, max_votes) in [(1, 40), (8, 24)] {
            let config = RuleConfig {
                rule,
                min_votes,
                max_votes,
            };
            let readback = gpu.decide(&config, &list).unwrap();
            let (decisions, keep) = (&readback.decisions, &readback.keep);
            for (i, &p) in list.iter().enumerate() {
                let twin = cpu.decide(&config, p).unwrap();
                let got = decisions[i];
                assert_eq!(got.votes, twin.votes);
                assert_eq!(got.consensus, twin.consensus, "{rule:?} prompt {p}");
                assert!(
                    (got.confidence - twin.confidence).abs() < 1e-4,
                    "{rule:?} prompt {p}: {} vs {}",
                    got.confidence,
                    twin.confidence
                );
                assert_eq!(keep[i], u32::from(!got.stopped), "keep flag of prompt {p}");
                if got.stopped != twin.stopped {
                    // Only a probability within rounding of its threshold may
                    // flip (Beta and Dirichlet compare a probability with c[0]);
                    // every other rule must agree exactly.
                    let threshold = match rule {
                        StopRule::Beta { threshold, .. }
                        | StopRule::Dirichlet { threshold, .. } => threshold,
                        _ => panic!("{rule:?} prompt {p}: {got:?} vs {twin:?}"),
                    };
                    assert!(
                        (twin.confidence - threshold).abs() < 1e-4,
                        "{rule:?} prompt {p}: {got:?} vs {twin:?}"
                    );
                    near += 1;
                }
            }
        }
    }
    assert!(near < 5, "{near} near-threshold flips");
}

/// ConSol's SPRT with its defaults is "stop when v_L − v_S ≥ 3" (within its
/// 256-vote budget, and away from the exact-tie boundary past 1264 votes).
#[test]
fn consol_sprt_defaults_are_a_margin_of_three() {
    for leader in 0..=256u32 {
        for runner_up in 0..=leader.min(256 - leader) {
            let margin = leader - runner_up >= 3;
            assert_eq!(
                stops(StopRule::CONSOL_SPRT, &[leader, runner_up]),
                margin,
                "{leader} vs {runner_up}"
            );
        }
    }
}

#[test]
fn adaptive_consistency_rules_behave_as_published() {
    let beta = StopRule::Beta {
        threshold: 0.95,
        prior: 1.0,
    };
    assert!(
        !stops(beta, &[3]) && stops(beta, &[4]),
        "Beta stops at four unanimous votes"
    );
    assert!(
        !stops(beta, &[4, 1]) && stops(beta, &[6, 1]),
        "needs a margin of 5 with one dissent"
    );
    let entropy = StopRule::Entropy {
        max_normalized: 0.75,
    };
    assert!(!stops(entropy, &[1]) && !stops(entropy, &[3]) && stops(entropy, &[4]));
    let majority = StopRule::Majority { share: 0.8 };
    assert!(
        !stops(majority, &[1])
            && stops(majority, &[2])
            && !stops(majority, &[3, 1])
            && stops(majority, &[4, 1])
    );
    // Dirichlet falls back to Beta below three answers, and keeps the top 5.
    let dirichlet = StopRule::Dirichlet {
        threshold: 0.95,
        prior: 1.0,
        top: 5,
    };
    assert_eq!(stops(dirichlet, &[4]), stops(beta, &[4]));
    assert_eq!(stops(dirichlet, &[6, 1]), stops(beta, &[6, 1]));
    // Spread-out dissent makes Beta over-confident; Dirichlet is not.
    let spread = [7, 2, 1, 1, 1, 1, 1];
    let dirichlet_all = StopRule::Dirichlet {
        threshold: 0.9,
        prior: 1.0,
        top: 0,
    };
    let beta_90 = StopRule::Beta {
        threshold: 0.9,
        prior: 1.0,
    };
    assert!(stops(beta_90, &spread) && !stops(dirichlet_all, &spread));
}

#[test]
fn esc_checks_whole_windows_only() {
    let esc = StopRule::EscWindow { window: 5 };
    let config = RuleConfig {
        rule: esc,
        min_votes: 1,
        max_votes: 40,
    };
    let mut tables = CpuVoteTables::new(1, 8).unwrap();
    let mut fed = Vec::new();
    let mut stopped_at = None;
    for (n, a) in [1u32, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2].into_iter().enumerate() {
        fed.push(a);
        let seg = [Segment {
            prompt: 0,
            start: fed.len() as u32 - 1,
            count: 1,
        }];
        tables
            .count(&RoundVotes {
                segments: &seg,
                answers: &fed,
                tokens: None,
            })
            .unwrap();
        if stopped_at.is_none() && tables.decide(&config, 0).unwrap().stopped {
            stopped_at = Some(n + 1);
        }
    }
    // Window 1..5 holds a 1; window 6..10 is unanimous.
    assert_eq!(stopped_at, Some(10));
}

/// With several votes a round, ESC stops once the newest complete window and
/// every vote after it agree (not only at multiples of the window).
#[test]
fn esc_with_rounds_of_three() {
    let esc = StopRule::EscWindow { window: 5 };
    let config = RuleConfig {
        rule: esc,
        min_votes: 1,
        max_votes: 40,
    };
    let mut tables = CpuVoteTables::new(1, 8).unwrap();
    let answers = [7u32; 12];
    for n in [3u32, 6] {
        let seg = [Segment {
            prompt: 0,
            start: n - 3,
            count: 3,
        }];
        tables
            .count(&RoundVotes {
                segments: &seg,
                answers: &answers,
                tokens: None,
            })
            .unwrap();
        let d = tables.decide(&config, 0).unwrap();
        assert_eq!(d.stopped, n == 6, "after {n} votes");
    }
}

/// Rewards reject ambiguous or malformed input before GPU work.
#[test]
fn bad_reward_calls_are_rejected() {
    let Some(ctx) = common::gpu() else { return };
    let mut tables = GpuVoteTables::new(&ctx, 2, 4).unwrap();
    let seg = |prompt, start, count| Segment {
        prompt,
        start,
        count,
    };
    let answers = [1u32, 2, 3, 4];
    let given = [1.0f32, 0.0, 1.0, 0.5];
    // Neither or both reward sources.
    assert!(tables
        .rewards(&[seg(0, 0, 4)], &answers, None, None, 1e-4)
        .is_err());
    assert!(tables
        .rewards(&[seg(0, 0, 4)], &answers, Some(&[1, 2]), Some(&given), 1e-4)
        .is_err());
    // Segments past the rewards, overlapping, or a bad eps.
    assert!(tables
        .rewards(&[seg(0, 0, 4)], &answers, None, Some(&given[..2]), 1e-4)
        .is_err());
    assert!(tables
        .rewards(
            &[seg(0, 0, 3), seg(1, 2, 2)],
            &answers,
            None,
            Some(&given),
            1e-4
        )
        .is_err());
    assert!(tables
        .rewards(&[seg(0, 0, 4)], &answers, None, Some(&given), -1.0)
        .is_err());
    assert!(tables
        .rewards(&[seg(0, 0, 4)], &answers, Some(&[1]), None, 1e-4)
        .is_err());
    // And a good call still works.
    let (r, a) = tables
        .rewards(
            &[seg(0, 0, 2), seg(1, 2, 2)],
            &answers,
            None,
            Some(&given),
            0.0,
        )
        .unwrap();
    assert_eq!(r, given);
    assert!(a.iter().all(|x| x.is_finite()));
}

#[test]
fn budgets_bound_every_rule() {
    for rule in common::all_rules() {
        let config = RuleConfig {
            rule,
            min_votes: 6,
            max_votes: 9,
        };
        for counts in [vec![5u32], vec![9], vec![3, 3, 3], vec![7, 1]] {
            let (votes, table) = table_of(&counts);
            let d = decide(&config, &votes, &table).unwrap();
            if votes.total >= 9 {
                assert!(d.stopped, "{rule:?} {counts:?} at the maximum");
            }
            if votes.total < 6 {
                assert!(!d.stopped, "{rule:?} {counts:?} below the minimum");
            }
            assert_eq!(d.consensus, 100, "ties and leads go to the first answer");
        }
    }
}

#[test]
fn bad_rules_are_rejected() {
    let bad = [
        RuleConfig {
            rule: StopRule::FixedBudget,
            min_votes: 5,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::FixedBudget,
            min_votes: 0,
            max_votes: 0,
        },
        RuleConfig {
            rule: StopRule::Beta {
                threshold: 1.5,
                prior: 1.0,
            },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::Beta {
                threshold: 0.9,
                prior: 0.0,
            },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::Dirichlet {
                threshold: f32::NAN,
                prior: 1.0,
                top: 5,
            },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::OptPo {
                p0: 1.0,
                hypotheses: 0,
                delta: 0.1,
                alpha: 0.1,
                beta: 0.1,
            },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::ConsolSprt {
                p0: 0.5,
                p1: 0.5,
                alpha: 0.0,
                beta: 0.9,
            },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::EscWindow { window: 0 },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::Majority { share: -0.1 },
            min_votes: 1,
            max_votes: 4,
        },
        RuleConfig {
            rule: StopRule::OptPo {
                p0: 0.1,
                hypotheses: 8,
                delta: 0.1,
                alpha: 0.1,
                beta: 0.1,
            },
            min_votes: 1,
            max_votes: 4,
        },
    ];
    for config in bad {
        assert!(
            matches!(config.validate(), Err(Error::InvalidRule(_))),
            "{config:?}"
        );
    }
}

/// OptPO's leader posterior is a softmax of β v over the hypotheses.
#[test]
fn optpo_posterior_is_a_softmax() {
    let (p0, m) = (0.6f64, 5.0f64);
    let rule = StopRule::OptPo {
        p0: p0 as f32,
        hypotheses: m as u32,
        delta: 0.0,
        alpha: 1e-9,
        beta: 0.0,
    };
    let config = RuleConfig {
        rule,
        min_votes: 1,
        max_votes: 100,
    };
    let counts = [6u32, 3, 1];
    let (votes, table) = table_of(&counts);
    let beta = (p0 / ((1.0 - p0) / (m - 1.0))).ln();
    let z: f64 = counts
        .iter()
        .map(|&c| (beta * f64::from(c)).exp())
        .sum::<f64>()
        + (m - 3.0);
    let want = (beta * 6.0).exp() / z;
    let got = f64::from(decide(&config, &votes, &table).unwrap().confidence);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

/// TTRL rewards and GRPO advantages: GPU against twin on ragged groups.
#[test]
fn rewards_and_advantages_match_the_twin() {
    use rollcall::voting::rewards::{group_advantages, majority_rewards};
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(8);
    let prompts = 300u32;
    let mut tables = GpuVoteTables::new(&ctx, prompts, 4).unwrap();
    let mut segments = Vec::new();
    let mut answers = Vec::new();
    for p in 0..prompts {
        let count = rng.random_range(0..20);
        segments.push(Segment {
            prompt: p,
            start: answers.len() as u32,
            count,
        });
        for _ in 0..count {
            answers.push(rng.random_range(0..3u32));
        }
    }
    let consensus: Vec<u32> = (0..prompts).map(|p| p % 3).collect();
    let (rewards, advantages) = tables
        .rewards(&segments, &answers, Some(&consensus), None, 1e-4)
        .unwrap();
    let want_rewards = majority_rewards(&segments, &answers, &consensus).unwrap();
    let want_adv = group_advantages(&segments, &want_rewards, 1e-4).unwrap();
    assert_eq!(rewards, want_rewards);
    for (g, w) in advantages.iter().zip(&want_adv) {
        assert!((g - w).abs() < 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
    // Groups of one, and unanimous groups, get advantage 0; each group's
    // advantages sum to 0.
    let mut flat_groups = 0;
    for s in &segments {
        let range = s.start as usize..(s.start + s.count) as usize;
        let adv = &advantages[range.clone()];
        assert!(adv.iter().sum::<f32>().abs() < 1e-3);
        if rewards[range.clone()]
            .iter()
            .all(|&r| r == rewards[range.start])
        {
            assert!(
                adv.iter().all(|&a| a == 0.0),
                "a flat group has advantage 0"
            );
            flat_groups += 1;
        }
    }
    assert!(flat_groups > 0);
    // Given rewards instead of majority votes.
    let given: Vec<f32> = (0..answers.len())
        .map(|_| rng.random_range(-1.0f32..2.0))
        .collect();
    let (r, a) = tables
        .rewards(&segments, &answers, None, Some(&given), 1e-4)
        .unwrap();
    assert_eq!(r, given);
    let want = group_advantages(&segments, &given, 1e-4).unwrap();
    for (g, w) in a.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
}

/// ConSol's mixture SPRT with its defaults: a margin of 3 (checked for up to
/// 126 runner-up votes, as ConSol's analysis), and an exact tie stops only
/// from 254 votes on.
#[test]
fn consol_msprt_defaults() {
    for runner_up in 0..=126u32 {
        for margin in 0..=6u32 {
            let leader = runner_up + margin;
            if leader + runner_up > 256 || margin == 0 {
                continue;
            }
            assert_eq!(
                stops(StopRule::CONSOL_MSPRT, &[leader, runner_up]),
                margin >= 3,
                "{leader} vs {runner_up}"
            );
        }
    }
    assert!(!stops(StopRule::CONSOL_MSPRT, &[126, 126]));
    assert!(stops(StopRule::CONSOL_MSPRT, &[127, 127]));
}
