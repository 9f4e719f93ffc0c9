//! Stopping rules: when a prompt's votes show a confident consensus. One
//! family with one interface, so that rules can be compared on the same data.
//! The GPU kernel `decide` in `shaders/voting.wgsl` evaluates the same rules
//! with the same f32 operations; [`decide`] here is its CPU twin.

use super::posterior::{
    beta_leader_probability, dirichlet_mode_probability, msprt_log_ratio, overtake_risk,
};
use super::PromptVotes;
use crate::{Error, Result};

/// A stopping rule (v_L = leader's votes, v_S = runner-up's, n = all votes).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopRule {
    /// Stop only at the maximum budget (TTRL's fixed budget).
    FixedBudget,
    /// Adaptive-Consistency's default and ConSol's "Bayesian" rule:
    /// `P(p_L > p_S) = 1 − I_½(v_L + prior, v_S + prior) ≥ threshold`
    /// (prior 1: uniform; 0.5: Jeffreys). AC uses threshold 0.95, prior 1.
    Beta { threshold: f32, prior: f32 },
    /// "The leader is the mode" under `Dirichlet(v + prior)` over the `top`
    /// most voted answers (0: all kept answers), by the 1-D integral; with
    /// fewer than three answers it is the Beta rule (as Adaptive-Consistency
    /// does). AC: threshold 0.95, prior 1, top 5.
    Dirichlet {
        threshold: f32,
        prior: f32,
        top: u32,
    },
    /// OptPO's sequential ratio test, as reconstructed from its public
    /// description (the paper's code is unreleased): one hypothesis per
    /// answer, likelihood `p0^{v_j} Π q^{v_c}` with `q = (1 − p0)/(m − 1)`;
    /// stop when the leader's posterior (a softmax of `β v`, `β = ln(p0/q)`)
    /// reaches `1 − delta`, or when `(v_L − v_S) β ≥ ln((1 − beta)/alpha)`.
    /// `hypotheses` is m (0: the number of answers seen, at least 2); p0 must
    /// exceed 1/m (else β ≤ 0 and the test never stops). Votes in the table's
    /// overflow bucket are not counted as a hypothesis.
    OptPo {
        p0: f32,
        hypotheses: u32,
        delta: f32,
        alpha: f32,
        beta: f32,
    },
    /// ConSol's SPRT on leader against runner-up votes: `log LR = v_L ln(p1/p0)
    /// + v_S ln((1 − p1)/(1 − p0))`, stop when it leaves
    /// `(ln(beta/(1 − alpha)), ln((1 − beta)/alpha))`. ConSol's defaults
    /// (p0 0.5, p1 0.5001, alpha 0.05, beta 0.949976) amount to
    /// `v_L − v_S ≥ 3`.
    ConsolSprt {
        p0: f64,
        p1: f64,
        alpha: f64,
        beta: f64,
    },
    /// ESC: in windows of `window` votes, stop when every vote of the newest
    /// complete window agrees (and, when a round brings several votes, every
    /// vote since).
    EscWindow { window: u32 },
    /// Adaptive-Consistency's majority rule: `v_L / n ≥ share` (n ≥ 2).
    Majority { share: f32 },
    /// ConSol's mixture SPRT: the leader's share among the top two is
    /// `Beta(prior, prior)` truncated to (½, 1) against ½ (see
    /// [`msprt_log_ratio`]); same boundaries
    /// as the SPRT. ConSol's defaults (prior 10^6, alpha 0.05, beta
    /// 1 − 0.05 − 0.00006) stop at a margin of 3, and on an exact tie past 254
    /// votes.
    ConsolMsprt { prior: f32, alpha: f64, beta: f64 },
    /// Posterior predictive: stop when the risk that the runner-up ends ahead
    /// at the maximum budget is at most `delta`, with the leader-vs-runner-up
    /// split of the remaining votes Beta-Binomial under a `Beta(prior, prior)`
    /// prior updated by the counts ([`overtake_risk`]);
    /// the remaining votes between the two are the budget left times their
    /// share of the votes so far. Ours, not an anchor's.
    Predictive { prior: f32, delta: f32 },
    /// Adaptive-Consistency's entropy rule: the entropy of the answer counts,
    /// normalised by log2 of the number of answers (a pseudo-count of 1 is
    /// added to a unanimous prompt), at most `max_normalized` (n ≥ 2).
    Entropy { max_normalized: f32 },
    /// Calibrated to a flip budget: stop once the probability that the
    /// leader is not the majority at `max_votes` is at most `delta`, under a
    /// prior over how decisive prompts are that is learned from the whole
    /// batch every round (see [`super::calibrated`]); at least 2 votes, and
    /// at two votes only when the batch's agreement bounds the flip rate of
    /// 2–0 starts by `delta` ([`super::calibrated::two_vote_risk`]);
    /// `max_votes` at most [`super::calibrated::CALIBRATED_MAX_VOTES`].
    /// Runs in the GPU [`super::Scheduler`], in
    /// [`super::calibrated::CalibratedRoundsGpu`] and in the CPU twin's
    /// rounds ([`super::cpu::run`], [`super::calibrated::CalibratedRounds`]),
    /// never per prompt alone.
    Calibrated { delta: f32 },
}

