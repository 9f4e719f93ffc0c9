//! `rollcall tail`: rewards drawn from a known family, and each best-of-N
//! estimator's bias and spread against the true E[max of N], optionally as an
//! SVG chart against m.

use super::{ensure_fits, product, total, Bound, CliResult};
use rollcall::GpuContext;
use std::process::ExitCode;

/// Host bytes per reward, an upper estimate: the reward and the estimators'
/// working copies (sorted values and indices, or the readback, and the
/// advantages).
const HOST_BYTES_PER_REWARD: u64 = 16;

/// Host bytes per prompt, an upper estimate: its offset, value and status,
/// their readback and the statistics' f64 copy.
const HOST_BYTES_PER_PROMPT: u64 = 32;

/// Rewards per chunk of the tail kernels' chunked sort.
const SORT_CHUNK: u64 = 1024;

/// Device bytes of the tail kernels for `rollouts` rewards in `segments`
/// prompts: (the largest buffer bound whole, the readback). `TailStats`
/// rounds both counts up to powers of two; its largest bound buffers are the
/// per-rollout words and the list of sort chunks (two words per chunk and per
/// segment), and its readback holds three words per rollout.
fn tail_device_bytes(rollouts: u64, segments: u64) -> (Option<u64>, Option<u64>) {
    let r = rollouts.max(1).checked_next_power_of_two();
    let s = segments.max(1).checked_next_power_of_two();
    let (Some(r), Some(s)) = (r, s) else {
        return (None, None);
    };
    let chunk_list =
        total(&[Some(r / SORT_CHUNK), Some(s), Some(1)]).and_then(|w| w.checked_mul(2));
    let bound = chunk_list.map(|c| c.max(r).max(s.saturating_add(1)));
    let readback = product(&[r, 3]).zip(total(&[product(&[s, 2]), Some(r)]));
    (
        bound.and_then(|w| w.checked_mul(4)),
        readback.and_then(|(a, b)| a.max(b).checked_mul(4)),
    )
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// Reward family: gaussian, uniform, exponential, gumbel, bernoulli.
    #[arg(long, default_value = "gaussian")]
    family: String,
    /// Location of the family (mean of the Gaussian, lower end of the uniform).
    #[arg(long, default_value_t = 0.0)]
    location: f64,
    /// Scale of the family (deviation, width, or mean of the exponential part).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Success probability of the bernoulli family.
    #[arg(long, default_value_t = 0.05)]
    p: f64,
    /// N of best-of-N.
    #[arg(long, default_value_t = 128)]
    n: u32,
    /// Rollouts per prompt, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128,256")]
    m: Vec<u32>,
    /// Prompts (segments) per m.
    #[arg(long, default_value_t = 4000)]
    prompts: u32,
    /// Estimators, comma-separated: exact, pass@k, tea, prefix-tea, gpd, grpo.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "exact,tea,prefix-tea,gpd"
    )]
    estimators: Vec<String>,
    /// Tail level α of TEA, Prefix-TEA and the GPD fit.
    #[arg(long, default_value_t = 0.25)]
    alpha: f32,
    /// Prefixes of Prefix-TEA.
    #[arg(long, default_value_t = 4)]
    prefixes: u32,
    /// Seed of the reward draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the CPU twin instead of the GPU kernels.
    #[arg(long)]
    cpu: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write bias and spread against m as an SVG chart to this file.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
}

