//! Device limits and device errors through the public API: requests past the
//! adapter's limits are typed errors before the device is asked, a device
//! error inside a host call or an engine submit comes back as `Err`, and a
//! device opened with small limits still samples (in chunks) or refuses with
//! a typed error. Never a panic. Fails without an adapter unless
//! ROLLCALL_ALLOW_NO_GPU=1.
// These play an engine that owns its device and submits on its own.
#![allow(clippy::disallowed_methods)]

mod common;

use rollcall::compact::{CompactScratch, Compactor};
use rollcall::tail::{Estimator, TailStats};
use rollcall::voting::{Allocation, ReplayEngine, Scheduler};
use rollcall::voting::{RoundVotes, Segment, VoteTables};
use rollcall::voting::{RuleConfig, StopRule};
use rollcall::{
    sampling::cpu, Error, GpuContext, HostLogits, LogitsBinding, LogitsDtype, SampleBatch, Sampler,
    SamplingParams,
};
use wgpu::util::DeviceExt;

/// Whether `result` is a refusal for size (past a limit, or out of memory).
fn refused_for_size<T: std::fmt::Debug>(result: &rollcall::Result<T>) -> bool {
    matches!(
        result,
        Err(Error::TooLarge { .. } | Error::OutOfMemory { .. })
    )
}

/// A fresh context on its own device (the tests that break things must not
/// break the shared one).
fn owned_context() -> Option<GpuContext> {
    common::gpu()?;
    Some(GpuContext::new().expect("a second device on the adapter"))
}

/// A device opened by "an engine" with `limits`, adopted by rollcall. Its
/// uncaptured-error handler is wgpu's default (a panic): rollcall's host calls
/// must catch their own errors.
fn engine_device(limits: wgpu::Limits) -> Option<GpuContext> {
    common::gpu()?;
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&Default::default())).expect("an adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("small engine device"),
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device with small limits");
    Some(GpuContext::from_device(device, queue))
}

/// WebGPU's default limits with 1 MiB storage bindings in 4 MiB buffers.
fn small_limits() -> wgpu::Limits {
    wgpu::Limits {
        max_storage_buffer_binding_size: 1 << 20,
        max_buffer_size: 4 << 20,
        ..wgpu::Limits::default()
    }
}

fn logits(rows: usize, vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = common::rng(seed);
    (0..rows)
        .flat_map(|_| common::model_like_logits(&mut rng, vocab))
        .collect()
}

#[test]
fn allocations_past_the_limits_are_typed_errors() {
    let Some(ctx) = common::gpu() else { return };
    let limits = ctx.limits();

    // The parameters of every row, bound whole.
    let err = SampleBatch::new(&ctx, u32::MAX).map(|_| ());
    assert!(
        matches!(err, Err(Error::TooLarge { bytes, limit, .. })
            if bytes == u64::from(u32::MAX) * SampleBatch::PARAMS_BYTES_PER_ROW
                && limit <= limits.max_buffer_size),
        "{err:?}"
    );

    // 256 answers × 8 bytes per prompt: 32 GiB of tables.
    let err = VoteTables::new(&ctx, 1 << 24, 256).map(|_| ());
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
    // More than a binding holds, less than a buffer: refused as well.
    let prompts = (limits.max_storage_buffer_binding_size / 2048 + 1).min(u64::from(u32::MAX));
    let err = VoteTables::new(&ctx, prompts as u32, 256).map(|_| ());
    assert!(refused_for_size(&err), "{err:?}");
    let config = RuleConfig {
        rule: StopRule::CONSOL_SPRT,
        min_votes: 1,
        max_votes: 8,
    };
    let err = Scheduler::new(&ctx, 1 << 24, 256, config, Allocation::Chunk(1)).map(|_| ());
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");

    // Top-k rows past a binding: 4 bytes × 16 384 per segment, no rewards.
    let mut tail = TailStats::new(&ctx).unwrap();
    let segments = limits.max_storage_buffer_binding_size / (4 * 16_384) + 1;
    let offsets = vec![0u32; segments as usize + 1];
    let err = tail.top_k(&[], &offsets, 16_384);
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
    // The kernel object still works afterwards.
    let top = tail.top_k(&[1.0, 3.0, 2.0], &[0, 3], 2).unwrap();
    assert_eq!(top.indices, vec![1, 2]);

    // A host sampling call whose batch needs more than a binding holds.
    let rows = (limits.max_storage_buffer_binding_size / 48 + 1) as usize;
    let logits = vec![0.0f32; rows];
    let params = vec![SamplingParams::greedy(); rows];
    let mut sampler = Sampler::new(&ctx).unwrap();
    let err = sampler.sample(HostLogits::F32(&logits), 1, &params);
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
    drop((logits, params));
    // The sampler still works afterwards.
    let out = sampler
        .sample(
            HostLogits::F32(&[0.0, 5.0, 1.0]),
            3,
            &[SamplingParams::greedy()],
        )
        .unwrap();
    assert_eq!(out[0].token, 1);
}

