//! The logit edits (bias, penalties, min_tokens) and the GPU token history
//! against the CPU twin, bit for bit: the logits after `apply_edits`, the
//! buffer after `restore_and_append` (bit-identical to before), the history
//! over a generation loop, the f16/bf16 rounding, and the typed errors.
//! Fails (never skips) without an adapter unless ROLLCALL_ALLOW_NO_GPU=1.

mod common;

use half::{bf16, f16};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rollcall::internals::{
    round_to_halves, EditKernels, EditState, GpuHistoryRow, HistoryTwin, RowHistory,
};
use rollcall::{Error, GpuContext, LogitsBinding, LogitsDtype, SamplingParams};

// ---- Helpers ----------------------------------------------------------------

/// A row's request, owned.
#[derive(Clone, Debug, Default)]
struct RowSpec {
    prompt: Vec<u32>,
    output: Vec<u32>,
    bias: Vec<(u32, f32)>,
    stop: Vec<u32>,
    min_tokens: u32,
}

impl RowSpec {
    fn history(&self) -> RowHistory<'_> {
        RowHistory {
            prompt: &self.prompt,
            output: &self.output,
            logit_bias: &self.bias,
            stop_tokens: &self.stop,
            min_tokens: self.min_tokens,
        }
    }
}

fn tokens(rng: &mut ChaCha8Rng, vocab: u32, most: usize) -> Vec<u32> {
    let n = rng.random_range(0..=most);
    // Few distinct values, so tokens repeat.
    let pool = vocab.min(rng.random_range(1..=24));
    let start = rng.random_range(0..=vocab - pool);
    (0..n).map(|_| start + rng.random_range(0..pool)).collect()
}

const AWKWARD_BIASES: [f32; 10] = [
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1e-40,
    -100.0,
    100.0,
    1e5,
    1e-3,
    -3e38,
];

fn random_spec(rng: &mut ChaCha8Rng, vocab: u32) -> RowSpec {
    let output = tokens(rng, vocab, 24);
    let bias_tokens = tokens(rng, vocab, 12);
    let bias = bias_tokens
        .into_iter()
        .map(|t| {
            let b = if rng.random_bool(0.3) {
                AWKWARD_BIASES[rng.random_range(0..AWKWARD_BIASES.len())]
            } else {
                rng.random_range(-100.0f32..100.0)
            };
            (t, b)
        })
        .collect();
    let produced = output.len() as u32;
    RowSpec {
        prompt: tokens(rng, vocab, 24),
        output,
        bias,
        stop: tokens(rng, vocab, 3),
        min_tokens: match rng.random_range(0..4) {
            0 => 0,
            1 => produced,
            2 => produced + rng.random_range(1..5),
            _ => rng.random_range(0..=produced),
        },
    }
}

fn random_params(rng: &mut ChaCha8Rng) -> SamplingParams {
    if rng.random_bool(0.2) {
        return SamplingParams::new(1.0);
    }
    let pick = |rng: &mut ChaCha8Rng, values: &[f32]| values[rng.random_range(0..values.len())];
    let repetition = pick(rng, &[1.0, 1.0, 1.2, 0.8, 1.3, 2.0, 1e-3, 3e38, 1e-40]);
    let presence = pick(rng, &[0.0, 0.5, -0.7, 2.0, -2.0, 1e-40, 0.1]);
    let frequency = pick(rng, &[0.0, 0.3, -1.1, 2.0, 0.1, 0.7, -0.0]);
    SamplingParams::new(0.7).penalties(repetition, presence, frequency)
}

/// Special f32 logits for tokens an edit reaches.
const AWKWARD_LOGITS: [f32; 10] = [
    f32::NEG_INFINITY,
    f32::INFINITY,
    f32::NAN,
    -0.0,
    0.0,
    1e-40,
    -3e38,
    65519.0,
    -65520.0,
    3.0e-5,
];

/// Raw bytes of `rows × vocab` logits of `dtype`: model-like values with
/// awkward ones (and odd NaN patterns) at the rows' history tokens.
fn random_logits(
    rng: &mut ChaCha8Rng,
    rows: &[RowSpec],
    vocab: u32,
    dtype: LogitsDtype,
) -> common::Owned {
    let v = vocab as usize;
    let mut values = Vec::with_capacity(rows.len() * v);
    for spec in rows {
        let mut row = common::model_like_logits(rng, v);
        let reached = spec
            .prompt
            .iter()
            .chain(&spec.output)
            .chain(spec.bias.iter().map(|(t, _)| t))
            .chain(&spec.stop);
        for &t in reached {
            if rng.random_bool(0.3) {
                row[t as usize] = AWKWARD_LOGITS[rng.random_range(0..AWKWARD_LOGITS.len())];
            }
        }
        values.extend(row);
    }
    let mut owned = common::Owned::new(&values, dtype);
    // NaN payloads the rounding must keep NaN (signalling, negative).
    let f16_nan =
        |rng: &mut ChaCha8Rng| [0x7C01u16, 0xFE00, 0x7D55, 0xFC01][rng.random_range(0..4)];
    let bf16_nan =
        |rng: &mut ChaCha8Rng| [0x7F81u16, 0xFFC0, 0x7FA5, 0xFF81][rng.random_range(0..4)];
    for i in 0..values.len() {
        if !values[i].is_nan() {
            continue;
        }
        match &mut owned {
            common::Owned::F32(v) => {
                v[i] = f32::from_bits([0x7F80_0001, 0xFFC0_0000, 0x7FBF_FFFF][i % 3])
            }
            common::Owned::F16(v) => v[i] = f16::from_bits(f16_nan(rng)),
            common::Owned::Bf16(v) => v[i] = bf16::from_bits(bf16_nan(rng)),
        }
    }
    owned
}

