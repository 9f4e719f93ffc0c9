//! Best-of-N tail statistics over ragged segments of rollout rewards (one
//! segment per prompt): segmented sort, top-k and ranks, and the estimators
//! that turn a prompt's m rewards into its best-of-N value and per-rollout
//! advantages. Kernels in `shaders/tail.wgsl`; the CPU twin is [`cpu`].
//!
//! Segments are given as offsets: segment `s` holds the rewards
//! `offsets[s]..offsets[s + 1]`, in sampling order.
//!
//! Order: descending, ties broken by original index (the earlier rollout
//! ranks first), so exactly k rollouts are in a top-k. `-0.0` ties with
//! `+0.0`. NaN ranks with `-inf` in the order kernel; the host calls reject
//! NaN rewards ([`Error::NonFiniteReward`]) and the estimators need finite
//! rewards.
//!
//! | estimator | assumes | value | advantages |
//! | --- | --- | --- | --- |
//! | [`Estimator::ExpectedMax`] (PKPO) | m ≥ N, nothing else | unbiased E[max of N] | PKPO's per-rollout weights, equal rewards share credit |
//! | [`Estimator::PassAtK`] | 0/1 rewards | unbiased pass@k | pass@k training advantages |
//! | [`Estimator::Tea`] | Gaussian upper tail above the α quantile | μ̂ + c̃_N σ̂ of the top ⌈αm⌉ | TEA's, zero below the threshold |
//! | [`Estimator::PrefixTea`] | as TEA | prefix fits combined to cancel the 1/m bias | the same combination of the prefix fits' advantages |
//! | [`Estimator::Gpd`] | generalised Pareto tail (any shape ξ in [−1, ½]) | PWM fit, expected max of N | jackknife influence of each tail rollout |
//! | [`Estimator::Grpo`] | none (not best-of-N) | group mean | (r − mean) / (std + eps) |

pub mod cpu;

use crate::gpu::buffer::GrowBuffer;
use crate::gpu::shader::ShaderVariant;
use crate::{Error, GpuContext, Result};
use std::sync::Arc;

/// Longest segment (16 chunks of the chunked sort: each reward's rank takes
/// a binary search in every other chunk of its segment).
pub const MAX_SEGMENT: u32 = 16_384;
/// Widest top-k row.
pub const MAX_TOP_K: u32 = MAX_SEGMENT;
/// Most prefixes Prefix-TEA combines.
pub const MAX_PREFIXES: u32 = 8;
/// k of the order pass for a full sort.
pub(crate) const FULL_SORT: u32 = u32::MAX;
/// Index that pads the top-k rows of segments shorter than k.
pub const NO_INDEX: u32 = u32::MAX;

/// Euler–Mascheroni constant γ.
pub const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// A per-prompt estimator of the best-of-N value and its advantages.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Estimator {
    /// Exact when the segment has m ≥ n rollouts: the unbiased expected max
    /// of n draws, `Σ_{i≥n} C(i−1, n−1)/C(m, n) · R_(i)`, and PKPO's
    /// per-rollout weights (arXiv 2505.15201). Subtract your own baseline
    /// (for example the segment mean of the weights) before a policy update.
    ExpectedMax {
        /// N of best-of-N.
        n: u32,
    },
    /// pass@k from 0/1 rewards (`reward >= threshold` counts as correct):
    /// `1 − C(m−c, k)/C(m, k)`, and the pass@k-training advantages
    /// (correct: `(1 − ρ)/σ`; wrong: `(1 − ρ − C(m−c−1, k−1)/C(m−1, k−1))/σ`,
    /// `σ = √(ρ(1−ρ))`; all 0 when ρ is 0 or 1).
    PassAtK {
        /// k of pass@k.
        k: u32,
        /// Rewards at or above it are correct.
        threshold: f32,
    },
    /// TEA's Gaussian tail (arXiv 2605.10716):
    /// from the top `k = ⌈α m⌉` rewards (k ≥ 2), `V = μ̂ + c̃_N σ̂` and
    /// `A_i = (1/α)·1{R_i ≥ r̂}·[(R_i − r̂) + c̃_N((R_i − μ̂)² − (r̂ − μ̂)²)/(2σ̂)]`.
    /// σ̂ is the unbiased deviation of the top k; a flat tail (σ̂ ≤ 10⁻⁶|μ̂|)
    /// gives `V = μ̂` and only the linear term.
    Tea {
        /// N of best-of-N.
        n: u32,
        /// Tail level α in (0, 1).
        alpha: f32,
    },
    /// Prefix-TEA: TEA fitted on the prefixes `n_j = ⌈j m / J⌉` (sampling
    /// order, j = 1..J) whose tail holds at least two rollouts, combined with
    /// the minimum-norm weights w (`Σ w_j = 1`, `Σ w_j / n_j = 0`) that cancel
    /// the 1/m bias term (a generalised jackknife); advantages combine the
    /// same way. Fewer than two usable prefixes: plain TEA, status
    /// [`SegmentStatus::Fallback`].
    PrefixTea {
        /// N of best-of-N.
        n: u32,
        /// Tail level α in (0, 1).
        alpha: f32,
        /// Prefixes J, 2 to [`MAX_PREFIXES`].
        prefixes: u32,
    },
    /// Generalised Pareto tail fitted by probability-weighted moments
    /// (Hosking & Wallis 1987) to the exceedances of the top `k = ⌈α m⌉`
    /// over the (k+1)-th largest reward u (needs m ≥ k + 2), shape clamped to
    /// [−1, ½]; `V = u + (σ/ξ)[(Nζ)^ξ Γ(1−ξ) − 1]` with ζ = k/m (the ξ → 0
    /// limit `u + σ(ln Nζ + γ)`). Advantages: the jackknife influence
    /// `(m−1)(V₋below − V₋i)` of each rollout in the tail or at the threshold
    /// (rollouts below it all share the same influence: 0).
    Gpd {
        /// N of best-of-N.
        n: u32,
        /// Tail level α in (0, 1).
        alpha: f32,
    },
    /// GRPO's baseline for comparison: value = group mean, advantages
    /// `(r − mean)/(std + eps)` (unbiased std; flat groups get 0), the same
    /// as [`crate::voting::rewards::group_advantages`].
    Grpo {
        /// Added to the deviation.
        eps: f32,
    },
}

