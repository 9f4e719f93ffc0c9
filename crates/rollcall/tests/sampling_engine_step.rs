//! The whole engine step: masks, logit bias, penalties over a GPU-resident
//! history, min_tokens, top-nσ and top log-probabilities together, against
//! the twin (same token, kept count and status; log-probabilities within
//! 2e-4; another token only at a near tie), on the host path with random
//! batches mixing every feature, and on the engine path over a 64-step
//! decode in which the history evolves on the GPU.

mod common;

use rand::Rng;
use rollcall::sampling::{cpu, mask, HostMask, LogprobsMode, RowHistory, SampleOptions, TokenMask};
use rollcall::{
    Error, LogitsBinding, LogitsDtype, RowStatus, SampleBatch, Sampler, SamplingParams,
};

struct RowData {
    prompt: Vec<u32>,
    output: Vec<u32>,
    bias: Vec<(u32, f32)>,
    stop: Vec<u32>,
    min_tokens: u32,
}

fn random_row_data(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32) -> RowData {
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..vocab)).collect() };
    let prompt = tokens(20);
    let output = tokens(8);
    let stop = tokens(2);
    let bias: Vec<(u32, f32)> = (0..16)
        .map(|k| {
            let value = match k % 8 {
                0 => f32::INFINITY,
                1 => f32::NEG_INFINITY,
                _ => (k as f32 - 8.0) * 1.5,
            };
            (rng.random_range(0..vocab), value)
        })
        .collect();
    RowData {
        prompt,
        output,
        bias,
        stop,
        min_tokens: rng.random_range(0..12),
    }
}

fn history(d: &RowData) -> RowHistory<'_> {
    RowHistory {
        prompt: &d.prompt,
        output: &d.output,
        logit_bias: &d.bias,
        stop_tokens: &d.stop,
        min_tokens: d.min_tokens,
    }
}

fn random_params(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32) -> SamplingParams {
    let mut p = SamplingParams::new([0.0, 0.6, 1.0][rng.random_range(0..3)])
        .seed(rng.random())
        .step(rng.random_range(0..100));
    if rng.random_bool(0.7) {
        p = p.penalties(
            [1.0, 1.3, 0.8][rng.random_range(0..3)],
            [0.0, 0.5, -1.0][rng.random_range(0..3)],
            [0.0, 0.7, 2.0][rng.random_range(0..3)],
        );
    }
    if rng.random_bool(0.3) {
        p = p.top_k([5, vocab / 2][rng.random_range(0..2)]);
    }
    if rng.random_bool(0.3) {
        p = p.top_n_sigma(1.5);
    }
    if rng.random_bool(0.5) {
        p = p.top_logprobs([3, 20][rng.random_range(0..2)]);
    }
    p
}

#[test]
fn mixed_engine_batches_match_the_twin() {
    let Some(ctx) = common::gpu() else { return };
    let mut samplers = common::every_route(&ctx);
    let mut flips = 0;
    let mut rows_checked = 0;
    for (seed, &(rows, vocab)) in [(1usize, 1u32), (5, 37), (9, 1000), (6, 20_011)]
        .iter()
        .enumerate()
    {
        let mut rng = common::rng(100 + seed as u64);
        let logits: Vec<f32> = (0..rows)
            .flat_map(|_| common::model_like_logits(&mut rng, vocab as usize))
            .collect();
        let data: Vec<RowData> = (0..rows)
            .map(|_| random_row_data(&mut rng, vocab))
            .collect();
        let histories: Vec<RowHistory> = data.iter().map(history).collect();
        let params: Vec<SamplingParams> =
            (0..rows).map(|_| random_params(&mut rng, vocab)).collect();
        let words: Vec<u32> = (0..rows)
            .flat_map(|_| {
                let allowed: Vec<u32> = (0..vocab).filter(|_| rng.random_bool(0.8)).collect();
                mask::allow_only(vocab, &allowed).unwrap()
            })
            .collect();
        let mask_rows: Vec<Option<u32>> = (0..rows as u32)
            .map(|r| (r % 2 == 0).then_some(r))
            .collect();
        for dtype in LogitsDtype::ALL {
            let owned = common::Owned::new(&logits, dtype);
            for mode in [LogprobsMode::Processed, LogprobsMode::Raw] {
                let options = SampleOptions::default()
                    .mask(HostMask {
                        words: &words,
                        rows: &mask_rows,
                    })
                    .histories(&histories)
                    .logprobs(mode);
                let (traces, tops) =
                    cpu::sample_traced_with(owned.view(), vocab, &params, &options).unwrap();
                let mut first: Option<Vec<rollcall::SampleResult>> = None;
                for (route, sampler) in &mut samplers {
                    let got = sampler
                        .sample_with(owned.view(), vocab, &params, &options)
                        .unwrap();
                    let context = format!("{route:?} {mode:?} {dtype:?} rows {rows} vocab {vocab}");
                    for r in 0..rows {
                        let context = format!("{context} row {r}");
                        flips += usize::from(common::check_against_twin(
                            &got.results[r],
                            &traces[r],
                            &context,
                        ));
                        common::check_top_logprobs(&got.top_logprobs[r], &tops[r], &context);
                    }
                    match &first {
                        Some(first) => common::assert_same_bits(first, &got.results, &context),
                        None => first = Some(got.results),
                    }
                    rows_checked += rows;
                }
            }
        }
    }
    eprintln!("{rows_checked} rows, {flips} near-tie flips");
    assert!(flips * 50 <= rows_checked);
}

