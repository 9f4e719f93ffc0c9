//! Replaying recorded votes under the evaluation protocol of ESC and the
//! voting note: for each question, shuffle its recorded answers with a seeded
//! generator, reveal them in that order (one per round), stop by the rule,
//! take the majority of what was revealed (ties to the answer seen first), and
//! score it against the truth; average accuracy and samples over shuffles.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rollcall::voting::cpu::run as run_cpu;
use rollcall::voting::{Allocation, ReplayEngine, Scheduler};
use rollcall::voting::{RuleConfig, StopRule};
use rollcall::{Error, GpuContext, Result};

/// One question: its true answer and its recorded answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The true answer.
    pub truth: String,
    /// Recorded answers, in recorded order.
    pub answers: Vec<String>,
}

fn as_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses a vote file: `{"source", "model", "questions": [{"truth",
/// "answers": [...], "token_usage": [...]?}]}`.
///
/// ```
/// let text = r#"{"source": "s", "model": "m", "questions": [{"truth": "3", "answers": ["3", 4]}]}"#;
/// let problems = rollcall_cli::replay::parse_vote_file(text).unwrap();
/// assert_eq!(problems[0].answers, vec!["3".to_string(), "4".to_string()]);
/// ```
pub fn parse_vote_file(text: &str) -> Result<Vec<Problem>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::Data(format!("not JSON: {e}")))?;
    let questions = value
        .get("questions")
        .and_then(|q| q.as_array())
        .ok_or_else(|| Error::Data("no \"questions\" array".into()))?;
    questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let truth = q
                .get("truth")
                .ok_or_else(|| Error::Data(format!("question {i}: no truth")))?;
            let answers = q
                .get("answers")
                .and_then(|a| a.as_array())
                .ok_or_else(|| Error::Data(format!("question {i}: no answers array")))?;
            Ok(Problem {
                truth: as_text(truth),
                answers: answers.iter().map(as_text).collect(),
            })
        })
        .collect()
}

/// A synthetic workload shaped like the shared vote data: 40 answers per
/// question; most questions decisive (the truth holds 80–100% of the votes),
/// some contested (30–60%, with a strong wrong answer), a few hard ones where
/// the truth is a minority; wrong answers follow a Zipf-like spread.
///
/// ```
/// let problems = rollcall_cli::replay::synthetic_workload(100, 40, 1);
/// assert_eq!(problems.len(), 100);
/// assert!(problems.iter().all(|p| p.answers.len() == 40));
/// ```
pub fn synthetic_workload(questions: usize, answers: usize, seed: u64) -> Vec<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..questions)
        .map(|q| {
            let kind: f64 = rng.random();
            let p_truth: f64 = if kind < 0.7 {
                rng.random_range(0.8..1.0)
            } else if kind < 0.9 {
                rng.random_range(0.3..0.6)
            } else {
                rng.random_range(0.05..0.3)
            };
            let truth = format!("q{q}-truth");
            let answers = (0..answers)
                .map(|_| {
                    if rng.random_bool(p_truth) {
                        truth.clone()
                    } else {
                        // Zipf-like: wrong answer k with weight 1/k.
                        let u: f64 = rng.random();
                        let k = (8.0f64.powf(u)) as u32;
                        format!("q{q}-wrong{k}")
                    }
                })
                .collect();
            Problem { truth, answers }
        })
        .collect()
}

/// The rules the replay command knows by name, with budgets 1 to 40.
pub const PRESETS: &[&str] = &[
    "fixed",
    "esc5",
    "ac-beta",
    "consol-sprt",
    "consol-msprt",
    "dirichlet",
    "optpo",
    "majority",
    "entropy",
    "predictive",
];

