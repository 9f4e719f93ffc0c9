//! Special functions of the host side in f64 (the shaders' f32 special
//! functions and their twins are in `voting::posterior`).

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