#[test]
fn a_device_error_in_an_engine_submit_comes_back_from_wait() {
    let Some(ctx) = owned_context() else { return };
    let sampler = Sampler::new(&ctx).unwrap();
    let mut batch = SampleBatch::new(&ctx, 2).unwrap();
    batch.set_params(&[SamplingParams::new(1.0); 2]).unwrap();
    // Logits the kernels cannot bind: no STORAGE usage.
    let unbindable = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("logits without storage usage"),
            contents: bytemuck::cast_slice(&[0.0f32; 2 * 64]),
            usage: wgpu::BufferUsages::COPY_SRC,
        });
    let binding = LogitsBinding {
        buffer: &unbindable,
        offset: 0,
        rows: 2,
        vocab: 64,
        dtype: LogitsDtype::F32,
    };
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    sampler.encode(&mut encoder, &binding, &mut batch).unwrap();
    ctx.submit(encoder.finish());
    let err = ctx.wait();
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
    // Reported once: the next wait is clean.
    ctx.wait().unwrap();

    // A batch buffer destroyed under the engine path.
    let storage = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("logits"),
            contents: bytemuck::cast_slice(&[0.0f32; 2 * 64]),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let binding = LogitsBinding {
        buffer: &storage,
        ..binding
    };
    batch.tokens().destroy();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    sampler.encode(&mut encoder, &binding, &mut batch).unwrap();
    ctx.submit(encoder.finish());
    let err = ctx.wait();
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
}

#[test]
fn a_device_error_inside_a_host_call_is_an_err() {
    let Some(ctx) = owned_context() else { return };

    // Vote tables whose table buffer is gone.
    let mut tables = VoteTables::new(&ctx, 4, 4).unwrap();
    let segments = [Segment {
        prompt: 1,
        start: 0,
        count: 2,
    }];
    let round = RoundVotes {
        segments: &segments,
        answers: &[7, 7],
        tokens: None,
    };
    tables.count(&round).unwrap();
    tables.tables_buffer().destroy();
    let err = tables.count(&round);
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
    let err = tables.read().map(|_| ());
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
    let config = RuleConfig {
        rule: StopRule::CONSOL_SPRT,
        min_votes: 1,
        max_votes: 8,
    };
    let err = tables.decide(&config, &[0, 1]).map(|_| ());
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");

    // Tail statistics whose advantages buffer is gone: the next estimate of
    // a batch that fits reuses it.
    let mut tail = TailStats::new(&ctx).unwrap();
    let rewards = [0.1f32, 0.9, 0.4, 0.7];
    let est = Estimator::ExpectedMax { n: 2 };
    tail.estimate(&rewards, &[0, 4], est).unwrap();
    tail.advantages_buffer().unwrap().destroy();
    let err = tail.estimate(&rewards, &[0, 4], est).map(|_| ());
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");

    // Every host call on a destroyed device is an error, not a panic.
    let mut sampler = Sampler::new(&ctx).unwrap();
    let compactor = Compactor::new(&ctx).unwrap();
    ctx.device.destroy();
    let err = sampler.sample(HostLogits::F32(&[0.0; 8]), 8, &[SamplingParams::greedy()]);
    assert!(err.is_err(), "{err:?}");
    let err = compactor.compact(&[1, 0, 1]);
    assert!(err.is_err(), "{err:?}");
    let err = tail.order(&rewards, &[0, 4]);
    assert!(err.is_err(), "{err:?}");
}