/// A buffer holding `fill` bytes, then `logits` at `offset`, then `fill`
/// bytes past the end (stray writes would show there).
fn logits_buffer(ctx: &GpuContext, offset: u64, logits: &[u8]) -> (wgpu::Buffer, Vec<u8>) {
    use wgpu::util::DeviceExt;
    let mut bytes = vec![0xA5u8; offset as usize];
    bytes.extend_from_slice(logits);
    bytes.resize((bytes.len() + 6).div_ceil(4) * 4 + 8, 0x5A);
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("test logits"),
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        });
    (buffer, bytes)
}

fn read(ctx: &GpuContext, buffer: &wgpu::Buffer) -> Vec<u8> {
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &readback, 0, buffer.size());
    ctx.submit(encoder.finish());
    ctx.read_buffer(&readback, buffer.size()).unwrap()
}

/// The sampler's outputs, faked: a token and a status per row.
struct Sampled {
    tokens: wgpu::Buffer,
    results: wgpu::Buffer,
}

impl Sampled {
    fn new(ctx: &GpuContext, rows: u32) -> Self {
        let buffer = |size: u64| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: size.max(16),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        Self {
            tokens: buffer(u64::from(rows) * 4),
            results: buffer(u64::from(rows) * 16),
        }
    }

    /// Writes `(token, status)` per row (lands before the next submit).
    fn write(&self, ctx: &GpuContext, rows: &[(u32, u32)]) {
        if rows.is_empty() {
            return;
        }
        let tokens: Vec<u32> = rows.iter().map(|r| r.0).collect();
        let results: Vec<[u32; 4]> = rows
            .iter()
            .map(|r| [(-1.5f32).to_bits(), r.1, 3, 0])
            .collect();
        ctx.queue
            .write_buffer(&self.tokens, 0, bytemuck::cast_slice(&tokens));
        ctx.queue
            .write_buffer(&self.results, 0, bytemuck::cast_slice(&results));
    }
}

/// The GPU's rows equal the twin's: history, produced count, nothing left
/// applied or unrestored.
fn assert_same_history(gpu: &[GpuHistoryRow], twin: &HistoryTwin, rows: u32, context: &str) {
    for row in 0..rows {
        let g = &gpu[row as usize];
        let want = twin.table(row).unwrap();
        assert_eq!(&g.table, want, "{context}: row {row}");
        assert_eq!(
            g.distinct as usize,
            want.entries.len(),
            "{context}: row {row}"
        );
        assert!(!g.applied, "{context}: row {row} left applied");
        assert_eq!(g.unrestored, 0, "{context}: row {row}");
    }
}

/// Row `row` of `bytes` (logits at `offset`) equals the twin's edit of the
/// original row, bit for bit.
#[allow(clippy::too_many_arguments)]
fn assert_edited_rows(
    twin: &HistoryTwin,
    original: &common::Owned,
    after: &[u8],
    offset: u64,
    rows: u32,
    vocab: u32,
    dtype: LogitsDtype,
    context: &str,
) {
    let v = vocab as usize;
    let row_bytes = v * dtype.size_bytes() as usize;
    for row in 0..rows as usize {
        let want = twin
            .edit_row(row as u32, original.view().row(row, v).unwrap())
            .unwrap();
        let at = offset as usize + row * row_bytes;
        let got = &after[at..at + row_bytes];
        let want = want.as_host();
        if got != want.bytes() {
            let esize = dtype.size_bytes() as usize;
            let element = |bytes: &[u8], i: usize| bytes[i * esize..][..esize].to_vec();
            let first = (0..v)
                .find(|&i| element(got, i) != element(want.bytes(), i))
                .unwrap();
            let raw = original.view().row(row, v).unwrap();
            panic!(
                "{context}: row {row} token {first}: raw {:02x?}, gpu {:02x?}, twin {:02x?}; \
                 history {:?}",
                element(raw.bytes(), first),
                element(got, first),
                element(want.bytes(), first),
                twin.table(row as u32).unwrap().entries.get(&(first as u32)),
            );
        }
    }
}

fn gpu() -> Option<GpuContext> {
    common::gpu()
}

// ---- Apply and restore --------------------------------------------------------

