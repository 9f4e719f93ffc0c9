//! Posterior and test statistics for the stopping rules, in f32 with the same
//! operations as `shaders/posterior.wgsl` (the CPU twin of its math).

use crate::math::special::{erf, gamma_p, incomplete_beta_half, ln_1p, ln_gamma, TWO_POW_64};

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

/// Nodes of the Dirichlet integral's Simpson rule.
pub(crate) const DIRICHLET_NODES: u32 = 256;

/// Probability that the leader is the mode of `Dirichlet(alphas)`:
/// `P(G_L > max_{j≠L} G_j)` with `G_j ~ Gamma(alpha_j)`, as the 1-D integral
/// `∫ g_{α_L}(x) Π_{j≠L} P(α_j, x) dx` by Simpson's rule on 256 intervals over
/// the bulk of `g_{α_L}` (mean ± 12 standard deviations, clipped at 0).
///
/// ```
/// use rollcall::voting::posterior::dirichlet_mode_probability;
/// // Counts [7, 2, 1, 1, 1, 1, 1] with a uniform prior (+1 each).
/// let p = dirichlet_mode_probability(&[8.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0], 0);
/// assert!((p - 0.882).abs() < 0.001, "{p}");
/// // A leader that is not one of the answers has no probability.
/// assert!(dirichlet_mode_probability(&[8.0], 1).is_nan());
/// ```
pub fn dirichlet_mode_probability(alphas: &[f32], leader: usize) -> f32 {
    let Some(&a) = alphas.get(leader) else {
        return f32::NAN;
    };
    let lo = (a - 12.0 * a.sqrt()).max(0.0);
    let hi = a + 12.0 * a.sqrt() + 12.0;
    let h = (hi - lo) / DIRICHLET_NODES as f32;
    let ln_norm = ln_gamma(a);
    let mut sum = 0.0f32;
    for i in 0..=DIRICHLET_NODES {
        let x = lo + i as f32 * h;
        if x <= 0.0 {
            continue;
        }
        let mut f = ((a - 1.0) * x.ln() - x - ln_norm).exp();
        for (j, &aj) in alphas.iter().enumerate() {
            if j != leader {
                f *= gamma_p(aj, x);
            }
        }
        let weight = if i == 0 || i == DIRICHLET_NODES {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        sum += weight * f;
    }
    (sum * h / 3.0).min(1.0)
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
