//! GPU vote tables against the CPU twin over many ragged rounds, including
//! prompts that see more distinct answers than the table holds, on every
//! counting route (an invocation or a workgroup per segment; segments
//! longer than a workgroup), the rules on every decide route, and rewards
//! and GRPO advantages on every reward route. Fails
//! without an adapter unless ROLLCALL_ALLOW_NO_GPU=1.

mod common;

use rand::seq::SliceRandom;
use rand::Rng;
use rollcall::internals::{CountRoute, DecideRoute, RewardRoute};
use rollcall::voting::{
    cpu::VoteTables as CpuVoteTables, RoundVotes, Segment, VoteTables as GpuVoteTables,
};
use rollcall::voting::{RuleConfig, StopRule};
use rollcall::Error;

fn random_round(
    rng: &mut rand_chacha::ChaCha8Rng,
    prompts: u32,
    alphabet: u32,
    most_votes: u32,
    with_tokens: bool,
) -> (Vec<Segment>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..prompts).collect();
    order.shuffle(rng);
    let voting = rng.random_range(0..=prompts) as usize;
    let mut segments = Vec::new();
    let mut answers = Vec::new();
    let mut tokens = Vec::new();
    for &prompt in &order[..voting] {
        let count = rng.random_range(0..=most_votes);
        segments.push(Segment {
            prompt,
            start: answers.len() as u32,
            count,
        });
        for _ in 0..count {
            // Skewed answers: low ids are common, so leaders and ties form.
            let a = rng
                .random_range(0..alphabet)
                .min(rng.random_range(0..alphabet));
            answers.push(a.wrapping_mul(2_654_435_761));
            if with_tokens {
                tokens.push(rng.random_range(0..u32::MAX / 4));
            }
        }
    }
    (segments, answers, tokens)
}

#[test]
fn gpu_tables_match_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(17);
    // (prompts, capacity, alphabet, most votes a segment): short rounds as
    // a scheduler sends them; long ones as an RL batch does, crossing the
    // 64-vote chunks of the workgroup route (and long runs of one answer
    // with alphabet 2).
    for &(prompts, capacity, alphabet, most_votes) in &[
        (1u32, 1u32, 3u32, 8u32),
        (37, 4, 12, 8),
        (1000, 16, 6, 8),
        (3000, 2, 40, 8),
        (40, 8, 20, 200),
        (30, 4, 2, 150),
        (6, 200, 1000, 300),
        (20, 1, 5, 130),
    ] {
        let routes = [
            CountRoute::Auto,
            CountRoute::PerInvocation,
            CountRoute::PerWorkgroup,
        ];
        let mut gpus: Vec<_> = routes
            .iter()
            .map(|&route| {
                GpuVoteTables::new(&ctx, prompts, capacity)
                    .unwrap()
                    .with_count_route(route)
            })
            .collect();
        let mut cpu = CpuVoteTables::new(prompts, capacity).unwrap();
        for round in 0..6 {
            let (segments, answers, tokens) =
                random_round(&mut rng, prompts, alphabet, most_votes, round % 2 == 0);
            let votes = RoundVotes {
                segments: &segments,
                answers: &answers,
                tokens: (round % 2 == 0).then_some(&tokens[..]),
            };
            for gpu in &mut gpus {
                gpu.count(&votes).unwrap();
            }
            cpu.count(&votes).unwrap();
        }
        for (route, gpu) in routes.iter().zip(&mut gpus) {
            let (votes, tables) = gpu.read().unwrap();
            let mut overflowed = 0;
            for p in 0..prompts {
                let context = format!("{route:?}, capacity {capacity}, prompt {p}");
                assert_eq!(&votes[p as usize], cpu.votes(p).unwrap(), "{context}");
                let used = votes[p as usize].distinct as usize;
                let table = &tables[p as usize * capacity as usize..][..used];
                assert_eq!(table, cpu.table(p).unwrap(), "{context}");
                overflowed += usize::from(votes[p as usize].overflow > 0);
            }
            if capacity < alphabet {
                assert!(overflowed > 0, "the overflow path ran");
            }
        }
    }
}

