//! Logit edits before sampling: logit bias, the repetition, frequency and
//! presence penalties, and `min_tokens` (a row's stop tokens banned until it
//! has produced that many tokens). On the GPU they are applied to the logits
//! in place before the draw and undone after it, over a GPU-resident token
//! history that each sampled token joins; [`HistoryTwin`] is the CPU twin,
//! whose edited rows are the bits the GPU leaves in the buffer.
//!
//! # Semantics (vLLM v1 order)
//! For a token with raw logit `l` (decoded to f32) the edited value is, each
//! arithmetic step rounded to f32 and then made canonical (a NaN becomes the
//! quiet NaN `0x7FC00000`, a subnormal a zero of its sign):
//! 1. `v = l + bias`, when the row has a non-zero bias for the token;
//! 2. repetition `r != 1`, when the token occurs in the prompt or the output:
//!    `v = v > 0 ? v * (1 / r) : v * r`, with `1 / r` rounded to f32 once on
//!    the host (the GPU multiplies, never divides);
//! 3. when the token occurs in the output (`count` times):
//!    `v = v - frequency * count`, then `v = v - presence` (each skipped when
//!    zero);
//! 4. `v = −inf` for a stop token while the row has produced fewer than
//!    `min_tokens` tokens.
//!
//! A token none of these touch keeps its bits (NaN payloads included); a
//! token they do touch starts from the canonical `l`. Penalties are used as
//! normal f32 numbers: a repetition penalty or its reciprocal below
//! `f32::MIN_POSITIVE` counts as that, and a bias, presence or frequency of
//! subnormal magnitude as 0. f16 and bf16 logits store `v` rounded to
//! nearest-even in their dtype (as `half`'s `f16::from_f32` and
//! `bf16::from_f32`). NaN results are allowed (the sampler takes NaN as
//! −inf). A logit bias repeated for one token: the last one wins.
//!
//! # Token history
//! Per row, on the GPU, a dense list of entries holding every token an edit
//! can reach: prompt tokens, output tokens with their counts, biased tokens
//! and (when `min_tokens > 0`) stop tokens; and an open-addressing hash index
//! over the list of `S` slots (`S` the power of two ≥ 2 × the state's
//! distinct capacity; the list has room for `S / 2` entries). Both edit
//! kernels walk only the list's entries (16 bytes each), so their cost grows
//! with the row's distinct tokens, not with the capacity; only the append
//! probes the index. Tokens outside the list are never touched, and a row
//! whose list is empty or which has nothing to apply costs one read. A
//! sampled token joins the history of a row whose penalties are on (only
//! they read output counts), so a row without penalties never fills its
//! list; every row counts its produced tokens. The host refuses
//! ([`Error::HistoryFull`]) a step after which a row's list could hold more
//! than the distinct capacity, from an upper bound it keeps without reading
//! the GPU (distinct tokens at `set_row` plus the steps appended since, at
//! most the vocabulary).
//!
//! # One step on the engine path
//! ```text
//! state.check_step(rows)?;                       // before recording anything
//! kernels.encode_apply(&mut enc, &logits, &chunks, &mut state, 0)?;
//! sampler.encode(&mut enc, &logits, &mut batch)?;
//! kernels.encode_restore_append(&mut enc, &logits, &chunks, &mut state,
//!                               batch.tokens(), batch.results(), 0)?;
//! state.note_step(rows);
//! ctx.submit(enc.finish());
//! ```
//! Apply and restore must see the same logits binding and chunks, and no
//! `set_row`, `clear_row` or `set_penalties` in between (they write through
//! `Queue::write_buffer`, which lands before the next submit). When
//! [`EditState::is_active`] is false both dispatches can be skipped.

// Wired into the sampler by a later change; until then only the tests and
// the `internals` feature reach it.
#![cfg_attr(not(feature = "internals"), allow(dead_code))]

use crate::gpu::logits::{Chunk, DispatchRecords, LogitsKernel, LogitsKernelKey, LogitsShader};
use crate::gpu::shader::{PlainKernel, ShaderVariant};
use crate::{Error, GpuContext, HostLogits, LogitsBinding, Result, SamplingParams};
use half::{bf16, f16};
use std::collections::BTreeMap;

/// Invocations per row (`WG` in the shader).
pub(crate) const WORKGROUP: u32 = 64;
/// The token of a free slot in [`row_slots`]' table.
pub(crate) const EMPTY_TOKEN: u32 = u32::MAX;
/// A free slot of the GPU's hash index (whose slots hold list positions).
pub(crate) const NO_ENTRY: u32 = u32::MAX;
/// Output occurrences in a slot's `counts` (saturating).
pub(crate) const COUNT_MASK: u32 = 0x3FFF_FFFF;
/// The token occurs in the prompt.
pub(crate) const IN_PROMPT: u32 = 1 << 30;
/// The token is a stop token (and the row's `min_tokens` is above 0).
pub(crate) const STOP_TOKEN: u32 = 1 << 31;
/// Multiplicative hash of a token: its home slot is the product's top
/// `slot_shift` bits.
pub(crate) const HASH_MULTIPLIER: u32 = 0x9E37_79B1;
/// A penalty is on: the row's edits read its history, which the sampled
/// tokens join.
pub(crate) const FLAG_PENALTIES: u32 = 1;
/// Some token of the row has a bias.
pub(crate) const FLAG_BIAS: u32 = 2;
/// Some token of the row is a stop token and `min_tokens > 0`.
pub(crate) const FLAG_STOP: u32 = 4;
/// The one NaN an arithmetic step leaves.
pub(crate) const CANONICAL_NAN_BITS: u32 = 0x7FC0_0000;

/// One entry of a row's list (`HistoryEntry` in the shader); also a slot
/// of the table [`row_slots`] builds on the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuEntry {
    /// The token ([`EMPTY_TOKEN`] for a free slot of [`row_slots`]' table).
    pub(crate) token: u32,
    /// Output count | [`IN_PROMPT`] | [`STOP_TOKEN`].
    pub(crate) counts: u32,
    /// The token's logit bias; 0 for none.
    pub(crate) bias: f32,
    /// The XOR delta `apply_edits` wrote into the logits (0 after restore).
    pub(crate) saved: u32,
}

const EMPTY_SLOT: GpuEntry = GpuEntry {
    token: EMPTY_TOKEN,
    counts: 0,
    bias: 0.0,
    saved: 0,
};