impl Estimator {
    /// Short name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Estimator::ExpectedMax { .. } => "exact",
            Estimator::PassAtK { .. } => "pass@k",
            Estimator::Tea { .. } => "tea",
            Estimator::PrefixTea { .. } => "prefix-tea",
            Estimator::Gpd { .. } => "gpd",
            Estimator::Grpo { .. } => "grpo",
        }
    }

    /// Checks the parameters.
    ///
    /// ```
    /// use rollcall::tail::Estimator;
    /// assert!(Estimator::Tea { n: 128, alpha: 0.25 }.validate().is_ok());
    /// assert!(Estimator::Tea { n: 128, alpha: 1.5 }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidEstimator(msg));
        let check_n = |n: u32| {
            if n == 0 {
                bad("N must be at least 1".into())
            } else {
                Ok(())
            }
        };
        let check_alpha = |alpha: f32| {
            if alpha > 0.0 && alpha < 1.0 {
                Ok(())
            } else {
                bad(format!("tail level alpha must be in (0, 1), got {alpha}"))
            }
        };
        match *self {
            Estimator::ExpectedMax { n } => check_n(n),
            Estimator::PassAtK { k, threshold } => {
                if k == 0 {
                    bad("k of pass@k must be at least 1".into())
                } else if !threshold.is_finite() {
                    bad(format!("pass@k threshold must be finite, got {threshold}"))
                } else {
                    Ok(())
                }
            }
            Estimator::Tea { n, alpha } | Estimator::Gpd { n, alpha } => {
                check_n(n)?;
                check_alpha(alpha)
            }
            Estimator::PrefixTea { n, alpha, prefixes } => {
                check_n(n)?;
                check_alpha(alpha)?;
                if (2..=MAX_PREFIXES).contains(&prefixes) {
                    Ok(())
                } else {
                    bad(format!(
                        "Prefix-TEA needs 2 to {MAX_PREFIXES} prefixes, got {prefixes}"
                    ))
                }
            }
            Estimator::Grpo { eps } => {
                if eps.is_finite() && eps >= 0.0 {
                    Ok(())
                } else {
                    bad(format!("eps must be finite and >= 0, got {eps}"))
                }
            }
        }
    }

    /// The kernel's uniform for `segments` segments (c̃_N computed here).
    pub(crate) fn gpu_params(&self, segments: u32, groups_x: u32) -> Result<EstimateParams> {
        self.validate()?;
        let mut p = EstimateParams {
            segments,
            groups_x,
            ..Default::default()
        };
        match *self {
            Estimator::ExpectedMax { n } => {
                p.kind = EST_EXPECTED_MAX;
                p.n = n;
            }
            Estimator::PassAtK { k, threshold } => {
                p.kind = EST_PASS_AT_K;
                p.n = k;
                p.threshold = threshold;
            }
            Estimator::Tea { n, alpha } | Estimator::PrefixTea { n, alpha, .. } => {
                p.kind = if matches!(self, Estimator::Tea { .. }) {
                    EST_TEA
                } else {
                    EST_PREFIX_TEA
                };
                p.n = n;
                p.alpha = alpha;
                p.c_tilde = GaussianTail::new(n, f64::from(alpha))?.c_tilde as f32;
                if let Estimator::PrefixTea { prefixes, .. } = *self {
                    p.prefixes = prefixes;
                }
            }
            Estimator::Gpd { n, alpha } => {
                p.kind = EST_GPD;
                p.n = n;
                p.alpha = alpha;
            }
            Estimator::Grpo { eps } => {
                p.kind = EST_GRPO;
                p.threshold = eps;
            }
        }
        Ok(p)
    }
}

/// The Gaussian tail's constants for best-of-N at tail level α:
/// `c_N = E[max of N standard normals]`, `z = Φ⁻¹(1 − α)`,
/// `λ = φ(z)/α`, `κ = √(1 + zλ − λ²)`, `c̃_N = (c_N − λ)/κ`.
///
/// ```
/// let g = rollcall::tail::GaussianTail::new(128, 0.25).unwrap();
/// assert!((g.c_n - 2.5946).abs() < 1e-3 && (g.c_tilde - 2.692).abs() < 1e-3);
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianTail {
    /// E[max of N standard normals].
    pub c_n: f64,
    /// Φ⁻¹(1 − α).
    pub z: f64,
    /// Tail mean of a standard normal above z: φ(z)/α.
    pub lambda: f64,
    /// Tail deviation of a standard normal above z.
    pub kappa: f64,
    /// (c_N − λ)/κ.
    pub c_tilde: f64,
}

impl GaussianTail {
    /// Computes the constants (no tables).
    pub fn new(n: u32, alpha: f64) -> Result<Self> {
        if n == 0 || !(alpha > 0.0 && alpha < 1.0) {
            return Err(Error::InvalidEstimator(format!(
                "Gaussian tail needs N >= 1 and alpha in (0, 1), got N = {n}, alpha = {alpha}"
            )));
        }
        let z = crate::math::special::normal_upper_quantile(alpha);
        let lambda = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt() / alpha;
        let kappa = (1.0 + z * lambda - lambda * lambda).sqrt();
        if !(kappa.is_finite() && kappa > 0.0) {
            return Err(Error::InvalidEstimator(format!(
                "alpha {alpha} is too small for the Gaussian tail's constants in f64"
            )));
        }
        let c_n = expected_max_std_normal(n);
        Ok(Self {
            c_n,
            z,
            lambda,
            kappa,
            c_tilde: (c_n - lambda) / kappa,
        })
    }
}