/// The workgroup route at the chunk edges: runs of one answer that end at,
/// cross and continue past a 64-vote chunk, a table that fills in the
/// middle of a chunk, and a run continued from the previous round.
#[test]
fn workgroup_counting_at_chunk_edges() {
    let Some(ctx) = common::gpu() else { return };
    let mut answers = Vec::new();
    let mut segments = Vec::new();
    let shapes: [Vec<u32>; 5] = [
        vec![7; 64],
        vec![7; 65],
        [vec![1; 63], vec![2; 2], vec![1; 70]].concat(),
        (0..130).map(|i| i % 5).collect(),
        [vec![9; 1], vec![3; 127], vec![4; 1]].concat(),
    ];
    for (prompt, shape) in shapes.iter().enumerate() {
        segments.push(Segment {
            prompt: prompt as u32,
            start: answers.len() as u32,
            count: shape.len() as u32,
        });
        answers.extend(shape);
    }
    let tokens: Vec<u32> = (0..answers.len() as u32)
        .map(|i| u32::MAX - i * 977)
        .collect();
    let mut gpu = GpuVoteTables::new(&ctx, 5, 3)
        .unwrap()
        .with_count_route(CountRoute::PerWorkgroup);
    let mut cpu = CpuVoteTables::new(5, 3).unwrap();
    for round in 0..2 {
        let votes = RoundVotes {
            segments: &segments,
            answers: &answers,
            tokens: (round == 0).then_some(&tokens[..]),
        };
        gpu.count(&votes).unwrap();
        cpu.count(&votes).unwrap();
    }
    let (votes, tables) = gpu.read().unwrap();
    for p in 0..5u32 {
        assert_eq!(&votes[p as usize], cpu.votes(p).unwrap(), "prompt {p}");
        let used = votes[p as usize].distinct as usize;
        assert_eq!(&tables[p as usize * 3..][..used], cpu.table(p).unwrap());
    }
    // The second round continues the first's runs: 128 sevens, 130 sevens.
    assert_eq!(cpu.votes(0).unwrap().run_length, 128);
    assert_eq!(cpu.votes(1).unwrap().run_length, 130);
    // Five answers, three slots: two overflow.
    assert_eq!(cpu.votes(3).unwrap().distinct, 3);
    assert_eq!(cpu.votes(3).unwrap().overflow, 2 * 52);
}

#[test]
fn overflow_votes_count_but_never_take_a_slot() {
    let mut tables = CpuVoteTables::new(1, 2).unwrap();
    let segments = [Segment {
        prompt: 0,
        start: 0,
        count: 6,
    }];
    let answers = [5, 6, 7, 7, 7, 5];
    tables
        .count(&RoundVotes {
            segments: &segments,
            answers: &answers,
            tokens: None,
        })
        .unwrap();
    assert_eq!(tables.table(0).unwrap(), &[[5, 2], [6, 1]]);
    let v = tables.votes(0).unwrap();
    assert_eq!((v.total, v.distinct, v.overflow), (6, 2, 3));
    assert_eq!((v.run_answer, v.run_length), (5, 1));
}

#[test]
fn bad_rounds_are_rejected() {
    let answers = [1, 2, 3];
    let check = |segments: &[Segment], tokens: Option<&[u32]>| {
        CpuVoteTables::new(4, 4).unwrap().count(&RoundVotes {
            segments,
            answers: &answers,
            tokens,
        })
    };
    let seg = |prompt, start, count| Segment {
        prompt,
        start,
        count,
    };
    assert!(matches!(
        check(&[seg(4, 0, 1)], None),
        Err(Error::InvalidSegment { segment: 0, .. })
    ));
    assert!(matches!(
        check(&[seg(0, 2, 2)], None),
        Err(Error::InvalidSegment { .. })
    ));
    assert!(matches!(
        check(&[seg(1, 0, 1), seg(1, 1, 1)], None),
        Err(Error::InvalidSegment { segment: 1, .. })
    ));
    assert!(matches!(
        check(&[seg(0, 0, 3)], Some(&[1, 2])),
        Err(Error::TokensLengthMismatch {
            answers: 3,
            tokens: 2
        })
    ));
    assert!(check(&[seg(0, 0, 3)], Some(&[1, 2, 3])).is_ok());
    if let Some(ctx) = common::gpu() {
        assert!(matches!(
            GpuVoteTables::new(&ctx, 4, 0),
            Err(Error::InvalidCapacity(0))
        ));
        let mut gpu = GpuVoteTables::new(&ctx, 4, 4).unwrap();
        let bad = [seg(9, 0, 1)];
        assert!(gpu
            .count(&RoundVotes {
                segments: &bad,
                answers: &answers,
                tokens: None
            })
            .is_err());
    }
}