/// A row's edit parameters (`EditParams` in the shader), written by the host
/// only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuEditParams {
    pub(crate) repetition: f32,
    /// `1 / repetition`, rounded to f32 once here.
    pub(crate) inv_repetition: f32,
    pub(crate) presence: f32,
    pub(crate) frequency: f32,
    pub(crate) min_tokens: u32,
    /// [`FLAG_PENALTIES`] | [`FLAG_BIAS`] | [`FLAG_STOP`].
    pub(crate) flags: u32,
    /// log2 of the hash index's slots per row.
    pub(crate) slot_shift: u32,
    pub(crate) pad: u32,
}

impl GpuEditParams {
    fn off(slot_shift: u32) -> Self {
        Self {
            repetition: 1.0,
            inv_repetition: 1.0,
            presence: 0.0,
            frequency: 0.0,
            min_tokens: 0,
            flags: 0,
            slot_shift,
            pad: 0,
        }
    }

    /// Takes the penalties (and their flag) of `p`, or turns them off.
    fn set_penalties(&mut self, p: Option<&SamplingParams>) {
        let (repetition, presence, frequency) = match p {
            Some(p) => (
                p.repetition_penalty.max(f32::MIN_POSITIVE),
                flush(p.presence_penalty),
                flush(p.frequency_penalty),
            ),
            None => (1.0, 0.0, 0.0),
        };
        self.repetition = repetition;
        self.inv_repetition = (1.0 / repetition).max(f32::MIN_POSITIVE);
        self.presence = presence;
        self.frequency = frequency;
        let on = repetition != 1.0 || presence != 0.0 || frequency != 0.0;
        self.flags = (self.flags & !FLAG_PENALTIES) | if on { FLAG_PENALTIES } else { 0 };
    }

    /// Whether the row's stop tokens are banned after `produced` tokens.
    fn bans(&self, produced: u32) -> bool {
        self.flags & FLAG_STOP != 0 && produced < self.min_tokens
    }
}

/// A row's counters (`EditRowState` in the shader): written by the host at
/// `set_row`, then by the kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuEditRowState {
    /// Output tokens so far.
    pub(crate) produced: u32,
    /// Entries in the row's list.
    pub(crate) distinct: u32,
    /// 1 between `apply_edits` and `restore_and_append`.
    pub(crate) applied: u32,
    pub(crate) pad: u32,
}

/// What a row's request brings to its token history.
#[derive(Clone, Copy, Debug, Default)]
pub struct RowHistory<'a> {
    /// Prompt tokens (the repetition penalty reaches them).
    pub prompt: &'a [u32],
    /// Tokens generated so far (every penalty reaches them); their number is
    /// the row's produced count.
    pub output: &'a [u32],
    /// `(token, bias)` added to the token's logit; ±inf allowed, NaN refused;
    /// for a token listed twice the last bias wins.
    pub logit_bias: &'a [(u32, f32)],
    /// Tokens banned (−inf) while the row has produced fewer than
    /// `min_tokens` tokens.
    pub stop_tokens: &'a [u32],
    /// See `stop_tokens`; 0 is off.
    pub min_tokens: u32,
}

/// One token of a row's history.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HistoryEntry {
    /// Occurrences in the output (saturating at 2^30 − 1).
    pub count: u32,
    /// Occurs in the prompt.
    pub in_prompt: bool,
    /// A stop token of a row with `min_tokens > 0`.
    pub stop: bool,
    /// The token's logit bias (0: none).
    pub bias: f32,
}

impl HistoryEntry {
    fn counts(&self) -> u32 {
        self.count
            | if self.in_prompt { IN_PROMPT } else { 0 }
            | if self.stop { STOP_TOKEN } else { 0 }
    }

    fn from_entry(entry: &GpuEntry) -> Self {
        Self {
            count: entry.counts & COUNT_MASK,
            in_prompt: entry.counts & IN_PROMPT != 0,
            stop: entry.counts & STOP_TOKEN != 0,
            bias: entry.bias,
        }
    }
}

/// A row's token history: every token an edit can reach, and the output
/// tokens produced so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowTable {
    /// Output tokens so far.
    pub produced: u32,
    /// The tokens, in token order.
    pub entries: BTreeMap<u32, HistoryEntry>,
}

/// A row's table as the GPU holds it, read back for tests.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuHistoryRow {
    /// The history.
    pub table: RowTable,
    /// The GPU's count of entries in the list.
    pub distinct: u32,
    /// Whether edits are applied and not yet restored.
    pub applied: bool,
    /// Entries whose saved delta is not zero (none after a restore).
    pub unrestored: u32,
}

/// Subnormal magnitudes (and −0) as +0; every other value as it is.
fn flush(x: f32) -> f32 {
    if x.to_bits() & 0x7F80_0000 == 0 {
        0.0
    } else {
        x
    }
}

/// f32 after an arithmetic step: NaN as [`CANONICAL_NAN_BITS`], a subnormal
/// as a zero of its sign (the shader's `canonical`).
fn canonical(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        f32::from_bits(CANONICAL_NAN_BITS)
    } else if bits & 0x7F80_0000 == 0 {
        f32::from_bits(bits & 0x8000_0000)
    } else {
        x
    }
}

/// The edited value of logit `l` of the token `entry` describes, or `None`
/// when nothing touches it (the shader's `edit_logit`; the same f32 steps in
/// the same order: Rust never fuses a product into a sum).
fn edit_logit(l: f32, entry: &HistoryEntry, p: &GpuEditParams, ban: bool) -> Option<f32> {
    if ban && entry.stop {
        return Some(f32::NEG_INFINITY);
    }
    let count = entry.count;
    let penalties = p.flags & FLAG_PENALTIES != 0;
    let add_bias = entry.bias != 0.0;
    let repeat = penalties && p.repetition != 1.0 && (count > 0 || entry.in_prompt);
    let frequency = penalties && count > 0 && p.frequency != 0.0;
    let presence = penalties && count > 0 && p.presence != 0.0;
    if !(add_bias || repeat || frequency || presence) {
        return None;
    }
    let mut v = canonical(l);
    if add_bias {
        v = canonical(v + entry.bias);
    }
    if repeat {
        v = if v > 0.0 {
            canonical(v * p.inv_repetition)
        } else {
            canonical(v * p.repetition)
        };
    }
    if frequency {
        let cost = canonical(p.frequency * count as f32);
        v = canonical(v - cost);
    }
    if presence {
        v = canonical(v - p.presence);
    }
    Some(v)
}

