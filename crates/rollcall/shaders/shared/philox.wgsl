// Philox4x32-10 (Salmon et al., SC'11), counter-based: the same (counter, key)
// gives the same four words on every device. WGSL has no 32x32->64 multiply,
// so the high word is assembled from 16-bit halves.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// High 32 bits of the 64-bit product a * b.
fn mul_hi_u32(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_lo = a_hi * b_lo;
    let mid = (lo_lo >> 16u) + (lo_hi & 0xFFFFu) + (hi_lo & 0xFFFFu);
    return a_hi * b_hi + (lo_hi >> 16u) + (hi_lo >> 16u) + (mid >> 16u);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        let hi0 = mul_hi_u32(PHILOX_M0, c.x);
        let lo0 = PHILOX_M0 * c.x;
        let hi1 = mul_hi_u32(PHILOX_M1, c.z);
        let lo1 = PHILOX_M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
    }
    return c;
}

// Standard exponential from one 32-bit word, accurate near zero: E = -log1p(-v)
// with v = (x + 0.5) / 2^32. Small E decides which rare token wins a race, so it
// keeps the full 32-bit resolution there (no 2^-24 floor).
fn exponential_from_bits(x: u32) -> f32 {
    let v = min((f32(x) + 0.5) * 2.3283064365386963e-10, 0.99999994);
    if v < 0.0625 {
        // Series of -log1p(-v) to v^8; truncation error below 1e-10 relative.
        return v * (1.0 + v * (0.5 + v * (0.33333334 + v * (0.25 + v * (0.2
            + v * (0.16666667 + v * (0.14285715 + v * 0.125)))))));
    }
    return -log(1.0 - v);
}