#[test]
fn tail_calls_before_an_upload_say_so() {
    let Some(ctx) = common::gpu() else { return };
    let tail = TailStats::new(&ctx).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = tail.encode_estimate(&mut encoder, Estimator::Grpo { eps: 1e-4 });
    assert!(matches!(err, Err(Error::NothingUploaded(_))), "{err:?}");
}

#[test]
fn kernels_a_device_cannot_run_are_refused_when_built() {
    // Downlevel devices bind 4 storage buffers per stage; the kernels need
    // more. Building them is an error, not a panic in the engine's handler.
    let Some(ctx) = engine_device(wgpu::Limits::downlevel_defaults()) else {
        return;
    };
    let err = Sampler::new(&ctx).map(|_| ());
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
    let err = Compactor::new(&ctx).map(|_| ());
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
    // Nothing broken was cached: the same error again.
    let err = Sampler::new(&ctx).map(|_| ());
    assert!(matches!(err, Err(Error::Device(_))), "{err:?}");
    assert_eq!(ctx.built_kernels(), 0);
}

#[test]
fn a_device_with_small_limits_samples_in_chunks() {
    let Some(ctx) = engine_device(small_limits()) else {
        return;
    };
    assert_eq!(ctx.limits().max_storage_buffer_binding_size, 1 << 20);
    let mut sampler = Sampler::new(&ctx).unwrap();
    // 8 MB of logits: twice the largest buffer, eight bindings.
    let (rows, vocab) = (64usize, 32_000usize);
    let values = logits(rows, vocab, 11);
    let params: Vec<SamplingParams> = (0..rows as u64)
        .map(|r| match r % 4 {
            0 => SamplingParams::greedy(),
            1 => SamplingParams::new(0.8).seed(r),
            2 => SamplingParams::new(0.7).top_k(40).seed(r),
            _ => SamplingParams::new(1.0).top_p(0.9).min_p(0.02).seed(r),
        })
        .collect();
    let got = sampler
        .sample(HostLogits::F32(&values), vocab as u32, &params)
        .unwrap();
    // The same bits as on the adapter's own limits (one binding there,
    // eight uploads of 8 rows here).
    let full = common::gpu().expect("the shared context");
    let want = Sampler::new(&full)
        .unwrap()
        .sample(HostLogits::F32(&values), vocab as u32, &params)
        .unwrap();
    common::assert_same_bits(&want, &got, "small limits");
    // And the twin's tokens.
    let twin = cpu::sample(HostLogits::F32(&values), vocab as u32, &params).unwrap();
    let agree = twin
        .iter()
        .zip(&got)
        .filter(|(a, b)| a.token == b.token)
        .count();
    assert!(agree + 2 >= rows, "{agree} of {rows} tokens as the twin's");

    // A row larger than a binding, and a batch whose parameters pass one.
    let wide = vec![0.0f32; 300_000];
    let err = sampler.sample(HostLogits::F32(&wide), 300_000, &[SamplingParams::greedy()]);
    assert!(matches!(err, Err(Error::RowTooLarge { .. })), "{err:?}");
    let rows = (1 << 20) / 48 + 1;
    let err = sampler.sample(
        HostLogits::F32(&vec![0.0; rows]),
        1,
        &vec![SamplingParams::greedy(); rows],
    );
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
    assert!(matches!(
        SampleBatch::new(&ctx, rows as u32),
        Err(Error::TooLarge { .. })
    ));
    // And the sampler still works.
    let got = sampler
        .sample(
            HostLogits::F32(&values[..vocab]),
            vocab as u32,
            &params[..1],
        )
        .unwrap();
    common::assert_same_bits(&want[..1], &got, "after refusals");
}

