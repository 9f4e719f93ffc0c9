//! The f32 vector-load route against the scalar route on the same logits:
//! the engine path at byte offsets that put rows on a 16-byte boundary of
//! the binding (vector loads) and 4 bytes later (scalar loads), with several
//! chunks, buffers sized exactly (not a multiple of 16), awkward bit patterns
//! and both split modes. Every output word must match.
#![allow(clippy::disallowed_methods)]

mod common;

use rand::Rng;
use rollcall::internals::SplitRows;
use rollcall::{LogitsDtype, Sampler, SamplingParams};

const AWKWARD: [u32; 12] = [
    0x7FC0_0001, // qNaN with payload
    0xFFC0_0000, // negative qNaN
    0x7F80_0001, // sNaN
    0x7F80_0000, // +inf
    0xFF80_0000, // -inf
    0x8000_0000, // -0
    0x0000_0001, // smallest denormal
    0x8000_0001, // negative denormal
    0x007F_FFFF, // largest denormal
    0x7F7F_FFFF, // f32::MAX
    0xFF7F_FFFF, // f32::MIN
    0x0080_0000, // smallest normal
];

fn row_values(rng: &mut rand_chacha::ChaCha8Rng, vocab: usize, kind: u32) -> Vec<u32> {
    let mut row: Vec<u32> = common::model_like_logits(rng, vocab)
        .into_iter()
        .map(f32::to_bits)
        .collect();
    match kind {
        0 => {}
        1 => {
            for _ in 0..vocab / 5 + 1 {
                let i = rng.random_range(0..vocab);
                row[i] = AWKWARD[rng.random_range(0..AWKWARD.len())];
            }
        }
        // +inf at the very last token (the last group of the row).
        2 => row[vocab - 1] = 0x7F80_0000,
        // Only -inf except the last group, which holds the maximum.
        3 => {
            row.iter_mut().for_each(|x| *x = 0xFF80_0000);
            row[vocab - 1] = 1.5f32.to_bits();
            row[vocab - 4] = 2.5f32.to_bits();
        }
        // Only denormals and zeros of both signs.
        _ => {
            for x in row.iter_mut() {
                *x = [
                    0x0000_0001,
                    0x8000_0001,
                    0x0000_0000,
                    0x8000_0000,
                    0x007F_FFFF,
                ][rng.random_range(0..5)];
            }
        }
    }
    row
}

fn params(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32) -> SamplingParams {
    let temperature = [0.0, 1e-6, 0.3, 1.0, 1.5][rng.random_range(0..5)];
    SamplingParams {
        temperature,
        top_k: [0, 1, 5, vocab][rng.random_range(0..4)],
        top_p: [1.0, 0.3, 0.9][rng.random_range(0..3)],
        min_p: [0.0, 0.05, 0.5][rng.random_range(0..3)],
        seed: rng.random(),
        step: rng.random_range(0..1000),
        ..SamplingParams::default()
    }
}

/// Tokens and result words of the engine path with the f32 logits at
/// `offset` of a buffer exactly `offset + rows * vocab * 4` bytes long.
fn run(
    ctx: &rollcall::GpuContext,
    sampler: &Sampler,
    words: &[u32],
    vocab: usize,
    offset: u64,
    params: &[SamplingParams],
) -> (Vec<u32>, Vec<[u32; 4]>) {
    common::sample_engine(
        ctx,
        sampler,
        offset,
        0xA5,
        bytemuck::cast_slice(words),
        vocab as u32,
        LogitsDtype::F32,
        params,
    )
}

