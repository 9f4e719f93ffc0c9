//! Speculative verification on the GPU against its CPU twin: random ragged
//! batches (empty drafts, vocabularies of 1, sizes not a multiple of the
//! workgroup, NaN and ±inf rows), every draft kind and dtype, with filters
//! and token masks, on the host and engine paths; bad shapes get typed
//! errors before any GPU work.

mod common;

use rand::Rng;
use rollcall::sampling::{mask, HostMask};
use rollcall::speculative::{
    cpu, DraftBinding, DraftDistribution, Drafts, Verification, Verifier, VerifyBatch,
    VerifyOptions,
};
use rollcall::{Error, LogitsBinding, LogitsDtype, RowStatus, SamplingParams};

/// A request is compared only when its closest decision is farther than
/// this from flipping (exp and log differ by an ulp between devices).
const NEAR_TIE: f32 = common::NEAR_TIE;

struct Case {
    vocab: u32,
    params: Vec<SamplingParams>,
    lens: Vec<u32>,
    tokens: Vec<u32>,
    target: Vec<f32>,
    draft: Vec<f32>,
    mask_words: Vec<u32>,
    mask_rows: Vec<Option<u32>>,
}

fn random_case(seed: u64, requests: usize, max_drafts: u32, vocab: u32, special: bool) -> Case {
    let mut rng = common::rng(seed);
    let lens: Vec<u32> = (0..requests)
        .map(|_| rng.random_range(0..=max_drafts))
        .collect();
    let targets: usize = lens.iter().map(|&d| d as usize + 1).sum();
    let drafts: usize = lens.iter().map(|&d| d as usize).sum();
    let v = vocab as usize;
    let mut target: Vec<f32> = (0..targets)
        .flat_map(|_| common::model_like_logits(&mut rng, v))
        .collect();
    // Draft logits near the target's (a good draft), or unrelated.
    let mut draft: Vec<f32> = (0..drafts)
        .flat_map(|_| common::model_like_logits(&mut rng, v))
        .collect();
    let params: Vec<SamplingParams> = (0..requests)
        .map(|_| {
            let t = [0.0, 0.6, 1.0, 1.3][rng.random_range(0..4)];
            let mut p = SamplingParams::new(t).seed(rng.random()).step(rng.random());
            match rng.random_range(0..5) {
                0 => p = p.top_k(rng.random_range(1..50)),
                1 => p = p.top_p(rng.random_range(0.5..0.99)),
                2 => p = p.min_p(0.05).top_n_sigma(1.5),
                _ => {}
            }
            p
        })
        .collect();
    // Drafts mostly the target's most likely token (so some are accepted).
    let mut tokens = Vec::with_capacity(drafts);
    let mut first_target = 0usize;
    for &d in &lens {
        for i in 0..d as usize {
            let row = &target[(first_target + i) * v..(first_target + i + 1) * v];
            let best = (0..v)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0) as u32;
            tokens.push(if rng.random_bool(0.7) {
                best
            } else {
                rng.random_range(0..vocab)
            });
        }
        first_target += d as usize + 1;
    }
    for (e, &x) in tokens.iter().enumerate() {
        // Some draft rows agree with their draft token's target row.
        if rng.random_bool(0.5) {
            draft[e * v + x as usize] += 3.0;
        }
    }
    if special && targets > 2 {
        // A target row of NaN and -inf, one with +inf, a draft row of -inf.
        let r = rng.random_range(0..targets);
        for (i, x) in target[r * v..(r + 1) * v].iter_mut().enumerate() {
            *x = if i % 2 == 0 {
                f32::NAN
            } else {
                f32::NEG_INFINITY
            };
        }
        let r = rng.random_range(0..targets);
        target[r * v + rng.random_range(0..v)] = f32::INFINITY;
        if drafts > 0 {
            let e = rng.random_range(0..drafts);
            draft[e * v..(e + 1) * v].fill(f32::NEG_INFINITY);
        }
    }
    // Masks on some positions: allow a random half of the vocabulary.
    let mut mask_words = Vec::new();
    let mut mask_rows = Vec::with_capacity(targets);
    for _ in 0..targets {
        if rng.random_bool(0.3) {
            let allowed: Vec<u32> = (0..vocab).filter(|_| rng.random_bool(0.5)).collect();
            mask_rows.push(Some((mask_words.len() / mask::words_per_row(vocab)) as u32));
            mask_words.extend(mask::allow_only(vocab, &allowed).unwrap());
        } else {
            mask_rows.push(None);
        }
    }
    Case {
        vocab,
        params,
        lens,
        tokens,
        target,
        draft,
        mask_words,
        mask_rows,
    }
}

