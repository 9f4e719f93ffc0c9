//! Rewards for the kept rollouts, CPU twin of `rewards_and_advantages` in
//! `shaders/voting.wgsl`: TTRL's majority reward and GRPO's group-normalised
//! advantages, `(r − mean) / (std + eps)` with the unbiased standard deviation
//! of each prompt's group; a group whose rewards are all equal (a group of
//! one included) gets advantage 0. The group sums take the segment shape
//! (`math::segment`), as both kernels do.

use super::Segment;
use crate::{Error, Result};

/// Checks reward segments as both the GPU and the twins do: each prompt below
/// `prompts` and in one segment at most, each segment inside the `rollouts`,
/// no two segments overlapping.
pub(crate) fn check_segments(segments: &[Segment], rollouts: usize, prompts: u32) -> Result<()> {
    let bad = |segment: usize, reason: String| Err(Error::InvalidSegment { segment, reason });
    for (i, s) in segments.iter().enumerate() {
        let end = u64::from(s.start) + u64::from(s.count);
        if s.prompt >= prompts {
            return bad(i, format!("prompt {} of {prompts}", s.prompt));
        }
        if end > rollouts as u64 {
            return bad(
                i,
                format!("rollouts {}..{end} past the {rollouts} rollouts", s.start),
            );
        }
    }
    let mut by_prompt: Vec<(u32, usize)> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.prompt, i))
        .collect();
    by_prompt.sort_unstable();
    if let Some(w) = by_prompt.windows(2).find(|w| w[0].0 == w[1].0) {
        return bad(w[1].1, format!("prompt {} appears twice", w[1].0));
    }
    let mut spans: Vec<(u32, u32, usize)> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.start, s.start + s.count, i))
        .collect();
    spans.sort_unstable();
    if let Some(w) = spans.windows(2).find(|w| w[0].1 > w[1].0) {
        return bad(w[1].2, "reward segments overlap".into());
    }
    Ok(())
}

/// Checks GRPO's `eps`: finite and >= 0.
pub(crate) fn check_eps(eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "eps must be finite and >= 0, got {eps}"
        )))
    }
}

/// Checks that no reward is NaN (a NaN has no order, so a group's flat test
/// would depend on the device).
pub(crate) fn check_not_nan(rewards: &[f32]) -> Result<()> {
    match rewards.iter().position(|r| r.is_nan()) {
        Some(index) => Err(Error::NonFiniteReward {
            index,
            value: f32::NAN,
        }),
        None => Ok(()),
    }
}

/// TTRL's reward: 1 when the rollout's answer is its prompt's consensus
/// (`consensus` holds one answer id per prompt); rollouts in no segment get 0.
/// Segments are checked as [`VoteTables::rewards`](super::VoteTables::rewards)
/// checks them.
///
/// ```
/// use rollcall::voting::{rewards::majority_rewards, Segment};
/// let seg = [Segment { prompt: 0, start: 0, count: 3 }];
/// assert_eq!(majority_rewards(&seg, &[4, 5, 4], &[4])?, vec![1.0, 0.0, 1.0]);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn majority_rewards(
    segments: &[Segment],
    answers: &[u32],
    consensus: &[u32],
) -> Result<Vec<f32>> {
    let prompts = u32::try_from(consensus.len()).unwrap_or(u32::MAX);
    check_segments(segments, answers.len(), prompts)?;
    let mut rewards = vec![0.0; answers.len()];
    for s in segments {
        for i in s.start..s.start + s.count {
            rewards[i as usize] = if answers[i as usize] == consensus[s.prompt as usize] {
                1.0
            } else {
                0.0
            };
        }
    }
    Ok(rewards)
}

/// GRPO's advantages per segment, with the shader's f32 operations; rollouts
/// in no segment get 0. Segments are checked as
/// [`VoteTables::rewards`](super::VoteTables::rewards) checks them (any
/// prompt ids); `eps` must be finite and >= 0, rewards not NaN.
///
/// ```
/// use rollcall::voting::{rewards::group_advantages, Segment};
/// let seg = [Segment { prompt: 0, start: 0, count: 4 }];
/// let adv = group_advantages(&seg, &[1.0, 0.0, 1.0, 1.0], 1e-4)?;
/// assert!(adv[1] < 0.0 && adv[0] > 0.0);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn group_advantages(segments: &[Segment], rewards: &[f32], eps: f32) -> Result<Vec<f32>> {
    check_eps(eps)?;
    check_segments(segments, rewards.len(), u32::MAX)?;
    check_not_nan(rewards)?;
    Ok(group_advantages_unchecked(segments, rewards, eps))
}

/// [`group_advantages`] on checked input.
pub(crate) fn group_advantages_unchecked(
    segments: &[Segment],
    rewards: &[f32],
    eps: f32,
) -> Vec<f32> {
    let mut advantages = vec![0.0; rewards.len()];
    for s in segments {
        let range = s.start as usize..(s.start + s.count) as usize;
        let group = &rewards[range.clone()];
        let stats = GroupStats::of(group);
        for (a, &r) in advantages[range].iter_mut().zip(group) {
            // A group with one reward value carries no signal: advantage 0
            // (its f32 mean may differ from the value in the last place).
            *a = if stats.flat {
                0.0
            } else {
                (r - stats.mean) / (stats.deviation + eps)
            };
        }
    }
    advantages
}

/// GRPO's statistics of one group, the kernels' f32 operations in the
/// segment shape (`math::segment`): the sums of the rewards and of their
/// squared deviations split in lane blocks and folded by the tree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupStats {
    /// The mean (0 for an empty group).
    pub(crate) mean: f32,
    /// The unbiased standard deviation (0 for fewer than two rewards).
    pub(crate) deviation: f32,
    /// Every reward equal (an empty group included).
    pub(crate) flat: bool,
}

impl GroupStats {
    pub(crate) fn of(group: &[f32]) -> Self {
        use crate::math::segment::segment_sum;
        let m = group.len();
        let n = m as f32;
        let mean = segment_sum(m, |q| group[q]) / n.max(1.0);
        let squares = segment_sum(m, |q| {
            let d = group[q] - mean;
            d * d
        });
        let deviation = if m > 1 {
            (squares / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let lo = group.iter().fold(f32::INFINITY, |a, &r| a.min(r));
        let hi = group.iter().fold(f32::NEG_INFINITY, |a, &r| a.max(r));
        Self {
            mean,
            deviation,
            flat: m == 0 || lo == hi,
        }
    }
}