/// Rounds that give the prompts every shape the rule kernels branch on, by
/// prompt index mod 8: no votes; one distinct answer; two answers tied for
/// the leader; more answers than the table holds (tables at capacity, with
/// overflow; more answers than a workgroup has lanes); exactly `fixed`
/// votes (so that a budget of `fixed + r` leaves room r); skewed answers
/// from 2, 5 and 12 ids.
fn decide_rounds(
    rng: &mut rand_chacha::ChaCha8Rng,
    prompts: u32,
    capacity: u32,
    fixed: u32,
) -> Vec<(Vec<Segment>, Vec<u32>)> {
    (0..3)
        .map(|round| {
            let mut segments = Vec::new();
            let mut answers = Vec::new();
            for p in 0..prompts {
                let start = answers.len() as u32;
                let count = match p % 8 {
                    0 => 0,
                    // Past a workgroup of distinct answers in three rounds.
                    3 => rng.random_range(20..60),
                    4 => fixed / 3 + u32::from(round < fixed % 3),
                    _ => rng.random_range(0..25),
                };
                for v in 0..count {
                    let a = match p % 8 {
                        1 => 7,
                        // Equal votes for 3 and 4 once the round is done.
                        2 => 3 + v % 2,
                        3 => rng.random_range(0..2 * capacity + 2),
                        4 => rng.random_range(0..3u32).min(rng.random_range(0..3)),
                        k => {
                            let spread = [2, 5, 12][(k % 3) as usize];
                            rng.random_range(0..spread).min(rng.random_range(0..spread))
                        }
                    };
                    answers.push(a.wrapping_mul(2_654_435_761));
                }
                let count = answers.len() as u32 - start;
                if count % 2 == 1 && p % 8 == 2 {
                    answers.pop();
                }
                segments.push(Segment {
                    prompt: p,
                    start,
                    count: answers.len() as u32 - start,
                });
            }
            (segments, answers)
        })
        .collect()
}

