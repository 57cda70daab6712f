"""Pooling, anti-aliasing and upsampling.

* Max pool: zero fill (``PAPER`` / ``ZERO`` / ``PARTIAL_CONV``, as published: inputs are
  >= 0 after ReLU) or ``-inf`` fill (``CROP``).
* Avg pool: zero fill, not renormalised (the paper's ``avg_pool(x) * [avg_pool(M) > 0]``);
  ``CROP`` renormalises over visible positions exactly when the pool itself excludes
  padding from its divisor (``count_include_pad=False``), as a crop would.
* Adaptive pools to 1 x 1 are global: masked mean / max (no mask afterwards).
* timm ``BlurPool2d``: a fixed depthwise conv, filled as a conv (neighbour padding in
  ``PAPER``) then reflect-padded as the module does.
* Upsampling: nearest copies positions (no fill); other modes fill first.
Masks: dilation (``max_pool`` of the mask) or, for ``CROP``, centre subsampling.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskbench.engine.fill import neighbour_fill, value_fill, zero_fill
from maskbench.engine.masks import MT, NCHW, Window, same_padding, work_dtype
from maskbench.engine.registry import Context, register_function_rule, register_module_rule
from maskbench.engine.rules.conv import fill_for_window, propagate, require_nchw
from maskbench.engine.rules.reduce import masked_reduce
from maskbench.engine.variants import Variant

__all__ = ["masked_avg_pool", "masked_max_pool"]


def _out_mask(ctx: Context, x: MT, window: Window, out: torch.Tensor, *, pool: bool = True):
    return propagate(ctx.variant, x.mask, window, (out.shape[-2], out.shape[-1]), pool=pool)


def masked_max_pool(
    ctx: Context, x: MT, window: Window, run: Any, *, kind: str = "window", pool: bool = True
) -> MT:
    """Max pooling of a masked activation; ``run`` applies the pool to a filled input."""
    x = require_nchw(ctx, x)
    fill = float("-inf") if ctx.variant is Variant.CROP else 0.0
    out = run(value_fill(x, fill))
    if isinstance(out, tuple):
        raise ctx.refuse("returns pooling indices; no masking rule")
    mask = _out_mask(ctx, x, window, out, pool=pool)
    ctx.record(kind, window, x.mask.hw, out.shape[-2:])
    return MT(out, mask, NCHW)


def masked_avg_pool(
    ctx: Context,
    x: MT,
    window: Window,
    run: Any,
    *,
    renormalise: bool,
    kind: str = "window",
    pool: bool = True,
) -> MT:
    """Average pooling of a masked activation; ``run`` applies the pool to any input.

    ``renormalise`` (``CROP`` only, when the pool excludes padding from its divisor):
    divide by the visible share of the window instead of counting removed positions.
    """
    x = require_nchw(ctx, x)
    out = run(zero_fill(x))
    if ctx.variant is Variant.CROP and renormalise and not x.mask.all_visible():
        out_hw = (out.shape[-2], out.shape[-1])

        work = work_dtype(out.dtype)

        def share() -> torch.Tensor:
            visible = run(x.mask.as_float(work))
            return torch.where(visible > 0, 1.0 / visible.clamp(min=1e-12), 0.0).to(out.dtype)

        out = out * x.mask.memo(("avg-renorm", window.key(), out_hw, out.dtype), share)
    mask = _out_mask(ctx, x, window, out, pool=pool)
    ctx.record(kind, window, x.mask.hw, out.shape[-2:])
    return MT(out, mask, NCHW)


def _first(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs["input"]


@register_module_rule(nn.MaxPool2d)
def max_pool_module(ctx: Context, module: nn.MaxPool2d, args: tuple, kwargs: dict) -> MT:
    """``nn.MaxPool2d``."""
    if module.return_indices:
        raise ctx.refuse("returns pooling indices; no masking rule")
    window = Window.make(
        module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode
    )
    return masked_max_pool(ctx, _first(args, kwargs), window, module)


_MAX_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_MAX_DEFAULTS = {
    "stride": None,
    "padding": 0,
    "dilation": 1,
    "ceil_mode": False,
    "return_indices": False,
}


@register_function_rule(F.max_pool2d, torch.max_pool2d)
def max_pool_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)``."""
    b = _MAX_DEFAULTS | dict(zip(_MAX_ARGS, args, strict=False)) | kwargs
    if b["return_indices"]:
        raise ctx.refuse("returns pooling indices; no masking rule")
    window = Window.make(b["kernel_size"], b["stride"], b["padding"], b["dilation"], b["ceil_mode"])
    rest = {k: v for k, v in b.items() if k != "input"}
    return masked_max_pool(ctx, b["input"], window, lambda t: target(t, **rest))


