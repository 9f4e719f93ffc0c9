// Float classification by bits (WGSL lets implementations assume no inf/NaN in
// arithmetic, so never test them with float comparisons), order-preserving u32
// keys, and 64-bit unsigned sums as (hi, lo) pairs.

const F32_POS_INF_BITS: u32 = 0x7F800000u;
const F32_NEG_INF_BITS: u32 = 0xFF800000u;
const KEY_NEG_INF: u32 = 0x007FFFFFu;  // key of -inf: below every finite key
const KEY_POS_INF: u32 = 0xFF800000u;  // key of +inf: above every finite key
const NO_INDEX: u32 = 0xFFFFFFFFu;

fn is_finite_bits(bits: u32) -> bool {
    return (bits & 0x7F800000u) != 0x7F800000u;
}

// NaN and -inf both become -inf; -0 becomes +0 so that equal values get equal keys.
fn canonical_bits(bits: u32) -> u32 {
    if (bits & 0x7FFFFFFFu) > 0x7F800000u || bits == F32_NEG_INF_BITS {
        return F32_NEG_INF_BITS;
    }
    if bits == 0x80000000u {
        return 0u;
    }
    return bits;
}

// Canonical bits of a scaled logit z = l * inv_t (l's bits `raw`): NaN and
// -inf become -inf, +inf stays +inf (inv_t is a positive normal number).
fn scaled_logit_bits(raw: u32, inv_t: f32) -> u32 {
    if !is_finite_bits(raw) {
        return canonical_bits(raw);
    }
    return canonical_bits(bitcast<u32>(bitcast<f32>(raw) * inv_t));
}

// Monotone map from (canonical) f32 bits to u32: flip all bits of negatives,
// the sign bit of positives.
fn key_from_bits(bits: u32) -> u32 {
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn bits_from_key(key: u32) -> u32 {
    if (key & 0x80000000u) != 0u {
        return key & 0x7FFFFFFFu;
    }
    return ~key;
}

// (hi, lo) + (hi, lo), wrapping at 2^64.
fn add_u64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.y + b.y;
    let carry = select(0u, 1u, lo < a.y);
    return vec2<u32>(a.x + b.x + carry, lo);
}

// Rounded f32 of a (hi, lo) sum; monotone in the sum, and the Rust twin does the
// same two f32 operations.
fn u64_to_f32(a: vec2<u32>) -> f32 {
    return f32(a.x) * 4294967296.0 + f32(a.y);
}

// Exact f32 bits of IEEE half bits (subnormals, inf and NaN included); integer
// only, so it needs no f16 capability.
fn f32_bits_from_f16_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let exponent = h & 0x7C00u;
    let shifted = (h & 0x7FFFu) << 13u;
    // Normal: rebias the exponent (15 -> 127). Inf/NaN: all-ones exponent,
    // payload kept. Subnormal or zero: mantissa * 2^-24 is exact in f32.
    let normal = shifted + 0x38000000u;
    let special = shifted | 0x7F800000u;
    let small = bitcast<u32>(f32(h & 0x3FFu) * 5.9604644775390625e-8);
    return sign | select(select(normal, special, exponent == 0x7C00u), small, exponent == 0u);
}