/// Random batches of every dtype and awkward shape (no rows, one token,
/// odd vocabularies, not multiples of 64, rows sharing 32-bit words, many
/// rows; whole or two rows per dispatch; at an offset): after apply every row
/// is the twin's edited row, bit for bit, and nothing outside the logits
/// changed; after restore the buffer is bit-identical to before; the
/// appended history equals the twin's.
#[test]
fn apply_matches_the_twin_and_restore_undoes_it() {
    let Some(ctx) = gpu() else { return };
    let kernels = EditKernels::new(&ctx).unwrap();
    let alignment = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
    let mut rng = common::rng(0xED17);
    let shapes = [
        (0u32, 7u32),
        (1, 1),
        (3, 1),
        (1, 7),
        (5, 33),
        (4, 63),
        (7, 100),
        (9, 129),
        (16, 1000),
        (2, 4097),
        (40, 65),
    ];
    for dtype in LogitsDtype::ALL {
        for &(rows, vocab) in &shapes {
            for (chunked, offset) in [(false, 0u64), (true, 4), (false, 12)] {
                let context = format!(
                    "{dtype:?} rows {rows} vocab {vocab} chunked {chunked} offset {offset}"
                );
                let specs: Vec<RowSpec> = (0..rows).map(|_| random_spec(&mut rng, vocab)).collect();
                let params: Vec<SamplingParams> =
                    (0..rows).map(|_| random_params(&mut rng)).collect();
                let original = random_logits(&mut rng, &specs, vocab, dtype);
                let (buffer, before) = logits_buffer(&ctx, offset, original.bytes());

                let capacity = 128;
                let mut state = EditState::new(&ctx, rows.max(1), capacity).unwrap();
                let mut twin = HistoryTwin::new(rows.max(1), capacity).unwrap();
                for (row, spec) in specs.iter().enumerate() {
                    state.set_row(row as u32, vocab, &spec.history()).unwrap();
                    twin.set_row(row as u32, vocab, &spec.history()).unwrap();
                }
                state.set_penalties(&params).unwrap();
                twin.set_penalties(&params).unwrap();

                let binding = LogitsBinding {
                    buffer: &buffer,
                    offset,
                    rows,
                    vocab,
                    dtype,
                };
                let row_bytes = u64::from(vocab) * dtype.size_bytes();
                let small = alignment + 4 + 2 * row_bytes;
                let kernels_here;
                let kernels = if chunked {
                    kernels_here = EditKernels::new(&ctx).unwrap().with_max_chunk_bytes(small);
                    &kernels_here
                } else {
                    &kernels
                };
                let chunks = kernels.plan(&binding).unwrap();
                if chunked && rows > 2 {
                    assert!(chunks.len() > 1, "{context}: {chunks:?}");
                }
                state.check_step(rows).unwrap();
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                kernels
                    .encode_apply(&mut encoder, &binding, &chunks, &mut state, 0)
                    .unwrap();
                ctx.submit(encoder.finish());
                let applied = read(&ctx, &buffer);
                assert_edited_rows(
                    &twin, &original, &applied, offset, rows, vocab, dtype, &context,
                );
                let end = offset as usize + original.bytes().len();
                assert_eq!(
                    applied[..offset as usize],
                    before[..offset as usize],
                    "{context}"
                );
                assert_eq!(applied[end..], before[end..], "{context}");

                // Restore, appending a sampled token to rows with status 0.
                let sampled = Sampled::new(&ctx, rows);
                let draws: Vec<(u32, u32)> = (0..rows)
                    .map(|_| (rng.random_range(0..vocab), u32::from(rng.random_bool(0.2))))
                    .collect();
                sampled.write(&ctx, &draws);
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                kernels
                    .encode_restore_append(
                        &mut encoder,
                        &binding,
                        &chunks,
                        &mut state,
                        &sampled.tokens,
                        &sampled.results,
                        0,
                    )
                    .unwrap();
                state.note_step(rows);
                ctx.submit(encoder.finish());
                assert!(read(&ctx, &buffer) == before, "{context}: restore");
                for (row, &(token, status)) in draws.iter().enumerate() {
                    if status == 0 {
                        twin.append(row as u32, token);
                    }
                }
                assert_same_history(&state.read_tables().unwrap(), &twin, rows, &context);
            }
        }
    }
}

