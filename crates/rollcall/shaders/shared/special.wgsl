// Special functions in f32 (log-gamma, incomplete beta and gamma, erf);
// mirrored operation for operation by src/math/special.rs.

const HALF_LN_TWO_PI: f32 = 0.9189385;
const LN_2: f32 = 0.6931472;
const TWO_POW_64: f32 = 18446744073709551616.0;
const TINY: f32 = 1e-30;

// ln(1 + u), accurate for small u.
fn ln_1p(u: f32) -> f32 {
    let w = 1.0 + u;
    if w == 1.0 {
        return u;
    }
    return log(w) * u / (w - 1.0);
}

fn stirling_tail(x: f32) -> f32 {
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    return inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 * (1.0 / 1680.0))));
}

fn ln_gamma(x: f32) -> f32 {
    var y = x;
    var shift = 0.0;
    while y < 8.0 {
        shift += log(y);
        y += 1.0;
    }
    return (y - 0.5) * log(y) - y + HALF_LN_TWO_PI + stirling_tail(y) - shift;
}

// lnΓ(x + a) − lnΓ(x), stable for large x and small a.
fn ln_gamma_ratio(x: f32, a: f32) -> f32 {
    if x < 8.0 || a >= 8.0 {
        return ln_gamma(x + a) - ln_gamma(x);
    }
    let whole = floor(a);
    let f = a - whole;
    var sum = 0.0;
    var k = 0.0;
    while k < whole {
        sum += log(x + k);
        k += 1.0;
    }
    let y = x + whole;
    if f == 0.0 {
        return sum;
    }
    let inv = 1.0 / y;
    let series = f * (f - 1.0) * 0.5 * inv
        - f * (f - 1.0) * (2.0 * f - 1.0) / 12.0 * inv * inv
        + f * f * (f - 1.0) * (f - 1.0) / 12.0 * inv * inv * inv;
    return sum + f * log(y) + series;
}

// ln[(1/2)^(a+b) / B(a, b)].
fn ln_half_prefactor(a: f32, b: f32) -> f32 {
    let s = a + b;
    if a >= 8.0 && b >= 8.0 {
        let da = (a - b) / s;
        return -(a - 0.5) * ln_1p(da) - (b - 0.5) * ln_1p(-da) + 0.5 * log(s)
            - LN_2 - HALF_LN_TWO_PI - stirling_tail(a) - stirling_tail(b) + stirling_tail(s);
    }
    let small = min(a, b);
    let large = max(a, b);
    return -s * LN_2 - ln_gamma(small) + ln_gamma_ratio(large, small);
}

fn clamp_tiny(v: f32) -> f32 {
    return select(v, TINY, abs(v) < TINY);
}

fn beta_continued_fraction(a: f32, b: f32, x: f32) -> f32 {
    var c = 1.0;
    var d = 1.0 / clamp_tiny(1.0 - (a + b) * x / (a + 1.0));
    var h = d;
    var m = 1.0;
    while m < 400.0 {
        let m2 = 2.0 * m;
        let even = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2));
        d = 1.0 / clamp_tiny(1.0 + even * d);
        c = clamp_tiny(1.0 + even / c);
        h *= d * c;
        let odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0));
        d = 1.0 / clamp_tiny(1.0 + odd * d);
        c = clamp_tiny(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if abs(step - 1.0) < 1e-7 {
            break;
        }
        m += 1.0;
    }
    return h;
}

fn incomplete_beta_half(a: f32, b: f32) -> f32 {
    if a > b {
        return min(exp(ln_half_prefactor(a, b)) * beta_continued_fraction(a, b, 0.5) / a, 1.0);
    }
    return 1.0 - min(exp(ln_half_prefactor(b, a)) * beta_continued_fraction(b, a, 0.5) / b, 1.0);
}

// Regularised lower incomplete gamma P(a, x).
fn gamma_p(a: f32, x: f32) -> f32 {
    if x <= 0.0 {
        return 0.0;
    }
    var log_front: f32;
    if a >= 8.0 {
        let u = (x - a) / a;
        log_front = a * (ln_1p(u) - u) + 0.5 * log(a) - HALF_LN_TWO_PI - stirling_tail(a);
    } else {
        log_front = a * log(x) - x - ln_gamma(a);
    }
    if x < a + 1.0 {
        var term = 1.0 / a;
        var sum = term;
        var k = 1.0;
        while k < 500.0 {
            term *= x / (a + k);
            sum += term;
            if term < sum * 1e-8 {
                break;
            }
            k += 1.0;
        }
        return min(sum * exp(log_front), 1.0);
    }
    var b = x + 1.0 - a;
    var c = 1.0 / TINY;
    var d = 1.0 / b;
    var h = d;
    var i = 1.0;
    while i < 500.0 {
        let an = -i * (i - a);
        b += 2.0;
        d = 1.0 / clamp_tiny(an * d + b);
        c = clamp_tiny(b + an / c);
        let step = d * c;
        h *= step;
        if abs(step - 1.0) < 1e-7 {
            break;
        }
        i += 1.0;
    }
    return max(1.0 - exp(log_front) * h, 0.0);
}

// erf: series below 1/2, else Abramowitz-Stegun 7.1.26.
fn erf_approx(x: f32) -> f32 {
    let ax = abs(x);
    if ax < 0.5 {
        let x2 = x * x;
        return x * 1.1283792
            * (1.0 - x2 * (1.0 / 3.0 - x2 * (0.1 - x2 * (1.0 / 42.0 - x2 * (1.0 / 216.0 - x2 / 1320.0)))));
    }
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.2548296 + t * (-0.28449674 + t * (1.4214137 + t * (-1.4531521 + t * 1.0614054))));
    let y = 1.0 - poly * exp(-ax * ax);
    return select(y, -y, x < 0.0);
}
