//! The calibrated rule's model: how decisive this batch's prompts are,
//! learned from the batch, and the probability that a prompt's leader is
//! not the majority at the budget.
//!
//! Each prompt's answers are draws from `CATEGORIES` categories: one
//! dominant category D with share `w`, the others sharing `1 − w` by a
//! symmetric Dirichlet(`β`). D is latent and uniform over the categories
//! (summed out, never taken to be the observed leader: the fit does not
//! select on the data). A component is a pair (w, β) on a fixed grid; the
//! batch's weights over the components are fitted by EM on every prompt's
//! whole count vector (stopped prompts included: a data-dependent stop
//! leaves the likelihood unchanged), with a pseudo-count per component.
//!
//! A prompt's risk is the posterior probability, under that prior, that
//! the leader is overtaken by the budget (ties to the answer seen first):
//! for each component and each choice of D, the remaining votes go to D
//! binomially and to the rest by a Pólya urn; the leader's races against
//! each competitor are exact and added (a union bound), plus the races
//! against the unseen categories.
//!
//! After two votes a prompt only says whether they agree, and the batch
//! only how often two votes agree (`a`): that does not determine the risk
//! of a 2–0 start, which the model would then read off its hyperprior. So
//! at two votes the risk is at least [`two_vote_risk`]`(a) = (1 − a) / 2a`,
//! a bound on the flip rate of 2–0 starts for any batch of agreement `a`: for a
//! prompt whose answers have shares `p`, a 2–0 start on an answer that is
//! not the majority at the budget is at most half as likely as a
//! disagreeing pair (`Σ_{k≠top} p_k² ≤ Σ_{j<k} p_j p_k`, and the finite
//! budget only lowers it). The rule estimates `a` from the batch's own
//! votes with one disagreeing prompt added ([`batch_two_vote_risk`]): the
//! bound holds for the batch's true agreement, and a small batch's estimate
//! can run high by chance.

use super::rules::{Decision, RuleConfig, StopRule};
use super::PromptVotes;
use crate::{Error, Result};

pub(crate) mod gpu;
#[cfg(test)]
pub(crate) use gpu::shader_variants;
pub(crate) use gpu::CalibratedGpu;
pub use gpu::CalibratedRoundsGpu;

/// Categories of the model (answers a prompt could give).
pub const CATEGORIES: u32 = 40;
/// The dominant category's share, per component.
pub const DOMINANT_SHARES: [f64; 13] = [
    0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
];
/// The rest's symmetric Dirichlet concentration, per component.
pub const REST_CONCENTRATIONS: [f64; 4] = [0.01, 0.05, 0.2, 1.0];
/// Components: every (share, concentration) pair.
pub const COMPONENTS: usize = DOMINANT_SHARES.len() * REST_CONCENTRATIONS.len();
/// Mean pseudo-count per component added at each EM step, spread over the
/// components by [`hyperprior`].
pub const PSEUDO_COUNT: f64 = 0.3;
/// EM steps in the first round (from the hyperprior).
pub const FIRST_EM_STEPS: u32 = 50;
/// EM steps in later rounds (from the previous round's weights).
pub const LATER_EM_STEPS: u32 = 5;
/// Votes before the rule may stop a prompt.
pub const MIN_VOTES: u32 = 2;
/// The largest budget the rule takes (its race table grows as budget³).
pub const CALIBRATED_MAX_VOTES: u32 = 64;

/// Component g's (dominant share, rest concentration); components are
/// ordered share-major.
pub fn component(g: usize) -> (f64, f64) {
    (
        DOMINANT_SHARES[g / REST_CONCENTRATIONS.len()],
        REST_CONCENTRATIONS[g % REST_CONCENTRATIONS.len()],
    )
}

/// `ln(a (a+1) … (a+c−1))`.
fn ln_rising(a: f64, c: u32) -> f64 {
    (0..c).map(|k| (a + f64::from(k)).ln()).sum()
}

/// The batch's weights over the components.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPrior {
    weights: Vec<f64>,
}

