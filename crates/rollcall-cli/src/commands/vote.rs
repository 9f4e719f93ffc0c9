//! `rollcall vote`: recorded votes (or a synthetic workload) replayed through
//! the voting scheduler, with accuracy and mean samples per stopping rule.

use super::{ensure_fits, product, Bound, CliResult};
use rollcall::GpuContext;
use std::process::ExitCode;

/// Answers per question of the synthetic workload.
const SYNTHETIC_ANSWERS: usize = 40;

/// Host bytes per synthetic question, an upper estimate: 40 answer strings
/// (about 56 bytes each with their headers), their ids and a shuffled copy,
/// and the replay's per-rollout outcome (about 3.5 KiB in all).
const HOST_BYTES_PER_SYNTHETIC_QUESTION: u64 = 4096;

/// Answers a prompt's vote table holds, as `replay` opens its scheduler.
const TABLE_CAPACITY: u64 = 64;

/// Device bytes per table slot: an `(answer, votes)` pair of u32.
const TABLE_SLOT_BYTES: u64 = 8;

#[derive(clap::Args)]
pub struct VoteArgs {
    /// Vote files (JSON: {"questions": [{"truth", "answers": [...]}]}); none
    /// runs the embedded synthetic workload.
    #[arg(long = "file")]
    files: Vec<std::path::PathBuf>,
    /// Comma-separated rules: fixed, esc5, ac-beta, consol-sprt, dirichlet,
    /// optpo, majority, entropy.
    #[arg(
        long,
        default_value = "fixed,esc5,ac-beta,consol-sprt,dirichlet,optpo,majority,entropy"
    )]
    rules: String,
    /// Seeded shuffles per file.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    shuffles: u32,
    /// Maximum votes per question.
    #[arg(long, default_value_t = 40)]
    max_votes: u32,
    /// Minimum votes before a rule may stop a question.
    #[arg(long, default_value_t = 1)]
    min_votes: u32,
    /// Questions in the synthetic workload.
    #[arg(long, default_value_t = 500)]
    synthetic_questions: usize,
    /// Rollouts per round: `one` (reveal one answer per round, the evaluation
    /// protocol) or `fewest` (ConSol's: the fewest that could pass the rule).
    #[arg(long, default_value = "one")]
    allocation: String,
    /// Run the CPU twin instead of the GPU kernels.
    #[arg(long)]
    cpu: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &VoteArgs) -> CliResult<ExitCode> {
    use rollcall_cli::replay::{parse_vote_file, preset, replay, synthetic_workload, Backend};
    let mut sets = Vec::new();
    // (the sizes as asked for, questions) of every set, for the device check
    let mut sizes = Vec::new();
    if args.files.is_empty() {
        let questions = args.synthetic_questions;
        let subject = format!("--synthetic-questions {questions}");
        ensure_fits(
            &subject,
            "the synthetic answers and their replay",
            product(&[questions as u64, HOST_BYTES_PER_SYNTHETIC_QUESTION]),
            Bound::Host,
        )?;
        sizes.push((subject, questions));
        sets.push((
            "synthetic".to_string(),
            synthetic_workload(questions, SYNTHETIC_ANSWERS, 7),
        ));
    }
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| rollcall::Error::Data(format!("{}: {e}", path.display())))?;
        let name = path
            .file_stem()
            .map_or("votes".into(), |s| s.to_string_lossy().into_owned());
        let problems = parse_vote_file(&text)?;
        sizes.push((
            format!("{} ({} questions)", path.display(), problems.len()),
            problems.len(),
        ));
        sets.push((name, problems));
    }
    let allocation = match args.allocation.as_str() {
        "one" => rollcall::voting::Allocation::Chunk(1),
        "fewest" => rollcall::voting::Allocation::FewestToPass { first: 1 },
        other => {
            return Err(rollcall::Error::InvalidRule(format!(
                "unknown allocation {other:?} (one, fewest)"
            ))
            .into())
        }
    };
    let rules: Vec<&str> = args
        .rules
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let mut configs = Vec::new();
    for name in &rules {
        let mut config = preset(name, args.max_votes)
            .ok_or_else(|| rollcall::Error::InvalidRule(format!("unknown rule {name:?}")))?;
        config.min_votes = args.min_votes.min(config.max_votes);
        configs.push((*name, config));
    }
    let ctx = if args.cpu {
        None
    } else {
        Some(GpuContext::new()?)
    };
    if let Some(ctx) = &ctx {
        // One prompt per question: its vote table is bound whole.
        for (subject, questions) in &sizes {
            let tables = product(&[*questions as u64, TABLE_CAPACITY, TABLE_SLOT_BYTES]);
            ensure_fits(subject, "the vote tables", tables, Bound::binding(ctx))?;
        }
    }
    let backend = match &ctx {
        Some(ctx) => Backend::Gpu(ctx),
        None => Backend::Cpu,
    };
    let mut results = Vec::new();
    for (set, problems) in &sets {
        for (name, config) in &configs {
            let score = replay(
                problems,
                *config,
                allocation,
                args.shuffles,
                &backend,
                |done, total| {
                    eprint!("\r{set} {name}: shuffle {done}/{total}   ");
                },
            )?;
            eprintln!();
            results.push(serde_json::json!({
                "set": set, "questions": problems.len(), "rule": name,
                "accuracy": score.accuracy, "mean_samples": score.mean_samples,
            }));
        }
    }
    if args.json {
        let out = serde_json::json!({
            "backend": if args.cpu { "cpu twin".to_string() } else { ctx.as_ref().map(|c| c.describe()).unwrap_or_default() },
            "shuffles": args.shuffles, "max_votes": args.max_votes, "results": results,
            "rules": configs.iter().map(|(name, config)| serde_json::json!({"name": name, "config": config})).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!(
            "{:<28} {:<22} {:>9} {:>13}",
            "set", "rule", "accuracy", "mean samples"
        );
        for r in &results {
            println!(
                "{:<28} {:<22} {:>9.3} {:>13.2}",
                r["set"].as_str().unwrap_or(""),
                r["rule"].as_str().unwrap_or(""),
                r["accuracy"].as_f64().unwrap_or(0.0),
                r["mean_samples"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