/// A named rule with budgets 1 to `max_votes`. Names may carry parameters
/// after colons: `beta:THRESHOLD[:PRIOR]`, `predictive:PRIOR:DELTA`,
/// `esc:WINDOW`, `majority:SHARE`, `entropy:MAX`, `dirichlet:THRESHOLD[:TOP]`,
/// `margin:VOTES` (ConSol's SPRT set to stop at that lead),
/// `calibrated:DELTA` (the flip budget),
/// `margin-cap:CAP` (ConSol's SPRT with the maximum budget lowered to CAP).
///
/// ```
/// use rollcall_cli::replay::preset;
/// assert!(preset("ac-beta", 40).is_some());
/// assert!(preset("predictive:0.5:0.02", 40).is_some());
/// assert!(preset("beta:2", 40).is_none());
/// ```
pub fn preset(name: &str, max_votes: u32) -> Option<RuleConfig> {
    let mut parts = name.split(':');
    let head = parts.next()?;
    let args: Vec<f32> = parts
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    let arg = |i: usize, default: f32| args.get(i).copied().unwrap_or(default);
    let mut max = max_votes;
    let rule = match head {
        "fixed" => StopRule::FixedBudget,
        "esc5" => StopRule::EscWindow { window: 5 },
        "esc" => StopRule::EscWindow {
            window: arg(0, 5.0) as u32,
        },
        "ac-beta" | "beta" => StopRule::Beta {
            threshold: arg(0, 0.95),
            prior: arg(1, 1.0),
        },
        "consol-sprt" => StopRule::CONSOL_SPRT,
        "margin" => StopRule::margin(arg(0, 3.0) as u32),
        "margin-cap" => {
            max = max_votes.min(arg(0, 16.0) as u32);
            StopRule::CONSOL_SPRT
        }
        "consol-msprt" => StopRule::CONSOL_MSPRT,
        "dirichlet" => StopRule::Dirichlet {
            threshold: arg(0, 0.95),
            prior: 1.0,
            top: arg(1, 5.0) as u32,
        },
        "optpo" => StopRule::OptPo {
            p0: 0.6,
            hypotheses: 0,
            delta: 0.05,
            alpha: 0.05,
            beta: 0.05,
        },
        "majority" => StopRule::Majority { share: arg(0, 0.8) },
        "entropy" => StopRule::Entropy {
            max_normalized: arg(0, 0.75),
        },
        "calibrated" => StopRule::Calibrated {
            delta: arg(0, 0.01),
        },
        "predictive" => StopRule::Predictive {
            prior: arg(0, 0.3),
            delta: arg(1, 0.01),
        },
        _ => return None,
    };
    let config = RuleConfig {
        rule,
        min_votes: 1,
        max_votes: max,
    };
    if matches!(rule, StopRule::Calibrated { .. }) {
        // Validated by the scheduler, which holds the batch's prior.
        return Some(config);
    }
    config.validate().ok().map(|_| config)
}

/// Rule families and the parameter grid `rollcall vote --sweep` runs, as
/// preset names: (family, settings from most eager to most cautious).
pub fn sweep_grid() -> Vec<(&'static str, Vec<String>)> {
    let thresholds = [0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995];
    vec![
        (
            "AC Beta",
            thresholds.iter().map(|t| format!("beta:{t}")).collect(),
        ),
        (
            "Dirichlet",
            thresholds
                .iter()
                .map(|t| format!("dirichlet:{t}"))
                .collect(),
        ),
        ("margin", (2..=8).map(|m| format!("margin:{m}")).collect()),
        ("ESC", (2..=8).map(|w| format!("esc:{w}")).collect()),
        (
            "majority share",
            [0.6, 0.7, 0.8, 0.9, 0.95]
                .iter()
                .map(|s| format!("majority:{s}"))
                .collect(),
        ),
        (
            "predictive 0.3",
            [0.2, 0.1, 0.05, 0.02, 0.01, 0.005]
                .iter()
                .map(|d| format!("predictive:0.3:{d}"))
                .collect(),
        ),
        (
            "calibrated",
            [0.05, 0.02, 0.01, 0.005, 0.002]
                .iter()
                .map(|d| format!("calibrated:{d}"))
                .collect(),
        ),
    ]
}

/// Where the replay runs.
pub enum Backend<'a> {
    /// The GPU scheduler and kernels.
    Gpu(&'a GpuContext),
    /// The CPU twin.
    Cpu,
}

/// Accuracy, mean samples and flip rate of one rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayScore {
    /// Share of questions whose majority of revealed answers is the truth.
    pub accuracy: f64,
    /// Mean answers revealed per question.
    pub mean_samples: f64,
    /// (question, shuffle) pairs whose answer at the stop differs from the
    /// majority of the whole budget in the same shuffle (ties to the answer
    /// seen first in both).
    pub flips: u64,
    /// (question, shuffle) pairs replayed.
    pub pairs: u64,
}

impl ReplayScore {
    /// `flips / pairs`.
    pub fn flip_rate(&self) -> f64 {
        self.flips as f64 / self.pairs.max(1) as f64
    }

    /// The Wilson score interval of the flip rate at 95 %, treating the
    /// pairs as independent (the shuffles of one question are not, so read
    /// it as a lower bound on the uncertainty).
    pub fn flip_interval(&self) -> (f64, f64) {
        wilson_interval(self.flips, self.pairs, 1.959_964)
    }
}