/// `E[max of n standard normals]` = ∫ x n φ(x) Φ(x)^(n−1) dx, by Simpson's
/// rule on [−12, 12] (step 10⁻³) with Φ^(n−1) taken in log space.
///
/// ```
/// let c = rollcall::tail::expected_max_std_normal(512);
/// assert!((c - 3.0444).abs() < 1e-3);
/// ```
pub fn expected_max_std_normal(n: u32) -> f64 {
    use libm::erfc;
    let n = f64::from(n.max(1));
    let sqrt2 = std::f64::consts::SQRT_2;
    let norm = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let f = |x: f64| {
        // ln Φ(x) without cancellation in either tail.
        let ln_cdf = if x < 0.0 {
            (0.5 * erfc(-x / sqrt2)).ln()
        } else {
            (-0.5 * erfc(x / sqrt2)).ln_1p()
        };
        x * n * norm * (-0.5 * x * x).exp() * ((n - 1.0) * ln_cdf).exp()
    };
    let (lo, hi, steps) = (-12.0f64, 12.0f64, 24_000usize);
    let h = (hi - lo) / steps as f64;
    let mut sum = f(lo) + f(hi);
    for i in 1..steps {
        sum += f(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0
}

/// Checks segment offsets against `len` rewards: monotone, starting at 0,
/// ending at `len`, no segment longer than [`MAX_SEGMENT`].
pub(crate) fn validate_offsets(offsets: &[u32], len: usize) -> Result<()> {
    let bad = |segment: usize, reason: String| Err(Error::InvalidSegment { segment, reason });
    if offsets.is_empty() {
        return bad(0, "offsets need at least one entry (0)".into());
    }
    if offsets[0] != 0 {
        return bad(0, format!("offsets must start at 0, got {}", offsets[0]));
    }
    for (s, w) in offsets.windows(2).enumerate() {
        if w[1] < w[0] {
            return bad(s, format!("offsets decrease: {} then {}", w[0], w[1]));
        }
        if w[1] - w[0] > MAX_SEGMENT {
            return bad(
                s,
                format!(
                    "{} rewards, more than the {MAX_SEGMENT} a segment may hold",
                    w[1] - w[0]
                ),
            );
        }
    }
    let last = *offsets.last().unwrap_or(&0) as usize;
    if last != len {
        return bad(
            offsets.len() - 1,
            format!("offsets end at {last} but there are {len} rewards"),
        );
    }
    Ok(())
}

fn reject_nan(rewards: &[f32], finite: bool) -> Result<()> {
    match rewards
        .iter()
        .position(|r| r.is_nan() || (finite && r.is_infinite()))
    {
        Some(index) => Err(Error::NonFiniteReward {
            index,
            value: rewards[index],
        }),
        None => Ok(()),
    }
}

/// A segmented sort: per segment, rewards in descending order with their
/// original (in-segment) index, and each reward's rank.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct Ordered {
    /// `ranks[i]`: position of reward `i` in its segment's descending order
    /// (0 = best).
    pub ranks: Vec<u32>,
    /// Rewards of each segment in descending order, at the segment's offsets.
    pub sorted_values: Vec<f32>,
    /// In-segment index of each sorted reward (its sampling position).
    pub sorted_index: Vec<u32>,
}

/// Top-k rows: `k` entries per segment, best first; segments shorter than k
/// are padded with `-inf` and [`NO_INDEX`].
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    /// Row width.
    pub k: u32,
    /// `segments × k` rewards.
    pub values: Vec<f32>,
    /// `segments × k` in-segment indices.
    pub indices: Vec<u32>,
    /// Rank of every reward (as in [`Ordered::ranks`]).
    pub ranks: Vec<u32>,
}

/// How a segment's estimate came out.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentStatus {
    /// A value and advantages.
    Ok,
    /// No rollouts: value NaN.
    Empty,
    /// Too few rollouts for the estimator (m < N for the exact estimator,
    /// m < k for pass@k, a tail of fewer than two, m < k + 2 for the GPD):
    /// value NaN, advantages 0.
    TooFew,
    /// The tail (or group) is flat: the value is its level, the advantages
    /// carry no spread term.
    Flat,
    /// Prefix-TEA had fewer than two usable prefixes and used plain TEA.
    Fallback,
}

impl SegmentStatus {
    pub(crate) fn from_code(code: u32) -> Self {
        match code {
            0 => SegmentStatus::Ok,
            1 => SegmentStatus::Empty,
            2 => SegmentStatus::TooFew,
            3 => SegmentStatus::Flat,
            _ => SegmentStatus::Fallback,
        }
    }

    /// The kernel's code (checked against the shader's `STATUS_*`).
    #[cfg(test)]
    pub(crate) fn code(self) -> u32 {
        match self {
            SegmentStatus::Ok => 0,
            SegmentStatus::Empty => 1,
            SegmentStatus::TooFew => 2,
            SegmentStatus::Flat => 3,
            SegmentStatus::Fallback => 4,
        }
    }
}

/// Per-segment values and per-rollout advantages (in the rewards' order).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq)]
pub struct Estimates {
    /// One value per segment (NaN when empty or too few).
    pub values: Vec<f32>,
    /// One status per segment.
    pub status: Vec<SegmentStatus>,
    /// One advantage per reward.
    pub advantages: Vec<f32>,
}