#[test]
fn a_device_with_small_limits_runs_the_other_kernels_or_refuses() {
    let Some(ctx) = engine_device(small_limits()) else {
        return;
    };

    // Compaction: scratch for 2^32 flags is 2 MiB of block offsets, past the
    // binding; flags past the binding are refused on the host path too.
    assert!(matches!(
        CompactScratch::new(&ctx, u32::MAX),
        Err(Error::TooLarge { .. })
    ));
    let compactor = Compactor::new(&ctx).unwrap();
    let keep: Vec<u32> = (0..100_000u32).map(|i| u32::from(i % 3 == 0)).collect();
    assert_eq!(
        compactor.compact(&keep).unwrap(),
        rollcall::compact::cpu::compact(&keep)
    );
    let err = compactor.compact(&vec![1; (1 << 18) + 1]);
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");

    // Voting: tables within the binding work, past it are refused.
    assert!(matches!(
        VoteTables::new(&ctx, 1 << 16, 16).map(|_| ()),
        Err(Error::TooLarge { .. })
    ));
    let config = RuleConfig {
        rule: StopRule::CONSOL_SPRT,
        min_votes: 1,
        max_votes: 12,
    };
    let answers: Vec<Vec<u32>> = (0..500u32)
        .map(|p| (0..12).map(|i| (p + i / 3) % 4).collect())
        .collect();
    let mut scheduler = Scheduler::new(&ctx, 500, 16, config, Allocation::Chunk(2)).unwrap();
    let gpu = scheduler
        .run(&mut ReplayEngine::new(answers.clone()))
        .unwrap();
    let twin = rollcall::voting::cpu::run(
        500,
        16,
        config,
        Allocation::Chunk(2),
        &mut ReplayEngine::new(answers),
    )
    .unwrap();
    assert_eq!(gpu.rollouts, twin.rollouts);
    assert_eq!(gpu.rewards, twin.rewards);

    // Tail statistics: a batch within the binding, and one past it.
    let mut tail = TailStats::new(&ctx).unwrap();
    let rewards: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 1000) as f32).collect();
    let offsets = [0u32, 1000, 4096];
    assert_eq!(
        tail.order(&rewards, &offsets).unwrap(),
        rollcall::tail::cpu::order(&rewards, &offsets).unwrap()
    );
    let many = vec![0.5f32; (1 << 18) + 1];
    let offsets: Vec<u32> = (0..=many.len() as u32)
        .step_by(1024)
        .chain([many.len() as u32])
        .collect();
    let err = tail.estimate(&many, &offsets, Estimator::Grpo { eps: 1e-4 });
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
}

