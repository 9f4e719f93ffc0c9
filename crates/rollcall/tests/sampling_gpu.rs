//! The GPU sampler against its CPU twin, the contract's reference, and itself
//! (batch invariance, chunking, engine path). Runs on any adapter; in CI on
//! lavapipe. Fails (never skips) without an adapter unless ROLLCALL_ALLOW_NO_GPU=1.
// These play an engine that submits on its own queue, uncounted.
#![allow(clippy::disallowed_methods)]

mod common;

use half::f16;
use rand::Rng;
use rollcall::sampling::cpu::{self, RowTrace};
use rollcall::{
    HostLogits, LogitsDtype, RowStatus, SampleResult, Sampler, SamplingParams, NO_TOKEN,
};

/// Decisions closer than this may go either way between two devices' `exp`/`log`.
const NEAR_TIE: f32 = 1e-4;

/// Logits with the awkward values the contract names: NaN, ±inf, ties, -0.
fn awkward_row(rng: &mut rand_chacha::ChaCha8Rng, vocab: usize, kind: u32) -> Vec<f32> {
    let mut row = common::model_like_logits(rng, vocab);
    match kind {
        // Quantised logits: many exact ties, also at top-k/top-p boundaries.
        0 => row.iter_mut().for_each(|x| *x = (*x * 2.0).round() / 2.0),
        // NaN and -inf sprinkled in, one -0.
        1 => {
            for _ in 0..vocab / 7 + 1 {
                let i = rng.random_range(0..vocab);
                row[i] = if rng.random_bool(0.5) {
                    f32::NAN
                } else {
                    f32::NEG_INFINITY
                };
            }
            row[rng.random_range(0..vocab)] = -0.0;
        }
        // +inf tokens: the draw is uniform over them.
        2 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..vocab);
                row[i] = f32::INFINITY;
            }
        }
        // Nothing valid.
        3 => row.iter_mut().enumerate().for_each(|(i, x)| {
            *x = if i % 2 == 0 {
                f32::NAN
            } else {
                f32::NEG_INFINITY
            }
        }),
        // Huge magnitudes that overflow when divided by a small temperature.
        4 => {
            for _ in 0..3 {
                let i = rng.random_range(0..vocab);
                row[i] = if rng.random_bool(0.5) {
                    3.0e38
                } else {
                    -3.0e38
                };
            }
        }
        // Flat: every logit equal (one giant tie).
        5 => row.iter_mut().for_each(|x| *x = 1.5),
        // Values that are subnormal in f16 (and exactly representable there).
        6 => row.iter_mut().step_by(3).for_each(|x| {
            *x = if rng.random_bool(0.5) {
                6.0e-8
            } else {
                -3.0e-6
            }
        }),
        _ => {}
    }
    row
}

fn random_params(rng: &mut rand_chacha::ChaCha8Rng, vocab: u32) -> SamplingParams {
    let temperature = [0.0, 1e-6, 0.3, 0.7, 1.0, 1.5][rng.random_range(0..6)];
    let top_k = [0, 0, 1, 2, 5, 50, vocab, vocab + 3][rng.random_range(0..8)];
    let top_p = [1.0, 1.0, 0.0, 0.3, 0.9, 0.99][rng.random_range(0..6)];
    let min_p = [0.0, 0.0, 0.0, 0.05, 0.5, 1.0][rng.random_range(0..6)];
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        seed: rng.random(),
        step: rng.random_range(0..1000),
        ..SamplingParams::default()
    }
}

#[derive(Default, Debug)]
struct Tally {
    rows: usize,
    exact: usize,
    near_ties: usize,
    disagreements_at_near_ties: usize,
}

