//! `rollcall check --quick` on the test adapter: every check passes, with
//! something compared in each, and the report holds the checks and the
//! benchmark rows.

#[path = "../../rollcall/tests/common/gpu.rs"]
mod common;

#[test]
fn the_adapter_check_passes_and_writes_its_report() {
    if common::gpu().is_none() {
        return;
    }
    let out = std::env::temp_dir().join(format!("rollcall-check-{}.json", std::process::id()));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["check", "--quick", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    std::fs::remove_file(&out).ok();
    assert_eq!(report["passed"], true, "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7, "{report:#}");
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
        assert!(c["compared"].as_u64().unwrap() > 0, "{c}");
    }
    for family in ["sampling", "voting", "compact", "tail"] {
        assert!(
            report["bench"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["family"] == family),
            "{family} missing from the report's benchmark"
        );
    }
    assert!(report["adapter"].as_str().unwrap().len() > 3);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