/// Validates a row's history and builds its table: what both sides store.
fn row_table(
    row: u32,
    vocab: u32,
    history: &RowHistory<'_>,
    capacity: u32,
) -> Result<(RowTable, u32)> {
    if vocab == 0 {
        return Err(Error::EmptyVocab);
    }
    let in_range = |what: &'static str, token: u32| {
        if token < vocab {
            Ok(())
        } else {
            Err(Error::TokenOutOfRange {
                row: row as usize,
                what,
                token,
                vocab,
            })
        }
    };
    for &t in history.prompt {
        in_range("prompt", t)?;
    }
    for &t in history.output {
        in_range("output", t)?;
    }
    let mut biases = BTreeMap::new();
    for &(t, bias) in history.logit_bias {
        in_range("bias", t)?;
        if bias.is_nan() {
            return Err(Error::InvalidBias {
                row: row as usize,
                token: t,
            });
        }
        biases.insert(t, flush(bias));
    }
    for &t in history.stop_tokens {
        in_range("stop", t)?;
    }
    let mut entries: BTreeMap<u32, HistoryEntry> = BTreeMap::new();
    for &t in history.prompt {
        entries.entry(t).or_default().in_prompt = true;
    }
    for &t in history.output {
        let entry = entries.entry(t).or_default();
        entry.count = (entry.count + 1).min(COUNT_MASK);
    }
    for (t, bias) in biases {
        if bias != 0.0 {
            entries.entry(t).or_default().bias = bias;
        }
    }
    if history.min_tokens > 0 {
        for &t in history.stop_tokens {
            entries.entry(t).or_default().stop = true;
        }
    }
    if entries.len() > capacity as usize {
        return Err(Error::HistoryFull {
            row: row as usize,
            capacity,
            needed: entries.len() as u64,
        });
    }
    let mut flags = 0;
    if entries.values().any(|e| e.bias != 0.0) {
        flags |= FLAG_BIAS;
    }
    if entries.values().any(|e| e.stop) {
        flags |= FLAG_STOP;
    }
    let table = RowTable {
        produced: u32::try_from(history.output.len()).unwrap_or(u32::MAX),
        entries,
    };
    Ok((table, flags))
}

/// The home slot of `token` in a table of `1 << slot_shift` slots.
fn home_slot(token: u32, slot_shift: u32) -> u32 {
    token.wrapping_mul(HASH_MULTIPLIER) >> (32 - slot_shift)
}

/// A row's table as the shader's index probes it: each token inserted, in
/// token order, at the first free slot from its home.
fn row_slots(entries: &BTreeMap<u32, HistoryEntry>, slot_shift: u32) -> Vec<GpuEntry> {
    let mask = (1u32 << slot_shift) - 1;
    let mut slots = vec![EMPTY_SLOT; 1 << slot_shift];
    for (&token, entry) in entries {
        let mut s = home_slot(token, slot_shift);
        while slots[s as usize].token != EMPTY_TOKEN {
            s = (s + 1) & mask;
        }
        slots[s as usize] = GpuEntry {
            token,
            counts: entry.counts(),
            bias: entry.bias,
            saved: 0,
        };
    }
    slots
}

/// What the GPU holds for a row whose table is `slots` ([`row_slots`]): the
/// list (the occupied slots in slot order, then free entries to the list's
/// room of half the slots) and the index (each slot's list position, or
/// [`NO_ENTRY`]).
fn row_list(slots: &[GpuEntry]) -> (Vec<GpuEntry>, Vec<u32>) {
    let mut list = Vec::with_capacity(slots.len() / 2);
    let index = slots
        .iter()
        .map(|slot| {
            if slot.token == EMPTY_TOKEN {
                NO_ENTRY
            } else {
                list.push(*slot);
                list.len() as u32 - 1
            }
        })
        .collect();
    list.resize(slots.len() / 2, EMPTY_SLOT);
    (list, index)
}

/// log2 of the slots per row for `distinct_capacity` (at least twice it),
/// or an error for a capacity out of range.
fn slot_shift(distinct_capacity: u32) -> Result<u32> {
    if !(1..=1 << 29).contains(&distinct_capacity) {
        return Err(Error::InvalidArgument(format!(
            "token history capacity must be 1 to 2^29 distinct tokens, got {distinct_capacity}"
        )));
    }
    Ok((2 * distinct_capacity).next_power_of_two().trailing_zeros())
}

/// What the host knows of a row without reading the GPU.
#[derive(Clone, Copy, Debug, Default)]
struct HostRow {
    /// The vocabulary of the last `set_row` (`None`: never set).
    vocab: Option<u32>,
    /// An upper bound on the row's distinct tokens.
    bound: u64,
}

/// A batch's token histories and edit parameters on the GPU, one row per
/// batch row. Create once per batch shape and reuse every step.
pub struct EditState {
    ctx: GpuContext,
    capacity: u32,
    distinct_capacity: u32,
    slot_shift: u32,
    params: wgpu::Buffer,
    row_state: wgpu::Buffer,
    /// Each row's list: `1 << (slot_shift - 1)` entries.
    entries: wgpu::Buffer,
    /// Each row's hash index: `1 << slot_shift` list positions.
    index: wgpu::Buffer,
    host_params: Vec<GpuEditParams>,
    rows: Vec<HostRow>,
    apply_records: DispatchRecords,
    restore_records: DispatchRecords,
}

const PARAMS_BYTES: u64 = std::mem::size_of::<GpuEditParams>() as u64;
const ROW_STATE_BYTES: u64 = std::mem::size_of::<GpuEditRowState>() as u64;
const ENTRY_BYTES: u64 = std::mem::size_of::<GpuEntry>() as u64;
const INDEX_SLOT_BYTES: u64 = std::mem::size_of::<u32>() as u64;
const TOKEN_BYTES: u64 = std::mem::size_of::<u32>() as u64;
const RESULT_BYTES: u64 = std::mem::size_of::<super::gpu::GpuRowResult>() as u64;

