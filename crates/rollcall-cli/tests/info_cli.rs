//! `rollcall info` and `rollcall sample` name the adapter, and add the note
//! on lavapipe exactly when the adapter is wgpu's CPU fallback behind OpenGL.

#[path = "../../rollcall/tests/common/gpu.rs"]
mod common;

use std::process::Command;

const NOTE: &str = "note: this adapter is wgpu's OpenGL fallback on the CPU";

fn run(backend: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.args(args);
    if let Some(backend) = backend {
        cmd.env("WGPU_BACKEND", backend);
    }
    cmd.output().unwrap()
}

fn is_cpu_gl(adapter_line: &str) -> bool {
    adapter_line.contains("(Gl, Cpu,")
}

#[test]
fn info_and_sample_note_a_cpu_adapter_behind_gl() {
    let Some(ctx) = common::gpu() else { return };
    // The adapter the tests run on.
    let out = run(None, &["info"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().unwrap();
    assert_eq!(first, ctx.describe());
    let second = stdout.lines().nth(1).unwrap();
    assert_eq!(second.starts_with(NOTE), is_cpu_gl(first), "{stdout}");
    assert!(stdout.contains("device features: "));

    // wgpu's GL fallback, where the machine has it (Mesa's llvmpipe).
    let out = run(Some("gl"), &["info"]);
    if !out.status.success() {
        eprintln!("no GL adapter here: the GL half is not checked");
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    if !is_cpu_gl(lines[0]) {
        assert!(!stdout.contains(NOTE), "{stdout}");
        return;
    }
    assert!(lines[1].starts_with(NOTE), "{stdout}");
    assert!(stdout.contains("sudo apt-get install mesa-vulkan-drivers"));
    assert!(stdout.contains("bookworm-backports") && stdout.contains(".ci/install-lavapipe.sh"));
    assert!(lines.iter().any(|l| l.starts_with("device features: ")));

    // The sample report names the adapter, then the note; in JSON the note
    // goes to standard error and standard output stays one object.
    let small = ["sample", "--batch", "2", "--vocab", "300", "--iters", "1"];
    let out = run(Some("gl"), &small);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("adapter: ") && is_cpu_gl(lines[0]),
        "{stdout}"
    );
    assert!(lines[1].starts_with(NOTE), "{stdout}");
    let out = run(Some("gl"), &[&small[..], &["--json"]].concat());
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(is_cpu_gl(json["adapter"].as_str().unwrap()), "{json}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(NOTE));
}