/// Every token of every row edited (a bias on each), 16-bit logits with an
/// odd vocabulary: neighbouring tokens and rows share 32-bit words, which
/// many invocations and workgroups edit at once.
#[test]
fn dense_edits_of_shared_words() {
    let Some(ctx) = gpu() else { return };
    let kernels = EditKernels::new(&ctx).unwrap();
    let mut rng = common::rng(0xD3);
    for dtype in [LogitsDtype::F16, LogitsDtype::Bf16, LogitsDtype::F32] {
        let (rows, vocab) = (24u32, 77u32);
        let specs: Vec<RowSpec> = (0..rows)
            .map(|_| RowSpec {
                bias: (0..vocab)
                    .map(|t| (t, rng.random_range(-3.0f32..3.0)))
                    .collect(),
                output: (0..vocab).step_by(3).collect(),
                ..Default::default()
            })
            .collect();
        let params = vec![SamplingParams::new(1.0).penalties(1.1, 0.25, 0.3); rows as usize];
        let original = random_logits(&mut rng, &specs, vocab, dtype);
        let (buffer, before) = logits_buffer(&ctx, 0, original.bytes());
        let mut state = EditState::new(&ctx, rows, vocab).unwrap();
        let mut twin = HistoryTwin::new(rows, vocab).unwrap();
        for (row, spec) in specs.iter().enumerate() {
            state.set_row(row as u32, vocab, &spec.history()).unwrap();
            twin.set_row(row as u32, vocab, &spec.history()).unwrap();
        }
        state.set_penalties(&params).unwrap();
        twin.set_penalties(&params).unwrap();
        let binding = LogitsBinding {
            buffer: &buffer,
            offset: 0,
            rows,
            vocab,
            dtype,
        };
        let chunks = kernels.plan(&binding).unwrap();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        kernels
            .encode_apply(&mut encoder, &binding, &chunks, &mut state, 0)
            .unwrap();
        ctx.submit(encoder.finish());
        let context = format!("{dtype:?} dense");
        let applied = read(&ctx, &buffer);
        assert_edited_rows(&twin, &original, &applied, 0, rows, vocab, dtype, &context);
        assert!(applied != before, "{context}: nothing edited");
        let sampled = Sampled::new(&ctx, rows);
        sampled.write(&ctx, &vec![(1, 0); rows as usize]);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        kernels
            .encode_restore_append(
                &mut encoder,
                &binding,
                &chunks,
                &mut state,
                &sampled.tokens,
                &sampled.results,
                0,
            )
            .unwrap();
        ctx.submit(encoder.finish());
        assert!(read(&ctx, &buffer) == before, "{context}: restore");
    }
}

/// Rows at `row_base` in the state: a batch whose rows sit past the start
/// of the state's rows reads and appends those rows.
#[test]
fn row_base_picks_the_state_rows() {
    let Some(ctx) = gpu() else { return };
    let kernels = EditKernels::new(&ctx).unwrap();
    let (vocab, dtype) = (10u32, LogitsDtype::F32);
    let mut state = EditState::new(&ctx, 4, 8).unwrap();
    let mut twin = HistoryTwin::new(4, 8).unwrap();
    for row in 0..4u32 {
        let bias = [(row, 10.0 * (row + 1) as f32)];
        let spec = RowHistory {
            logit_bias: &bias,
            ..Default::default()
        };
        state.set_row(row, vocab, &spec).unwrap();
        twin.set_row(row, vocab, &spec).unwrap();
    }
    let params = vec![SamplingParams::new(1.0).penalties(1.0, 1.0, 0.0); 4];
    state.set_penalties(&params).unwrap();
    twin.set_penalties(&params).unwrap();
    let logits = vec![0.0f32; 2 * vocab as usize];
    let (buffer, before) = logits_buffer(&ctx, 0, bytemuck::cast_slice(&logits));
    let binding = LogitsBinding {
        buffer: &buffer,
        offset: 0,
        rows: 2,
        vocab,
        dtype,
    };
    let chunks = kernels.plan(&binding).unwrap();
    // Tokens and results are indexed by state row too.
    let sampled = Sampled::new(&ctx, 4);
    sampled.write(&ctx, &[(9, 0), (9, 0), (5, 0), (6, 0)]);
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    kernels
        .encode_apply(&mut encoder, &binding, &chunks, &mut state, 2)
        .unwrap();
    ctx.submit(encoder.finish());
    let applied = read(&ctx, &buffer);
    let got: &[f32] = bytemuck::cast_slice(&applied[..logits.len() * 4]);
    let mut want = logits.clone();
    want[2] = 30.0;
    want[vocab as usize + 3] = 40.0;
    assert_eq!(got, &want[..]);
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    kernels
        .encode_restore_append(
            &mut encoder,
            &binding,
            &chunks,
            &mut state,
            &sampled.tokens,
            &sampled.results,
            2,
        )
        .unwrap();
    ctx.submit(encoder.finish());
    assert!(read(&ctx, &buffer) == before);
    twin.append(2, 5);
    twin.append(3, 6);
    assert_same_history(&state.read_tables().unwrap(), &twin, 4, "row base");
}

// ---- The generation loop -------------------------------------------------------

