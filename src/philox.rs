//! Philox4x32-10 (Salmon et al., SC'11), the counter-based generator shared by
//! the GPU kernels and their CPU twins: a pure function of (counter, key).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Ten Philox rounds of `counter` under `key`; identical to `philox4x32_10` in
/// `shaders/philox.wgsl`.
///
/// ```
/// // Random123 known-answer vector.
/// assert_eq!(
///     rollcall::philox::philox4x32_10([0; 4], [0; 2]),
///     [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
/// );
/// ```
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for _ in 0..10 {
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// Standard exponential from one 32-bit word, with full resolution near zero;
/// the same f32 operations as `exponential_from_bits` in the shader.
///
/// ```
/// let e = rollcall::philox::exponential_from_bits(0);
/// assert!(e > 0.0 && e < 1e-9);
/// ```
pub fn exponential_from_bits(x: u32) -> f32 {
    let v = ((x as f32) + 0.5) * 2.328_306_4e-10_f32;
    let v = v.min(0.999_999_94);
    if v < 0.0625 {
        return v
            * (1.0
                + v * (0.5
                    + v * (0.333_333_34
                        + v * (0.25
                            + v * (0.2 + v * (0.166_666_67 + v * (0.142_857_15 + v * 0.125)))))));
    }
    -(1.0 - v).ln()
}

/// Splits a u64 into (low, high) u32 words, the order the shaders use.
pub fn split_u64(x: u64) -> [u32; 2] {
    [x as u32, (x >> 32) as u32]
}