/// Compares one GPU row with the twin; panics on a disagreement the twin's
/// trace cannot explain.
fn check_row(gpu: &SampleResult, trace: &RowTrace, context: &str, tally: &mut Tally) {
    let cpu = &trace.result;
    tally.rows += 1;
    let near = trace.is_near_tie(NEAR_TIE);
    tally.near_ties += usize::from(near);
    assert_eq!(gpu.status, cpu.status, "{context}: status");
    if gpu.status == RowStatus::NoValidToken {
        assert_eq!(gpu.token, NO_TOKEN, "{context}");
        assert_eq!(gpu.logprob, f32::NEG_INFINITY, "{context}");
        tally.exact += 1;
        return;
    }
    if trace.top_p_margin >= NEAR_TIE {
        assert_eq!(
            gpu.kept, cpu.kept,
            "{context}: kept set size (trace {trace:?})"
        );
    }
    if gpu.token == cpu.token {
        let tol = 2e-4 * cpu.logprob.abs().max(1.0);
        assert!(
            (gpu.logprob - cpu.logprob).abs() <= tol,
            "{context}: logprob gpu {} cpu {}",
            gpu.logprob,
            cpu.logprob
        );
        tally.exact += 1;
    } else {
        assert!(
            near,
            "{context}: gpu token {} cpu token {} and no near tie ({trace:?}, gpu {gpu:?})",
            gpu.token, cpu.token
        );
        tally.disagreements_at_near_ties += 1;
    }
}

fn run_case(
    sampler: &mut Sampler,
    rng: &mut rand_chacha::ChaCha8Rng,
    rows: usize,
    vocab: usize,
    dtype: LogitsDtype,
    tally: &mut Tally,
) {
    let mut values = Vec::with_capacity(rows * vocab);
    let mut params = Vec::with_capacity(rows);
    for _ in 0..rows {
        let kind = rng.random_range(0..10);
        values.extend(awkward_row(rng, vocab, kind));
        params.push(random_params(rng, vocab as u32));
    }
    let logits = common::Owned::new(&values, dtype);
    let gpu = sampler
        .sample(logits.view(), vocab as u32, &params)
        .expect("valid input");
    assert_eq!(gpu.len(), rows);
    for r in 0..rows {
        let trace = cpu::sample_traced(logits.view().row(r, vocab).unwrap(), &params[r]).unwrap();
        let context = format!(
            "rows {rows} vocab {vocab} {dtype:?} row {r} params {:?}",
            params[r]
        );
        check_row(&gpu[r], &trace, &context, tally);
    }
}

#[test]
fn gpu_matches_cpu_twin_on_random_shapes() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let mut rng = common::rng(0x5EED);
    let mut tally = Tally::default();
    // Vocab sizes around the stream layout (4 x 256 = 1024 tokens a sweep) and
    // real ones; rows from 0 up, not multiples of anything.
    let shapes = [
        (0, 7),
        (1, 1),
        (5, 1),
        (3, 2),
        (9, 3),
        (7, 5),
        (6, 255),
        (6, 1023),
        (6, 1024),
        (6, 1025),
        (5, 4097),
        (4, 32000),
        (3, 50257),
    ];
    for dtype in LogitsDtype::ALL {
        for &(rows, vocab) in &shapes {
            run_case(&mut sampler, &mut rng, rows, vocab, dtype, &mut tally);
        }
    }
    eprintln!("{tally:?}");
    // The comparison must have teeth: near ties are rare.
    assert!(tally.exact * 10 >= tally.rows * 9, "{tally:?}");
}

#[test]
fn largest_vocab_and_largest_batch() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let mut rng = common::rng(7);
    let mut tally = Tally::default();
    run_case(
        &mut sampler,
        &mut rng,
        2,
        262_144,
        LogitsDtype::Bf16,
        &mut tally,
    );
    run_case(
        &mut sampler,
        &mut rng,
        1,
        262_147,
        LogitsDtype::F32,
        &mut tally,
    );
    run_case(
        &mut sampler,
        &mut rng,
        4096,
        37,
        LogitsDtype::F32,
        &mut tally,
    );
    eprintln!("{tally:?}");
    assert!(tally.exact * 10 >= tally.rows * 9, "{tally:?}");
}