impl StopRule {
    /// ConSol's SPRT (p0 = 0.5, p1 = 0.5001, α = 0.05) with β set so that it
    /// stops when the leader leads the runner-up by `votes` votes; its
    /// defaults ([`StopRule::CONSOL_SPRT`]) stop at 3.
    ///
    /// ```
    /// use rollcall::voting::{cpu, PromptVotes, RuleConfig, StopRule};
    /// let config = RuleConfig { rule: StopRule::margin(5), min_votes: 1, max_votes: 40 };
    /// let votes = PromptVotes { total: 7, distinct: 2, ..Default::default() };
    /// assert!(!cpu::decide(&config, &votes, &[[1, 5], [2, 2]])?.stopped); // lead 3
    /// let votes = PromptVotes { total: 5, distinct: 1, ..Default::default() };
    /// assert!(cpu::decide(&config, &votes, &[[1, 5]])?.stopped); // lead 5
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn margin(votes: u32) -> StopRule {
        // Each vote moves the log ratio by about ±ln(1.0002): the bound sits
        // halfway between votes − 1 and votes steps.
        let step = (0.5001f64 / 0.5).ln();
        let alpha = 0.05;
        StopRule::ConsolSprt {
            p0: 0.5,
            p1: 0.5001,
            alpha,
            beta: 1.0 - alpha * ((f64::from(votes) - 0.5) * step).exp(),
        }
    }

    /// ConSol's mixture SPRT with its defaults.
    pub const CONSOL_MSPRT: StopRule = StopRule::ConsolMsprt {
        prior: 1.0e6,
        alpha: 0.05,
        beta: 1.0 - 0.05 - 0.00006,
    };
    /// ConSol's SPRT with its defaults.
    pub const CONSOL_SPRT: StopRule = StopRule::ConsolSprt {
        p0: 0.5,
        p1: 0.5001,
        alpha: 0.05,
        beta: 1.0 - 0.05 - 0.000024,
    };
}

/// A rule with the budgets every prompt is held to.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuleConfig {
    /// The rule.
    pub rule: StopRule,
    /// Votes before the rule may stop a prompt.
    pub min_votes: u32,
    /// Votes at which a prompt stops whatever the rule says.
    pub max_votes: u32,
}

/// A prompt's state after a round.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Whether the prompt stops.
    pub stopped: bool,
    /// The consensus answer (the leader; ties to the answer seen first).
    pub consensus: u32,
    /// Its table slot.
    pub slot: u32,
    /// The rule's confidence in the leader, in [0, 1].
    pub confidence: f32,
    /// Votes used.
    pub votes: u32,
    /// For a live prompt, the fewest more votes that would stop it if they all
    /// went to the leader (ConSol's allocation); 0 once stopped.
    pub next: u32,
}