#[test]
fn vector_and_scalar_routes_agree_bit_for_bit() {
    let Some(ctx) = common::gpu() else { return };
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
    let mut rng = common::rng(11);
    // (vocab, rows): rows of 16-byte multiples and not (2052 * 4 = 8208 = 16 * 513),
    // the smallest vector row, and rows spanning several tiles (split pass).
    for (i, &(vocab, rows)) in [
        (4usize, 7usize),
        (8, 5),
        (12, 9),
        (1024, 11),
        (2052, 9),
        (9000, 3),
    ]
    .iter()
    .enumerate()
    {
        let words: Vec<u32> = (0..rows)
            .flat_map(|r| row_values(&mut rng, vocab, r as u32 % 5))
            .collect();
        // Every other size with greedy and plain rows only: on the routes
        // with a separate first pass those batches go to the small drawing
        // kernel (random parameters almost never give such a batch).
        let ps: Vec<SamplingParams> = (0..rows)
            .map(|_| {
                let p = params(&mut rng, vocab as u32);
                if i % 2 == 1 {
                    SamplingParams {
                        top_k: 0,
                        top_p: 1.0,
                        min_p: 0.0,
                        ..p
                    }
                } else {
                    p
                }
            })
            .collect();
        let row_bytes = vocab as u64 * 4;
        let floats: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
        // One reference for every route and chunking: the host path, one
        // dispatch per row, unchunked.
        let reference = Sampler::new(&ctx)
            .unwrap()
            .with_split_rows(SplitRows::Fused)
            .sample(rollcall::HostLogits::F32(&floats), vocab as u32, &ps)
            .unwrap();
        for max_chunk in [u64::MAX, 2 * row_bytes + align + 4, row_bytes + align + 4] {
            for split in [SplitRows::Never, SplitRows::Always, SplitRows::Fused] {
                let sampler = Sampler::new(&ctx)
                    .unwrap()
                    .with_split_rows(split)
                    .with_max_chunk_bytes(max_chunk);
                // Host path (offset 0 of an upload buffer).
                let mut host = Sampler::new(&ctx)
                    .unwrap()
                    .with_split_rows(split)
                    .with_max_chunk_bytes(max_chunk);
                let host_res = host
                    .sample(rollcall::HostLogits::F32(&floats), vocab as u32, &ps)
                    .unwrap();
                common::assert_same_bits(
                    &reference,
                    &host_res,
                    &format!("host path, vocab {vocab} chunk {max_chunk} {split:?}"),
                );
                for base in [0u64, 16, 48, 272, 256 + 16, 1008] {
                    let vector = run(&ctx, &sampler, &words, vocab, base, &ps);
                    for delta in [4u64, 8, 12] {
                        let scalar = run(&ctx, &sampler, &words, vocab, base + delta, &ps);
                        assert_eq!(
                            vector, scalar,
                            "vocab {vocab} rows {rows} chunk {max_chunk} {split:?} offsets {base} vs {}",
                            base + delta
                        );
                    }
                    assert_matches_host(
                        &vector,
                        &reference,
                        &format!("vocab {vocab} chunk {max_chunk} {split:?} offset {base}"),
                    );
                }
            }
        }
    }
}

/// Ranges shorter than one vector (the stand-in is bound) and just one vector,
/// at offsets on and off a 16-byte boundary, against the host path.
#[test]
fn tiny_ranges_bind_and_sample() {
    let Some(ctx) = common::gpu() else { return };
    let mut rng = common::rng(5);
    let sampler = Sampler::new(&ctx).unwrap();
    for vocab in 1usize..=8 {
        for rows in 1usize..=3 {
            let words: Vec<u32> = (0..rows * vocab)
                .map(|_| rng.random_range(-3.0f32..3.0).to_bits())
                .collect();
            let ps: Vec<SamplingParams> =
                (0..rows).map(|_| params(&mut rng, vocab as u32)).collect();
            let floats: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
            let want = Sampler::new(&ctx)
                .unwrap()
                .sample(rollcall::HostLogits::F32(&floats), vocab as u32, &ps)
                .unwrap();
            for offset in [0u64, 4, 12, 16, 20, 28, 48] {
                let got = run(&ctx, &sampler, &words, vocab, offset, &ps);
                assert_matches_host(
                    &got,
                    &want,
                    &format!("vocab {vocab} rows {rows} offset {offset}"),
                );
            }
        }
    }
}

/// The engine path's tokens, log-probability bits and kept counts equal the
/// host path's results.
fn assert_matches_host(
    got: &(Vec<u32>, Vec<[u32; 4]>),
    want: &[rollcall::SampleResult],
    context: &str,
) {
    for (r, want_r) in want.iter().enumerate() {
        assert_eq!(got.0[r], want_r.token, "{context} row {r}");
        assert_eq!(got.1[r][0], want_r.logprob.to_bits(), "{context} row {r}");
        assert_eq!(got.1[r][2], want_r.kept, "{context} row {r}");
    }
}
