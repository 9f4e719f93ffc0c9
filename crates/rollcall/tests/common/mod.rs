//! Shared test helpers: the GPU context (fail, never skip, when no adapter is
//! found unless ROLLCALL_ALLOW_NO_GPU=1), and seeded random inputs.
#![allow(dead_code)]

// Route tests force routes through the `internals` feature. `cargo test
// --workspace` enables it (the command crate depends on it); alone, pass
// `--features internals`.
#[cfg(not(feature = "internals"))]
compile_error!("rollcall's tests need the `internals` feature: run `cargo test --workspace` or `cargo test -p rollcall --features internals`");

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "gpu.rs"]
mod gpu_context;
#[allow(unused_imports)]
pub use gpu_context::{gpu, own_gpu, ALLOW_NO_GPU};

/// One sampler per way of laying rows over dispatches (first pass split by
/// tile, first pass per row, first pass fused into the draw): their results
/// must agree bit for bit.
pub fn every_route(
    ctx: &rollcall::GpuContext,
) -> Vec<(rollcall::internals::SplitRows, rollcall::Sampler)> {
    use rollcall::internals::SplitRows;
    // The CPU adapter's routes and the GPU's (which draw after a separate
    // first pass with the 256-invocation kernel, and gather, scan and sort
    // with the whole workgroup), forced either way.
    [
        (SplitRows::Always, true),
        (SplitRows::Never, true),
        (SplitRows::Fused, true),
        (SplitRows::Always, false),
        (SplitRows::Never, false),
        (SplitRows::Fused, false),
    ]
    .into_iter()
    .map(|(mode, cpu)| {
        (
            mode,
            rollcall::Sampler::new(ctx)
                .unwrap()
                .with_split_rows(mode)
                .with_cpu_routes(cpu),
        )
    })
    .collect()
}

/// Whether a row is drawn without top-k, top-p or min-p at `vocab` (after a
/// separate first pass such rows, in a batch of only such rows, are drawn by
/// the small finishing kernel): the library's own rule.
pub fn is_unfiltered(p: &rollcall::SamplingParams, vocab: u32) -> bool {
    !rollcall::internals::is_filtered(p, vocab).expect("valid sampling parameters")
}

/// Rows `rows` (in that order) of a row-major matrix `vocab` wide.
pub fn pick_rows<T: Copy>(values: &[T], vocab: usize, rows: &[usize]) -> Vec<T> {
    rows.iter()
        .flat_map(|&r| values[r * vocab..(r + 1) * vocab].iter().copied())
        .collect()
}

/// Token, kept count, status and log-probability bits of every row of `got`
/// equal `want`'s.
pub fn assert_same_bits(
    want: &[rollcall::SampleResult],
    got: &[rollcall::SampleResult],
    context: &str,
) {
    assert_eq!(want.len(), got.len(), "{context}");
    for (r, (a, b)) in want.iter().zip(got).enumerate() {
        assert_eq!(
            (a.token, a.kept, a.status, a.logprob.to_bits()),
            (b.token, b.kept, b.status, b.logprob.to_bits()),
            "{context} row {r}: {a:?} vs {b:?}"
        );
    }
}

/// How close a twin decision may come to a flip before the GPU may decide
/// otherwise (exp and log differ between adapters and the host by an ulp).
pub const NEAR_TIE: f32 = 1e-4;

/// Compares a GPU row with the twin's trace: status and (away from a top-p
/// near tie) kept count equal; the same token with the log-probability
/// within 2e-4 relative, or another token only at a near tie. Returns
/// whether the tokens differed.
pub fn check_against_twin(
    gpu: &rollcall::SampleResult,
    trace: &rollcall::sampling::cpu::RowTrace,
    context: &str,
) -> bool {
    let cpu = &trace.result;
    assert_eq!(gpu.status, cpu.status, "{context}: status");
    if gpu.status == rollcall::RowStatus::NoValidToken {
        assert_eq!(
            (gpu.token, gpu.logprob, gpu.kept),
            (rollcall::NO_TOKEN, f32::NEG_INFINITY, 0),
            "{context}"
        );
        return false;
    }
    if trace.top_p_margin >= NEAR_TIE {
        assert_eq!(gpu.kept, cpu.kept, "{context}: kept (trace {trace:?})");
    }
    if gpu.token == cpu.token {
        let tol = 2e-4 * cpu.logprob.abs().max(1.0);
        assert!(
            gpu.logprob.to_bits() == cpu.logprob.to_bits()
                || (gpu.logprob - cpu.logprob).abs() <= tol,
            "{context}: logprob gpu {} twin {}",
            gpu.logprob,
            cpu.logprob
        );
        false
    } else {
        assert!(
            trace.is_near_tie(NEAR_TIE),
            "{context}: gpu token {} twin {} and no near tie ({trace:?})",
            gpu.token,
            cpu.token
        );
        true
    }
}

