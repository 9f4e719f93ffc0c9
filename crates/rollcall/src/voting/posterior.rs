//! Posterior and test statistics for the stopping rules, in f32 with the same
//! operations as `shaders/posterior.wgsl` (the CPU twin of its math).

use crate::math::special::{
    erf, gamma_p, incomplete_beta_half, ln_1p, ln_gamma, stirling_tail, HALF_LN_TWO_PI, TWO_POW_64,
};

/// Posterior probability that the leader's share beats the runner-up's,
/// `P(p_L > p_S)`, under a symmetric `Beta(prior, prior)` prior:
/// `1 − I_½(v_L + prior, v_S + prior)`. With the uniform prior (1) and whole
/// counts it is the binomial sum `2^−n' Σ_{k ≤ v_L} C(n', k)`, n' = v_L + v_S + 1,
/// summed in log space.
///
/// ```
/// use rollcall::voting::posterior::beta_leader_probability;
/// assert!((beta_leader_probability(4, 0, 1.0) - 0.96875).abs() < 1e-6);
/// assert!((beta_leader_probability(3, 0, 1.0) - 0.9375).abs() < 1e-6);
/// ```
pub fn beta_leader_probability(leader: u32, runner_up: u32, prior: f32) -> f32 {
    if prior == 1.0 {
        // The tail Σ_{j ≤ v_S} C(n', j) / 2^n' is the runner-up's side: terms by
        // their ratios in linear space, rescaled by 2^-64 whenever they grow
        // large, so nothing overflows and no large logarithm loses digits.
        // u32 arithmetic as the shader's (wrapping, never a panic).
        let n = leader.wrapping_add(runner_up).wrapping_add(1) as f32;
        let mut term = 1.0f32;
        let mut tail = 1.0f32;
        let mut scale = -n; // the sum is tail * 2^scale
        let mut j = 0u32;
        while j < runner_up {
            let jf = j as f32;
            term *= (n - jf) / (jf + 1.0);
            tail += term;
            if tail > TWO_POW_64 {
                term /= TWO_POW_64;
                tail /= TWO_POW_64;
                scale += 64.0;
            }
            j += 1;
        }
        return 1.0 - tail * scale.exp2();
    }
    1.0 - incomplete_beta_half(leader as f32 + prior, runner_up as f32 + prior)
}

/// Nodes of the Dirichlet integral: 48 panels of four Gauss–Legendre nodes.
pub(crate) const DIRICHLET_NODES: u32 = 192;
/// The four-point Gauss–Legendre rule on [−1, 1]: nodes ±`GAUSS4_INNER` with
/// weight `GAUSS4_INNER_WEIGHT`, ±`GAUSS4_OUTER` with `GAUSS4_OUTER_WEIGHT`.
pub(crate) const GAUSS4_INNER: f32 = 0.339_981_05;
pub(crate) const GAUSS4_OUTER: f32 = 0.861_136_3;
pub(crate) const GAUSS4_INNER_WEIGHT: f32 = 0.652_145_15;
pub(crate) const GAUSS4_OUTER_WEIGHT: f32 = 0.347_854_85;

