//! Python bindings for rollcall (module `rollcall._rollcall`, re-exported by
//! the `rollcall` package): adaptive voting, TTRL rewards, GRPO advantages
//! and best-of-N tail statistics, numpy arrays in and out. The CPU twins run
//! by default; `device="gpu"` runs the GPU kernels on one context per
//! process, opened on first use.
//!
//! Every input is converted and checked here, under the GIL, before any
//! rollcall call; the calls themselves run with the GIL released. Errors are
//! raised as the exception classes of `rollcall._errors` (all derived from
//! `rollcall.RollcallError`).

use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::sync::Mutex;

mod rules;
mod tail;
mod voting;

/// Raises `class` (a name in `rollcall._errors`) with `message`; a
/// `ValueError` if the package's error module cannot be imported (the native
/// module loaded on its own).
pub(crate) fn error(py: Python<'_>, class: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    match py
        .import("rollcall._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
    {
        Ok(ty) => PyErr::from_type(ty, message),
        Err(_) => PyValueError::new_err(message),
    }
}

/// Maps a rollcall error to its Python class, keeping rollcall's message.
pub(crate) fn rollcall_error(py: Python<'_>, e: rollcall::Error) -> PyErr {
    use rollcall::Error as E;
    let class = match &e {
        E::InvalidRule(_) => "InvalidRuleError",
        E::InvalidEstimator(_) => "InvalidEstimatorError",
        E::InvalidSegment { .. }
        | E::LengthMismatch { .. }
        | E::PromptOutOfRange { .. }
        | E::TokensLengthMismatch { .. } => "ShapeError",
        E::NonFiniteReward { .. } => "NonFiniteError",
        E::InvalidArgument(_) | E::InvalidCapacity(_) | E::Data(_) => "InvalidValueError",
        E::TooLarge { .. } | E::OutOfMemory { .. } => "OutOfMemoryError",
        E::NoAdapter(_)
        | E::RequestDevice(_)
        | E::Device(_)
        | E::DeviceLost(_)
        | E::Readback(_)
        | E::Shader { .. } => "GpuError",
        _ => "RollcallError",
    };
    error(py, class, e.to_string())
}

/// Where a call runs: the CPU twin (the default) or the GPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Device {
    Cpu,
    Gpu,
}

impl Device {
    /// Parses the `device` keyword: "cpu" or "gpu".
    pub(crate) fn parse(py: Python<'_>, device: &str) -> PyResult<Self> {
        match device {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            other => Err(error(
                py,
                "InvalidValueError",
                format!("device must be \"cpu\" or \"gpu\", got {other:?}"),
            )),
        }
    }
}

/// The process's GPU context: opened on first use, then reused. A failed
/// open is not kept, so a later call tries again.
static GPU: Mutex<Option<rollcall::GpuContext>> = Mutex::new(None);

/// The shared GPU context for `what` (the call that asked for it). Call it
/// with the GIL released: the first call opens the device. No adapter (or a
/// device the adapter refuses) is a `GpuError` that says what was asked and
/// how to get an adapter.
pub(crate) fn gpu_context(what: &str) -> Result<rollcall::GpuContext, GpuOpenError> {
    let mut slot = GPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ctx) = slot.as_ref() {
        return Ok(ctx.clone());
    }
    let ctx = rollcall::GpuContext::new().map_err(|e| {
        // rollcall's own message says how to get an adapter when none is found.
        let hint = match e {
            rollcall::Error::NoAdapter(_) => "",
            _ => ". On a machine without a GPU, install a Vulkan driver such as Mesa's lavapipe",
        };
        GpuOpenError(format!(
            "{what} with device=\"gpu\": {e}{hint}; or pass device=\"cpu\" to run the CPU twin"
        ))
    })?;
    *slot = Some(ctx.clone());
    Ok(ctx)
}

/// A GPU context that could not be opened (raised as `GpuError`).
#[derive(Debug)]
pub(crate) struct GpuOpenError(String);

