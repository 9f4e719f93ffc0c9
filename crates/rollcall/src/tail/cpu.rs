//! CPU twin of `shaders/tail.wgsl`: the same order (exactly) and the same
//! estimators with the same f32 operations in the same order (results agree
//! to rounding: the GPU's `exp`, `log` and fused multiply-adds may differ in
//! the last bits).

use super::{
    reject_nan, validate_offsets, Estimates, Estimator, Ordered, SegmentStatus, TopK, MAX_TOP_K,
    NO_INDEX,
};
use crate::math::keys::{canonical_bits, key_from_bits};
use crate::math::segment::{segment_product_scan, segment_scan, segment_sum};
use crate::math::special::ln_gamma;
use crate::{Error, Result};

pub(crate) const FLAT_TAIL: f32 = 1e-6;
pub(crate) const EULER_GAMMA: f32 = 0.577_215_7;
pub(crate) const GPD_XI_MAX: f32 = 0.5;

/// The order key of a reward: NaN with −inf, −0 with +0.
pub(crate) fn reward_key(r: f32) -> u32 {
    key_from_bits(canonical_bits(r.to_bits()))
}

/// One segment's order: in-segment indices, best first, ties by index.
fn segment_order(rewards: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..rewards.len() as u32).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(reward_key(rewards[i as usize])));
    order
}

/// Segmented sort (twin of `order_segments` with the full sort).
///
/// ```
/// let sorted = rollcall::tail::cpu::order(&[1.0, 3.0, 3.0, 2.0, 5.0], &[0, 4, 5]).unwrap();
/// assert_eq!(sorted.sorted_index, vec![1, 2, 3, 0, 0]);
/// assert_eq!(sorted.ranks, vec![3, 0, 1, 2, 0]);
/// ```
pub fn order(rewards: &[f32], offsets: &[u32]) -> Result<Ordered> {
    validate_offsets(offsets, rewards.len())?;
    reject_nan(rewards, false)?;
    Ok(order_unchecked(rewards, offsets))
}

fn order_unchecked(rewards: &[f32], offsets: &[u32]) -> Ordered {
    let n = rewards.len();
    let mut out = Ordered {
        ranks: vec![0; n],
        sorted_values: vec![0.0; n],
        sorted_index: vec![0; n],
    };
    for w in offsets.windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        for (rank, &i) in segment_order(&rewards[start..end]).iter().enumerate() {
            out.ranks[start + i as usize] = rank as u32;
            out.sorted_values[start + rank] = rewards[start + i as usize];
            out.sorted_index[start + rank] = i;
        }
    }
    out
}

/// Top-k rows (twin of `order_segments` with k).
///
/// ```
/// let top = rollcall::tail::cpu::top_k(&[1.0, 3.0, 2.0, 5.0], &[0, 3, 4], 2).unwrap();
/// assert_eq!(top.values[..3], [3.0, 2.0, 5.0]);
/// assert_eq!(top.indices, vec![1, 2, 0, rollcall::tail::NO_INDEX]);
/// ```
pub fn top_k(rewards: &[f32], offsets: &[u32], k: u32) -> Result<TopK> {
    validate_offsets(offsets, rewards.len())?;
    reject_nan(rewards, false)?;
    if k == 0 || k > MAX_TOP_K {
        return Err(Error::InvalidArgument(format!(
            "top-k needs 1 <= k <= {MAX_TOP_K}, got {k}"
        )));
    }
    let ordered = order_unchecked(rewards, offsets);
    let segments = offsets.len() - 1;
    let k = k as usize;
    let slots = segments
        .checked_mul(k)
        .ok_or_else(|| Error::InvalidArgument(format!("{segments} segments x k {k} overflow")))?;
    let mut values = crate::voting::cpu::filled(slots, f32::NEG_INFINITY)?;
    let mut indices = crate::voting::cpu::filled(slots, NO_INDEX)?;
    for (s, w) in offsets.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        for j in 0..k.min(end - start) {
            values[s * k + j] = ordered.sorted_values[start + j];
            indices[s * k + j] = ordered.sorted_index[start + j];
        }
    }
    Ok(TopK {
        k: k as u32,
        values,
        indices,
        ranks: ordered.ranks,
    })
}

