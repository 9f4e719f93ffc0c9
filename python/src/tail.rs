//! Best-of-N tail statistics: the estimators by name (exact max@k with
//! PKPO's weights, pass@k, TEA, Prefix-TEA, GPD, GRPO's baseline), pass@k
//! from counts, and the segmented order and top-k.

use crate::{
    call_error, error, gpu_context, read_f32, read_u32, rollcall_error, to_numpy, to_numpy2, Array,
    CallError, Device,
};
use numpy::{PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rollcall::tail::{cpu, Estimator, SegmentStatus, TailStats};

/// Top-k values and indices, shaped (prompts, k).
type TopK<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>);

/// Rewards shaped (prompts, m) and the per-row lengths: the rollcall offsets.
struct Rows {
    rewards: Vec<f32>,
    offsets: Vec<u32>,
    /// Flat index of each packed reward in the (prompts, m) array.
    positions: Vec<usize>,
    rows: usize,
    cols: usize,
}

fn read_rows(
    py: Python<'_>,
    rewards: &Bound<'_, PyAny>,
    lengths: Option<&Bound<'_, PyAny>>,
) -> PyResult<Rows> {
    let r: Array<f32> = read_f32(
        rewards,
        "rewards",
        &[2],
        " shaped (prompts, rollouts) (reshape one prompt's rewards with .reshape(1, -1))",
    )?;
    let (rows, cols) = r.rows_cols();
    let lengths: Vec<usize> = match lengths {
        None => vec![cols; rows],
        Some(l) => {
            let l = read_u32(l, "lengths", &[1], " with one length per prompt")?;
            if l.data.len() != rows {
                return Err(error(
                    py,
                    "ShapeError",
                    format!(
                        "lengths has {} entries but rewards has {rows} rows",
                        l.data.len()
                    ),
                ));
            }
            if let Some(&bad) = l.data.iter().find(|&&v| v as usize > cols) {
                return Err(error(
                    py,
                    "InvalidValueError",
                    format!("lengths: {bad} is past the {cols} columns of rewards"),
                ));
            }
            l.data.iter().map(|&v| v as usize).collect()
        }
    };
    if r.data.len() > u32::MAX as usize {
        return Err(error(py, "InvalidValueError", "more than 2^32 rewards"));
    }
    let mut packed = Vec::with_capacity(r.data.len());
    let mut positions = Vec::with_capacity(r.data.len());
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0u32);
    for (row, &len) in lengths.iter().enumerate() {
        for c in 0..len {
            packed.push(r.data[row * cols + c]);
            positions.push(row * cols + c);
        }
        offsets.push(packed.len() as u32);
    }
    Ok(Rows {
        rewards: packed,
        offsets,
        positions,
        rows,
        cols,
    })
}

/// Runs `on_gpu` with a `TailStats` on the shared context for `device="gpu"`,
/// `on_cpu` otherwise (call with the GIL released).
fn on_device<T>(
    device: Device,
    what: &str,
    on_cpu: impl FnOnce() -> rollcall::Result<T>,
    on_gpu: impl FnOnce(&mut TailStats) -> rollcall::Result<T>,
) -> Result<T, CallError> {
    Ok(match device {
        Device::Cpu => on_cpu()?,
        Device::Gpu => {
            let ctx = gpu_context(what)?;
            on_gpu(&mut TailStats::new(&ctx)?)?
        }
    })
}

fn status_name(s: SegmentStatus) -> &'static str {
    match s {
        SegmentStatus::Ok => "ok",
        SegmentStatus::Empty => "empty",
        SegmentStatus::TooFew => "too-few",
        SegmentStatus::Flat => "flat",
        SegmentStatus::Fallback => "fallback",
    }
}

/// An integer estimator parameter: a whole number in 1..=u32::MAX.
fn count_param(py: Python<'_>, what: &str, v: Option<i64>) -> PyResult<u32> {
    let v = v.ok_or_else(|| {
        error(
            py,
            "InvalidEstimatorError",
            format!("this estimator needs {what}="),
        )
    })?;
    u32::try_from(v).ok().filter(|&v| v >= 1).ok_or_else(|| {
        error(
            py,
            "InvalidEstimatorError",
            format!("{what} must be at least 1, got {v}"),
        )
    })
}

