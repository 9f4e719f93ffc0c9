//! `rollcall bench`: every kernel family timed over a grid of sizes on this
//! adapter, against a kernel that only reads the same bytes once, and the CPU
//! twin.

use super::CliResult;
use rollcall::GpuContext;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Families, comma-separated: sampling (with speculative verification), voting, compact, tail.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sampling,voting,compact,tail"
    )]
    families: Vec<String>,
    /// Timed runs per kernel (interleaved with the read-once reference).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    iters: u32,
    /// A small grid that runs in seconds.
    #[arg(long)]
    quick: bool,
    /// Skip the CPU twin timings.
    #[arg(long)]
    no_cpu: bool,
    /// Time only the rows whose "kernel size" label contains this text
    /// (repeatable; e.g. --only "plain T=1, f32 256 x 128256").
    #[arg(long)]
    only: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> CliResult<ExitCode> {
    use rollcall_cli::bench::{run, BenchOptions};
    let ctx = GpuContext::new()?;
    let options = BenchOptions {
        iters: args.iters as usize,
        quick: args.quick,
        families: args.families.iter().map(|f| f.trim().to_string()).collect(),
        cpu_twin: !args.no_cpu,
        only: args.only.clone(),
    };
    let rows = run(&ctx, &options, |what| eprint!("\r{what:<60}"))?;
    eprint!("\r{:<60}\r", "");
    let bracket_ms = rollcall_cli::bench::timing_bracket(&ctx, options.iters)?
        .median
        .as_secs_f64()
        * 1e3;
    let batch_one = rollcall_cli::bench::batch_one_ratios(&rows);
    if args.json {
        let out = serde_json::json!({
            "adapter": ctx.describe(),
            "iters": options.iters,
            "timing_bracket_ms": bracket_ms,
            "min_span_ms": rollcall_cli::bench::MIN_SPAN.as_secs_f64() * 1e3,
            "rows": rows,
            "batch_one_over_batch_64_per_row": batch_one,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", ctx.describe());
    println!(
        "times: median of {} runs ({}); ratio = read-once time of the same bytes / kernel time",
        options.iters,
        rows.first().map_or("-", |r| r.timing_source.as_str())
    );
    println!(
        "an empty timed span costs {bracket_ms:.3} ms here; sampling kernels shorter than {} ms \
         run back to back in one span (runs column) and are charged the span / runs",
        rollcall_cli::bench::MIN_SPAN.as_millis()
    );
    if let Some(probe) = rows
        .iter()
        .find(|r| r.kernel == rollcall_cli::bench::YARDSTICK_PROBE)
    {
        println!(
            "yardstick: read-once with scalar loads; with vector loads it reads at {:.2} of it \
             (above 1: divide the ratios by that)",
            probe.ratio_to_read_once
        );
    }
    println!(
        "{:<9} {:<46} {:<26} {:>10} {:>5} {:>10} {:>8} {:>10} {:>7} {:>10}",
        "family",
        "kernel",
        "size",
        "time ms",
        "runs",
        "MB moved",
        "GB/s",
        "read ms",
        "ratio",
        "cpu ms"
    );
    for r in &rows {
        println!(
            "{:<9} {:<46} {:<26} {:>10.3} {:>5} {:>10.2} {:>8.2} {:>10.3} {:>7.2} {:>10}",
            r.family,
            r.kernel,
            r.size,
            r.median_ms,
            r.repeats,
            (r.bytes_read + r.bytes_written) as f64 / 1e6,
            r.gb_per_s,
            r.read_once_ms,
            r.ratio_to_read_once,
            r.cpu_twin_ms.map_or("-".to_string(), |t| format!("{t:.1}"))
        );
    }
    let filled: Vec<&str> = rows
        .iter()
        .filter(|r| r.yardstick != "rows")
        .map(|r| r.kernel.as_str())
        .collect();
    println!(
        "sampling ratios are against the faster of two reads of the same bytes: a workgroup per \
         input row, or {} rows filling the adapter; the filled grid was faster for {} of the rows{}",
        rollcall_cli::bench::FILL_ROWS,
        filled.len(),
        if filled.is_empty() { "" } else { " (`yardstick` in --json)" }
    );
    if let (Some(unsplit), Some(split), Some(read_once)) =
        (batch_one.unsplit, batch_one.split, batch_one.read_once)
    {
        println!(
            "batch 1 / batch-64 per-row time, plain 128256: {unsplit:.2}x unsplit, \
             {split:.2}x rows split (read-once kernel: {read_once:.2}x)"
        );
    }
    if let Some(floor) = batch_one.dispatch_floor_ms {
        println!("one dispatch of next to nothing (read-once, 1 x 1024): {floor:.3} ms");
    }
    Ok(ExitCode::SUCCESS)
}
