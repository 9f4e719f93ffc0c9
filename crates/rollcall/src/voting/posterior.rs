//! Posterior and test statistics for the stopping rules, in f32 with the same
//! operations as `shaders/voting_rules.wgsl` (the CPU twin of its math).

/// ln(2π) / 2.
const HALF_LN_TWO_PI: f32 = 0.918_938_5;
const LN_2: f32 = std::f32::consts::LN_2;
/// 2^64, exactly representable.
const TWO_POW_64: f32 = 18_446_744_073_709_551_616.0;

/// `ln(1 + u)` accurate for small `u` (the classic correction: exact when
/// `1 + u` rounds to 1).
pub fn ln_1p(u: f32) -> f32 {
    let w = 1.0 + u;
    if w == 1.0 {
        return u;
    }
    w.ln() * u / (w - 1.0)
}

/// Stirling remainder `lnΓ(x) − [(x − ½) ln x − x + ½ ln 2π]` for x ≥ 8.
fn stirling_tail(x: f32) -> f32 {
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0))))
}

/// `lnΓ(x)` for x > 0: shifted up to x ≥ 8, then Stirling's series.
pub fn ln_gamma(x: f32) -> f32 {
    let mut y = x;
    let mut shift = 0.0;
    while y < 8.0 {
        shift += y.ln();
        y += 1.0;
    }
    (y - 0.5) * y.ln() - y + HALF_LN_TWO_PI + stirling_tail(y) - shift
}

/// `ln[(½)^(a+b) / B(a, b)]`, the log of the prefactor of `I_½(a, b)`,
/// without the cancellation of large lnΓ terms when a and b are large.
pub fn ln_half_prefactor(a: f32, b: f32) -> f32 {
    let s = a + b;
    if a >= 8.0 && b >= 8.0 {
        // Stirling on all three Γs; the large terms cancel analytically.
        let da = (a - b) / s;
        return -(a - 0.5) * ln_1p(da) - (b - 0.5) * ln_1p(-da) + 0.5 * s.ln()
            - LN_2
            - HALF_LN_TWO_PI
            - stirling_tail(a)
            - stirling_tail(b)
            + stirling_tail(s);
    }
    // One argument is small: lnB = lnΓ(small) − [lnΓ(large + small) − lnΓ(large)].
    let (small, large) = if a < b { (a, b) } else { (b, a) };
    -s * LN_2 - ln_gamma(small) + ln_gamma_ratio(large, small)
}

/// `lnΓ(x + a) − lnΓ(x)` for a ≥ 0, stable when x is large and a small.
pub fn ln_gamma_ratio(x: f32, a: f32) -> f32 {
    if x < 8.0 || a >= 8.0 {
        return ln_gamma(x + a) - ln_gamma(x);
    }
    // Whole steps by logs, then the fractional step by its asymptotic series.
    let whole = a.floor();
    let frac = a - whole;
    let mut sum = 0.0;
    let mut k = 0.0;
    while k < whole {
        sum += (x + k).ln();
        k += 1.0;
    }
    let y = x + whole;
    if frac == 0.0 {
        return sum;
    }
    // lnΓ(y + f) − lnΓ(y) = f ln y + [f(f−1)/2]/y + ... (y ≥ 8).
    let inv = 1.0 / y;
    let f = frac;
    let series = f * (f - 1.0) * 0.5 * inv - f * (f - 1.0) * (2.0 * f - 1.0) / 12.0 * inv * inv
        + f * f * (f - 1.0) * (f - 1.0) / 12.0 * inv * inv * inv;
    sum + f * y.ln() + series
}

/// Lentz's guard against a zero denominator (the shader's `clamp_tiny`).
const TINY: f32 = 1e-30;

fn clamp_tiny(v: f32) -> f32 {
    if v.abs() < TINY {
        TINY
    } else {
        v
    }
}

/// Continued fraction of the regularised incomplete beta (modified Lentz).
fn beta_continued_fraction(a: f32, b: f32, x: f32) -> f32 {
    let mut c = 1.0f32;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = clamp_tiny(d);
    d = 1.0 / d;
    let mut h = d;
    let mut m = 1.0f32;
    while m < 400.0 {
        let m2 = 2.0 * m;
        let even = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 + even * d;
        d = clamp_tiny(d);
        c = 1.0 + even / c;
        c = clamp_tiny(c);
        d = 1.0 / d;
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 + odd * d;
        d = clamp_tiny(d);
        c = 1.0 + odd / c;
        c = clamp_tiny(c);
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-7 {
            break;
        }
        m += 1.0;
    }
    h
}

/// `I_½(a, b)`, the regularised incomplete beta at one half.
pub fn incomplete_beta_half(a: f32, b: f32) -> f32 {
    // The fraction converges fast for x < (a + 1) / (a + b + 2), at x = ½ when
    // a > b; else use I_x(a, b) = 1 − I_{1−x}(b, a).
    if a > b {
        (ln_half_prefactor(a, b).exp() * beta_continued_fraction(a, b, 0.5) / a).min(1.0)
    } else {
        1.0 - (ln_half_prefactor(b, a).exp() * beta_continued_fraction(b, a, 0.5) / b).min(1.0)
    }
}

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
        let n = (leader + runner_up + 1) as f32;
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

/// Regularised lower incomplete gamma `P(a, x)` (series below a + 1, else the
/// continued fraction of the upper tail).
pub fn gamma_p(a: f32, x: f32) -> f32 {
    if x <= 0.0 {
        return 0.0;
    }
    // ln(x^a e^-x / Γ(a)); for large a through Stirling, so that a ln x and
    // lnΓ(a) do not cancel in f32.
    let log_front = if a >= 8.0 {
        let u = (x - a) / a;
        a * (ln_1p(u) - u) + 0.5 * a.ln() - HALF_LN_TWO_PI - stirling_tail(a)
    } else {
        a * x.ln() - x - ln_gamma(a)
    };
    if x < a + 1.0 {
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut k = 1.0f32;
        while k < 500.0 {
            term *= x / (a + k);
            sum += term;
            if term < sum * 1e-8 {
                break;
            }
            k += 1.0;
        }
        return (sum * log_front.exp()).min(1.0);
    }
    // Upper tail Q by the Lentz continued fraction.
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    let mut i = 1.0f32;
    while i < 500.0 {
        let an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        d = clamp_tiny(d);
        c = b + an / c;
        c = clamp_tiny(c);
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-7 {
            break;
        }
        i += 1.0;
    }
    (1.0 - log_front.exp() * h).max(0.0)
}

/// Nodes of the Dirichlet integral's Simpson rule.
pub const DIRICHLET_NODES: u32 = 256;

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
/// ```
pub fn dirichlet_mode_probability(alphas: &[f32], leader: usize) -> f32 {
    let a = alphas[leader];
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

/// `erf(x)`: its series below ½ (relative error under 3e-8), else
/// Abramowitz–Stegun 7.1.26 (absolute error under 1.5e-7).
pub fn erf(x: f32) -> f32 {
    let ax = x.abs();
    if ax < 0.5 {
        let x2 = x * x;
        return x
            * std::f32::consts::FRAC_2_SQRT_PI
            * (1.0
                - x2 * (1.0 / 3.0
                    - x2 * (0.1 - x2 * (1.0 / 42.0 - x2 * (1.0 / 216.0 - x2 / 1320.0)))));
    }
    let t = 1.0 / (1.0 + 0.327_591_1 * ax);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-ax * ax).exp();
    if x < 0.0 {
        -y
    } else {
        y
    }
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
    while k < leader + runner_up {
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
