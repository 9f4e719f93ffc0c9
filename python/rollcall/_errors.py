"""The exceptions rollcall raises. Every one derives from RollcallError and
from the matching built-in (ValueError, TypeError, ...), so callers may catch
either."""


class RollcallError(Exception):
    """Base class of every error rollcall raises."""


class ShapeError(RollcallError, ValueError):
    """An array of the wrong shape or length (or ragged)."""


class DTypeError(RollcallError, TypeError):
    """An array or argument of the wrong type (strings where ids are needed, ...)."""


class InvalidValueError(RollcallError, ValueError):
    """A value out of range (negative ids, c > n, capacity past 256, ...)."""


class NonFiniteError(InvalidValueError):
    """A NaN (or infinite, where finite numbers are needed) reward or score."""


class InvalidRuleError(InvalidValueError):
    """An unknown stopping rule, parameter, or parameter out of range."""


class InvalidEstimatorError(InvalidValueError):
    """An unknown tail estimator or parameter out of range."""


class OutOfMemoryError(RollcallError, MemoryError):
    """The host (or device) could not allocate what the call needs."""


class GpuError(RollcallError, RuntimeError):
    """A GPU adapter or device error: no adapter for ``device="gpu"`` (install
    a Vulkan driver such as Mesa's lavapipe, or pass ``device="cpu"``), or
    the device failed or was lost."""


# The one list of the error classes (``rollcall.__all__`` takes it from here).
__all__ = [
    "RollcallError",
    "ShapeError",
    "DTypeError",
    "InvalidValueError",
    "NonFiniteError",
    "InvalidRuleError",
    "InvalidEstimatorError",
    "OutOfMemoryError",
    "GpuError",
]
