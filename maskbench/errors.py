"""Exceptions raised by maskbench.

Every error a user can trigger with bad input derives from :class:`MaskbenchError`,
so ``except maskbench.MaskbenchError`` catches all of them, and each also derives from
the closest built-in exception (``ValueError``, ``LookupError`` ...) so generic code
keeps working.
"""

from __future__ import annotations


class MaskbenchError(Exception):
    """Base class of every exception maskbench raises on purpose."""


class MaskError(MaskbenchError, ValueError):
    """A keep-mask is malformed: wrong rank, size, batch, device, dtype or values."""


class ImageError(MaskbenchError, ValueError):
    """An image batch is malformed: wrong rank or channels, NaN/Inf, not in [0, 1]."""


class UnsupportedModelError(MaskbenchError, TypeError):
    """A model contains an operation that maskbench has no masking rule for.

    The message names the operation and where it sits in the model, so the user can
    either replace that layer or register a rule for it.
    """


class WeightsUnavailableError(MaskbenchError, RuntimeError):
    """The requested model weights cannot be had (offline, no checkpoint, bad file)."""


class UnknownStrategyError(MaskbenchError, LookupError):
    """A strategy name or import path does not resolve to a registered strategy."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownModelError(MaskbenchError, LookupError):
    """A model name is neither a timm model nor one of maskbench's shipped models."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NumericalRangeError(MaskbenchError, FloatingPointError):
    """A strategy's result does not fit the model's floating-point format.

    Raised instead of returning non-finite logits, e.g. when ``partial_conv``'s window
    rescaling overflows float16; the message says which samples and what to use instead.
    """


class DeviceError(MaskbenchError, ValueError):
    """A device is malformed or not present here (e.g. ``cuda`` on a machine without a
    GPU, or ``cuda:3`` with two GPUs visible)."""


class CaptureError(MaskbenchError, RuntimeError):
    """A call cannot be captured as a CUDA graph: something in it reads tensor values on
    the host (``.item()``, ``bool(t)``, ``nonzero``, a tensor made from host data).

    The message names the op and, where known, the line of code that called it.
    """
