//! The order of work on the queue burn and rollcall share. burn records its
//! kernels lazily; `buffer_of` (cubecl's `get_resource`) and
//! `Device::flush` submit them, so rollcall's submit comes after the work
//! that writes the logits, and burn's next submit comes after rollcall's
//! writes to a tensor burn then reads. Each step puts the arg-max at a new
//! token in a freshly allocated tensor (burn's pool reuses memory, so a
//! read before the write would see an earlier step's logits), samples it
//! greedily with rollcall, copies the tokens into a burn tensor, and has
//! burn compute with them.

use burn::backend::Cube;
use burn::prelude::*;
use rollcall::{GpuContext, LogitsBinding, LogitsDtype, SampleBatch, Sampler, SamplingParams};
use rollcall_burn_decode::{buffer_of, cube};

#[test]
fn rollcall_reads_burns_latest_writes_and_burn_reads_rollcalls() {
    let (device, setup) = Device::wgpu_options()
        .init_with_setup()
        .expect("burn opens a wgpu device (lavapipe in CI)");
    let ctx = GpuContext::from_device(setup.device.clone(), setup.queue.clone());
    let sampler = Sampler::new(&ctx).unwrap();
    let (rows, vocab) = (5usize, 3_001usize);
    let mut batch = SampleBatch::new(&ctx, rows as u32).unwrap();
    batch
        .set_params(&vec![SamplingParams::greedy(); rows])
        .unwrap();
    for step in 0..6usize {
        let targets: Vec<i32> = (0..rows)
            .map(|r| ((step * 977 + r * 131 + 7) % vocab) as i32)
            .collect();
        // logits = (step + 1) · one_hot(target): recorded, not yet run.
        let target =
            Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [rows, 1]), &device)
                .repeat_dim(1, vocab);
        let ids = Tensor::<1, Int>::arange(0..vocab as i64, &device)
            .reshape([1, vocab])
            .repeat_dim(0, rows);
        let logits = ids.equal(target).float() * (step as f32 + 1.0);
        let logits = cube(logits).unwrap();
        let next = cube(Tensor::<2, Int>::zeros([rows, 1], &device)).unwrap();
        let (logits_buffer, logits_pin) = buffer_of(&logits).unwrap();
        let (next_buffer, next_pin) = buffer_of(&next).unwrap();
        device.flush().unwrap();

        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        let binding = LogitsBinding {
            buffer: &logits_buffer.buffer,
            offset: logits_buffer.offset,
            rows: rows as u32,
            vocab: vocab as u32,
            dtype: LogitsDtype::F32,
        };
        sampler.encode(&mut encoder, &binding, &mut batch).unwrap();
        encoder.copy_buffer_to_buffer(
            batch.tokens(),
            0,
            &next_buffer.buffer,
            next_buffer.offset,
            (rows * 4) as u64,
        );
        ctx.submit(encoder.finish());
        drop((logits_pin, next_pin, logits));

        // burn's next kernel reads what rollcall wrote.
        let next = Tensor::<2, Int>::from_primitive::<Cube>(next) * 2 + 1;
        let got: Vec<i32> = next.into_data().try_to_vec::<i32>().unwrap();
        let want: Vec<i32> = targets.iter().map(|t| t * 2 + 1).collect();
        assert_eq!(got, want, "step {step}");
    }
}
