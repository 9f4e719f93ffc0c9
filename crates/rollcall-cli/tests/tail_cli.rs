//! The `tail` command end to end: JSON, the SVG chart, and typed refusals.

#[path = "../../rollcall/tests/common/gpu.rs"]
mod common;

#[test]
fn tail_command_prints_json_and_writes_svg() {
    // GPU unless opted out (then the CPU twin, which needs no adapter).
    let on_gpu = common::gpu().is_some();
    let svg = std::env::temp_dir().join(format!("rollcall-tail-{}.svg", std::process::id()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.args([
        "tail",
        "--family",
        "exponential",
        "--m",
        "16,64",
        "--n",
        "32",
    ])
    .args(["--prompts", "300", "--json", "--svg"])
    .arg(&svg);
    if !on_gpu {
        cmd.arg("--cpu");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let truth = json["true_best_of_n"].as_f64().unwrap();
    let harmonic: f64 = (1..=32).map(|i| 1.0 / f64::from(i)).sum();
    assert!((truth - harmonic).abs() < 1e-12);
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 4);
    // The exact estimator has no value at m = 16 < N = 32, one at m = 64.
    let exact: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["estimator"] == "exact").collect();
    assert_eq!(exact[0]["no_value"], 300);
    assert_eq!(exact[1]["no_value"], 0);
    assert!(
        exact[1]["bias"].as_f64().unwrap().abs()
            < 4.0 * exact[1]["spread"].as_f64().unwrap() / 300f64.sqrt()
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.contains("prefix-tea") && text.contains("spread"));
    std::fs::remove_file(&svg).ok();
    // Bad input: a typed error and a non-zero exit, no panic.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["tail", "--cpu", "--family", "cauchy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown reward family"));
    for m in ["0", "20000"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["tail", "--cpu", "--m", m, "--svg"])
            .arg(&svg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--m {m}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("rollouts per prompt"));
        assert!(!svg.exists(), "no chart for bad input");
    }
}