/// The largest per-prompt budget a rule takes.
pub const MAX_VOTES: u32 = 1 << 16;

/// The largest prior of the Beta and Dirichlet rules: past it the f32
/// incomplete beta and gamma functions lose accuracy (and GPU and twin part).
pub const MAX_BETA_PRIOR: f32 = 1000.0;

/// The rule kinds the shader switches on. The shader gets them from
/// [`rule_kind_prelude`], so this list is their one definition.
pub(crate) const RULE_KINDS: [(&str, u32); 10] = [
    ("RULE_FIXED", RULE_FIXED),
    ("RULE_BETA", RULE_BETA),
    ("RULE_DIRICHLET", RULE_DIRICHLET),
    ("RULE_OPTPO", RULE_OPTPO),
    ("RULE_CONSOL_SPRT", RULE_CONSOL_SPRT),
    ("RULE_ESC", RULE_ESC),
    ("RULE_MAJORITY", RULE_MAJORITY),
    ("RULE_ENTROPY", RULE_ENTROPY),
    ("RULE_CONSOL_MSPRT", RULE_CONSOL_MSPRT),
    ("RULE_PREDICTIVE", RULE_PREDICTIVE),
];
pub(crate) const RULE_FIXED: u32 = 0;
pub(crate) const RULE_BETA: u32 = 1;
pub(crate) const RULE_DIRICHLET: u32 = 2;
pub(crate) const RULE_OPTPO: u32 = 3;
pub(crate) const RULE_CONSOL_SPRT: u32 = 4;
pub(crate) const RULE_ESC: u32 = 5;
pub(crate) const RULE_MAJORITY: u32 = 6;
pub(crate) const RULE_ENTROPY: u32 = 7;
pub(crate) const RULE_CONSOL_MSPRT: u32 = 8;
pub(crate) const RULE_PREDICTIVE: u32 = 9;

/// WGSL declarations of the rule kinds, prepended to the voting shader.
pub(crate) fn rule_kind_prelude() -> String {
    RULE_KINDS
        .iter()
        .map(|(name, value)| format!("const {name}: u32 = {value}u;\n"))
        .collect()
}

/// What the shader reads: the rule as numbers (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuRule {
    /// Rule kind, one of the `RULE_*` constants.
    pub kind: u32,
    /// Minimum votes.
    pub min_votes: u32,
    /// Maximum votes.
    pub max_votes: u32,
    /// `top`, `window` or `hypotheses`.
    pub count: u32,
    /// Rule constants.
    pub c: [f32; 4],
}

/// The `decide` kernel's uniform (`DecideParams` in the shader), as bytes.
pub(crate) type DecideParams = [u8; 48];

/// The consensus of a prompt without votes.
pub(crate) const NO_CONSENSUS: u32 = u32::MAX;

impl GpuRule {
    /// The `decide` kernel's uniform (48 bytes): the rule, then the number of
    /// listed prompts and whether to compute the fewest votes that could pass.
    pub(crate) fn decide_params(&self, prompts: u32, want_fewest: bool) -> DecideParams {
        let rule = std::mem::size_of::<GpuRule>();
        let mut params = [0u8; 48];
        params[..rule].copy_from_slice(bytemuck::bytes_of(self));
        params[rule..rule + 4].copy_from_slice(&prompts.to_le_bytes());
        params[rule + 4..rule + 8].copy_from_slice(&u32::from(want_fewest).to_le_bytes());
        params
    }
}

impl RuleConfig {
    /// Checks the parameters: `Err(Error::InvalidRule)` names the one out of
    /// range.
    pub fn validate(&self) -> Result<()> {
        self.gpu_form().map(|_| ())
    }