impl EditState {
    /// Histories for `rows_capacity` rows of at most `distinct_capacity`
    /// distinct tokens each (per row, with `S` the power of two ≥ twice
    /// that: a hash index of `S` slots of 4 bytes and a list of `S / 2`
    /// entries of 16 bytes). Buffers past the device's storage binding limit
    /// are [`Error::TooLarge`].
    pub fn new(ctx: &GpuContext, rows_capacity: u32, distinct_capacity: u32) -> Result<Self> {
        let capacity = rows_capacity.max(1);
        let slot_shift = slot_shift(distinct_capacity)?;
        let rows = u64::from(capacity);
        let storage = |label, bytes: u64| {
            ctx.create_bound_buffer(
                label,
                bytes,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            )
        };
        let entries_bytes = rows.saturating_mul(ENTRY_BYTES << (slot_shift - 1));
        let index_bytes = rows.saturating_mul(INDEX_SLOT_BYTES << slot_shift);
        let state = Self {
            params: storage("rollcall edit params", rows * PARAMS_BYTES)?,
            row_state: storage("rollcall edit row state", rows * ROW_STATE_BYTES)?,
            entries: storage("rollcall token history", entries_bytes)?,
            index: storage("rollcall token history index", index_bytes)?,
            host_params: vec![GpuEditParams::off(slot_shift); capacity as usize],
            rows: vec![HostRow::default(); capacity as usize],
            apply_records: DispatchRecords::new(ctx)?,
            restore_records: DispatchRecords::new(ctx)?,
            ctx: ctx.clone(),
            capacity,
            distinct_capacity,
            slot_shift,
        };
        let empty = vec![EMPTY_SLOT; 1 << slot_shift];
        for row in 0..capacity {
            state.write_row(row, &empty, GpuEditRowState::default());
        }
        state.write_params();
        Ok(state)
    }

    /// Most rows.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Most distinct tokens per row.
    pub fn distinct_capacity(&self) -> u32 {
        self.distinct_capacity
    }

    fn check_row(&self, row: u32) -> Result<()> {
        if row < self.capacity {
            Ok(())
        } else {
            Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: row as usize + 1,
            })
        }
    }

    fn write_row(&self, row: u32, slots: &[GpuEntry], state: GpuEditRowState) {
        let queue = &self.ctx.queue;
        let at = u64::from(row);
        let (list, index) = row_list(slots);
        queue.write_buffer(
            &self.entries,
            at * (ENTRY_BYTES << (self.slot_shift - 1)),
            bytemuck::cast_slice(&list),
        );
        queue.write_buffer(
            &self.index,
            at * (INDEX_SLOT_BYTES << self.slot_shift),
            bytemuck::cast_slice(&index),
        );
        queue.write_buffer(
            &self.row_state,
            at * ROW_STATE_BYTES,
            bytemuck::bytes_of(&state),
        );
    }

    fn write_params(&self) {
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(&self.host_params));
    }

    /// Validates a row's request and uploads its table (through
    /// `Queue::write_buffer`: it lands before the next submit): token ids at
    /// or past `vocab` are [`Error::TokenOutOfRange`], a NaN bias is
    /// [`Error::InvalidBias`], more distinct tokens than the capacity is
    /// [`Error::HistoryFull`]. The row's produced count becomes
    /// `history.output.len()`; its penalties stay as set.
    pub fn set_row(&mut self, row: u32, vocab: u32, history: &RowHistory<'_>) -> Result<()> {
        self.check_row(row)?;
        let (table, flags) = row_table(row, vocab, history, self.distinct_capacity)?;
        let slots = row_slots(&table.entries, self.slot_shift);
        let distinct = table.entries.len() as u32;
        self.write_row(
            row,
            &slots,
            GpuEditRowState {
                produced: table.produced,
                distinct,
                applied: 0,
                pad: 0,
            },
        );
        let params = &mut self.host_params[row as usize];
        params.min_tokens = history.min_tokens;
        params.flags = (params.flags & FLAG_PENALTIES) | flags;
        self.write_params();
        self.rows[row as usize] = HostRow {
            vocab: Some(vocab),
            bound: u64::from(distinct),
        };
        Ok(())
    }

    /// Empties a row: no history, no bias, no stop tokens, penalties off (a
    /// row past the capacity is left alone).
    pub fn clear_row(&mut self, row: u32) {
        if row >= self.capacity {
            return;
        }
        let empty = vec![EMPTY_SLOT; 1 << self.slot_shift];
        self.write_row(row, &empty, GpuEditRowState::default());
        self.host_params[row as usize] = GpuEditParams::off(self.slot_shift);
        self.write_params();
        self.rows[row as usize] = HostRow::default();
    }

    /// Validates the rows' sampling parameters (as the sampler does) and
    /// takes each row's penalties; rows past `params.len()` get none. A row
    /// with a penalty on keeps its history: its sampled tokens join it.
    pub fn set_penalties(&mut self, params: &[SamplingParams]) -> Result<()> {
        super::validate_params(params)?;
        if params.len() > self.capacity as usize {
            return Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: params.len(),
            });
        }
        for (row, p) in self.host_params.iter_mut().enumerate() {
            p.set_penalties(params.get(row));
        }
        self.write_params();
        Ok(())
    }

    /// The distinct tokens row `row` needs room for after `appends` more
    /// tokens.
    fn needed_after_step(&self, row: usize, appends: u32) -> Option<u64> {
        if self.host_params[row].flags & FLAG_PENALTIES == 0 {
            return None;
        }
        let r = self.rows[row];
        let vocab = r.vocab.map_or(u64::MAX, u64::from);
        Some((r.bound + u64::from(appends)).min(vocab))
    }

    /// Refuses ([`Error::HistoryFull`]) a step over rows `0..rows` after
    /// which some row could hold more distinct tokens than the capacity.
    /// Call it before recording anything for the step.
    pub fn check_step(&self, rows: u32) -> Result<()> {
        self.check_appends(rows, 1)
    }

    /// [`EditState::check_step`] for a step that appends up to `appends`
    /// tokens a row.
    pub(crate) fn check_appends(&self, rows: u32, appends: u32) -> Result<()> {
        if rows > self.capacity {
            return Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: rows as usize,
            });
        }
        for row in 0..rows as usize {
            if let Some(needed) = self.needed_after_step(row, appends) {
                if needed > u64::from(self.distinct_capacity) {
                    return Err(Error::HistoryFull {
                        row,
                        capacity: self.distinct_capacity,
                        needed,
                    });
                }
            }
        }
        Ok(())
    }

    /// Host bookkeeping after a step over rows `0..rows` was recorded.
    pub fn note_step(&mut self, rows: u32) {
        self.note_appends(rows, 1);
    }

    /// [`EditState::note_step`] for a step that appended up to `appends`
    /// tokens a row.
    pub(crate) fn note_appends(&mut self, rows: u32, appends: u32) {
        for row in 0..rows.min(self.capacity) as usize {
            if let Some(needed) = self.needed_after_step(row, appends) {
                self.rows[row].bound = needed;
            }
        }
    }

    /// Gives each row of this state the edit parameters and bookkeeping of a
    /// row of `requests` (`sources[v]`: its request row and the tokens its
    /// history adds to it), or none; both states have the same slots per
    /// row. The tables themselves are copied on the GPU
    /// ([`HistoryKernels::encode_expand`]).
    pub(crate) fn take_params_from(
        &mut self,
        requests: &EditState,
        sources: &[Option<(u32, u32)>],
    ) -> Result<()> {
        if sources.len() > self.capacity as usize {
            return Err(Error::BatchCapacity {
                capacity: self.capacity as usize,
                rows: sources.len(),
            });
        }
        for (v, source) in sources.iter().enumerate() {
            match source {
                Some((r, added)) => {
                    self.host_params[v] = requests.host_params[*r as usize];
                    let row = requests.rows[*r as usize];
                    self.rows[v] = HostRow {
                        vocab: row.vocab,
                        bound: row.bound + u64::from(*added),
                    };
                }
                None => {
                    self.host_params[v] = GpuEditParams::off(self.slot_shift);
                    self.rows[v] = HostRow::default();
                }
            }
        }
        self.write_params();
        Ok(())
    }

    /// Whether some row has anything to apply or record (a bias, a stop
    /// token under `min_tokens`, a penalty): when not, both dispatches of a
    /// step can be skipped.
    pub fn is_active(&self) -> bool {
        self.host_params.iter().any(|p| p.flags != 0)
    }

    /// Reads every row's history back (waits for the GPU), for tests: the
    /// entries the index reaches. An index slot past the list's `distinct`
    /// entries, or two slots at one entry, is [`Error::Readback`].
    #[cfg(any(test, feature = "internals"))]
    pub fn read_tables(&self) -> Result<Vec<GpuHistoryRow>> {
        let ctx = &self.ctx;
        ctx.scoped("reading token histories", || {
            let buffers = [&self.row_state, &self.entries, &self.index];
            let total: u64 = buffers.iter().map(|b| b.size()).sum();
            let readback = ctx.create_buffer(
                "rollcall token history readback",
                total,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?;
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            let mut at = 0;
            for buffer in buffers {
                encoder.copy_buffer_to_buffer(buffer, 0, &readback, at, buffer.size());
                at += buffer.size();
            }
            ctx.submit(encoder.finish());
            let bytes = ctx.read_buffer(&readback, total)?;
            let (states, rest) = bytes.split_at(self.row_state.size() as usize);
            let (list, index) = rest.split_at(self.entries.size() as usize);
            let states: &[GpuEditRowState] = bytemuck::cast_slice(states);
            let list: &[GpuEntry] = bytemuck::cast_slice(list);
            let index: &[u32] = bytemuck::cast_slice(index);
            let slots = 1usize << self.slot_shift;
            states
                .iter()
                .zip(list.chunks(slots / 2).zip(index.chunks(slots)))
                .enumerate()
                .map(|(row, (state, (list, index)))| {
                    let mut reached = vec![false; list.len()];
                    let mut used = Vec::new();
                    for &at in index.iter().filter(|&&at| at != NO_ENTRY) {
                        if at >= state.distinct.min(list.len() as u32)
                            || std::mem::replace(&mut reached[at as usize], true)
                        {
                            return Err(Error::Readback(format!(
                                "row {row}: an index slot holds list entry {at}, past the \
                                 list's {} entries or held by another slot",
                                state.distinct
                            )));
                        }
                        used.push(list[at as usize]);
                    }
                    Ok(GpuHistoryRow {
                        table: RowTable {
                            produced: state.produced,
                            entries: used
                                .iter()
                                .map(|e| (e.token, HistoryEntry::from_entry(e)))
                                .collect(),
                        },
                        distinct: state.distinct,
                        applied: state.applied != 0,
                        unrestored: used.iter().filter(|e| e.saved != 0).count() as u32,
                    })
                })
                .collect()
        })
    }
}