/// The hyperprior's shape over the components: per component, the share
/// of [`SHARE_FLOOR`, 1] its dominant share stands for (the cell between
/// the midpoints to its grid neighbours), split evenly over the
/// concentrations; sums to 1. The EM starts from it and its pseudo-counts
/// ([`PSEUDO_COUNT`] × [`COMPONENTS`] in all) follow it, so the hyperprior
/// is uniform over the dominant share and does not change where the grid
/// is refined (uniform weights put 46 % of it on shares ≥ 0.95, which
/// cover 9 % of [0.15, 1]; early rounds, whose votes do not identify the prior, kept
/// that lean to decisive prompts).
pub fn hyperprior() -> Vec<f64> {
    let s = &DOMINANT_SHARES;
    let cells: Vec<f64> = (0..s.len())
        .map(|i| {
            let lo = if i == 0 {
                SHARE_FLOOR
            } else {
                0.5 * (s[i - 1] + s[i])
            };
            let hi = if i + 1 == s.len() {
                1.0
            } else {
                0.5 * (s[i] + s[i + 1])
            };
            hi - lo
        })
        .collect();
    let total: f64 = cells.iter().sum();
    (0..COMPONENTS)
        .map(|g| cells[g / REST_CONCENTRATIONS.len()] / total / REST_CONCENTRATIONS.len() as f64)
        .collect()
}

/// Each component's pseudo-count per EM step: [`PSEUDO_COUNT`] ×
/// [`COMPONENTS`] spread by the [`hyperprior`].
pub fn pseudo_counts() -> Vec<f64> {
    hyperprior()
        .iter()
        .map(|h| h * PSEUDO_COUNT * COMPONENTS as f64)
        .collect()
}

/// A prompt's pairwise agreement: the share of its pairs of votes that
/// agree, `Σ_k c_k (c_k − 1) / (n (n − 1))` over its table's counts `c`
/// and its `total` votes n (votes that found no slot count as agreeing
/// with none); `None` below two votes.
pub fn pair_agreement(counts: &[u32], total: u32) -> Option<f64> {
    let n = u64::from(total);
    (n >= 2).then(|| {
        let pairs: u64 = counts
            .iter()
            .map(|&c| u64::from(c) * u64::from(c.saturating_sub(1)))
            .sum();
        (pairs as f64 / (n * (n - 1)) as f64).min(1.0)
    })
}

/// The least risk of a prompt at two votes when two votes of the batch
/// agree with probability `agreement`: `(1 − a) / 2a`, at most 1 (1 when
/// nothing agrees). The flip rate of prompts stopped at a 2–0 start is at
/// most this, whatever the batch (see the module's introduction).
pub fn two_vote_risk(agreement: f64) -> f64 {
    if agreement > 0.0 {
        ((1.0 - agreement) / (2.0 * agreement)).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// The batch's [`two_vote_risk`] from its prompts' (table counts, vote
/// total): the agreement is the mean [`pair_agreement`] over the prompts
/// with two votes or more and one more that disagrees, so that a small
/// batch which happens to agree throughout is not taken to agree always
/// (one prompt: a ≤ 1/2; 30 that all agree: a = 30/31, a bound of 1.7 %).
pub fn batch_two_vote_risk<'a>(prompts: impl Iterator<Item = (&'a [u32], u32)>) -> f64 {
    let (sum, count) = prompts
        .filter_map(|(counts, total)| pair_agreement(counts, total))
        .fold((0.0, 0u64), |(s, n), a| (s + a, n + 1));
    two_vote_risk(sum / (count + 1) as f64)
}

/// The lower end of the smallest share's cell (as far below 0.2 as the
/// grid's spacing there).
pub const SHARE_FLOOR: f64 = 0.15;

impl Default for BatchPrior {
    fn default() -> Self {
        Self {
            weights: hyperprior(),
        }
    }
}

impl BatchPrior {
    /// A prior with these weights (one per component, see [`component`]),
    /// normalised; [`crate::Error::InvalidArgument`] unless there are
    /// [`COMPONENTS`] finite, non-negative weights with a positive sum.
    pub fn from_weights(weights: &[f64]) -> crate::Result<Self> {
        let total: f64 = weights.iter().sum();
        if weights.len() != COMPONENTS
            || weights.iter().any(|w| !w.is_finite() || *w < 0.0)
            || !(total > 0.0 && total.is_finite())
        {
            return Err(crate::Error::InvalidArgument(format!(
                "a batch prior needs {COMPONENTS} finite non-negative weights with a positive sum, got {weights:?}"
            )));
        }
        Ok(Self {
            weights: weights.iter().map(|w| w / total).collect(),
        })
    }