    /// Checks the parameters and converts them to the shader's form.
    pub(crate) fn gpu_form(&self) -> Result<GpuRule> {
        // Every refusal names the rule and budgets it was given.
        let bad = |what: &str| {
            Err(Error::InvalidRule(format!(
                "{what}; got {:?} with min_votes {}, max_votes {}",
                self.rule, self.min_votes, self.max_votes
            )))
        };
        if self.max_votes == 0 || self.min_votes > self.max_votes {
            return bad("need 0 < max_votes and min_votes <= max_votes");
        }
        if self.max_votes > MAX_VOTES {
            return Err(Error::InvalidRule(format!(
                "max_votes {} is past {MAX_VOTES} (the fewest-votes search is linear in it)",
                self.max_votes
            )));
        }
        let unit = |x: f32| (0.0..=1.0).contains(&x);
        let (kind, count, c) = match self.rule {
            StopRule::FixedBudget => (RULE_FIXED, 0, [0.0; 4]),
            StopRule::Beta { threshold, prior } => {
                if !(unit(threshold) && prior > 0.0 && prior <= MAX_BETA_PRIOR) {
                    return bad(&format!(
                        "Beta needs threshold in [0, 1] and prior in (0, {MAX_BETA_PRIOR}]"
                    ));
                }
                (RULE_BETA, 0, [threshold, prior, 0.0, 0.0])
            }
            StopRule::Dirichlet {
                threshold,
                prior,
                top,
            } => {
                if !(unit(threshold) && prior > 0.0 && prior <= MAX_BETA_PRIOR) || top == 1 {
                    return bad(&format!(
                        "Dirichlet needs threshold in [0, 1], prior in (0, {MAX_BETA_PRIOR}], top != 1"
                    ));
                }
                (RULE_DIRICHLET, top, [threshold, prior, 0.0, 0.0])
            }
            StopRule::OptPo {
                p0,
                hypotheses,
                delta,
                alpha,
                beta,
            } => {
                let open = |x: f32| x > 0.0 && x < 1.0;
                if !(open(p0) && unit(delta) && open(alpha) && (0.0..1.0).contains(&beta))
                    || hypotheses == 1
                {
                    return bad("OptPo needs p0, alpha in (0, 1), delta in [0, 1], beta in [0, 1), hypotheses != 1");
                }
                if hypotheses >= 2 && p0 * hypotheses as f32 <= 1.0 {
                    return bad("OptPo needs p0 above 1/hypotheses (else the test never stops)");
                }
                let bound = (((1.0 - beta) / alpha) as f64).ln() as f32;
                (RULE_OPTPO, hypotheses, [p0, delta, bound, 0.0])
            }
            StopRule::ConsolSprt {
                p0,
                p1,
                alpha,
                beta,
            } => {
                let open = |x: f64| x > 0.0 && x < 1.0;
                if !(open(p0) && open(p1) && open(alpha) && open(beta)) {
                    return bad("ConsolSprt needs p0, p1, alpha, beta in (0, 1)");
                }
                // Logs in f64 on the host: ln(1.0002) has few f32 digits otherwise.
                (
                    RULE_CONSOL_SPRT,
                    0,
                    [
                        (p1 / p0).ln() as f32,
                        ((1.0 - p1) / (1.0 - p0)).ln() as f32,
                        ((1.0 - beta) / alpha).ln() as f32,
                        (beta / (1.0 - alpha)).ln() as f32,
                    ],
                )
            }
            StopRule::EscWindow { window } => {
                if window == 0 {
                    return bad("EscWindow needs window > 0");
                }
                (RULE_ESC, window, [0.0; 4])
            }
            StopRule::Majority { share } => {
                if !unit(share) {
                    return bad("Majority needs share in [0, 1]");
                }
                (RULE_MAJORITY, 0, [share, 0.0, 0.0, 0.0])
            }
            StopRule::ConsolMsprt { prior, alpha, beta } => {
                let open = |x: f64| x > 0.0 && x < 1.0;
                if !(prior > 0.0 && prior.is_finite() && open(alpha) && open(beta)) {
                    return bad("ConsolMsprt needs prior > 0 and alpha, beta in (0, 1)");
                }
                (
                    RULE_CONSOL_MSPRT,
                    0,
                    [
                        prior,
                        0.0,
                        ((1.0 - beta) / alpha).ln() as f32,
                        (beta / (1.0 - alpha)).ln() as f32,
                    ],
                )
            }
            StopRule::Predictive { prior, delta } => {
                if !(prior > 0.0 && prior.is_finite() && unit(delta)) {
                    return bad("Predictive needs prior > 0 and delta in [0, 1]");
                }
                (RULE_PREDICTIVE, 0, [delta, prior, 0.0, 0.0])
            }
            StopRule::Entropy { max_normalized } => {
                if !unit(max_normalized) {
                    return bad("Entropy needs max_normalized in [0, 1]");
                }
                (RULE_ENTROPY, 0, [max_normalized, 0.0, 0.0, 0.0])
            }
            StopRule::Calibrated { .. } => {
                return bad("Calibrated needs the batch's prior: it runs in the scheduler (GPU or CPU) or in CalibratedRoundsGpu / CalibratedRounds, not per prompt");
            }
        };
        Ok(GpuRule {
            kind,
            min_votes: self.min_votes,
            max_votes: self.max_votes,
            count,
            c,
        })
    }
}