/// A GPU top log-probability list against the twin's: the same tokens in
/// the same order, log-probabilities within 2e-4 relative (ties in value
/// may swap only where the twin's values are within that tolerance).
pub fn check_top_logprobs(
    gpu: &[rollcall::sampling::TopLogprob],
    twin: &[rollcall::sampling::TopLogprob],
    context: &str,
) {
    assert_eq!(gpu.len(), twin.len(), "{context}: top list length");
    for (k, (g, t)) in gpu.iter().zip(twin).enumerate() {
        assert_eq!(
            g.token, t.token,
            "{context}: top entry {k}: gpu {gpu:?} twin {twin:?}"
        );
        let tol = 2e-4 * t.logprob.abs().max(1.0);
        assert!(
            g.logprob.to_bits() == t.logprob.to_bits() || (g.logprob - t.logprob).abs() <= tol,
            "{context}: top entry {k}: logprob gpu {} twin {}",
            g.logprob,
            t.logprob
        );
    }
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Logits shaped like a model's: a few dozen tokens hold most of the mass over
/// a Gaussian body.
pub fn model_like_logits(rng: &mut ChaCha8Rng, vocab: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..vocab).map(|_| rng.random_range(-4.0f32..2.0)).collect();
    let head = vocab.min(40);
    for _ in 0..head {
        let i = rng.random_range(0..vocab);
        v[i] = rng.random_range(4.0f32..12.0);
    }
    v
}