/// The edit kernels: `apply_edits` and `restore_and_append`, one pipeline
/// per logits dtype each, built once per context.
pub struct EditKernels {
    apply: LogitsKernel,
    restore: LogitsKernel,
}

/// The shader of one edit kernel (one pipeline for every dtype).
fn kernel_shader(entry_point: &'static str) -> Result<LogitsShader> {
    crate::gpu::logits::logits_shader(
        &format!("edits/{entry_point}"),
        "edits.wgsl",
        entry_point,
        "",
        false,
    )
}

/// Every variant of the edits shader: both kernels, then the rounding
/// kernel the tests drive and the history kernels.
#[cfg(test)]
pub(crate) fn shader_variants() -> Result<Vec<ShaderVariant>> {
    let mut all = vec![kernel_shader("apply_edits")?.variant];
    all.push(kernel_shader("restore_and_append")?.variant);
    all.push(round_variant()?);
    all.push(history_variant("expand_histories")?);
    all.push(history_variant("append_emitted")?);
    Ok(all)
}

fn round_variant() -> Result<ShaderVariant> {
    Ok(ShaderVariant {
        label: "edits/round_to_halves".into(),
        entry_point: "round_to_halves",
        source: crate::gpu::shader::compose("edits.wgsl", "")?,
    })
}