/// Penalties and bias change the draw the way the contract says: a token
/// with bias +inf is always drawn; a banned stop token never is before
/// min_tokens; with a large repetition penalty a greedy row avoids its
/// history's best token.
#[test]
fn edits_steer_the_draw() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let vocab = 100u32;
    let mut row = vec![0.0f32; vocab as usize];
    row[7] = 5.0;
    row[8] = 4.0;
    let logits = [row.clone(), row.clone(), row].concat();
    let forced = [(42u32, f32::INFINITY)];
    let histories = [
        RowHistory {
            logit_bias: &forced,
            ..Default::default()
        },
        RowHistory {
            stop_tokens: &[7],
            min_tokens: 1,
            ..Default::default()
        },
        RowHistory {
            prompt: &[7],
            ..Default::default()
        },
    ];
    let params = [
        SamplingParams::new(1.0).seed(3),
        SamplingParams::greedy(),
        SamplingParams::greedy().penalties(4.0, 0.0, 0.0),
    ];
    let options = SampleOptions::default().histories(&histories);
    let got = sampler
        .sample_with(rollcall::HostLogits::F32(&logits), vocab, &params, &options)
        .unwrap();
    let tokens: Vec<u32> = got.results.iter().map(|r| r.token).collect();
    assert_eq!(tokens, vec![42, 8, 8]);
    let twin =
        cpu::sample_with(rollcall::HostLogits::F32(&logits), vocab, &params, &options).unwrap();
    assert_eq!(
        twin.results.iter().map(|r| r.token).collect::<Vec<_>>(),
        tokens
    );
}

