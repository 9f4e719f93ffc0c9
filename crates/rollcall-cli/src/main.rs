//! `rollcall`: inspect the adapter, and check and time the sampler on a
//! synthetic batch against its CPU twin and a read-once kernel.
//!
//! This file parses the command line and dispatches; each subcommand (its
//! arguments and its body) lives in `commands/`.

mod commands;

use clap::{Parser, Subcommand};
use commands::{
    bench::BenchArgs, check::CheckArgs, sample::SampleArgs, tail::TailArgs, vote::VoteArgs,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Portable GPU kernels for LLM sampling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter, its features and key limits.
    Info,
    /// Sample a synthetic batch, check every row against the CPU twin, and time
    /// the sampler against a kernel that only reads the same logits once.
    Sample(SampleArgs),
    /// Replay recorded votes (or a synthetic workload) through the voting
    /// scheduler and print accuracy and mean samples per stopping rule.
    Vote(VoteArgs),
    /// Draw m rewards per prompt from a known reward family and print each
    /// best-of-N estimator's bias and spread against the true E[max of N]
    /// (optionally as an SVG chart against m).
    Tail(TailArgs),
    /// Time every kernel family over a grid of sizes on this adapter, against
    /// a kernel that only reads the same bytes once, and the CPU twin.
    Bench(BenchArgs),
    /// For a new adapter: every kernel family against its CPU twin and every
    /// sampling route against the others (NaN, ±inf and ties included), then
    /// a benchmark grid; writes one JSON report. Exit code 1 if a check fails.
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Info => commands::info::run(),
        Command::Sample(args) => commands::sample::run(&args),
        Command::Vote(args) => commands::vote::run(&args),
        Command::Tail(args) => commands::tail::run(&args),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Check(args) => commands::check::run(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
