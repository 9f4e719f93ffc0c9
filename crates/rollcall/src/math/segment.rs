//! The segment kernels' fixed shape (`shaders/shared/segment.wgsl`): how a
//! float sum, scan or product over a run of a segment's values is split and
//! folded, whatever the hardware. The per-invocation kernels run it serially,
//! the workgroup kernels a lane a block, and the twins here: the same
//! operations in the same order, so every route gives the same bits.
//!
//! For a run of `len` values, `block = ⌈len / 64⌉` and lane j owns the
//! positions `[j·block, min((j+1)·block, len))` (the last lanes may own
//! none).
//! - Sum: each lane adds its block left to right from 0.0; the 64 lane
//!   totals are folded as the complete binary tree, neighbours first
//!   ([`tree_fold`]).
//! - Scan: lane offsets are the lane totals added left to right
//!   (`offset_0 = first`, `offset_{j+1} = offset_j + total_j`); within its
//!   block each lane runs left to right from its offset.
//! - Product scan: the same with products (lane products from 1.0).
//!
//! Integer counts, minima and maxima are order-free and take any order.

use super::fold::tree_fold;
use std::ops::Range;

/// Lanes of the shape (`SEGMENT_LANES` in the shader): the workgroup width
/// of the kernels that run it a lane a block.
pub const SEGMENT_LANES: usize = 64;

/// Values each lane owns in a run of `len`: `⌈len / 64⌉`.
pub fn lane_block(len: usize) -> usize {
    len.div_ceil(SEGMENT_LANES)
}

/// The positions lane `lane` owns in a run of `len` (possibly empty).
pub fn lane_span(len: usize, lane: usize) -> Range<usize> {
    let block = lane_block(len);
    (lane * block).min(len)..((lane + 1) * block).min(len)
}

/// Each lane's block of `value(0..len)`, combined by `op` left to right
/// from `identity`.
fn lane_folds(
    len: usize,
    identity: f32,
    value: impl Fn(usize) -> f32,
    op: impl Fn(f32, f32) -> f32,
) -> [f32; SEGMENT_LANES] {
    let mut totals = [identity; SEGMENT_LANES];
    for (lane, total) in totals.iter_mut().enumerate() {
        for q in lane_span(len, lane) {
            *total = op(*total, value(q));
        }
    }
    totals
}

/// Each lane's total of its block of `value(0..len)`, added left to right
/// from 0.0.
pub fn lane_totals(len: usize, value: impl Fn(usize) -> f32) -> [f32; SEGMENT_LANES] {
    lane_folds(len, 0.0, value, |a, b| a + b)
}

/// The sum of `value(0..len)` in the shape: lane totals, then the tree.
pub fn segment_sum(len: usize, value: impl Fn(usize) -> f32) -> f32 {
    tree_fold(&lane_totals(len, value), |a, b| a + b)
}

/// The values before each position, in the shape of a scan combining by
/// `op`: lane offsets from `first` left to right over the lane folds (from
/// `identity`), then each block left to right from its offset.
fn scan(
    len: usize,
    first: f32,
    identity: f32,
    value: impl Fn(usize) -> f32,
    op: impl Fn(f32, f32) -> f32 + Copy,
) -> Vec<f32> {
    let totals = lane_folds(len, identity, &value, op);
    let mut out = Vec::with_capacity(len);
    let mut offset = first;
    for (lane, total) in totals.iter().enumerate() {
        let mut run = offset;
        for q in lane_span(len, lane) {
            out.push(run);
            run = op(run, value(q));
        }
        offset = op(offset, *total);
    }
    out
}

/// Exclusive prefix sums of `value(0..len)` in the shape: position q gets
/// the sum of the values before it (lane offsets left to right, then each
/// block left to right). The sum through q is `scan[q] + value(q)`.
pub fn segment_scan(len: usize, value: impl Fn(usize) -> f32) -> Vec<f32> {
    scan(len, 0.0, 0.0, value, |a, b| a + b)
}