/// A 64-step decode on the engine path: each step samples from fresh logits
/// with the batch's GPU history (never re-sent), masks on some rows and top
/// log-probabilities; the twin follows the GPU's tokens and agrees at every
/// step; min_tokens bans lift on time.
#[test]
fn decode_loop_history_evolves_on_the_gpu() {
    use wgpu::util::DeviceExt;
    let Some(ctx) = common::gpu() else { return };
    let sampler = Sampler::new(&ctx).unwrap();
    let (rows, vocab, steps) = (6u32, 3001u32, 64u64);
    let mut rng = common::rng(64);
    let data: Vec<RowData> = (0..rows)
        .map(|_| random_row_data(&mut rng, vocab))
        .collect();
    let base_params: Vec<SamplingParams> = (0..rows)
        .map(|r| {
            SamplingParams::new(0.9)
                .penalties(1.2, 0.4, 0.6)
                .top_logprobs(if r % 2 == 0 { 5 } else { 0 })
                .seed(u64::from(r))
        })
        .collect();
    let words: Vec<u32> = (0..rows)
        .flat_map(|_| {
            let allowed: Vec<u32> = (0..vocab).filter(|_| rng.random_bool(0.9)).collect();
            mask::allow_only(vocab, &allowed).unwrap()
        })
        .collect();
    let mask_rows: Vec<Option<u32>> = (0..rows).map(|r| (r % 3 == 0).then_some(r)).collect();
    let mask_buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let token_mask = TokenMask {
        buffer: &mask_buffer,
        offset: 0,
        rows,
    };

    let mut batch = SampleBatch::with_history(&ctx, rows, 200).unwrap();
    let mut outputs: Vec<Vec<u32>> = data.iter().map(|d| d.output.clone()).collect();
    for (r, d) in data.iter().enumerate() {
        batch.set_history(r as u32, vocab, &history(d)).unwrap();
    }
    let logits_buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(rows * vocab) * 4,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(rows) * (4 + 16 + 160),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut flips = 0;
    let mut bans_seen = 0;
    for step in 0..steps {
        let logits: Vec<f32> = (0..rows)
            .flat_map(|_| common::model_like_logits(&mut rng, vocab as usize))
            .collect();
        // Make the stop tokens attractive, so that min_tokens matters.
        let mut logits = logits;
        for (r, d) in data.iter().enumerate() {
            logits[r * vocab as usize + d.stop[0] as usize] = 30.0;
        }
        ctx.queue
            .write_buffer(&logits_buffer, 0, bytemuck::cast_slice(&logits));
        let params: Vec<SamplingParams> = base_params.iter().map(|p| p.step(step)).collect();
        batch.set_params(&params).unwrap();
        batch.set_mask_rows(&mask_rows).unwrap();
        let binding = LogitsBinding {
            buffer: &logits_buffer,
            offset: 0,
            rows,
            vocab,
            dtype: LogitsDtype::F32,
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        sampler
            .encode_masked(&mut encoder, &binding, &token_mask, &mut batch)
            .unwrap();
        let n = u64::from(rows);
        encoder.copy_buffer_to_buffer(batch.tokens(), 0, &readback, 0, n * 4);
        encoder.copy_buffer_to_buffer(batch.results(), 0, &readback, n * 4, n * 16);
        encoder.copy_buffer_to_buffer(batch.top_logprobs(), 0, &readback, n * 20, n * 160);
        ctx.submit(encoder.finish());
        let out = ctx.read_buffer(&readback, n * 180).unwrap();
        let tokens: Vec<u32> = bytemuck::cast_slice(&out[..rows as usize * 4]).to_vec();
        let results: Vec<[u32; 4]> =
            bytemuck::cast_slice(&out[rows as usize * 4..rows as usize * 20]).to_vec();
        let top: Vec<[u32; 2]> = bytemuck::cast_slice(&out[rows as usize * 20..]).to_vec();

        // The twin, from the histories so far (what the GPU should hold).
        let data_now: Vec<RowData> = data
            .iter()
            .zip(&outputs)
            .map(|(d, o)| RowData {
                output: o.clone(),
                prompt: d.prompt.clone(),
                bias: d.bias.clone(),
                stop: d.stop.clone(),
                min_tokens: d.min_tokens,
            })
            .collect();
        let histories: Vec<RowHistory> = data_now.iter().map(history).collect();
        let options = SampleOptions::default()
            .mask(HostMask {
                words: &words,
                rows: &mask_rows,
            })
            .histories(&histories);
        let (traces, tops) =
            cpu::sample_traced_with(rollcall::HostLogits::F32(&logits), vocab, &params, &options)
                .unwrap();
        for r in 0..rows as usize {
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
            let context = format!("step {step} row {r}");
            flips += usize::from(common::check_against_twin(&got, &traces[r], &context));
            let gpu_top: Vec<rollcall::sampling::TopLogprob> = top[r * 20..r * 20 + tops[r].len()]
                .iter()
                .map(|e| rollcall::sampling::TopLogprob {
                    token: e[0],
                    logprob: f32::from_bits(e[1]),
                })
                .collect();
            common::check_top_logprobs(&gpu_top, &tops[r], &context);
            let banned = (outputs[r].len() as u32) < data[r].min_tokens;
            if banned {
                bans_seen += 1;
                assert!(
                    !data[r].stop.contains(&tokens[r]),
                    "{context}: stop token before min_tokens"
                );
            }
            if got.status == RowStatus::Ok {
                outputs[r].push(tokens[r]);
            }
        }
    }
    eprintln!(
        "{} steps x {rows} rows, {bans_seen} banned steps, {flips} near-tie flips",
        steps
    );
    assert!(bans_seen > 0 && flips < 4);
    // The history keeps growing until the capacity refuses a step.
    let mut small = SampleBatch::with_history(&ctx, 1, 2).unwrap();
    small
        .set_history(
            0,
            vocab,
            &RowHistory {
                output: &[1, 2],
                ..Default::default()
            },
        )
        .unwrap();
    small
        .set_params(&[SamplingParams::new(1.0).penalties(1.1, 0.0, 0.0)])
        .unwrap();
    let binding = LogitsBinding {
        buffer: &logits_buffer,
        offset: 0,
        rows: 1,
        vocab,
        dtype: LogitsDtype::F32,
    };
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = sampler
        .encode(&mut encoder, &binding, &mut small)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::HistoryFull {
                row: 0,
                capacity: 2,
                ..
            }
        ),
        "{err}"
    );
    // Penalties need a history.
    let mut plain = SampleBatch::new(&ctx, 1).unwrap();
    let err = plain
        .set_params(&[SamplingParams::new(1.0).penalties(1.1, 0.0, 0.0)])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}