/// Leader and runner-up slots and votes (ties to the lower slot).
fn leaders(table: &[[u32; 2]]) -> (usize, u32, u32) {
    let mut leader = 0usize;
    for (k, e) in table.iter().enumerate() {
        if e[1] > table[leader][1] {
            leader = k;
        }
    }
    let leader_votes = table.get(leader).map_or(0, |e| e[1]);
    let runner_up = table
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != leader)
        .map(|(_, e)| e[1])
        .max()
        .unwrap_or(0);
    (leader, leader_votes, runner_up)
}

/// Whether the rule is met and its confidence, for `table` (first-seen order).
pub(crate) fn rule_statistic(
    rule: &GpuRule,
    votes: &PromptVotes,
    table: &[[u32; 2]],
) -> (bool, f32) {
    let n = votes.total;
    let (_, vl, vs) = leaders(table);
    let share = if n == 0 { 0.0 } else { vl as f32 / n as f32 };
    let (met, confidence) = match rule.kind {
        RULE_BETA => {
            let p = beta_leader_probability(vl, vs, rule.c[1]);
            (p >= rule.c[0], p)
        }
        RULE_DIRICHLET => {
            let distinct = table.len();
            if distinct < 3 {
                let p = beta_leader_probability(vl, vs, rule.c[1]);
                return (p >= rule.c[0], p);
            }
            // The `top` most voted answers, leader first (ties by slot).
            let mut order: Vec<usize> = (0..distinct).collect();
            order.sort_by(|&a, &b| table[b][1].cmp(&table[a][1]).then(a.cmp(&b)));
            let keep = if rule.count == 0 {
                distinct
            } else {
                distinct.min(rule.count as usize)
            };
            let alphas: Vec<f32> = order[..keep]
                .iter()
                .map(|&k| table[k][1] as f32 + rule.c[1])
                .collect();
            let p = dirichlet_mode_probability(&alphas, 0);
            (p >= rule.c[0], p)
        }
        RULE_OPTPO => {
            let seen = table.len() as u32;
            let m = if rule.count == 0 {
                seen.max(2)
            } else {
                rule.count.max(seen)
            } as f32;
            let p0 = rule.c[0];
            let q = (1.0 - p0) / (m - 1.0);
            let beta = (p0 / q).ln();
            // Leader posterior: 1 / Σ_j exp(β (v_j − v_L)), unseen answers at 0 votes.
            let mut denom = 0.0f32;
            for e in table {
                denom += (beta * (e[1] as f32 - vl as f32)).exp();
            }
            denom += (m - seen as f32) * (-beta * vl as f32).exp();
            let posterior = 1.0 / denom;
            let met = beta > 0.0
                && (posterior >= 1.0 - rule.c[1] || (vl - vs) as f32 * beta >= rule.c[2]);
            (met, posterior)
        }
        RULE_CONSOL_SPRT => {
            let log_lr = vl as f32 * rule.c[0] + vs as f32 * rule.c[1];
            let met = log_lr >= rule.c[2] || log_lr <= rule.c[3];
            (met, 1.0 / (1.0 + (-log_lr).exp()))
        }
        RULE_ESC => {
            // The newest complete window (ending at the last multiple of w)
            // and every vote after it agree.
            let w = rule.count;
            let met = n >= w && votes.run_length >= w + n % w;
            (met, share)
        }
        RULE_MAJORITY => (n >= 2 && share >= rule.c[0], share),
        RULE_ENTROPY => {
            let distinct = table.len();
            let mut total = 0.0f32;
            for e in table {
                total += e[1] as f32;
            }
            let mut h = 0.0f32;
            for e in table {
                let p = e[1] as f32 / (total + if distinct == 1 { 1.0 } else { 0.0 });
                h -= p * p.log2();
            }
            let norm = if distinct <= 1 {
                let p = 1.0 / (total + 1.0);
                h -= p * p.log2();
                1.0
            } else {
                (distinct as f32).log2()
            };
            let normalized = if total == 0.0 { 1.0 } else { h / norm };
            (n >= 2 && normalized <= rule.c[0], 1.0 - normalized)
        }
        RULE_PREDICTIVE => {
            let remaining = if n == 0 || n >= rule.max_votes {
                0
            } else {
                // u32 arithmetic as the shader's (wrapping, never a panic).
                ((rule.max_votes - n) as f32 * vl.wrapping_add(vs) as f32 / n as f32 + 0.5).floor()
                    as u32
            };
            let risk = overtake_risk(vl, vs, remaining, rule.c[1]);
            (n > 0 && risk <= rule.c[0], 1.0 - risk)
        }
        RULE_CONSOL_MSPRT => {
            let log_lr = msprt_log_ratio(vl, vs, rule.c[0]);
            let met = log_lr >= rule.c[2] || log_lr <= rule.c[3];
            (met, 1.0 / (1.0 + (-log_lr).exp()))
        }
        _ => (false, share),
    };
    (met, confidence.clamp(0.0, 1.0))
}

