//! The subcommands of `rollcall`, one module each (its clap arguments and its
//! `run`), and what they share: the error type, the size checks made before
//! anything large is allocated, and the note about slow adapters.

pub mod bench;
pub mod check;
pub mod info;
pub mod sample;
pub mod tail;
pub mod vote;

use clap::ValueEnum;
use rollcall::GpuContext;
use std::fmt;

/// A value's name as typed on the command line.
pub fn cli_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Why a subcommand failed: `main` prints it after `error: ` and exits with
/// code 2.
#[derive(Debug)]
pub enum CliError {
    /// The library refused or failed.
    Rollcall(rollcall::Error),
    /// The sizes asked for need more memory than the command allows itself
    /// or the adapter can hold.
    TooLarge(TooLarge),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Rollcall(e) => e.fmt(f),
            CliError::TooLarge(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CliError {}

impl From<rollcall::Error> for CliError {
    fn from(e: rollcall::Error) -> Self {
        CliError::Rollcall(e)
    }
}

impl From<TooLarge> for CliError {
    fn from(e: TooLarge) -> Self {
        CliError::TooLarge(e)
    }
}

/// What a subcommand's `run` returns.
pub type CliResult<T> = Result<T, CliError>;

/// Most host memory a subcommand allocates for its data (8 GiB): sizes that
/// need more are refused before anything is allocated. A bound, not what the
/// machine has: above it a typo (an extra zero in `--batch`) would otherwise
/// abort the process or push the machine into swap.
pub const MAX_HOST_BYTES: u64 = 8 << 30;

/// The bound a size is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Host memory, at most [`MAX_HOST_BYTES`].
    Host,
    /// One device buffer, at most the adapter's `max_buffer_size`.
    DeviceBuffer(u64),
    /// One buffer bound whole to a shader, at most the adapter's
    /// `max_storage_buffer_binding_size` (and `max_buffer_size`).
    DeviceBinding(u64),
}

impl Bound {
    /// The largest device buffer `ctx` can create.
    pub fn buffer(ctx: &GpuContext) -> Self {
        Bound::DeviceBuffer(ctx.limits().max_buffer_size)
    }

    /// The largest buffer `ctx` can bind whole as storage.
    pub fn binding(ctx: &GpuContext) -> Self {
        let l = ctx.limits();
        Bound::DeviceBinding(l.max_storage_buffer_binding_size.min(l.max_buffer_size))
    }

    /// The bound in bytes.
    pub fn limit(self) -> u64 {
        match self {
            Bound::Host => MAX_HOST_BYTES,
            Bound::DeviceBuffer(l) | Bound::DeviceBinding(l) => l,
        }
    }

    fn place(self) -> &'static str {
        match self {
            Bound::Host => "of host memory",
            Bound::DeviceBuffer(_) => "in one device buffer",
            Bound::DeviceBinding(_) => "in one device storage binding",
        }
    }

    fn describe(self) -> String {
        let limit = self.limit();
        let what = match self {
            Bound::Host => "rollcall's bound on host memory",
            Bound::DeviceBuffer(_) => "the adapter's max buffer size",
            Bound::DeviceBinding(_) => "the adapter's max storage binding",
        };
        format!("{what}, {} ({limit} bytes)", human_bytes(limit))
    }
}

/// A size refused before allocating: what was asked for, what it needs, and
/// the bound it exceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// The sizes as the user gave them, e.g. `--batch 100000 x --vocab 128256`.
    pub subject: String,
    /// What the bytes hold, e.g. `f32 logits`.
    pub contents: String,
    /// Bytes needed; `None` when counting them overflows 64 bits.
    pub needed: Option<u64>,
    /// The bound exceeded.
    pub bound: Bound,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (subject, contents, place) = (&self.subject, &self.contents, self.bound.place());
        let bound = self.bound.describe();
        match self.needed {
            Some(n) => write!(
                f,
                "{subject} is too large: it needs {n} bytes ({}) {place} for {contents}, \
                 more than {bound}",
                human_bytes(n)
            ),
            None => write!(
                f,
                "{subject} is too large: the bytes {place} for {contents} overflow 64-bit \
                 arithmetic, far more than {bound}"
            ),
        }
    }
}

impl std::error::Error for TooLarge {}

/// The product of `factors` (a count of elements times their size), `None`
/// on overflow.
pub fn product(factors: &[u64]) -> Option<u64> {
    factors.iter().try_fold(1u64, |acc, &f| acc.checked_mul(f))
}

