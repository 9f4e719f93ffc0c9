//! `rollcall check`: the adapter, every family against its CPU twin and every
//! sampling route against the others, then a benchmark grid; one JSON file.

use super::CliResult;
use rollcall::GpuContext;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Where to write the report (JSON).
    #[arg(long, default_value = "rollcall-check.json")]
    out: std::path::PathBuf,
    /// Smaller inputs and the quick benchmark grid (seconds, for smoke tests).
    #[arg(long)]
    quick: bool,
    /// Skip the benchmark.
    #[arg(long)]
    no_bench: bool,
}

pub fn run(args: &CheckArgs) -> CliResult<ExitCode> {
    use rollcall_cli::bench::{run as bench, BenchOptions};
    use rollcall_cli::check::{run_checks, BENCH_ROWS};
    let ctx = GpuContext::new()?;
    println!("{}", ctx.describe());
    if let Some(note) = super::slow_adapter_note(ctx.adapter_info()) {
        println!("{note}");
    }
    let checks = run_checks(&ctx, args.quick, |what| eprint!("\r{what:<70}"));
    eprint!("\r{:<70}\r", "");
    println!(
        "{:<58} {:>6} {:>9} {:>6} {:>8}",
        "check", "result", "compared", "ties", "seconds"
    );
    for c in &checks {
        println!(
            "{:<58} {:>6} {:>9} {:>6} {:>8.1}",
            c.name,
            if c.passed { "pass" } else { "FAIL" },
            c.compared,
            c.near_ties,
            c.seconds
        );
        if !c.passed {
            println!("    {}", c.detail);
        }
    }
    let passed = checks.iter().all(|c| c.passed);
    let rows = if args.no_bench {
        Vec::new()
    } else {
        let options = BenchOptions {
            iters: 5,
            quick: args.quick,
            cpu_twin: false,
            only: if args.quick {
                Vec::new()
            } else {
                BENCH_ROWS.map(String::from).to_vec()
            },
            ..Default::default()
        };
        let rows = bench(&ctx, &options, |what| eprint!("\r{what:<70}"))?;
        eprint!("\r{:<70}\r", "");
        for r in &rows {
            println!(
                "bench  {:<48} {:<34} {:>9.3} ms  ratio {:.2}",
                r.kernel, r.size, r.median_ms, r.ratio_to_read_once
            );
        }
        rows
    };
    let report = serde_json::json!({
        "rollcall_version": env!("CARGO_PKG_VERSION"),
        "adapter": ctx.describe(),
        "passed": passed,
        "checks": checks,
        "bench": rows,
    });
    std::fs::write(&args.out, format!("{report:#}\n"))
        .map_err(|e| rollcall::Error::Data(format!("cannot write {}: {e}", args.out.display())))?;
    println!(
        "{}: report written to {}",
        if passed {
            "all checks passed"
        } else {
            "SOME CHECKS FAILED"
        },
        args.out.display()
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