/// What a call running with the GIL released can fail with: rollcall's
/// error, or no GPU context.
#[derive(Debug)]
pub(crate) enum CallError {
    Rollcall(rollcall::Error),
    Gpu(GpuOpenError),
}

impl From<rollcall::Error> for CallError {
    fn from(e: rollcall::Error) -> Self {
        CallError::Rollcall(e)
    }
}

impl From<GpuOpenError> for CallError {
    fn from(e: GpuOpenError) -> Self {
        CallError::Gpu(e)
    }
}

/// Raises a [`CallError`] as its Python class.
pub(crate) fn call_error(py: Python<'_>, e: CallError) -> PyErr {
    match e {
        CallError::Rollcall(e) => rollcall_error(py, e),
        CallError::Gpu(GpuOpenError(message)) => error(py, "GpuError", message),
    }
}

/// A numpy array converted from a Python object: contiguous data and shape.
pub(crate) struct Array<T> {
    pub(crate) data: Vec<T>,
    pub(crate) shape: Vec<usize>,
}

impl<T> Array<T> {
    /// Rows and columns of a 2-D array (checked by the reader).
    pub(crate) fn rows_cols(&self) -> (usize, usize) {
        (self.shape[0], self.shape[1])
    }
}

/// `numpy.asarray(obj)`: a ragged list is a `ShapeError`, anything numpy
/// cannot convert a `DTypeError`.
fn as_ndarray<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    np.call_method1("asarray", (obj,)).map_err(|e| {
        let text = e.to_string();
        let class = if text.contains("inhomogeneous") || text.contains("sequence") {
            "ShapeError"
        } else {
            "DTypeError"
        };
        error(py, class, format!("{what}: not an array ({text})"))
    })
}

/// The array's dtype kind (`b`, `i`, `u`, `f`, `c`, `O`, `U`, ...) and item size.
fn kind_of(arr: &Bound<'_, PyAny>) -> PyResult<(String, usize)> {
    let dtype = arr.getattr("dtype")?;
    Ok((
        dtype.getattr("kind")?.extract()?,
        dtype.getattr("itemsize")?.extract()?,
    ))
}

/// Checks the number of dimensions (`ndims` lists the accepted ones).
fn check_ndim(arr: &Bound<'_, PyAny>, what: &str, ndims: &[usize], hint: &str) -> PyResult<()> {
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if ndims.contains(&ndim) {
        return Ok(());
    }
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    let want = ndims
        .iter()
        .map(|d| format!("{d}-D"))
        .collect::<Vec<_>>()
        .join(" or ");
    Err(error(
        arr.py(),
        "ShapeError",
        format!("{what}: expected a {want} array{hint}, got shape {shape:?}"),
    ))
}

/// Copies `arr` out as `T` (numpy converts it to `dtype` first).
fn extract<T: numpy::Element + Copy>(arr: &Bound<'_, PyAny>, dtype: &str) -> PyResult<Array<T>> {
    let np = arr.py().import("numpy")?;
    let converted = np.call_method1("ascontiguousarray", (arr, dtype))?;
    let typed = converted
        .cast_into::<PyArrayDyn<T>>()
        .map_err(PyErr::from)?;
    let shape = typed.shape().to_vec();
    let data = typed
        .readonly()
        .as_slice()
        .map_err(|e| error(arr.py(), "RollcallError", format!("internal: {e}")))?
        .to_vec();
    Ok(Array { data, shape })
}

/// Reads an integer array of any integer dtype, widened so no value wraps;
/// another dtype is a `DTypeError` saying `expected`.
fn read_integers(
    obj: &Bound<'_, PyAny>,
    what: &str,
    ndims: &[usize],
    hint: &str,
    expected: &str,
) -> PyResult<Array<i128>> {
    let arr = as_ndarray(obj, what)?;
    let (kind, size) = kind_of(&arr)?;
    if kind != "i" && kind != "u" {
        return Err(error(
            obj.py(),
            "DTypeError",
            format!("{what}: expected {expected}, got dtype kind '{kind}'"),
        ));
    }
    check_ndim(&arr, what, ndims, hint)?;
    let data = if kind == "u" && size == 8 {
        let a: Array<u64> = extract(&arr, "uint64")?;
        a.data.into_iter().map(i128::from).collect()
    } else {
        let a: Array<i64> = extract(&arr, "int64")?;
        a.data.into_iter().map(i128::from).collect()
    };
    // The input's own shape (a 0-d array stays 0-d).
    let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
    Ok(Array { data, shape })
}