impl EditKernels {
    /// Compiles (once per context) the edit pipelines on `ctx`'s device.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        // Bindings 2..: params (read), row state, the list; restore also
        // reads the sampler's tokens and results, and appends through the
        // index.
        let build = |label: &'static str, entry_point: &'static str, extra: &'static [bool]| {
            let key = LogitsKernelKey {
                kernel: entry_point,
                constant: 0,
                extra,
            };
            LogitsKernel::with_writable_logits(ctx, label, key, || kernel_shader(entry_point))
        };
        Ok(Self {
            apply: build("rollcall apply edits", "apply_edits", &[true, false, false])?,
            restore: build(
                "rollcall restore edits",
                "restore_and_append",
                &[true, false, false, true, true, false],
            )?,
        })
    }

    /// Caps the bytes of logits bound per dispatch in [`EditKernels::plan`].
    /// For tests of chunking (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_max_chunk_bytes(mut self, bytes: u64) -> Self {
        self.apply.set_max_chunk_bytes(bytes);
        self.restore.set_max_chunk_bytes(bytes);
        self
    }

    /// The dispatches of `logits` on this device.
    pub fn plan(&self, logits: &LogitsBinding<'_>) -> Result<Vec<Chunk>> {
        self.apply.plan(logits)
    }

    /// Checks what both passes share: rows within the state, chunks covering
    /// the binding's rows, rows set for this vocabulary.
    fn check(
        &self,
        logits: &LogitsBinding<'_>,
        chunks: &[Chunk],
        state: &EditState,
        row_base: u32,
    ) -> Result<()> {
        let end = u64::from(row_base) + u64::from(logits.rows);
        if end > u64::from(state.capacity) {
            return Err(Error::BatchCapacity {
                capacity: state.capacity as usize,
                rows: end as usize,
            });
        }
        let covered: u64 = chunks.iter().map(|c| u64::from(c.rows)).sum();
        if covered != u64::from(logits.rows) {
            return Err(Error::InvalidArgument(format!(
                "the chunks cover {covered} rows, the logits have {}",
                logits.rows
            )));
        }
        for row in row_base..row_base + logits.rows {
            if let Some(vocab) = state.rows[row as usize].vocab {
                if vocab != logits.vocab {
                    return Err(Error::InvalidArgument(format!(
                        "history row {row} was set for a vocabulary of {vocab}, \
                         the logits have {}",
                        logits.vocab
                    )));
                }
            }
        }
        Ok(())
    }

    /// Records the edits of rows `row_base..row_base + logits.rows` of
    /// `state` into `logits` (planned as `chunks`), in place.
    pub fn encode_apply(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        chunks: &[Chunk],
        state: &mut EditState,
        row_base: u32,
    ) -> Result<()> {
        self.check(logits, chunks, state, row_base)?;
        let extra = [
            state.params.as_entire_binding(),
            state.row_state.as_entire_binding(),
            state.entries.as_entire_binding(),
        ];
        self.apply.encode(
            encoder,
            logits,
            chunks,
            &mut state.apply_records,
            &extra,
            row_base,
        )
    }

    /// Records the undoing of [`EditKernels::encode_apply`]'s edits (same
    /// binding, chunks and rows), then the appending of each row's sampled
    /// token (`tokens`: a `u32` per row; `results`: the sampler's 16-byte
    /// results, status 0 for a drawn token) to its history.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_restore_append(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        logits: &LogitsBinding<'_>,
        chunks: &[Chunk],
        state: &mut EditState,
        tokens: &wgpu::Buffer,
        results: &wgpu::Buffer,
        row_base: u32,
    ) -> Result<()> {
        self.check(logits, chunks, state, row_base)?;
        let rows = u64::from(row_base) + u64::from(logits.rows);
        for (what, buffer, bytes) in [
            ("sampled tokens", tokens, TOKEN_BYTES),
            ("sampling results", results, RESULT_BYTES),
        ] {
            if buffer.size() < rows * bytes {
                return Err(Error::BufferTooSmall {
                    what,
                    needed: rows * bytes,
                    got: buffer.size(),
                });
            }
        }
        let extra = [
            state.params.as_entire_binding(),
            state.row_state.as_entire_binding(),
            state.entries.as_entire_binding(),
            tokens.as_entire_binding(),
            results.as_entire_binding(),
            state.index.as_entire_binding(),
        ];
        self.restore.encode(
            encoder,
            logits,
            chunks,
            &mut state.restore_records,
            &extra,
            row_base,
        )
    }
}

/// Where a sampled row's history comes from (`PositionHistory` in the
/// shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuPositionHistory {
    /// Its request's row, or `NO_REQUEST`.
    pub(crate) request: u32,
    pub(crate) first_draft: u32,
    pub(crate) prefix: u32,
    pub(crate) pad: u32,
}

/// A sampled row with no request's history.
pub(crate) const NO_REQUEST: u32 = u32::MAX;

/// The small kernels' record (`HistoryInfo` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GpuHistoryInfo {
    pub(crate) rows: u32,
    pub(crate) slot_shift: u32,
    pub(crate) vocab: u32,
    pub(crate) grid_width: u32,
}

/// Speculative verification's history kernels: `expand_histories` (each
/// target position's table from its request's and the drafts before it)
/// and `append_emitted` (the emitted tokens join the request's table).
pub(crate) struct HistoryKernels {
    expand: PlainKernel,
    append: PlainKernel,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct HistoryKernelsKey;

impl crate::gpu::cache::PipelineKey for HistoryKernelsKey {
    type Built = HistoryKernels;
}

fn history_variant(entry_point: &'static str) -> Result<ShaderVariant> {
    Ok(ShaderVariant {
        label: format!("edits/{entry_point}"),
        entry_point,
        source: crate::gpu::shader::compose("edits.wgsl", "")?,
    })
}

impl HistoryKernels {
    /// Builds (once per context) the two kernels.
    pub(crate) fn new(ctx: &GpuContext) -> Result<std::sync::Arc<Self>> {
        use crate::gpu::shader::Binding;
        let (read, write, uniform) = (Binding::Read, Binding::ReadWrite, Binding::Uniform(None));
        ctx.pipelines(&HistoryKernelsKey, || {
            let build = |entry_point: &'static str, bindings: &[(u32, Binding)]| -> Result<_> {
                Ok(PlainKernel::build(
                    &ctx.device,
                    &history_variant(entry_point)?,
                    bindings,
                ))
            };
            Ok(HistoryKernels {
                expand: build(
                    "expand_histories",
                    &[
                        (3, write),
                        (4, write),
                        (7, write),
                        (10, uniform),
                        (11, read),
                        (12, read),
                        (13, read),
                        (14, read),
                        (15, read),
                    ],
                )?,
                append: build(
                    "append_emitted",
                    &[
                        (2, read),
                        (3, write),
                        (4, write),
                        (7, write),
                        (10, uniform),
                        (16, read),
                        (17, read),
                    ],
                )?,
            })
        })
    }

    /// A grid of `groups` workgroups and its width.
    fn grid(ctx: &GpuContext, groups: u32) -> (u32, u32) {
        let max = ctx.limits().max_compute_workgroups_per_dimension.max(1);
        let x = groups.clamp(1, max);
        (x, groups.max(1).div_ceil(x))
    }