/// Each segment's value and every rollout's advantage (twin of `estimate`).
///
/// ```
/// use rollcall::tail::{cpu, Estimator};
/// // Best of 2 from 3 rewards: (0·1/3 + 1·1/3 + 2·2/3)... = mean of pair maxima.
/// let est = cpu::estimate(&[0.0, 1.0, 2.0], &[0, 3], Estimator::ExpectedMax { n: 2 }).unwrap();
/// assert!((est.values[0] - (1.0 + 2.0 + 2.0) / 3.0).abs() < 1e-6);
/// ```
pub fn estimate(rewards: &[f32], offsets: &[u32], estimator: Estimator) -> Result<Estimates> {
    // The estimator first, then the batch: the GPU's order of checks.
    estimator.validate()?;
    validate_offsets(offsets, rewards.len())?;
    reject_nan(rewards, true)?;
    let params = estimator.gpu_params((offsets.len() - 1) as u32, 1)?;
    let ordered = order_unchecked(rewards, offsets);
    let mut out = Estimates {
        values: Vec::with_capacity(offsets.len() - 1),
        status: Vec::with_capacity(offsets.len() - 1),
        advantages: vec![0.0; rewards.len()],
    };
    for w in offsets.windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let seg = Segment {
            rewards: &rewards[start..end],
            sorted: &ordered.sorted_values[start..end],
            index: &ordered.sorted_index[start..end],
            p: &params,
        };
        let (value, status) = seg.estimate(&mut out.advantages[start..end]);
        out.values.push(value);
        out.status.push(status);
    }
    Ok(out)
}

#[derive(Clone, Copy, Default)]
struct TailFit {
    threshold: f32,
    mean: f32,
    deviation: f32,
}

impl TailFit {
    fn is_flat(&self) -> bool {
        self.deviation <= FLAT_TAIL * self.mean.abs()
    }
}

fn tail_count(alpha: f32, m: u32) -> u32 {
    (alpha * m as f32 - 1e-3).ceil().max(0.0) as u32
}

fn exprel(t: f32) -> f32 {
    if t.abs() > 0.5 {
        return (t.exp() - 1.0) / t;
    }
    let mut series = 1.0f32 / 40320.0;
    for divisor in [5040.0f32, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0] {
        series = series * t + 1.0 / divisor;
    }
    series
}

/// `lnΓ(1 − ξ)/ξ` (series for |ξ| ≤ ¼, as the shader).
fn ln_gamma_one_minus_over(xi: f32) -> f32 {
    if xi.abs() > 0.25 {
        return ln_gamma(1.0 - xi) / xi;
    }
    // ζ(2)..ζ(12), spelled as in the shader.
    #[allow(clippy::excessive_precision)]
    const ZETA: [f32; 11] = [
        1.644_934_1,
        1.202_056_9,
        1.082_323_2,
        1.036_927_8,
        1.017_343_1,
        1.008_349_3,
        1.004_077_4,
        1.002_008_4,
        1.000_994_6,
        1.000_494_2,
        1.000_246_1,
    ];
    let mut series = ZETA[10] / 12.0;
    for j in (2..=11).rev() {
        series = series * xi + ZETA[j - 2] / j as f32;
    }
    series * xi + EULER_GAMMA
}

#[derive(Clone, Copy)]
struct GpdMoments {
    u: f32,
    a0: f32,
    a1: f32,
}

#[derive(Clone, Copy)]
struct GpdFit {
    xi: f32,
    sigma: f32,
    value: f32,
    linear: bool,
}

fn gpd_h(xi: f32, log_n_zeta: f32) -> f32 {
    let spread = log_n_zeta + ln_gamma_one_minus_over(xi);
    spread * exprel(xi * spread)
}

/// Twin of the shader's `gpd_fit`.
fn gpd_fit(mo: GpdMoments, log_n_zeta: f32, top: f32) -> GpdFit {
    let mut fit = GpdFit {
        xi: 0.0,
        sigma: 0.0,
        value: mo.u,
        linear: false,
    };
    if mo.a0 <= 0.0 {
        return fit;
    }
    let denom = mo.a0 - 2.0 * mo.a1;
    if denom <= 0.0 {
        fit.value = top;
        return fit;
    }
    fit.xi = 2.0 - mo.a0 / denom;
    fit.sigma = 2.0 * mo.a0 * mo.a1 / denom;
    if fit.xi > GPD_XI_MAX {
        fit.xi = GPD_XI_MAX;
        fit.sigma = mo.a0 * (1.0 - fit.xi);
        fit.value = mo.u + fit.sigma * gpd_h(fit.xi, log_n_zeta);
        return fit;
    }
    if fit.xi <= -1.0 {
        fit.value = (mo.u - fit.sigma / fit.xi).min(top);
        return fit;
    }
    let value = mo.u + fit.sigma * gpd_h(fit.xi, log_n_zeta);
    if fit.xi < 0.0 && value >= mo.u - fit.sigma / fit.xi {
        fit.value = mo.u - fit.sigma / fit.xi;
        return fit;
    }
    fit.value = value;
    fit.linear = true;
    fit
}