pub fn run(args: &TailArgs) -> CliResult<ExitCode> {
    use rollcall::tail::{Estimator, TailStats};
    use rollcall_cli::study::{study, RewardFamily, StudyBackend};
    let family = RewardFamily::parse(&args.family, args.location, args.scale, args.p)?;
    let (n, alpha) = (args.n, args.alpha);
    let estimators = args
        .estimators
        .iter()
        .map(|name| {
            Ok(match name.trim() {
                "exact" => Estimator::ExpectedMax { n },
                "pass@k" => Estimator::PassAtK {
                    k: n,
                    threshold: 0.5,
                },
                "tea" => Estimator::Tea { n, alpha },
                "prefix-tea" => Estimator::PrefixTea {
                    n,
                    alpha,
                    prefixes: args.prefixes,
                },
                "gpd" => Estimator::Gpd { n, alpha },
                "grpo" => Estimator::Grpo { eps: 1e-4 },
                other => {
                    return Err(rollcall::Error::InvalidEstimator(format!(
                        "unknown estimator `{other}` (exact, pass@k, tea, prefix-tea, gpd, grpo)"
                    )))
                }
            })
        })
        .collect::<rollcall::Result<Vec<_>>>()?;
    for e in &estimators {
        e.validate()?;
    }
    if let Some(&m) = args
        .m
        .iter()
        .find(|&&m| m == 0 || m > rollcall::tail::MAX_SEGMENT)
    {
        return Err(rollcall::Error::InvalidEstimator(format!(
            "--m {m}: rollouts per prompt must be 1 to {}",
            rollcall::tail::MAX_SEGMENT
        ))
        .into());
    }
    if args.m.is_empty() || args.prompts == 0 {
        return Err(rollcall::Error::InvalidEstimator(
            "--m and --prompts must not be empty or 0".into(),
        )
        .into());
    }
    // The largest m draws the most rewards; each m's are dropped before the next.
    let m_max = args.m.iter().copied().max().unwrap_or(0);
    let prompts = u64::from(args.prompts);
    let subject = format!("--prompts {} x --m {m_max}", args.prompts);
    let rollouts = product(&[prompts, u64::from(m_max)]);
    ensure_fits(
        &subject,
        "the rewards and the estimators' working copies",
        total(&[
            rollouts.and_then(|r| r.checked_mul(HOST_BYTES_PER_REWARD)),
            product(&[prompts + 1, HOST_BYTES_PER_PROMPT]),
        ]),
        Bound::Host,
    )?;
    let ctx;
    let mut kernels;
    let (backend, device) = if args.cpu {
        (StudyBackend::Cpu, "CPU twin".to_string())
    } else {
        ctx = GpuContext::new()?;
        let (bound, readback) = rollouts.map_or((None, None), |r| tail_device_bytes(r, prompts));
        ensure_fits(
            &subject,
            "the tail kernels' rewards and sort chunks",
            bound,
            Bound::binding(&ctx),
        )?;
        ensure_fits(
            &subject,
            "the tail kernels' readback",
            readback,
            Bound::buffer(&ctx),
        )?;
        kernels = TailStats::new(&ctx)?;
        (StudyBackend::Gpu(&mut kernels), ctx.describe())
    };
    let truth = family.best_of(n);
    let rows = study(
        family,
        n,
        &args.m,
        args.prompts,
        &estimators,
        args.seed,
        backend,
    )?;
    if let Some(path) = &args.svg {
        write_tail_svg(
            path,
            &rows,
            &format!("{family:?}, best of {n}: E = {truth:.4}"),
        )
        .map_err(|e| rollcall::Error::Data(format!("writing {}: {e}", path.display())))?;
    }
    if args.json {
        let out = serde_json::json!({
            "family": format!("{family:?}"),
            "n": n,
            "true_best_of_n": truth,
            "prompts": args.prompts,
            "alpha": alpha,
            "device": device,
            "rows": rows,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{device}");
    println!(
        "{family:?}: true E[max of {n}] = {truth:.4}; {} prompts per m, alpha {alpha}",
        args.prompts
    );
    println!(
        "{:<11} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "estimator", "m", "bias", "spread", "rmse", "no value"
    );
    for r in &rows {
        println!(
            "{:<11} {:>6} {:>10.4} {:>10.4} {:>10.4} {:>9}",
            r.estimator, r.m, r.bias, r.spread, r.rmse, r.no_value
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Two panels, bias and spread against m (log scale), one line per estimator.
fn write_tail_svg(
    path: &std::path::Path,
    rows: &[rollcall_cli::study::StudyRow],
    title: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let panels = root.split_evenly((1, 2));
    let mut names: Vec<&str> = rows.iter().map(|r| r.estimator.as_str()).collect();
    names.dedup();
    names.sort_unstable();
    names.dedup();
    let log_m = |m: u32| f64::from(m).log2();
    let x_lo = rows
        .iter()
        .map(|r| log_m(r.m))
        .fold(f64::INFINITY, f64::min);
    let x_hi = rows
        .iter()
        .map(|r| log_m(r.m))
        .fold(f64::NEG_INFINITY, f64::max);
    let (x_lo, x_hi) = if x_lo < x_hi {
        (x_lo, x_hi)
    } else {
        (x_lo - 1.0, x_lo + 1.0)
    };
    for (panel, (label, pick)) in panels.iter().zip([
        (
            "bias",
            (|r: &rollcall_cli::study::StudyRow| r.bias) as fn(&_) -> f64,
        ),
        ("spread", |r: &rollcall_cli::study::StudyRow| r.spread),
    ]) {
        let finite: Vec<f64> = rows.iter().map(pick).filter(|v| v.is_finite()).collect();
        let lo = finite.iter().cloned().fold(0.0f64, f64::min);
        let hi = finite.iter().cloned().fold(0.0f64, f64::max);
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(panel)
            .caption(label, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x_lo..x_hi, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("rollouts per prompt m")
            .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
            .draw()?;
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.estimator == *name && pick(r).is_finite())
                .map(|r| (log_m(r.m), pick(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
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
