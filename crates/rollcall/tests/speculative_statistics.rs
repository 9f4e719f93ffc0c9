//! Speculative verification is exact: over many seeded requests, the emitted
//! tokens follow the target's processed distribution at every position
//! (chi-square goodness of fit against an independent f64 statement of the
//! sampling contract, fixed seeds, a test fails when p < 1e-3), and the
//! acceptance rate matches its closed form Σ min(p, q) (a z-test on the
//! acceptance indicator, failing past 4.5 standard errors: p < 1e-5). Draft
//! tokens are drawn from the draft distribution by the test's own generator.
//! Cases: draft = target (everything accepted), draft disjoint from target
//! (everything rejected), mixtures (draft logits with filters, draft
//! probabilities), deterministic drafts, greedy rows.

mod common;

use rand::Rng;
use rollcall::speculative::{DraftDistribution, Drafts, Verifier, VerifyOptions};
use rollcall::{HostLogits, RowStatus, SamplingParams};

const P_THRESHOLD: f64 = 1e-3;
const Z_LIMIT: f64 = 4.5;
const VOCAB: usize = 8;
/// Drafts per request.
const K: usize = 2;
const TRIALS: usize = 20_000;

/// The three target positions' logits and the two draft rows' logits.
struct Setup {
    params: SamplingParams,
    target: [[f32; VOCAB]; K + 1],
    draft: [[f32; VOCAB]; K],
}

fn reference(row: &[f32], params: &SamplingParams) -> Vec<f64> {
    common::reference_distribution(row, params).expect("a valid row")
}

/// Draws from `probs` with the test's generator.
fn draw(rng: &mut impl Rng, probs: &[f64]) -> u32 {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, &p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i as u32;
        }
    }
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

fn alpha(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a.min(*b)).sum()
}

/// What the requests emitted, per position.
struct Tally {
    /// Emitted token counts at positions 0, 1, 2 (a position counts only
    /// when the request reached it).
    counts: [[u64; VOCAB]; K + 1],
    /// Requests that accepted position 0's draft; and the mean of the
    /// acceptance probability reported for position 0.
    accepted_first: u64,
    mean_acceptance: f64,
    all_accepted: u64,
}

/// Runs `TRIALS` requests of `setup` with draft tokens from `drafts_for`.
fn run(
    verifier: &mut Verifier,
    setup: &Setup,
    kind: &str,
    seed: u64,
    mut drafts_for: impl FnMut(&mut rand_chacha::ChaCha8Rng, usize) -> u32,
) -> Tally {
    let mut rng = common::rng(seed);
    let mut target = Vec::with_capacity(TRIALS * (K + 1) * VOCAB);
    let mut draft_logits = Vec::with_capacity(TRIALS * K * VOCAB);
    let mut tokens = Vec::with_capacity(TRIALS * K);
    for _ in 0..TRIALS {
        for row in &setup.target {
            target.extend_from_slice(row);
        }
        for (i, row) in setup.draft.iter().enumerate() {
            draft_logits.extend_from_slice(row);
            tokens.push(drafts_for(&mut rng, i));
        }
    }
    // Draft probabilities: the processed draft distribution, as given.
    let draft_probs: Vec<f32> = setup
        .draft
        .iter()
        .map(|row| reference(row, &setup.params))
        .collect::<Vec<_>>()
        .iter()
        .cycle()
        .take(TRIALS * K)
        .flat_map(|q| q.iter().map(|&x| x as f32).collect::<Vec<_>>())
        .collect();
    let params: Vec<SamplingParams> = (0..TRIALS)
        .map(|t| {
            setup
                .params
                .seed(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .step(t as u64 * 7)
        })
        .collect();
    let lens = vec![K as u32; TRIALS];
    let draft = match kind {
        "logits" => DraftDistribution::Logits(HostLogits::F32(&draft_logits)),
        "probs" => DraftDistribution::Probs(HostLogits::F32(&draft_probs)),
        _ => DraftDistribution::Deterministic,
    };
    let out = verifier
        .verify(
            HostLogits::F32(&target),
            VOCAB as u32,
            &params,
            &Drafts {
                tokens: &tokens,
                lens: &lens,
            },
            &VerifyOptions {
                draft,
                mask: None,
                histories: None,
            },
        )
        .unwrap();
    let mut tally = Tally {
        counts: [[0; VOCAB]; K + 1],
        accepted_first: 0,
        mean_acceptance: 0.0,
        all_accepted: 0,
    };
    for v in &out {
        assert_eq!(v.status, RowStatus::Ok);
        for (i, &token) in v.tokens.iter().enumerate() {
            tally.counts[i][token as usize] += 1;
        }
        tally.accepted_first += u64::from(v.accepted >= 1);
        tally.all_accepted += u64::from(v.accepted == K as u32);
        tally.mean_acceptance += f64::from(v.acceptance[0]) / TRIALS as f64;
    }
    tally
}

fn check_positions(tally: &Tally, setup: &Setup, label: &str) {
    for i in 0..=K {
        let n: u64 = tally.counts[i].iter().sum();
        if n < 200 {
            continue;
        }
        let p = reference(&setup.target[i], &setup.params);
        let (stat, pv, bins) = common::chi_square(&tally.counts[i], &p, label);
        eprintln!("{label} position {i}: n {n}, chi2 {stat:.2} over {bins} bins, p {pv:.4}");
        assert!(
            pv > P_THRESHOLD,
            "{label} position {i}: p = {pv} ({:?} vs {p:?})",
            tally.counts[i]
        );
    }
}

fn check_rate(observed: u64, expected: f64, label: &str) {
    let n = TRIALS as f64;
    let se = (expected * (1.0 - expected) / n).sqrt().max(1e-9);
    let z = (observed as f64 / n - expected) / se;
    eprintln!(
        "{label}: acceptance {:.4} vs {expected:.4} (z {z:.2})",
        observed as f64 / n
    );
    assert!(
        z.abs() < Z_LIMIT,
        "{label}: acceptance {} vs {expected}, z = {z}",
        observed as f64 / n
    );
}

fn setup(params: SamplingParams, noise: f32, seed: u64) -> Setup {
    let mut rng = common::rng(seed);
    let mut row = || -> [f32; VOCAB] { std::array::from_fn(|_| rng.random_range(-2.0f32..2.0)) };
    let target = [row(), row(), row()];
    let mut rng = common::rng(seed + 1);
    let draft = std::array::from_fn(|i| {
        std::array::from_fn(|j| target[i][j] + noise * rng.random_range(-1.0f32..1.0))
    });
    Setup {
        params,
        target,
        draft,
    }
}

#[test]
fn mixtures_emit_the_target_distribution() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    // Each case its own seed: the acceptance uniforms are then independent
    // across cases.
    for (kind, params, noise, seed) in [
        ("logits", SamplingParams::new(0.9).top_k(6), 1.5, 3),
        ("logits", SamplingParams::new(1.0).top_p(0.8), 2.5, 4),
        ("probs", SamplingParams::new(1.0), 2.0, 5),
    ] {
        let s = setup(params, noise, 11);
        let q: Vec<Vec<f64>> = s.draft.iter().map(|r| reference(r, &s.params)).collect();
        let q_draw = q.clone();
        let tally = run(&mut verifier, &s, kind, seed, |rng, i| {
            draw(rng, &q_draw[i])
        });
        let label = format!(
            "{kind} mixture (T {}, top-k {}, top-p {})",
            params.temperature, params.top_k, params.top_p
        );
        check_positions(&tally, &s, &label);
        let p0 = reference(&s.target[0], &s.params);
        let a0 = alpha(&p0, &q[0]);
        check_rate(tally.accepted_first, a0, &label);
        // The reported acceptance probability's mean estimates the same rate.
        assert!(
            (tally.mean_acceptance - a0).abs() < 0.02,
            "{label}: mean acceptance {} vs {a0}",
            tally.mean_acceptance
        );
    }
}

