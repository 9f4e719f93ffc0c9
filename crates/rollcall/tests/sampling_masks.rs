//! Token masks and top-nσ: the GPU routes (every dtype, host and engine
//! paths) against each other bit for bit and against the CPU twin (the same
//! token, kept count and status; log-probabilities within 2e-4, since exp
//! and log differ by an ulp between adapter and host; another token only at
//! a near tie the twin's trace reports), on random batches mixing masked
//! and unmasked rows, masks that allow one token or none, NaN and ±inf
//! logits, ties, and vocabularies that are not a multiple of 4, 32 or the
//! workgroup; plus typed errors for bad masks before any GPU work.

mod common;

use rand::Rng;
use rollcall::sampling::{cpu, mask, HostMask, LogprobsMode, SampleOptions, TokenMask, TopLogprob};

/// Top lists as bits, for comparing routes.
fn bits(tops: &[Vec<TopLogprob>]) -> Vec<Vec<(u32, u32)>> {
    tops.iter()
        .map(|row| row.iter().map(|e| (e.token, e.logprob.to_bits())).collect())
        .collect()
}
use rollcall::{
    Error, LogitsBinding, LogitsDtype, RowStatus, SampleBatch, Sampler, SamplingParams,
};

fn random_params(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32) -> SamplingParams {
    let temperature = [0.0, 0.3, 0.7, 1.0, 1.5][rng.random_range(0..5)];
    let mut p = SamplingParams::new(temperature)
        .seed(rng.random())
        .step(rng.random_range(0..1000));
    if rng.random_bool(0.3) {
        p = p.top_k([1, 5, 50, vocab][rng.random_range(0..4)]);
    }
    if rng.random_bool(0.3) {
        p = p.top_p([0.0, 0.5, 0.9][rng.random_range(0..3)]);
    }
    if rng.random_bool(0.2) {
        p = p.min_p([0.05, 0.5][rng.random_range(0..2)]);
    }
    if rng.random_bool(0.4) {
        p = p.top_n_sigma([0.5, 1.0, 2.0, 3.0][rng.random_range(0..4)]);
    }
    if rng.random_bool(0.6) {
        p = p.top_logprobs([1, 5, 20][rng.random_range(0..3)]);
    }
    p
}

/// Logits with a head, ties, and now and then NaN, ±inf.
fn random_row(rng: &mut rand_chacha::ChaCha8Rng, vocab: usize, row: usize) -> Vec<f32> {
    let mut v = common::model_like_logits(rng, vocab);
    if vocab > 10 {
        let a = rng.random_range(0..vocab);
        let b = rng.random_range(0..vocab);
        v[b] = v[a];
    }
    match row % 9 {
        3 => v[rng.random_range(0..vocab)] = f32::NAN,
        5 => v[rng.random_range(0..vocab)] = f32::INFINITY,
        7 => {
            for x in v.iter_mut().take(vocab / 2) {
                *x = f32::NEG_INFINITY;
            }
        }
        _ => {}
    }
    v
}

/// A random mask row: dense, sparse, one token, none, or the head banned.
fn random_mask(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32, logits: &[f32]) -> Vec<u32> {
    match rng.random_range(0..5) {
        0 => mask::allow_only(vocab, &[rng.random_range(0..vocab)]).unwrap(),
        1 => vec![0; mask::words_per_row(vocab)],
        2 => {
            // Ban the row's best tokens (a grammar forbidding the likely ones).
            let mut order: Vec<u32> = (0..vocab).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            let mut words = mask::allow_all(vocab);
            mask::ban(&mut words, vocab, &order[..(vocab as usize / 10).max(1)]).unwrap();
            words
        }
        density => {
            let p = if density == 3 { 0.05 } else { 0.7 };
            let allowed: Vec<u32> = (0..vocab).filter(|_| rng.random_bool(p)).collect();
            mask::allow_only(vocab, &allowed).unwrap()
        }
    }
}

struct Case {
    logits: Vec<f32>,
    params: Vec<SamplingParams>,
    words: Vec<u32>,
    mask_rows: Vec<Option<u32>>,
}

