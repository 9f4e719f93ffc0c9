//! `rollcall bench --quick` runs every family and reports coherent rows (no
//! timing is asserted: speed is measured, not tested).

#[path = "../../rollcall/tests/common/gpu.rs"]
mod common;

#[test]
fn bench_command_covers_every_family() {
    if common::gpu().is_none() {
        return;
    }
    let json = bench_json(&["--quick", "--iters", "2"]);
    let rows = json["rows"].as_array().unwrap();
    // The quick grid has no 128 256 rows: the batch-1 ratios are reported as
    // absent, not made up.
    let batch_one = &json["batch_one_over_batch_64_per_row"];
    assert!(batch_one.is_object(), "{json}");
    assert!(
        batch_one["unsplit"].is_null()
            && batch_one["split"].is_null()
            && batch_one["dispatch_floor_ms"].is_null(),
        "{batch_one}"
    );
    for family in ["sampling", "voting", "compact", "tail"] {
        assert!(
            rows.iter().any(|r| r["family"] == family),
            "{family} missing"
        );
    }
    assert!(
        rows.iter().any(|r| r["family"] == "sampling"
            && r["kernel"].as_str().unwrap().starts_with("read-once + exp")),
        "the exp-per-logit ceiling row is missing"
    );
    // What an empty timed span costs is reported beside the rows.
    assert!(json["timing_bracket_ms"].as_f64().unwrap() >= 0.0, "{json}");
    assert_eq!(
        json["min_span_ms"].as_f64(),
        Some(rollcall_cli::bench::MIN_SPAN.as_secs_f64() * 1e3)
    );
    for r in rows {
        let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
        // Only sampling kernels (which give the same output when run again)
        // are repeated within a span.
        let repeats = r["repeats"]
            .as_u64()
            .unwrap_or_else(|| panic!("repeats in {r}"));
        assert!(
            (1..=u64::from(rollcall_cli::bench::MAX_REPEATS)).contains(&repeats),
            "{r}"
        );
        if r["family"] != "sampling" {
            assert_eq!(repeats, 1, "{r}");
        }
        assert!(num("median_ms") > 0.0 && num("read_once_ms") > 0.0, "{r}");
        assert!(
            num("bytes_read") > 0.0 && num("ratio_to_read_once") > 0.0,
            "{r}"
        );
        // Yardstick rows (the read-once kernel with an exp per logit) have
        // no CPU twin; every kernel row has one.
        if r["kernel"].as_str().unwrap().starts_with("read-once") {
            assert!(r["cpu_twin_ms"].is_null(), "{r}");
        } else {
            assert!(num("cpu_twin_ms") >= 0.0, "{r}");
        }
        let moved = num("bytes_read") + num("bytes_written");
        let gbps = moved / (num("median_ms") * 1e-3) / 1e9;
        assert!(
            (gbps - num("gb_per_s")).abs() <= 1e-6 * gbps.max(1.0),
            "{r}"
        );
    }
    // --only times just the rows it names.
    let json = bench_json(&[
        "--quick",
        "--iters",
        "1",
        "--no-cpu",
        "--only",
        "plain T=1, f32",
        "--only",
        "sort + tea",
    ]);
    let kernels: Vec<&str> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kernel"].as_str().unwrap())
        .collect();
    // The yardstick probe always runs: every ratio depends on it.
    assert_eq!(
        kernels,
        [
            rollcall_cli::bench::YARDSTICK_PROBE,
            "plain T=1, f32",
            "sort + tea"
        ],
        "{json}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["bench", "--quick", "--families", "sorting"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown bench family"));
}

/// `rollcall bench --json` with `args`, which must succeed.
fn bench_json(args: &[&str]) -> serde_json::Value {
    rollcall_json("bench", args)
}

/// `rollcall COMMAND ARGS --json`, which must succeed.
fn rollcall_json(command: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg(command)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `rollcall sample` checks every row against the CPU twin and times the
/// sampler against a read of the same bytes: the logits themselves for f32,
/// plain words for 16-bit logits.
#[test]
fn sample_command_checks_rows_and_names_its_yardstick() {
    if common::gpu().is_none() {
        return;
    }
    for (dtype, reads) in [("f32", "logits"), ("bf16", "words"), ("f16", "words")] {
        let json = rollcall_json(
            "sample",
            &[
                "--batch", "3", "--vocab", "1001", "--top-p", "0.9", "--dtype", dtype, "--iters",
                "2",
            ],
        );
        assert_eq!(json["check"]["rows"], 3, "{json}");
        assert_eq!(json["check"]["mismatch"], 0, "{json}");
        assert_eq!(json["check"]["engine_vs_host_mismatch"], 0, "{json}");
        assert_eq!(json["read_once_reads"], reads, "{json}");
        let runs = json["runs_per_span"].as_u64().unwrap();
        assert!(
            (1..=u64::from(rollcall_cli::bench::MAX_REPEATS)).contains(&runs),
            "{json}"
        );
        assert!(
            json["sampler_to_read_once"].as_f64().unwrap() > 0.0,
            "{json}"
        );
    }
}