/// The estimate route (reached through `internals`, not the public API).
pub(crate) mod route {
    /// How the estimators run over the segments (feature `internals`: for tests
    /// and benchmarks; results never depend on it, bit for bit: both kernels
    /// take the segment shape for every float sum, scan and product).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub enum EstimateRoute {
        /// Chosen by adapter: on GPUs a workgroup per segment, on CPU adapters
        /// (where each workgroup barrier is a coroutine switch) an invocation
        /// per segment.
        #[default]
        Auto,
        /// An invocation per segment (64 a workgroup): the
        /// segment shape run serially.
        PerInvocation,
        /// A workgroup per segment: a lane a block of the segment shape.
        PerWorkgroup,
    }
}

/// The order kernels' uniform (`OrderParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct OrderParams {
    pub(crate) segments: u32,
    pub(crate) k: u32,
    pub(crate) groups_x: u32,
    pub(crate) rollouts: u32,
    pub(crate) element_groups_x: u32,
    pub(crate) large_segments: u32,
    pub(crate) pad: [u32; 2],
}

/// Invocations per workgroup of the order kernels (`ORDER_THREADS` in the
/// shader): `rank_elements`, `merge_ranks` and `pad_top_k` take one item per
/// invocation.
pub(crate) const ORDER_THREADS: u32 = 256;
/// Invocations per workgroup of `estimate` (`ESTIMATE_THREADS` in the
/// shader), one per segment.
pub(crate) const ESTIMATE_THREADS: u32 = 64;

/// Segments up to this long are ranked by one invocation per reward (m
/// comparisons each); longer ones are sorted in chunks of 1024 in workgroup
/// memory and merged by binary search.
pub(crate) const SMALL_SEGMENT: u32 = 1024;
/// Rewards one workgroup sorts in the large-segment path.
pub(crate) const SORT_CHUNK: u32 = 1024;

/// The estimator kernel's uniform (`EstimateParams` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct EstimateParams {
    pub(crate) segments: u32,
    pub(crate) kind: u32,
    pub(crate) n: u32,
    pub(crate) prefixes: u32,
    pub(crate) alpha: f32,
    pub(crate) c_tilde: f32,
    pub(crate) threshold: f32,
    pub(crate) groups_x: u32,
}

/// `EstimateParams::kind` of each estimator (`EST_*` in the shader).
pub(crate) const EST_EXPECTED_MAX: u32 = 0;
pub(crate) const EST_PASS_AT_K: u32 = 1;
pub(crate) const EST_TEA: u32 = 2;
pub(crate) const EST_PREFIX_TEA: u32 = 3;
pub(crate) const EST_GPD: u32 = 4;
pub(crate) const EST_GRPO: u32 = 5;

/// The shader's entry points.
pub(crate) fn shader_variants() -> Result<Vec<ShaderVariant>> {
    [
        "rank_elements",
        "sort_chunks",
        "merge_ranks",
        "pad_top_k",
        "estimate",
        "estimate_wide",
    ]
    .into_iter()
    .map(|entry_point| {
        Ok(ShaderVariant {
            label: format!("tail/{entry_point}"),
            entry_point,
            source: crate::gpu::shader::compose(
                "tail.wgsl",
                &format!(
                    "const SMALL_SEGMENT: u32 = {SMALL_SEGMENT}u;\nconst SORT_CHUNK: u32 = {SORT_CHUNK}u;"
                ),
            )?,
        })
    })
    .collect()
}

/// The tail kernels have no variants.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TailKey;

impl crate::gpu::cache::PipelineKey for TailKey {
    type Built = Pipelines;
}

/// The order kernels share one explicit layout (bindings 0-8), so one bind
/// group serves all four; the estimator has its own (10-17).
struct Pipelines {
    order_layout: wgpu::BindGroupLayout,
    estimate_layout: wgpu::BindGroupLayout,
    rank_elements: wgpu::ComputePipeline,
    sort_chunks: wgpu::ComputePipeline,
    merge_ranks: wgpu::ComputePipeline,
    pad: wgpu::ComputePipeline,
    estimate: wgpu::ComputePipeline,
    /// `estimate_wide`: a workgroup per segment, same bindings.
    estimate_wide: wgpu::ComputePipeline,
}

/// Device buffers, each grown (never shrunk) to the largest call so far,
/// and the two bind groups over them, rebuilt whenever a buffer is replaced.
struct Buffers {
    rewards: GrowBuffer,
    offsets: GrowBuffer,
    ranks: GrowBuffer,
    sorted_values: GrowBuffer,
    sorted_index: GrowBuffer,
    values: GrowBuffer,
    status: GrowBuffer,
    advantages: GrowBuffer,
    chunk_list: GrowBuffer,
    chunk_keys: GrowBuffer,
    chunk_index: GrowBuffer,
    readback: GrowBuffer,
    order_bind: wgpu::BindGroup,
    estimate_bind: wgpu::BindGroup,
    /// A buffer was replaced (or a resize failed part-way) since the bind
    /// groups were built.
    stale: bool,
}

/// The tail-statistics kernels on one context: segmented sort, top-k, and
/// the estimators. Pipelines are built once per context; buffers grow to the
/// largest batch and are reused.
///
/// ```no_run
/// use rollcall::tail::{Estimator, TailStats};
/// let ctx = rollcall::GpuContext::new()?;
/// let mut tail = TailStats::new(&ctx)?;
/// let rewards = [0.1f32, 0.9, 0.4, 0.7, 0.2, 0.3];
/// let offsets = [0u32, 3, 6]; // two prompts, three rollouts each
/// let est = tail.estimate(&rewards, &offsets, Estimator::ExpectedMax { n: 2 })?;
/// println!("{:?} {:?}", est.values, est.advantages);
/// # Ok::<(), rollcall::Error>(())
/// ```
pub struct TailStats {
    ctx: GpuContext,
    pipelines: Arc<Pipelines>,
    order_params: wgpu::Buffer,
    estimate_params: wgpu::Buffer,
    buffers: Option<Buffers>,
    grid_width: u32,
    /// Whether the buffers hold an uploaded batch (finite rewards, full-sort
    /// parameters) that `encode_estimate` may use; `order` and `top_k`
    /// replace it.
    uploaded: bool,
    /// The order pass's parameters as last written.
    order_shape: OrderParams,
    estimate_route: route::EstimateRoute,
    /// The adapter is a CPU (lavapipe): an invocation a segment always.
    cpu_adapter: bool,
}

