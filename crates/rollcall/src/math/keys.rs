//! Float classification by bits, order-preserving u32 keys and 64-bit sums
//! rounded to f32: the twin of `shaders/shared/keys.wgsl`.

pub(crate) const NEG_INF_BITS: u32 = 0xFF80_0000;

/// Whether f32 `bits` are finite (not ±inf, not NaN).
pub(crate) fn is_finite_bits(bits: u32) -> bool {
    bits & 0x7F80_0000 != 0x7F80_0000
}

/// Canonical bits: NaN and −inf become −inf, −0 becomes +0.
pub(crate) fn canonical_bits(bits: u32) -> u32 {
    if (bits & 0x7FFF_FFFF) > 0x7F80_0000 || bits == NEG_INF_BITS {
        return NEG_INF_BITS;
    }
    if bits == 0x8000_0000 {
        return 0;
    }
    bits
}

/// Order-preserving u32 key of canonical f32 bits.
pub(crate) fn key_from_bits(bits: u32) -> u32 {
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// A 64-bit sum rounded to f32 with the shader's two f32 operations.
pub(crate) fn u64_to_f32(x: u64) -> f32 {
    ((x >> 32) as u32) as f32 * 4_294_967_296.0 + (x as u32) as f32
}
