"""Geometry facts the crop and translation checks need: total stride, crop applicability.

Crop equivalence and translation invariance are stated for boxes and offsets aligned to
the model's *total stride*. The stride is taken from (in order) the strategy or engine's
crop-applicability answer, timm's ``feature_info`` (the last feature's reduction), or
:data:`~maskbench.audit.checks.DEFAULT_STRIDE` (32).

Whether a model/strategy pair *can* be crop-exact is asked from, in order:

1. the strategy: a ``crop_applicability(model)`` method (or attribute holding the answer);
2. the layer-masking engine: ``maskbench.engine.crop_applicability(network)``, when the
   engine provides it (the import is guarded: the audit works without it);
3. otherwise the claim is assumed to apply.

If the engine raises (say, for a model it cannot trace), the claims do not apply and the
reason says why; a strategy's own answer is trusted to work (if it raises, the strategy's
checks are errors).

An answer may be a bool, a ``(bool, reason[, stride])`` tuple, or an object with an
``applicable`` (or ``ok``) attribute, a ``reason`` and optionally a ``stride`` (or
``total_stride``), such as the engine's ``CropApplicability``.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from maskbench.audit.checks import DEFAULT_STRIDE, Applicability
from maskbench.models import split_model
from maskbench.strategies.base import Strategy


def _as_applicability(answer: Any, origin: str) -> tuple[Applicability, int | None]:
    """Normalise one crop-applicability answer; also return a stride if it names one."""
    stride = None
    if isinstance(answer, Applicability):
        return answer, None
    if isinstance(answer, bool):
        applicable, reason = answer, ""
    elif isinstance(answer, tuple) and answer and isinstance(answer[0], bool):
        applicable = answer[0]
        reason = str(answer[1]) if len(answer) > 1 else ""
        stride = answer[2] if len(answer) > 2 else None
    else:
        applicable = getattr(answer, "applicable", getattr(answer, "ok", None))
        if applicable is None:
            raise TypeError(
                f"{origin} returned {answer!r}; expected a bool, (bool, reason) or an object "
                "with .applicable and .reason"
            )
        applicable = bool(applicable)
        reason = str(getattr(answer, "reason", "") or "")
        stride = getattr(answer, "stride", None) or getattr(answer, "total_stride", None)
    if not applicable and not reason:
        reason = f"{origin} says the model is not crop-applicable"
    if not isinstance(stride, int) or stride <= 0:
        stride = None
    return Applicability(applicable, reason if not applicable else ""), stride


def engine_crop_applicability() -> Any | None:
    """``maskbench.engine.crop_applicability`` if the engine provides it, else None."""
    try:
        engine = importlib.import_module("maskbench.engine")
    except ImportError:
        return None
    function = getattr(engine, "crop_applicability", None)
    return function if callable(function) else None


def crop_applicability(strategy: Strategy, model: nn.Module) -> tuple[Applicability, int | None]:
    """Whether crop-based claims apply to ``strategy`` on ``model``, and a stride if known."""
    hook = getattr(strategy, "crop_applicability", None)
    if hook is not None:
        answer = hook(model) if callable(hook) else hook
        return _as_applicability(answer, f"{type(strategy).__name__}.crop_applicability")
    function = engine_crop_applicability()
    if function is not None:
        _, network = split_model(model)
        try:
            answer = function(network)
        except Exception as exc:  # e.g. a model the engine cannot trace: not crop-exact
            reason = f"maskbench.engine.crop_applicability raised {type(exc).__name__}: {exc}"
            return Applicability(False, reason), None
        return _as_applicability(answer, "maskbench.engine.crop_applicability")
    return Applicability(), None


def model_stride(model: nn.Module, default: int = DEFAULT_STRIDE) -> int:
    """The total stride of ``model`` from timm's ``feature_info``, else ``default``."""
    _, network = split_model(model)
    info = getattr(network, "feature_info", None)
    try:
        if info is not None:
            last = info[-1]
            reduction = last.get("reduction") if isinstance(last, dict) else None
            if isinstance(reduction, int) and reduction > 0:
                return reduction
    except (TypeError, IndexError, KeyError):
        pass
    stride = getattr(network, "total_stride", None)
    if isinstance(stride, int) and stride > 0:
        return stride
    return default