/// 64 steps of a fake generation per dtype: each step applies the edits
/// (compared with the twin's), restores (compared with the original bits)
/// and appends a random token per row (some rows fail to draw one); the GPU
/// history and produced counts equal the twin's at every step. Rows with
/// penalties off keep their history as it was set; the min_tokens ban lifts
/// exactly at the step where the row has produced `min_tokens` tokens.
#[test]
fn history_follows_the_twin_over_a_generation() {
    let Some(ctx) = gpu() else { return };
    let kernels = EditKernels::new(&ctx).unwrap();
    let mut rng = common::rng(0x64);
    let (rows, vocab, capacity) = (7u32, 53u32, 64u32);
    // Row 0: the min_tokens row (stop token 7, 10 tokens, 3 already out).
    let ban_row = 0usize;
    let (stop, min_tokens) = (7u32, 10u32);
    for dtype in LogitsDtype::ALL {
        let mut specs: Vec<RowSpec> = (0..rows).map(|_| random_spec(&mut rng, vocab)).collect();
        specs[ban_row] = RowSpec {
            prompt: vec![1, 2, 3],
            output: vec![4, 5, 4],
            stop: vec![stop, 11],
            min_tokens,
            ..Default::default()
        };
        let mut params: Vec<SamplingParams> = (0..rows).map(|_| random_params(&mut rng)).collect();
        params[ban_row] = SamplingParams::new(1.0).penalties(1.3, 0.2, 0.4);
        // One row never penalised.
        params[1] = SamplingParams::new(0.5);
        let mut state = EditState::new(&ctx, rows, capacity).unwrap();
        let mut twin = HistoryTwin::new(rows, capacity).unwrap();
        for (row, spec) in specs.iter().enumerate() {
            state.set_row(row as u32, vocab, &spec.history()).unwrap();
            twin.set_row(row as u32, vocab, &spec.history()).unwrap();
        }
        state.set_penalties(&params).unwrap();
        twin.set_penalties(&params).unwrap();
        let set_history_of_row_1 = twin.table(1).unwrap().entries.clone();

        let original = random_logits(&mut rng, &specs, vocab, dtype);
        // The stop token's logit is finite, so the ban shows.
        let original = match original {
            common::Owned::F32(mut v) => {
                v[stop as usize] = 2.5;
                common::Owned::F32(v)
            }
            common::Owned::F16(mut v) => {
                v[stop as usize] = f16::from_f32(2.5);
                common::Owned::F16(v)
            }
            common::Owned::Bf16(mut v) => {
                v[stop as usize] = bf16::from_f32(2.5);
                common::Owned::Bf16(v)
            }
        };
        let (buffer, before) = logits_buffer(&ctx, 0, original.bytes());
        let binding = LogitsBinding {
            buffer: &buffer,
            offset: 0,
            rows,
            vocab,
            dtype,
        };
        let chunks = kernels.plan(&binding).unwrap();
        let sampled = Sampled::new(&ctx, rows);
        let esize = dtype.size_bytes() as usize;
        let mut lifted_at = None;
        for step in 0..64 {
            let context = format!("{dtype:?} step {step}");
            let draws: Vec<(u32, u32)> = (0..rows)
                .map(|_| (rng.random_range(0..vocab), u32::from(rng.random_bool(0.1))))
                .collect();
            sampled.write(&ctx, &draws);
            state.check_step(rows).unwrap();
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            kernels
                .encode_apply(&mut encoder, &binding, &chunks, &mut state, 0)
                .unwrap();
            ctx.submit(encoder.finish());
            let applied = read(&ctx, &buffer);
            assert_edited_rows(&twin, &original, &applied, 0, rows, vocab, dtype, &context);
            // The ban, read from the buffer itself.
            let produced = twin.table(ban_row as u32).unwrap().produced;
            let at = (ban_row * vocab as usize + stop as usize) * esize;
            let banned = match dtype {
                LogitsDtype::F32 => f32::from_le_bytes(applied[at..at + 4].try_into().unwrap()),
                LogitsDtype::F16 => {
                    f16::from_le_bytes(applied[at..at + 2].try_into().unwrap()).to_f32()
                }
                LogitsDtype::Bf16 => {
                    bf16::from_le_bytes(applied[at..at + 2].try_into().unwrap()).to_f32()
                }
            } == f32::NEG_INFINITY;
            assert_eq!(
                banned,
                produced < min_tokens,
                "{context}: produced {produced}"
            );
            if !banned && lifted_at.is_none() {
                lifted_at = Some(produced);
            }

            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            kernels
                .encode_restore_append(
                    &mut encoder,
                    &binding,
                    &chunks,
                    &mut state,
                    &sampled.tokens,
                    &sampled.results,
                    0,
                )
                .unwrap();
            state.note_step(rows);
            ctx.submit(encoder.finish());
            assert!(read(&ctx, &buffer) == before, "{context}: restore");
            for (row, &(token, status)) in draws.iter().enumerate() {
                if status == 0 {
                    twin.append(row as u32, token);
                }
            }
            assert_same_history(&state.read_tables().unwrap(), &twin, rows, &context);
        }
        assert_eq!(lifted_at, Some(min_tokens), "{dtype:?}");
        // The unpenalised row counted its tokens but kept its history.
        let row_1 = twin.table(1).unwrap();
        assert_eq!(row_1.entries, set_history_of_row_1);
        assert!(row_1.produced > specs[1].output.len() as u32 + 40);
    }
}