#[test]
fn edge_inputs_are_typed_errors_not_panics() {
    let Some(ctx) = common::gpu() else { return };

    // A logits offset whose end passes u64.
    let sampler = Sampler::new(&ctx).unwrap();
    let mut batch = SampleBatch::new(&ctx, 1).unwrap();
    batch.set_params(&[SamplingParams::greedy()]).unwrap();
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &[0u8; 64],
            usage: wgpu::BufferUsages::STORAGE,
        });
    let binding = LogitsBinding {
        buffer: &buffer,
        offset: u64::MAX - 3,
        rows: 1,
        vocab: 16,
        dtype: LogitsDtype::F32,
    };
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = sampler.encode(&mut encoder, &binding, &mut batch);
    assert!(
        matches!(
            err,
            Err(Error::BufferTooSmall {
                needed: u64::MAX,
                ..
            })
        ),
        "{err:?}"
    );

    // Reading back more than a buffer holds, or nothing.
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let err = ctx.read_buffer(&readback, 32);
    assert!(
        matches!(
            err,
            Err(Error::BufferTooSmall {
                needed: 32,
                got: 16,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(ctx.read_buffer(&readback, 0).unwrap().is_empty());

    // The scheduler's engine path: a live prompt past the tables.
    let config = RuleConfig {
        rule: StopRule::CONSOL_SPRT,
        min_votes: 1,
        max_votes: 8,
    };
    let mut scheduler = Scheduler::new(&ctx, 2, 4, config, Allocation::Chunk(1)).unwrap();
    let round = RoundVotes {
        segments: &[],
        answers: &[],
        tokens: None,
    };
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let err = scheduler.encode_round(&mut encoder, &round, &[0, 2], true);
    assert!(
        matches!(
            err,
            Err(Error::PromptOutOfRange {
                prompt: 2,
                prompts: 2
            })
        ),
        "{err:?}"
    );

    // An engine that returns the wrong number of rollouts.
    struct Short;
    impl rollcall::voting::RolloutEngine for Short {
        fn generate(
            &mut self,
            _prompts: &[u32],
            _counts: &[u32],
        ) -> rollcall::Result<Vec<rollcall::voting::Rollout>> {
            Ok(vec![Default::default()])
        }
    }
    let err = scheduler.run(&mut Short).map(|_| ());
    assert!(
        matches!(
            err,
            Err(Error::LengthMismatch {
                expected: 2,
                got: 1,
                ..
            })
        ),
        "{err:?}"
    );
    // Recorded answers: a prompt that has none, or too few.
    use rollcall::voting::RolloutEngine;
    let mut replay = ReplayEngine::new(vec![vec![1], vec![2]]);
    assert!(matches!(
        replay.generate(&[2], &[1]),
        Err(Error::PromptOutOfRange {
            prompt: 2,
            prompts: 2
        })
    ));
    assert!(matches!(replay.generate(&[0], &[2]), Err(Error::Data(_))));

    // Reward segments: overlap names the later segment; past the answers.
    let mut tables = VoteTables::new(&ctx, 3, 4).unwrap();
    let seg = |prompt, start, count| Segment {
        prompt,
        start,
        count,
    };
    let segments = [seg(0, 4, 2), seg(1, 0, 2), seg(2, 1, 2)];
    let err = tables.rewards(&segments, &[0; 6], Some(&[0, 0, 0]), None, 1e-4);
    assert!(
        matches!(err, Err(Error::InvalidSegment { segment: 2, .. })),
        "{err:?}"
    );
    let err = tables.rewards(&segments[..2], &[0; 6], Some(&[0, 0]), None, 1e-4);
    assert!(matches!(err, Err(Error::LengthMismatch { .. })), "{err:?}");

    // The twins of the rewards.
    use rollcall::voting::rewards::{group_advantages, majority_rewards};
    assert!(matches!(
        majority_rewards(&[seg(0, 2, 2)], &[0; 3], &[0]),
        Err(Error::InvalidSegment { segment: 0, .. })
    ));
    assert!(matches!(
        majority_rewards(&[seg(0, 0, 1), seg(3, 1, 1)], &[0; 2], &[0]),
        Err(Error::InvalidSegment { segment: 1, .. })
    ));
    assert!(matches!(
        group_advantages(&[seg(0, u32::MAX, 2)], &[0.0; 2], 1e-4),
        Err(Error::InvalidSegment { segment: 0, .. })
    ));

    // Top-k's k is an argument, not an estimator.
    let mut tail = TailStats::new(&ctx).unwrap();
    assert!(matches!(
        tail.top_k(&[1.0], &[0, 1], 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        rollcall::tail::cpu::top_k(&[1.0], &[0, 1], 0),
        Err(Error::InvalidArgument(_))
    ));

    // The rules' twin on counts near u32::MAX (u32 arithmetic as the
    // shader's), and the posteriors' edges.
    let votes = rollcall::voting::PromptVotes {
        total: 3,
        distinct: 2,
        run_answer: 1,
        run_length: u32::MAX,
        ..Default::default()
    };
    let table = [[1, u32::MAX], [2, 5]];
    for rule in [
        StopRule::Predictive {
            prior: 1.0,
            delta: 0.05,
        },
        StopRule::CONSOL_SPRT,
    ] {
        let config = RuleConfig {
            rule,
            min_votes: 1,
            max_votes: 8,
        };
        rollcall::voting::cpu::decide(&config, &votes, &table).unwrap();
    }
    use rollcall::voting::posterior::{beta_leader_probability, dirichlet_mode_probability};
    assert!(beta_leader_probability(u32::MAX, 1, 1.0).is_finite());
    assert!(dirichlet_mode_probability(&[], 0).is_nan());
}
