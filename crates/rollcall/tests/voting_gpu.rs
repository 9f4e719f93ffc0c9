//! GPU vote tables against the CPU twin over many ragged rounds, including
//! prompts that see more distinct answers than the table holds. Fails without
//! an adapter unless ROLLCALL_ALLOW_NO_GPU=1.

mod common;

use rand::seq::SliceRandom;
use rand::Rng;
use rollcall::voting::{
    cpu::VoteTables as CpuVoteTables, RoundVotes, Segment, VoteTables as GpuVoteTables,
};
use rollcall::Error;

fn random_round(
    rng: &mut rand_chacha::ChaCha8Rng,
    prompts: u32,
    alphabet: u32,
    with_tokens: bool,
) -> (Vec<Segment>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..prompts).collect();
    order.shuffle(rng);
    let voting = rng.random_range(0..=prompts) as usize;
    let mut segments = Vec::new();
    let mut answers = Vec::new();
    let mut tokens = Vec::new();
    for &prompt in &order[..voting] {
        let count = rng.random_range(0..9);
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
    for &(prompts, capacity, alphabet) in &[
        (1u32, 1u32, 3u32),
        (37, 4, 12),
        (1000, 16, 6),
        (3000, 2, 40),
    ] {
        let mut gpu = GpuVoteTables::new(&ctx, prompts, capacity).unwrap();
        let mut cpu = CpuVoteTables::new(prompts, capacity).unwrap();
        for round in 0..6 {
            let (segments, answers, tokens) =
                random_round(&mut rng, prompts, alphabet, round % 2 == 0);
            let votes = RoundVotes {
                segments: &segments,
                answers: &answers,
                tokens: (round % 2 == 0).then_some(&tokens[..]),
            };
            gpu.count(&votes).unwrap();
            cpu.count(&votes).unwrap();
        }
        let (votes, tables) = gpu.read().unwrap();
        let mut overflowed = 0;
        for p in 0..prompts {
            assert_eq!(&votes[p as usize], cpu.votes(p).unwrap(), "prompt {p}");
            let used = votes[p as usize].distinct as usize;
            let table = &tables[p as usize * capacity as usize..][..used];
            assert_eq!(table, cpu.table(p).unwrap(), "prompt {p}");
            overflowed += usize::from(votes[p as usize].overflow > 0);
        }
        if capacity < alphabet {
            assert!(overflowed > 0, "the overflow path ran");
        }
    }
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
