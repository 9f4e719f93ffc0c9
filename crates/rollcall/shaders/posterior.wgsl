// The stopping rules' posterior statistics in f32; mirrored operation for
// operation by src/voting/posterior.rs (the CPU twin).

#include "shared/special.wgsl"

// P(p_L > p_S) under a symmetric Beta(prior, prior) prior.
fn beta_leader_probability(leader: u32, runner_up: u32, prior: f32) -> f32 {
    if prior == 1.0 {
        let n = f32(leader + runner_up + 1u);
        var term = 1.0;
        var tail = 1.0;
        var scale = -n;
        for (var j = 0u; j < runner_up; j++) {
            let jf = f32(j);
            term *= (n - jf) / (jf + 1.0);
            tail += term;
            if tail > TWO_POW_64 {
                term /= TWO_POW_64;
                tail /= TWO_POW_64;
                scale += 64.0;
            }
        }
        return 1.0 - tail * exp2(scale);
    }
    return 1.0 - incomplete_beta_half(f32(leader) + prior, f32(runner_up) + prior);
}

const MSPRT_NORMAL_PRIOR: f32 = 1.0e4;

// ConSol's mixture SPRT log likelihood ratio (see src/voting/posterior.rs).
fn msprt_log_ratio(leader: u32, runner_up: u32, prior: f32) -> f32 {
    let a = prior;
    var ratio = 0.0;
    for (var k = 0u; k < leader; k++) {
        ratio += ln_1p(f32(k) / a);
    }
    for (var k = 0u; k < runner_up; k++) {
        ratio += ln_1p(f32(k) / a);
    }
    for (var k = 0u; k < leader + runner_up; k++) {
        ratio -= ln_1p(f32(k) / (2.0 * a));
    }
    let big_a = f32(leader) + a;
    let big_b = f32(runner_up) + a;
    var tail_term: f32;
    if a >= MSPRT_NORMAL_PRIOR {
        let s = big_a + big_b;
        let mu_minus_half = (f32(leader) - f32(runner_up)) / (2.0 * s);
        let sigma = sqrt(big_a * big_b / (s * s * (s + 1.0)));
        tail_term = ln_1p(erf_approx(mu_minus_half / sigma * 0.70710677));
    } else {
        tail_term = log(2.0 * incomplete_beta_half(big_b, big_a));
    }
    return ratio + tail_term;
}

// Risk that the runner-up ends strictly ahead after `remaining` more votes
// between the two (see src/voting/posterior.rs).
fn overtake_risk(leader: u32, runner_up: u32, remaining: u32, prior: f32) -> f32 {
    let limit = i32(remaining) - (i32(leader) - i32(runner_up));
    if limit <= 0 {
        return 0.0;
    }
    let a = f32(leader) + prior;
    let b = f32(runner_up) + prior;
    let r = f32(remaining);
    var log_p0 = 0.0;
    for (var j = 0u; j < remaining; j++) {
        log_p0 += ln_1p(-a / (a + b + f32(j)));
    }
    var pmf = exp(log_p0);
    var risk = 0.0;
    for (var k = 0u; 2 * i32(k) < limit && k <= remaining; k++) {
        risk += pmf;
        let kf = f32(k);
        pmf *= (r - kf) / (kf + 1.0) * (kf + a) / (r - kf - 1.0 + b);
    }
    return min(risk, 1.0);
}