/// The draft distribution of test kind `kind` (0: none, 1: logits, 2:
/// probabilities) over `values`.
fn distribution(kind: usize, values: rollcall::HostLogits<'_>) -> DraftDistribution<'_> {
    match kind {
        1 => DraftDistribution::Logits(values),
        2 => DraftDistribution::Probs(values),
        _ => DraftDistribution::Deterministic,
    }
}

fn softmax_probs(logits: &[f32], vocab: usize) -> Vec<f32> {
    logits
        .chunks(vocab)
        .flat_map(|row| {
            let m = row
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row
                .iter()
                .map(|&x| if x.is_finite() { (x - m).exp() } else { 0.0 })
                .collect();
            let s: f32 = e.iter().sum();
            e.into_iter()
                .map(move |x| if s > 0.0 { x / s } else { 0.0 })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_same(gpu: &[Verification], twin: &[cpu::VerificationTrace], what: &str) -> usize {
    assert_eq!(gpu.len(), twin.len(), "{what}");
    let mut compared = 0;
    for (r, (g, t)) in gpu.iter().zip(twin).enumerate() {
        if t.margin < NEAR_TIE {
            continue;
        }
        compared += 1;
        let c = &t.verification;
        assert_eq!(g.accepted, c.accepted, "{what} request {r}: {g:?} vs {c:?}");
        assert_eq!(g.tokens, c.tokens, "{what} request {r}");
        assert_eq!(g.status, c.status, "{what} request {r}");
        for (a, b) in g.logprobs.iter().zip(&c.logprobs) {
            assert!(
                a == b || (a - b).abs() <= 2e-4 * b.abs().max(1.0),
                "{what} request {r}: logprob {a} vs {b}"
            );
        }
        assert_eq!(g.acceptance.len(), c.acceptance.len(), "{what} request {r}");
        for (a, b) in g.acceptance.iter().zip(&c.acceptance) {
            assert!(
                (a - b).abs() <= 1e-4,
                "{what} request {r}: acceptance {a} vs {b}"
            );
        }
    }
    compared
}

/// Runs one case on both sides; returns (requests compared, requests).
fn run_case(
    verifier: &mut Verifier,
    case: &Case,
    kind: usize,
    dtype: LogitsDtype,
    masked: bool,
) -> (usize, usize) {
    let v = case.vocab as usize;
    let target = common::Owned::new(&case.target, dtype);
    let probs = softmax_probs(&case.draft, v);
    let draft_values = common::Owned::new(if kind == 2 { &probs } else { &case.draft }, dtype);
    let draft = distribution(kind, draft_values.view());
    let options = VerifyOptions {
        draft,
        mask: masked.then_some(HostMask {
            words: &case.mask_words,
            rows: &case.mask_rows,
        }),
        histories: None,
    };
    let drafts = Drafts {
        tokens: &case.tokens,
        lens: &case.lens,
    };
    let what = format!("vocab {} kind {kind} {dtype:?} masked {masked}", case.vocab);
    let gpu = verifier
        .verify(target.view(), case.vocab, &case.params, &drafts, &options)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let twin = cpu::verify_traced(target.view(), case.vocab, &case.params, &drafts, &options)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let compared = assert_same(&gpu, &twin, &what);
    // Every outcome is well formed.
    for (g, d) in gpu.iter().zip(&case.lens) {
        assert_eq!(g.tokens.len() as u32, g.accepted + 1);
        assert!(g.accepted <= *d);
        assert_eq!(g.acceptance.len() as u32, *d);
        if g.status == RowStatus::Ok {
            assert!(g.tokens.iter().all(|&t| t < case.vocab));
        }
    }
    (compared, gpu.len())
}

#[test]
fn gpu_matches_twin_on_ragged_batches() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let (mut compared, mut total) = (0, 0);
    for (seed, (requests, max_drafts, vocab)) in [
        (24, 4, 1000),
        (7, 3, 1),
        (16, 5, 5003),
        (9, 4, 40_000),
        (1, 0, 300),
    ]
    .into_iter()
    .enumerate()
    {
        let case = random_case(seed as u64, requests, max_drafts, vocab, seed % 2 == 0);
        for kind in 0..3 {
            for dtype in LogitsDtype::ALL {
                let (c, n) = run_case(&mut verifier, &case, kind, dtype, (seed + kind) % 2 == 0);
                compared += c;
                total += n;
            }
        }
    }
    // Near ties are rare: most requests are compared.
    eprintln!("compared {compared} of {total} requests");
    assert!(
        compared * 10 >= total * 9,
        "only {compared} of {total} requests far from a tie"
    );
}

fn upload(ctx: &rollcall::GpuContext, bytes: &[u8]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: if bytes.is_empty() { &[0; 4] } else { bytes },
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        })
}

fn read(ctx: &rollcall::GpuContext, source: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(source, 0, &staging, 0, bytes);
    ctx.submit(encoder.finish());
    ctx.read_buffer(&staging, bytes).unwrap()
}

/// The engine path records without submitting or reading back, reads the
/// caller's buffers at their offsets, and gives the host path's bits.
#[test]
fn engine_path_matches_the_host_path() {
    // A context of its own: the submit counts below are the context's, and
    // the other tests of this file submit on the shared one concurrently.
    let Some(ctx) = common::own_gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let case = random_case(77, 12, 4, 2000, true);
    let k = 4u32;
    for (kind, dtype) in [
        (0, LogitsDtype::Bf16),
        (1, LogitsDtype::F16),
        (2, LogitsDtype::F32),
    ] {
        let v = case.vocab as usize;
        let target = common::Owned::new(&case.target, dtype);
        let probs = softmax_probs(&case.draft, v);
        let draft_values = match kind {
            1 => common::Owned::new(&case.draft, dtype),
            _ => common::Owned::new(&probs, dtype),
        };
        let options = VerifyOptions {
            draft: distribution(kind, draft_values.view()),
            mask: Some(HostMask {
                words: &case.mask_words,
                rows: &case.mask_rows,
            }),
            histories: None,
        };
        let drafts = Drafts {
            tokens: &case.tokens,
            lens: &case.lens,
        };
        let host = verifier
            .verify(target.view(), case.vocab, &case.params, &drafts, &options)
            .unwrap();

        // The target logits 256 bytes into a larger buffer.
        let mut target_bytes = vec![0u8; 256];
        target_bytes.extend_from_slice(target.bytes());
        let target_buffer = upload(&ctx, &target_bytes);
        let token_buffer = upload(&ctx, bytemuck::cast_slice(&case.tokens));
        let draft_buffer = upload(&ctx, draft_values.bytes());
        let mask_buffer = upload(&ctx, bytemuck::cast_slice(&case.mask_words));
        let targets: u32 = case.lens.iter().map(|d| d + 1).sum();
        let drafts_total: u32 = case.lens.iter().sum();
        let draft_binding = LogitsBinding {
            buffer: &draft_buffer,
            offset: 0,
            rows: drafts_total,
            vocab: case.vocab,
            dtype,
        };
        let draft = match kind {
            1 => DraftBinding::Logits(draft_binding),
            2 => DraftBinding::Probs(draft_binding),
            _ => DraftBinding::Deterministic,
        };
        let mut batch = VerifyBatch::new(&ctx, 16, k).unwrap();
        batch.set_requests(&case.params, &case.lens).unwrap();
        batch.set_mask_rows(&case.mask_rows).unwrap();
        let mask = rollcall::sampling::TokenMask {
            buffer: &mask_buffer,
            offset: 0,
            rows: (case.mask_words.len() / mask::words_per_row(case.vocab)) as u32,
        };
        let before = ctx.sync_counts();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        verifier
            .encode(
                &mut encoder,
                &LogitsBinding {
                    buffer: &target_buffer,
                    offset: 256,
                    rows: targets,
                    vocab: case.vocab,
                    dtype,
                },
                &token_buffer,
                &draft,
                Some(&mask),
                &mut batch,
            )
            .unwrap();
        assert_eq!((ctx.sync_counts() - before).submits, 0);
        assert_eq!((ctx.sync_counts() - before).readbacks, 0);
        ctx.submit(encoder.finish());

        let n = case.params.len() as u64;
        let verdicts = read(&ctx, batch.verdicts(), n * VerifyBatch::VERDICT_BYTES);
        let tokens = read(&ctx, batch.tokens(), n * u64::from(k + 1) * 4);
        let logprobs = read(&ctx, batch.logprobs(), n * u64::from(k + 1) * 4);
        let acceptance = read(&ctx, batch.acceptance(), n * u64::from(k) * 4);
        let verdicts: &[[u32; 8]] = bytemuck::cast_slice(&verdicts);
        let tokens: &[u32] = bytemuck::cast_slice(&tokens);
        let logprobs: &[f32] = bytemuck::cast_slice(&logprobs);
        let acceptance: &[f32] = bytemuck::cast_slice(&acceptance);
        let w = (k + 1) as usize;
        for (r, h) in host.iter().enumerate() {
            let what = format!("kind {kind} {dtype:?} request {r}");
            assert_eq!(verdicts[r][0], h.accepted, "{what}");
            assert_eq!(verdicts[r][1], h.accepted + 1, "{what}");
            assert_eq!(
                verdicts[r][2],
                u32::from(h.status != RowStatus::Ok),
                "{what}"
            );
            let e = h.tokens.len();
            assert_eq!(&tokens[r * w..r * w + e], &h.tokens[..], "{what}");
            assert!(tokens[r * w + e..(r + 1) * w]
                .iter()
                .all(|&t| t == rollcall::NO_TOKEN));
            let lp: Vec<u32> = logprobs[r * w..r * w + e]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let hp: Vec<u32> = h.logprobs.iter().map(|x| x.to_bits()).collect();
            assert_eq!(lp, hp, "{what}");
            let d = case.lens[r] as usize;
            let a: Vec<u32> = acceptance[r * k as usize..r * k as usize + d]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let ha: Vec<u32> = h.acceptance.iter().map(|x| x.to_bits()).collect();
            assert_eq!(a, ha, "{what}");
        }
    }
}

/// Bad input gets a typed error from the GPU path and the twin alike,
/// before any GPU work.
#[test]
fn bad_input_gets_typed_errors() {
    // Its own context: the submits counted below are the context's.
    let Some(ctx) = common::own_gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let vocab = 10u32;
    let target = vec![0.5f32; 5 * 10];
    let draft = vec![0.1f32; 3 * 10];
    let plain = [SamplingParams::new(1.0), SamplingParams::new(0.5)];
    let good = Drafts {
        tokens: &[1, 2, 3],
        lens: &[2, 1],
    };
    let mut nan_probs = draft.clone();
    nan_probs[4] = f32::NAN;
    let mut negative = draft.clone();
    negative[7] = -0.5;
    type Check<'a> = (
        &'a str,
        Vec<SamplingParams>,
        Drafts<'a>,
        VerifyOptions<'a>,
        u32,
        &'a [f32],
    );
    let checks: Vec<Check<'_>> = vec![
        (
            "lengths",
            plain.to_vec(),
            Drafts {
                tokens: &[1, 2, 3],
                lens: &[3],
            },
            VerifyOptions::default(),
            vocab,
            &target,
        ),
        (
            "token count",
            plain.to_vec(),
            Drafts {
                tokens: &[1, 2],
                lens: &[2, 1],
            },
            VerifyOptions::default(),
            vocab,
            &target,
        ),
        (
            "token range",
            plain.to_vec(),
            Drafts {
                tokens: &[1, 10, 3],
                lens: &[2, 1],
            },
            VerifyOptions::default(),
            vocab,
            &target,
        ),
        (
            "target rows",
            plain.to_vec(),
            good,
            VerifyOptions::default(),
            vocab,
            &target[..40],
        ),
        (
            "empty vocab",
            plain.to_vec(),
            good,
            VerifyOptions::default(),
            0,
            &target,
        ),
        (
            "draft rows",
            plain.to_vec(),
            good,
            VerifyOptions {
                draft: DraftDistribution::Logits(rollcall::HostLogits::F32(&draft[..20])),
                mask: None,
                histories: None,
            },
            vocab,
            &target,
        ),
        (
            "NaN probability",
            plain.to_vec(),
            good,
            VerifyOptions {
                draft: DraftDistribution::Probs(rollcall::HostLogits::F32(&nan_probs)),
                mask: None,
                histories: None,
            },
            vocab,
            &target,
        ),
        (
            "negative probability",
            plain.to_vec(),
            good,
            VerifyOptions {
                draft: DraftDistribution::Probs(rollcall::HostLogits::F32(&negative)),
                mask: None,
                histories: None,
            },
            vocab,
            &target,
        ),
        (
            "penalty",
            vec![
                SamplingParams {
                    repetition_penalty: 1.2,
                    ..SamplingParams::new(1.0)
                },
                plain[1],
            ],
            good,
            VerifyOptions::default(),
            vocab,
            &target,
        ),
        (
            "top logprobs",
            vec![SamplingParams::new(1.0).top_logprobs(2), plain[1]],
            good,
            VerifyOptions::default(),
            vocab,
            &target,
        ),
        (
            "temperature",
            vec![SamplingParams::new(f32::NAN), plain[1]],
            good,
            VerifyOptions::default(),
            vocab,
            &target,
        ),
        (
            "mask rows",
            plain.to_vec(),
            good,
            VerifyOptions {
                draft: DraftDistribution::Deterministic,
                mask: Some(HostMask {
                    words: &[u32::MAX],
                    rows: &[Some(0), None],
                }),
                histories: None,
            },
            vocab,
            &target,
        ),
    ];
    let before = ctx.sync_counts();
    for (what, params, drafts, options, vocab, target) in checks {
        let gpu = verifier.verify(
            rollcall::HostLogits::F32(target),
            vocab,
            &params,
            &drafts,
            &options,
        );
        let twin = cpu::verify(
            rollcall::HostLogits::F32(target),
            vocab,
            &params,
            &drafts,
            &options,
        );
        let (Err(g), Err(t)) = (&gpu, &twin) else {
            panic!("{what}: {gpu:?} / {twin:?}");
        };
        assert_eq!(
            std::mem::discriminant(g),
            std::mem::discriminant(t),
            "{what}: {g} / {t}"
        );
        eprintln!("{what}: {g}");
    }
    assert_eq!(
        (ctx.sync_counts() - before).submits,
        0,
        "refused before any GPU work"
    );
    // An empty batch is no work.
    let none = Drafts {
        tokens: &[],
        lens: &[],
    };
    assert!(verifier
        .verify(
            rollcall::HostLogits::F32(&[]),
            vocab,
            &[],
            &none,
            &VerifyOptions::default()
        )
        .unwrap()
        .is_empty());
    // Engine-path shapes.
    let mut batch = VerifyBatch::new(&ctx, 2, 2).unwrap();
    assert!(matches!(
        batch.set_requests(&plain, &[3, 0]),
        Err(Error::InvalidDrafts(_))
    ));
    assert!(matches!(
        batch.set_requests(&[plain[0]; 3], &[0, 0, 0]),
        Err(Error::BatchCapacity { .. })
    ));
    batch.set_requests(&plain, &[2, 1]).unwrap();
    let buffer = upload(&ctx, bytemuck::cast_slice(&target));
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let wrong_rows = LogitsBinding {
        buffer: &buffer,
        offset: 0,
        rows: 4,
        vocab,
        dtype: LogitsDtype::F32,
    };
    let err = verifier.encode(
        &mut encoder,
        &wrong_rows,
        &buffer,
        &DraftBinding::Deterministic,
        None,
        &mut batch,
    );
    assert!(matches!(err, Err(Error::InvalidDrafts(_))), "{err:?}");
}