/// Probability that the leader is the mode of `Dirichlet(alphas)`:
/// `P(G_L > max_{j≠L} G_j)` with `G_j ~ Gamma(alpha_j)`, as the 1-D integral
/// `∫ g_{α_L}(x) Π_{j≠L} P(α_j, x) dx` over the bulk of `g_{α_L}` (mean ± 12
/// standard deviations and 12 more above, clipped at 0).
///
/// Near 0 the integrand is `x^(σ−1)` (σ = Σ α_j) times a smooth function of
/// x, which plain rules integrate poorly when σ is small. So the range
/// `[lo, lo + w]` is mapped from `t ∈ [0, 1]` by `x = lo + w t^m` with
/// `m = ⌈2σ⌉ / σ` (at least 2): in t the integrand is `t^(⌈2σ⌉−1)`, a whole
/// power, times a smooth function of `t^m`. The t range is cut into 48
/// panels of four Gauss–Legendre nodes each (192 evaluations, none at an
/// endpoint). The Gamma density is taken in logs, with Stirling's series for
/// lnΓ(α_L) when α_L ≥ 8 so that its large terms cancel in closed form
/// rather than in f32. Against f64 references the error is a few 1e-6 for
/// σ ≥ 0.07 and α_L up to 10^3 (a few 1e-5 at 2·10^4). Below σ ≈ 0.065
/// `t^m` underflows f32 at the first nodes, which then count nothing: the
/// result is low by about 4e-3 at σ = 0.05 and 0.1 at σ = 0.02.
///
/// ```
/// use rollcall::voting::posterior::dirichlet_mode_probability;
/// // Counts [7, 2, 1, 1, 1, 1, 1] with a uniform prior (+1 each).
/// let p = dirichlet_mode_probability(&[8.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0], 0);
/// assert!((p - 0.882).abs() < 0.001, "{p}");
/// // Symmetric: each of k answers is the mode with probability 1/k.
/// let p = dirichlet_mode_probability(&[0.5, 0.5, 0.5], 0);
/// assert!((p - 1.0 / 3.0).abs() < 1e-5, "{p}");
/// // A leader that is not one of the answers has no probability.
/// assert!(dirichlet_mode_probability(&[8.0], 1).is_nan());
/// ```
pub fn dirichlet_mode_probability(alphas: &[f32], leader: usize) -> f32 {
    let Some(&a) = alphas.get(leader) else {
        return f32::NAN;
    };
    let lo = (a - 12.0 * a.sqrt()).max(0.0);
    let w = a + 12.0 * a.sqrt() + 12.0 - lo;
    let mut sigma = 0.0f32;
    for &aj in alphas {
        sigma += aj;
    }
    let m = (2.0 * sigma).ceil() / sigma;
    // g(x) dx/dt = x^(a−1) e^−x / Γ(a) · m w t^(m−1): its constant factor in
    // logs. For a ≥ 8 lnΓ(a) is Stirling's series, whose (a − ½) ln a − a
    // cancels against (a − 1) ln x − x in closed form (as in `gamma_p`).
    let stirling = a >= 8.0;
    let ln_norm = if stirling {
        0.5 * a.ln() - HALF_LN_TWO_PI - stirling_tail(a)
    } else {
        -ln_gamma(a)
    };
    let ln_scale = ln_norm + (m * w).ln();
    let h = 1.0 / (DIRICHLET_NODES / 4) as f32;
    let mut sum = 0.0f32;
    for panel in 0..DIRICHLET_NODES / 4 {
        let centre = (panel as f32 + 0.5) * h;
        for q in 0..4u32 {
            let (mut node, mut weight) = (GAUSS4_OUTER, GAUSS4_OUTER_WEIGHT);
            if q == 1 || q == 2 {
                (node, weight) = (GAUSS4_INNER, GAUSS4_INNER_WEIGHT);
            }
            if q < 2 {
                node = -node;
            }
            let t = centre + 0.5 * h * node;
            let ln_t = t.ln();
            let x = lo + w * (m * ln_t).exp();
            if x <= 0.0 {
                continue;
            }
            let ln_x = x.ln();
            let ln_density = if stirling {
                let u = (x - a) / a;
                a * (ln_1p(u) - u) - ln_x
            } else {
                (a - 1.0) * ln_x - x
            };
            let mut f = (ln_density + ln_scale + (m - 1.0) * ln_t).exp();
            for (j, &aj) in alphas.iter().enumerate() {
                if j != leader {
                    f *= gamma_p(aj, x);
                }
            }
            sum += weight * f;
        }
    }
    (0.5 * h * sum).min(1.0)
}

/// Priors at least this large use the normal approximation of the Beta tail.
pub const MSPRT_NORMAL_PRIOR: f32 = 1.0e4;

