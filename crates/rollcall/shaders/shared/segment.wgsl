// The segment kernels' fixed shape (the twin's `math::segment`): how a float
// sum, scan or product over a run of a segment's values is split and folded,
// whatever the hardware. Per-invocation kernels run it serially (a local
// array of lane totals, `totals[q / block] += v`), workgroup kernels a lane
// a block; both give the twin's bits.
//
// For a run of `len` values, block = ⌈len / SEGMENT_LANES⌉ and lane j owns
// positions [j·block, min((j+1)·block, len)) (the last lanes may own none).
// Sum: each lane adds its block left to right from 0.0, then the lane totals
// fold as the complete binary tree, neighbours first (`segment_tree`).
// Scan: lane offsets are the lane totals added left to right from the
// run's first value (0.0 for sums); each lane runs its block left to right
// from its offset. Products likewise (lane products from 1.0). Integer
// counts, minima and maxima are order-free.

// Lanes of the shape (`math::segment::SEGMENT_LANES`): the workgroup width of
// the kernels that run it a lane a block.
const SEGMENT_LANES: u32 = 64u;

// Values each lane owns in a run of `len`.
fn segment_block(len: u32) -> u32 {
    return (len + SEGMENT_LANES - 1u) / SEGMENT_LANES;
}

// First position lane `lane` owns (`len` when it owns none).
fn segment_lane_start(len: u32, lane: u32) -> u32 {
    return min(lane * segment_block(len), len);
}

// One past the last position lane `lane` owns.
fn segment_lane_end(len: u32, lane: u32) -> u32 {
    return min((lane + 1u) * segment_block(len), len);
}

// The complete binary tree over the lane totals, neighbours first: totals
// 2i and 2i + 1, then pairs of pairs, ...; the lower half on the left.
fn segment_tree(leaves: array<f32, SEGMENT_LANES>) -> f32 {
    var a = leaves;
    for (var step = 1u; step < SEGMENT_LANES; step *= 2u) {
        for (var j = 0u; j < SEGMENT_LANES; j += 2u * step) {
            a[j] = a[j] + a[j + step];
        }
    }
    return a[0];
}

// Lane `lane`'s offset of a sum scan: the totals of the lanes before it,
// added left to right from 0.0.
fn segment_sum_offset(totals: array<f32, SEGMENT_LANES>, lane: u32) -> f32 {
    var offset = 0.0;
    for (var j = 0u; j < lane; j++) {
        offset = offset + totals[j];
    }
    return offset;
}

// Lane `lane`'s offset of a product scan from `first`: the products of the
// lanes before it, multiplied left to right.
fn segment_product_offset(products: array<f32, SEGMENT_LANES>, lane: u32, first: f32) -> f32 {
    var offset = first;
    for (var j = 0u; j < lane; j++) {
        offset = offset * products[j];
    }
    return offset;
}