fn random_case(seed: u64, rows: usize, vocab: u32) -> Case {
    let mut rng = common::rng(seed);
    let logits: Vec<f32> = (0..rows)
        .flat_map(|r| random_row(&mut rng, vocab as usize, r))
        .collect();
    let params: Vec<SamplingParams> = (0..rows).map(|_| random_params(&mut rng, vocab)).collect();
    let mut words = Vec::new();
    let mut mask_rows = Vec::new();
    for r in 0..rows {
        if rng.random_bool(0.6) {
            let row = &logits[r * vocab as usize..(r + 1) * vocab as usize];
            // Mask rows in another order than batch rows; some shared.
            let n = (words.len() / mask::words_per_row(vocab)) as u32;
            if n > 0 && rng.random_bool(0.2) {
                mask_rows.push(Some(rng.random_range(0..n)));
            } else {
                words.extend(random_mask(&mut rng, vocab, row));
                mask_rows.push(Some(n));
            }
        } else {
            mask_rows.push(None);
        }
    }
    Case {
        logits,
        params,
        words,
        mask_rows,
    }
}

#[test]
fn masked_batches_match_the_twin_on_every_route_and_dtype() {
    let Some(ctx) = common::gpu() else { return };
    let mut samplers = common::every_route(&ctx);
    let shapes = [
        (0usize, 17u32),
        (1, 1),
        (3, 5),
        (9, 31),
        (12, 1000),
        (7, 4099),
        (4, 20_003),
        (3, 40_000),
    ];
    let mut checked = 0;
    let mut no_valid = 0;
    let mut near_tie_flips = 0;
    let mut with_top = 0;
    for (seed, &(rows, vocab)) in shapes.iter().enumerate() {
        let case = random_case(seed as u64, rows, vocab);
        for dtype in LogitsDtype::ALL {
            let owned = common::Owned::new(&case.logits, dtype);
            let options = SampleOptions::default().mask(HostMask {
                words: &case.words,
                rows: &case.mask_rows,
            });
            for mode in [LogprobsMode::Processed, LogprobsMode::Raw] {
                let options = options.logprobs(mode);
                let (traces, tops) =
                    cpu::sample_traced_with(owned.view(), vocab, &case.params, &options).unwrap();
                let mut first: Option<rollcall::sampling::Samples> = None;
                for (route, sampler) in &mut samplers {
                    let got = sampler
                        .sample_with(owned.view(), vocab, &case.params, &options)
                        .unwrap();
                    let context = format!("{route:?} {mode:?} {dtype:?} rows {rows} vocab {vocab}");
                    match &first {
                        Some(first) => {
                            common::assert_same_bits(&first.results, &got.results, &context);
                            assert_eq!(
                                bits(&first.top_logprobs),
                                bits(&got.top_logprobs),
                                "{context}"
                            );
                        }
                        None => {
                            for (r, (g, t)) in got.results.iter().zip(&traces).enumerate() {
                                let context = format!("{context} row {r}");
                                near_tie_flips +=
                                    usize::from(common::check_against_twin(g, t, &context));
                                common::check_top_logprobs(
                                    &got.top_logprobs[r],
                                    &tops[r],
                                    &context,
                                );
                                with_top += usize::from(!tops[r].is_empty());
                            }
                            first = Some(got);
                        }
                    }
                }
            }
            let traces = cpu::sample_traced_with(owned.view(), vocab, &case.params, &options)
                .unwrap()
                .0;
            let want: Vec<_> = traces.iter().map(|t| t.result).collect();
            checked += want.len();
            no_valid += want
                .iter()
                .filter(|r| r.status == RowStatus::NoValidToken)
                .count();
            // Masked rows draw only allowed tokens.
            for (r, result) in want.iter().enumerate() {
                if let (Some(m), RowStatus::Ok) = (case.mask_rows[r], result.status) {
                    let per_row = mask::words_per_row(vocab);
                    let words = &case.words[m as usize * per_row..];
                    let t = result.token as usize;
                    assert_eq!(
                        (words[t / 32] >> (t % 32)) & 1,
                        1,
                        "row {r} drew a banned token"
                    );
                }
            }
        }
    }
    eprintln!("{checked} rows, {no_valid} with no valid token, {with_top} top lists, {near_tie_flips} near-tie flips");
    assert!(checked > 100 && no_valid > 0 && with_top > 100 && near_tie_flips * 50 < checked);
}