/// The sum of `terms`, `None` if any is `None` or the sum overflows.
pub fn total(terms: &[Option<u64>]) -> Option<u64> {
    terms
        .iter()
        .try_fold(0u64, |acc, &t| t.and_then(|t| acc.checked_add(t)))
}

/// `needed` bytes if they fit `bound`, else the refusal naming `subject` and
/// `contents`.
pub fn ensure_fits(
    subject: &str,
    contents: &str,
    needed: Option<u64>,
    bound: Bound,
) -> Result<u64, TooLarge> {
    match needed {
        Some(n) if n <= bound.limit() => Ok(n),
        _ => Err(TooLarge {
            subject: subject.to_string(),
            contents: contents.to_string(),
            needed,
            bound,
        }),
    }
}

/// Bytes in the largest binary unit below them, one decimal (`47.8 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Whether an adapter is wgpu's OpenGL fallback running on the CPU (Mesa's
/// llvmpipe behind GL): exact, but several times slower than lavapipe.
pub fn is_cpu_gl(backend: wgpu::Backend, device_type: wgpu::DeviceType) -> bool {
    backend == wgpu::Backend::Gl && device_type == wgpu::DeviceType::Cpu
}

/// The note printed after the adapter line on a CPU adapter behind OpenGL
/// (see [`is_cpu_gl`]), `None` on any other adapter.
pub fn slow_adapter_note(info: &wgpu::AdapterInfo) -> Option<&'static str> {
    is_cpu_gl(info.backend, info.device_type).then_some(CPU_GL_NOTE)
}

/// See [`slow_adapter_note`].
const CPU_GL_NOTE: &str = "\
note: this adapter is wgpu's OpenGL fallback on the CPU (Mesa llvmpipe): results are exact, \
but it runs several times slower than Mesa's lavapipe on Vulkan.
note: install lavapipe with `sudo apt-get install mesa-vulkan-drivers` (on Debian bookworm, \
from bookworm-backports: `sudo apt-get install -t bookworm-backports mesa-vulkan-drivers`; \
the repository's `.ci/install-lavapipe.sh` does it), then run with WGPU_BACKEND=vulkan.";

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::{Backend, DeviceType};

    #[test]
    fn the_note_is_for_cpu_adapters_behind_gl_only() {
        assert!(is_cpu_gl(Backend::Gl, DeviceType::Cpu));
        for device in [
            DeviceType::Other,
            DeviceType::IntegratedGpu,
            DeviceType::DiscreteGpu,
            DeviceType::VirtualGpu,
        ] {
            assert!(!is_cpu_gl(Backend::Gl, device), "{device:?}");
        }
        for backend in Backend::ALL.into_iter().filter(|&b| b != Backend::Gl) {
            assert!(!is_cpu_gl(backend, DeviceType::Cpu), "{backend:?}");
        }
    }

    #[test]
    fn the_note_names_lavapipe_and_its_install() {
        let note = CPU_GL_NOTE;
        assert!(
            note.contains("lavapipe") && note.contains("sudo apt-get install mesa-vulkan-drivers")
        );
        assert!(note.contains("bookworm-backports") && note.contains(".ci/install-lavapipe.sh"));
        assert!(note.lines().all(|l| l.starts_with("note: ")));
    }

    #[test]
    fn sizes_are_counted_without_overflow() {
        assert_eq!(product(&[100_000, 128_256, 4]), Some(51_302_400_000));
        assert_eq!(
            product(&[u64::from(u32::MAX), u64::from(u32::MAX), 4]),
            None
        );
        assert_eq!(total(&[Some(1), Some(2)]), Some(3));
        assert_eq!(total(&[Some(u64::MAX), Some(1)]), None);
        assert_eq!(total(&[Some(1), None]), None);
        assert_eq!(
            ensure_fits("x", "y", Some(MAX_HOST_BYTES), Bound::Host),
            Ok(MAX_HOST_BYTES)
        );
        let refused = ensure_fits("--n 9", "things", Some(MAX_HOST_BYTES + 1), Bound::Host)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--n 9") && refused.contains("8589934593 bytes"),
            "{refused}"
        );
        assert!(refused.contains("8.0 GiB"), "{refused}");
        let overflow = ensure_fits("--n 9", "things", None, Bound::DeviceBuffer(1 << 31))
            .unwrap_err()
            .to_string();
        assert!(
            overflow.contains("overflow") && overflow.contains("max buffer size"),
            "{overflow}"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(51_302_400_000), "47.8 GiB");
    }
}
