//! Every f16 and bf16 bit pattern decodes on the GPU (the shared loads in
//! `shaders/logits.wgsl`, integer-only) to the f32 the `half` crate gives.
//! Read through the read-once kernel, whose row sum of one pattern among
//! zeros is the decoded value itself (x + 0 = x; only -0 comes back as +0):
//! one logit per row (the single-element load), and rows of 4 and 5 with the
//! pattern at each of the first four places (the group load: two words at
//! even elements, every row of vocab 4 and the even rows of vocab 5; four
//! single loads at odd ones). A sum cannot see where in a group a value
//! landed: the order of the group load is checked by the GPU-vs-twin tests
//! (`tests/sampling_gpu.rs`), which fail when its halves are swapped.

mod common;

use half::{bf16, f16};
use rollcall::internals::ReadOnce;
use rollcall::HostLogits;

fn assert_same(kind: &str, layout: &str, bits: u16, gpu: f32, want: f32) {
    let same = if want.is_nan() {
        gpu.is_nan()
    } else {
        // -0 sums to +0; every other value must come back bit for bit.
        gpu.to_bits() == want.to_bits() || (want == 0.0 && gpu == 0.0)
    };
    assert!(
        same,
        "{kind} bits {bits:#06x} ({layout}): gpu {gpu:e} ({:#010x}), want {want:e} ({:#010x})",
        gpu.to_bits(),
        want.to_bits()
    );
}

/// Rows of `vocab` logits, row r holding `patterns[r]` at `place` and zeros
/// elsewhere.
fn rows_with<T: Copy>(patterns: &[T], zero: T, vocab: usize, place: usize) -> Vec<T> {
    let mut rows = vec![zero; patterns.len() * vocab];
    for (r, &x) in patterns.iter().enumerate() {
        rows[r * vocab + place] = x;
    }
    rows
}

#[test]
fn every_half_pattern_decodes_exactly() {
    let Some(ctx) = common::gpu() else { return };
    let read_once = ReadOnce::new(&ctx).unwrap();
    let layouts = [
        (1, 0),
        (4, 0),
        (4, 1),
        (4, 2),
        (4, 3),
        (5, 0),
        (5, 1),
        (5, 2),
        (5, 3),
    ];
    // Two batches of 32 768 rows (one workgroup per row).
    for half in [0u16, 0x8000] {
        let bits: Vec<u16> = (half..=half + 0x7FFF).collect();
        let f16s: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let bf16s: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        for (vocab, place) in layouts {
            let layout = format!("vocab {vocab}, place {place}");
            let check = |kind: &str, rows: HostLogits<'_>, want: &mut dyn Iterator<Item = f32>| {
                let sums = read_once.sum_rows(rows, vocab as u32).unwrap();
                for ((&b, want), gpu) in bits.iter().zip(want).zip(sums) {
                    assert_same(kind, &layout, b, gpu, want);
                }
            };
            let rows = rows_with(&f16s, f16::ZERO, vocab, place);
            check(
                "f16",
                HostLogits::F16(&rows),
                &mut f16s.iter().map(|x| x.to_f32()),
            );
            let rows = rows_with(&bf16s, bf16::ZERO, vocab, place);
            check(
                "bf16",
                HostLogits::Bf16(&rows),
                &mut bf16s.iter().map(|x| x.to_f32()),
            );
        }
    }
}
