//! `cargo run -p rollcall-burn-decode --release -- [--json] [--batch N] [--steps N] [--vocab N] [--readback-every N] [--rounds N]`
//!
//! Decodes with a small random-weight transformer on burn's wgpu backend
//! three ways (rollcall on the GPU from burn's buffer, rollcall's CPU twin,
//! host sampling as Rust engines do it) and reports per step: the forward
//! pass, the sampling, tokens per second, and rollcall's submits and the
//! host readbacks.

use rollcall_burn_decode::{DecodeConfig, Decoder};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut config = DecodeConfig::default();
    let mut json = false;
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--json" => json = true,
            "--batch" => config.batch = number("--batch")?,
            "--steps" => config.steps = number("--steps")?,
            "--vocab" => config.vocab = number("--vocab")?,
            "--readback-every" => config.readback_every = number("--readback-every")?,
            "--rounds" => rounds = number("--rounds")?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if config.batch == 0
        || config.steps == 0
        || config.vocab < 2
        || config.readback_every == 0
        || rounds == 0
    {
        return Err(
            "batch, steps, rounds and readback-every must be positive, vocab at least 2".into(),
        );
    }
    let decoder = Decoder::new(config).map_err(|e| e.to_string())?;
    eprintln!("warming up (pipelines compile on first use)");
    decoder.warm_up().map_err(|e| e.to_string())?;
    eprintln!("decoding: {rounds} rounds of every variant");
    let reports = decoder.reports(rounds).map_err(|e| e.to_string())?;
    if json {
        let out = serde_json::json!({
            "adapter": decoder.ctx().describe(),
            "config": config,
            "rounds": rounds,
            "variants": reports.iter().map(|r| serde_json::json!({
                "variant": r.variant,
                "step_ms": r.step_ms,
                "tokens_per_second": r.tokens_per_second,
                "forward_ms": r.forward_ms,
                "sampling_ms": r.sampling_ms,
                "sampling_share": r.sampling_ms / (r.forward_ms + r.sampling_ms),
                "rollcall_submits_per_step": r.rollcall_submits_per_step,
                "readbacks_per_step": r.readbacks_per_step,
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("{}", decoder.ctx().describe());
    println!(
        "batch {} x {} steps, vocab {}, width {}, {} layers; tokens read back every {} steps; medians of {} rounds",
        config.batch,
        config.steps,
        config.vocab,
        config.width,
        config.layers,
        config.readback_every,
        rounds
    );
    println!(
        "{:40} {:>9} {:>9} {:>11} {:>9} {:>9} {:>12} {:>10}",
        "variant",
        "step ms",
        "tok/s",
        "forward ms",
        "sample ms",
        "share",
        "submits/step",
        "reads/step"
    );
    for r in &reports {
        println!(
            "{:40} {:>9.2} {:>9.0} {:>11.2} {:>9.2} {:>8.0}% {:>12.2} {:>10.2}",
            r.variant.name(),
            r.step_ms,
            r.tokens_per_second,
            r.forward_ms,
            r.sampling_ms,
            100.0 * r.sampling_ms / (r.forward_ms + r.sampling_ms),
            r.rollcall_submits_per_step,
            r.readbacks_per_step
        );
    }
    Ok(())
}