impl TailStats {
    /// Builds (or reuses) the pipelines on `ctx`.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let pipelines = ctx.pipelines(&TailKey, || {
            use crate::gpu::shader::{layout_and_pipelines, Binding};
            let variants = shader_variants()?;
            let device = &ctx.device;
            let (read, write) = (Binding::Read, Binding::ReadWrite);
            let (order_layout, order) = layout_and_pipelines(
                device,
                "rollcall tail order",
                &[
                    (0, Binding::Uniform(None)),
                    (1, read),
                    (2, read),
                    (3, write),
                    (4, write),
                    (5, write),
                    (6, read),
                    (7, write),
                    (8, write),
                ],
                &variants[..4],
            );
            let (estimate_layout, estimate) = layout_and_pipelines(
                device,
                "rollcall tail estimate",
                &[
                    (10, Binding::Uniform(None)),
                    (11, read),
                    (12, read),
                    (13, read),
                    (14, read),
                    (15, write),
                    (16, write),
                    (17, write),
                ],
                &variants[4..],
            );
            let [rank_elements, sort_chunks, merge_ranks, pad] = <[_; 4]>::try_from(order)
                .unwrap_or_else(|_| unreachable!("four order entry points"));
            let [estimate, estimate_wide] = <[_; 2]>::try_from(estimate)
                .unwrap_or_else(|_| unreachable!("two estimate entry points"));
            Ok(Pipelines {
                rank_elements,
                sort_chunks,
                merge_ranks,
                pad,
                estimate,
                estimate_wide,
                order_layout,
                estimate_layout,
            })
        })?;
        let uniform = |label, size: usize| {
            ctx.create_buffer(
                label,
                size as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            )
        };
        Ok(Self {
            ctx: ctx.clone(),
            pipelines,
            order_params: uniform(
                "rollcall tail order params",
                std::mem::size_of::<OrderParams>(),
            )?,
            estimate_params: uniform(
                "rollcall tail estimate params",
                std::mem::size_of::<EstimateParams>(),
            )?,
            buffers: None,
            uploaded: false,
            order_shape: OrderParams::default(),
            estimate_route: route::EstimateRoute::Auto,
            cpu_adapter: ctx.adapter_info().device_type == wgpu::DeviceType::Cpu,
            grid_width: ctx.limits().max_compute_workgroups_per_dimension.max(1),
        })
    }

    /// Caps the workgroups along x so that more segments use a 2-D grid (for
    /// tests and adapters with small limits; the grid still never exceeds
    /// the adapter's limit along y).
    /// For tests of the 2-D grid (feature `internals`).
    #[cfg(feature = "internals")]
    pub fn with_grid_width(mut self, width: u32) -> Self {
        self.grid_width = width.clamp(1, self.grid_width);
        self
    }

    /// Forces how the estimators run (same results either way).
    #[cfg(feature = "internals")]
    pub fn with_estimate_route(mut self, route: route::EstimateRoute) -> Self {
        self.estimate_route = route;
        self
    }

    /// Whether the estimators run with a workgroup per segment.
    fn estimates_wide(&self) -> bool {
        match self.estimate_route {
            route::EstimateRoute::PerInvocation => false,
            route::EstimateRoute::PerWorkgroup => true,
            route::EstimateRoute::Auto => !self.cpu_adapter,
        }
    }

    /// Workgroups along x for `groups` workgroups in all.
    fn width(&self, groups: u32) -> u32 {
        let max_dim = self
            .ctx
            .limits()
            .max_compute_workgroups_per_dimension
            .max(1);
        groups
            .clamp(1, self.grid_width)
            .max(groups.div_ceil(max_dim))
    }

    /// Segmented sort of `rewards` (NaN rejected; ±inf allowed).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let mut tail = rollcall::tail::TailStats::new(&ctx)?;
    /// let sorted = tail.order(&[1.0, 3.0, 3.0, 2.0], &[0, 4])?;
    /// assert_eq!(sorted.sorted_index, vec![1, 2, 3, 0]);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn order(&mut self, rewards: &[f32], offsets: &[u32]) -> Result<Ordered> {
        validate_offsets(offsets, rewards.len())?;
        reject_nan(rewards, false)?;
        let n = rewards.len() as u64;
        let ctx = self.ctx.clone();
        let (ranks, values, index) = ctx.scoped("tail order", || {
            self.run_order(rewards, offsets, FULL_SORT, n)
        })?;
        Ok(Ordered {
            ranks,
            sorted_values: values,
            sorted_index: index,
        })
    }

    /// The best `k` rewards of each segment (NaN rejected; ±inf allowed).
    ///
    /// ```no_run
    /// let ctx = rollcall::GpuContext::new()?;
    /// let mut tail = rollcall::tail::TailStats::new(&ctx)?;
    /// let top = tail.top_k(&[1.0, 3.0, 2.0, 5.0], &[0, 3, 4], 2)?;
    /// assert_eq!(top.indices, vec![1, 2, 0, rollcall::tail::NO_INDEX]);
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn top_k(&mut self, rewards: &[f32], offsets: &[u32], k: u32) -> Result<TopK> {
        validate_offsets(offsets, rewards.len())?;
        reject_nan(rewards, false)?;
        if k == 0 || k > MAX_TOP_K {
            return Err(Error::InvalidArgument(format!(
                "top-k needs 1 <= k <= {MAX_TOP_K}, got {k}"
            )));
        }
        let rows = (offsets.len() as u64 - 1) * u64::from(k);
        let ctx = self.ctx.clone();
        let (ranks, values, indices) =
            ctx.scoped("tail top-k", || self.run_order(rewards, offsets, k, rows))?;
        Ok(TopK {
            k,
            values,
            indices,
            ranks,
        })
    }

    /// Each segment's value and every rollout's advantage under `estimator`
    /// (rewards must be finite). One submit and one readback.
    pub fn estimate(
        &mut self,
        rewards: &[f32],
        offsets: &[u32],
        estimator: Estimator,
    ) -> Result<Estimates> {
        // Every check before any GPU work (the upload checks the rest).
        estimator.validate()?;
        let ctx = self.ctx.clone();
        ctx.scoped("tail estimate", || {
            self.upload(rewards, offsets)?;
            self.run_estimate(estimator)
        })
    }

    /// Estimates over the uploaded batch and reads the results back.
    fn run_estimate(&self, estimator: Estimator) -> Result<Estimates> {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        self.encode_estimate(&mut encoder, estimator)?;
        let (segments, n) = (
            u64::from(self.order_shape.segments),
            u64::from(self.order_shape.rollouts),
        );
        let b = self
            .buffers
            .as_ref()
            .ok_or(Error::NothingUploaded("TailStats::estimate"))?;
        let (sv, sn) = (segments * 4, n * 4);
        encoder.copy_buffer_to_buffer(b.values.buffer(), 0, b.readback.buffer(), 0, sv);
        encoder.copy_buffer_to_buffer(b.status.buffer(), 0, b.readback.buffer(), sv, sv);
        encoder.copy_buffer_to_buffer(b.advantages.buffer(), 0, b.readback.buffer(), 2 * sv, sn);
        self.ctx.submit(encoder.finish());
        let total = 2 * sv + sn;
        if total == 0 {
            return Ok(Estimates {
                values: vec![],
                status: vec![],
                advantages: vec![],
            });
        }
        let data = self.ctx.read_buffer(b.readback.buffer(), total)?;
        let words: &[u32] = bytemuck::cast_slice(&data);
        let s = segments as usize;
        Ok(Estimates {
            values: words[..s].iter().map(|&w| f32::from_bits(w)).collect(),
            status: words[s..2 * s]
                .iter()
                .map(|&c| SegmentStatus::from_code(c))
                .collect(),
            advantages: words[2 * s..].iter().map(|&w| f32::from_bits(w)).collect(),
        })
    }

    /// Uploads a batch of finite rewards for [`TailStats::encode_estimate`]
    /// (checked here, before any GPU work).
    pub fn upload(&mut self, rewards: &[f32], offsets: &[u32]) -> Result<()> {
        validate_offsets(offsets, rewards.len())?;
        reject_nan(rewards, true)?;
        // A failed upload leaves no batch to estimate.
        self.uploaded = false;
        self.prepare(rewards, offsets, rewards.len() as u64, FULL_SORT)?;
        self.uploaded = true;
        Ok(())
    }

    /// Records the sort and `estimator` over the batch of the last
    /// [`TailStats::upload`] into `encoder` (an error if `order` or `top_k`
    /// ran since: they replace the batch); results stay on the device ([`TailStats::values_buffer`],
    /// [`TailStats::advantages_buffer`]). The estimator's parameters are
    /// written with `queue.write_buffer`: record one estimate per submit.
    ///
    /// ```no_run
    /// use rollcall::tail::{Estimator, TailStats};
    /// let ctx = rollcall::GpuContext::new()?;
    /// let mut tail = TailStats::new(&ctx)?;
    /// tail.upload(&[0.2, 0.9, 0.4, 0.7], &[0, 4])?;
    /// let mut encoder = ctx.device.create_command_encoder(&Default::default());
    /// tail.encode_estimate(&mut encoder, Estimator::Tea { n: 64, alpha: 0.5 })?;
    /// ctx.submit(encoder.finish()); // advantages stay in tail.advantages_buffer()
    /// # Ok::<(), rollcall::Error>(())
    /// ```
    pub fn encode_estimate(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        estimator: Estimator,
    ) -> Result<()> {
        self.encode_passes(encoder, estimator, true)
    }

    /// Records `estimator` alone over the batch of the last
    /// [`TailStats::upload`], whose order an earlier estimate's submit must
    /// already have written (for timing the estimate kernels apart from the
    /// sort).
    #[cfg(feature = "internals")]
    pub fn encode_estimate_without_order(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        estimator: Estimator,
    ) -> Result<()> {
        self.encode_passes(encoder, estimator, false)
    }

    fn encode_passes(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        estimator: Estimator,
        with_order: bool,
    ) -> Result<()> {
        let b = match (&self.buffers, self.uploaded) {
            (Some(b), true) => b,
            _ => {
                return Err(Error::NothingUploaded(
                    "TailStats::encode_estimate (order and top_k replace an upload)",
                ))
            }
        };
        let segments = self.order_shape.segments;
        let wide = self.estimates_wide();
        let groups = if wide {
            segments
        } else {
            segments.div_ceil(ESTIMATE_THREADS)
        };
        let groups_x = self.width(groups);
        let params = estimator.gpu_params(segments, groups_x)?;
        self.ctx
            .queue
            .write_buffer(&self.estimate_params, 0, bytemuck::bytes_of(&params));
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if with_order {
            self.record_order(&mut pass);
        }
        if groups > 0 {
            pass.set_pipeline(if wide {
                &self.pipelines.estimate_wide
            } else {
                &self.pipelines.estimate
            });
            pass.set_bind_group(0, &b.estimate_bind, &[]);
            pass.dispatch_workgroups(groups_x, groups.div_ceil(groups_x), 1);
        }
        Ok(())
    }

    /// One f32 value per segment of the last estimate.
    pub fn values_buffer(&self) -> Option<&wgpu::Buffer> {
        self.buffers.as_ref().map(|b| b.values.buffer())
    }

    /// One f32 advantage per reward of the last estimate.
    pub fn advantages_buffer(&self) -> Option<&wgpu::Buffer> {
        self.buffers.as_ref().map(|b| b.advantages.buffer())
    }

    fn record_order(&self, pass: &mut wgpu::ComputePass<'_>) {
        let Some(b) = self.buffers.as_ref() else {
            return;
        };
        let p = &self.order_shape;
        let grid = |groups: u32| {
            let x = self.width(groups);
            (x, groups.div_ceil(x))
        };
        // Both per-item kernels index with `element_groups_x` workgroups along x.
        let items = |count: u32| {
            let x = p.element_groups_x.max(1);
            (x, count.div_ceil(ORDER_THREADS).div_ceil(x))
        };
        if p.rollouts > 0 {
            let (x, y) = items(p.rollouts);
            pass.set_pipeline(&self.pipelines.rank_elements);
            pass.set_bind_group(0, &b.order_bind, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        if p.large_segments > 0 {
            let (x, y) = grid(p.large_segments);
            pass.set_pipeline(&self.pipelines.sort_chunks);
            pass.set_bind_group(0, &b.order_bind, &[]);
            pass.dispatch_workgroups(x, y, 1);
            let (x, y) = items(p.rollouts);
            pass.set_pipeline(&self.pipelines.merge_ranks);
            pass.set_bind_group(0, &b.order_bind, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        if p.k != FULL_SORT && p.segments > 0 {
            let (x, y) = items(p.segments * p.k);
            pass.set_pipeline(&self.pipelines.pad);
            pass.set_bind_group(0, &b.order_bind, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// Uploads rewards and offsets, sizes the buffers, writes the order
    /// pass's parameters.
    fn prepare(&mut self, rewards: &[f32], offsets: &[u32], out_rows: u64, k: u32) -> Result<()> {
        // Validated offsets: at least one, the last one the rewards' length.
        let segments = offsets.len() as u64 - 1;
        let n = rewards.len() as u64;
        let limit = self
            .ctx
            .whole_binding_limit(wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
        for (what, bytes) in [
            ("tail rewards", n * 4),
            ("tail top-k rows", out_rows * 4),
            ("tail segment offsets", (segments + 1) * 4),
        ] {
            if bytes > limit {
                return Err(Error::TooLarge { what, bytes, limit });
            }
        }
        // The kernels count segments and rows with u32.
        for (what, count) in [("segments", segments), ("top-k rows", out_rows)] {
            if count > u64::from(u32::MAX) {
                return Err(Error::InvalidArgument(format!(
                    "{count} {what}: more than u32::MAX"
                )));
            }
        }
        let rollouts = n.max(out_rows).max(1);
        self.size_buffers(rollouts, segments.max(1))?;
        let Some(b) = self.buffers.as_ref() else {
            return Err(Error::NothingUploaded("tail batch"));
        };
        let queue = &self.ctx.queue;
        if n > 0 {
            queue.write_buffer(b.rewards.buffer(), 0, bytemuck::cast_slice(rewards));
        }
        queue.write_buffer(b.offsets.buffer(), 0, bytemuck::cast_slice(offsets));
        // (segment, chunk) of every chunk of the segments sorted in chunks.
        let large: Vec<[u32; 2]> = offsets
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[1] - w[0] > SMALL_SEGMENT)
            .flat_map(|(s, w)| (0..(w[1] - w[0]).div_ceil(SORT_CHUNK)).map(move |c| [s as u32, c]))
            .collect();
        if !large.is_empty() {
            queue.write_buffer(b.chunk_list.buffer(), 0, bytemuck::cast_slice(&large));
        }
        let width = |groups: u32| self.width(groups);
        let element_groups = (n as u32).div_ceil(ORDER_THREADS).max(if k == FULL_SORT {
            0
        } else {
            (out_rows as u32).div_ceil(ORDER_THREADS)
        });
        let params = OrderParams {
            segments: segments as u32,
            k,
            groups_x: width(large.len() as u32),
            rollouts: n as u32,
            element_groups_x: width(element_groups),
            large_segments: large.len() as u32,
            pad: [0; 2],
        };
        queue.write_buffer(&self.order_params, 0, bytemuck::bytes_of(&params));
        self.order_shape = params;
        Ok(())
    }

    fn run_order(
        &mut self,
        rewards: &[f32],
        offsets: &[u32],
        k: u32,
        out_rows: u64,
    ) -> Result<(Vec<u32>, Vec<f32>, Vec<u32>)> {
        // Whatever happens, the uploaded batch is replaced.
        self.uploaded = false;
        self.prepare(rewards, offsets, out_rows, k)?;
        let Some(b) = self.buffers.as_ref() else {
            return Err(Error::NothingUploaded("tail order"));
        };
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.record_order(&mut pass);
        }
        let n = rewards.len() as u64 * 4;
        let rows = out_rows * 4;
        encoder.copy_buffer_to_buffer(b.ranks.buffer(), 0, b.readback.buffer(), 0, n);
        encoder.copy_buffer_to_buffer(b.sorted_values.buffer(), 0, b.readback.buffer(), n, rows);
        encoder.copy_buffer_to_buffer(
            b.sorted_index.buffer(),
            0,
            b.readback.buffer(),
            n + rows,
            rows,
        );
        self.ctx.submit(encoder.finish());
        if n + 2 * rows == 0 {
            return Ok((vec![], vec![], vec![]));
        }
        let data = self.ctx.read_buffer(b.readback.buffer(), n + 2 * rows)?;
        let words: &[u32] = bytemuck::cast_slice(&data);
        let (n, rows) = ((n / 4) as usize, (rows / 4) as usize);
        Ok((
            words[..n].to_vec(),
            words[n..n + rows]
                .iter()
                .map(|&w| f32::from_bits(w))
                .collect(),
            words[n + rows..].to_vec(),
        ))
    }

    /// Grows every buffer to hold `rollouts` rewards over `segments`
    /// segments (each to the next power of two, within its binding limit),
    /// then rebuilds the bind groups if any buffer was replaced.
    fn size_buffers(&mut self, rollouts: u64, segments: u64) -> Result<()> {
        let mut b = match self.buffers.take() {
            Some(b) => b,
            None => self.new_buffers()?,
        };
        let resized = self.resize(&mut b, rollouts, segments);
        self.buffers = Some(b);
        resized
    }

    fn resize(&self, b: &mut Buffers, rollouts: u64, segments: u64) -> Result<()> {
        let ctx = &self.ctx;
        // Stale until every resize went through and the groups are rebuilt.
        let was_stale = std::mem::replace(&mut b.stale, true);
        // Only segments longer than a chunk are listed: a segment of m
        // rewards (m > SORT_CHUNK) has at most 2m / SORT_CHUNK chunks.
        let chunk_words = 2 * (2 * (rollouts / u64::from(SORT_CHUNK)) + 1);
        let mut grown = was_stale;
        for (buffer, words) in [
            (&mut b.rewards, rollouts),
            (&mut b.offsets, segments + 1),
            (&mut b.ranks, rollouts),
            (&mut b.sorted_values, rollouts),
            (&mut b.sorted_index, rollouts),
            (&mut b.values, segments),
            (&mut b.status, segments),
            (&mut b.advantages, rollouts),
            (&mut b.chunk_list, chunk_words),
            (&mut b.chunk_keys, rollouts),
            (&mut b.chunk_index, rollouts),
            (&mut b.readback, (3 * rollouts).max(2 * segments + rollouts)),
        ] {
            grown |= buffer.reserve(ctx, words * 4)?;
        }
        if grown {
            let (order_bind, estimate_bind) = self.bind_groups(b);
            b.order_bind = order_bind;
            b.estimate_bind = estimate_bind;
        }
        b.stale = false;
        Ok(())
    }

    /// Small buffers of every kind (grown on first use).
    fn new_buffers(&self) -> Result<Buffers> {
        let ctx = &self.ctx;
        let storage = wgpu::BufferUsages::STORAGE;
        let input = storage | wgpu::BufferUsages::COPY_DST;
        let output = storage | wgpu::BufferUsages::COPY_SRC;
        let grow = |label, usage| GrowBuffer::new(ctx, label, usage);
        let mut b = Buffers {
            rewards: grow("rollcall tail rewards", input)?,
            offsets: grow("rollcall tail offsets", input)?,
            ranks: grow("rollcall tail ranks", output)?,
            sorted_values: grow("rollcall tail sorted values", output)?,
            sorted_index: grow("rollcall tail sorted index", output)?,
            values: grow("rollcall tail values", output)?,
            status: grow("rollcall tail status", output)?,
            advantages: grow("rollcall tail advantages", output)?,
            chunk_list: grow("rollcall tail chunk list", input)?,
            chunk_keys: grow("rollcall tail chunk keys", storage)?,
            chunk_index: grow("rollcall tail chunk index", storage)?,
            readback: grow(
                "rollcall tail readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?,
            // Replaced below; a bind group needs the buffers first.
            order_bind: self.placeholder_bind(),
            estimate_bind: self.placeholder_bind(),
            stale: true,
        };
        let (order_bind, estimate_bind) = self.bind_groups(&b);
        b.order_bind = order_bind;
        b.estimate_bind = estimate_bind;
        Ok(b)
    }

    /// An empty bind group (of an empty layout), never bound.
    fn placeholder_bind(&self) -> wgpu::BindGroup {
        let device = &self.ctx.device;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("rollcall tail placeholder"),
            entries: &[],
        });
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rollcall tail placeholder"),
            layout: &layout,
            entries: &[],
        })
    }

    /// The order and estimate bind groups over `b`'s current buffers.
    fn bind_groups(&self, b: &Buffers) -> (wgpu::BindGroup, wgpu::BindGroup) {
        let device = &self.ctx.device;
        let bind = |layout: &wgpu::BindGroupLayout, entries: &[(u32, &wgpu::Buffer)]| {
            crate::gpu::shader::bind_buffers(device, "rollcall tail", layout, entries)
        };
        let order_bind = bind(
            &self.pipelines.order_layout,
            &[
                (0, &self.order_params),
                (1, b.rewards.buffer()),
                (2, b.offsets.buffer()),
                (3, b.ranks.buffer()),
                (4, b.sorted_values.buffer()),
                (5, b.sorted_index.buffer()),
                (6, b.chunk_list.buffer()),
                (7, b.chunk_keys.buffer()),
                (8, b.chunk_index.buffer()),
            ],
        );
        let estimate_bind = bind(
            &self.pipelines.estimate_layout,
            &[
                (10, &self.estimate_params),
                (11, b.rewards.buffer()),
                (12, b.offsets.buffer()),
                (13, b.sorted_values.buffer()),
                (14, b.sorted_index.buffer()),
                (15, b.values.buffer()),
                (16, b.status.buffer()),
                (17, b.advantages.buffer()),
            ],
        );
        (order_bind, estimate_bind)
    }
}
