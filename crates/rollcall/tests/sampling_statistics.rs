//! Statistical tests: GPU (and CPU twin) draws against the exact filtered
//! distribution of an independent f64 statement of the contract. Chi-square
//! goodness of fit with fixed seeds; a test fails when p < 1e-3.

mod common;

use half::{bf16, f16};
use rand::Rng;
use rollcall::sampling::{cpu, HostMask, SampleOptions};
use rollcall::{HostLogits, RowStatus, Sampler, SamplingParams};

/// A sampler under test: logits and parameters in, one result per row out.
type SampleFn<'a> = dyn FnMut(&[f32], &[SamplingParams]) -> Vec<rollcall::SampleResult> + 'a;

/// Fail below this p-value.
const P_THRESHOLD: f64 = 1e-3;
const VOCAB: usize = 3000;

/// A heavy head of 30 tokens over a low body, with two exact ties in the head.
fn test_row(seed: u64) -> Vec<f32> {
    let mut rng = common::rng(seed);
    let mut row: Vec<f32> = (0..VOCAB)
        .map(|_| rng.random_range(-7.0f32..-2.0))
        .collect();
    for i in 0..30 {
        row[i * 97 + 5] = rng.random_range(1.0f32..5.0);
    }
    row[6 * 97 + 5] = row[3 * 97 + 5];
    row[9 * 97 + 5] = row[3 * 97 + 5];
    row
}

struct Mode {
    name: &'static str,
    params: SamplingParams,
    row_seed: u64,
    edit: fn(&mut [f32]),
}

/// Moves the heavy head into stream 1 (tokens 4 + 1024 m + j): the draw is
/// then decided by the race inside one stream, not between streams.
fn head_in_one_stream(r: &mut [f32]) {
    let head: Vec<f32> = (0..30).map(|i| r[i * 97 + 5]).collect();
    for i in 0..30 {
        r[i * 97 + 5] = -5.0;
    }
    for (k, v) in head.iter().take(12).enumerate() {
        r[4 + 1024 * (k / 4) + k % 4] = *v;
    }
}

fn modes() -> Vec<Mode> {
    let none: fn(&mut [f32]) = |_| {};
    vec![
        Mode {
            name: "plain T=1",
            params: SamplingParams::new(1.0),
            row_seed: 1,
            edit: none,
        },
        Mode {
            name: "T=0.5",
            params: SamplingParams::new(0.5),
            row_seed: 2,
            edit: none,
        },
        Mode {
            name: "T=2",
            params: SamplingParams::new(2.0),
            row_seed: 3,
            edit: none,
        },
        Mode {
            name: "top-k 10",
            params: SamplingParams::new(1.0).top_k(10),
            row_seed: 4,
            edit: none,
        },
        Mode {
            name: "top-k 7 (tie at boundary)",
            params: SamplingParams::new(1.0).top_k(7),
            row_seed: 5,
            edit: |r| {
                let mut head: Vec<usize> = (0..30).map(|i| i * 97 + 5).collect();
                head.sort_by(|&a, &b| r[b].partial_cmp(&r[a]).unwrap());
                let v = r[head[6]];
                r[head[7]] = v;
                r[head[8]] = v;
            },
        },
        Mode {
            name: "top-p 0.8",
            params: SamplingParams::new(1.0).top_p(0.8),
            row_seed: 6,
            edit: none,
        },
        Mode {
            name: "min-p 0.1",
            params: SamplingParams::new(1.0).min_p(0.1),
            row_seed: 7,
            edit: none,
        },
        Mode {
            name: "top-k 20 + top-p 0.9 + min-p 0.02 at T=0.8",
            params: SamplingParams::new(0.8).top_k(20).top_p(0.9).min_p(0.02),
            row_seed: 8,
            edit: none,
        },
        Mode {
            name: "top-nσ 1.0",
            params: SamplingParams::new(1.0).top_n_sigma(1.0),
            row_seed: 14,
            edit: none,
        },
        Mode {
            name: "top-nσ 2.5 at T=0.7 with top-k 15",
            params: SamplingParams::new(0.7).top_n_sigma(2.5).top_k(15),
            row_seed: 15,
            edit: none,
        },
        Mode {
            name: "+inf tokens (uniform over them)",
            params: SamplingParams::new(1.0).top_k(5),
            row_seed: 9,
            edit: |r| {
                r[10] = f32::INFINITY;
                r[1500] = f32::INFINITY;
                r[2999] = f32::INFINITY;
            },
        },
        Mode {
            name: "NaN and -inf in the head",
            params: SamplingParams::new(1.0).top_p(0.95),
            row_seed: 10,
            edit: |r| {
                r[5] = f32::NAN;
                r[102] = f32::NEG_INFINITY;
            },
        },
        Mode {
            name: "head inside one stream, T=1",
            params: SamplingParams::new(1.0),
            row_seed: 11,
            edit: head_in_one_stream,
        },
        Mode {
            name: "head inside one stream, top-k 8",
            params: SamplingParams::new(1.0).top_k(8),
            row_seed: 12,
            edit: head_in_one_stream,
        },
        Mode {
            name: "head inside one stream, top-p 0.9",
            params: SamplingParams::new(1.0).top_p(0.9),
            row_seed: 13,
            edit: head_in_one_stream,
        },
    ]
}