    /// Records the copy of each sampled row's history from its request's
    /// (`positions`, one per sampled row of `sampled`), with the draft
    /// tokens before its position appended. `info` is a 16-byte uniform
    /// buffer this call writes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_expand(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        info: &wgpu::Buffer,
        positions: &wgpu::Buffer,
        rows: u32,
        requests: &EditState,
        sampled: &EditState,
        draft_tokens: &wgpu::Buffer,
    ) {
        let grid = Self::grid(ctx, rows);
        let record = GpuHistoryInfo {
            rows,
            slot_shift: sampled.slot_shift,
            vocab: 0,
            grid_width: grid.0,
        };
        ctx.queue.write_buffer(info, 0, bytemuck::bytes_of(&record));
        self.expand.dispatch(
            &ctx.device,
            encoder,
            "rollcall histories",
            &[
                (3, sampled.row_state.as_entire_binding()),
                (4, sampled.entries.as_entire_binding()),
                (7, sampled.index.as_entire_binding()),
                (10, info.as_entire_binding()),
                (11, positions.as_entire_binding()),
                (12, requests.row_state.as_entire_binding()),
                (13, requests.entries.as_entire_binding()),
                (14, requests.index.as_entire_binding()),
                (15, draft_tokens.as_entire_binding()),
            ],
            grid,
        );
    }

    /// Records the appending of each request's emitted tokens
    /// (`verdicts`: 32 bytes a request, `tokens` the emitted tokens) to its
    /// history. `info` is a 16-byte uniform buffer this call writes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_append(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        info: &wgpu::Buffer,
        requests: &EditState,
        rows: u32,
        vocab: u32,
        verdicts: &wgpu::Buffer,
        tokens: &wgpu::Buffer,
    ) {
        let grid = Self::grid(ctx, rows.div_ceil(WORKGROUP));
        let record = GpuHistoryInfo {
            rows,
            slot_shift: requests.slot_shift,
            vocab,
            grid_width: grid.0 * WORKGROUP,
        };
        ctx.queue.write_buffer(info, 0, bytemuck::bytes_of(&record));
        self.append.dispatch(
            &ctx.device,
            encoder,
            "rollcall histories",
            &[
                (2, requests.params.as_entire_binding()),
                (3, requests.row_state.as_entire_binding()),
                (4, requests.entries.as_entire_binding()),
                (7, requests.index.as_entire_binding()),
                (10, info.as_entire_binding()),
                (16, verdicts.as_entire_binding()),
                (17, tokens.as_entire_binding()),
            ],
            grid,
        );
    }
}

/// The cache key of the rounding kernel.
#[cfg(any(test, feature = "internals"))]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RoundKernelKey;

#[cfg(any(test, feature = "internals"))]
impl crate::gpu::cache::PipelineKey for RoundKernelKey {
    type Built = (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>);
}

/// The shader's f32 → f16 and f32 → bf16 rounding (what `apply_edits`
/// stores for an edited 16-bit logit) of every f32 bit pattern in `bits`:
/// `f16 bits | bf16 bits << 16` each. Waits for the GPU. For tests.
#[cfg(any(test, feature = "internals"))]
pub fn round_to_halves(ctx: &GpuContext, bits: &[u32]) -> Result<Vec<u32>> {
    use crate::gpu::shader::{bind_buffers, layout_and_pipelines, Binding};
    if bits.is_empty() {
        return Ok(Vec::new());
    }
    let built = ctx.pipelines(&RoundKernelKey, || {
        Ok(layout_and_pipelines(
            &ctx.device,
            "rollcall round to halves",
            &[(8, Binding::Read), (9, Binding::ReadWrite)],
            &[round_variant()?],
        ))
    })?;
    let bytes = bits.len() as u64 * 4;
    ctx.scoped("rounding to halves", || {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let input = ctx.create_bound_buffer("rollcall round input", bytes, usage)?;
        let output = ctx.create_bound_buffer(
            "rollcall round output",
            bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let readback = ctx.create_buffer(
            "rollcall round readback",
            bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        ctx.queue
            .write_buffer(&input, 0, bytemuck::cast_slice(bits));
        let (layout, pipelines) = &*built;
        let bind_group = bind_buffers(
            &ctx.device,
            "rollcall round to halves",
            layout,
            &[(8, &input), (9, &output)],
        );
        let groups = (bits.len() as u32).div_ceil(WORKGROUP);
        let x = groups.min(1 << 15);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipelines[0]);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
        }
        encoder.copy_buffer_to_buffer(&output, 0, &readback, 0, bytes);
        ctx.submit(encoder.finish());
        Ok(bytemuck::cast_slice(&ctx.read_buffer(&readback, bytes)?).to_vec())
    })
}

// ---- CPU twin ---------------------------------------------------------------

/// A row of logits owned by the caller, in its dtype (what
/// [`HistoryTwin::edit_row`] returns).
#[derive(Clone, Debug)]
pub enum OwnedLogits {
    /// f32 logits.
    F32(Vec<f32>),
    /// f16 logits.
    F16(Vec<f16>),
    /// bf16 logits.
    Bf16(Vec<bf16>),
}

impl OwnedLogits {
    /// A copy of `logits`.
    pub fn from_host(logits: HostLogits<'_>) -> Self {
        match logits {
            HostLogits::F32(s) => Self::F32(s.to_vec()),
            HostLogits::F16(s) => Self::F16(s.to_vec()),
            HostLogits::Bf16(s) => Self::Bf16(s.to_vec()),
        }
    }

    /// A view of the logits.
    pub fn as_host(&self) -> HostLogits<'_> {
        match self {
            Self::F32(v) => HostLogits::F32(v),
            Self::F16(v) => HostLogits::F16(v),
            Self::Bf16(v) => HostLogits::Bf16(v),
        }
    }

    /// Stores f32 `value` at `i`, rounded to nearest-even in the dtype.
    fn store(&mut self, i: usize, value: f32) {
        match self {
            Self::F32(v) => v[i] = value,
            Self::F16(v) => v[i] = f16::from_f32(value),
            Self::Bf16(v) => v[i] = bf16::from_f32(value),
        }
    }
}

/// The CPU twin of [`EditState`] and [`EditKernels`]: per row the same
/// history, the same parameters, and the same edits bit for bit.
#[derive(Clone, Debug)]
pub struct HistoryTwin {
    distinct_capacity: u32,
    slot_shift: u32,
    rows: Vec<TwinRow>,
}

#[derive(Clone, Debug)]
struct TwinRow {
    vocab: Option<u32>,
    table: RowTable,
    params: GpuEditParams,
}

impl HistoryTwin {
    /// Histories for `rows` rows of at most `distinct_capacity` distinct
    /// tokens each (as [`EditState::new`]).
    pub fn new(rows: u32, distinct_capacity: u32) -> Result<Self> {
        let slot_shift = slot_shift(distinct_capacity)?;
        Ok(Self {
            distinct_capacity,
            slot_shift,
            rows: vec![Self::empty_row(slot_shift); rows.max(1) as usize],
        })
    }

