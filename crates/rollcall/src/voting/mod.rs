//! Adaptive majority voting (OptPO and its peers): per-prompt vote tables on
//! the GPU, with a CPU twin.
//!
//! Each round's answers arrive as one ragged batch (one segment of votes per
//! prompt) and are folded into per-prompt tables of up to `capacity` distinct
//! answers in first-seen order ([`VoteTables`] on the GPU, [`cpu::VoteTables`]
//! its twin); the [`StopRule`]s decide which prompts stop, [`Scheduler`] runs the
//! rounds, [`rewards`] turns the consensus into TTRL rewards and GRPO
//! advantages.
//! Answers past the capacity are counted in [`PromptVotes::overflow`]: they
//! count as votes (against the leader), never as a consensus. Ties between
//! answers go to the one seen first (the lower table slot).

use crate::{Error, Result};

/// Default distinct answers kept per prompt.
pub const DEFAULT_CAPACITY: u32 = 16;

/// A prompt's running totals.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptVotes {
    /// Votes so far.
    pub total: u32,
    /// Table slots in use.
    pub distinct: u32,
    /// Votes for answers that found no slot.
    pub overflow: u32,
    /// Answer of the newest run of equal consecutive votes.
    pub run_answer: u32,
    /// Length of that run.
    pub run_length: u32,
    /// Tokens spent on this prompt (wrapping at 2^64, as the shader's sum).
    pub tokens: u64,
}

/// A prompt's totals as the shader stores them (`PromptVotes` in
/// voting.wgsl, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuPromptVotes {
    pub(crate) total: u32,
    pub(crate) distinct: u32,
    pub(crate) overflow: u32,
    pub(crate) run_answer: u32,
    pub(crate) run_length: u32,
    pub(crate) tokens_lo: u32,
    pub(crate) tokens_hi: u32,
    pub(crate) pad: u32,
}

impl From<GpuPromptVotes> for PromptVotes {
    fn from(v: GpuPromptVotes) -> Self {
        PromptVotes {
            total: v.total,
            distinct: v.distinct,
            overflow: v.overflow,
            run_answer: v.run_answer,
            run_length: v.run_length,
            tokens: u64::from(v.tokens_lo) | (u64::from(v.tokens_hi) << 32),
        }
    }
}

/// One prompt's votes in a round: `count` answers starting at `start`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Prompt index.
    pub prompt: u32,
    /// First vote of the segment in the round's answers.
    pub start: u32,
    /// Votes in the segment.
    pub count: u32,
}

/// A segment as the shaders read it (`Segment` in voting.wgsl, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuSegment {
    pub(crate) prompt: u32,
    pub(crate) start: u32,
    pub(crate) count: u32,
    pub(crate) pad: u32,
}

/// Segments in the shaders' layout.
pub(crate) fn gpu_segments(segments: &[Segment]) -> Vec<GpuSegment> {
    segments
        .iter()
        .map(|s| GpuSegment {
            prompt: s.prompt,
            start: s.start,
            count: s.count,
            pad: 0,
        })
        .collect()
}

/// A round of votes: segments over `answers` (and optionally the tokens each
/// rollout spent).
#[derive(Clone, Copy, Debug)]
pub struct RoundVotes<'a> {
    /// One segment per prompt that voted this round; no prompt twice.
    pub segments: &'a [Segment],
    /// Answer ids (hashed by the engine).
    pub answers: &'a [u32],
    /// Tokens per rollout, if the engine reports them.
    pub tokens: Option<&'a [u32]>,
}

impl RoundVotes<'_> {
    /// Checks the round against `prompts` tables before any GPU work.
    pub fn validate(&self, prompts: u32) -> Result<()> {
        if let Some(t) = self.tokens {
            if t.len() != self.answers.len() {
                return Err(Error::TokensLengthMismatch {
                    answers: self.answers.len(),
                    tokens: t.len(),
                });
            }
        }
        // One bit per prompt: 512 MiB at most, and only touched where the
        // segments point.
        let mut seen = vec![0u64; (prompts as usize).div_ceil(64)];
        for (i, s) in self.segments.iter().enumerate() {
            // The kernels index votes with u32: an end past it cannot be read.
            let end = u64::from(s.start) + u64::from(s.count);
            let reason = if s.prompt >= prompts {
                format!("prompt {} of {prompts}", s.prompt)
            } else if seen[s.prompt as usize / 64] & (1 << (s.prompt % 64)) != 0 {
                format!("prompt {} appears twice in one round", s.prompt)
            } else if end > self.answers.len() as u64 {
                format!(
                    "votes {}..{end} past the {} answers",
                    s.start,
                    self.answers.len()
                )
            } else if end > u64::from(u32::MAX) {
                format!("votes {}..{end} past u32::MAX", s.start)
            } else {
                seen[s.prompt as usize / 64] |= 1 << (s.prompt % 64);
                continue;
            };
            return Err(Error::InvalidSegment { segment: i, reason });
        }
        Ok(())
    }
}

pub mod calibrated;
pub mod cpu;
pub(crate) mod gpu;
pub mod posterior;
pub mod rewards;
pub(crate) mod rules;
mod scheduler;

pub(crate) use gpu::GpuDecision;
pub use gpu::{DecideReadback, PromptDecision, VoteTables};
pub use rules::{Decision, RuleConfig, StopRule, MAX_BETA_PRIOR, MAX_VOTES};
pub use scheduler::{
    Allocation, Outcome, PromptOutcome, ReplayEngine, Rollout, RolloutEngine, Scheduler,
};

/// Checks that `prompt` indexes one of `prompts` tables.
pub(crate) fn check_prompt(prompt: u32, prompts: u32) -> Result<()> {
    if prompt < prompts {
        Ok(())
    } else {
        Err(Error::PromptOutOfRange { prompt, prompts })
    }
}