/// Rows whose histories grow to exactly the capacity, one new token a step
/// (capacity 8 fills the list's room of half the 16 index slots; 5 leaves
/// room): edits, restores and appends equal the twin's at every step, and
/// once more with the lists full.
#[test]
fn histories_fill_their_lists_to_the_capacity() {
    let Some(ctx) = gpu() else { return };
    let kernels = EditKernels::new(&ctx).unwrap();
    let mut rng = common::rng(0xF111);
    let (rows, vocab) = (3u32, 40u32);
    for dtype in LogitsDtype::ALL {
        for capacity in [8u32, 5] {
            let specs: Vec<RowSpec> = (0..rows)
                .map(|row| RowSpec {
                    prompt: vec![row, row + 1],
                    bias: vec![(row + 2, 1.5)],
                    ..Default::default()
                })
                .collect();
            let params = vec![SamplingParams::new(1.0).penalties(1.3, 0.2, 0.4); rows as usize];
            let mut state = EditState::new(&ctx, rows, capacity).unwrap();
            let mut twin = HistoryTwin::new(rows, capacity).unwrap();
            for (row, spec) in specs.iter().enumerate() {
                state.set_row(row as u32, vocab, &spec.history()).unwrap();
                twin.set_row(row as u32, vocab, &spec.history()).unwrap();
            }
            state.set_penalties(&params).unwrap();
            twin.set_penalties(&params).unwrap();
            let original = random_logits(&mut rng, &specs, vocab, dtype);
            let (buffer, before) = logits_buffer(&ctx, 0, original.bytes());
            let binding = LogitsBinding {
                buffer: &buffer,
                offset: 0,
                rows,
                vocab,
                dtype,
            };
            let chunks = kernels.plan(&binding).unwrap();
            let sampled = Sampled::new(&ctx, rows);
            // Each row's tokens so far, and the next new one to draw.
            let mut fresh: Vec<u32> = (0..rows).map(|row| row + 3).collect();
            for step in 0.. {
                let context = format!("{dtype:?} capacity {capacity} step {step}");
                // Appends a new token to every row while the capacity allows;
                // once it refuses, one more step that appends nothing.
                let full = state.check_step(rows).is_err();
                let draws: Vec<(u32, u32)> = fresh
                    .iter_mut()
                    .map(|t| {
                        *t += 3;
                        (*t, u32::from(full))
                    })
                    .collect();
                sampled.write(&ctx, &draws);
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                kernels
                    .encode_apply(&mut encoder, &binding, &chunks, &mut state, 0)
                    .unwrap();
                ctx.submit(encoder.finish());
                let applied = read(&ctx, &buffer);
                assert_edited_rows(&twin, &original, &applied, 0, rows, vocab, dtype, &context);
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                kernels
                    .encode_restore_append(
                        &mut encoder,
                        &binding,
                        &chunks,
                        &mut state,
                        &sampled.tokens,
                        &sampled.results,
                        0,
                    )
                    .unwrap();
                if !full {
                    state.note_step(rows);
                }
                ctx.submit(encoder.finish());
                assert!(read(&ctx, &buffer) == before, "{context}: restore");
                for (row, &(token, status)) in draws.iter().enumerate() {
                    if status == 0 {
                        twin.append(row as u32, token);
                    }
                }
                assert_same_history(&state.read_tables().unwrap(), &twin, rows, &context);
                if full {
                    for row in 0..rows {
                        let entries = &twin.table(row).unwrap().entries;
                        assert_eq!(entries.len(), capacity as usize, "{context}: row {row}");
                    }
                    break;
                }
            }
        }
    }
}

// ---- Rounding --------------------------------------------------------------------

/// The shader's f32 → f16 and f32 → bf16 rounding, bit for bit `half`'s
/// `from_f32`: every f16 and bf16 value round-tripped through f32, then
/// millions of random f32 patterns (NaN, inf, subnormal and halfway cases
/// among them).
#[test]
fn half_rounding_matches_the_half_crate() {
    let Some(ctx) = gpu() else { return };
    let check = |bits: &[u32], what: &str| {
        for part in bits.chunks(1 << 20) {
            let got = round_to_halves(&ctx, part).unwrap();
            for (&x, &g) in part.iter().zip(&got) {
                let value = f32::from_bits(x);
                let want_f16 = f16::from_f32(value).to_bits();
                let want_bf16 = bf16::from_f32(value).to_bits();
                assert_eq!(
                    (g as u16, (g >> 16) as u16),
                    (want_f16, want_bf16),
                    "{what}: f32 bits {x:#010x} ({value:e})"
                );
            }
        }
    };
    let halves: Vec<u32> = (0..=u16::MAX)
        .map(|h| f16::from_bits(h).to_f32().to_bits())
        .collect();
    check(&halves, "every f16");
    // A round trip gives the same f16 back (signalling NaNs quieted).
    let got = round_to_halves(&ctx, &halves).unwrap();
    for (h, g) in (0..=u16::MAX).zip(&got) {
        let f = f16::from_bits(h);
        let want = if f.is_nan() { h | 0x0200 } else { h };
        assert_eq!(g & 0xFFFF, u32::from(want), "f16 {h:#06x}");
    }
    let bfloats: Vec<u32> = (0..=u16::MAX).map(|h| u32::from(h) << 16).collect();
    check(&bfloats, "every bf16");

    let mut rng = common::rng(0xF16);
    let mut bits: Vec<u32> = (0..(3 << 20)).map(|_| rng.random()).collect();
    // Halfway and near-halfway cases around f16's normal and subnormal
    // rounding points and bf16's, and values near f16's range ends.
    for _ in 0..(1 << 20) {
        let sign = rng.random::<u32>() & 0x8000_0000;
        let x = match rng.random_range(0..5) {
            0 => {
                // f16 normal range: the 13 dropped bits exactly half.
                let exponent = rng.random_range(113u32..=142) << 23;
                let kept = rng.random::<u32>() & 0x007F_E000;
                exponent | kept | 0x1000 | (rng.random_range(0..3) & 1)
            }
            1 => {
                // f16 subnormal range (and just below it): halfway at the
                // exponent's rounding point, or one ulp either side.
                let e = rng.random_range(102u32..=112);
                let round = 1u32 << (125 - e);
                let kept = rng.random::<u32>() & !((round << 1) - 1);
                let nudge = [0u32, 1, u32::MAX][rng.random_range(0..3)];
                (e << 23) | ((kept | round).wrapping_add(nudge) & 0x007F_FFFF)
            }
            2 => {
                // bf16: the 16 dropped bits exactly half, or one off.
                let kept = rng.random::<u32>() & 0x7FFF_0000;
                kept | 0x8000 | [0, 1, 0x7FFF][rng.random_range(0..3)]
            }
            3 => {
                // Near f16's largest finite value and its overflow point.
                0x477F_E000u32.wrapping_add(rng.random_range(0..0x4000))
            }
            _ => {
                // NaN, inf and f32 subnormals.
                let kind = rng.random_range(0..3);
                let mantissa = rng.random::<u32>() & 0x007F_FFFF;
                match kind {
                    0 => 0x7F80_0000 | mantissa.max(1),
                    1 => 0x7F80_0000,
                    _ => mantissa,
                }
            }
        };
        bits.push(sign | x);
    }
    check(&bits, "random");
}

