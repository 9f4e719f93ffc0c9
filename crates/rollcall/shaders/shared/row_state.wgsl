// A sampled row's distribution, as a later kernel needs it to evaluate the
// probability of any token without redoing the filters: written by the
// sampling kernels for rows whose flags ask for it (FLAG_WRITE_STATE), read
// by speculative verification's residual draw. Needs `shared/keys.wgsl`. A token's probability is
// exp((z - kept_max) - log_kept_mass) when it is kept (is_kept with the
// filter fields below), with +inf in the row uniform over the +inf tokens.

const STATE_HAS_INF: u32 = 1u;
const STATE_MIN_P: u32 = 2u;
const STATE_SIGMA: u32 = 4u;

struct StateRecord {
    row_max: f32,
    log_mass: f32,       // ln of the row's Σ exp(z - row_max), unfiltered
    kept_max: f32,
    log_kept_mass: f32,  // ln of the kept tokens' Σ exp(z - kept_max)
    threshold_key: u32,  // top-k / top-p boundary (order-preserving key)
    flags: u32,          // STATE_HAS_INF | STATE_MIN_P | STATE_SIGMA
    log_min_p: f32,
    sigma_n2: f32,
    sigma_rhs: f32,
    inf_count: u32,
    inv_temperature: f32,
    mask_row: u32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
}

// Whether a token with scaled bits `z_bits` survives the row's filters.
fn state_keeps(st: StateRecord, z_bits: u32) -> bool {
    if (st.flags & STATE_HAS_INF) != 0u {
        return z_bits == F32_POS_INF_BITS;
    }
    if !is_finite_bits(z_bits) || key_from_bits(z_bits) < st.threshold_key {
        return false;
    }
    let z = bitcast<f32>(z_bits);
    let d = st.row_max - z;
    return ((st.flags & STATE_MIN_P) == 0u || (z - st.row_max) >= st.log_min_p)
        && ((st.flags & STATE_SIGMA) == 0u || !((d * d) * st.sigma_n2 > st.sigma_rhs));
}

// A token's probability under the row's kept set.
fn state_probability(st: StateRecord, z_bits: u32) -> f32 {
    if !state_keeps(st, z_bits) {
        return 0.0;
    }
    if (st.flags & STATE_HAS_INF) != 0u {
        return exp(-log(f32(st.inf_count)));
    }
    return exp((bitcast<f32>(z_bits) - st.kept_max) - st.log_kept_mass);
}