    /// The weights, one per (share, concentration) component.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

/// The model for one budget: log rising factorials and the race
/// probabilities, computed once per entry as they are needed.
#[derive(Clone, Debug)]
pub struct CalibratedModel {
    budget: u32,
    /// `ln_rising(β, c)` per component and c ≤ budget.
    rest_one: Vec<f64>,
    /// `ln_rising((K − 1) β, c)` per component and c ≤ budget.
    rest_all: Vec<f64>,
    /// Race probabilities computed so far.
    races: std::collections::HashMap<u64, f64>,
}

/// Which side the dominant category is on in a race.
#[derive(Clone, Copy)]
enum Dominant {
    /// The leader is dominant: P(the competitor ends ahead).
    Leader,
    /// The competitor is dominant: P(it ends ahead of the leader).
    Competitor,
}

impl CalibratedModel {
    /// The model for prompts stopped at `budget` votes at the latest.
    pub fn new(budget: u32) -> Self {
        let b = budget as usize + 1;
        let mut rest_one = Vec::with_capacity(COMPONENTS * b);
        let mut rest_all = Vec::with_capacity(COMPONENTS * b);
        for g in 0..COMPONENTS {
            let (_, beta) = component(g);
            for c in 0..=budget {
                rest_one.push(ln_rising(beta, c));
                rest_all.push(ln_rising(f64::from(CATEGORIES - 1) * beta, c));
            }
        }
        Self {
            budget,
            rest_one,
            rest_all,
            races: std::collections::HashMap::new(),
        }
    }

    /// The model for `budget`, with the races this thread computed before
    /// (they depend on the budget only); give it back with [`Self::keep`].
    pub(crate) fn cached(budget: u32) -> Self {
        MODELS
            .with(|m| m.borrow_mut().remove(&budget))
            .unwrap_or_else(|| Self::new(budget))
    }

    /// Keeps the model's races for the next [`Self::cached`] on this thread.
    pub(crate) fn keep(self) {
        MODELS.with(|m| m.borrow_mut().insert(self.budget, self));
    }

    fn rest(&self, table: &[f64], g: usize, c: u32) -> f64 {
        table[g * (self.budget as usize + 1) + c as usize]
    }

    /// Log-likelihood of a prompt's counts under component g for each
    /// choice of the dominant category: the seen answers in table order,
    /// then "an unseen category" (all K − m of them together). Constants
    /// common to every component and choice are left out.
    fn log_likelihoods(&self, g: usize, counts: &[u32], n: u32, out: &mut Vec<f64>) {
        let (w, _) = component(g);
        let m = counts.len() as u32;
        let base: f64 = counts
            .iter()
            .map(|&c| self.rest(&self.rest_one, g, c))
            .sum();
        out.clear();
        for &c in counts {
            out.push(
                f64::from(c) * w.ln() + f64::from(n - c) * (1.0 - w).ln() + base
                    - self.rest(&self.rest_one, g, c)
                    - self.rest(&self.rest_all, g, n - c),
            );
        }
        out.push(if m < CATEGORIES {
            f64::from(CATEGORIES - m).ln() + f64::from(n) * (1.0 - w).ln() + base
                - self.rest(&self.rest_all, g, n)
        } else {
            f64::NEG_INFINITY
        });
    }

    /// The posterior over components (normalised) and, per component, the
    /// log-likelihoods per dominant choice.
    fn posterior(&self, prior: &BatchPrior, counts: &[u32], n: u32) -> (Vec<f64>, Vec<Vec<f64>>) {
        let mut per_d = Vec::with_capacity(COMPONENTS);
        let mut log_post = Vec::with_capacity(COMPONENTS);
        let mut buf = Vec::new();
        for g in 0..COMPONENTS {
            self.log_likelihoods(g, counts, n, &mut buf);
            log_post.push(prior.weights[g].max(f64::MIN_POSITIVE).ln() + log_sum_exp(&buf));
            per_d.push(buf.clone());
        }
        let top = log_sum_exp(&log_post);
        (log_post.iter().map(|l| (l - top).exp()).collect(), per_d)
    }

