//! Rewards for the kept rollouts, CPU twin of `rewards_and_advantages` in
//! `shaders/voting.wgsl`: TTRL's majority reward and GRPO's group-normalised
//! advantages, `(r − mean) / (std + eps)` with the unbiased standard deviation
//! of each prompt's group; a group whose rewards are all equal (a group of
//! one included) gets advantage 0.

use super::Segment;
use crate::{Error, Result};

/// The rollouts of segment `index`, or why they are out of range.
fn span(index: usize, s: &Segment, len: usize) -> Result<std::ops::Range<usize>> {
    let end = u64::from(s.start) + u64::from(s.count);
    if end > len as u64 {
        return Err(Error::InvalidSegment {
            segment: index,
            reason: format!("votes {}..{end} past the {len} rollouts", s.start),
        });
    }
    Ok(s.start as usize..end as usize)
}

/// TTRL's reward: 1 when the rollout's answer is its prompt's consensus.
/// A segment past the answers, or naming a prompt without a consensus, is
/// [`Error::InvalidSegment`].
///
/// ```
/// use rollcall::voting::{rewards::majority_rewards, Segment};
/// let seg = [Segment { prompt: 0, start: 0, count: 3, pad: 0 }];
/// assert_eq!(majority_rewards(&seg, &[4, 5, 4], &[4])?, vec![1.0, 0.0, 1.0]);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn majority_rewards(
    segments: &[Segment],
    answers: &[u32],
    consensus: &[u32],
) -> Result<Vec<f32>> {
    let mut rewards = vec![0.0; answers.len()];
    for (index, s) in segments.iter().enumerate() {
        let range = span(index, s, answers.len())?;
        let consensus = *consensus
            .get(s.prompt as usize)
            .ok_or_else(|| Error::InvalidSegment {
                segment: index,
                reason: format!("prompt {} of {}", s.prompt, consensus.len()),
            })?;
        for i in range {
            rewards[i] = if answers[i] == consensus { 1.0 } else { 0.0 };
        }
    }
    Ok(rewards)
}

/// GRPO's advantages per segment, with the shader's f32 operations. A
/// segment past the rewards is [`Error::InvalidSegment`].
///
/// ```
/// use rollcall::voting::{rewards::group_advantages, Segment};
/// let seg = [Segment { prompt: 0, start: 0, count: 4, pad: 0 }];
/// let adv = group_advantages(&seg, &[1.0, 0.0, 1.0, 1.0], 1e-4)?;
/// assert!(adv[1] < 0.0 && adv[0] > 0.0);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn group_advantages(segments: &[Segment], rewards: &[f32], eps: f32) -> Result<Vec<f32>> {
    let mut advantages = vec![0.0; rewards.len()];
    for (index, s) in segments.iter().enumerate() {
        let range = span(index, s, rewards.len())?;
        group_advantages_into(&rewards[range.clone()], eps, &mut advantages[range]);
    }
    Ok(advantages)
}

/// GRPO's advantages of one group's `rewards` into `out` (as long).
pub(crate) fn group_advantages_into(rewards: &[f32], eps: f32, out: &mut [f32]) {
    let n = rewards.len() as f32;
    let mut sum = 0.0f32;
    for &r in rewards {
        sum += r;
    }
    let mean = sum / n.max(1.0);
    let mut squares = 0.0f32;
    for &r in rewards {
        let d = r - mean;
        squares += d * d;
    }
    let std = if rewards.len() > 1 {
        (squares / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    // A group with one reward value carries no signal: advantage 0 (its
    // f32 mean may differ from the value in the last place).
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &r in rewards {
        lo = lo.min(r);
        hi = hi.max(r);
    }
    for (a, &r) in out.iter_mut().zip(rewards) {
        *a = if lo == hi {
            0.0
        } else {
            (r - mean) / (std + eps)
        };
    }
}