    fn empty_row(slot_shift: u32) -> TwinRow {
        TwinRow {
            vocab: None,
            table: RowTable::default(),
            params: GpuEditParams::off(slot_shift),
        }
    }

    fn row_mut(&mut self, row: u32) -> Result<&mut TwinRow> {
        let capacity = self.rows.len();
        self.rows.get_mut(row as usize).ok_or(Error::BatchCapacity {
            capacity,
            rows: row as usize + 1,
        })
    }

    /// As [`EditState::set_row`].
    pub fn set_row(&mut self, row: u32, vocab: u32, history: &RowHistory<'_>) -> Result<()> {
        let capacity = self.distinct_capacity;
        let r = self.row_mut(row)?;
        let (table, flags) = row_table(row, vocab, history, capacity)?;
        r.vocab = Some(vocab);
        r.table = table;
        r.params.min_tokens = history.min_tokens;
        r.params.flags = (r.params.flags & FLAG_PENALTIES) | flags;
        Ok(())
    }

    /// As [`EditState::clear_row`].
    pub fn clear_row(&mut self, row: u32) {
        let empty = Self::empty_row(self.slot_shift);
        if let Some(r) = self.rows.get_mut(row as usize) {
            *r = empty;
        }
    }

    /// As [`EditState::set_penalties`].
    pub fn set_penalties(&mut self, params: &[SamplingParams]) -> Result<()> {
        super::validate_params(params)?;
        if params.len() > self.rows.len() {
            return Err(Error::BatchCapacity {
                capacity: self.rows.len(),
                rows: params.len(),
            });
        }
        for (row, r) in self.rows.iter_mut().enumerate() {
            r.params.set_penalties(params.get(row));
        }
        Ok(())
    }

    /// Row `row` drew `token` (what `restore_and_append` records for a row
    /// whose status is 0): its produced count grows by one and, when its
    /// penalties are on, the token's output count too. A token past the
    /// row's vocabulary or a row past the twin's rows is ignored.
    pub fn append(&mut self, row: u32, token: u32) {
        let Some(r) = self.rows.get_mut(row as usize) else {
            return;
        };
        if r.vocab.is_some_and(|vocab| token >= vocab) {
            return;
        }
        r.table.produced = r.table.produced.saturating_add(1);
        if r.params.flags & FLAG_PENALTIES != 0 {
            let entry = r.table.entries.entry(token).or_default();
            entry.count = (entry.count + 1).min(COUNT_MASK);
        }
    }

    /// Row `row`'s history.
    pub fn table(&self, row: u32) -> Option<&RowTable> {
        self.rows.get(row as usize).map(|r| &r.table)
    }

    /// Row `row` of logits as `apply_edits` leaves it: `logits_row` (the
    /// row's vocabulary long) with every edit applied.
    pub fn edit_row(&self, row: u32, logits_row: HostLogits<'_>) -> Result<OwnedLogits> {
        let r = self.rows.get(row as usize).ok_or(Error::BatchCapacity {
            capacity: self.rows.len(),
            rows: row as usize + 1,
        })?;
        if let Some(vocab) = r.vocab {
            if logits_row.len() != vocab as usize {
                return Err(Error::LengthMismatch {
                    what: "logits row",
                    expected: vocab as usize,
                    got: logits_row.len(),
                });
            }
        }
        let mut out = OwnedLogits::from_host(logits_row);
        let ban = r.params.bans(r.table.produced);
        let edits = r.params.flags & (FLAG_PENALTIES | FLAG_BIAS) != 0 || ban;
        if !edits {
            return Ok(out);
        }
        for (&token, entry) in &r.table.entries {
            let i = token as usize;
            if i >= logits_row.len() {
                continue;
            }
            if let Some(v) = edit_logit(logits_row.get_f32(i), entry, &r.params, ban) {
                out.store(i, v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_table_probes_as_the_shader_does() {
        let shift = slot_shift(4).unwrap();
        assert_eq!(shift, 3);
        // Tokens with the same home slot land in consecutive slots.
        let home = home_slot(0, shift);
        let clash: Vec<u32> = (1..10_000)
            .filter(|&t| home_slot(t, shift) == home)
            .take(2)
            .collect();
        let mut entries = BTreeMap::new();
        for &t in [0].iter().chain(&clash) {
            entries.insert(t, HistoryEntry::default());
        }
        let slots = row_slots(&entries, shift);
        let mask = (1 << shift) - 1;
        assert_eq!(slots[home as usize].token, 0);
        assert_eq!(slots[((home + 1) & mask) as usize].token, clash[0]);
        assert_eq!(slots[((home + 2) & mask) as usize].token, clash[1]);
        assert_eq!(slots.iter().filter(|s| s.token != EMPTY_TOKEN).count(), 3);
    }

    #[test]
    fn slots_are_at_least_twice_the_capacity() {
        for (capacity, slots) in [(1, 2), (2, 4), (3, 8), (64, 128), (65, 256)] {
            assert_eq!(1u32 << slot_shift(capacity).unwrap(), slots);
        }
        assert!(slot_shift(0).is_err());
        assert!(slot_shift((1 << 29) + 1).is_err());
    }

    #[test]
    fn canonical_and_flush() {
        assert_eq!(canonical(f32::NAN).to_bits(), CANONICAL_NAN_BITS);
        assert_eq!(
            canonical(f32::from_bits(0xFF80_0001)).to_bits(),
            CANONICAL_NAN_BITS
        );
        assert_eq!(canonical(-1e-40).to_bits(), 0x8000_0000);
        assert_eq!(canonical(1e-40).to_bits(), 0);
        assert_eq!(canonical(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(canonical(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
        assert_eq!(flush(-0.0).to_bits(), 0);
        assert_eq!(flush(-1e-40).to_bits(), 0);
        assert_eq!(flush(-2.0), -2.0);
    }

    #[test]
    fn twin_biases_and_penalises() {
        let mut twin = HistoryTwin::new(1, 16).unwrap();
        let history = RowHistory {
            logit_bias: &[(2, 1.5)],
            ..Default::default()
        };
        twin.set_row(0, 4, &history).unwrap();
        let params = SamplingParams::new(1.0).penalties(1.0, 0.5, 0.0);
        twin.set_penalties(&[params]).unwrap();
        twin.append(0, 3);
        let edited = twin.edit_row(0, HostLogits::F32(&[1.0; 4])).unwrap();
        let HostLogits::F32(row) = edited.as_host() else {
            unreachable!()
        };
        assert_eq!(row, &[1.0, 1.0, 2.5, 0.5]);
    }
}