/// The rule on every decide route (an invocation or a workgroup a prompt):
/// the routes alike bit for bit (stopped, consensus, confidence bits, votes,
/// keep flags and, when asked, ConSol's fewest votes), and the CPU twin's
/// decisions, flags and fewest votes; every rule, budgets whose room crosses the
/// 64-lane chunks of the workgroup route (63, 64, 65, 130 votes), minimums
/// past the first chunk, lists of 0, 1, 64, 65 and all prompts.
#[test]
fn decide_routes_match_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(29);
    let fixed = 17;
    // (prompts, capacity): small tables, and tables wider than a workgroup.
    for &(prompts, capacity) in &[(150u32, 8u32), (70, 200)] {
        let routes = [
            DecideRoute::Auto,
            DecideRoute::PerInvocation,
            DecideRoute::PerWorkgroup,
        ];
        let mut gpus: Vec<_> = routes
            .iter()
            .map(|&route| {
                GpuVoteTables::new(&ctx, prompts, capacity)
                    .unwrap()
                    .with_decide_route(route)
            })
            .collect();
        let mut cpu = CpuVoteTables::new(prompts, capacity).unwrap();
        for (segments, answers) in decide_rounds(&mut rng, prompts, capacity, fixed) {
            let round = RoundVotes {
                segments: &segments,
                answers: &answers,
                tokens: None,
            };
            for gpu in &mut gpus {
                gpu.count(&round).unwrap();
            }
            cpu.count(&round).unwrap();
        }
        assert_eq!(cpu.votes(4).unwrap().total, fixed);
        if capacity < 30 {
            assert!(cpu.votes(3).unwrap().overflow > 0, "a table at capacity");
        }
        let all: Vec<u32> = (0..prompts).rev().collect();
        let lists: [&[u32]; 5] = [&all, &all[..64], &all[..65], &all[5..6], &[]];
        let budgets = [
            (1, 40),
            (8, 24),
            (1, fixed + 63),
            (1, fixed + 64),
            (1, fixed + 65),
            (1, fixed + 130),
            (fixed + 63, fixed + 64),
            (fixed + 64, fixed + 65),
            (fixed + 100, fixed + 130),
        ];
        let (mut near, mut compared, mut exact) = (0, 0, 0);
        let mut met_at = [0usize; 130];
        for rule in common::all_rules() {
            for (min_votes, max_votes) in budgets {
                let config = RuleConfig {
                    rule,
                    min_votes,
                    max_votes,
                };
                for (l, list) in lists.iter().enumerate() {
                    for want_fewest in [true, false] {
                        // The lists but the whole one only with the fewest.
                        if l > 0 && !want_fewest {
                            continue;
                        }
                        let mut got = Vec::new();
                        for gpu in &mut gpus {
                            got.push(gpu.decide_with_fewest(&config, list, want_fewest).unwrap());
                        }
                        let context = format!(
                            "{rule:?} {min_votes}..{max_votes}, capacity {capacity}, list of {}, fewest {want_fewest}",
                            list.len()
                        );
                        // The routes alike, bit for bit (the next votes of
                        // live prompts only: stopped ones get none).
                        for (route, g) in routes.iter().zip(&got) {
                            assert_eq!(g.decisions.len(), list.len(), "{route:?} {context}");
                            assert_eq!(g.keep.len(), list.len(), "{route:?} {context}");
                            assert_eq!(g.next.len(), if want_fewest { list.len() } else { 0 });
                            for (i, &p) in list.iter().enumerate() {
                                let (d, e) = (g.decisions[i], got[1].decisions[i]);
                                assert_eq!(
                                    (
                                        d.stopped,
                                        d.consensus,
                                        d.confidence.to_bits(),
                                        d.votes,
                                        g.keep[i]
                                    ),
                                    (
                                        e.stopped,
                                        e.consensus,
                                        e.confidence.to_bits(),
                                        e.votes,
                                        got[1].keep[i]
                                    ),
                                    "{route:?} {context} prompt {p}"
                                );
                                if want_fewest && !d.stopped {
                                    assert_eq!(
                                        g.next[i], got[1].next[i],
                                        "{route:?} {context} prompt {p}"
                                    );
                                }
                            }
                        }
                        // The twin: the same decisions, flags and fewest
                        // votes, the confidence within f32 rounding (the
                        // GPU's exp and log are not the host's). Only a
                        // probability within rounding of its threshold may
                        // flip a decision (Beta and Dirichlet compare one
                        // with their threshold).
                        let g = &got[0];
                        for (i, &p) in list.iter().enumerate() {
                            let twin = cpu.decide(&config, p).unwrap();
                            let d = g.decisions[i];
                            let at = format!(
                                "{context} prompt {p}: {d:?} keep {} next {:?}; twin {twin:?}",
                                g.keep[i],
                                g.next.get(i)
                            );
                            assert_eq!(
                                (d.consensus, d.votes),
                                (twin.consensus, twin.votes),
                                "{at}"
                            );
                            assert!((d.confidence - twin.confidence).abs() < 1e-4, "{at}");
                            assert_eq!(g.keep[i], u32::from(!d.stopped), "{at}");
                            let same = d.stopped == twin.stopped
                                && (!want_fewest || twin.stopped || g.next[i] == twin.next);
                            if !same {
                                assert!(
                                    matches!(
                                        rule,
                                        StopRule::Beta { .. } | StopRule::Dirichlet { .. }
                                    ),
                                    "{at}"
                                );
                                near += 1;
                            }
                            compared += 1;
                            if want_fewest && !d.stopped {
                                let room = max_votes - d.votes;
                                // Met at t (not the rest of the budget).
                                if g.next[i] < room {
                                    met_at[g.next[i].min(129) as usize] += 1;
                                }
                            }
                            exact +=
                                usize::from(d.confidence.to_bits() == twin.confidence.to_bits());
                        }
                    }
                }
            }
        }
        assert!(near < 5, "{near} near-threshold flips");
        // The fewest search met on both sides of the first chunk's edge and
        // past it.
        for t in [1, 63, 64, 65] {
            assert!(met_at[t] > 0, "no prompt met at {t} more votes");
        }
        assert!(met_at[66..].iter().sum::<usize>() > 0);
        eprintln!(
            "capacity {capacity}: {compared} decisions, {exact} with the twin's confidence bits"
        );
    }
}