/// Exclusive prefix products of `factor(0..len)` from `first` in the shape:
/// position q gets `first` times the factors before it (lane products from
/// 1.0, lane offsets left to right from `first`, each block left to right).
pub fn segment_product_scan(len: usize, first: f32, factor: impl Fn(usize) -> f32) -> Vec<f32> {
    scan(len, first, 1.0, factor, |a, b| a * b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes partition the run in order, every block but the last ones full.
    #[test]
    fn lanes_partition_the_run() {
        for len in [
            0, 1, 2, 63, 64, 65, 100, 127, 128, 129, 4095, 4096, 4097, 16_384,
        ] {
            let block = lane_block(len);
            let mut next = 0;
            for lane in 0..SEGMENT_LANES {
                let span = lane_span(len, lane);
                assert_eq!(span.start, next, "len {len} lane {lane}");
                assert!(span.len() <= block);
                if span.end < len {
                    assert_eq!(span.len(), block, "len {len} lane {lane}");
                }
                next = span.end;
            }
            assert_eq!(next, len);
        }
        assert_eq!(lane_span(0, 0), 0..0);
        assert_eq!(lane_span(5, 4), 4..5);
        assert_eq!(lane_span(5, 5), 5..5);
        assert_eq!(lane_span(65, 32), 64..65);
        assert_eq!(lane_span(65, 33), 65..65);
    }

    /// The sum is the tree over lane totals, each block added from 0.0:
    /// rebuilt here by hand for lengths below, at and past a lane each.
    #[test]
    fn sums_fold_the_lane_totals_as_the_tree() {
        let value = |q: usize| ((q * 7919) % 1000) as f32 * 0.001 + 1e-4 * q as f32;
        for len in [0, 1, 2, 5, 63, 64, 65, 100, 4095, 4096] {
            let block = lane_block(len);
            let mut leaves = [0.0f32; SEGMENT_LANES];
            for q in 0..len {
                leaves[q / block] += value(q);
            }
            let mut level = leaves.to_vec();
            while level.len() > 1 {
                level = level.chunks(2).map(|p| p[0] + p[1]).collect();
            }
            assert_eq!(lane_totals(len, value), leaves, "len {len}");
            assert_eq!(
                segment_sum(len, value).to_bits(),
                level[0].to_bits(),
                "len {len}"
            );
        }
        assert_eq!(segment_sum(0, |_| f32::NAN), 0.0);
        // Exact on integers at any length.
        assert_eq!(segment_sum(4096, |q| q as f32), 4096.0 * 4095.0 / 2.0);
    }

    /// The shape is not the left-to-right sum: 64 lanes of one value each
    /// pair neighbours first, so 1 + 2^-24 + 2^-24 + ... keeps the small
    /// terms (a serial sum drops each one against 1).
    #[test]
    fn the_tree_is_not_the_serial_order() {
        let tiny = f32::EPSILON / 2.0;
        let value = |q: usize| if q == 0 { 1.0 } else { tiny };
        let serial = (0..64).fold(0.0f32, |s, q| s + value(q));
        assert_eq!(serial, 1.0);
        assert_eq!(segment_sum(64, value), 1.0 + 62.0 * tiny);
        // Past 64 values lanes add their blocks serially first.
        let value = |q: usize| if q.is_multiple_of(2) { 1.0 } else { tiny };
        assert_eq!(segment_sum(128, value), 64.0);
    }

    /// Scans: lane offsets left to right, each block from its offset; exact
    /// on integers, and the last prefix plus the last value is the offsets'
    /// total (not the tree's).
    #[test]
    fn scans_run_each_block_from_its_offset() {
        for len in [0, 1, 2, 63, 64, 65, 100, 4096] {
            let scan = segment_scan(len, |q| q as f32);
            assert_eq!(scan.len(), len);
            for (q, &s) in scan.iter().enumerate() {
                assert_eq!(s, (q * q.saturating_sub(1) / 2) as f32, "len {len} q {q}");
            }
        }
        // Rounding: the offsets are the lane totals added left to right.
        let value = |q: usize| 0.1 + q as f32 * 1e-3;
        for len in [5, 64, 65, 300, 4096] {
            let block = lane_block(len);
            let totals = lane_totals(len, value);
            let scan = segment_scan(len, value);
            let mut offset = 0.0f32;
            for (lane, total) in totals.iter().enumerate() {
                let mut run = offset;
                for q in lane_span(len, lane) {
                    assert_eq!(scan[q].to_bits(), run.to_bits(), "len {len} q {q}");
                    run += value(q);
                    if q + 1 == (lane + 1) * block || q + 1 == len {
                        // A block's own run ends where its total would put it
                        // only up to rounding.
                        assert!((run - (offset + total)).abs() <= 1e-3 * run.abs());
                    }
                }
                offset += total;
            }
        }
    }

    /// Product scans from `first`, lane products from 1.0.
    #[test]
    fn product_scans_start_from_first() {
        assert!(segment_product_scan(0, 3.0, |_| 2.0).is_empty());
        assert_eq!(segment_product_scan(1, 3.0, |_| 2.0), vec![3.0]);
        for len in [2, 63, 64, 65, 100] {
            let scan =
                segment_product_scan(len, 0.5, |q| if q.is_multiple_of(2) { 2.0 } else { 0.5 });
            for (q, &w) in scan.iter().enumerate() {
                assert_eq!(
                    w,
                    if q.is_multiple_of(2) { 0.5 } else { 1.0 },
                    "len {len} q {q}"
                );
            }
        }
        // A zero factor zeroes everything after it, in every block.
        let scan = segment_product_scan(4096, 1.0, |q| if q == 100 { 0.0 } else { 1.0 });
        assert!(scan[..=100].iter().all(|&w| w == 1.0));
        assert!(scan[101..].iter().all(|&w| w == 0.0));
    }
}
