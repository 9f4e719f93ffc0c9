// Best-of-N tail statistics over ragged segments (one per prompt).
//
// `order_segments`: one workgroup per segment ranks every reward against the
// whole segment (descending, ties by original index), then scatters it to its
// sorted position (or into a k-wide top-k row). Ranking by counting is exact
// and needs no forward progress between workgroups; it costs m² comparisons
// per segment, read through workgroup tiles.
//
// `estimate`: one invocation per segment walks the sorted segment once or a
// few times and writes the segment's value, status and per-rollout
// advantages. Sequential on purpose: the Rust twin (`tail::cpu`) repeats the
// same f32 operations in the same order.

#include "keys.wgsl"
#include "posterior.wgsl"

const ORDER_THREADS: u32 = 256u;
const ORDER_PER_THREAD: u32 = 8u;
const ORDER_TILE: u32 = 1024u;
// k of the order pass that asks for the full sort.
const FULL_SORT: u32 = 0xFFFFFFFFu;

struct OrderParams {
    segments: u32,
    k: u32,
    groups_x: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> order_params: OrderParams;
@group(0) @binding(1) var<storage, read> order_rewards: array<f32>;
@group(0) @binding(2) var<storage, read> order_offsets: array<u32>;
@group(0) @binding(3) var<storage, read_write> ranks: array<u32>;
@group(0) @binding(4) var<storage, read_write> sorted_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> sorted_index: array<u32>;

var<workgroup> tile_keys: array<u32, ORDER_TILE>;
var<workgroup> segment_span: vec2<u32>;

// NaN ranks with -inf (below every finite reward); -0 ties with +0.
fn reward_key(x: f32) -> u32 {
    return key_from_bits(canonical_bits(bitcast<u32>(x)));
}

@compute @workgroup_size(256)
fn order_segments(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s = wg.x + wg.y * order_params.groups_x;
    if s >= order_params.segments {
        return;
    }
    if lid == 0u {
        let start = order_offsets[s];
        segment_span = vec2<u32>(start, order_offsets[s + 1u] - start);
    }
    let span = workgroupUniformLoad(&segment_span);
    let start = span.x;
    let m = span.y;
    let k = order_params.k;
    for (var base = 0u; base < m; base += ORDER_THREADS * ORDER_PER_THREAD) {
        var my_key: array<u32, ORDER_PER_THREAD>;
        var my_rank: array<u32, ORDER_PER_THREAD>;
        for (var t = 0u; t < ORDER_PER_THREAD; t++) {
            let i = base + lid + t * ORDER_THREADS;
            my_rank[t] = 0u;
            my_key[t] = 0u;
            if i < m {
                my_key[t] = reward_key(order_rewards[start + i]);
            }
        }
        for (var tile = 0u; tile < m; tile += ORDER_TILE) {
            workgroupBarrier();
            for (var j = lid; j < ORDER_TILE; j += ORDER_THREADS) {
                if tile + j < m {
                    tile_keys[j] = reward_key(order_rewards[start + tile + j]);
                }
            }
            workgroupBarrier();
            let len = min(ORDER_TILE, m - tile);
            for (var t = 0u; t < ORDER_PER_THREAD; t++) {
                let i = base + lid + t * ORDER_THREADS;
                if i >= m {
                    break;
                }
                let key = my_key[t];
                var above = 0u;
                for (var j = 0u; j < len; j++) {
                    let other = tile_keys[j];
                    // Larger keys rank first; equal keys by original index.
                    above += select(0u, 1u, other > key || (other == key && tile + j < i));
                }
                my_rank[t] += above;
            }
        }
        for (var t = 0u; t < ORDER_PER_THREAD; t++) {
            let i = base + lid + t * ORDER_THREADS;
            if i >= m {
                break;
            }
            let rank = my_rank[t];
            ranks[start + i] = rank;
            if k == FULL_SORT {
                sorted_values[start + rank] = order_rewards[start + i];
                sorted_index[start + rank] = i;
            } else if rank < k {
                sorted_values[s * k + rank] = order_rewards[start + i];
                sorted_index[s * k + rank] = i;
            }
        }
    }
    // Top-k rows of short segments are padded: -inf, NO_INDEX.
    if k != FULL_SORT {
        for (var j = m + lid; j < k; j += ORDER_THREADS) {
            sorted_values[s * k + j] = bitcast<f32>(F32_NEG_INF_BITS);
            sorted_index[s * k + j] = NO_INDEX;
        }
    }
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
// A tail whose deviation is at most this share of its mean's size is flat.
const FLAT_TAIL: f32 = 1e-6;
const EULER_GAMMA: f32 = 0.5772157;
const GPD_XI_MIN: f32 = -1.0;
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

fn fit_gaussian_tail(start: u32, m: u32, n: u32, k: u32) -> TailFit {
    var fit: TailFit;
    var taken = 0u;
    var sum = 0.0;
    for (var p = 0u; p < m && taken < k; p++) {
        if est_index[start + p] < n {
            let r = est_sorted[start + p];
            sum += r;
            taken += 1u;
            fit.threshold = r;
        }
    }
    fit.mean = sum / f32(k);
    taken = 0u;
    var squares = 0.0;
    for (var p = 0u; p < m && taken < k; p++) {
        if est_index[start + p] < n {
            let d = est_sorted[start + p] - fit.mean;
            squares += d * d;
            taken += 1u;
        }
    }
    fit.deviation = sqrt(squares / f32(k - 1u));
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

// Sorted reward `d` of the segment with position `skip` removed.
fn sorted_without(start: u32, d: u32, skip: u32) -> f32 {
    return est_sorted[start + d + select(0u, 1u, d >= skip)];
}

// Generalised Pareto fit by probability-weighted moments (Hosking & Wallis
// 1987) to the k exceedances over the (k+1)-th largest reward, with position
// `skip` removed (none when skip >= m), and the expected best of N from it
// with exceedance rate k / total.
fn gpd_best_of_n(start: u32, k: u32, skip: u32, total: u32) -> f32 {
    let u = sorted_without(start, k, skip);
    var a0 = 0.0;
    var a1 = 0.0;
    for (var d = 0u; d < k; d++) {
        let y = sorted_without(start, d, skip) - u;
        a0 += y;
        // Descending position d has plotting position (k − d − 0.35) / k.
        a1 += (f32(d) + 0.35) / f32(k) * y;
    }
    a0 = a0 / f32(k);
    a1 = a1 / f32(k);
    if a0 <= 0.0 {
        return u;
    }
    let denom = a0 - 2.0 * a1;
    var xi = GPD_XI_MAX;
    var sigma = 0.0;
    if denom > 0.0 {
        xi = 2.0 - a0 / denom;
        sigma = 2.0 * a0 * a1 / denom;
    }
    if xi < GPD_XI_MIN || xi > GPD_XI_MAX || denom <= 0.0 {
        xi = clamp(xi, GPD_XI_MIN, GPD_XI_MAX);
        // The mean exceedance of a GPD is σ / (1 − ξ).
        sigma = a0 * (1.0 - xi);
    }
    // (σ/ξ)[(Nζ)^ξ Γ(1−ξ) − 1] = σ (L + g) · exprel(ξ (L + g)), L = ln Nζ,
    // g = lnΓ(1−ξ)/ξ: no division by ξ, and the ξ → 0 limit σ(L + γ) is exact.
    let spread = log(f32(est.n) * f32(k) / f32(total)) + ln_gamma_one_minus_over(xi);
    return u + sigma * spread * exprel(xi * spread);
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

@compute @workgroup_size(64)
fn estimate(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s = (wg.x + wg.y * est.groups_x) * 64u + lid;
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
            // w_i = C(i−1, N−1) / C(m, N): w_m = N / m, w_{i−1} = w_i (i−N)/(i−1).
            var w = f32(n) / f32(m);
            var suffix = 0.0;
            value = 0.0;
            for (var p = 0u; p < m; p++) {
                let i = m - p;
                let r = est_sorted[start + p];
                var own = 0.0;
                if i >= n {
                    own = w * r;
                }
                value += own;
                advantages[start + est_index[start + p]] = own + suffix;
                if i >= 2u {
                    // C(i−2, N−2) / C(m, N) = w_i (N−1)/(i−1).
                    suffix += w * f32(n - 1u) / f32(i - 1u) * r;
                }
                if i > n {
                    w = w * f32(i - n) / f32(i - 1u);
                } else {
                    w = 0.0;
                }
            }
            // Equal rewards share their credit equally.
            var run = 0u;
            while run < m {
                let key = reward_key(est_sorted[start + run]);
                var end = run + 1u;
                var sum = advantages[start + est_index[start + run]];
                while end < m && reward_key(est_sorted[start + end]) == key {
                    sum += advantages[start + est_index[start + end]];
                    end += 1u;
                }
                let mean = sum / f32(end - run);
                for (var p = run; p < end; p++) {
                    advantages[start + est_index[start + p]] = mean;
                }
                run = end;
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
                // A wrong rollout's chance that a k-subset holding it still
                // passes: 1 − C(m−c−1, k−1) / C(m−1, k−1).
                var all_wrong = 0.0;
                if m - c >= k {
                    all_wrong = 1.0;
                    for (var i = m - c; i <= m - 1u; i++) {
                        all_wrong *= 1.0 - f32(k - 1u) / f32(i);
                    }
                }
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
            value = gpd_best_of_n(start, k, m, m);
            if sorted_without(start, 0u, m) == sorted_without(start, k, m) {
                status = STATUS_FLAT;
            }
            // Jackknife influence (m − 1)(V₋below − V₋j) of each tail rollout,
            // measured from the removal of a rollout below the tail (which all
            // share, so they get 0).
            let below = gpd_best_of_n(start, k, m, m - 1u);
            for (var j = 0u; j <= k; j++) {
                let without = gpd_best_of_n(start, k, j, m - 1u);
                advantages[start + est_index[start + j]] = f32(m - 1u) * (below - without);
            }
        }
        case EST_GRPO: {
            var sum = 0.0;
            for (var i = 0u; i < m; i++) {
                sum += est_rewards[start + i];
            }
            let mean = sum / max(f32(m), 1.0);
            var squares = 0.0;
            var lo = bitcast<f32>(F32_POS_INF_BITS);
            var hi = bitcast<f32>(F32_NEG_INF_BITS);
            for (var i = 0u; i < m; i++) {
                let r = est_rewards[start + i];
                let d = r - mean;
                squares += d * d;
                lo = min(lo, r);
                hi = max(hi, r);
            }
            var deviation = 0.0;
            if m > 1u {
                deviation = sqrt(squares / (f32(m) - 1.0));
            }
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
