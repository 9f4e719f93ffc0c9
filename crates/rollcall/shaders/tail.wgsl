// Best-of-N tail statistics over ragged segments (one per prompt).
//
// Order: every reward is ranked against its whole segment (descending, ties
// by original index) and scattered to its sorted position (or into a k-wide
// top-k row). Ranking by counting is exact and needs no forward progress
// between workgroups; it costs m² comparisons per segment.
// `rank_elements`: one invocation per reward of a segment of at most
// SMALL_SEGMENT rewards (the usual RL group), reading the segment directly.
// Larger segments: `sort_chunks` sorts each chunk of SORT_CHUNK rewards in
// workgroup memory (bitonic, the chunks listed by the host), then
// `merge_ranks` gives every reward its rank: its position in its chunk plus,
// for every other chunk of its segment, how many of that chunk's rewards
// precede it (a binary search): m log m work. `pad_top_k`: fills the top-k
// rows of short segments.
//
// `estimate`: one invocation per segment walks the sorted segment once or a
// few times and writes the segment's value, status and per-rollout
// advantages. `estimate_wide` (GPUs): a workgroup per segment, a lane a
// block. Every float sum, scan and product over a segment takes the segment
// shape (shared/segment.wgsl), serially in `estimate`, a lane a block in
// `estimate_wide`, and in the Rust twin (`tail::cpu`): the same f32
// operations in the same order on every route.

#include "shared/keys.wgsl"
#include "shared/special.wgsl"
#include "shared/segment.wgsl"

// Invocations per workgroup of the order kernels (`tail::ORDER_THREADS`: the
// host dispatches one per item of the per-item kernels).
const ORDER_THREADS: u32 = 256u;
// SORT_CHUNK (rewards a `sort_chunks` workgroup sorts: 8 KiB of workgroup
// memory) is prepended by the host with SMALL_SEGMENT.
// k of the order pass that asks for the full sort.
const FULL_SORT: u32 = 0xFFFFFFFFu;

// SMALL_SEGMENT (segments up to it are ranked by `rank_elements`) is
// prepended by the host (`tail::SMALL_SEGMENT`).