/// A row's token, log-probability and kept count are bit-identical wherever it
/// sits, in batches of any size, and however the batch is chunked.
#[test]
fn batch_invariance() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let vocab = 3001usize;
    let mut rng = common::rng(11);
    let probes: Vec<(Vec<f32>, SamplingParams)> = (0..6)
        .map(|i| {
            let p = match i {
                0 => SamplingParams::new(1.0),
                1 => SamplingParams::new(0.8).top_k(40),
                2 => SamplingParams::new(1.2).top_p(0.9),
                3 => SamplingParams::new(0.7).top_k(100).top_p(0.95).min_p(0.02),
                4 => SamplingParams::new(1.0).min_p(0.1),
                _ => SamplingParams::greedy(),
            };
            (
                common::model_like_logits(&mut rng, vocab),
                p.seed(rng.random()).step(i as u64 * 17),
            )
        })
        .collect();
    let alone: Vec<SampleResult> = probes
        .iter()
        .map(|(row, p)| {
            sampler
                .sample(HostLogits::F32(row), vocab as u32, &[*p])
                .unwrap()[0]
        })
        .collect();
    let mut chunked = Sampler::new(&ctx)
        .unwrap()
        .with_max_chunk_bytes(3 * vocab as u64 * 4 + 1024);
    for batch in [2usize, 3, 17, 64, 130] {
        for (k, (row, p)) in probes.iter().enumerate() {
            let position = rng.random_range(0..batch);
            let mut values = Vec::new();
            let mut params = Vec::new();
            for r in 0..batch {
                if r == position {
                    values.extend_from_slice(row);
                    params.push(*p);
                } else {
                    values.extend(common::model_like_logits(&mut rng, vocab));
                    params.push(random_params(&mut rng, vocab as u32));
                }
            }
            for s in [&mut sampler, &mut chunked] {
                let out = s
                    .sample(HostLogits::F32(&values), vocab as u32, &params)
                    .unwrap();
                let got = out[position];
                assert_eq!(
                    got.token, alone[k].token,
                    "probe {k} batch {batch} position {position}"
                );
                assert_eq!(got.logprob.to_bits(), alone[k].logprob.to_bits());
                assert_eq!(got.kept, alone[k].kept);
            }
        }
    }
}

/// Seeds and steps change the draw; the same ones repeat it.
#[test]
fn seeds_and_steps_are_honoured() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let vocab = 64usize;
    let row = vec![0.0f32; vocab]; // uniform: every token equally likely
    let params: Vec<SamplingParams> = (0..256)
        .map(|i| SamplingParams::new(1.0).seed(i / 16).step(i % 16))
        .collect();
    let logits: Vec<f32> = row
        .iter()
        .cycle()
        .take(vocab * params.len())
        .cloned()
        .collect();
    let a = sampler
        .sample(HostLogits::F32(&logits), vocab as u32, &params)
        .unwrap();
    let b = sampler
        .sample(HostLogits::F32(&logits), vocab as u32, &params)
        .unwrap();
    assert_eq!(a, b);
    let distinct: std::collections::HashSet<u32> = a.iter().map(|r| r.token).collect();
    // 256 uniform draws over 64 tokens hit ~63 distinct tokens; a generator that
    // ignored seed or step would hit 1.
    assert!(distinct.len() > 40, "{}", distinct.len());
}

/// Engine path: logits in the caller's buffer (at an offset, f16 with an odd
/// vocab so rows start mid-word), recorded into the caller's encoder. The f32
/// cases put aligned rows (read four logits per load) and rows one element off
/// (read one at a time) against the host path: the same bits either way.
#[test]
fn engine_path_matches_host_path() {
    let Some(ctx) = common::gpu() else { return };
    for (dtype, vocab, offset) in [
        // 260: not a multiple of the 256-byte binding alignment.
        (LogitsDtype::F16, 1001usize, 260u64),
        (LogitsDtype::F32, 1024, 256),
        (LogitsDtype::F32, 1024, 260),
    ] {
        engine_case(&ctx, dtype, vocab, offset);
    }
}

