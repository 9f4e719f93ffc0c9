// Stream compaction: the indices i (in increasing order) with keep[i] != 0,
// their count, and optionally the values[i] that go with them. Reduce-then-scan in three dispatches, so no workgroup ever
// waits on another (no forward-progress assumption; portable to Metal, WebGPU
// and lavapipe):
//   count_blocks: each workgroup counts its block of BLOCK flags;
//   scan_blocks:  one workgroup turns the block counts into offsets (and the total);
//   scatter:      each workgroup writes its kept indices at its offset.

// PER_THREAD (flags an invocation) is prepended by the host: 32 on CPU
// adapters, 4 on GPUs (blocks small enough to fill the device, and
// neighbouring invocations reading neighbouring words).
const WG: u32 = 256u;
const BLOCK: u32 = WG * PER_THREAD;

struct CompactParams {
    n: u32,          // flags
    blocks: u32,     // ceil(n / BLOCK)
    blocks_x: u32,   // workgroups along x (the grid is 2-D beyond 65535 blocks)
    with_values: u32, // 1: also compact `values` into `out_values`
}

@group(0) @binding(0) var<uniform> cp: CompactParams;
@group(0) @binding(1) var<storage, read> keep: array<u32>;
@group(0) @binding(2) var<storage, read_write> block_offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_count: array<u32>;
@group(0) @binding(5) var<storage, read> values: array<u32>;
@group(0) @binding(6) var<storage, read_write> out_values: array<u32>;

var<workgroup> scan: array<u32, WG>;

// Inclusive scan of one value per invocation (Hillis-Steele); returns the
// exclusive prefix of invocation t and leaves the total in scan[WG - 1].
fn workgroup_exclusive_scan(t: u32, value: u32) -> u32 {
    scan[t] = value;
    for (var offset = 1u; offset < WG; offset <<= 1u) {
        workgroupBarrier();
        var add = 0u;
        if t >= offset {
            add = scan[t - offset];
        }
        workgroupBarrier();
        scan[t] = scan[t] + add;
    }
    workgroupBarrier();
    return scan[t] - value;
}

fn block_index(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * cp.blocks_x;
}

// Flags of invocation t in block b: elements b * BLOCK + t * PER_THREAD
// onwards (a contiguous run per invocation keeps the output in order with
// one scan).
fn thread_count(b: u32, t: u32) -> u32 {
    var c = 0u;
    let first = b * BLOCK + t * PER_THREAD;
    for (var j = 0u; j < PER_THREAD; j++) {
        let i = first + j;
        if i < cp.n && keep[i] != 0u {
            c += 1u;
        }
    }
    return c;
}

@compute @workgroup_size(256)
fn count_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let b = block_index(wid);
    if b >= cp.blocks {
        return;
    }
    let c = thread_count(b, t);
    let prefix = workgroup_exclusive_scan(t, c);
    if t == WG - 1u {
        block_offsets[b] = prefix + c;
    }
}

@compute @workgroup_size(256)
fn scan_blocks(@builtin(local_invocation_index) t: u32) {
    // Each invocation owns a contiguous run of block counts.
    let per = (cp.blocks + WG - 1u) / WG;
    let first = t * per;
    let last = min(first + per, cp.blocks);
    var sum = 0u;
    for (var b = first; b < last; b++) {
        sum += block_offsets[b];
    }
    var running = workgroup_exclusive_scan(t, sum);
    for (var b = first; b < last; b++) {
        let c = block_offsets[b];
        block_offsets[b] = running;
        running += c;
    }
    if t == WG - 1u {
        out_count[0] = running;
    }
}

@compute @workgroup_size(256)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let b = block_index(wid);
    if b >= cp.blocks {
        return;
    }
    let c = thread_count(b, t);
    var at = block_offsets[b] + workgroup_exclusive_scan(t, c);
    let first = b * BLOCK + t * PER_THREAD;
    for (var j = 0u; j < PER_THREAD; j++) {
        let i = first + j;
        if i < cp.n && keep[i] != 0u {
            out_indices[at] = i;
            if cp.with_values != 0u {
                out_values[at] = values[i];
            }
            at += 1u;
        }
    }
}