@register_module_rule(nn.AvgPool2d)
def avg_pool_module(ctx: Context, module: nn.AvgPool2d, args: tuple, kwargs: dict) -> MT:
    """``nn.AvgPool2d``."""
    window = Window.make(module.kernel_size, module.stride, module.padding, 1, module.ceil_mode)
    renorm = not module.count_include_pad and module.divisor_override is None
    return masked_avg_pool(ctx, _first(args, kwargs), window, module, renormalise=renorm)


_AVG_ARGS = (
    "input",
    "kernel_size",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
    "divisor_override",
)
_AVG_DEFAULTS = {
    "stride": None,
    "padding": 0,
    "ceil_mode": False,
    "count_include_pad": True,
    "divisor_override": None,
}


@register_function_rule(F.avg_pool2d, torch._C._nn.avg_pool2d)
def avg_pool_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad)``."""
    b = _AVG_DEFAULTS | dict(zip(_AVG_ARGS, args, strict=False)) | kwargs
    window = Window.make(b["kernel_size"], b["stride"], b["padding"], 1, b["ceil_mode"])
    renorm = not b["count_include_pad"] and b["divisor_override"] is None
    rest = {k: v for k, v in b.items() if k != "input"}
    return masked_avg_pool(ctx, b["input"], window, lambda t: target(t, **rest), renormalise=renorm)


# --- adaptive pools -----------------------------------------------------------------------


def _adaptive(ctx: Context, x: Any, output_size: Any, how: str, run: Any) -> Any:
    x = require_nchw(ctx, x)
    h, w = x.mask.hw
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    size = (h if size[0] is None else int(size[0]), w if size[1] is None else int(size[1]))
    if size == (1, 1):
        ctx.record("global", None, (h, w), (1, 1))
        return masked_reduce(ctx, x, how, (2, 3), keepdim=True)
    if size == (h, w):
        ctx.record("identity", None, (h, w), size)
        return MT(run(x.value), x.mask, NCHW)
    # general adaptive pooling: bins of varying size; fill, pool, visible if any visible
    if how == "mean":
        out = run(zero_fill(x))
        if ctx.variant is Variant.CROP and not x.mask.all_visible():
            work = work_dtype(out.dtype)
            share = x.mask.memo(
                ("adaptive-share", size, work),
                lambda: F.adaptive_avg_pool2d(x.mask.as_float(work), size),
            )
            out = out * torch.where(share > 0, 1.0 / share.clamp(min=1e-12), 0.0).to(out.dtype)
    else:
        out = run(value_fill(x, float("-inf") if ctx.variant is Variant.CROP else 0.0))
    keep = x.mask.memo(
        ("adaptive-mask", size), lambda: F.adaptive_max_pool2d(x.mask.as_float(), size) > 0
    )
    ctx.record("inexact", None, (h, w), size, note=f"adaptive pooling to {size}")
    return MT(out, x.mask.derive(keep), NCHW)


@register_module_rule(nn.AdaptiveAvgPool2d)
def adaptive_avg_module(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``nn.AdaptiveAvgPool2d``: global (1 x 1) is a masked mean."""
    return _adaptive(ctx, _first(args, kwargs), module.output_size, "mean", module)