fn engine_case(ctx: &rollcall::GpuContext, dtype: LogitsDtype, vocab: usize, offset: u64) {
    let context = format!("{dtype:?} vocab {vocab} offset {offset}");
    let esize = if dtype == LogitsDtype::F32 { 4 } else { 2 };
    // Small chunks: several dispatch records, some with unaligned bases.
    let sampler = Sampler::new(ctx)
        .unwrap()
        .with_max_chunk_bytes(4 * vocab as u64 * esize + 600);
    let mut host_sampler = Sampler::new(ctx).unwrap();
    let rows = 11usize;
    let mut rng = common::rng(3);
    let values: Vec<f32> = (0..rows)
        .flat_map(|_| common::model_like_logits(&mut rng, vocab))
        .collect();
    let halves: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
    let params: Vec<SamplingParams> = (0..rows)
        .map(|_| random_params(&mut rng, vocab as u32))
        .collect();
    let (host, raw): (HostLogits, &[u8]) = if dtype == LogitsDtype::F32 {
        (HostLogits::F32(&values), bytemuck::cast_slice(&values))
    } else {
        (HostLogits::F16(&halves), bytemuck::cast_slice(&halves))
    };
    let expected = host_sampler.sample(host, vocab as u32, &params).unwrap();

    let (tokens, results) =
        common::sample_engine(ctx, &sampler, offset, 0, raw, vocab as u32, dtype, &params);
    for r in 0..rows {
        assert_eq!(tokens[r], expected[r].token, "{context} row {r}");
        assert_eq!(
            f32::from_bits(results[r][0]).to_bits(),
            expected[r].logprob.to_bits(),
            "{context} row {r}"
        );
        assert_eq!(results[r][2], expected[r].kept, "{context} row {r}");
    }
}

#[test]
fn philox_known_answers_on_gpu() {
    let Some(ctx) = common::gpu() else { return };
    let kat = rollcall::internals::KNOWN_ANSWERS;
    let philox = rollcall::internals::PhiloxWords::new(&ctx).unwrap();
    let inputs: Vec<_> = kat.iter().map(|&(c, k, _)| (c, k)).collect();
    let words = philox.generate(&inputs).unwrap();
    for (w, (_, _, expected)) in words.iter().zip(kat) {
        assert_eq!(*w, expected);
    }
    // And random counters agree with the Rust twin word for word.
    let mut rng = common::rng(99);
    let inputs: Vec<([u32; 4], [u32; 2])> =
        (0..1000).map(|_| (rng.random(), rng.random())).collect();
    let words = philox.generate(&inputs).unwrap();
    for (w, (c, k)) in words.iter().zip(&inputs) {
        assert_eq!(*w, rollcall::internals::philox4x32_10(*c, *k));
    }
}