/// ConSol's mixture SPRT: the log likelihood ratio of "the leader's share
/// among the top two is ~ Beta(prior, prior) truncated to (½, 1)" against
/// "it is ½", for `leader` ≥ `runner_up` votes:
/// `ln[B(v_L + a, v_S + a) / B(a, a)] + (v_L + v_S) ln 2 + ln[2 (1 − I_½(v_L + a, v_S + a))]`.
/// The Beta ratio is a sum of `ln(1 + k/a)` terms (no cancellation at
/// a = 10^6); the tail uses the continued fraction, or for priors of 10^4 and
/// more its normal approximation.
pub fn msprt_log_ratio(leader: u32, runner_up: u32, prior: f32) -> f32 {
    let a = prior;
    let mut ratio = 0.0f32;
    let mut k = 0u32;
    while k < leader {
        ratio += ln_1p(k as f32 / a);
        k += 1;
    }
    k = 0;
    while k < runner_up {
        ratio += ln_1p(k as f32 / a);
        k += 1;
    }
    k = 0;
    // u32 arithmetic as the shader's (wrapping, never a panic).
    while k < leader.wrapping_add(runner_up) {
        ratio -= ln_1p(k as f32 / (2.0 * a));
        k += 1;
    }
    let big_a = leader as f32 + a;
    let big_b = runner_up as f32 + a;
    let tail_term = if a >= MSPRT_NORMAL_PRIOR {
        // P(X > ½) = Φ(z), z = (μ − ½)/σ; ln 2Φ(z) = ln(1 + erf(z/√2)).
        let s = big_a + big_b;
        let mu_minus_half = (leader as f32 - runner_up as f32) / (2.0 * s);
        let sigma = (big_a * big_b / (s * s * (s + 1.0))).sqrt();
        ln_1p(erf(mu_minus_half / sigma * std::f32::consts::FRAC_1_SQRT_2))
    } else {
        (2.0 * incomplete_beta_half(big_b, big_a)).ln()
    };
    ratio + tail_term
}

/// Risk that the runner-up overtakes the leader by the budget: the next
/// `remaining` votes between the two split Beta-Binomially with a symmetric
/// `Beta(prior, prior)` prior updated by the counts, and the runner-up must
/// end strictly ahead (a final tie stays with the leader). Summed from the
/// pmf's ratio recurrence, in linear space, so it needs no lnΓ differences.
///
/// ```
/// use rollcall::voting::posterior::overtake_risk;
/// assert_eq!(overtake_risk(5, 0, 4, 1.0), 0.0); // 4 more votes cannot overturn 5-0
/// assert!(overtake_risk(3, 2, 20, 1.0) > 0.2);
/// ```
pub fn overtake_risk(leader: u32, runner_up: u32, remaining: u32, prior: f32) -> f32 {
    // The runner-up overtakes with k leader votes of `remaining` when
    // runner_up + remaining − k > leader + k.
    let lead = leader as i64 - runner_up as i64;
    let limit = remaining as i64 - lead; // overtakes iff 2k < limit
    if limit <= 0 {
        return 0.0;
    }
    let a = leader as f32 + prior;
    let b = runner_up as f32 + prior;
    let r = remaining as f32;
    // pmf(0) = Π_{j<R} (b + j) / (a + b + j).
    let mut log_p0 = 0.0f32;
    let mut j = 0u32;
    while j < remaining {
        let jf = j as f32;
        log_p0 += ln_1p(-a / (a + b + jf));
        j += 1;
    }
    let mut pmf = log_p0.exp();
    let mut risk = 0.0f32;
    let mut k = 0u32;
    while 2 * (k as i64) < limit && k <= remaining {
        risk += pmf;
        let kf = k as f32;
        pmf *= (r - kf) / (kf + 1.0) * (kf + a) / (r - kf - 1.0 + b);
        k += 1;
    }
    risk.min(1.0)
}