/// The decision for one prompt: stop at the maximum budget, or once past the
/// minimum when the rule is met.
pub(crate) fn decide(rule: &GpuRule, votes: &PromptVotes, table: &[[u32; 2]]) -> Decision {
    let (leader, _, _) = leaders(table);
    let (met, confidence) = rule_statistic(rule, votes, table);
    let n = votes.total;
    let stopped = n >= rule.max_votes || (n >= rule.min_votes && n > 0 && met);
    let consensus = table.get(leader).map_or(NO_CONSENSUS, |e| e[0]);
    let next = if stopped {
        0
    } else {
        // As if t more votes went to the leader.
        let room = rule.max_votes - n;
        let leader_run = if !table.is_empty() && votes.run_answer == consensus {
            votes.run_length
        } else {
            0
        };
        let mut hypothetical = table.to_vec();
        let fewest = (1..room)
            .find(|&t| {
                // u32 arithmetic as the shader's (wrapping, never a panic).
                if let Some(e) = hypothetical.get_mut(leader) {
                    e[1] = table[leader][1].wrapping_add(t);
                }
                let v = PromptVotes {
                    total: n + t,
                    run_length: leader_run.wrapping_add(t),
                    ..*votes
                };
                n + t >= rule.min_votes && rule_statistic(rule, &v, &hypothetical).0
            })
            .unwrap_or(room);
        fewest.max(1)
    };
    Decision {
        stopped,
        consensus,
        slot: if table.is_empty() {
            u32::MAX
        } else {
            leader as u32
        },
        confidence,
        votes: n,
        next,
    }
}
