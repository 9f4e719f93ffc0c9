//! Sizes the command cannot allocate are refused with a message naming them
//! and exit code 2, before anything of their size is allocated: never an
//! abort on a host allocation, never a wgpu validation panic.

#[path = "../../rollcall/tests/common/gpu.rs"]
mod common;

use std::process::{Command, Output};

/// Rollcall's bound on host memory (8 GiB), as the command states it.
const HOST_BOUND: &str = "8.0 GiB (8589934592 bytes)";

fn rollcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .output()
        .unwrap()
}

/// Exit code 2, no panic, and the error names every one of `needles`.
fn assert_refused(args: &[&str], needles: &[&str]) {
    let out = rollcall(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: no {needle:?} in {stderr}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "{args:?}: a refusal prints no report"
    );
}

#[test]
fn sample_refuses_a_batch_too_large_for_host_memory() {
    // 100 000 rows of a Llama-3 vocabulary: 51 GB of f32 logits.
    assert_refused(
        &["sample", "--batch", "100000", "--vocab", "128256"],
        &[
            "--batch 100000 x --vocab 128256 (f32) is too large",
            "of host memory",
            HOST_BOUND,
        ],
    );
    assert_refused(
        &[
            "sample", "--batch", "100000", "--vocab", "128256", "--dtype", "bf16", "--json",
        ],
        &["--batch 100000 x --vocab 128256 (bf16)", "of host memory"],
    );
}

#[test]
fn sample_refuses_sizes_that_overflow() {
    // rows x vocab overflows u32 (2^32 logits): 16 GiB of f32.
    assert_refused(
        &["sample", "--batch", "65536", "--vocab", "65536"],
        &["--batch 65536 x --vocab 65536 (f32)", "of host memory"],
    );
    // rows x vocab x 4 overflows u64.
    assert_refused(
        &["sample", "--batch", "4294967295", "--vocab", "4294967295"],
        &["overflow 64-bit arithmetic", HOST_BOUND],
    );
    // Per-row state alone: 2^32 - 1 rows of one token.
    assert_refused(
        &["sample", "--batch", "4294967295", "--vocab", "1"],
        &["--batch 4294967295 x --vocab 1", "of host memory"],
    );
    // Past u32 the command line itself refuses.
    assert_refused(&["sample", "--batch", "4294967296"], &["--batch"]);
    assert_refused(&["sample", "--vocab", "4294967296"], &["--vocab"]);
}

#[test]
fn bad_parameters_are_still_reported_before_sizes() {
    assert_refused(
        &[
            "sample",
            "--batch",
            "100000",
            "--vocab",
            "128256",
            "--temperature=-1",
        ],
        &["row 0: temperature must be finite and >= 0, got -1"],
    );
    assert_refused(
        &["sample", "--batch", "100000", "--vocab", "0"],
        &["vocab must be at least 1"],
    );
}

#[test]
fn tail_and_vote_refuse_sizes_too_large_for_host_memory() {
    assert_refused(
        &["tail", "--cpu", "--prompts", "4294967295", "--m", "8,16384"],
        &[
            "--prompts 4294967295 x --m 16384 is too large",
            "of host memory",
        ],
    );
    assert_refused(
        &["vote", "--cpu", "--synthetic-questions", "100000000"],
        &[
            "--synthetic-questions 100000000 is too large",
            "of host memory",
        ],
    );
    assert_refused(
        &[
            "vote",
            "--cpu",
            "--synthetic-questions",
            &u64::MAX.to_string(),
        ],
        &["overflow 64-bit arithmetic"],
    );
}

/// Sizes within the host bound that the adapter cannot hold: refused by its
/// limits, where wgpu would otherwise panic on a validation error.
#[test]
fn sizes_past_the_adapters_limits_are_refused() {
    let Some(ctx) = common::gpu() else { return };
    let limits = ctx.limits();
    let max_buffer = limits.max_buffer_size;
    let max_binding = limits.max_storage_buffer_binding_size.min(max_buffer);
    // Within the host bound (8 GiB; these are over-estimates of what the
    // command counts), so the adapter's limit is what refuses them.
    let host_fits = |bytes: u64| bytes < 15 << 29;
    let mut skipped = Vec::new();

    // bf16 logits one row past the largest buffer.
    let vocab = 128_256u64;
    let rows = max_buffer / (vocab * 2) + 1;
    if rows <= u64::from(u32::MAX) && host_fits(rows * vocab * 6 + rows * 512) {
        assert_refused(
            &[
                "sample",
                "--batch",
                &rows.to_string(),
                "--vocab",
                &vocab.to_string(),
                "--dtype",
                "bf16",
            ],
            &["in one device buffer", "max buffer size"],
        );
    } else {
        skipped.push("sample logits");
    }

    // Per-row parameters past the storage binding limit.
    let rows = max_binding / rollcall::SampleBatch::PARAMS_BYTES_PER_ROW + 1;
    if rows <= u64::from(u32::MAX) && host_fits(rows * 512) {
        assert_refused(
            &["sample", "--batch", &rows.to_string(), "--vocab", "1"],
            &[&format!("--batch {rows} is too large"), "storage binding"],
        );
    } else {
        skipped.push("sample parameters");
    }

    // Vote tables: 64 answers of 8 bytes per question.
    let questions = max_binding / 512 + 1;
    if host_fits(questions * 4096) {
        assert_refused(
            &[
                "vote",
                "--synthetic-questions",
                &questions.to_string(),
                "--rules",
                "fixed",
                "--shuffles",
                "1",
            ],
            &["the vote tables", "storage binding"],
        );
    } else {
        skipped.push("vote tables");
    }

    // Tail: two rewards per prompt, as many rewards as the binding holds
    // words; the chunked sort's list (two words per segment) is larger.
    let prompts = max_binding / 8;
    if prompts <= u64::from(u32::MAX) && host_fits(prompts * 64) {
        assert_refused(
            &[
                "tail",
                "--prompts",
                &prompts.to_string(),
                "--m",
                "2",
                "--estimators",
                "tea",
            ],
            &[
                &format!("--prompts {prompts} x --m 2 is too large"),
                "tail kernels",
            ],
        );
    } else {
        skipped.push("tail");
    }
    if !skipped.is_empty() {
        eprintln!("this adapter's limits are beyond the host bound for: {skipped:?}");
    }
    assert!(
        skipped.len() < 4,
        "no check ran: every limit of this adapter is beyond the host bound"
    );
}