fn draw_counts(
    sample: &mut SampleFn,
    row: &[f32],
    params: SamplingParams,
    draws: usize,
    expected_kept: usize,
    label: &str,
) -> Vec<u64> {
    let mut counts = vec![0u64; VOCAB];
    let batch = 2048.min(draws);
    let logits: Vec<f32> = row.iter().cycle().take(VOCAB * batch).cloned().collect();
    let mut done = 0;
    while done < draws {
        let params: Vec<SamplingParams> = (done..done + batch)
            .map(|i| params.seed(0xC0FFEE ^ (i as u64 / 8)).step(i as u64 % 8))
            .collect();
        for r in sample(&logits, &params) {
            assert_eq!(r.status, RowStatus::Ok, "{label}");
            assert_eq!(
                r.kept as usize, expected_kept,
                "{label}: kept set differs from the contract's"
            );
            counts[r.token as usize] += 1;
        }
        done += batch;
    }
    counts
}

fn check_modes(draws: usize, sample: &mut SampleFn, who: &str) {
    for mode in modes() {
        let mut row = test_row(mode.row_seed);
        (mode.edit)(&mut row);
        let probs = common::reference_distribution(&row, &mode.params).unwrap();
        let kept = probs.iter().filter(|&&p| p > 0.0).count();
        let label = format!("{who} {}", mode.name);
        let counts = draw_counts(sample, &row, mode.params, draws, kept, &label);
        let (stat, p, bins) = common::chi_square(&counts, &probs, &label);
        eprintln!("{label}: kept {kept}, chi2 {stat:.1} over {bins} bins, p = {p:.3}");
        assert!(
            p >= P_THRESHOLD,
            "{label}: chi-square p = {p} < {P_THRESHOLD}"
        );
    }
}

/// Masked rows draw from the softmax over the allowed tokens: the mask
/// bans the two most likely tokens and allows a random half of the rest.
fn check_masked(draws: usize, sample: &mut SampleFn, mask_words: &[u32], who: &str) {
    let row = test_row(21);
    let mut masked_row = row.clone();
    for (i, x) in masked_row.iter_mut().enumerate() {
        if (mask_words[i / 32] >> (i % 32)) & 1 == 0 {
            *x = f32::NEG_INFINITY;
        }
    }
    for params in [
        SamplingParams::new(1.0),
        SamplingParams::new(0.8).top_p(0.9),
    ] {
        let probs = common::reference_distribution(&masked_row, &params).unwrap();
        let kept = probs.iter().filter(|&&p| p > 0.0).count();
        let label = format!("{who} masked {params:?}");
        let counts = draw_counts(sample, &row, params, draws, kept, &label);
        let (stat, p, bins) = common::chi_square(&counts, &probs, &label);
        eprintln!("{label}: kept {kept}, chi2 {stat:.1} over {bins} bins, p = {p:.3}");
        assert!(
            p >= P_THRESHOLD,
            "{label}: chi-square p = {p} < {P_THRESHOLD}"
        );
    }
}

