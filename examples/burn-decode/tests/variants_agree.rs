//! The decode loop at a small size on whatever adapter burn opens (lavapipe
//! in CI): rollcall on burn's buffer gives the CPU twin's tokens on every
//! row (greedy and seeded, with the repetition penalty's history kept on
//! the device), and host sampling agrees on the greedy rows; rollcall makes
//! one submit a step and reads tokens back only every `readback_every`
//! steps.

use rollcall_burn_decode::{DecodeConfig, Decoder, Variant};

#[test]
fn gpu_path_twin_and_host_sampling_agree() {
    let config = DecodeConfig {
        batch: 8,
        steps: 12,
        vocab: 32_000,
        width: 64,
        layers: 1,
        readback_every: 5,
        seed: 7,
    };
    let decoder = Decoder::new(config).expect("burn opens a wgpu device (lavapipe in CI)");
    let gpu = decoder.run(Variant::RollcallGpu, false).unwrap();
    let twin = decoder.run(Variant::RollcallTwin, false).unwrap();
    let host = decoder.run(Variant::HostBaseline, false).unwrap();
    for r in 0..config.batch {
        assert_eq!(gpu.tokens[r].len(), config.steps, "row {r}");
        assert_eq!(
            gpu.tokens[r], twin.tokens[r],
            "row {r}: GPU path against the twin"
        );
        if r % 4 == 0 {
            assert_eq!(
                gpu.tokens[r], host.tokens[r],
                "greedy row {r}: against host sampling"
            );
        }
    }
    // Sampled rows are not all one token (the draw is live).
    assert!((0..config.batch).filter(|r| r % 4 != 0).any(|r| {
        let t = &gpu.tokens[r];
        t.iter().any(|&x| x != t[0])
    }));
    // One submit a step; readbacks at steps 5, 10 and the end.
    assert_eq!(gpu.rollcall_submits, config.steps as u64);
    assert_eq!(gpu.readbacks, 3);
    // The host variants read the logits back every step.
    assert_eq!(host.readbacks, config.steps as u64);
}