/// The Dirichlet rule with the smallest alphas a table gives (one or two
/// votes an answer, priors down to 10^-3), on every decide route: the
/// routes alike bit for bit, the twin's decisions and its confidence within
/// 1e-4 (as above), and tables of k equal counts (k the answers kept) 1/k.
#[test]
fn dirichlet_small_alphas_match_the_twin_and_exact_values() {
    let Some(ctx) = common::gpu() else { return };
    // Votes an answer, one prompt each.
    let shapes: [&[u32]; 9] = [
        &[1, 1, 1],
        &[1, 1, 1, 1],
        &[1; 8],
        &[2, 2, 2, 2, 2],
        &[2, 1, 1],
        &[3, 1, 1, 1],
        &[2, 2, 1, 1, 1, 1],
        &[1, 1, 1, 1, 1, 1, 2],
        &[4, 1, 1, 1, 1, 1, 1, 1],
    ];
    let prompts = shapes.len() as u32;
    let capacity = 8;
    let (mut segments, mut answers) = (Vec::new(), Vec::new());
    for (p, counts) in shapes.iter().enumerate() {
        let start = answers.len() as u32;
        for (id, &c) in counts.iter().enumerate() {
            answers.extend(std::iter::repeat_n(id as u32 * 11 + 5, c as usize));
        }
        segments.push(Segment {
            prompt: p as u32,
            start,
            count: answers.len() as u32 - start,
        });
    }
    let round = RoundVotes {
        segments: &segments,
        answers: &answers,
        tokens: None,
    };
    let mut cpu = CpuVoteTables::new(prompts, capacity).unwrap();
    cpu.count(&round).unwrap();
    let mut gpus: Vec<_> = [
        DecideRoute::Auto,
        DecideRoute::PerInvocation,
        DecideRoute::PerWorkgroup,
    ]
    .into_iter()
    .map(|route| {
        let mut gpu = GpuVoteTables::new(&ctx, prompts, capacity)
            .unwrap()
            .with_decide_route(route);
        gpu.count(&round).unwrap();
        gpu
    })
    .collect();
    let list: Vec<u32> = (0..prompts).collect();
    for prior in [0.001f32, 0.05, 0.5] {
        for top in [0u32, 3] {
            let config = RuleConfig {
                rule: StopRule::Dirichlet {
                    threshold: 0.99,
                    prior,
                    top,
                },
                min_votes: 1,
                max_votes: 1000,
            };
            let got: Vec<_> = gpus
                .iter_mut()
                .map(|gpu| gpu.decide_with_fewest(&config, &list, false).unwrap())
                .collect();
            for (p, counts) in shapes.iter().enumerate() {
                let at = format!("prior {prior} top {top} counts {counts:?}");
                let d = got[0].decisions[p];
                for g in &got[1..] {
                    let e = g.decisions[p];
                    assert_eq!(
                        (e.stopped, e.consensus, e.confidence.to_bits(), e.votes),
                        (d.stopped, d.consensus, d.confidence.to_bits(), d.votes),
                        "{at}"
                    );
                }
                let twin = cpu.decide(&config, p as u32).unwrap();
                assert_eq!(
                    (d.stopped, d.consensus, d.votes),
                    (twin.stopped, twin.consensus, twin.votes),
                    "{at}: {d:?} vs {twin:?}"
                );
                assert!(
                    (d.confidence - twin.confidence).abs() < 1e-4,
                    "{at}: {d:?} vs {twin:?}"
                );
                let kept = if top == 0 {
                    counts.len()
                } else {
                    counts.len().min(top as usize)
                };
                let mut sorted = counts.to_vec();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                if sorted[..kept].iter().all(|&c| c == sorted[0]) {
                    let exact = 1.0 / kept as f32;
                    assert!((d.confidence - exact).abs() < 1e-4, "{at}: {d:?}");
                    assert!((twin.confidence - exact).abs() < 1e-5, "{at}: {twin:?}");
                }
            }
        }
    }
}