/// A row with no mask gives the same bits in a masked batch as alone without
/// masks (the masked kernel variant changes nothing for it), and a mask that
/// allows every token changes nothing either.
#[test]
fn unmasked_rows_are_batch_invariant() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let case = random_case(99, 10, 3000);
    let options = SampleOptions::default().mask(HostMask {
        words: &case.words,
        rows: &case.mask_rows,
    });
    let mixed = sampler
        .sample_with(
            rollcall::HostLogits::F32(&case.logits),
            3000,
            &case.params,
            &options,
        )
        .unwrap()
        .results;
    let plain = sampler
        .sample(rollcall::HostLogits::F32(&case.logits), 3000, &case.params)
        .unwrap();
    let all = mask::allow_all(3000);
    let every_row = vec![Some(0); 10];
    let allow_all = SampleOptions::default().mask(HostMask {
        words: &all,
        rows: &every_row,
    });
    let allowed = sampler
        .sample_with(
            rollcall::HostLogits::F32(&case.logits),
            3000,
            &case.params,
            &allow_all,
        )
        .unwrap()
        .results;
    common::assert_same_bits(&plain, &allowed, "mask allowing everything");
    let mut unmasked = 0;
    for r in 0..10 {
        if case.mask_rows[r].is_none() {
            common::assert_same_bits(&plain[r..=r], &mixed[r..=r], &format!("row {r}"));
            unmasked += 1;
        }
    }
    assert!(unmasked > 0);
}

/// The engine path reads the caller's mask buffer at an offset, with the
/// same bits as the host path; bad masks are refused before any work.
#[test]
fn engine_path_reads_masks_from_the_callers_buffer() {
    use wgpu::util::DeviceExt;
    let Some(ctx) = common::gpu() else { return };
    let sampler = Sampler::new(&ctx).unwrap();
    let (rows, vocab) = (6usize, 2000u32);
    let case = random_case(7, rows, vocab);
    let options = SampleOptions::default().mask(HostMask {
        words: &case.words,
        rows: &case.mask_rows,
    });
    let traces = cpu::sample_traced_with(
        rollcall::HostLogits::F32(&case.logits),
        vocab,
        &case.params,
        &options,
    )
    .unwrap()
    .0;

    let align = ctx.limits().min_storage_buffer_offset_alignment as usize;
    let mut mask_bytes = vec![0xA5u8; align];
    mask_bytes.extend_from_slice(bytemuck::cast_slice(&case.words));
    let mask_buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &mask_bytes,
            usage: wgpu::BufferUsages::STORAGE,
        });
    let logits_buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&case.logits),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let binding = LogitsBinding {
        buffer: &logits_buffer,
        offset: 0,
        rows: rows as u32,
        vocab,
        dtype: LogitsDtype::F32,
    };
    let mask_count = (case.words.len() / mask::words_per_row(vocab)) as u32;
    let token_mask = TokenMask {
        buffer: &mask_buffer,
        offset: align as u64,
        rows: mask_count,
    };
    let mut batch = SampleBatch::new(&ctx, rows as u32).unwrap();
    batch.set_params(&case.params).unwrap();
    batch.set_mask_rows(&case.mask_rows).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    sampler
        .encode_masked(&mut encoder, &binding, &token_mask, &mut batch)
        .unwrap();
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: rows as u64 * 20,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(batch.tokens(), 0, &readback, 0, rows as u64 * 4);
    encoder.copy_buffer_to_buffer(
        batch.results(),
        0,
        &readback,
        rows as u64 * 4,
        rows as u64 * 16,
    );
    ctx.submit(encoder.finish());
    let out = ctx.read_buffer(&readback, rows as u64 * 20).unwrap();
    let tokens: &[u32] = bytemuck::cast_slice(&out[..rows * 4]);
    let results: &[[u32; 4]] = bytemuck::cast_slice(&out[rows * 4..]);
    for r in 0..rows {
        let got = rollcall::SampleResult {
            token: tokens[r],
            logprob: f32::from_bits(results[r][0]),
            kept: results[r][2],
            status: if results[r][1] == 0 {
                RowStatus::Ok
            } else {
                RowStatus::NoValidToken
            },
        };
        common::check_against_twin(&got, &traces[r], &format!("engine row {r}"));
    }

    // Refusals, each before any work is recorded.
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = sampler
        .encode(&mut encoder, &binding, &mut batch)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMask(_)), "{err}");
    let too_few = TokenMask {
        rows: 0,
        ..token_mask
    };
    let err = sampler
        .encode_masked(&mut encoder, &binding, &too_few, &mut batch)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMask(_)), "{err}");
    let misaligned = TokenMask {
        offset: 4,
        ..token_mask
    };
    let err = sampler
        .encode_masked(&mut encoder, &binding, &misaligned, &mut batch)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidMask(_)), "{err}");
    let past_end = TokenMask {
        rows: mask_count + 50,
        ..token_mask
    };
    let err = sampler
        .encode_masked(&mut encoder, &binding, &past_end, &mut batch)
        .unwrap_err();
    assert!(matches!(err, Error::BufferTooSmall { .. }), "{err}");
    let err = batch.set_mask_rows(&[None]).unwrap_err();
    assert!(matches!(err, Error::InvalidMask(_)), "{err}");
}

