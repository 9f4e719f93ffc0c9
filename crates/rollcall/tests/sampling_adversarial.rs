//! Adversarial rows (ties of the maximum across groups, streams and tiles,
//! -0/+0, +inf in first/last/partial groups, masks, nothing valid, huge
//! ranges) on awkward vocab sizes: every route bit for bit (and each kind
//! of row as a batch of its own: greedy and plain rows go to the small
//! drawing kernel, filtered ones must not), and against the twin (exact for
//! greedy tokens and plain/greedy kept counts).
#![allow(clippy::disallowed_methods)]
mod common;
use rand::Rng;
use rollcall::internals::TILE_TOKENS;
use rollcall::sampling::cpu;
use rollcall::{HostLogits, RowStatus, SamplingParams};

fn rows_for(vocab: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<Vec<f32>> {
    let t = TILE_TOKENS as usize;
    let mut out = Vec::new();
    let base: Vec<f32> = (0..vocab).map(|_| rng.random_range(-4.0f32..2.0)).collect();
    // Ties of the max at several positions: within a group, across groups of
    // one stream, across streams, across tiles; lowest must win.
    for pos in [
        vec![vocab - 1],
        vec![vocab / 2, vocab - 1],
        vec![1, 3],
        vec![2, 1],
        vec![3, 1024],
        vec![1024 + 5, 5, 1024 * 2 + 1],
        vec![t + 7, 2 * t + 3, 7],
        vec![t - 1, t, t + 1],
    ] {
        let mut r = base.clone();
        for &p in &pos {
            if p < vocab {
                r[p] = 9.0;
            }
        }
        out.push(r);
        // The same with -0 / +0 as the max (everything else negative).
        let mut r: Vec<f32> = base.iter().map(|x| -x.abs() - 1.0).collect();
        for (n, &p) in pos.iter().enumerate() {
            if p < vocab {
                r[p] = if n % 2 == 0 { -0.0 } else { 0.0 };
            }
        }
        out.push(r);
    }
    // +inf in various streams / tiles / last partial group; NaN and -inf masks.
    for pos in [
        vec![0],
        vec![vocab - 1],
        vec![vocab.saturating_sub(2), 0],
        vec![1023, 4, 1020],
        vec![t + 2, 2 * t - 1],
        vec![3 * t + 1, t + 2],
    ] {
        let mut r = base.clone();
        for (n, &p) in pos.iter().enumerate() {
            if p < vocab {
                r[p] = f32::INFINITY;
            }
            if n == 0 && p + 1 < vocab {
                r[p + 1] = f32::NAN;
            }
        }
        out.push(r);
    }
    // Mostly masked: -inf everywhere but a few; NaN everywhere but one.
    let mut r = vec![f32::NEG_INFINITY; vocab];
    r[vocab - 1] = 1.0;
    if vocab > 5 {
        r[5] = 1.0;
    }
    out.push(r);
    let mut r = vec![f32::NAN; vocab];
    r[vocab / 2] = -3.0e38;
    out.push(r);
    let mut r = vec![f32::MIN; vocab];
    r[vocab / 3] = f32::MIN;
    out.push(r);
    // Nothing valid.
    out.push(vec![f32::NEG_INFINITY; vocab]);
    // Huge range: overflow of z - row_max.
    let mut r = base.clone();
    r[0] = 3.0e38;
    r[vocab - 1] = -3.0e38;
    out.push(r);
    out
}

#[test]
fn adversarial_rows_agree_on_every_route_and_with_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let mut routes = common::every_route(&ctx);
    let mut rng = common::rng(0xBAD);
    let t = TILE_TOKENS as usize;
    let mut vocabs: Vec<usize> = (1..=9).collect();
    vocabs.extend([
        1023,
        1024,
        1025,
        1027,
        t - 3,
        t,
        t + 1,
        t + 5,
        2 * t - 1,
        2 * t,
        4 * t + 3,
    ]);
    let mut checked = 0;
    for vocab in vocabs {
        let rows = rows_for(vocab, &mut rng);
        let mut values = Vec::new();
        let mut params = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            for kind in 0..5 {
                values.extend_from_slice(r);
                let sp = match kind {
                    0 => SamplingParams::greedy(),
                    1 => SamplingParams::new(1.0),
                    2 => SamplingParams::new(0.8).top_k(3),
                    3 => SamplingParams::new(1.2).top_p(0.9),
                    _ => SamplingParams::new(1.0).min_p(0.1),
                };
                params.push(sp.seed(i as u64 * 7 + 1).step(kind));
            }
        }
        let logits = HostLogits::F32(&values);
        let results: Vec<_> = routes
            .iter_mut()
            .map(|(mode, sampler)| {
                (
                    *mode,
                    sampler.sample(logits, vocab as u32, &params).unwrap(),
                )
            })
            .collect();
        let b = &results[0].1;
        for (mode, other) in &results[1..] {
            common::assert_same_bits(
                b,
                other,
                &format!("vocab {vocab}: {:?} vs {mode:?}", results[0].0),
            );
        }
        // Each kind as a batch of its own, on every route: greedy and plain
        // rows (drawn by the small kernel after a separate first pass), then
        // each filter alone (a batch the host must send to the full kernel:
        // a filtered row drawn by the small one would lose its filter). The
        // same bits as in the mixed batch.
        for (label, kinds) in [
            ("greedy and plain", 0..2),
            ("top-k", 2..3),
            ("top-p", 3..4),
            ("min-p", 4..5),
        ] {
            let rows: Vec<usize> = (0..params.len())
                .filter(|r| kinds.contains(&(r % 5)))
                .collect();
            let sub_values = common::pick_rows(&values, vocab, &rows);
            let sub_params: Vec<SamplingParams> = rows.iter().map(|&r| params[r]).collect();
            let want: Vec<_> = rows.iter().map(|&r| b[r]).collect();
            for (mode, sampler) in &mut routes {
                let got = sampler
                    .sample(HostLogits::F32(&sub_values), vocab as u32, &sub_params)
                    .unwrap();
                common::assert_same_bits(
                    &want,
                    &got,
                    &format!("vocab {vocab}, {label} rows only, {mode:?}"),
                );
            }
        }
        for r in 0..params.len() {
            let ctx = format!("vocab {vocab} row {} kind {} {:?}", r / 5, r % 5, params[r]);
            let tr = cpu::sample_traced(logits.row(r, vocab).unwrap(), &params[r]).unwrap();
            assert_eq!(b[r].status, tr.result.status, "twin {ctx}");
            if b[r].status == RowStatus::Ok {
                if r % 5 <= 1 {
                    // Greedy and plain rows: token (greedy) and kept exact.
                    assert_eq!(b[r].kept, tr.result.kept, "twin kept {ctx}");
                }
                if r % 5 == 0 || !tr.is_near_tie(1e-4) {
                    assert_eq!(
                        b[r].token, tr.result.token,
                        "twin token {ctx} {:?} {:?}",
                        b[r], tr
                    );
                }
                let tol = 2e-4 * tr.result.logprob.abs().max(1.0);
                if b[r].token == tr.result.token {
                    assert!(
                        (b[r].logprob - tr.result.logprob).abs() <= tol,
                        "logprob {ctx} {:?} {:?}",
                        b[r],
                        tr
                    );
                }
            }
            checked += 1;
        }
    }
    eprintln!("checked {checked}");
}