/// The scheduler's rounds on every decide route: the same outcome, bit for
/// bit, and the twin's rollouts, rounds and consensus (ConSol's allocation
/// reads the fewest votes back every round).
#[test]
fn scheduler_rounds_match_on_every_decide_route() {
    use rand::Rng;
    use rollcall::voting::cpu::run as run_cpu;
    use rollcall::voting::{Allocation, ReplayEngine, Scheduler};
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(41);
    let budget = 150u32;
    let data: Vec<Vec<u32>> = (0..130u32)
        .map(|p| {
            let spread = 1 + p % 6;
            (0..budget)
                .map(|_| rng.random_range(0..spread).min(rng.random_range(0..spread)))
                .collect()
        })
        .collect();
    for rule in [StopRule::CONSOL_SPRT, StopRule::Majority { share: 0.8 }] {
        for allocation in [Allocation::FewestToPass { first: 2 }, Allocation::Chunk(3)] {
            let config = RuleConfig {
                rule,
                min_votes: 2,
                max_votes: budget,
            };
            let twin = run_cpu(
                data.len() as u32,
                8,
                config,
                allocation,
                &mut ReplayEngine::new(data.clone()),
            )
            .unwrap();
            let mut first = None;
            for route in [
                DecideRoute::Auto,
                DecideRoute::PerInvocation,
                DecideRoute::PerWorkgroup,
            ] {
                let mut scheduler = Scheduler::new(&ctx, data.len() as u32, 8, config, allocation)
                    .unwrap()
                    .with_decide_route(route);
                let gpu = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
                let context = format!("{route:?} {rule:?} {allocation:?}");
                assert_eq!(
                    (gpu.rounds, &gpu.rollouts),
                    (twin.rounds, &twin.rollouts),
                    "{context}"
                );
                for (p, (g, t)) in gpu.prompts.iter().zip(&twin.prompts).enumerate() {
                    assert_eq!(
                        (g.consensus, g.rollouts, g.stopped_in_round),
                        (t.consensus, t.rollouts, t.stopped_in_round),
                        "{context} prompt {p}"
                    );
                }
                let bits: Vec<u32> = gpu.prompts.iter().map(|p| p.confidence.to_bits()).collect();
                let first = first.get_or_insert(bits.clone());
                assert_eq!(first, &bits, "{context}");
            }
        }
    }
}

/// Reward-route test groups: empty, one, two, around a lane a block (63,
/// 64, 65), past it (127, 129, 300) and 4 096 rollouts.
const REWARD_SIZES: &[u32] = &[0, 1, 2, 3, 63, 64, 65, 127, 128, 129, 300, 4096];

/// A reward as the tests draw it: ties (a few levels), spread values, and
/// now and then ±inf and ±0 (NaN is refused).
fn draw_reward(rng: &mut rand_chacha::ChaCha8Rng, kind: u32) -> f32 {
    match kind {
        0 => rng.random_range(0..3) as f32 * 0.5,
        1 => rng.random_range(-3.0f32..3.0) * 10f32.powi(rng.random_range(-3..4)),
        _ => match rng.random_range(0..40) {
            0 => f32::INFINITY,
            1 => f32::NEG_INFINITY,
            2 => -0.0,
            3 => 0.0,
            _ => rng.random_range(-1.0f32..1.0),
        },
    }
}

