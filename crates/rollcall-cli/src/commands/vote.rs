//! `rollcall vote`: recorded votes (or a synthetic workload) replayed through
//! the voting scheduler, with accuracy, mean samples and flip rate (against
//! the whole budget of the same shuffle) per stopping rule; `--sweep` runs
//! each rule family over a grid of its parameter for the samples-vs-flips
//! frontier, `--svg` draws it.

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
    /// Run every rule family over a grid of its parameter (instead of
    /// `--rules`) and print the samples-vs-flips frontier.
    #[arg(long)]
    sweep: bool,
    /// With `--sweep`: draw the frontier (one curve per family, one panel
    /// per set) to this SVG file.
    #[arg(long, requires = "sweep")]
    svg: Option<std::path::PathBuf>,
}

pub fn run(args: &VoteArgs) -> CliResult<ExitCode> {
    use rollcall_cli::replay::{
        parse_vote_file, preset, replay, sweep_grid, synthetic_workload, Backend,
    };
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
    // (family, preset name) per rule to run; a family per rule without --sweep.
    let rules: Vec<(String, String)> = if args.sweep {
        sweep_grid()
            .into_iter()
            .flat_map(|(family, names)| names.into_iter().map(move |n| (family.to_string(), n)))
            .collect()
    } else {
        args.rules
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| (r.to_string(), r.to_string()))
            .collect()
    };
    let mut configs = Vec::new();
    for (family, name) in &rules {
        let mut config = preset(name, args.max_votes)
            .ok_or_else(|| rollcall::Error::InvalidRule(format!("unknown rule {name:?}")))?;
        config.min_votes = args.min_votes.min(config.max_votes);
        configs.push((family.as_str(), name.as_str(), config));
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
        for (family, name, config) in &configs {
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
            let (flip_low, flip_high) = score.flip_interval();
            results.push(serde_json::json!({
                "set": set, "questions": problems.len(), "family": family, "rule": name,
                "accuracy": score.accuracy, "mean_samples": score.mean_samples,
                "flips": score.flips, "pairs": score.pairs, "flip_rate": score.flip_rate(),
                "flip_rate_95": [flip_low, flip_high],
            }));
        }
    }
    if args.json {
        let out = serde_json::json!({
            "backend": if args.cpu { "cpu twin".to_string() } else { ctx.as_ref().map(|c| c.describe()).unwrap_or_default() },
            "shuffles": args.shuffles, "max_votes": args.max_votes, "results": results,
            "rules": configs.iter().map(|(family, name, config)| serde_json::json!({"family": family, "name": name, "config": config})).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!(
            "{:<28} {:<22} {:>9} {:>13} {:>8} {:>17}",
            "set", "rule", "accuracy", "mean samples", "flips", "flips 95% (Wilson)"
        );
        let pct = |v: &serde_json::Value| 100.0 * v.as_f64().unwrap_or(0.0);
        for r in &results {
            println!(
                "{:<28} {:<22} {:>9.3} {:>13.2} {:>7.2}% {:>7.2}–{:.2}%",
                r["set"].as_str().unwrap_or(""),
                r["rule"].as_str().unwrap_or(""),
                r["accuracy"].as_f64().unwrap_or(0.0),
                r["mean_samples"].as_f64().unwrap_or(0.0),
                pct(&r["flip_rate"]),
                pct(&r["flip_rate_95"][0]),
                pct(&r["flip_rate_95"][1]),
            );
        }
    }
    if let Some(path) = &args.svg {
        write_frontier_svg(path, &results, args.shuffles, args.max_votes)
            .map_err(|e| rollcall::Error::Data(format!("{}: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The samples-vs-flips frontier: one panel per set, one curve per rule
/// family (its settings in grid order), flips on a log scale.
fn write_frontier_svg(
    path: &std::path::Path,
    results: &[serde_json::Value],
    shuffles: u32,
    max_votes: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let text = |r: &serde_json::Value, key: &str| r[key].as_str().unwrap_or("").to_string();
    let mut sets: Vec<String> = Vec::new();
    let mut families: Vec<String> = Vec::new();
    for r in results {
        for (list, key) in [(&mut sets, "set"), (&mut families, "family")] {
            let value = text(r, key);
            if !list.contains(&value) {
                list.push(value);
            }
        }
    }
    let columns = sets.len().clamp(1, 2);
    let rows = sets.len().div_ceil(columns).max(1);
    let root = SVGBackend::new(path, (560 * columns as u32, 420 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("flip rate against mean samples ({shuffles} shuffles, budget {max_votes})"),
        ("sans-serif", 18),
    )?;
    // Flips of 0 sit at the floor of the log axis.
    let floor = 1e-3;
    for (panel, set) in root.split_evenly((rows, columns)).iter().zip(&sets) {
        let mine: Vec<&serde_json::Value> =
            results.iter().filter(|r| text(r, "set") == *set).collect();
        let x_hi = mine
            .iter()
            .map(|r| r["mean_samples"].as_f64().unwrap_or(0.0))
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(set, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_hi * 1.05, (floor..20.0f64).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("mean samples per question")
            .y_desc("flip rate, %")
            .draw()?;
        for (i, family) in families.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = mine
                .iter()
                .filter(|r| text(r, "family") == *family)
                .map(|r| {
                    let flips = 100.0 * r["flip_rate"].as_f64().unwrap_or(0.0);
                    (r["mean_samples"].as_f64().unwrap_or(0.0), flips.max(floor))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(family.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