/// A device the engine opened itself, adopted as is.
#[test]
fn adopted_device_samples_like_an_owned_one() {
    let Some(owned) = common::gpu() else { return };
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let adopted = rollcall::GpuContext::from_device(device, queue);
    assert!(
        adopted.features().is_empty(),
        "opened with no optional feature"
    );
    let mut rng = common::rng(5);
    let logits = common::model_like_logits(&mut rng, 4 * 5000);
    let params: Vec<SamplingParams> = (0..4).map(|_| random_params(&mut rng, 5000)).collect();
    let mut tally = Tally::default();
    for ctx in [&adopted, &owned] {
        let out = Sampler::new(ctx)
            .unwrap()
            .sample(HostLogits::F32(&logits), 5000, &params)
            .unwrap();
        for r in 0..4 {
            let trace = cpu::sample_traced(
                HostLogits::F32(&logits[r * 5000..(r + 1) * 5000]),
                &params[r],
            )
            .unwrap();
            check_row(
                &out[r],
                &trace,
                &format!("{} row {r}", ctx.adapter_info().name),
                &mut tally,
            );
        }
    }
    assert_eq!(tally.rows, 8);
    // The GPU routes on a device without the subgroup feature (their
    // reductions in workgroup memory) and on one with it (across subgroups
    // where the adapter has them): the same bits. (The reductions alone, in
    // both forms, are checked in tests/reductions_gpu.rs.)
    let mixed = [params[0], params[1], SamplingParams::greedy(), params[3]];
    let [without, with] = [&adopted, &owned].map(|ctx| {
        Sampler::new(ctx)
            .unwrap()
            .with_cpu_routes(false)
            .sample(HostLogits::F32(&logits), 5000, &mixed)
            .unwrap()
    });
    common::assert_same_bits(&with, &without, "GPU routes with and without subgroups");
}

/// The gathered route (candidates in workgroup memory) and the streaming route
/// (radix rounds over the row) give bit-identical results: a sampler that can
/// gather only 64 tokens falls back where the default one gathers.
#[test]
fn gathered_and_streaming_routes_agree() {
    let Some(ctx) = common::gpu() else { return };
    let mut wide = Sampler::new(&ctx).unwrap();
    let mut narrow = Sampler::with_candidate_capacity(&ctx, 64).unwrap();
    let mut rng = common::rng(21);
    let vocab = 20_000usize;
    let rows = 48usize;
    let mut values = Vec::new();
    let mut params = Vec::new();
    for r in 0..rows {
        let kind = [0u32, 1, 6, 9][r % 4];
        values.extend(awkward_row(&mut rng, vocab, kind));
        let filters = [
            SamplingParams::new(0.9).top_k(50),
            SamplingParams::new(1.0).top_k(100).top_p(0.9),
            SamplingParams::new(0.7).top_p(0.8),
            SamplingParams::new(1.1).min_p(0.05),
            SamplingParams::new(1.0).top_k(150).min_p(0.01),
            SamplingParams::new(1.3).top_p(0.95).min_p(0.02),
        ];
        params.push(filters[r % filters.len()].seed(rng.random()).step(r as u64));
    }
    let a = wide
        .sample(HostLogits::F32(&values), vocab as u32, &params)
        .unwrap();
    let b = narrow
        .sample(HostLogits::F32(&values), vocab as u32, &params)
        .unwrap();
    for r in 0..rows {
        assert_eq!(a[r].token, b[r].token, "row {r} {:?}", params[r]);
        assert_eq!(a[r].kept, b[r].kept, "row {r}");
        assert_eq!(a[r].logprob.to_bits(), b[r].logprob.to_bits(), "row {r}");
    }
    // Both routes ran: some rows keep more tokens than the narrow sampler can
    // gather, and some keep fewer.
    assert!(a.iter().any(|r| r.kept > 64) && a.iter().any(|r| r.kept < 64));
}

/// Pipelines compile once per context: more samplers (or clones of the
/// context) reuse them.
#[test]
fn pipelines_are_built_once_per_context() {
    let Some(ctx) = common::gpu() else { return };
    let fresh = rollcall::GpuContext::from_device(ctx.device.clone(), ctx.queue.clone());
    assert_eq!(fresh.built_kernels(), 0);
    // A sampler starts with four kernels: the full drawing kernel, the
    // first pass on its own, the small kernel that draws plain and greedy
    // rows, and the top log-probabilities; the masked, top-nσ, raw and edit
    // variants are built when a batch first needs them.
    let _a = Sampler::new(&fresh).unwrap();
    assert_eq!(fresh.built_kernels(), 4);
    let _b = Sampler::new(&fresh.clone()).unwrap();
    let _c = Sampler::new(&fresh).unwrap();
    assert_eq!(fresh.built_kernels(), 4);
    let _d = Sampler::with_candidate_capacity(&fresh, 64).unwrap();
    assert_eq!(
        fresh.built_kernels(),
        8,
        "another capacity is another set of kernels"
    );
}