#[test]
fn bad_host_masks_are_refused() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let logits = vec![0.0f32; 2 * 40];
    let params = [SamplingParams::new(1.0); 2];
    let words = mask::allow_all(40);
    for (words, rows) in [
        (&words[..1], &[Some(0), None][..]),
        (&words[..], &[Some(1), None][..]),
        (&words[..], &[Some(0)][..]),
    ] {
        let options = SampleOptions::default().mask(HostMask { words, rows });
        let gpu = sampler.sample_with(rollcall::HostLogits::F32(&logits), 40, &params, &options);
        let twin = cpu::sample_with(rollcall::HostLogits::F32(&logits), 40, &params, &options);
        assert!(matches!(gpu, Err(Error::InvalidMask(_))), "{gpu:?}");
        assert!(matches!(twin, Err(Error::InvalidMask(_))), "{twin:?}");
    }
    for bad in [-1.0, f32::NAN, f32::INFINITY] {
        let p = [SamplingParams::new(1.0).top_n_sigma(bad)];
        let err = sampler
            .sample(rollcall::HostLogits::F32(&logits[..40]), 40, &p)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTopNSigma { row: 0, .. }),
            "{err}"
        );
    }
}

/// Top lists where ties overflow the gather (a flat row; a row whose 2000
/// tokens tie below a small head; few valid tokens under a mask): the exact
/// fallback ranks ties by token, like the twin, on a sampler that gathers
/// at most 64 tokens and on the default one.
#[test]
fn top_logprobs_with_heavy_ties_match_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let vocab = 5000u32;
    let flat = vec![0.5f32; vocab as usize];
    let mut head_and_ties = vec![-3.0f32; vocab as usize];
    for (i, x) in head_and_ties.iter_mut().enumerate().take(2000) {
        *x = if i % 700 == 3 { 4.0 } else { 1.0 };
    }
    head_and_ties.reverse();
    let logits = [flat.clone(), head_and_ties, flat].concat();
    let words = [
        mask::allow_all(vocab),
        mask::allow_only(vocab, &[7, 4000, 4999]).unwrap(),
    ]
    .concat();
    let mask_rows = [None, None, Some(1)];
    let params = [
        SamplingParams::new(1.0).top_logprobs(20).seed(1),
        SamplingParams::new(0.5).top_logprobs(17).seed(2),
        SamplingParams::greedy().top_logprobs(20),
    ];
    for mode in [LogprobsMode::Processed, LogprobsMode::Raw] {
        let options = SampleOptions::default()
            .mask(HostMask {
                words: &words,
                rows: &mask_rows,
            })
            .logprobs(mode);
        let (traces, tops) =
            cpu::sample_traced_with(rollcall::HostLogits::F32(&logits), vocab, &params, &options)
                .unwrap();
        assert_eq!(
            tops[0].iter().map(|e| e.token).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        let third = if mode == LogprobsMode::Raw { 20 } else { 3 };
        assert_eq!(tops[2].len(), third, "{mode:?}");
        for mut sampler in [
            Sampler::with_candidate_capacity(&ctx, 64).unwrap(),
            Sampler::new(&ctx).unwrap(),
        ] {
            let got = sampler
                .sample_with(rollcall::HostLogits::F32(&logits), vocab, &params, &options)
                .unwrap();
            for r in 0..3 {
                let context = format!("{mode:?} row {r}");
                common::check_against_twin(&got.results[r], &traces[r], &context);
                common::check_top_logprobs(&got.top_logprobs[r], &tops[r], &context);
            }
        }
    }
    let too_many = [SamplingParams::new(1.0).top_logprobs(21)];
    let err = cpu::sample(
        rollcall::HostLogits::F32(&logits[..vocab as usize]),
        vocab,
        &too_many,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyLogprobs {
                requested: 21,
                max: 20
            }
        ),
        "{err}"
    );
}