struct OrderParams {
    segments: u32,
    k: u32,
    // Workgroups along x of the 2-D grids (per large segment; per 256 rewards).
    groups_x: u32,
    rollouts: u32,
    element_groups_x: u32,
    large_segments: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> order_params: OrderParams;
@group(0) @binding(1) var<storage, read> order_rewards: array<f32>;
@group(0) @binding(2) var<storage, read> order_offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> ranks: array<u32>;
@group(0) @binding(4) var<storage, read_write> sorted_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> sorted_index: array<u32>;
// (segment, chunk) pairs of the segments longer than SMALL_SEGMENT.
@group(0) @binding(6) var<storage, read> chunk_list: array<vec2<u32>>;
// Chunk-sorted keys and in-segment indices, at the rewards' positions.
@group(0) @binding(7) var<storage, read_write> chunk_keys: array<u32>;
@group(0) @binding(8) var<storage, read_write> chunk_index: array<u32>;

var<workgroup> sort_key: array<u32, SORT_CHUNK>;
var<workgroup> sort_index: array<u32, SORT_CHUNK>;
var<workgroup> chunk_span: vec4<u32>;

// NaN ranks with -inf (below every finite reward); -0 ties with +0.
fn reward_key(x: f32) -> u32 {
    return key_from_bits(canonical_bits(bitcast<u32>(x)));
}

// Writes reward `i` (in-segment index) of segment `s` at its rank.
fn place(s: u32, start: u32, i: u32, rank: u32) {
    let k = order_params.k;
    ranks[start + i] = rank;
    if k == FULL_SORT {
        sorted_values[start + rank] = order_rewards[start + i];
        sorted_index[start + rank] = i;
    } else if rank < k {
        sorted_values[s * k + rank] = order_rewards[start + i];
        sorted_index[s * k + rank] = i;
    }
}

// The segment holding reward `i`: the last s with offsets[s] <= i (empty
// segments share their offset with the next one).
fn segment_of(i: u32) -> u32 {
    var lo = 0u;
    var hi = order_params.segments;
    while hi - lo > 1u {
        let mid = (lo + hi) / 2u;
        if order_offsets[mid] <= i {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

@compute @workgroup_size(ORDER_THREADS)
fn rank_elements(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = (wg.x + wg.y * order_params.element_groups_x) * ORDER_THREADS + lid;
    if at >= order_params.rollouts {
        return;
    }
    let s = segment_of(at);
    let start = order_offsets[s];
    let m = order_offsets[s + 1u] - start;
    if m > SMALL_SEGMENT {
        return;
    }
    let i = at - start;
    let key = reward_key(order_rewards[at]);
    var rank = 0u;
    for (var j = 0u; j < m; j++) {
        let other = reward_key(order_rewards[start + j]);
        rank += select(0u, 1u, other > key || (other == key && j < i));
    }
    place(s, start, i, rank);
}

// One invocation per top-k slot: slots past a segment's end get -inf and
// NO_INDEX.
@compute @workgroup_size(ORDER_THREADS)
fn pad_top_k(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let k = order_params.k;
    let slot = (wg.x + wg.y * order_params.element_groups_x) * ORDER_THREADS + lid;
    if k == FULL_SORT || slot >= order_params.segments * k {
        return;
    }
    let s = slot / k;
    let j = slot % k;
    if j >= order_offsets[s + 1u] - order_offsets[s] {
        sorted_values[slot] = bitcast<f32>(F32_NEG_INF_BITS);
        sorted_index[slot] = NO_INDEX;
    }
}

// Whether (key a, index ia) comes before (key b, index ib): larger keys
// first, equal keys by original index.
fn precedes(a: u32, ia: u32, b: u32, ib: u32) -> bool {
    return a > b || (a == b && ia < ib);
}

@compute @workgroup_size(ORDER_THREADS)
fn sort_chunks(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let listed = wg.x + wg.y * order_params.groups_x;
    if listed >= order_params.large_segments {
        return;
    }
    if lid == 0u {
        let entry = chunk_list[listed];
        let start = order_offsets[entry.x];
        let m = order_offsets[entry.x + 1u] - start;
        let first = entry.y * SORT_CHUNK;
        let len = min(SORT_CHUNK, m - first);
        // The bitonic network's size: the next power of two.
        var size = 2u;
        while size < len {
            size <<= 1u;
        }
        chunk_span = vec4<u32>(start, first, len, size);
    }
    let span = workgroupUniformLoad(&chunk_span);
    let start = span.x;
    let first = span.y;
    let len = span.z;
    let size = span.w;
    for (var j = lid; j < size; j += ORDER_THREADS) {
        if j < len {
            sort_key[j] = reward_key(order_rewards[start + first + j]);
            sort_index[j] = first + j;
        } else {
            // Padding sorts last: key 0 is below every reward's key.
            sort_key[j] = 0u;
            sort_index[j] = NO_INDEX;
        }
    }
    for (var k = 2u; k <= size; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            workgroupBarrier();
            for (var i = lid; i < size; i += ORDER_THREADS) {
                let partner = i ^ j;
                if partner > i {
                    let forward = (i & k) == 0u;
                    let a = sort_key[i];
                    let ia = sort_index[i];
                    let b = sort_key[partner];
                    let ib = sort_index[partner];
                    // Forward runs in rank order, the others reversed.
                    if precedes(b, ib, a, ia) == forward {
                        sort_key[i] = b;
                        sort_index[i] = ib;
                        sort_key[partner] = a;
                        sort_index[partner] = ia;
                    }
                }
            }
        }
    }
    workgroupBarrier();
    for (var j = lid; j < len; j += ORDER_THREADS) {
        chunk_keys[start + first + j] = sort_key[j];
        chunk_index[start + first + j] = sort_index[j];
    }
}

// One invocation per chunk-sorted position of a large segment.
@compute @workgroup_size(ORDER_THREADS)
fn merge_ranks(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = (wg.x + wg.y * order_params.element_groups_x) * ORDER_THREADS + lid;
    if at >= order_params.rollouts {
        return;
    }
    let s = segment_of(at);
    let start = order_offsets[s];
    let m = order_offsets[s + 1u] - start;
    if m <= SMALL_SEGMENT {
        return;
    }
    let position = at - start;
    let own = position / SORT_CHUNK;
    let key = chunk_keys[at];
    let index = chunk_index[at];
    var rank = position - own * SORT_CHUNK;
    let chunks = (m + SORT_CHUNK - 1u) / SORT_CHUNK;
    for (var c = 0u; c < chunks; c++) {
        if c == own {
            continue;
        }
        // How many of chunk c's rewards precede this one.
        let base = start + c * SORT_CHUNK;
        var lo = 0u;
        var hi = min(SORT_CHUNK, m - c * SORT_CHUNK);
        while lo < hi {
            let mid = (lo + hi) / 2u;
            if precedes(chunk_keys[base + mid], chunk_index[base + mid], key, index) {
                lo = mid + 1u;
            } else {
                hi = mid;
            }
        }
        rank += lo;
    }
    place(s, start, index, rank);
}

// ---------------------------------------------------------------------------
// Estimators.

const EST_EXPECTED_MAX: u32 = 0u;
const EST_PASS_AT_K: u32 = 1u;
const EST_TEA: u32 = 2u;
const EST_PREFIX_TEA: u32 = 3u;
const EST_GPD: u32 = 4u;
const EST_GRPO: u32 = 5u;

const STATUS_OK: u32 = 0u;
const STATUS_EMPTY: u32 = 1u;
const STATUS_TOO_FEW: u32 = 2u;
const STATUS_FLAT: u32 = 3u;
const STATUS_FALLBACK: u32 = 4u;

const MAX_PREFIXES: u32 = 8u;
// Invocations per workgroup of `estimate`, one per segment
// (`tail::ESTIMATE_THREADS`).
const ESTIMATE_THREADS: u32 = 64u;
// A tail whose deviation is at most this share of its mean's size is flat.
const FLAT_TAIL: f32 = 1e-6;
const EULER_GAMMA: f32 = 0.5772157;
const GPD_XI_MAX: f32 = 0.5;

struct EstimateParams {
    segments: u32,
    kind: u32,
    // N of best-of-N, or k of pass@k.
    n: u32,
    prefixes: u32,
    alpha: f32,
    // c̃_N of the Gaussian tail (TEA), computed on the host.
    c_tilde: f32,
    // pass@k: rewards >= threshold count as correct. GRPO: eps.
    threshold: f32,
    groups_x: u32,
}

@group(0) @binding(10) var<uniform> est: EstimateParams;
@group(0) @binding(11) var<storage, read> est_rewards: array<f32>;
@group(0) @binding(12) var<storage, read> est_offsets: array<u32>;
@group(0) @binding(13) var<storage, read> est_sorted: array<f32>;
@group(0) @binding(14) var<storage, read> est_index: array<u32>;
@group(0) @binding(15) var<storage, read_write> est_values: array<f32>;
@group(0) @binding(16) var<storage, read_write> est_status: array<u32>;
@group(0) @binding(17) var<storage, read_write> advantages: array<f32>;

fn nan_f32() -> f32 {
    return bitcast<f32>(0x7FC00000u);
}

// ⌈α m⌉, with products within 1e-3 of an integer rounded down (f32 α).
fn tail_count(alpha: f32, m: u32) -> u32 {
    return u32(max(ceil(alpha * f32(m) - 1e-3), 0.0));
}

// (exp(t) − 1) / t: Taylor series for |t| ≤ ½ (a GPU's log near 1 is only
// accurate to an absolute 2^-21, so the usual (u − 1)/ln u trick fails there).
fn exprel(t: f32) -> f32 {
    if abs(t) > 0.5 {
        return (exp(t) - 1.0) / t;
    }
    var series = 1.0 / 40320.0;
    series = series * t + 1.0 / 5040.0;
    series = series * t + 1.0 / 720.0;
    series = series * t + 1.0 / 120.0;
    series = series * t + 1.0 / 24.0;
    series = series * t + 1.0 / 6.0;
    series = series * t + 0.5;
    return series * t + 1.0;
}

// lnΓ(1 − ξ) / ξ: the Taylor series γ + Σ ζ(j) ξ^(j−1) / j for |ξ| ≤ ¼ (lnΓ
// near 1 has too few correct digits in f32 to divide by a small ξ).
fn ln_gamma_one_minus_over(xi: f32) -> f32 {
    if abs(xi) > 0.25 {
        return ln_gamma(1.0 - xi) / xi;
    }
    var series = 1.0002461 / 12.0;
    series = series * xi + 1.0004942 / 11.0;
    series = series * xi + 1.0009946 / 10.0;
    series = series * xi + 1.0020084 / 9.0;
    series = series * xi + 1.0040774 / 8.0;
    series = series * xi + 1.0083493 / 7.0;
    series = series * xi + 1.0173431 / 6.0;
    series = series * xi + 1.0369278 / 5.0;
    series = series * xi + 1.0823232 / 4.0;
    series = series * xi + 1.2020569 / 3.0;
    series = series * xi + 1.6449341 / 2.0;
    return series * xi + EULER_GAMMA;
}

// Top-k moments of a prefix: the k largest rewards among the first `n`
// rollouts (sampling order), read in sorted order.
struct TailFit {
    threshold: f32,
    mean: f32,
    deviation: f32,
}

// (r − mean)², a term of the tail's squares.
fn tail_square(r: f32, mean: f32) -> f32 {
    let d = r - mean;
    return d * d;
}

// The tail's unbiased deviation from its squares' sum.
fn tail_deviation(squares: f32, k: u32) -> f32 {
    return sqrt(squares / f32(k - 1u));
}

// The sums run over the tail's ranks 0..k in the segment shape.
fn fit_gaussian_tail(start: u32, m: u32, n: u32, k: u32) -> TailFit {
    var fit: TailFit;
    let block = segment_block(k);
    var sums: array<f32, SEGMENT_LANES>;
    var taken = 0u;
    for (var p = 0u; p < m && taken < k; p++) {
        if est_index[start + p] < n {
            let r = est_sorted[start + p];
            sums[taken / block] += r;
            taken += 1u;
            fit.threshold = r;
        }
    }
    fit.mean = segment_tree(sums) / f32(k);
    taken = 0u;
    var squares: array<f32, SEGMENT_LANES>;
    for (var p = 0u; p < m && taken < k; p++) {
        if est_index[start + p] < n {
            squares[taken / block] += tail_square(est_sorted[start + p], fit.mean);
            taken += 1u;
        }
    }
    fit.deviation = tail_deviation(segment_tree(squares), k);
    return fit;
}

fn is_flat(fit: TailFit) -> bool {
    return fit.deviation <= FLAT_TAIL * abs(fit.mean);
}

fn gaussian_tail_value(fit: TailFit) -> f32 {
    if is_flat(fit) {
        return fit.mean;
    }
    return fit.mean + est.c_tilde * fit.deviation;
}

fn gaussian_tail_advantage(fit: TailFit, r: f32) -> f32 {
    var a = r - fit.threshold;
    if !is_flat(fit) {
        let dr = r - fit.mean;
        let dt = fit.threshold - fit.mean;
        a += est.c_tilde * (dr * dr - dt * dt) / (2.0 * fit.deviation);
    }
    return a / est.alpha;
}

// Adds `weight` × the Gaussian-tail advantages of a prefix's tail.
fn add_gaussian_tail_advantages(start: u32, m: u32, n: u32, k: u32, fit: TailFit, weight: f32) {
    var taken = 0u;
    for (var p = 0u; p < m && taken < k; p++) {
        let i = est_index[start + p];
        if i < n {
            let at = start + i;
            advantages[at] += weight * gaussian_tail_advantage(fit, est_sorted[start + p]);
            taken += 1u;
        }
    }
}

// Probability-weighted moments (Hosking & Wallis 1987) of the k exceedances
// over u, the (k+1)-th largest reward.
struct GpdMoments {
    u: f32,
    a0: f32,
    a1: f32,
}

// Descending position d's terms of a0 and a1: y = R_(d) − u and y weighted
// by its plotting position (k − d − 0.35) / k, as (d + 0.35) / k.
fn gpd_moment_terms(start: u32, d: u32, k: u32, u: f32) -> vec2<f32> {
    let y = est_sorted[start + d] - u;
    return vec2<f32>(y, (f32(d) + 0.35) / f32(k) * y);
}

// Term t of the jackknife's suffix scan: d = k − 1 − t,
// (d + 0.35)(R_(d+1) − R_(d)).
fn gpd_suffix_term(start: u32, k: u32, t: u32) -> f32 {
    let d = k - 1u - t;
    return (f32(d) + 0.35) * (est_sorted[start + d + 1u] - est_sorted[start + d]);
}

// The moments from their sums.
fn gpd_moments_from(u: f32, sums: vec2<f32>, k: u32) -> GpdMoments {
    var mo: GpdMoments;
    mo.u = u;
    mo.a0 = sums.x / f32(k);
    mo.a1 = sums.y / f32(k);
    return mo;
}

// [(Nζ)^ξ Γ(1−ξ) − 1] / ξ = (L + g) · exprel(ξ (L + g)), L = ln Nζ,
// g = lnΓ(1−ξ)/ξ: no division by ξ, and the ξ → 0 limit L + γ is exact.
fn gpd_h(xi: f32, log_n_zeta: f32) -> f32 {
    let spread = log_n_zeta + ln_gamma_one_minus_over(xi);
    return spread * exprel(xi * spread);
}

struct GpdFit {
    xi: f32,
    sigma: f32,
    value: f32,
    // No clamp, cap or degenerate case: differences may be linearised.
    linear: bool,
}

// The fit and the expected best of N, u + σ H(ξ), with exceedance rate
// ζ = exp(log_n_zeta) / N; `top` is the largest reward of the tail.
fn gpd_fit(mo: GpdMoments, log_n_zeta: f32, top: f32) -> GpdFit {
    var fit: GpdFit;
    fit.linear = false;
    fit.xi = 0.0;
    fit.sigma = 0.0;
    if mo.a0 <= 0.0 {
        fit.value = mo.u;
        return fit;
    }
    let denom = mo.a0 - 2.0 * mo.a1;
    if denom <= 0.0 {
        // ξ → −∞ (reached only by rounding): all the mass at the top.
        fit.value = top;
        return fit;
    }
    fit.xi = 2.0 - mo.a0 / denom;
    fit.sigma = 2.0 * mo.a0 * mo.a1 / denom;
    if fit.xi > GPD_XI_MAX {
        // Heavier than PWM can fit: keep the mean exceedance σ / (1 − ξ).
        fit.xi = GPD_XI_MAX;
        fit.sigma = mo.a0 * (1.0 - fit.xi);
        fit.value = mo.u + fit.sigma * gpd_h(fit.xi, log_n_zeta);
        return fit;
    }
    if fit.xi <= -1.0 {
        // A density that rises to its endpoint (a spike of equal top
        // rewards): the best of N is the endpoint u + σ/|ξ|, at most the
        // largest reward seen.
        fit.value = min(mo.u - fit.sigma / fit.xi, top);
        return fit;
    }
    let value = mo.u + fit.sigma * gpd_h(fit.xi, log_n_zeta);
    if fit.xi < 0.0 && value >= mo.u - fit.sigma / fit.xi {
        // The asymptotic formula past the endpoint: the endpoint.
        fit.value = mo.u - fit.sigma / fit.xi;
        return fit;
    }
    fit.value = value;
    fit.linear = true;
    return fit;
}

fn pass_at_k(m: u32, c: u32, k: u32) -> f32 {
    if m - c < k {
        return 1.0;
    }
    var miss = 1.0;
    for (var i = m - c + 1u; i <= m; i++) {
        miss *= 1.0 - f32(k) / f32(i);
    }
    return 1.0 - miss;
}

// (r − mean)², a term of GRPO's squares.
fn grpo_square(r: f32, mean: f32) -> f32 {
    let d = r - mean;
    return d * d;
}

// GRPO's unbiased deviation from the squares' sum of m rewards.
fn grpo_deviation(squares: f32, m: u32) -> f32 {
    if m > 1u {
        return sqrt(squares / (f32(m) - 1.0));
    }
    return 0.0;
}

// A wrong rollout's chance that a k-subset holding it still passes:
// 1 − C(m−c−1, k−1) / C(m−1, k−1) (this is the C(...) / C(...) part).
fn pass_all_wrong(m: u32, c: u32, k: u32) -> f32 {
    var all_wrong = 0.0;
    if m - c >= k {
        all_wrong = 1.0;
        for (var i = m - c; i <= m - 1u; i++) {
            all_wrong *= 1.0 - f32(k - 1u) / f32(i);
        }
    }
    return all_wrong;
}

// max@N: the weight factor at ascending order statistic i, w_{i−1} = w_i ×
// (i−N)/(i−1) (0 once i <= N).
fn max_weight_factor(i: u32, n: u32) -> f32 {
    if i > n {
        return f32(i - n) / f32(i - 1u);
    }
    return 0.0;
}

// max@N: statistic i's own term of the value, w_i R_(i) for i >= N.
fn max_own(w: f32, r: f32, i: u32, n: u32) -> f32 {
    if i >= n {
        return w * r;
    }
    return 0.0;
}

// max@N: statistic i's term of the suffix below it, C(i−2, N−2) / C(m, N)
// R_(i) = w_i (N−1)/(i−1) R_(i).
fn max_up(w: f32, r: f32, i: u32, n: u32) -> f32 {
    if i >= 2u {
        return w * f32(n - 1u) / f32(i - 1u) * r;
    }
    return 0.0;
}

// max@N: equal rewards share their credit equally: the run of equal keys
// starting at sorted position p (which must start one), its advantages
// added left to right and their mean written back.
fn max_share_ties(start: u32, m: u32, p: u32) {
    let key = reward_key(est_sorted[start + p]);
    var end = p + 1u;
    var sum = advantages[start + est_index[start + p]];
    while end < m && reward_key(est_sorted[start + end]) == key {
        sum += advantages[start + est_index[start + end]];
        end += 1u;
    }
    let mean = sum / f32(end - p);
    for (var q = p; q < end; q++) {
        advantages[start + est_index[start + q]] = mean;
    }
}

// The GPD jackknife's influence −(m − 1)(V₋j − V₋below) of sorted position
// j, from suffix(j) = Σ_{d=j}^{k−1} (d + 0.35)(R_(d+1) − R_(d)).
fn gpd_jackknife(start: u32, m: u32, k: u32, j: u32, suffix: f32, base: GpdMoments,
                 fit_b: GpdFit, du: f32, weights: f32, log_n_zeta: f32) -> f32 {
    let da0 = ((est_sorted[start + k] - est_sorted[start + j]) - f32(k) * du) / f32(k);
    let da1 = (suffix - du * weights) / (f32(k) * f32(k));
    var mo: GpdMoments;
    mo.u = base.u + du;
    mo.a0 = base.a0 + da0;
    mo.a1 = base.a1 + da1;
    let top_j = est_sorted[start + select(0u, 1u, j == 0u)];
    let fit_j = gpd_fit(mo, log_n_zeta, top_j);
    var dv = fit_j.value - fit_b.value;
    if fit_b.linear && fit_j.linear {
        let d_b = base.a0 - 2.0 * base.a1;
        let dd = da0 - 2.0 * da1;
        let d_j = d_b + dd;
        let dsigma = 2.0 * (d_b * (base.a0 * da1 + base.a1 * da0 + da0 * da1) - base.a0 * base.a1 * dd) / (d_j * d_b);
        let dxi = -(da0 * d_b - base.a0 * dd) / (d_j * d_b);
        let h_j = gpd_h(fit_j.xi, log_n_zeta);
        // H's difference: directly when ξ moves far, else its slope at the
        // midpoint (exact to O(Δξ³), free of cancellation).
        var dh = h_j - gpd_h(fit_b.xi, log_n_zeta);
        if abs(dxi) < 0.01 {
            let mid = fit_b.xi + 0.5 * dxi;
            dh = (gpd_h(mid + 0.001, log_n_zeta) - gpd_h(mid - 0.001, log_n_zeta)) / 0.002 * dxi;
        }
        dv = du + dsigma * h_j + fit_b.sigma * dh;
    }
    return -f32(m - 1u) * dv;
}

@compute @workgroup_size(ESTIMATE_THREADS)
fn estimate(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s = (wg.x + wg.y * est.groups_x) * ESTIMATE_THREADS + lid;
    if s >= est.segments {
        return;
    }
    let start = est_offsets[s];
    let m = est_offsets[s + 1u] - start;
    for (var i = 0u; i < m; i++) {
        advantages[start + i] = 0.0;
    }
    if m == 0u {
        est_values[s] = nan_f32();
        est_status[s] = STATUS_EMPTY;
        return;
    }
    var value = nan_f32();
    var status = STATUS_OK;
    switch est.kind {
        case EST_EXPECTED_MAX: {
            let n = est.n;
            if m < n {
                status = STATUS_TOO_FEW;
                break;
            }
            // Ascending order statistic i = m − p has weight
            // w_i = C(i−1, N−1) / C(m, N): w_m = N / m, then the factors
            // (i−N)/(i−1), multiplied in the segment shape (lane products,
            // offsets left to right, each block from its offset). The value
            // sums the own terms, the advantages add the suffix's scan.
            let block = segment_block(m);
            var products: array<f32, SEGMENT_LANES>;
            for (var j = 0u; j < SEGMENT_LANES; j++) {
                products[j] = 1.0;
            }
            for (var p = 0u; p < m; p++) {
                products[p / block] *= max_weight_factor(m - p, n);
            }
            // Each weight is parked in its rollout's advantage until the
            // suffix's offsets are known.
            var owns: array<f32, SEGMENT_LANES>;
            var ups: array<f32, SEGMENT_LANES>;
            var next = f32(n) / f32(m);
            var w = 0.0;
            for (var p = 0u; p < m; p++) {
                if p % block == 0u {
                    w = next;
                    next = next * products[p / block];
                }
                let i = m - p;
                let r = est_sorted[start + p];
                advantages[start + est_index[start + p]] = w;
                owns[p / block] += max_own(w, r, i, n);
                ups[p / block] += max_up(w, r, i, n);
                w = w * max_weight_factor(i, n);
            }
            value = segment_tree(owns);
            var offset = 0.0;
            var suffix = 0.0;
            for (var p = 0u; p < m; p++) {
                if p % block == 0u {
                    suffix = offset;
                    offset = offset + ups[p / block];
                }
                let i = m - p;
                let r = est_sorted[start + p];
                let at = start + est_index[start + p];
                let wp = advantages[at];
                advantages[at] = max_own(wp, r, i, n) + suffix;
                suffix = suffix + max_up(wp, r, i, n);
            }
            for (var p = 0u; p < m; p++) {
                if p == 0u || reward_key(est_sorted[start + p - 1u]) != reward_key(est_sorted[start + p]) {
                    max_share_ties(start, m, p);
                }
            }
        }
        case EST_PASS_AT_K: {
            let k = est.n;
            if m < k {
                status = STATUS_TOO_FEW;
                break;
            }
            var c = 0u;
            for (var i = 0u; i < m; i++) {
                c += select(0u, 1u, est_rewards[start + i] >= est.threshold);
            }
            let rho = pass_at_k(m, c, k);
            value = rho;
            let sigma = sqrt(rho * (1.0 - rho));
            if sigma > 0.0 {
                let all_wrong = pass_all_wrong(m, c, k);
                for (var i = 0u; i < m; i++) {
                    if est_rewards[start + i] >= est.threshold {
                        advantages[start + i] = (1.0 - rho) / sigma;
                    } else {
                        advantages[start + i] = (1.0 - rho - all_wrong) / sigma;
                    }
                }
            }
        }
        case EST_TEA: {
            let k = tail_count(est.alpha, m);
            if k < 2u {
                status = STATUS_TOO_FEW;
                break;
            }
            let fit = fit_gaussian_tail(start, m, m, k);
            value = gaussian_tail_value(fit);
            if is_flat(fit) {
                status = STATUS_FLAT;
            }
            add_gaussian_tail_advantages(start, m, m, k, fit, 1.0);
        }
        case EST_PREFIX_TEA: {
            // Prefixes n_j = ⌈j m / J⌉ in sampling order; those whose tail holds
            // at least two rollouts are fitted and combined with the
            // minimum-norm weights that sum to 1 and cancel the 1/n bias term.
            var sizes: array<u32, MAX_PREFIXES>;
            var used = 0u;
            for (var j = 1u; j <= est.prefixes; j++) {
                let n = (j * m + est.prefixes - 1u) / est.prefixes;
                if tail_count(est.alpha, n) >= 2u && (used == 0u || sizes[used - 1u] != n) {
                    sizes[used] = n;
                    used += 1u;
                }
            }
            let k = tail_count(est.alpha, m);
            if k < 2u {
                status = STATUS_TOO_FEW;
                break;
            }
            if used < 2u {
                let fit = fit_gaussian_tail(start, m, m, k);
                value = gaussian_tail_value(fit);
                status = STATUS_FALLBACK;
                add_gaussian_tail_advantages(start, m, m, k, fit, 1.0);
                break;
            }
            var s1 = 0.0;
            var s2 = 0.0;
            for (var j = 0u; j < used; j++) {
                let inv = 1.0 / f32(sizes[j]);
                s1 += inv;
                s2 += inv * inv;
            }
            let det = f32(used) * s2 - s1 * s1;
            value = 0.0;
            var flat = false;
            for (var j = 0u; j < used; j++) {
                let n = sizes[j];
                let weight = (s2 - s1 / f32(n)) / det;
                let kj = tail_count(est.alpha, n);
                let fit = fit_gaussian_tail(start, m, n, kj);
                flat = flat || is_flat(fit);
                value += weight * gaussian_tail_value(fit);
                add_gaussian_tail_advantages(start, m, n, kj, fit, weight);
            }
            if flat {
                status = STATUS_FLAT;
            }
        }
        case EST_GPD: {
            let k = tail_count(est.alpha, m);
            if k < 2u || m < k + 2u {
                status = STATUS_TOO_FEW;
                break;
            }
            let top = est_sorted[start];
            let u = est_sorted[start + k];
            let block = segment_block(k);
            var a0s: array<f32, SEGMENT_LANES>;
            var a1s: array<f32, SEGMENT_LANES>;
            var suffixes: array<f32, SEGMENT_LANES>;
            for (var d = 0u; d < k; d++) {
                let terms = gpd_moment_terms(start, d, k, u);
                a0s[d / block] += terms.x;
                a1s[d / block] += terms.y;
                // The jackknife's suffix scan over t = d: its lane totals.
                suffixes[d / block] += gpd_suffix_term(start, k, d);
            }
            let base = gpd_moments_from(u, vec2<f32>(segment_tree(a0s), segment_tree(a1s)), k);
            value = gpd_fit(base, log(f32(est.n) * f32(k) / f32(m)), top).value;
            if top == est_sorted[start + k - 1u] {
                status = STATUS_FLAT;
            }
            // Jackknife influence (m − 1)(V₋below − V₋j) of each rollout in the
            // tail or at the threshold, measured from the removal of a rollout
            // below it (which they all share, so they get 0). Both values
            // differ in their last bits only, so the differences of the
            // moments are formed directly and V's difference is linearised
            // (exact to second order) where the fit is linear.
            let log_n_zeta = log(f32(est.n) * f32(k) / f32(m - 1u));
            let fit_b = gpd_fit(base, log_n_zeta, top);
            let du = est_sorted[start + k + 1u] - est_sorted[start + k];
            let weights = f32(k) * (f32(k) - 1.0) * 0.5 + 0.35 * f32(k);
            advantages[start + est_index[start + k]] =
                gpd_jackknife(start, m, k, k, 0.0, base, fit_b, du, weights, log_n_zeta);
            var offset = 0.0;
            var suffix = 0.0;
            for (var t = 0u; t < k; t++) {
                if t % block == 0u {
                    suffix = offset;
                    offset = offset + suffixes[t / block];
                }
                suffix = suffix + gpd_suffix_term(start, k, t);
                let j = k - 1u - t;
                advantages[start + est_index[start + j]] =
                    gpd_jackknife(start, m, k, j, suffix, base, fit_b, du, weights, log_n_zeta);
            }
        }
        case EST_GRPO: {
            let block = segment_block(m);
            var sums: array<f32, SEGMENT_LANES>;
            var lo = bitcast<f32>(F32_POS_INF_BITS);
            var hi = bitcast<f32>(F32_NEG_INF_BITS);
            for (var q = 0u; q < m; q++) {
                let r = est_rewards[start + q];
                sums[q / block] += r;
                lo = min(lo, r);
                hi = max(hi, r);
            }
            let mean = segment_tree(sums) / max(f32(m), 1.0);
            var squares: array<f32, SEGMENT_LANES>;
            for (var q = 0u; q < m; q++) {
                squares[q / block] += grpo_square(est_rewards[start + q], mean);
            }
            let deviation = grpo_deviation(segment_tree(squares), m);
            value = mean;
            if lo == hi {
                status = STATUS_FLAT;
                break;
            }
            for (var i = 0u; i < m; i++) {
                advantages[start + i] = (est_rewards[start + i] - mean) / (deviation + est.threshold);
            }
        }
        default: {}
    }
    est_values[s] = value;
    est_status[s] = status;
}

// ---- Estimates with a workgroup per segment (GPUs) ---------------------------
// The same values, statuses and advantages as `estimate`, bit for bit: lane j
// takes block j of each run the segment shape splits (the segment's sorted
// positions, its rollouts, the tail's ranks), every lane folds the lane
// totals alike, and each per-rollout term is the serial kernel's expression.
// Advantages are zeroed by the lane that later writes them (or, where lanes
// write another lane's rollouts, before a storage barrier).

// Lane totals of up to four sums, and lane counts.
var<workgroup> wide_a: array<f32, SEGMENT_LANES>;
var<workgroup> wide_b: array<f32, SEGMENT_LANES>;
var<workgroup> wide_c: array<f32, SEGMENT_LANES>;
var<workgroup> wide_d: array<f32, SEGMENT_LANES>;
var<workgroup> wide_counts: array<u32, SEGMENT_LANES>;
// The Gaussian tail's threshold, from the lane that holds rank k − 1.
var<workgroup> wide_threshold: f32;

// A Gaussian fit and the tail ranks before the lane's block of positions.
struct WideFit {
    fit: TailFit,
    rank: u32,
}

// `fit_gaussian_tail` with a lane a block: the qualifying positions (index
// < n) counted per block of positions (order-free), then each lane sums its
// block of the tail's ranks 0..k, found by walking from the block of
// positions that holds its first rank. 3 barriers.
fn wide_fit_gaussian_tail(lane: u32, start: u32, m: u32, n: u32, k: u32) -> WideFit {
    let first = segment_lane_start(m, lane);
    let end = segment_lane_end(m, lane);
    var count = 0u;
    for (var p = first; p < end; p++) {
        count += select(0u, 1u, est_index[start + p] < n);
    }
    wide_counts[lane] = count;
    workgroupBarrier();
    var out: WideFit;
    out.rank = 0u;
    for (var j = 0u; j < lane; j++) {
        out.rank += wide_counts[j];
    }
    // The lane's ranks [a, b) and the position of rank a.
    let a = segment_lane_start(k, lane);
    let b = segment_lane_end(k, lane);
    var rank_at = m;
    var sum = 0.0;
    if a < b {
        var before = 0u;
        var block = 0u;
        while block + 1u < SEGMENT_LANES && before + wide_counts[block] <= a {
            before += wide_counts[block];
            block += 1u;
        }
        var q = before;
        for (var p = segment_lane_start(m, block); p < m && q < b; p++) {
            if est_index[start + p] < n {
                if q >= a {
                    if q == a {
                        rank_at = p;
                    }
                    let r = est_sorted[start + p];
                    sum += r;
                    if q == k - 1u {
                        wide_threshold = r;
                    }
                }
                q += 1u;
            }
        }
    }
    wide_a[lane] = sum;
    workgroupBarrier();
    out.fit.mean = segment_tree(wide_a) / f32(k);
    var squares = 0.0;
    var q = a;
    for (var p = rank_at; p < m && q < b; p++) {
        if est_index[start + p] < n {
            squares += tail_square(est_sorted[start + p], out.fit.mean);
            q += 1u;
        }
    }
    wide_b[lane] = squares;
    workgroupBarrier();
    out.fit.deviation = tail_deviation(segment_tree(wide_b), k);
    out.fit.threshold = wide_threshold;
    return out;
}

// Adds `weight` × the Gaussian-tail advantages of the tail's rollouts in the
// lane's block of positions (`rank` tail ranks before it).
fn wide_add_gaussian_tail_advantages(lane: u32, start: u32, m: u32, n: u32, k: u32,
                                     fit: WideFit, weight: f32) {
    var q = fit.rank;
    let end = segment_lane_end(m, lane);
    for (var p = segment_lane_start(m, lane); p < end && q < k; p++) {
        let i = est_index[start + p];
        if i < n {
            let at = start + i;
            advantages[at] += weight * gaussian_tail_advantage(fit.fit, est_sorted[start + p]);
            q += 1u;
        }
    }
}

// Zeroes the advantages of the lane's block of rollouts (sampling order).
fn wide_zero_rollouts(lane: u32, start: u32, m: u32) {
    for (var i = segment_lane_start(m, lane); i < segment_lane_end(m, lane); i++) {
        advantages[start + i] = 0.0;
    }
}

// Zeroes the advantages of the rollouts at the lane's block of sorted
// positions, from position `past` on.
fn wide_zero_positions(lane: u32, start: u32, m: u32, past: u32) {
    for (var p = max(past, segment_lane_start(m, lane)); p < segment_lane_end(m, lane); p++) {
        advantages[start + est_index[start + p]] = 0.0;
    }
}

@compute @workgroup_size(SEGMENT_LANES)
fn estimate_wide(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let s = wg.x + wg.y * est.groups_x;
    if s >= est.segments {
        return;
    }
    let start = est_offsets[s];
    let m = est_offsets[s + 1u] - start;
    // The lane's block of sorted positions (and of rollouts).
    let first = segment_lane_start(m, lane);
    let end = segment_lane_end(m, lane);
    var value = nan_f32();
    var status = STATUS_OK;
    if m == 0u {
        status = STATUS_EMPTY;
    } else {
        switch est.kind {
            case EST_EXPECTED_MAX: {
                let n = est.n;
                if m < n {
                    status = STATUS_TOO_FEW;
                    wide_zero_rollouts(lane, start, m);
                    break;
                }
                // The weights' lane products, then each lane's weights from
                // its offset (parked in the advantages), own and suffix
                // terms; the suffix's scan; the runs of ties starting in
                // the lane's block (each summed left to right, as serially).
                var product = 1.0;
                for (var p = first; p < end; p++) {
                    product *= max_weight_factor(m - p, n);
                }
                wide_a[lane] = product;
                workgroupBarrier();
                var w = segment_product_offset(wide_a, lane, f32(n) / f32(m));
                var own_total = 0.0;
                var up_total = 0.0;
                for (var p = first; p < end; p++) {
                    let i = m - p;
                    let r = est_sorted[start + p];
                    advantages[start + est_index[start + p]] = w;
                    own_total += max_own(w, r, i, n);
                    up_total += max_up(w, r, i, n);
                    w = w * max_weight_factor(i, n);
                }
                wide_b[lane] = own_total;
                wide_c[lane] = up_total;
                workgroupBarrier();
                value = segment_tree(wide_b);
                var suffix = segment_sum_offset(wide_c, lane);
                for (var p = first; p < end; p++) {
                    let i = m - p;
                    let r = est_sorted[start + p];
                    let at = start + est_index[start + p];
                    let wp = advantages[at];
                    advantages[at] = max_own(wp, r, i, n) + suffix;
                    suffix = suffix + max_up(wp, r, i, n);
                }
                storageBarrier();
                for (var p = first; p < end; p++) {
                    if p == 0u || reward_key(est_sorted[start + p - 1u]) != reward_key(est_sorted[start + p]) {
                        max_share_ties(start, m, p);
                    }
                }
            }
            case EST_PASS_AT_K: {
                let k = est.n;
                if m < k {
                    status = STATUS_TOO_FEW;
                    wide_zero_rollouts(lane, start, m);
                    break;
                }
                var c = 0u;
                for (var i = first; i < end; i++) {
                    c += select(0u, 1u, est_rewards[start + i] >= est.threshold);
                }
                wide_counts[lane] = c;
                workgroupBarrier();
                c = 0u;
                for (var j = 0u; j < SEGMENT_LANES; j++) {
                    c += wide_counts[j];
                }
                // Every lane forms ρ and the wrong rollouts' share alike.
                let rho = pass_at_k(m, c, k);
                value = rho;
                let sigma = sqrt(rho * (1.0 - rho));
                if sigma > 0.0 {
                    let all_wrong = pass_all_wrong(m, c, k);
                    for (var i = first; i < end; i++) {
                        if est_rewards[start + i] >= est.threshold {
                            advantages[start + i] = (1.0 - rho) / sigma;
                        } else {
                            advantages[start + i] = (1.0 - rho - all_wrong) / sigma;
                        }
                    }
                } else {
                    wide_zero_rollouts(lane, start, m);
                }
            }
            case EST_TEA: {
                let k = tail_count(est.alpha, m);
                if k < 2u {
                    status = STATUS_TOO_FEW;
                    wide_zero_rollouts(lane, start, m);
                    break;
                }
                wide_zero_positions(lane, start, m, 0u);
                let fit = wide_fit_gaussian_tail(lane, start, m, m, k);
                value = gaussian_tail_value(fit.fit);
                if is_flat(fit.fit) {
                    status = STATUS_FLAT;
                }
                wide_add_gaussian_tail_advantages(lane, start, m, m, k, fit, 1.0);
            }
            case EST_PREFIX_TEA: {
                var sizes: array<u32, MAX_PREFIXES>;
                var used = 0u;
                for (var j = 1u; j <= est.prefixes; j++) {
                    let n = (j * m + est.prefixes - 1u) / est.prefixes;
                    if tail_count(est.alpha, n) >= 2u && (used == 0u || sizes[used - 1u] != n) {
                        sizes[used] = n;
                        used += 1u;
                    }
                }
                let k = tail_count(est.alpha, m);
                if k < 2u {
                    status = STATUS_TOO_FEW;
                    wide_zero_rollouts(lane, start, m);
                    break;
                }
                wide_zero_positions(lane, start, m, 0u);
                if used < 2u {
                    let fit = wide_fit_gaussian_tail(lane, start, m, m, k);
                    value = gaussian_tail_value(fit.fit);
                    status = STATUS_FALLBACK;
                    wide_add_gaussian_tail_advantages(lane, start, m, m, k, fit, 1.0);
                    break;
                }
                var s1 = 0.0;
                var s2 = 0.0;
                for (var j = 0u; j < used; j++) {
                    let inv = 1.0 / f32(sizes[j]);
                    s1 += inv;
                    s2 += inv * inv;
                }
                let det = f32(used) * s2 - s1 * s1;
                value = 0.0;
                var flat = false;
                for (var j = 0u; j < used; j++) {
                    let n = sizes[j];
                    let weight = (s2 - s1 / f32(n)) / det;
                    let kj = tail_count(est.alpha, n);
                    let fit = wide_fit_gaussian_tail(lane, start, m, n, kj);
                    flat = flat || is_flat(fit.fit);
                    value += weight * gaussian_tail_value(fit.fit);
                    wide_add_gaussian_tail_advantages(lane, start, m, n, kj, fit, weight);
                }
                if flat {
                    status = STATUS_FLAT;
                }
            }
            case EST_GPD: {
                let k = tail_count(est.alpha, m);
                if k < 2u || m < k + 2u {
                    status = STATUS_TOO_FEW;
                    wide_zero_rollouts(lane, start, m);
                    break;
                }
                // Positions past k get 0; the jackknife writes 0..=k.
                wide_zero_positions(lane, start, m, k + 1u);
                let top = est_sorted[start];
                let u = est_sorted[start + k];
                // The lane's block of the tail's positions d (and of the
                // suffix scan's t): moments and suffix lane totals.
                let a = segment_lane_start(k, lane);
                let b = segment_lane_end(k, lane);
                var a0 = 0.0;
                var a1 = 0.0;
                var suffix_total = 0.0;
                for (var d = a; d < b; d++) {
                    let terms = gpd_moment_terms(start, d, k, u);
                    a0 += terms.x;
                    a1 += terms.y;
                    suffix_total += gpd_suffix_term(start, k, d);
                }
                wide_a[lane] = a0;
                wide_b[lane] = a1;
                wide_c[lane] = suffix_total;
                workgroupBarrier();
                let base = gpd_moments_from(u, vec2<f32>(segment_tree(wide_a), segment_tree(wide_b)), k);
                value = gpd_fit(base, log(f32(est.n) * f32(k) / f32(m)), top).value;
                if top == est_sorted[start + k - 1u] {
                    status = STATUS_FLAT;
                }
                let log_n_zeta = log(f32(est.n) * f32(k) / f32(m - 1u));
                let fit_b = gpd_fit(base, log_n_zeta, top);
                let du = est_sorted[start + k + 1u] - est_sorted[start + k];
                let weights = f32(k) * (f32(k) - 1.0) * 0.5 + 0.35 * f32(k);
                if lane == 0u {
                    advantages[start + est_index[start + k]] =
                        gpd_jackknife(start, m, k, k, 0.0, base, fit_b, du, weights, log_n_zeta);
                }
                var suffix = segment_sum_offset(wide_c, lane);
                for (var t = a; t < b; t++) {
                    suffix = suffix + gpd_suffix_term(start, k, t);
                    let j = k - 1u - t;
                    advantages[start + est_index[start + j]] =
                        gpd_jackknife(start, m, k, j, suffix, base, fit_b, du, weights, log_n_zeta);
                }
            }
            case EST_GRPO: {
                var sum = 0.0;
                var lo = bitcast<f32>(F32_POS_INF_BITS);
                var hi = bitcast<f32>(F32_NEG_INF_BITS);
                for (var i = first; i < end; i++) {
                    let r = est_rewards[start + i];
                    sum += r;
                    lo = min(lo, r);
                    hi = max(hi, r);
                }
                wide_a[lane] = sum;
                wide_c[lane] = lo;
                wide_d[lane] = hi;
                workgroupBarrier();
                let mean = segment_tree(wide_a) / max(f32(m), 1.0);
                var squares = 0.0;
                for (var i = first; i < end; i++) {
                    squares += grpo_square(est_rewards[start + i], mean);
                }
                wide_b[lane] = squares;
                for (var j = 0u; j < SEGMENT_LANES; j++) {
                    lo = min(lo, wide_c[j]);
                    hi = max(hi, wide_d[j]);
                }
                workgroupBarrier();
                let deviation = grpo_deviation(segment_tree(wide_b), m);
                value = mean;
                if lo == hi {
                    status = STATUS_FLAT;
                    wide_zero_rollouts(lane, start, m);
                } else {
                    for (var i = first; i < end; i++) {
                        advantages[start + i] = (est_rewards[start + i] - mean) / (deviation + est.threshold);
                    }
                }
            }
            default: {
                wide_zero_rollouts(lane, start, m);
            }
        }
    }
    if lane == 0u {
        est_values[s] = value;
        est_status[s] = status;
    }
}