/// An independent statement of the sampling contract in f64, written from the
/// contract's text (sort, cumulative sums), not from the kernels: the kept set
/// and the probability of each token. `None` for rows with no valid token.
pub fn reference_distribution(row: &[f32], p: &rollcall::SamplingParams) -> Option<Vec<f64>> {
    let inv_t = if p.is_greedy() {
        1.0f32
    } else {
        1.0 / p.temperature
    };
    let z: Vec<f64> = row
        .iter()
        .map(|&l| {
            if l.is_nan() {
                f64::NEG_INFINITY
            } else if l.is_infinite() {
                f64::from(l)
            } else {
                f64::from(l * inv_t)
            }
        })
        .collect();
    let n = z.len();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return None;
    }
    if max == f64::INFINITY {
        let c = z.iter().filter(|&&v| v == f64::INFINITY).count() as f64;
        return Some(
            z.iter()
                .map(|&v| if v == f64::INFINITY { 1.0 / c } else { 0.0 })
                .collect(),
        );
    }
    if p.is_greedy() {
        let best = (0..n).find(|&i| z[i] == max).unwrap();
        return Some((0..n).map(|i| if i == best { 1.0 } else { 0.0 }).collect());
    }
    let mut keep = vec![true; n];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap());
    if p.top_k != 0 && (p.top_k as usize) < n {
        let kth = z[order[p.top_k as usize - 1]];
        for i in 0..n {
            keep[i] = z[i] >= kth;
        }
    }
    if p.top_p < 1.0 {
        let mass: Vec<f64> = (0..n)
            .map(|i| if keep[i] { (z[i] - max).exp() } else { 0.0 })
            .collect();
        let total: f64 = mass.iter().sum();
        let target = f64::from(p.top_p) * total;
        let mut cum = 0.0;
        let mut cut = max;
        let mut j = 0;
        while j < n {
            // All tokens tied at this value enter together.
            let v = z[order[j]];
            while j < n && z[order[j]] == v {
                cum += mass[order[j]];
                j += 1;
            }
            cut = v;
            if cum >= target {
                break;
            }
        }
        for i in 0..n {
            keep[i] = keep[i] && z[i] >= cut;
        }
    }
    if p.min_p > 0.0 {
        for i in 0..n {
            keep[i] = keep[i] && (z[i] - max).exp() >= f64::from(p.min_p);
        }
    }
    if p.top_n_sigma > 0.0 {
        // The population standard deviation of the finite scaled logits.
        let finite: Vec<f64> = z.iter().copied().filter(|v| v.is_finite()).collect();
        let count = finite.len() as f64;
        let mean = finite.iter().sum::<f64>() / count;
        let sd = (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count).sqrt();
        let floor = max - f64::from(p.top_n_sigma) * sd;
        for i in 0..n {
            keep[i] = keep[i] && z[i] >= floor;
        }
    }
    let w: Vec<f64> = (0..n)
        .map(|i| {
            if keep[i] && z[i].is_finite() {
                (z[i] - max).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = w.iter().sum();
    Some(w.iter().map(|x| x / total).collect())
}

/// The engine path on one batch: `logits` (raw bytes) placed `offset` bytes
/// into a buffer (the bytes before them set to `fill`, the end padded to a
/// word), sampled by `sampler` into a fresh batch and read back: each row's
/// token and its four result words (logprob bits, status, kept, padding).
#[allow(clippy::too_many_arguments)]
pub fn sample_engine(
    ctx: &rollcall::GpuContext,
    sampler: &rollcall::Sampler,
    offset: u64,
    fill: u8,
    logits: &[u8],
    vocab: u32,
    dtype: rollcall::LogitsDtype,
    params: &[rollcall::SamplingParams],
) -> (Vec<u32>, Vec<[u32; 4]>) {
    use wgpu::util::DeviceExt;
    let rows = params.len();
    let mut bytes = vec![fill; offset as usize];
    bytes.extend_from_slice(logits);
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let buffer = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("engine logits"),
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE,
        });
    let mut batch = rollcall::SampleBatch::new(ctx, rows as u32).unwrap();
    batch.set_params(params).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let binding = rollcall::LogitsBinding {
        buffer: &buffer,
        offset,
        rows: rows as u32,
        vocab,
        dtype,
    };
    sampler.encode(&mut encoder, &binding, &mut batch).unwrap();
    let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: rows as u64 * 20,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(batch.tokens(), 0, &readback, 0, rows as u64 * 4);
    encoder.copy_buffer_to_buffer(
        batch.results(),
        0,
        &readback,
        rows as u64 * 4,
        rows as u64 * 16,
    );
    ctx.submit(encoder.finish());
    let out = ctx.read_buffer(&readback, rows as u64 * 20).unwrap();
    (
        bytemuck::cast_slice(&out[..rows * 4]).to_vec(),
        bytemuck::cast_slice(&out[rows * 4..]).to_vec(),
    )
}

/// Logits of one dtype, owned.
pub enum Owned {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    Bf16(Vec<half::bf16>),
}

