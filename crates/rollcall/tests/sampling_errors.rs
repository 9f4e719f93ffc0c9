//! Bad input gets a typed error naming the problem, on the GPU path (before
//! any GPU work) and on the CPU twin alike.
// These play an engine that submits on its own queue, uncounted.
#![allow(clippy::disallowed_methods)]

mod common;

use rollcall::sampling::cpu;
use rollcall::{
    Error, HostLogits, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams,
};
use wgpu::util::DeviceExt;

/// A bad parameter set and the check that its error is the right one.
type BadCase = (SamplingParams, fn(&Error) -> bool);

fn bad_param_cases() -> Vec<BadCase> {
    let ok = SamplingParams::new(1.0);
    vec![
        (SamplingParams::new(-0.5), |e| {
            matches!(e, Error::InvalidTemperature { row: 1, .. })
        }),
        (SamplingParams::new(f32::NAN), |e| {
            matches!(e, Error::InvalidTemperature { row: 1, .. })
        }),
        (SamplingParams::new(f32::INFINITY), |e| {
            matches!(e, Error::InvalidTemperature { row: 1, .. })
        }),
        (ok.top_p(-0.01), |e| {
            matches!(e, Error::InvalidTopP { row: 1, .. })
        }),
        (ok.top_p(1.01), |e| {
            matches!(e, Error::InvalidTopP { row: 1, .. })
        }),
        (ok.top_p(f32::NAN), |e| {
            matches!(e, Error::InvalidTopP { row: 1, .. })
        }),
        (ok.min_p(-0.1), |e| {
            matches!(e, Error::InvalidMinP { row: 1, .. })
        }),
        (ok.min_p(1.5), |e| {
            matches!(e, Error::InvalidMinP { row: 1, .. })
        }),
        (ok.min_p(f32::NAN), |e| {
            matches!(e, Error::InvalidMinP { row: 1, .. })
        }),
    ]
}

#[test]
fn bad_parameters_are_rejected_by_the_cpu_twin() {
    let logits = vec![0.0f32; 2 * 10];
    for (bad, is_expected) in bad_param_cases() {
        let err = cpu::sample(
            HostLogits::F32(&logits),
            10,
            &[SamplingParams::new(1.0), bad],
        )
        .unwrap_err();
        assert!(is_expected(&err), "{bad:?} gave {err}");
        assert!(err.to_string().contains("row 1"), "{err}");
    }
}

#[test]
fn bad_shapes_are_rejected_by_the_cpu_twin() {
    let logits = vec![0.0f32; 20];
    let one = [SamplingParams::new(1.0)];
    assert!(matches!(
        cpu::sample(HostLogits::F32(&logits), 0, &one),
        Err(Error::EmptyVocab)
    ));
    assert!(matches!(
        cpu::sample(HostLogits::F32(&logits), 10, &one),
        Err(Error::ParamCountMismatch {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        cpu::sample(HostLogits::F32(&logits), 7, &one),
        Err(Error::LogitsLengthMismatch {
            expected: 7,
            got: 20
        })
    ));
}

#[test]
fn bad_input_is_rejected_on_the_gpu_path() {
    let Some(ctx) = common::gpu() else { return };
    let mut sampler = Sampler::new(&ctx).unwrap();
    let logits = vec![0.0f32; 2 * 10];
    for (bad, is_expected) in bad_param_cases() {
        let err = sampler
            .sample(
                HostLogits::F32(&logits),
                10,
                &[SamplingParams::new(1.0), bad],
            )
            .unwrap_err();
        assert!(is_expected(&err), "{bad:?} gave {err}");
    }
    let one = [SamplingParams::new(1.0)];
    assert!(matches!(
        sampler.sample(HostLogits::F32(&logits), 0, &one),
        Err(Error::EmptyVocab)
    ));
    assert!(matches!(
        sampler.sample(HostLogits::F32(&logits), 10, &one),
        Err(Error::ParamCountMismatch { .. })
    ));
    assert!(matches!(
        sampler.sample(HostLogits::F32(&logits), 3, &one),
        Err(Error::LogitsLengthMismatch { .. })
    ));
    // Rows 0 is fine and does nothing.
    assert!(sampler
        .sample(HostLogits::F32(&[]), 10, &[])
        .unwrap()
        .is_empty());

    // Engine path: batch capacity, row count, buffer size, offset alignment.
    let mut batch = SampleBatch::new(&ctx, 4).unwrap();
    assert!(matches!(
        batch.set_params(&[SamplingParams::new(1.0); 5]),
        Err(Error::BatchCapacity {
            capacity: 4,
            rows: 5
        })
    ));
    assert!(matches!(
        batch.set_params(&[SamplingParams::new(1.0), SamplingParams::new(-1.0)]),
        Err(Error::InvalidTemperature { row: 1, .. })
    ));
    batch.set_params(&[SamplingParams::new(1.0); 3]).unwrap();
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &[0u8; 3 * 10 * 4],
            usage: wgpu::BufferUsages::STORAGE,
        });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let binding = |rows, vocab, offset, dtype| LogitsBinding {
        buffer: &buffer,
        offset,
        rows,
        vocab,
        dtype,
    };
    let err = sampler
        .encode(
            &mut encoder,
            &binding(2, 10, 0, LogitsDtype::F32),
            &mut batch,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ParamCountMismatch {
                expected: 2,
                got: 3
            }
        ),
        "{err}"
    );
    let err = sampler
        .encode(
            &mut encoder,
            &binding(3, 11, 0, LogitsDtype::F32),
            &mut batch,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferTooSmall {
                needed: 132,
                got: 120,
                ..
            }
        ),
        "{err}"
    );
    let err = sampler
        .encode(
            &mut encoder,
            &binding(3, 10, 2, LogitsDtype::F16),
            &mut batch,
        )
        .unwrap_err();
    assert!(matches!(err, Error::MisalignedOffset(2)), "{err}");
    let err = sampler
        .encode(
            &mut encoder,
            &binding(3, 0, 0, LogitsDtype::F32),
            &mut batch,
        )
        .unwrap_err();
    assert!(matches!(err, Error::EmptyVocab), "{err}");
    // Nothing was recorded by the failed calls, and a good call still works.
    sampler
        .encode(
            &mut encoder,
            &binding(3, 10, 0, LogitsDtype::F32),
            &mut batch,
        )
        .unwrap();
    ctx.queue.submit([encoder.finish()]);
}
