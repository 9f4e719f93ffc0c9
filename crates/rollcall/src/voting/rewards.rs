//! Rewards for the kept rollouts, CPU twin of `rewards_and_advantages` in
//! `shaders/voting.wgsl`: TTRL's majority reward and GRPO's group-normalised
//! advantages, `(r − mean) / (std + eps)` with the unbiased standard deviation
//! of each prompt's group; a group whose rewards are all equal (a group of
//! one included) gets advantage 0.

use super::Segment;

/// TTRL's reward: 1 when the rollout's answer is its prompt's consensus.
///
/// ```
/// use rollcall::voting::{rewards::majority_rewards, Segment};
/// let seg = [Segment { prompt: 0, start: 0, count: 3, pad: 0 }];
/// assert_eq!(majority_rewards(&seg, &[4, 5, 4], &[4]), vec![1.0, 0.0, 1.0]);
/// ```
pub fn majority_rewards(segments: &[Segment], answers: &[u32], consensus: &[u32]) -> Vec<f32> {
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
    rewards
}

/// GRPO's advantages per segment, with the shader's f32 operations.
///
/// ```
/// use rollcall::voting::{rewards::group_advantages, Segment};
/// let seg = [Segment { prompt: 0, start: 0, count: 4, pad: 0 }];
/// let adv = group_advantages(&seg, &[1.0, 0.0, 1.0, 1.0], 1e-4);
/// assert!(adv[1] < 0.0 && adv[0] > 0.0);
/// ```
pub fn group_advantages(segments: &[Segment], rewards: &[f32], eps: f32) -> Vec<f32> {
    let mut advantages = vec![0.0; rewards.len()];
    for s in segments {
        let range = s.start as usize..(s.start + s.count) as usize;
        let n = s.count as f32;
        let mut sum = 0.0f32;
        for &r in &rewards[range.clone()] {
            sum += r;
        }
        let mean = sum / n.max(1.0);
        let mut squares = 0.0f32;
        for &r in &rewards[range.clone()] {
            let d = r - mean;
            squares += d * d;
        }
        let std = if s.count > 1 {
            (squares / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        // A group with one reward value carries no signal: advantage 0 (its
        // f32 mean may differ from the value in the last place).
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for &r in &rewards[range.clone()] {
            lo = lo.min(r);
            hi = hi.max(r);
        }
        for i in range {
            advantages[i] = if lo == hi {
                0.0
            } else {
                (rewards[i] - mean) / (std + eps)
            };
        }
    }
    advantages
}
