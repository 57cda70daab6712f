"""Reductions: ``mean`` / ``sum`` / ``amax`` / ``norm`` over space read visible positions only.

* Over both spatial dims (global pooling, squeeze-excite): a masked reduction. The mean
  is ``sum(visible) / max(count, 1)``; with nothing visible it is 0 (so a ResNet's
  logits become the classifier bias). Max is over visible positions, 0 if none.
  The result carries no mask: "the mask ends here".
* Over non-spatial dims only (e.g. channels): position-wise, the mask stays.
* Over one spatial dim only, or over the batch: refused.

Half-precision inputs accumulate in float32, so counts and sums neither round nor
overflow; the result is cast back to the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from maskbench.dtypes import accumulate_dtype
from maskbench.engine.fill import value_fill
from maskbench.engine.masks import MT, Layout
from maskbench.engine.registry import (
    Context,
    call_plain,
    normalize_dim,
    register_function_rule,
    register_method_rule,
    wrap_output,
)

__all__ = ["masked_reduce"]


def _dims(ctx: Context, x: MT, dim: Any) -> tuple[int, ...]:
    ndim = x.layout.ndim
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(sorted({normalize_dim(ctx, int(d), ndim) for d in dim}))


def masked_reduce(
    ctx: Context,
    x: MT,
    how: str,
    dims: Sequence[int],
    keepdim: bool,
    *,
    p: float = 2.0,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Reduce ``x`` over ``dims`` (which include both spatial dims) over visible positions.

    ``how`` is ``"mean"``, ``"sum"``, ``"amax"``, ``"amin"`` or ``"norm"`` (p-norm).
    """
    dims = tuple(dims)
    view = x.keep_view()
    value = x.value
    out_dtype = dtype or value.dtype
    acc = accumulate_dtype(value.dtype) if value.is_floating_point() else torch.float32
    all_visible = x.mask.all_visible()
    if how in ("mean", "sum", "norm"):
        zeroed = value_fill(x, 0.0)
        if how == "norm":
            out = torch.linalg.vector_norm(zeroed.to(acc), ord=p, dim=dims, keepdim=keepdim)
        else:
            out = zeroed.sum(dim=dims, keepdim=keepdim, dtype=acc)
        if how == "mean":
            count = view.sum(dim=dims, keepdim=keepdim, dtype=acc)
            extra = 1
            for d in dims:
                if d not in (x.layout.h, x.layout.w):
                    extra *= value.shape[d]
            out = out / (count * extra).clamp(min=1.0)
        return out.to(out_dtype)
    if how in ("amax", "amin"):
        big = float("-inf") if how == "amax" else float("inf")
        filled = value_fill(x, big)
        reduce = torch.amax if how == "amax" else torch.amin
        out = reduce(filled, dim=dims, keepdim=keepdim)
        if not all_visible:
            any_visible = view.any(dim=dims[0], keepdim=True)
            for d in dims[1:]:
                any_visible = any_visible.any(dim=d, keepdim=True)
            if not keepdim:
                any_visible = any_visible.squeeze(dims)
            out = torch.where(any_visible, out, 0.0)
        return out.to(out_dtype)
    raise ValueError(f"unknown reduction {how!r}")


def _reduce(
    ctx: Context,
    target: Any,
    args: tuple,
    kwargs: dict,
    how: str,
    dim: Any,
    keepdim: bool,
    *,
    p: float = 2.0,
) -> Any:
    x = args[0]
    if not isinstance(x, MT) or any(isinstance(a, MT) for a in (*args[1:], *kwargs.values())):
        raise ctx.refuse("reduces masked activations passed in an unexpected way")
    dims = _dims(ctx, x, dim)
    spatial = {x.layout.h, x.layout.w}
    if 0 in dims:
        raise ctx.refuse("reduces over the batch dim of a masked activation")
    touched = spatial.intersection(dims)
    if not touched:  # over channel-like dims only: position-wise
        out = call_plain(target, (x.value, *args[1:]), kwargs)
        layout = x.layout
        if not keepdim:
            h = layout.h - sum(d < layout.h for d in dims)
            w = layout.w - sum(d < layout.w for d in dims)
            layout = Layout(layout.ndim - len(dims), h, w)
        return wrap_output(ctx, out, x.mask, layout)
    if touched != spatial:
        raise ctx.refuse("reduces over only one spatial dim; no masking rule")
    ctx.record("global", None, x.mask.hw, (1, 1))
    return masked_reduce(ctx, x, how, dims, bool(keepdim), p=p, dtype=kwargs.get("dtype"))


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _simple(how: str):
    def rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
        dim = _arg(args, kwargs, 1, "dim", None)
        keepdim = _arg(args, kwargs, 2, "keepdim", False)
        return _reduce(ctx, target, args, kwargs, how, dim, keepdim)

    return rule


mean_rule = _simple("mean")
mean_rule.__doc__ = "``x.mean(dims)``: masked mean over space (squeeze-excite, global pooling)."
sum_rule = _simple("sum")
sum_rule.__doc__ = "``x.sum(dims)``: sum over visible positions."
amax_rule = _simple("amax")
amax_rule.__doc__ = "``x.amax(dims)``: max over visible positions (0 when none is visible)."
amin_rule = _simple("amin")
amin_rule.__doc__ = "``x.amin(dims)``: min over visible positions (0 when none is visible)."

register_method_rule("mean")(mean_rule)
register_function_rule(torch.mean)(mean_rule)
register_method_rule("sum")(sum_rule)
register_function_rule(torch.sum)(sum_rule)
register_method_rule("amax")(amax_rule)
register_function_rule(torch.amax)(amax_rule)
register_method_rule("amin")(amin_rule)
register_function_rule(torch.amin)(amin_rule)


def _norm_order(ctx: Context, p: Any) -> float:
    if p in ("fro", None):
        return 2.0
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p <= 0:
        raise ctx.refuse(f"with order {p!r} over a masked activation; no masking rule")
    return float(p)


@register_method_rule("norm")
@register_function_rule(torch.norm)
def norm_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``x.norm(p, dim, keepdim)``: p-norm over visible positions (removed count as 0)."""
    p = _norm_order(ctx, _arg(args, kwargs, 1, "p", "fro"))
    dim = _arg(args, kwargs, 2, "dim", None)
    keepdim = _arg(args, kwargs, 3, "keepdim", False)
    return _reduce(ctx, target, args, kwargs, "norm", dim, keepdim, p=p)


@register_function_rule(torch.linalg.vector_norm)
def vector_norm_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``torch.linalg.vector_norm(x, ord, dim, keepdim)`` over visible positions."""
    p = _norm_order(ctx, _arg(args, kwargs, 1, "ord", 2))
    dim = _arg(args, kwargs, 2, "dim", None)
    keepdim = _arg(args, kwargs, 3, "keepdim", False)
    return _reduce(ctx, target, args, kwargs, "norm", dim, keepdim, p=p)