@register_module_rule(nn.AdaptiveMaxPool2d)
def adaptive_max_module(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``nn.AdaptiveMaxPool2d``: global (1 x 1) is a max over visible positions."""
    if module.return_indices:
        raise ctx.refuse("returns pooling indices; no masking rule")
    return _adaptive(ctx, _first(args, kwargs), module.output_size, "amax", module)


@register_function_rule(F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d)
def adaptive_avg_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.adaptive_avg_pool2d(x, output_size)``."""
    size = args[1] if len(args) > 1 else kwargs["output_size"]
    return _adaptive(ctx, _first(args, kwargs), size, "mean", lambda t: target(t, size))


@register_function_rule(F.adaptive_max_pool2d)
def adaptive_max_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.adaptive_max_pool2d(x, output_size)``."""
    size = args[1] if len(args) > 1 else kwargs["output_size"]
    if args[2] if len(args) > 2 else kwargs.get("return_indices", False):
        raise ctx.refuse("returns pooling indices; no masking rule")
    return _adaptive(ctx, _first(args, kwargs), size, "amax", lambda t: target(t, size))


# --- upsampling ---------------------------------------------------------------------------


def _upsample(ctx: Context, x: Any, mode: str, run: Any) -> MT:
    x = require_nchw(ctx, x)
    nearest = mode in ("nearest", "nearest-exact")
    if nearest:
        filled = x.value  # each output copies one input position
    elif ctx.variant is Variant.PAPER:
        filled = neighbour_fill(x, 2 if mode == "bicubic" else 1)
    else:
        filled = zero_fill(x)
    out = run(filled)
    out_hw = (out.shape[-2], out.shape[-1])
    mask_mode = "nearest" if (nearest or not ctx.variant.dilates) else mode

    def compute() -> torch.Tensor:
        kwargs = {} if mask_mode.startswith("nearest") else {"align_corners": False}
        up = F.interpolate(x.mask.as_float(), size=out_hw, mode=mask_mode, **kwargs)
        return up > 0

    keep = x.mask.memo(("upsample", out_hw, mask_mode), compute)
    h, w = x.mask.hw
    exact = nearest and out_hw[0] % h == 0 and out_hw[1] % w == 0
    note = "" if exact else f"{mode} upsampling"
    ctx.record("upsample" if exact else "inexact", None, (h, w), out_hw, note)
    return MT(out, x.mask.derive(keep), NCHW)


@register_module_rule(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def upsample_module(ctx: Context, module: nn.Upsample, args: tuple, kwargs: dict) -> MT:
    """``nn.Upsample`` and friends."""
    return _upsample(ctx, _first(args, kwargs), module.mode, module)


@register_function_rule(F.interpolate)
def interpolate_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``F.interpolate(x, size, scale_factor, mode, ...)``."""
    names = ("input", "size", "scale_factor", "mode", "align_corners")
    b = dict(zip(names, args, strict=False)) | kwargs
    rest = {k: v for k, v in b.items() if k != "input"}
    return _upsample(ctx, b["input"], b.get("mode", "nearest"), lambda t: target(t, **rest))


# --- timm modules -------------------------------------------------------------------------


def _register_timm() -> None:
    try:
        from timm.layers.blur_pool import BlurPool2d
        from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
    except ImportError:  # pragma: no cover
        return

    def same_window(module: nn.Module, hw: tuple[int, int], dilation: Any = 1) -> Window:
        base = Window.make(module.kernel_size, module.stride, 0, dilation, module.ceil_mode)
        top, bottom = same_padding(hw[0], base.kernel[0], base.stride[0], base.dilation[0])
        left, right = same_padding(hw[1], base.kernel[1], base.stride[1], base.dilation[1])
        return Window(
            base.kernel, base.stride, base.dilation, (top, bottom, left, right), base.ceil_mode
        )

    @register_module_rule(MaxPool2dSame)
    def max_pool_same(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> MT:
        """timm ``MaxPool2dSame``: TensorFlow "SAME" padding with -inf."""
        x = require_nchw(ctx, _first(args, kwargs))
        window = same_window(module, x.mask.hw, module.dilation)
        return masked_max_pool(ctx, x, window, module, kind="same", pool=False)

    @register_module_rule(AvgPool2dSame)
    def avg_pool_same(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> MT:
        """timm ``AvgPool2dSame``: explicit zero "SAME" padding, counted in the divisor."""
        x = require_nchw(ctx, _first(args, kwargs))
        window = same_window(module, x.mask.hw)
        renorm = not module.count_include_pad
        return masked_avg_pool(ctx, x, window, module, renormalise=renorm, kind="same", pool=False)

    @register_module_rule(BlurPool2d)
    def blur_pool(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> MT:
        """timm ``BlurPool2d``: fixed binomial depthwise conv with reflect padding."""
        x = require_nchw(ctx, _first(args, kwargs))
        pad = module.padding  # [left, right, top, bottom], all equal
        window = Window.make(module.filt_size, module.stride, pad[0], 1)
        out = module(fill_for_window(ctx.variant, x, window))
        out_hw = (out.shape[-2], out.shape[-1])
        mask = propagate(ctx.variant, x.mask, window, out_hw)
        note = "" if module.pad_mode == "constant" else f"{module.pad_mode} padding"
        ctx.record("inexact" if note else "window", window, x.mask.hw, out_hw, note)
        return MT(out, mask, NCHW)


_register_timm()