/// Reads integer answer ids: any integer dtype, -1 is padding, ids in
/// `0..=MAX_ID`. Returns them as `i64` (padding kept as -1).
pub(crate) fn read_ids(
    obj: &Bound<'_, PyAny>,
    what: &str,
    ndims: &[usize],
    hint: &str,
) -> PyResult<Array<i64>> {
    let wide = read_integers(
        obj,
        what,
        ndims,
        hint,
        "integer answer ids (map answer strings to ids first, \
         for example with numpy.unique(..., return_inverse=True))",
    )?;
    if let Some(&bad) = wide
        .data
        .iter()
        .find(|&&v| !(-1..=i128::from(MAX_ID)).contains(&v))
    {
        return Err(error(
            obj.py(),
            "InvalidValueError",
            format!("{what}: answer ids must be -1 (padding) or in 0..={MAX_ID}, got {bad}"),
        ));
    }
    Ok(Array {
        // In range: each fits an i64.
        data: wide.data.iter().map(|&v| v as i64).collect(),
        shape: wide.shape,
    })
}

/// The largest answer id (`u32::MAX` marks "no consensus" in rollcall).
pub(crate) const MAX_ID: i64 = u32::MAX as i64 - 1;

/// Reads numbers (bool, integer or float dtypes) as `f32`.
pub(crate) fn read_f32(
    obj: &Bound<'_, PyAny>,
    what: &str,
    ndims: &[usize],
    hint: &str,
) -> PyResult<Array<f32>> {
    let arr = as_ndarray(obj, what)?;
    let (kind, _) = kind_of(&arr)?;
    if !matches!(kind.as_str(), "b" | "i" | "u" | "f") {
        return Err(error(
            obj.py(),
            "DTypeError",
            format!("{what}: expected real numbers (bool, int or float), got dtype kind '{kind}'"),
        ));
    }
    check_ndim(&arr, what, ndims, hint)?;
    extract(&arr, "float32")
}

/// Reads non-negative integers that fit a `u32`.
pub(crate) fn read_u32(
    obj: &Bound<'_, PyAny>,
    what: &str,
    ndims: &[usize],
    hint: &str,
) -> PyResult<Array<u32>> {
    let wide = read_integers(obj, what, ndims, hint, "integers")?;
    if let Some(&bad) = wide.data.iter().find(|&&v| u32::try_from(v).is_err()) {
        return Err(error(
            obj.py(),
            "InvalidValueError",
            format!("{what}: expected integers in 0..={}, got {bad}", u32::MAX),
        ));
    }
    Ok(Array {
        data: wide.data.iter().map(|&v| v as u32).collect(),
        shape: wide.shape,
    })
}

/// A 1-D numpy array from a vector.
pub(crate) fn to_numpy<'py, T: numpy::Element>(
    py: Python<'py>,
    data: Vec<T>,
) -> Bound<'py, numpy::PyArray1<T>> {
    numpy::PyArray1::from_vec(py, data)
}

/// A 2-D numpy array from row-major data (`data.len() == rows * cols`).
pub(crate) fn to_numpy2<'py, T: numpy::Element>(
    py: Python<'py>,
    data: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, numpy::PyArray2<T>>> {
    numpy::PyArray1::from_vec(py, data).reshape([rows, cols])
}

/// rollcall for Python: the CPU twins, and the GPU kernels on request.
#[pymodule]
fn _rollcall(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_ANSWER_ID", MAX_ID)?;
    rules::register(m)?;
    voting::register(m)?;
    tail::register(m)?;
    Ok(())
}