impl Owned {
    pub fn new(values: &[f32], dtype: rollcall::LogitsDtype) -> Self {
        match dtype {
            rollcall::LogitsDtype::F32 => Owned::F32(values.to_vec()),
            rollcall::LogitsDtype::F16 => {
                Owned::F16(values.iter().map(|&x| half::f16::from_f32(x)).collect())
            }
            rollcall::LogitsDtype::Bf16 => {
                Owned::Bf16(values.iter().map(|&x| half::bf16::from_f32(x)).collect())
            }
        }
    }
    /// Little-endian bytes of `dtype` elements.
    pub fn from_bytes(bytes: &[u8], dtype: rollcall::LogitsDtype) -> Self {
        match dtype {
            rollcall::LogitsDtype::F32 => Owned::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            rollcall::LogitsDtype::F16 => Owned::F16(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            rollcall::LogitsDtype::Bf16 => Owned::Bf16(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
        }
    }
    pub fn view(&self) -> rollcall::HostLogits<'_> {
        match self {
            Owned::F32(v) => rollcall::HostLogits::F32(v),
            Owned::F16(v) => rollcall::HostLogits::F16(v),
            Owned::Bf16(v) => rollcall::HostLogits::Bf16(v),
        }
    }
    pub fn bytes(&self) -> &[u8] {
        match self {
            Owned::F32(v) => bytemuck::cast_slice(v),
            Owned::F16(v) => bytemuck::cast_slice(v),
            Owned::Bf16(v) => bytemuck::cast_slice(v),
        }
    }
}

/// The GPD estimator in f64, refitted from scratch: `sorted_desc` a
/// segment's rewards best first, the top `k` above the threshold, `total`
/// rollouts. The reference for the tail kernels' and twin's GPD values.
pub fn gpd_reference(sorted_desc: &[f64], n: u32, k: usize, total: usize) -> f64 {
    let u = sorted_desc[k];
    let (mut a0, mut a1) = (0.0, 0.0);
    for (d, &r) in sorted_desc[..k].iter().enumerate() {
        a0 += r - u;
        a1 += (d as f64 + 0.35) / k as f64 * (r - u);
    }
    a0 /= k as f64;
    a1 /= k as f64;
    if a0 <= 0.0 {
        return u;
    }
    let denom = a0 - 2.0 * a1;
    let (mut xi, mut sigma) = (2.0 - a0 / denom, 2.0 * a0 * a1 / denom);
    if xi > 0.5 {
        xi = 0.5;
        sigma = a0 * 0.5;
    }
    let endpoint = u - sigma / xi;
    if xi <= -1.0 {
        return endpoint.min(sorted_desc[0]);
    }
    let nz = f64::from(n) * k as f64 / total as f64;
    let value = if xi.abs() < 1e-9 {
        u + sigma * (nz.ln() + rollcall::tail::EULER_GAMMA)
    } else {
        u + sigma / xi * (nz.powf(xi) * statrs::function::gamma::gamma(1.0 - xi) - 1.0)
    };
    if xi < 0.0 {
        value.min(endpoint)
    } else {
        value
    }
}

/// Chi-square statistic and p-value of `counts` against `probs`, pooling every
/// token whose expected count is below 5 into one bin. Panics if a token with
/// zero probability was drawn.
pub fn chi_square(counts: &[u64], probs: &[f64], label: &str) -> (f64, f64, usize) {
    let n: u64 = counts.iter().sum();
    let mut stat = 0.0;
    let mut bins = 0;
    let (mut pooled_obs, mut pooled_exp) = (0.0, 0.0);
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(
                c, 0,
                "{label}: token {i} has probability 0 but was drawn {c} times"
            );
            continue;
        }
        let expected = p * n as f64;
        if expected < 5.0 {
            pooled_obs += c as f64;
            pooled_exp += expected;
        } else {
            stat += (c as f64 - expected).powi(2) / expected;
            bins += 1;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp;
        bins += 1;
    }
    if bins < 2 {
        return (0.0, 1.0, bins);
    }
    use statrs::distribution::ContinuousCDF;
    let p = statrs::distribution::ChiSquared::new((bins - 1) as f64)
        .unwrap()
        .sf(stat);
    (stat, p, bins)
}

/// Every stopping rule, several with non-default settings: what the rule
/// tests run over.
pub fn all_rules() -> Vec<rollcall::voting::StopRule> {
    use rollcall::voting::StopRule;
    vec![
        StopRule::FixedBudget,
        StopRule::Beta {
            threshold: 0.95,
            prior: 1.0,
        },
        StopRule::Beta {
            threshold: 0.9,
            prior: 0.5,
        },
        StopRule::Dirichlet {
            threshold: 0.95,
            prior: 1.0,
            top: 5,
        },
        StopRule::Dirichlet {
            threshold: 0.9,
            prior: 0.5,
            top: 0,
        },
        StopRule::OptPo {
            p0: 0.6,
            hypotheses: 0,
            delta: 0.05,
            alpha: 0.05,
            beta: 0.05,
        },
        StopRule::OptPo {
            p0: 0.5,
            hypotheses: 8,
            delta: 0.01,
            alpha: 0.01,
            beta: 0.1,
        },
        StopRule::CONSOL_SPRT,
        StopRule::CONSOL_MSPRT,
        StopRule::ConsolMsprt {
            prior: 20.0,
            alpha: 0.05,
            beta: 0.2,
        },
        StopRule::EscWindow { window: 5 },
        StopRule::Predictive {
            prior: 0.3,
            delta: 0.01,
        },
        StopRule::Predictive {
            prior: 1.0,
            delta: 0.05,
        },
        StopRule::Majority { share: 0.8 },
        StopRule::Entropy {
            max_normalized: 0.75,
        },
    ]
}