/// One request's history as the test keeps it on the host.
struct HostHistory {
    prompt: Vec<u32>,
    output: Vec<u32>,
    bias: Vec<(u32, f32)>,
    stop: Vec<u32>,
    min_tokens: u32,
}

impl HostHistory {
    fn view(&self) -> rollcall::sampling::RowHistory<'_> {
        rollcall::sampling::RowHistory {
            prompt: &self.prompt,
            output: &self.output,
            logit_bias: &self.bias,
            stop_tokens: &self.stop,
            min_tokens: self.min_tokens,
        }
    }
}

/// Bias, penalties and min_tokens over several verification steps: the
/// engine path keeps each request's history on the GPU (the emitted tokens
/// join it), the host path and the twin take it from the host; all agree.
/// Drafts repeat tokens so that the counts of the drafts before a position
/// matter.
#[test]
fn penalised_verification_matches_the_twin_over_steps() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let (requests, k, vocab) = (6usize, 3u32, 700u32);
    let mut rng = common::rng(99);
    let params: Vec<SamplingParams> = (0..requests)
        .map(|r| {
            let p = SamplingParams::new([0.0, 0.8, 1.0][r % 3]).seed(r as u64 * 31);
            match r % 4 {
                0 => p.penalties(1.4, 0.6, 0.4),
                1 => p.penalties(1.0, 1.5, 0.0).top_k(30),
                2 => p.penalties(0.8, 0.0, 0.9).top_p(0.9),
                _ => p,
            }
        })
        .collect();
    let mut histories: Vec<HostHistory> = (0..requests)
        .map(|r| HostHistory {
            prompt: (0..20).map(|_| rng.random_range(0..vocab)).collect(),
            output: (0..5).map(|_| rng.random_range(0..vocab)).collect(),
            bias: if r % 2 == 0 {
                vec![(3, 4.0), (rng.random_range(0..vocab), -2.0)]
            } else {
                Vec::new()
            },
            stop: if r % 3 == 1 { vec![1, 2] } else { Vec::new() },
            min_tokens: if r % 3 == 1 { 9 } else { 0 },
        })
        .collect();
    let mut batch = VerifyBatch::with_history(&ctx, requests as u32, k, 200).unwrap();
    for (r, h) in histories.iter().enumerate() {
        batch.set_history(r as u32, vocab, &h.view()).unwrap();
    }
    let (mut compared, mut total) = (0, 0);
    for step in 0..6u64 {
        let params: Vec<SamplingParams> = params.iter().map(|p| p.step(step * 10)).collect();
        let lens: Vec<u32> = (0..requests).map(|_| rng.random_range(0..=k)).collect();
        let targets: u32 = lens.iter().map(|d| d + 1).sum();
        let drafts_total: u32 = lens.iter().sum();
        let target: Vec<f32> = (0..targets)
            .flat_map(|_| common::model_like_logits(&mut rng, vocab as usize))
            .collect();
        let draft_logits: Vec<f32> = (0..drafts_total)
            .flat_map(|_| common::model_like_logits(&mut rng, vocab as usize))
            .collect();
        // Drafts from a few tokens, repeated, including biased and stop tokens.
        let pool = [3u32, 1, 2, 17, 17, 250];
        let tokens: Vec<u32> = (0..drafts_total)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .collect();
        let with_logits = step % 2 == 1;
        let views: Vec<_> = histories.iter().map(HostHistory::view).collect();
        let options = VerifyOptions {
            draft: if with_logits {
                DraftDistribution::Logits(rollcall::HostLogits::F32(&draft_logits))
            } else {
                DraftDistribution::Deterministic
            },
            mask: None,
            histories: Some(&views),
        };
        let drafts = Drafts {
            tokens: &tokens,
            lens: &lens,
        };
        let host = verifier
            .verify(
                rollcall::HostLogits::F32(&target),
                vocab,
                &params,
                &drafts,
                &options,
            )
            .unwrap();
        let twin = cpu::verify_traced(
            rollcall::HostLogits::F32(&target),
            vocab,
            &params,
            &drafts,
            &options,
        )
        .unwrap();
        compared += assert_same(&host, &twin, &format!("step {step} host path"));
        total += host.len();

        // The engine path, with the histories on the GPU.
        let target_buffer = upload(&ctx, bytemuck::cast_slice(&target));
        let token_buffer = upload(&ctx, bytemuck::cast_slice(&tokens));
        let draft_buffer = upload(&ctx, bytemuck::cast_slice(&draft_logits));
        batch.set_requests(&params, &lens).unwrap();
        let draft_binding = LogitsBinding {
            buffer: &draft_buffer,
            offset: 0,
            rows: drafts_total,
            vocab,
            dtype: LogitsDtype::F32,
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        verifier
            .encode(
                &mut encoder,
                &LogitsBinding {
                    buffer: &target_buffer,
                    offset: 0,
                    rows: targets,
                    vocab,
                    dtype: LogitsDtype::F32,
                },
                &token_buffer,
                &if with_logits {
                    DraftBinding::Logits(draft_binding)
                } else {
                    DraftBinding::Deterministic
                },
                None,
                &mut batch,
            )
            .unwrap();
        ctx.submit(encoder.finish());
        let n = requests as u64;
        let verdicts = read(&ctx, batch.verdicts(), n * VerifyBatch::VERDICT_BYTES);
        let out_tokens = read(&ctx, batch.tokens(), n * u64::from(k + 1) * 4);
        let verdicts: &[[u32; 8]] = bytemuck::cast_slice(&verdicts);
        let out_tokens: &[u32] = bytemuck::cast_slice(&out_tokens);
        for (r, h) in host.iter().enumerate() {
            assert_eq!(verdicts[r][0], h.accepted, "step {step} engine request {r}");
            let w = (k + 1) as usize;
            assert_eq!(
                &out_tokens[r * w..r * w + h.tokens.len()],
                &h.tokens[..],
                "step {step} engine request {r}"
            );
            // The host keeps the same history as the GPU.
            histories[r]
                .output
                .extend(h.tokens.iter().copied().filter(|&t| t < vocab));
        }
    }
    eprintln!("compared {compared} of {total} penalised requests");
    assert!(compared * 10 >= total * 9, "only {compared} of {total}");
}

