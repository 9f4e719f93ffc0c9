//! The CPU twins of the voting kernels: vote tables, the stopping rules'
//! decision, and the whole round loop.

use super::{check_prompt, PromptVotes, RoundVotes};
use crate::{Error, Result};

use super::rules::{decide as decide_gpu_form, Decision, RuleConfig};
pub use super::scheduler::run_cpu as run;

/// The stopping rule's decision for one prompt from its totals and its table
/// (`[answer, votes]` in first-seen order), as the GPU's `decide` computes it.
///
/// ```
/// use rollcall::voting::{cpu, PromptVotes, RuleConfig, StopRule};
/// let config = RuleConfig { rule: StopRule::CONSOL_SPRT, min_votes: 1, max_votes: 40 };
/// let votes = PromptVotes { total: 4, distinct: 2, ..Default::default() };
/// assert!(!cpu::decide(&config, &votes, &[[11, 3], [12, 1]])?.stopped); // margin 2
/// let votes = PromptVotes { total: 3, distinct: 1, ..Default::default() };
/// assert!(cpu::decide(&config, &votes, &[[11, 3]])?.stopped); // margin 3
/// # Ok::<(), rollcall::Error>(())
/// ```
pub fn decide(rule: &RuleConfig, votes: &PromptVotes, table: &[[u32; 2]]) -> Result<Decision> {
    Ok(decide_gpu_form(&rule.gpu_form()?, votes, table))
}

/// The vote tables on the CPU: the twin of [`super::VoteTables`].
///
/// ```
/// use rollcall::voting::{cpu::VoteTables, RoundVotes, Segment};
/// let mut tables = VoteTables::new(2, 4)?;
/// let segments = [Segment { prompt: 1, start: 0, count: 3 }];
/// tables.count(&RoundVotes { segments: &segments, answers: &[7, 9, 7], tokens: None })?;
/// assert_eq!(tables.table(1)?, &[[7, 2], [9, 1]]);
/// # Ok::<(), rollcall::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct VoteTables {
    capacity: u32,
    votes: Vec<PromptVotes>,
    tables: Vec<[u32; 2]>,
}

impl VoteTables {
    /// Empty tables for `prompts` prompts of `capacity` (1 to 256) answers
    /// each; a size the host cannot allocate is [`Error::TooLarge`], not an
    /// abort.
    pub fn new(prompts: u32, capacity: u32) -> Result<Self> {
        if !(1..=256).contains(&capacity) {
            return Err(Error::InvalidCapacity(capacity));
        }
        let entries = (prompts as usize)
            .checked_mul(capacity as usize)
            .ok_or(Error::TooLarge {
                what: "vote tables (host)",
                bytes: u64::MAX,
                limit: usize::MAX as u64,
            })?;
        Ok(Self {
            capacity,
            votes: filled(prompts as usize, PromptVotes::default())?,
            tables: filled(entries, [0, 0])?,
        })
    }

    /// Folds a round of votes in, as the shader does.
    pub fn count(&mut self, round: &RoundVotes<'_>) -> Result<()> {
        round.validate(self.votes.len() as u32)?;
        let cap = self.capacity as usize;
        for s in round.segments {
            let state = &mut self.votes[s.prompt as usize];
            let table = &mut self.tables[s.prompt as usize * cap..][..cap];
            for v in s.start..s.start + s.count {
                let answer = round.answers[v as usize];
                let used = state.distinct as usize;
                match table[..used].iter().position(|e| e[0] == answer) {
                    // u32 arithmetic as the shader's (wrapping, never a panic).
                    Some(k) => table[k][1] = table[k][1].wrapping_add(1),
                    None if used < cap => {
                        table[used] = [answer, 1];
                        state.distinct += 1;
                    }
                    None => state.overflow += 1,
                }
                if state.total != 0 && answer == state.run_answer {
                    state.run_length = state.run_length.wrapping_add(1);
                } else {
                    state.run_answer = answer;
                    state.run_length = 1;
                }
                state.total = state.total.wrapping_add(1);
                if let Some(tokens) = round.tokens {
                    state.tokens = state.tokens.wrapping_add(u64::from(tokens[v as usize]));
                }
            }
        }
        Ok(())
    }

    /// Prompts the tables hold.
    pub fn prompts(&self) -> u32 {
        self.votes.len() as u32
    }

    /// A prompt's totals.
    pub fn votes(&self, prompt: u32) -> Result<&PromptVotes> {
        check_prompt(prompt, self.prompts())?;
        Ok(&self.votes[prompt as usize])
    }

    /// A prompt's table in first-seen order: `[answer, votes]`.
    pub fn table(&self, prompt: u32) -> Result<&[[u32; 2]]> {
        check_prompt(prompt, self.prompts())?;
        Ok(self.table_unchecked(prompt))
    }

    /// Runs `rule` over one prompt's votes (the twin of the GPU's decide).
    pub fn decide(&self, rule: &RuleConfig, prompt: u32) -> Result<Decision> {
        check_prompt(prompt, self.prompts())?;
        decide(
            rule,
            &self.votes[prompt as usize],
            self.table_unchecked(prompt),
        )
    }

    fn table_unchecked(&self, prompt: u32) -> &[[u32; 2]] {
        let cap = self.capacity as usize;
        let used = self.votes[prompt as usize].distinct as usize;
        &self.tables[prompt as usize * cap..][..used]
    }
}

/// `len` copies of `value`, or [`Error::TooLarge`] when the host cannot
/// allocate them.
pub(crate) fn filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        what: "host buffer",
        bytes: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
        limit: isize::MAX as u64,
    })?;
    v.resize(len, value);
    Ok(v)
}