    /// One race, memoised: component g, `remaining` votes to come, the
    /// dominant side's count `c_dom`, the other side's `c_other`, the votes
    /// so far `n`, and whether the competitor wins ties (seen first).
    fn race(
        &mut self,
        g: usize,
        side: Dominant,
        c_dom: u32,
        c_other: u32,
        n: u32,
        tie: bool,
    ) -> f64 {
        let b = u64::from(self.budget) + 1;
        let s = matches!(side, Dominant::Competitor) as u64;
        let key =
            ((((g as u64 * 2 + s) * 2 + tie as u64) * b + u64::from(n)) * b + u64::from(c_dom)) * b
                + u64::from(c_other);
        let budget = self.budget;
        *self.races.entry(key).or_insert_with(|| {
            let (w, beta) = component(g);
            // The urn's mass: the rest's prior plus the non-dominant votes.
            let rest_mass = f64::from(CATEGORIES - 1) * beta + f64::from(n - c_dom);
            let other_wins = matches!(side, Dominant::Leader);
            race(
                w,
                budget - n,
                c_dom,
                c_other,
                f64::from(c_other) + beta,
                rest_mass,
                other_wins,
                tie,
            )
        })
    }

    /// The race-table entry the GPU form stores: component `g`, the leader
    /// dominant (`leader_dominant`) or the competitor, a tie to the
    /// competitor, `n` votes so far, the dominant side's `c_dom`, the
    /// other's `c_other`.
    #[cfg(test)]
    pub(crate) fn race_entry(
        &mut self,
        g: usize,
        leader_dominant: bool,
        tie: bool,
        n: u32,
        c_dom: u32,
        c_other: u32,
    ) -> f64 {
        let side = if leader_dominant {
            Dominant::Leader
        } else {
            Dominant::Competitor
        };
        self.race(g, side, c_dom, c_other, n, tie)
    }

    /// The probability that the leader (table slot `leader`) is not the
    /// majority at the budget, under `prior`.
    pub fn risk(&mut self, prior: &BatchPrior, counts: &[u32], leader: usize) -> f64 {
        let n: u32 = counts.iter().sum();
        if n >= self.budget || counts.is_empty() {
            return 0.0;
        }
        let remaining = self.budget - n;
        let m = counts.len() as u32;
        let c_l = counts[leader];
        let (post, per_d) = self.posterior(prior, counts, n);
        let mut risk = 0.0;
        for g in 0..COMPONENTS {
            if post[g] < 1e-12 {
                continue;
            }
            let lls = &per_d[g];
            let top = log_sum_exp(lls);
            let p_d = |d: usize| (lls[d] - top).exp();
            // The leader dominant: any competitor, seen or not, may pass it.
            let mut leader_dominant = 0.0;
            for (j, &c_j) in counts.iter().enumerate() {
                if j != leader && c_j + remaining >= c_l {
                    leader_dominant += self.race(g, Dominant::Leader, c_l, c_j, n, j < leader);
                }
            }
            if m < CATEGORIES && remaining >= c_l {
                leader_dominant +=
                    f64::from(CATEGORIES - m) * self.race(g, Dominant::Leader, c_l, 0, n, false);
            }
            let mut r = p_d(leader) * leader_dominant.min(1.0);
            // Another category dominant: it races the leader.
            for (d, &c_d) in counts.iter().enumerate().chain([(m as usize, &0u32)]) {
                if d == leader || (d == m as usize && m >= CATEGORIES) {
                    continue;
                }
                if c_d + remaining >= c_l {
                    r += p_d(d) * self.race(g, Dominant::Competitor, c_d, c_l, n, d < leader);
                }
            }
            risk += post[g] * r;
        }
        risk.min(1.0)
    }