/// The drafts before a position count as output tokens there (vLLM's
/// rule), exactly: a presence penalty on an accepted draft token moves the
/// next position's arg-max, and `min_tokens` releases a stop token once the
/// drafts before the position make up the count.
#[test]
fn draft_prefixes_count_as_output_tokens() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let vocab = 10u32;
    let mut row = vec![0.0f32; vocab as usize];
    row[5] = 10.0;
    row[6] = 9.0;
    row[7] = 8.0;
    // Request 0: presence 2 (5 drops to 8 once produced); request 1: stop
    // token 5 until 4 tokens are out (3 are).
    let target: Vec<f32> = (0..5).flat_map(|_| row.clone()).collect();
    let params = [
        SamplingParams::greedy().penalties(1.0, 2.0, 0.0),
        SamplingParams::greedy(),
    ];
    let lens = [2u32, 1];
    let tokens = [5u32, 5, 6];
    let histories = [
        rollcall::sampling::RowHistory::default(),
        rollcall::sampling::RowHistory {
            output: &[1, 2, 3],
            stop_tokens: &[5],
            min_tokens: 4,
            ..Default::default()
        },
    ];
    let options = VerifyOptions {
        histories: Some(&histories),
        ..Default::default()
    };
    let drafts = Drafts {
        tokens: &tokens,
        lens: &lens,
    };
    let expected = [(1, vec![5, 6]), (1, vec![6, 5])];
    let gpu = verifier
        .verify(
            rollcall::HostLogits::F32(&target),
            vocab,
            &params,
            &drafts,
            &options,
        )
        .unwrap();
    let twin = cpu::verify(
        rollcall::HostLogits::F32(&target),
        vocab,
        &params,
        &drafts,
        &options,
    )
    .unwrap();
    for (r, (accepted, emitted)) in expected.iter().enumerate() {
        for (what, out) in [("gpu", &gpu[r]), ("twin", &twin[r])] {
            assert_eq!(out.accepted, *accepted, "{what} request {r}: {out:?}");
            assert_eq!(&out.tokens, emitted, "{what} request {r}: {out:?}");
        }
    }
}

