//! Allowed-token bitmasks, in the layout structured-output libraries
//! (xgrammar, llguidance) produce: `ceil(vocab / 32)` 32-bit words per mask
//! row, token `t` allowed when bit `t % 32` of word `t / 32` is set. A
//! disallowed token's logit counts as −inf; a row whose mask allows no finite
//! logit gets [`RowStatus::NoValidToken`](super::RowStatus::NoValidToken).
//!
//! Each batch row names the mask row it reads, or none (xgrammar's optional
//! list of masked rows): a batch in which no row reads a mask runs kernels
//! that read no mask at all; otherwise the sampling kernel ANDs the bits in
//! as it loads the logits (no separate pass over the logits).
//!
//! ```
//! use rollcall::sampling::mask;
//! let mut words = mask::allow_only(100, &[3, 7, 64])?;   // allowed_token_ids
//! mask::ban(&mut words, 100, &[7])?;                       // bad words (single tokens)
//! assert_eq!(words.len(), mask::words_per_row(100));
//! assert_eq!(words[0], 1 << 3);
//! assert_eq!(words[2], 1);
//! # Ok::<(), rollcall::Error>(())
//! ```

use crate::{Error, Result};

/// Words per mask row: `ceil(vocab / 32)`.
pub fn words_per_row(vocab: u32) -> usize {
    vocab.div_ceil(32) as usize
}

/// A mask row that allows every token of `vocab`.
pub fn allow_all(vocab: u32) -> Vec<u32> {
    vec![u32::MAX; words_per_row(vocab)]
}

/// A mask row that allows only `allowed` (vLLM's `allowed_token_ids`).
pub fn allow_only(vocab: u32, allowed: &[u32]) -> Result<Vec<u32>> {
    let mut words = vec![0; words_per_row(vocab)];
    for &token in allowed {
        check_token(token, vocab, "allowed")?;
        words[token as usize / 32] |= 1 << (token % 32);
    }
    Ok(words)
}

/// Clears the bits of `banned` in a mask row (bad words of one token).
pub fn ban(words: &mut [u32], vocab: u32, banned: &[u32]) -> Result<()> {
    check_row_len(words.len(), vocab)?;
    for &token in banned {
        check_token(token, vocab, "banned")?;
        words[token as usize / 32] &= !(1 << (token % 32));
    }
    Ok(())
}

fn check_token(token: u32, vocab: u32, what: &'static str) -> Result<()> {
    if token >= vocab {
        return Err(Error::TokenOutOfRange {
            row: 0,
            what,
            token,
            vocab,
        });
    }
    Ok(())
}

fn check_row_len(len: usize, vocab: u32) -> Result<()> {
    let needed = words_per_row(vocab);
    if len != needed {
        return Err(Error::InvalidMask(format!(
            "a mask row of a {vocab}-token vocabulary has {needed} words, got {len}"
        )));
    }
    Ok(())
}

/// Masks on the host path: `words` holds mask rows back to back
/// ([`words_per_row`] words each); batch row `i` reads mask row `rows[i]`,
/// or none.
#[derive(Clone, Copy, Debug)]
pub struct HostMask<'a> {
    /// The mask rows, back to back.
    pub words: &'a [u32],
    /// One entry per batch row: the mask row it reads, or `None`.
    pub rows: &'a [Option<u32>],
}

/// Masks on the engine path: mask rows back to back in the caller's buffer
/// (`STORAGE` usage) from `offset` (a multiple of the device's
/// `min_storage_buffer_offset_alignment`), [`words_per_row`] 32-bit words
/// each. Which batch row reads which mask row is set with
/// [`SampleBatch::set_mask_rows`](super::SampleBatch::set_mask_rows).
#[derive(Clone, Copy, Debug)]
pub struct TokenMask<'a> {
    /// The buffer holding the mask rows.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of mask row 0.
    pub offset: u64,
    /// Mask rows in the buffer from `offset`.
    pub rows: u32,
}

/// Checks batch rows' mask rows against the number of mask rows: one entry
/// per batch row, each naming a row that is there.
pub(crate) fn check_mask_rows(
    rows: &[Option<u32>],
    batch_rows: usize,
    mask_rows: u64,
) -> Result<()> {
    if rows.len() != batch_rows {
        return Err(Error::InvalidMask(format!(
            "{} mask row entries for a batch of {batch_rows} rows",
            rows.len()
        )));
    }
    if let Some((row, &Some(m))) = rows
        .iter()
        .enumerate()
        .find(|(_, m)| m.is_some_and(|m| u64::from(m) >= mask_rows))
    {
        return Err(Error::InvalidMask(format!(
            "batch row {row} reads mask row {m}, but there are {mask_rows} mask rows"
        )));
    }
    Ok(())
}

/// Checks a host mask for a batch of `batch_rows` rows of `vocab` tokens.
pub(crate) fn check_host_mask(mask: &HostMask<'_>, vocab: u32, batch_rows: usize) -> Result<()> {
    let per_row = words_per_row(vocab);
    if !mask.words.len().is_multiple_of(per_row) {
        return Err(Error::InvalidMask(format!(
            "{} words is not a whole number of {per_row}-word rows (vocabulary {vocab})",
            mask.words.len()
        )));
    }
    check_mask_rows(mask.rows, batch_rows, (mask.words.len() / per_row) as u64)
}

/// Batch row `row`'s mask words, if it reads a mask (after the checks).
pub(crate) fn host_row<'a>(
    mask: Option<&HostMask<'a>>,
    row: usize,
    vocab: u32,
) -> Option<&'a [u32]> {
    let mask = mask?;
    let m = mask.rows[row]? as usize;
    let per_row = words_per_row(vocab);
    Some(&mask.words[m * per_row..(m + 1) * per_row])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_set_and_clear_the_right_bits() {
        let words = allow_only(65, &[0, 31, 32, 64]).unwrap();
        assert_eq!(words, vec![1 | 1 << 31, 1, 1]);
        let mut all = allow_all(65);
        ban(&mut all, 65, &[64, 1]).unwrap();
        assert_eq!(all, vec![!2, u32::MAX, !1]);
        assert!(matches!(
            allow_only(65, &[65]),
            Err(Error::TokenOutOfRange { token: 65, .. })
        ));
        assert!(matches!(
            ban(&mut all, 64, &[0]),
            Err(Error::InvalidMask(_))
        ));
    }

    #[test]
    fn mask_rows_must_exist() {
        let words = allow_all(40); // 2 words a row
        let two_rows = [words.clone(), words].concat();
        let ok = HostMask {
            words: &two_rows,
            rows: &[Some(1), None, Some(0)],
        };
        assert!(check_host_mask(&ok, 40, 3).is_ok());
        assert_eq!(host_row(Some(&ok), 0, 40).map(<[u32]>::len), Some(2));
        assert_eq!(host_row(Some(&ok), 1, 40), None);
        let missing = HostMask {
            words: &two_rows,
            rows: &[Some(2)],
        };
        assert!(matches!(
            check_host_mask(&missing, 40, 1),
            Err(Error::InvalidMask(_))
        ));
        let short = HostMask {
            words: &two_rows[..3],
            rows: &[None],
        };
        assert!(matches!(
            check_host_mask(&short, 40, 1),
            Err(Error::InvalidMask(_))
        ));
        let wrong_count = HostMask {
            words: &two_rows,
            rows: &[None],
        };
        assert!(matches!(
            check_host_mask(&wrong_count, 40, 2),
            Err(Error::InvalidMask(_))
        ));
    }
}