// ---- Errors and activity ------------------------------------------------------

/// Bad requests are typed errors before any GPU work: out-of-range tokens
/// (each list named), NaN biases, more distinct tokens than the capacity,
/// penalties out of range, rows past the capacity; a refused row keeps what
/// it held. The twin refuses the same requests.
#[test]
fn bad_requests_are_typed_errors_before_gpu_work() {
    // Its own context: the counts checked below are the context's.
    let Some(ctx) = common::own_gpu() else { return };
    let mut state = EditState::new(&ctx, 2, 4).unwrap();
    let mut twin = HistoryTwin::new(2, 4).unwrap();
    let good = RowSpec {
        prompt: vec![1, 2],
        bias: vec![(3, 1.0)],
        ..Default::default()
    };
    state.set_row(1, 10, &good.history()).unwrap();
    twin.set_row(1, 10, &good.history()).unwrap();
    let before = ctx.sync_counts();
    let cases = [
        (
            RowSpec {
                prompt: vec![3, 10],
                ..Default::default()
            },
            "prompt",
        ),
        (
            RowSpec {
                output: vec![11],
                ..Default::default()
            },
            "output",
        ),
        (
            RowSpec {
                bias: vec![(10, 1.0)],
                ..Default::default()
            },
            "bias",
        ),
        (
            RowSpec {
                stop: vec![u32::MAX],
                min_tokens: 1,
                ..Default::default()
            },
            "stop",
        ),
    ];
    for (spec, what) in cases {
        for err in [
            state.set_row(1, 10, &spec.history()).unwrap_err(),
            twin.set_row(1, 10, &spec.history()).unwrap_err(),
        ] {
            assert!(
                matches!(err, Error::TokenOutOfRange { row: 1, what: w, vocab: 10, .. } if w == what),
                "{what}: {err:?}"
            );
        }
    }
    let nan = RowSpec {
        bias: vec![(2, 1.0), (4, f32::NAN)],
        ..Default::default()
    };
    for err in [
        state.set_row(1, 10, &nan.history()).unwrap_err(),
        twin.set_row(1, 10, &nan.history()).unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::InvalidBias { row: 1, token: 4 }),
            "{err:?}"
        );
    }
    // Five distinct tokens (the stop token counts once min_tokens > 0).
    let full = RowSpec {
        prompt: vec![0, 1, 1, 2],
        output: vec![3, 3],
        stop: vec![4],
        min_tokens: 1,
        ..Default::default()
    };
    for err in [
        state.set_row(1, 10, &full.history()).unwrap_err(),
        twin.set_row(1, 10, &full.history()).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::HistoryFull {
                    row: 1,
                    capacity: 4,
                    needed: 5
                }
            ),
            "{err:?}"
        );
    }
    // Without min_tokens the stop token needs no slot: four fit.
    let fits = RowSpec {
        min_tokens: 0,
        ..full.clone()
    };
    HistoryTwin::new(2, 4)
        .unwrap()
        .set_row(0, 10, &fits.history())
        .unwrap();
    for err in [
        state.set_row(2, 10, &good.history()).unwrap_err(),
        twin.set_row(2, 10, &good.history()).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::BatchCapacity {
                    capacity: 2,
                    rows: 3
                }
            ),
            "{err:?}"
        );
    }
    assert!(matches!(
        state.set_row(0, 0, &RowHistory::default()).unwrap_err(),
        Error::EmptyVocab
    ));
    for (params, name) in [
        (
            SamplingParams::new(1.0).penalties(0.0, 0.0, 0.0),
            "repetition_penalty",
        ),
        (
            SamplingParams::new(1.0).penalties(f32::NAN, 0.0, 0.0),
            "repetition_penalty",
        ),
        (
            SamplingParams::new(1.0).penalties(1.0, 2.5, 0.0),
            "presence_penalty",
        ),
        (
            SamplingParams::new(1.0).penalties(1.0, 0.0, -2.01),
            "frequency_penalty",
        ),
    ] {
        let all = [SamplingParams::new(1.0), params];
        for err in [
            state.set_penalties(&all).unwrap_err(),
            twin.set_penalties(&all).unwrap_err(),
        ] {
            assert!(
                matches!(err, Error::InvalidPenalty { row: 1, name: n, .. } if n == name),
                "{err:?}"
            );
        }
    }
    assert!(matches!(
        state
            .set_penalties(&[SamplingParams::new(1.0); 3])
            .unwrap_err(),
        Error::BatchCapacity {
            capacity: 2,
            rows: 3
        }
    ));
    assert!(EditState::new(&ctx, 1, 0).is_err());
    assert!(HistoryTwin::new(1, 0).is_err());
    // Nothing was submitted, and the refused row kept its history.
    assert_eq!(ctx.sync_counts() - before, Default::default());
    let tables = state.read_tables().unwrap();
    assert_eq!(&tables[1].table, twin.table(1).unwrap());
    assert_eq!(tables[1].table.entries.len(), 3);
}

