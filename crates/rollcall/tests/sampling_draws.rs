//! Several draws from one logits row (vLLM's `n`): a batch whose rows name
//! the logits row they read gives, bit for bit, what a batch of copies of
//! those rows gives, on every route and dtype, with masks and top
//! log-probabilities, on the host and engine paths; the twin agrees; bad
//! row lists are refused.

mod common;

use rand::Rng;
use rollcall::sampling::{cpu, mask, HostMask, SampleOptions};
use rollcall::{Error, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams};

/// Draws per logits row, including a row nobody draws from.
const DRAWS: [usize; 5] = [3, 1, 0, 4, 2];

fn case(vocab: u32) -> (Vec<f32>, Vec<u32>, Vec<SamplingParams>) {
    let mut rng = common::rng(u64::from(vocab));
    let logits: Vec<f32> = (0..DRAWS.len())
        .flat_map(|_| common::model_like_logits(&mut rng, vocab as usize))
        .collect();
    let rows: Vec<u32> = DRAWS
        .iter()
        .enumerate()
        .flat_map(|(r, &n)| std::iter::repeat_n(r as u32, n))
        .collect();
    let params: Vec<SamplingParams> = rows
        .iter()
        .map(|_| {
            let mut p = SamplingParams::new([0.0, 0.7, 1.0][rng.random_range(0..3)])
                .seed(rng.random())
                .top_logprobs(rng.random_range(0..4));
            if rng.random_bool(0.4) {
                p = p.top_k(20).top_p(0.9);
            }
            p
        })
        .collect();
    (logits, rows, params)
}

fn copies(logits: &[f32], rows: &[u32], vocab: u32) -> Vec<f32> {
    let v = vocab as usize;
    rows.iter()
        .flat_map(|&r| logits[r as usize * v..(r as usize + 1) * v].iter().copied())
        .collect()
}

#[test]
fn draws_from_shared_rows_equal_draws_from_copies() {
    let Some(ctx) = common::gpu() else { return };
    let mut samplers = common::every_route(&ctx);
    for vocab in [1u32, 33, 5000] {
        let (logits, rows, params) = case(vocab);
        let copied = copies(&logits, &rows, vocab);
        let words = [
            mask::allow_all(vocab),
            mask::allow_only(vocab, &[0, vocab / 2]).unwrap(),
        ]
        .concat();
        let mask_rows: Vec<Option<u32>> =
            (0..rows.len()).map(|i| (i % 3 == 1).then_some(1)).collect();
        for dtype in LogitsDtype::ALL {
            let shared = common::Owned::new(&logits, dtype);
            let copied = common::Owned::new(&copied, dtype);
            let masks = HostMask {
                words: &words,
                rows: &mask_rows,
            };
            let gather = SampleOptions::default().mask(masks).logits_rows(&rows);
            let plain = SampleOptions::default().mask(masks);
            let (traces, tops) =
                cpu::sample_traced_with(shared.view(), vocab, &params, &gather).unwrap();
            let twin_copies = cpu::sample_with(copied.view(), vocab, &params, &plain).unwrap();
            common::assert_same_bits(
                &traces.iter().map(|t| t.result).collect::<Vec<_>>(),
                &twin_copies.results,
                &format!("twin {dtype:?} vocab {vocab}"),
            );
            for (route, sampler) in &mut samplers {
                let context = format!("{route:?} {dtype:?} vocab {vocab}");
                let got = sampler
                    .sample_with(shared.view(), vocab, &params, &gather)
                    .unwrap();
                let want = sampler
                    .sample_with(copied.view(), vocab, &params, &plain)
                    .unwrap();
                common::assert_same_bits(&want.results, &got.results, &context);
                assert_eq!(want.top_logprobs, got.top_logprobs, "{context}");
                for r in 0..rows.len() {
                    let context = format!("{context} row {r}");
                    common::check_against_twin(&got.results[r], &traces[r], &context);
                    common::check_top_logprobs(&got.top_logprobs[r], &tops[r], &context);
                }
            }
        }
    }
}

#[test]
fn engine_path_draws_from_shared_rows() {
    use wgpu::util::DeviceExt;
    let Some(ctx) = common::gpu() else { return };
    let vocab = 4099u32;
    let (logits, rows, params) = case(vocab);
    // Chunks of two logits rows: the draws of a row must follow it.
    let sampler = Sampler::new(&ctx)
        .unwrap()
        .with_max_chunk_bytes(2 * 4 * u64::from(vocab));
    let mut host = Sampler::new(&ctx).unwrap();
    let want = host
        .sample(
            rollcall::HostLogits::F32(&copies(&logits, &rows, vocab)),
            vocab,
            &params,
        )
        .unwrap();
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&logits),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let binding = LogitsBinding {
        buffer: &buffer,
        offset: 0,
        rows: DRAWS.len() as u32,
        vocab,
        dtype: LogitsDtype::F32,
    };
    let mut batch = SampleBatch::new(&ctx, rows.len() as u32).unwrap();
    batch.set_params(&params).unwrap();
    batch.set_logits_rows(&rows).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    sampler.encode(&mut encoder, &binding, &mut batch).unwrap();
    let n = rows.len() as u64;
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: n * 20,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(batch.tokens(), 0, &readback, 0, n * 4);
    encoder.copy_buffer_to_buffer(batch.results(), 0, &readback, n * 4, n * 16);
    ctx.submit(encoder.finish());
    let out = ctx.read_buffer(&readback, n * 20).unwrap();
    let tokens: &[u32] = bytemuck::cast_slice(&out[..rows.len() * 4]);
    let results: &[[u32; 4]] = bytemuck::cast_slice(&out[rows.len() * 4..]);
    for r in 0..rows.len() {
        assert_eq!(
            (tokens[r], results[r][0], results[r][2]),
            (want[r].token, want[r].logprob.to_bits(), want[r].kept),
            "row {r}"
        );
    }

    // Refusals before any work.
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let mut decreasing = rows.clone();
    decreasing.swap(0, rows.len() - 1);
    assert!(matches!(
        batch.set_logits_rows(&decreasing),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        batch.set_logits_rows(&rows[1..]),
        Err(Error::LengthMismatch { .. })
    ));
    let mut past = rows.clone();
    *past.last_mut().unwrap() = DRAWS.len() as u32;
    batch.set_logits_rows(&past).unwrap();
    let err = sampler
        .encode(&mut encoder, &binding, &mut batch)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // With histories (edits in place on shared rows): refused.
    let shared = rollcall::HostLogits::F32(&logits);
    let histories = vec![rollcall::sampling::RowHistory::default(); rows.len()];
    let options = SampleOptions::default()
        .logits_rows(&rows)
        .histories(&histories);
    assert!(matches!(
        host.sample_with(shared, vocab, &params, &options),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cpu::sample_with(shared, vocab, &params, &options),
        Err(Error::InvalidArgument(_))
    ));
}
