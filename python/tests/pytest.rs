//! Runs the Python package's pytest suite under `cargo test`: builds a venv
//! under the target directory (once; reused while the pins below hold),
//! builds the wheel with maturin into the same target directory, installs
//! it, and runs `pytest` on `python/tests`. Fails, never skips, when Python 3,
//! venv or pip is missing.
//!
//! `ROLLCALL_PYTHON` names the interpreter (default `python3`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the venv gets: the build tool and the test dependencies, pinned.
const PINS: &[&str] = &[
    "maturin==1.16.0",
    "pytest==8.4.2",
    "numpy==2.4.6; python_version >= '3.11'",
    "numpy==2.2.6; python_version == '3.10'",
    "numpy==2.0.2; python_version < '3.10'",
];

fn run(what: &str, cmd: &mut Command, hint: &str) {
    eprintln!("pytest.rs: {what}: {cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: could not start {cmd:?}: {e}. {hint}"));
    assert!(status.success(), "{what} failed ({status}). {hint}");
}

fn venv_bin(venv: &Path, tool: &str) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join(format!("{tool}.exe"))
    } else {
        venv.join("bin").join(tool)
    }
}

#[test]
fn python_package_passes_pytest() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // The target directory this test was built in: maturin builds there too,
    // so the rollcall library is compiled once.
    let target_dir = tmp.parent().expect("CARGO_TARGET_TMPDIR has a parent");
    let python = std::env::var("ROLLCALL_PYTHON").unwrap_or_else(|_| "python3".into());
    let install_hint = "The Python tests need Python 3 with venv and pip \
        (Debian/Ubuntu: `apt-get install python3 python3-venv python3-pip`; \
        or set ROLLCALL_PYTHON to an interpreter).";

    // Python itself.
    let version = Command::new(&python).arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {
            eprintln!("pytest.rs: {}", String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => panic!("`{python} --version` failed: Python 3 not found. {install_hint}"),
    }

    // The venv, with pinned tools (reinstalled when the pins change).
    let venv = tmp.join("rollcall-python-venv");
    let venv_python = venv_bin(&venv, "python");
    if !venv_python.exists() {
        run(
            "creating the venv",
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            install_hint,
        );
    }
    let stamp = venv.join("rollcall-pins.txt");
    let pins = PINS.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(pins.as_str()) {
        run(
            "installing maturin, numpy and pytest",
            Command::new(&venv_python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
                .args(PINS),
            install_hint,
        );
        std::fs::write(&stamp, &pins).expect("writing the venv's stamp");
    }

    // Build the wheel (release, into this target directory) and install it.
    let wheels = tmp.join("rollcall-python-wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    run(
        "building the wheel with maturin",
        Command::new(venv_bin(&venv, "maturin"))
            .args(["build", "--release", "--compatibility", "linux", "--quiet"])
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--interpreter")
            .arg(&venv_python)
            .arg("--out")
            .arg(&wheels)
            .env("CARGO_TARGET_DIR", target_dir),
        "maturin could not build the package (see its output above).",
    );
    let wheel = std::fs::read_dir(&wheels)
        .expect("maturin's wheel directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("maturin wrote no wheel");
    run(
        "installing the wheel",
        Command::new(&venv_python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "--no-deps",
                "--force-reinstall",
            ])
            .arg(&wheel),
        install_hint,
    );

    // pytest from outside the source tree, so `import rollcall` is the wheel.
    run(
        "pytest",
        Command::new(&venv_python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(crate_dir.join("tests"))
            .current_dir(tmp),
        "pytest failed (see its output above).",
    );
}