fn test_mask() -> Vec<u32> {
    let row = test_row(21);
    let mut order: Vec<u32> = (0..VOCAB as u32).collect();
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    let mut rng = common::rng(22);
    let allowed: Vec<u32> = order[2..]
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    rollcall::sampling::mask::allow_only(VOCAB as u32, &allowed).unwrap()
}

#[test]
fn masked_draws_follow_the_allowed_distribution() {
    let Some(ctx) = common::gpu() else { return };
    let words = test_mask();
    let mut sampler = Sampler::new(&ctx).unwrap();
    let mut gpu = |logits: &[f32], params: &[SamplingParams]| {
        let rows = vec![Some(0); params.len()];
        let options = SampleOptions::default().mask(HostMask {
            words: &words,
            rows: &rows,
        });
        sampler
            .sample_with(HostLogits::F32(logits), VOCAB as u32, params, &options)
            .unwrap()
            .results
    };
    check_masked(16384, &mut gpu, &words, "gpu");
    let mut twin = |logits: &[f32], params: &[SamplingParams]| {
        let rows = vec![Some(0); params.len()];
        let options = SampleOptions::default().mask(HostMask {
            words: &words,
            rows: &rows,
        });
        cpu::sample_with(HostLogits::F32(logits), VOCAB as u32, params, &options)
            .unwrap()
            .results
    };
    check_masked(8192, &mut twin, &words, "cpu");
}

#[test]
fn gpu_draws_follow_the_filtered_distribution() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let mut sample = |logits: &[f32], params: &[SamplingParams]| {
        sampler
            .sample(HostLogits::F32(logits), VOCAB as u32, params)
            .unwrap()
    };
    check_modes(16384, &mut sample, "gpu");
}

#[test]
fn cpu_twin_draws_follow_the_filtered_distribution() {
    let mut sample = |logits: &[f32], params: &[SamplingParams]| {
        cpu::sample(HostLogits::F32(logits), VOCAB as u32, params).unwrap()
    };
    check_modes(8192, &mut sample, "cpu");
}

/// The exact fallback route (a sampler that can gather only 64 tokens) draws
/// from the same distributions.
#[test]
fn gpu_fallback_route_draws_follow_the_filtered_distribution() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::with_candidate_capacity(&ctx, 64).unwrap();
    let mut sample = |logits: &[f32], params: &[SamplingParams]| {
        sampler
            .sample(HostLogits::F32(logits), VOCAB as u32, params)
            .unwrap()
    };
    check_modes(8192, &mut sample, "gpu fallback");
}

/// Half-precision inputs: the distribution is the one of the rounded logits.
#[test]
fn gpu_half_precision_draws_follow_the_distribution() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let params = SamplingParams::new(0.9).top_p(0.95);
    for (name, round) in [
        (
            "f16",
            (|x: f32| f16::from_f32(x).to_f32()) as fn(f32) -> f32,
        ),
        ("bf16", |x: f32| bf16::from_f32(x).to_f32()),
    ] {
        let row: Vec<f32> = test_row(20).into_iter().map(round).collect();
        let probs = common::reference_distribution(&row, &params).unwrap();
        let kept = probs.iter().filter(|&&p| p > 0.0).count();
        let mut sample = |logits: &[f32], ps: &[SamplingParams]| {
            if name == "f16" {
                let v: Vec<f16> = logits.iter().map(|&x| f16::from_f32(x)).collect();
                sampler
                    .sample(HostLogits::F16(&v), VOCAB as u32, ps)
                    .unwrap()
            } else {
                let v: Vec<bf16> = logits.iter().map(|&x| bf16::from_f32(x)).collect();
                sampler
                    .sample(HostLogits::Bf16(&v), VOCAB as u32, ps)
                    .unwrap()
            }
        };
        let counts = draw_counts(&mut sample, &row, params, 8192, kept, name);
        let (stat, p, bins) = common::chi_square(&counts, &probs, name);
        eprintln!("gpu {name}: kept {kept}, chi2 {stat:.1} over {bins} bins, p = {p:.3}");
        assert!(p >= P_THRESHOLD, "{name}: p = {p}");
    }
}