struct Segment<'a> {
    rewards: &'a [f32],
    sorted: &'a [f32],
    index: &'a [u32],
    p: &'a super::EstimateParams,
}

impl Segment<'_> {
    fn m(&self) -> u32 {
        self.rewards.len() as u32
    }

    /// The Gaussian fit of the `k` largest rewards among the first `n`
    /// rollouts: their sums over the tail's ranks in the segment shape.
    fn fit_gaussian_tail(&self, n: u32, k: u32) -> TailFit {
        let tail: Vec<f32> = self
            .sorted
            .iter()
            .zip(self.index)
            .filter(|(_, &i)| i < n)
            .map(|(&r, _)| r)
            .take(k as usize)
            .collect();
        let k = tail.len();
        let mean = segment_sum(k, |q| tail[q]) / k as f32;
        let squares = segment_sum(k, |q| {
            let d = tail[q] - mean;
            d * d
        });
        TailFit {
            threshold: tail[k - 1],
            mean,
            deviation: (squares / (k - 1) as f32).sqrt(),
        }
    }

    fn gaussian_tail_value(&self, fit: &TailFit) -> f32 {
        if fit.is_flat() {
            fit.mean
        } else {
            fit.mean + self.p.c_tilde * fit.deviation
        }
    }

    fn gaussian_tail_advantage(&self, fit: &TailFit, r: f32) -> f32 {
        let mut a = r - fit.threshold;
        if !fit.is_flat() {
            let dr = r - fit.mean;
            let dt = fit.threshold - fit.mean;
            a += self.p.c_tilde * (dr * dr - dt * dt) / (2.0 * fit.deviation);
        }
        a / self.p.alpha
    }

    fn add_gaussian_tail_advantages(
        &self,
        adv: &mut [f32],
        n: u32,
        k: u32,
        fit: &TailFit,
        weight: f32,
    ) {
        let mut taken = 0;
        for (p, &r) in self.sorted.iter().enumerate() {
            if taken >= k {
                break;
            }
            let i = self.index[p];
            if i < n {
                adv[i as usize] += weight * self.gaussian_tail_advantage(fit, r);
                taken += 1;
            }
        }
    }

    /// The probability-weighted moments of the top k over u, the (k+1)-th
    /// largest reward: sums over the tail in the segment shape.
    fn gpd_moments(&self, k: u32) -> GpdMoments {
        let (ku, kf) = (k as usize, k as f32);
        let u = self.sorted[ku];
        let y = |d: usize| self.sorted[d] - u;
        GpdMoments {
            u,
            a0: segment_sum(ku, y) / kf,
            a1: segment_sum(ku, |d| (d as f32 + 0.35) / kf * y(d)) / kf,
        }
    }

    /// The segment's value and status; writes its advantages into `adv`
    /// (zeroed by the caller).
    fn estimate(&self, adv: &mut [f32]) -> (f32, SegmentStatus) {
        let m = self.m();
        if m == 0 {
            return (f32::NAN, SegmentStatus::Empty);
        }
        let too_few = (f32::NAN, SegmentStatus::TooFew);
        match self.p.kind {
            0 => {
                let n = self.p.n;
                if m < n {
                    return too_few;
                }
                // Ascending order statistic i = m − p has weight
                // w_i = C(i−1, N−1) / C(m, N): w_m = N / m, then the factors
                // (i−N)/(i−1), multiplied in the segment shape.
                let mu = m as usize;
                let sorted = self.sorted;
                let w = segment_product_scan(mu, n as f32 / m as f32, |p| {
                    let i = m - p as u32;
                    if i > n {
                        (i - n) as f32 / (i - 1) as f32
                    } else {
                        0.0
                    }
                });
                let own = |p: usize| {
                    if m - p as u32 >= n {
                        w[p] * sorted[p]
                    } else {
                        0.0
                    }
                };
                // C(i−2, N−2) / C(m, N) = w_i (N−1)/(i−1): the suffix's terms.
                let up = |p: usize| {
                    let i = m - p as u32;
                    if i >= 2 {
                        w[p] * (n - 1) as f32 / (i - 1) as f32 * sorted[p]
                    } else {
                        0.0
                    }
                };
                let value = segment_sum(mu, own);
                let suffix = segment_scan(mu, up);
                for p in 0..mu {
                    adv[self.index[p] as usize] = own(p) + suffix[p];
                }
                let mut run = 0usize;
                while run < m as usize {
                    let key = reward_key(self.sorted[run]);
                    let mut end = run + 1;
                    let mut sum = adv[self.index[run] as usize];
                    while end < m as usize && reward_key(self.sorted[end]) == key {
                        sum += adv[self.index[end] as usize];
                        end += 1;
                    }
                    let mean = sum / (end - run) as f32;
                    for p in run..end {
                        adv[self.index[p] as usize] = mean;
                    }
                    run = end;
                }
                (value, SegmentStatus::Ok)
            }
            1 => {
                let k = self.p.n;
                if m < k {
                    return too_few;
                }
                let threshold = self.p.threshold;
                let c = self.rewards.iter().filter(|&&r| r >= threshold).count() as u32;
                let rho = pass_at_k(m, c, k);
                let sigma = (rho * (1.0 - rho)).sqrt();
                if sigma > 0.0 {
                    let mut all_wrong = 0.0f32;
                    if m - c >= k {
                        all_wrong = 1.0;
                        for i in m - c..m {
                            all_wrong *= 1.0 - (k - 1) as f32 / i as f32;
                        }
                    }
                    for (a, &r) in adv.iter_mut().zip(self.rewards) {
                        *a = if r >= threshold {
                            (1.0 - rho) / sigma
                        } else {
                            (1.0 - rho - all_wrong) / sigma
                        };
                    }
                }
                (rho, SegmentStatus::Ok)
            }
            2 => {
                let k = tail_count(self.p.alpha, m);
                if k < 2 {
                    return too_few;
                }
                let fit = self.fit_gaussian_tail(m, k);
                let value = self.gaussian_tail_value(&fit);
                self.add_gaussian_tail_advantages(adv, m, k, &fit, 1.0);
                let status = if fit.is_flat() {
                    SegmentStatus::Flat
                } else {
                    SegmentStatus::Ok
                };
                (value, status)
            }
            3 => {
                let prefixes = self.p.prefixes;
                let mut sizes: Vec<u32> = Vec::with_capacity(prefixes as usize);
                for j in 1..=prefixes {
                    let n = (j * m).div_ceil(prefixes);
                    if tail_count(self.p.alpha, n) >= 2 && sizes.last() != Some(&n) {
                        sizes.push(n);
                    }
                }
                let k = tail_count(self.p.alpha, m);
                if k < 2 {
                    return too_few;
                }
                if sizes.len() < 2 {
                    let fit = self.fit_gaussian_tail(m, k);
                    self.add_gaussian_tail_advantages(adv, m, k, &fit, 1.0);
                    return (self.gaussian_tail_value(&fit), SegmentStatus::Fallback);
                }
                let mut s1 = 0.0f32;
                let mut s2 = 0.0f32;
                for &n in &sizes {
                    let inv = 1.0 / n as f32;
                    s1 += inv;
                    s2 += inv * inv;
                }
                let det = sizes.len() as f32 * s2 - s1 * s1;
                let mut value = 0.0f32;
                let mut flat = false;
                for &n in &sizes {
                    let weight = (s2 - s1 / n as f32) / det;
                    let kj = tail_count(self.p.alpha, n);
                    let fit = self.fit_gaussian_tail(n, kj);
                    flat = flat || fit.is_flat();
                    value += weight * self.gaussian_tail_value(&fit);
                    self.add_gaussian_tail_advantages(adv, n, kj, &fit, weight);
                }
                let status = if flat {
                    SegmentStatus::Flat
                } else {
                    SegmentStatus::Ok
                };
                (value, status)
            }
            4 => {
                let k = tail_count(self.p.alpha, m);
                if k < 2 || m < k + 2 {
                    return too_few;
                }
                let sorted = self.sorted;
                let (ku, top) = (k as usize, sorted[0]);
                let base = self.gpd_moments(k);
                let n = self.p.n as f32;
                let value = gpd_fit(base, (n * k as f32 / m as f32).ln(), top).value;
                let status = if top == sorted[ku - 1] {
                    SegmentStatus::Flat
                } else {
                    SegmentStatus::Ok
                };
                let log_n_zeta = (n * k as f32 / (m - 1) as f32).ln();
                let fit_b = gpd_fit(base, log_n_zeta, top);
                let du = sorted[ku + 1] - sorted[ku];
                let weights = k as f32 * (k as f32 - 1.0) * 0.5 + 0.35 * k as f32;
                // suffix(j) = Σ_{d=j}^{k−1} (d + 0.35)(R_(d+1) − R_(d)), a scan
                // over t = k − 1 − d in the segment shape (0 at j = k).
                let term = |t: usize| {
                    let d = ku - 1 - t;
                    (d as f32 + 0.35) * (sorted[d + 1] - sorted[d])
                };
                let scan = segment_scan(ku, term);
                for j in (0..=ku).rev() {
                    let suffix = if j < ku {
                        let t = ku - 1 - j;
                        scan[t] + term(t)
                    } else {
                        0.0
                    };
                    let da0 = ((sorted[ku] - sorted[j]) - k as f32 * du) / k as f32;
                    let da1 = (suffix - du * weights) / (k as f32 * k as f32);
                    let mo = GpdMoments {
                        u: base.u + du,
                        a0: base.a0 + da0,
                        a1: base.a1 + da1,
                    };
                    let top_j = sorted[usize::from(j == 0)];
                    let fit_j = gpd_fit(mo, log_n_zeta, top_j);
                    let mut dv = fit_j.value - fit_b.value;
                    if fit_b.linear && fit_j.linear {
                        let d_b = base.a0 - 2.0 * base.a1;
                        let dd = da0 - 2.0 * da1;
                        let d_j = d_b + dd;
                        let dsigma = 2.0
                            * (d_b * (base.a0 * da1 + base.a1 * da0 + da0 * da1)
                                - base.a0 * base.a1 * dd)
                            / (d_j * d_b);
                        let dxi = -(da0 * d_b - base.a0 * dd) / (d_j * d_b);
                        let h_j = gpd_h(fit_j.xi, log_n_zeta);
                        let mut dh = h_j - gpd_h(fit_b.xi, log_n_zeta);
                        if dxi.abs() < 0.01 {
                            let mid = fit_b.xi + 0.5 * dxi;
                            dh = (gpd_h(mid + 0.001, log_n_zeta) - gpd_h(mid - 0.001, log_n_zeta))
                                / 0.002
                                * dxi;
                        }
                        dv = du + dsigma * h_j + fit_b.sigma * dh;
                    }
                    adv[self.index[j] as usize] = -((m - 1) as f32) * dv;
                }
                (value, status)
            }
            _ => {
                let stats = crate::voting::rewards::GroupStats::of(self.rewards);
                if !stats.flat {
                    for (a, &r) in adv.iter_mut().zip(self.rewards) {
                        *a = (r - stats.mean) / (stats.deviation + self.p.threshold);
                    }
                }
                let status = if stats.flat {
                    SegmentStatus::Flat
                } else {
                    SegmentStatus::Ok
                };
                (stats.mean, status)
            }
        }
    }
}

/// pass@k from m samples with c correct: `1 − Π_{i=m−c+1}^{m} (1 − k/i)`, 1
/// when `m − c < k` (the kernel's f32 product); NaN when `c > m`.
///
/// ```
/// // 1 − C(3, 2)/C(5, 2) = 1 − 3/10.
/// assert!((rollcall::tail::cpu::pass_at_k(5, 2, 2) - 0.7).abs() < 1e-6);
/// ```
pub fn pass_at_k(m: u32, c: u32, k: u32) -> f32 {
    if c > m {
        return f32::NAN;
    }
    if m - c < k {
        return 1.0;
    }
    let mut miss = 1.0f32;
    for i in m - c + 1..=m {
        miss *= 1.0 - k as f32 / i as f32;
    }
    1.0 - miss
}
