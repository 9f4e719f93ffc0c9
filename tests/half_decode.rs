//! Every f16 and bf16 bit pattern decodes on the GPU (the shared load in
//! `shaders/logits.wgsl`, integer-only) to the f32 the `half` crate gives.
//! Read through the read-once kernel with one logit per row, whose row sum is
//! then the decoded value itself (0 + x = x; only -0 comes back as +0).

mod common;

use half::{bf16, f16};
use rollcall::reference::ReadOnce;
use rollcall::HostLogits;

fn assert_same(kind: &str, bits: u16, gpu: f32, want: f32) {
    let same = if want.is_nan() {
        gpu.is_nan()
    } else {
        // -0 sums to +0; every other value must come back bit for bit.
        gpu.to_bits() == want.to_bits() || (want == 0.0 && gpu == 0.0)
    };
    assert!(
        same,
        "{kind} bits {bits:#06x}: gpu {gpu:e} ({:#010x}), want {want:e} ({:#010x})",
        gpu.to_bits(),
        want.to_bits()
    );
}

#[test]
fn every_half_pattern_decodes_exactly() {
    let Some(ctx) = common::gpu() else { return };
    let read_once = ReadOnce::new(&ctx).unwrap();
    // Two batches of 32 768 rows (one workgroup per row).
    for half in [0u16, 0x8000] {
        let bits: Vec<u16> = (half..=half + 0x7FFF).collect();
        let f16s: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let sums = read_once.sum_rows(HostLogits::F16(&f16s), 1).unwrap();
        for ((&b, x), gpu) in bits.iter().zip(&f16s).zip(sums) {
            assert_same("f16", b, gpu, x.to_f32());
        }
        let bf16s: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        let sums = read_once.sum_rows(HostLogits::Bf16(&bf16s), 1).unwrap();
        for ((&b, x), gpu) in bits.iter().zip(&bf16s).zip(sums) {
            assert_same("bf16", b, gpu, x.to_f32());
        }
    }
}