/// The chi-square check itself rejects a wrong distribution (so the tests above
/// can fail): draws from the unfiltered distribution fail the top-k test.
#[test]
fn chi_square_rejects_a_wrong_distribution() {
    let row = test_row(4);
    let right = common::reference_distribution(&row, &SamplingParams::new(1.0).top_k(10)).unwrap();
    let wrong = common::reference_distribution(&row, &SamplingParams::new(0.8).top_k(10)).unwrap();
    let mut sample = |logits: &[f32], params: &[SamplingParams]| {
        let p: Vec<SamplingParams> = params.iter().map(|p| p.top_k(10).min_p(0.0)).collect();
        let mut p2 = p.clone();
        p2.iter_mut().for_each(|x| x.temperature = 0.8);
        cpu::sample(HostLogits::F32(logits), VOCAB as u32, &p2).unwrap()
    };
    let counts = draw_counts(
        &mut sample,
        &row,
        SamplingParams::new(1.0),
        8192,
        10,
        "wrong",
    );
    let (_, p_wrong, _) = common::chi_square(&counts, &right, "wrong");
    let (_, p_right, _) = common::chi_square(&counts, &wrong, "right");
    assert!(
        p_wrong < P_THRESHOLD,
        "a temperature of 0.8 passed as 1.0: p = {p_wrong}"
    );
    assert!(p_right >= P_THRESHOLD, "p = {p_right}");
}

/// Bias and penalties: draws follow the softmax of the logits edited as the
/// contract says, computed here in f64 from the row, the history and the
/// biases (not by the kernels): the head's best tokens sit in the prompt
/// and the output, one is biased down and a body token biased up.
#[test]
fn penalised_draws_follow_the_edited_distribution() {
    let Some(ctx) = common::gpu() else { return };
    let row = test_row(31);
    let mut head: Vec<u32> = (0..VOCAB as u32).collect();
    head.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
    let prompt = vec![head[0], head[3]];
    let output = vec![head[1], head[1], head[2], head[0]];
    let bias = vec![(head[4], -1.5f32), (head[40], 6.0)];
    let (r, presence, frequency) = (1.3f32, 0.4f32, 0.3f32);
    let mut edited: Vec<f64> = row.iter().map(|&l| f64::from(l)).collect();
    for &(t, b) in &bias {
        edited[t as usize] += f64::from(b);
    }
    for t in 0..VOCAB as u32 {
        let count = output.iter().filter(|&&o| o == t).count() as f64;
        let v = &mut edited[t as usize];
        if prompt.contains(&t) || count > 0.0 {
            *v = if *v > 0.0 {
                *v / f64::from(r)
            } else {
                *v * f64::from(r)
            };
        }
        if count > 0.0 {
            *v -= f64::from(frequency) * count + f64::from(presence);
        }
    }
    let edited_row: Vec<f32> = edited.iter().map(|&v| v as f32).collect();
    let params = SamplingParams::new(0.9).penalties(r, presence, frequency);
    let reference = common::reference_distribution(&edited_row, &SamplingParams::new(0.9)).unwrap();
    let kept = reference.iter().filter(|&&p| p > 0.0).count();
    let history = rollcall::sampling::RowHistory {
        prompt: &prompt,
        output: &output,
        logit_bias: &bias,
        ..Default::default()
    };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let mut gpu = |logits: &[f32], params: &[SamplingParams]| {
        let histories = vec![history; params.len()];
        let options = SampleOptions::default().histories(&histories);
        sampler
            .sample_with(HostLogits::F32(logits), VOCAB as u32, params, &options)
            .unwrap()
            .results
    };
    let counts = draw_counts(&mut gpu, &row, params, 16384, kept, "gpu penalised");
    let (stat, p, bins) = common::chi_square(&counts, &reference, "gpu penalised");
    eprintln!("gpu penalised: kept {kept}, chi2 {stat:.1} over {bins} bins, p = {p:.3}");
    assert!(
        p >= P_THRESHOLD,
        "penalised: chi-square p = {p} < {P_THRESHOLD}"
    );
}
