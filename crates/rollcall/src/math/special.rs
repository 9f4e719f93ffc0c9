//! Special functions: the f32 ones mirror `shaders/shared/special.wgsl`
//! operation for operation (log-gamma, incomplete beta and gamma, erf); the
//! f64 ones serve host-side constants.

/// ln(2π) / 2.
pub(crate) const HALF_LN_TWO_PI: f32 = 0.918_938_5;
pub(crate) const LN_2: f32 = std::f32::consts::LN_2;
/// 2^64, exactly representable.
pub(crate) const TWO_POW_64: f32 = 18_446_744_073_709_551_616.0;

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
pub(crate) fn stirling_tail(x: f32) -> f32 {
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
pub(crate) const TINY: f32 = 1e-30;

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

/// `z` with `P(Z > z) = alpha` for a standard normal `Z`: bisection on the
/// upper tail `erfc(z / √2) / 2` (exact to the last bits of `erfc`, no table).
/// `alpha` outside (0, 1) gives NaN.
pub(crate) fn normal_upper_quantile(alpha: f64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) {
        return f64::NAN;
    }
    let upper = |z: f64| 0.5 * libm::erfc(z / std::f64::consts::SQRT_2);
    // The upper tail falls monotonically; at ±40 it is 0 and 1 in f64.
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid == lo || mid == hi {
            break;
        }
        if upper(mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_quantile_matches_known_values() {
        // Φ⁻¹(0.975) = 1.959963984540054, Φ⁻¹(0.5) = 0, Φ⁻¹(1 − 1e-9).
        assert!((normal_upper_quantile(0.025) - 1.959_963_984_540_054).abs() < 1e-12);
        assert!(normal_upper_quantile(0.5).abs() < 1e-15);
        assert!((normal_upper_quantile(1e-9) - 5.997_807_015_007_686).abs() < 1e-9);
        assert!((normal_upper_quantile(0.975) + 1.959_963_984_540_054).abs() < 1e-12);
        assert!(normal_upper_quantile(0.0).is_nan());
        assert!(normal_upper_quantile(f64::NAN).is_nan());
    }
}