#[test]
fn a_draft_equal_to_the_target_is_always_accepted() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let mut s = setup(SamplingParams::new(0.8).top_k(5), 0.0, 21);
    s.draft = [s.target[0], s.target[1]];
    let q: Vec<Vec<f64>> = s.draft.iter().map(|r| reference(r, &s.params)).collect();
    let tally = run(&mut verifier, &s, "logits", 5, |rng, i| draw(rng, &q[i]));
    assert_eq!(tally.all_accepted, TRIALS as u64);
    check_positions(&tally, &s, "draft = target");
}

#[test]
fn a_disjoint_draft_is_always_rejected() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let mut s = setup(SamplingParams::new(1.0), 0.0, 31);
    // The target never emits tokens 5..8; the draft only proposes them.
    for row in &mut s.target {
        row[5..].fill(f32::NEG_INFINITY);
    }
    for row in &mut s.draft {
        row[..5].fill(f32::NEG_INFINITY);
        row[5..].copy_from_slice(&[0.5, -0.3, 1.0]);
    }
    let q: Vec<Vec<f64>> = s.draft.iter().map(|r| reference(r, &s.params)).collect();
    let tally = run(&mut verifier, &s, "logits", 7, |rng, i| draw(rng, &q[i]));
    assert_eq!(tally.accepted_first, 0);
    assert_eq!(tally.mean_acceptance, 0.0);
    check_positions(&tally, &s, "disjoint draft");
}

#[test]
fn deterministic_drafts_accept_at_the_target_probability() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let s = setup(SamplingParams::new(1.0).min_p(0.05), 0.0, 41);
    let p0 = reference(&s.target[0], &s.params);
    // The draft proposes position 0's second most likely token.
    let mut order: Vec<usize> = (0..VOCAB).collect();
    order.sort_by(|&a, &b| p0[b].total_cmp(&p0[a]));
    let x0 = order[1] as u32;
    let tally = run(
        &mut verifier,
        &s,
        "none",
        9,
        |_, i| if i == 0 { x0 } else { 3 },
    );
    check_positions(&tally, &s, "deterministic");
    check_rate(tally.accepted_first, p0[x0 as usize], "deterministic");
    assert!((tally.mean_acceptance - p0[x0 as usize]).abs() < 1e-5);
}

#[test]
fn greedy_rows_accept_exactly_the_arg_max() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let s = setup(SamplingParams::greedy(), 1.0, 51);
    let argmax = |row: &[f32; VOCAB]| {
        (0..VOCAB)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap() as u32
    };
    let (a0, a1, a2) = (
        argmax(&s.target[0]),
        argmax(&s.target[1]),
        argmax(&s.target[2]),
    );
    for kind in ["none", "logits"] {
        // Drafts right on position 0 half of the time.
        let tally = run(&mut verifier, &s, kind, 13, |rng, i| {
            if i == 0 && rng.random_bool(0.5) {
                a0
            } else if i == 0 {
                (a0 + 1) % VOCAB as u32
            } else {
                a1
            }
        });
        // Every emitted token is its position's arg-max.
        assert_eq!(tally.counts[0][a0 as usize], TRIALS as u64, "{kind}");
        assert_eq!(tally.counts[1][a1 as usize], tally.accepted_first, "{kind}");
        assert_eq!(tally.counts[2][a2 as usize], tally.all_accepted, "{kind}");
        assert_eq!(tally.all_accepted, tally.accepted_first, "{kind}");
        check_rate(tally.accepted_first, 0.5, kind);
    }
}