    /// EM steps over the prompts' count vectors (empty ones ignored).
    pub fn refit<'a>(
        &self,
        prior: &mut BatchPrior,
        prompts: impl Iterator<Item = &'a [u32]> + Clone,
        steps: u32,
    ) {
        let pseudo = pseudo_counts();
        for _ in 0..steps {
            let mut sums = pseudo.clone();
            for counts in prompts.clone() {
                let n: u32 = counts.iter().sum();
                if n == 0 {
                    continue;
                }
                let (post, _) = self.posterior(prior, counts, n);
                for (s, p) in sums.iter_mut().zip(post) {
                    *s += p;
                }
            }
            let total: f64 = sums.iter().sum();
            prior.weights = sums.iter().map(|s| s / total).collect();
        }
    }

    /// The calibrated rule's decision for one prompt: stop once the risk is
    /// at most `delta` (after at least 2 votes) or at the budget; at two
    /// votes the risk is at least `two_vote_risk` (the batch's
    /// [`batch_two_vote_risk`]).
    pub fn decide(
        &mut self,
        prior: &BatchPrior,
        delta: f32,
        two_vote_risk: f64,
        votes: &PromptVotes,
        table: &[[u32; 2]],
    ) -> Decision {
        let counts: Vec<u32> = table.iter().map(|e| e[1]).collect();
        // The leader: most votes, ties to the first seen.
        let leader = counts
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, &c)| c)
            .map_or(0, |(i, _)| i);
        let consensus = table.get(leader).map_or(u32::MAX, |e| e[0]);
        let n = votes.total;
        if n >= self.budget {
            return Decision {
                stopped: true,
                consensus,
                slot: leader as u32,
                confidence: 1.0,
                votes: n,
                next: 0,
            };
        }
        let mut risk = if counts.is_empty() {
            1.0
        } else {
            self.risk(prior, &counts, leader)
        };
        if n == 2 {
            risk = risk.max(two_vote_risk);
        }
        let stopped = n >= MIN_VOTES && risk <= f64::from(delta);
        Decision {
            stopped,
            consensus,
            slot: leader as u32,
            confidence: (1.0 - risk) as f32,
            votes: n,
            next: u32::from(!stopped),
        }
    }
}

/// The calibrated rule over a batch's rounds: the model, the batch's prior
/// and the rounds it has seen. Each round refits the prior on every
/// prompt's counts (50 EM steps the first round, 5 after), takes the
/// batch's [`batch_two_vote_risk`], and then decides the live prompts; the CPU scheduler ([`super::cpu::run`]) and any other
/// round loop over [`super::cpu::VoteTables`] use it alike.
#[derive(Debug)]
pub struct CalibratedRounds {
    delta: f32,
    config: RuleConfig,
    model: Option<CalibratedModel>,
    prior: BatchPrior,
    rounds: u32,
}

impl CalibratedRounds {
    /// For a `StopRule::Calibrated` config: δ in [0, 1], 0 < `max_votes` ≤
    /// [`CALIBRATED_MAX_VOTES`], `min_votes` ≤ `max_votes`; else
    /// [`Error::InvalidRule`].
    pub fn new(config: &RuleConfig) -> Result<Self> {
        let delta = checked_delta(config)?;
        Ok(Self {
            delta,
            config: *config,
            model: Some(CalibratedModel::cached(config.max_votes)),
            prior: BatchPrior::default(),
            rounds: 0,
        })
    }

    /// The prior as last refitted.
    pub fn prior(&self) -> &BatchPrior {
        &self.prior
    }

    /// Refits the prior on every prompt of `tables` (stopped ones
    /// included), then decides the `live` prompts, in order. The budget and
    /// `min_votes` hold as for every rule.
    pub fn decide_round(
        &mut self,
        tables: &super::cpu::VoteTables,
        live: &[u32],
    ) -> Result<Vec<Decision>> {
        let model = self.model.as_mut().expect("present until dropped");
        let counts: Vec<Vec<u32>> = (0..tables.prompts())
            .map(|p| Ok(tables.table(p)?.iter().map(|e| e[1]).collect()))
            .collect::<Result<_>>()?;
        self.rounds += 1;
        let steps = if self.rounds == 1 {
            FIRST_EM_STEPS
        } else {
            LATER_EM_STEPS
        };
        model.refit(&mut self.prior, counts.iter().map(Vec::as_slice), steps);
        let totals: Vec<u32> = (0..tables.prompts())
            .map(|p| Ok(tables.votes(p)?.total))
            .collect::<Result<_>>()?;
        let two_vote_risk =
            batch_two_vote_risk(counts.iter().map(Vec::as_slice).zip(totals.iter().copied()));
        live.iter()
            .map(|&p| {
                let votes = tables.votes(p)?;
                let d = model.decide(
                    &self.prior,
                    self.delta,
                    two_vote_risk,
                    votes,
                    tables.table(p)?,
                );
                Ok(Decision {
                    stopped: (d.stopped && votes.total >= self.config.min_votes)
                        || votes.total >= self.config.max_votes,
                    ..d
                })
            })
            .collect()
    }
}