/// The estimator for a name and its parameters.
#[allow(clippy::too_many_arguments)]
fn estimator(
    py: Python<'_>,
    name: &str,
    n: Option<i64>,
    k: Option<i64>,
    alpha: f64,
    prefixes: i64,
    threshold: f64,
    eps: f64,
) -> PyResult<Estimator> {
    let n_or_k = |what: &str| count_param(py, what, n.or(k));
    Ok(match name {
        "max@k" | "exact" | "expected-max" | "pkpo" => Estimator::ExpectedMax { n: n_or_k("n")? },
        "pass@k" => Estimator::PassAtK {
            k: count_param(py, "k", k.or(n))?,
            threshold: threshold as f32,
        },
        "tea" => Estimator::Tea {
            n: n_or_k("n")?,
            alpha: alpha as f32,
        },
        "prefix-tea" => Estimator::PrefixTea {
            n: n_or_k("n")?,
            alpha: alpha as f32,
            prefixes: u32::try_from(prefixes).unwrap_or(0),
        },
        "gpd" => Estimator::Gpd {
            n: n_or_k("n")?,
            alpha: alpha as f32,
        },
        "grpo" => Estimator::Grpo { eps: eps as f32 },
        other => {
            return Err(error(
                py,
                "InvalidEstimatorError",
                format!(
                    "unknown estimator {other:?}; known: max@k (exact, pkpo), pass@k, tea, prefix-tea, gpd, grpo"
                ),
            ))
        }
    })
}

/// A best-of-N estimate per prompt.
///
/// `estimate(rewards, estimator, *, n=None, k=None, alpha=0.25, prefixes=4,
/// threshold=0.5, eps=1e-4, lengths=None)`: `rewards` float shaped
/// (prompts, rollouts) in sampling order; `lengths` (optional, one per row)
/// uses only the first `lengths[p]` rewards of row p. Estimators:
/// "max@k" (alias "exact", "pkpo"; N = n or k): the unbiased expected max of
/// N draws and PKPO's per-rollout weights; "pass@k" (k; rewards >=
/// threshold are correct); "tea" (n, alpha); "prefix-tea" (n, alpha,
/// prefixes); "gpd" (n, alpha); "grpo" (eps).
/// Returns a dict: `values` (float32 per prompt, NaN when empty or too few
/// rollouts), `advantages` (float32 shaped like `rewards`, 0 in padding),
/// `status` (list of "ok", "empty", "too-few", "flat", "fallback").
///
/// `device="gpu"` runs rollcall's GPU tail kernels (`TailStats`) and
/// returns the same keys, shapes and dtypes. Both sides compute in f32 with
/// the same operations in the same order; the GPU's exp, log and fused
/// multiply-adds differ in the last bits, so `status` is identical and
/// `values` and `advantages` agree to 1e-4 of the row's scale (the largest
/// of 1 and the magnitudes of its rewards, value and advantages); the
/// GPD's jackknife advantages to 1e-3 of it.
#[pyfunction]
#[pyo3(signature = (rewards, estimator, *, n = None, k = None, alpha = 0.25, prefixes = 4, threshold = 0.5, eps = 1e-4, lengths = None, device = "cpu"))]
#[allow(clippy::too_many_arguments)]
fn estimate<'py>(
    py: Python<'py>,
    rewards: &Bound<'py, PyAny>,
    estimator: &str,
    n: Option<i64>,
    k: Option<i64>,
    alpha: f64,
    prefixes: i64,
    threshold: f64,
    eps: f64,
    lengths: Option<&Bound<'py, PyAny>>,
    device: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let device = Device::parse(py, device)?;
    let est = self::estimator(py, estimator, n, k, alpha, prefixes, threshold, eps)?;
    est.validate().map_err(|e| rollcall_error(py, e))?;
    let rows = read_rows(py, rewards, lengths)?;
    let (rewards, offsets) = (&rows.rewards, &rows.offsets);
    let out = py
        .detach(|| {
            on_device(
                device,
                "estimate",
                || cpu::estimate(rewards, offsets, est),
                |tail| tail.estimate(rewards, offsets, est),
            )
        })
        .map_err(|e| call_error(py, e))?;
    let mut adv = vec![0.0f32; rows.rows * rows.cols];
    for (&pos, &a) in rows.positions.iter().zip(&out.advantages) {
        adv[pos] = a;
    }
    let d = PyDict::new(py);
    d.set_item("values", to_numpy(py, out.values))?;
    d.set_item("advantages", to_numpy2(py, adv, rows.rows, rows.cols)?)?;
    d.set_item(
        "status",
        PyList::new(py, out.status.iter().map(|&s| status_name(s)))?,
    )?;
    Ok(d)
}