/// Bindings capped far below the adapter's limit: the target, the draft
/// rows and the residual's groups of requests each take many dispatches,
/// with the same bits as one dispatch each.
#[test]
fn chunked_dispatches_give_the_same_bits() {
    let Some(ctx) = common::gpu() else { return };
    let mut whole = Verifier::new(&ctx).unwrap();
    // Each dispatch binds at most four rows of 3000 f32 logits.
    let mut chunked = Verifier::new(&ctx)
        .unwrap()
        .with_max_chunk_bytes(4 * 3000 * 4 + 512);
    let case = random_case(5, 20, 3, 3000, false);
    let probs = softmax_probs(&case.draft, 3000);
    for kind in 0..3 {
        let draft_values = match kind {
            1 => common::Owned::new(&case.draft, LogitsDtype::F32),
            _ => common::Owned::new(&probs, LogitsDtype::F32),
        };
        let options = VerifyOptions {
            draft: distribution(kind, draft_values.view()),
            mask: Some(HostMask {
                words: &case.mask_words,
                rows: &case.mask_rows,
            }),
            histories: None,
        };
        let drafts = Drafts {
            tokens: &case.tokens,
            lens: &case.lens,
        };
        let target = rollcall::HostLogits::F32(&case.target);
        let a = whole
            .verify(target, 3000, &case.params, &drafts, &options)
            .unwrap();
        let b = chunked
            .verify(target, 3000, &case.params, &drafts, &options)
            .unwrap();
        // Every output as bits (NaN-safe equality).
        let bits = |v: &[Verification]| -> Vec<Vec<u32>> {
            v.iter()
                .map(|x| {
                    let mut out = vec![x.accepted];
                    out.extend(&x.tokens);
                    out.extend(x.logprobs.iter().map(|f| f.to_bits()));
                    out.extend(x.acceptance.iter().map(|f| f.to_bits()));
                    out
                })
                .collect()
        };
        assert_eq!(bits(&a), bits(&b), "kind {kind}");
    }
}