/// δ of a `StopRule::Calibrated` config, checked: δ in [0, 1], 0 <
/// `max_votes` ≤ [`CALIBRATED_MAX_VOTES`], `min_votes` ≤ `max_votes`; else
/// [`Error::InvalidRule`].
fn checked_delta(config: &RuleConfig) -> Result<f32> {
    let StopRule::Calibrated { delta } = config.rule else {
        return Err(Error::InvalidRule(format!(
            "the calibrated rule's rounds need StopRule::Calibrated, got {:?}",
            config.rule
        )));
    };
    if !(0.0..=1.0).contains(&delta)
        || config.max_votes == 0
        || config.max_votes > CALIBRATED_MAX_VOTES
        || config.min_votes > config.max_votes
    {
        return Err(Error::InvalidRule(format!(
            "Calibrated needs delta in [0, 1] and 0 < max_votes <= {CALIBRATED_MAX_VOTES}, min_votes <= max_votes; got {config:?}"
        )));
    }
    Ok(delta)
}

impl Drop for CalibratedRounds {
    fn drop(&mut self) {
        if let Some(model) = self.model.take() {
            model.keep();
        }
    }
}

thread_local! {
    static MODELS: std::cell::RefCell<std::collections::HashMap<u32, CalibratedModel>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let top = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + v.iter().map(|x| (x - top).exp()).sum::<f64>().ln()
}

/// The dominant side gains `X ~ Bin(remaining, w)` votes; the other side
/// gains `Y ~ BetaBin(remaining − X, a, mass − a)` (its share of the
/// non-dominant votes by a Pólya urn). With `other_wins`, P(the other side
/// ends ahead); else P(the dominant side ends ahead); a final tie goes to
/// the competitor when `tie` (it was seen first).
#[allow(clippy::too_many_arguments)]
fn race(
    w: f64,
    remaining: u32,
    c_dom: u32,
    c_other: u32,
    a: f64,
    mass: f64,
    other_wins: bool,
    tie: bool,
) -> f64 {
    let b = mass - a;
    let (ln_w, ln_rest) = (w.ln(), (1.0 - w).ln());
    let mut ln_choose = 0.0f64;
    let mut total = 0.0;
    for x in 0..=remaining {
        if x > 0 {
            ln_choose += f64::from(remaining - x + 1).ln() - f64::from(x).ln();
        }
        let p_x = (ln_choose + f64::from(x) * ln_w + f64::from(remaining - x) * ln_rest).exp();
        if p_x < 1e-16 {
            continue;
        }
        let rest = remaining - x;
        // BetaBin pmf from y = 0 by the ratio recurrence, started in logs.
        let mut ln_p0 = 0.0;
        for i in 0..rest {
            ln_p0 += ((b + f64::from(i)) / (a + b + f64::from(i))).ln();
        }
        let mut p_y = ln_p0.exp();
        let mut wins = 0.0;
        for y in 0..=rest {
            let other = i64::from(c_other) + i64::from(y);
            let dom = i64::from(c_dom) + i64::from(x);
            let win = if other_wins {
                other > dom || (other == dom && tie)
            } else {
                dom > other || (dom == other && tie)
            };
            if win {
                wins += p_y;
            }
            if y < rest {
                p_y *= f64::from(rest - y) / f64::from(y + 1) * (a + f64::from(y))
                    / (b + f64::from(rest - y - 1));
            }
        }
        total += p_x * wins;
    }
    total
}