/// pass@k from n samples with c correct: `1 − C(n−c, k)/C(n, k)` (1 when
/// `n − c < k`), elementwise over broadcast integer arrays `n` and `c`, in
/// rollcall's f32 product. Raises `InvalidValueError` when c > n or k < 1.
/// Returns float32 shaped like the broadcast of `n` and `c`.
#[pyfunction]
fn pass_at_k<'py>(
    py: Python<'py>,
    n: &Bound<'py, PyAny>,
    c: &Bound<'py, PyAny>,
    k: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let k = u32::try_from(k).ok().filter(|&k| k >= 1).ok_or_else(|| {
        error(
            py,
            "InvalidValueError",
            format!("k must be at least 1, got {k}"),
        )
    })?;
    let np = py.import("numpy")?;
    let pair = np.call_method1("broadcast_arrays", (n, c)).map_err(|e| {
        error(
            py,
            "ShapeError",
            format!("n and c do not broadcast together: {e}"),
        )
    })?;
    let nn = read_u32(&pair.get_item(0)?, "n", &[0, 1, 2, 3, 4, 5, 6, 7, 8], "")?;
    let cc = read_u32(&pair.get_item(1)?, "c", &[0, 1, 2, 3, 4, 5, 6, 7, 8], "")?;
    if let Some((m, c)) = nn.data.iter().zip(&cc.data).find(|(m, c)| c > m) {
        return Err(error(
            py,
            "InvalidValueError",
            format!("c ({c} correct) is larger than n ({m} samples)"),
        ));
    }
    let out: Vec<f32> = py.detach(|| {
        nn.data
            .iter()
            .zip(&cc.data)
            .map(|(&m, &c)| cpu::pass_at_k(m, c, k))
            .collect()
    });
    Ok(to_numpy(py, out).reshape(nn.shape)?.into_any())
}

/// The segmented sort per prompt: `(ranks, sorted_values, sorted_index)`,
/// each shaped like `rewards` (prompts, rollouts): each reward's rank in its
/// row (0 = best; ties by position), the row's rewards in descending order,
/// and their positions. With `lengths`, entries past a row's length are
/// rank -1, value NaN and index -1. NaN rewards are refused.
/// `device="gpu"` sorts on the GPU; the results equal the CPU's exactly.
#[pyfunction]
#[pyo3(signature = (rewards, *, lengths = None, device = "cpu"))]
#[allow(clippy::type_complexity)]
fn order<'py>(
    py: Python<'py>,
    rewards: &Bound<'py, PyAny>,
    lengths: Option<&Bound<'py, PyAny>>,
    device: &str,
) -> PyResult<(
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<i64>>,
)> {
    let device = Device::parse(py, device)?;
    let rows = read_rows(py, rewards, lengths)?;
    let (rewards, offsets) = (&rows.rewards, &rows.offsets);
    let o = py
        .detach(|| {
            on_device(
                device,
                "order",
                || cpu::order(rewards, offsets),
                |tail| tail.order(rewards, offsets),
            )
        })
        .map_err(|e| call_error(py, e))?;
    let size = rows.rows * rows.cols;
    let (mut ranks, mut values, mut index) =
        (vec![-1i64; size], vec![f32::NAN; size], vec![-1i64; size]);
    for (s, w) in rows.offsets.windows(2).enumerate() {
        for (j, packed) in (w[0] as usize..w[1] as usize).enumerate() {
            ranks[rows.positions[packed]] = i64::from(o.ranks[packed]);
            values[s * rows.cols + j] = o.sorted_values[packed];
            index[s * rows.cols + j] = i64::from(o.sorted_index[packed]);
        }
    }
    Ok((
        to_numpy2(py, ranks, rows.rows, rows.cols)?,
        to_numpy2(py, values, rows.rows, rows.cols)?,
        to_numpy2(py, index, rows.rows, rows.cols)?,
    ))
}

/// The k best rewards of each prompt: `(values, indices)` shaped
/// (prompts, k), best first (ties by position); rows shorter than k are
/// padded with -inf and index -1. `device="gpu"` selects on the GPU; the
/// results equal the CPU's exactly.
#[pyfunction]
#[pyo3(signature = (rewards, k, *, lengths = None, device = "cpu"))]
fn top_k<'py>(
    py: Python<'py>,
    rewards: &Bound<'py, PyAny>,
    k: i64,
    lengths: Option<&Bound<'py, PyAny>>,
    device: &str,
) -> PyResult<TopK<'py>> {
    let device = Device::parse(py, device)?;
    let rows = read_rows(py, rewards, lengths)?;
    let k = u32::try_from(k).map_err(|_| {
        error(
            py,
            "InvalidValueError",
            format!("k must be at least 1, got {k}"),
        )
    })?;
    let (rewards, offsets) = (&rows.rewards, &rows.offsets);
    let t = py
        .detach(|| {
            on_device(
                device,
                "top_k",
                || cpu::top_k(rewards, offsets, k),
                |tail| tail.top_k(rewards, offsets, k),
            )
        })
        .map_err(|e| call_error(py, e))?;
    let indices = t
        .indices
        .iter()
        .map(|&i| {
            if i == rollcall::tail::NO_INDEX {
                -1
            } else {
                i64::from(i)
            }
        })
        .collect();
    Ok((
        to_numpy2(py, t.values, rows.rows, k as usize)?,
        to_numpy2(py, indices, rows.rows, k as usize)?,
    ))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(estimate, m)?)?;
    m.add_function(wrap_pyfunction!(pass_at_k, m)?)?;
    m.add_function(wrap_pyfunction!(order, m)?)?;
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    Ok(())
}
