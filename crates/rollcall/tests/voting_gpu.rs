//! GPU vote tables against the CPU twin over many ragged rounds, including
//! prompts that see more distinct answers than the table holds, on every
//! counting route (an invocation or a workgroup per segment; segments
//! longer than a workgroup). Fails without an adapter unless
//! ROLLCALL_ALLOW_NO_GPU=1.

mod common;

use rand::seq::SliceRandom;
use rand::Rng;
use rollcall::internals::CountRoute;
use rollcall::voting::{
    cpu::VoteTables as CpuVoteTables, RoundVotes, Segment, VoteTables as GpuVoteTables,
};
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