/// A request's outcome does not depend on the batch around it: each request
/// verified alone, and the batch reversed, give the batch's bits.
#[test]
fn verification_is_batch_invariant() {
    let Some(ctx) = common::gpu() else { return };
    let mut verifier = Verifier::new(&ctx).unwrap();
    let case = random_case(41, 10, 4, 700, true);
    let v = case.vocab as usize;
    let probs = softmax_probs(&case.draft, v);
    // Per request: its target rows, draft rows and draft tokens.
    let mut spans = Vec::new();
    let (mut t, mut d) = (0usize, 0usize);
    for &len in &case.lens {
        let len = len as usize;
        spans.push((t, len + 1, d, len));
        t += len + 1;
        d += len;
    }
    let bits = |x: &Verification| -> Vec<u32> {
        let mut out = vec![x.accepted];
        out.extend(&x.tokens);
        out.extend(x.logprobs.iter().map(|f| f.to_bits()));
        out.extend(x.acceptance.iter().map(|f| f.to_bits()));
        out
    };
    for kind in 0..3 {
        let draft_values = if kind == 2 { &probs } else { &case.draft };
        let run = |verifier: &mut Verifier, order: &[usize]| -> Vec<Vec<u32>> {
            let mut target = Vec::new();
            let mut draft = Vec::new();
            let mut tokens = Vec::new();
            let mut lens = Vec::new();
            let mut params = Vec::new();
            for &r in order {
                let (t0, tn, d0, dn) = spans[r];
                target.extend_from_slice(&case.target[t0 * v..(t0 + tn) * v]);
                draft.extend_from_slice(&draft_values[d0 * v..(d0 + dn) * v]);
                tokens.extend_from_slice(&case.tokens[d0..d0 + dn]);
                lens.push(case.lens[r]);
                params.push(case.params[r]);
            }
            let options = VerifyOptions {
                draft: distribution(kind, rollcall::HostLogits::F32(&draft)),
                mask: None,
                histories: None,
            };
            let drafts = Drafts {
                tokens: &tokens,
                lens: &lens,
            };
            verifier
                .verify(
                    rollcall::HostLogits::F32(&target),
                    case.vocab,
                    &params,
                    &drafts,
                    &options,
                )
                .unwrap()
                .iter()
                .map(bits)
                .collect()
        };
        let all: Vec<usize> = (0..case.lens.len()).collect();
        let batch = run(&mut verifier, &all);
        let reversed: Vec<usize> = all.iter().rev().copied().collect();
        let mut backwards = run(&mut verifier, &reversed);
        backwards.reverse();
        assert_eq!(batch, backwards, "kind {kind}: reversed batch");
        for r in [0, 3, 9] {
            let alone = run(&mut verifier, &[r]);
            assert_eq!(alone[0], batch[r], "kind {kind}: request {r} alone");
        }
    }
}