/// The host refuses a step after which a penalised row could hold more
/// distinct tokens than the capacity: its bound is the distinct tokens set
/// plus the steps noted since, at most the vocabulary; unpenalised rows
/// never fill.
#[test]
fn steps_that_could_overflow_the_history_are_refused() {
    let Some(ctx) = gpu() else { return };
    let mut state = EditState::new(&ctx, 3, 4).unwrap();
    let spec = RowSpec {
        prompt: vec![0, 1],
        ..Default::default()
    };
    // Row 0: vocab 3, penalised (the vocabulary bounds it). Row 1: not
    // penalised. Row 2: vocab 100, penalised.
    state.set_row(0, 3, &spec.history()).unwrap();
    state.set_row(1, 100, &spec.history()).unwrap();
    state.set_row(2, 100, &spec.history()).unwrap();
    let on = SamplingParams::new(1.0).penalties(1.2, 0.0, 0.0);
    let off = SamplingParams::new(1.0);
    state.set_penalties(&[on, off, on]).unwrap();
    for _ in 0..2 {
        state.check_step(3).unwrap();
        state.note_step(3);
    }
    // Row 2 may hold 4 tokens now: one more step could need 5.
    assert!(matches!(
        state.check_step(3).unwrap_err(),
        Error::HistoryFull {
            row: 2,
            capacity: 4,
            needed: 5
        }
    ));
    // Steps over rows 0 and 1 only never fill them.
    for _ in 0..10 {
        state.check_step(2).unwrap();
        state.note_step(2);
    }
    // A cleared row starts empty (and unpenalised until penalties come).
    state.clear_row(2);
    state.check_step(3).unwrap();
    state.set_penalties(&[on, off, on]).unwrap();
    for _ in 0..4 {
        state.check_step(3).unwrap();
        state.note_step(3);
    }
    assert!(matches!(
        state.check_step(3).unwrap_err(),
        Error::HistoryFull {
            row: 2,
            capacity: 4,
            needed: 5
        }
    ));
    assert!(matches!(
        state.check_step(4).unwrap_err(),
        Error::BatchCapacity {
            capacity: 3,
            rows: 4
        }
    ));
}

/// `is_active` is false until some row has a bias, a stop token under
/// min_tokens or a penalty; prompt and output tokens alone change nothing.
#[test]
fn activity_follows_what_rows_need() {
    let Some(ctx) = gpu() else { return };
    let mut state = EditState::new(&ctx, 2, 8).unwrap();
    assert!(!state.is_active());
    let history = RowSpec {
        prompt: vec![1, 2],
        output: vec![3],
        stop: vec![4],
        min_tokens: 0,
        ..Default::default()
    };
    state.set_row(0, 10, &history.history()).unwrap();
    state.set_penalties(&[SamplingParams::new(1.0)]).unwrap();
    assert!(!state.is_active());
    let stop = RowSpec {
        min_tokens: 2,
        ..history.clone()
    };
    state.set_row(1, 10, &stop.history()).unwrap();
    assert!(state.is_active());
    state.clear_row(1);
    assert!(!state.is_active());
    let bias = RowSpec {
        bias: vec![(5, -1.0)],
        ..Default::default()
    };
    state.set_row(1, 10, &bias.history()).unwrap();
    assert!(state.is_active());
    state.clear_row(1);
    let zero_bias = RowSpec {
        bias: vec![(5, -0.0), (6, 1e-40)],
        ..Default::default()
    };
    state.set_row(1, 10, &zero_bias.history()).unwrap();
    assert!(!state.is_active());
    state
        .set_penalties(&[SamplingParams::new(1.0).penalties(1.0, 0.0, 0.5)])
        .unwrap();
    assert!(state.is_active());
    state.set_penalties(&[]).unwrap();
    assert!(!state.is_active());
}