/// Wilson's score interval for `successes` out of `trials` at `z` standard
/// errors; (0, 1) without trials.
///
/// ```
/// use rollcall_cli::replay::wilson_interval;
/// let (lo, hi) = wilson_interval(0, 100, 1.96);
/// assert_eq!(lo, 0.0);
/// assert!((hi - 0.0370).abs() < 1e-3);
/// let (lo, hi) = wilson_interval(50, 100, 1.96);
/// assert!((lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3);
/// ```
pub fn wilson_interval(successes: u64, trials: u64, z: f64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The majority of `votes` (answer ids), ties to the answer seen first.
///
/// ```
/// use rollcall_cli::replay::first_seen_majority;
/// assert_eq!(first_seen_majority(&[3, 1, 1, 3]), Some(3));
/// assert_eq!(first_seen_majority(&[3, 1, 1]), Some(1));
/// assert_eq!(first_seen_majority(&[]), None);
/// ```
pub fn first_seen_majority(votes: &[u32]) -> Option<u32> {
    let mut table: Vec<(u32, u32)> = Vec::new();
    for &v in votes {
        match table.iter_mut().find(|(id, _)| *id == v) {
            Some(slot) => slot.1 += 1,
            None => table.push((v, 1)),
        }
    }
    // The first of the largest counts: max_by_key keeps the last, so reverse.
    table
        .iter()
        .rev()
        .max_by_key(|(_, c)| *c)
        .map(|(id, _)| *id)
}

/// Replays `problems` under `config` and `allocation` (the protocol reveals
/// one answer per round: `Allocation::Chunk(1)`) for `shuffles` seeded
/// shuffles (seeds 0..shuffles), calling `progress(done, shuffles)` after each.
pub fn replay(
    problems: &[Problem],
    config: RuleConfig,
    allocation: Allocation,
    shuffles: u32,
    backend: &Backend<'_>,
    mut progress: impl FnMut(u32, u32),
) -> Result<ReplayScore> {
    let budget = problems.iter().map(|p| p.answers.len()).min().unwrap_or(0) as u32;
    if problems.is_empty() || budget == 0 {
        return Err(Error::Data("no questions with answers".into()));
    }
    let config = RuleConfig {
        max_votes: config.max_votes.min(budget),
        min_votes: config.min_votes.min(budget),
        ..config
    };
    // Answer ids: index of the first occurrence in the recorded list.
    let ids: Vec<Vec<u32>> = problems
        .iter()
        .map(|p| {
            p.answers
                .iter()
                .map(|a| p.answers.iter().position(|b| b == a).unwrap_or(0) as u32)
                .collect()
        })
        .collect();
    let mut correct = 0u64;
    let mut samples = 0u64;
    let mut flips = 0u64;
    let mut scheduler = match backend {
        Backend::Gpu(ctx) => Some(Scheduler::new(
            ctx,
            problems.len() as u32,
            64,
            config,
            allocation,
        )?),
        Backend::Cpu => None,
    };
    for s in 0..shuffles {
        let shuffled: Vec<Vec<u32>> = ids
            .iter()
            .enumerate()
            .map(|(q, list)| {
                let mut rng = ChaCha8Rng::seed_from_u64((u64::from(s) << 32) | q as u64);
                let mut v = list.clone();
                v.shuffle(&mut rng);
                v
            })
            .collect();
        let full: Vec<Option<u32>> = shuffled
            .iter()
            .map(|v| first_seen_majority(&v[..config.max_votes as usize]))
            .collect();
        let mut engine = ReplayEngine::new(shuffled);
        let outcome = match scheduler.as_mut() {
            Some(scheduler) => scheduler.run(&mut engine)?,
            None => run_cpu(problems.len() as u32, 64, config, allocation, &mut engine)?,
        };
        for (q, p) in outcome.prompts.iter().enumerate() {
            samples += u64::from(p.rollouts);
            let answer = problems[q].answers.get(p.consensus as usize);
            correct += u64::from(answer == Some(&problems[q].truth));
            flips += u64::from(full[q] != Some(p.consensus));
        }
        progress(s + 1, shuffles);
    }
    let n = f64::from(shuffles) * problems.len() as f64;
    Ok(ReplayScore {
        accuracy: correct as f64 / n,
        mean_samples: samples as f64 / n,
        flips,
        pairs: u64::from(shuffles) * problems.len() as u64,
    })
}