/// Same bits, NaN as NaN (a NaN's sign and payload are the device's).
fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Rewards and advantages on every reward route: the routes alike bit for
/// bit, the twin's rewards exactly and its advantages to rounding (the
/// sums take the same shape; division and square root may round apart),
/// over groups of every awkward size, flat groups, ties, ±inf and ±0, given
/// and majority rewards, and segment counts not a multiple of 64.
#[test]
fn reward_routes_match_the_twin() {
    use rollcall::voting::rewards::{group_advantages, majority_rewards};
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(53);
    let routes = [
        RewardRoute::Auto,
        RewardRoute::PerInvocation,
        RewardRoute::PerWorkgroup,
    ];
    let prompts = 150u32;
    let mut tables: Vec<GpuVoteTables> = routes
        .iter()
        .map(|&r| {
            GpuVoteTables::new(&ctx, prompts, 4)
                .unwrap()
                .with_reward_route(r)
        })
        .collect();
    let mut bit_equal = 0usize;
    let mut compared = 0usize;
    for trial in 0..12u32 {
        // Every awkward size once, then random ones; some prompts left out,
        // gaps between segments, a count that is not a multiple of 64.
        let kind = trial % 3;
        let mut sizes: Vec<u32> = REWARD_SIZES.to_vec();
        let extra = rng.random_range(1..=(prompts as usize - sizes.len()));
        sizes.extend((0..extra).map(|_| rng.random_range(0..=80)));
        sizes.shuffle(&mut rng);
        let mut order: Vec<u32> = (0..prompts).collect();
        order.shuffle(&mut rng);
        let mut segments = Vec::new();
        let mut n = 0u32;
        for (&count, &prompt) in sizes.iter().zip(&order) {
            n += rng.random_range(0..2);
            segments.push(Segment {
                prompt,
                start: n,
                count,
            });
            n += count;
        }
        let given: Vec<f32> = (0..n).map(|_| draw_reward(&mut rng, kind)).collect();
        // Flat groups: a few segments of one value (and one of +inf).
        let mut given = given;
        for (i, s) in segments.iter().enumerate().filter(|(i, _)| i % 7 == 0) {
            let level = if i % 14 == 0 { f32::INFINITY } else { 0.25 };
            for r in &mut given[s.start as usize..(s.start + s.count) as usize] {
                *r = level;
            }
        }
        let answers: Vec<u32> = (0..n).map(|_| rng.random_range(0..3)).collect();
        let consensus: Vec<u32> = (0..prompts).map(|_| rng.random_range(0..4)).collect();
        let majority = trial % 2 == 1;
        let eps = [0.0, 1e-4, 0.5][trial as usize % 3];
        let (c, g) = if majority {
            (Some(&consensus[..]), None)
        } else {
            (None, Some(&given[..]))
        };
        let want_rewards = if majority {
            majority_rewards(&segments, &answers, &consensus).unwrap()
        } else {
            given.clone()
        };
        let want = group_advantages(&segments, &want_rewards, eps).unwrap();
        let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
        for (route, gpu) in routes.iter().zip(&mut tables) {
            let (rewards, advantages) = gpu.rewards(&segments, &answers, c, g, eps).unwrap();
            let context = format!("trial {trial} {route:?}");
            assert_eq!(rewards.len(), n as usize, "{context}");
            for i in 0..n as usize {
                assert_eq!(
                    rewards[i].to_bits(),
                    want_rewards[i].to_bits(),
                    "{context} reward {i}"
                );
                let (a, w) = (advantages[i], want[i]);
                compared += 1;
                bit_equal += usize::from(same_bits(a, w));
                assert!(
                    same_bits(a, w) || (a - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{context} advantage {i}: gpu {a} twin {w}"
                );
            }
            if let Some((r0, a0)) = &first {
                for i in 0..n as usize {
                    assert!(
                        same_bits(rewards[i], r0[i]) && same_bits(advantages[i], a0[i]),
                        "{context} rollout {i}: ({}, {}) against the first route's ({}, {})",
                        rewards[i],
                        advantages[i],
                        r0[i],
                        a0[i]
                    );
                }
            } else {
                first = Some((rewards, advantages));
            }
        }
    }
    eprintln!("reward routes: {bit_equal} of {compared} advantages bit for bit with the twin");
}

/// The scheduler's rewards on every reward route: the same bits.
#[test]
fn scheduler_rewards_match_on_every_reward_route() {
    use rollcall::voting::{Allocation, ReplayEngine, Scheduler};
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(59);
    let budget = 80u32;
    let data: Vec<Vec<u32>> = (0..70u32)
        .map(|p| {
            let spread = 1 + p % 5;
            (0..budget).map(|_| rng.random_range(0..spread)).collect()
        })
        .collect();
    let config = RuleConfig {
        rule: StopRule::Majority { share: 0.9 },
        min_votes: 4,
        max_votes: budget,
    };
    let mut first: Option<(Vec<u32>, Vec<u32>)> = None;
    for route in [RewardRoute::PerInvocation, RewardRoute::PerWorkgroup] {
        let mut scheduler =
            Scheduler::new(&ctx, data.len() as u32, 8, config, Allocation::Chunk(8))
                .unwrap()
                .with_reward_route(route);
        let out = scheduler.run(&mut ReplayEngine::new(data.clone())).unwrap();
        let bits = (
            out.rewards.iter().map(|r| r.to_bits()).collect(),
            out.advantages.iter().map(|a| a.to_bits()).collect(),
        );
        assert!(!out.advantages.is_empty());
        match &first {
            Some(f) => assert_eq!(f, &bits, "{route:?}"),
            None => first = Some(bits),
        }
    }
}