/// Every route gives the same bits (the first pass spread over one
/// workgroup per tile, run per row in its own dispatch, or fused into the
/// draw; plain and greedy rows then drawn by the small kernel, filtered rows
/// by the full one), and they match the twin: the token does not depend on
/// the route.
#[test]
fn every_route_gives_the_same_bits() {
    use rollcall::internals::TILE_TOKENS;
    let Some(ctx) = common::gpu() else { return };
    let mut routes = common::every_route(&ctx);
    let mut rng = common::rng(77);
    let mut tally = Tally::default();
    let mut unfiltered_rows = 0;
    let t = TILE_TOKENS as usize;
    for (rows, vocab, dtype) in [
        (3, 1000, LogitsDtype::F32),
        (4, t, LogitsDtype::F32),
        (4, t + 1, LogitsDtype::Bf16),
        (5, 3 * t - 7, LogitsDtype::F16),
        (40, 50_257, LogitsDtype::F32),
        (2, 128_256, LogitsDtype::F32),
        (1, 262_147, LogitsDtype::Bf16),
    ] {
        let mut values = Vec::with_capacity(rows * vocab);
        let mut params = Vec::with_capacity(rows);
        for r in 0..rows {
            let kind = rng.random_range(0..10);
            values.extend(awkward_row(&mut rng, vocab, kind));
            params.push(if r % 5 == 0 {
                SamplingParams::greedy()
            } else {
                random_params(&mut rng, vocab as u32)
            });
        }
        let logits = common::Owned::new(&values, dtype);
        let results: Vec<_> = routes
            .iter_mut()
            .map(|(mode, sampler)| {
                (
                    *mode,
                    sampler
                        .sample(logits.view(), vocab as u32, &params)
                        .unwrap(),
                )
            })
            .collect();
        let a = &results[0].1;
        for (mode, other) in &results[1..] {
            common::assert_same_bits(
                a,
                other,
                &format!(
                    "rows {rows} vocab {vocab} {dtype:?}: {:?} vs {mode:?}",
                    results[0].0
                ),
            );
        }
        // The rows without filters as a batch of their own (the small
        // finishing kernel draws it after a separate first pass): the same
        // bits as in the mixed batch, which the full kernel drew.
        let plain: Vec<usize> = (0..rows)
            .filter(|&r| common::is_unfiltered(&params[r], vocab as u32))
            .collect();
        let plain_values = common::pick_rows(&values, vocab, &plain);
        let plain_params: Vec<SamplingParams> = plain.iter().map(|&r| params[r]).collect();
        let plain_want: Vec<_> = plain.iter().map(|&r| a[r]).collect();
        let plain_logits = common::Owned::new(&plain_values, dtype);
        for (mode, sampler) in &mut routes {
            let got = sampler
                .sample(plain_logits.view(), vocab as u32, &plain_params)
                .unwrap();
            common::assert_same_bits(
                &plain_want,
                &got,
                &format!("unfiltered rows only, rows {rows} vocab {vocab} {dtype:?}, {mode:?}"),
            );
        }
        unfiltered_rows += plain.len();
        for r in 0..rows {
            let context = format!(
                "rows {rows} vocab {vocab} {dtype:?} row {r} {:?}",
                params[r]
            );
            let trace =
                cpu::sample_traced(logits.view().row(r, vocab).unwrap(), &params[r]).unwrap();
            check_row(&a[r], &trace, &context, &mut tally);
        }
    }
    assert!(tally.exact * 10 >= tally.rows * 9, "{tally:?}");
    assert!(
        unfiltered_rows >= 10,
        "only {unfiltered_rows} unfiltered rows"
    );
}
