"""Convolutions: ``nn.Conv2d``, ``F.conv2d`` and timm's dynamic-"same" ``Conv2dSame``.

Per variant, a k x k conv (k > 1) reads

* ``PAPER``: neighbour padding of ``d * (k - 1)`` rings (then zeros);
* ``ZERO`` and ``CROP``: zeros;
* ``PARTIAL_CONV``: zeros, output rescaled by (in-image window size / visible count),
  bias added after the rescale.

1 x 1 convs read only the position they write: no fill. The output mask is the
dilation ``max_pool(M, k, s, p, d)`` (every variant but ``CROP``) or the stride
subsampling of ``M`` at the window centres (``CROP``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskbench.engine.fill import neighbour_fill, zero_fill
from maskbench.engine.masks import (
    MT,
    NCHW,
    Mask,
    Window,
    dilate,
    same_padding,
    subsample,
    window_count,
    work_dtype,
)
from maskbench.engine.registry import (
    Context,
    register_function_rule,
    register_module_rule,
)
from maskbench.engine.variants import Variant

__all__ = ["conv_window", "fill_for_window", "masked_conv", "propagate", "require_nchw"]

Run = Callable[[torch.Tensor], torch.Tensor]


def require_nchw(ctx: Context, x: Any) -> MT:
    """The masked (B, C, H, W) input of a spatial op, or a refusal."""
    if not isinstance(x, MT):
        raise ctx.refuse("receives its masked input in an unexpected argument")
    if not x.layout.is_nchw:
        raise ctx.refuse(
            f"is a spatial op on an activation whose spatial dims are {x.layout.h},"
            f"{x.layout.w} (expected a (B, C, H, W) activation)"
        )
    return x


def conv_window(
    weight_hw: tuple[int, int],
    stride: Any,
    padding: Any,
    dilation: Any,
    in_hw: tuple[int, int],
    *,
    same_dynamic: bool = False,
) -> Window:
    """The window of a conv, resolving string and TensorFlow-"same" padding."""
    base = Window.make(weight_hw, stride, 0, dilation)
    if same_dynamic:
        top, bottom = same_padding(in_hw[0], base.kernel[0], base.stride[0], base.dilation[0])
        left, right = same_padding(in_hw[1], base.kernel[1], base.stride[1], base.dilation[1])
        return Window(base.kernel, base.stride, base.dilation, (top, bottom, left, right))
    if isinstance(padding, str):
        if padding == "valid":
            return base
        if padding == "same":
            pads = []
            for k, d in zip(base.kernel, base.dilation, strict=True):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return Window(base.kernel, base.stride, base.dilation, tuple(pads))
        raise ValueError(f"unknown conv padding {padding!r}")
    return Window.make(weight_hw, stride, padding, dilation)


def propagate(
    variant: Variant, mask: Mask, window: Window, out_hw: tuple[int, int], *, pool: bool = False
) -> Mask:
    """The output mask of a windowed op: dilation, or centre subsampling for ``CROP``."""
    if variant.dilates:
        return dilate(mask, window, out_hw, pool=pool)
    return subsample(mask, window, out_hw)


def fill_for_window(variant: Variant, x: MT, window: Window) -> torch.Tensor:
    """What a conv-like op with ``window`` reads: neighbour padding (``PAPER``) or zeros."""
    if window.is_pointwise:
        return x.value
    if variant is Variant.PAPER:
        return neighbour_fill(x, window.rings())
    return zero_fill(x)


def _in_image_count(mask: Mask, window: Window, dtype: torch.dtype) -> torch.Tensor:
    """In-image positions of each window, (1, 1, h', w'): geometry only, so computed
    once per forward for all masks of the same size."""

    def compute() -> torch.Tensor:
        ones = torch.ones((1, 1, *mask.hw), dtype=dtype, device=mask.keep.device)
        t, b, left, r = window.pad
        kernel = mask.ones_kernel(window.kernel, dtype)
        return F.conv2d(
            F.pad(ones, (left, r, t, b)), kernel, None, window.stride, 0, window.dilation
        ).round()

    return mask.shared_memo(("in-image", window.key(), mask.hw, dtype), compute)


def _partial_ratio(mask: Mask, window: Window, out_hw: tuple[int, int], dtype: torch.dtype):
    def compute() -> torch.Tensor:
        work = work_dtype(dtype)
        visible = window_count(mask, window, out_hw).to(work)
        in_image = _in_image_count(mask, window, work)
        ratio = torch.where(visible > 0, in_image / visible.clamp(min=1.0), mask.scalar(0.0, work))
        return ratio.to(dtype)

    return mask.memo(("partial-ratio", window.key(), out_hw, dtype), compute)


def masked_conv(
    ctx: Context,
    x: MT,
    window: Window,
    run: Run,
    run_without_bias: Run,
    bias: torch.Tensor | None,
    *,
    kind: str = "window",
    note: str = "",
) -> MT:
    """Apply a convolution to a masked activation under the context's variant.

    ``run`` computes the op itself (with bias) on a filled input; ``run_without_bias``
    the same without bias (partial convolutions add the bias after rescaling).
    """
    x = require_nchw(ctx, x)
    variant = ctx.variant
    filled = fill_for_window(variant, x, window)
    if variant is Variant.PARTIAL_CONV and not window.is_pointwise and not x.mask.all_visible():
        out = run_without_bias(filled)
        out_hw = (out.shape[-2], out.shape[-1])
        out = out * _partial_ratio(x.mask, window, out_hw, out.dtype)
        if bias is not None:
            out = out + bias.to(out.dtype).view(1, -1, 1, 1)
    else:
        out = run(filled)
        out_hw = (out.shape[-2], out.shape[-1])
    mask = propagate(variant, x.mask, window, out_hw)
    ctx.record(kind, window, x.mask.hw, out_hw, note)
    return MT(out, mask, NCHW)


def _first(args: tuple, kwargs: dict, name: str = "input") -> Any:
    return args[0] if args else kwargs[name]


@register_module_rule(nn.Conv2d)
def conv2d_module(ctx: Context, module: nn.Conv2d, args: tuple, kwargs: dict) -> MT:
    """``nn.Conv2d`` (any padding mode, groups, dilation, string padding)."""
    x = require_nchw(ctx, _first(args, kwargs))
    window = conv_window(
        tuple(module.weight.shape[-2:]),
        module.stride,
        module.padding,
        module.dilation,
        x.mask.hw,
    )
    note = "" if module.padding_mode == "zeros" else f"padding_mode={module.padding_mode}"
    return masked_conv(
        ctx,
        x,
        window,
        module,
        lambda t: module._conv_forward(t, module.weight, None),
        module.bias,
        kind="window" if not note else "inexact",
        note=note,
    )


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


@register_function_rule(F.conv2d, torch.conv2d)
def conv2d_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``F.conv2d(input, weight, bias, stride, padding, dilation, groups)``."""
    bound = _CONV_DEFAULTS | dict(zip(_CONV_ARGS, args, strict=False)) | kwargs
    if any(isinstance(bound[k], MT) for k in ("weight", "bias")):
        raise ctx.refuse("uses a masked activation as a conv weight; no masking rule")
    x = require_nchw(ctx, bound["input"])
    weight, bias = bound["weight"], bound["bias"]
    window = conv_window(
        tuple(weight.shape[-2:]),
        bound["stride"],
        bound["padding"],
        bound["dilation"],
        x.mask.hw,
    )
    rest = (bound["stride"], bound["padding"], bound["dilation"], bound["groups"])
    return masked_conv(
        ctx,
        x,
        window,
        lambda t: target(t, weight, bias, *rest),
        lambda t: target(t, weight, None, *rest),
        bias,
    )


def _register_timm() -> None:
    try:
        from timm.layers.conv2d_same import Conv2dSame
    except ImportError:  # pragma: no cover - timm is a dependency, but stay optional
        return

    @register_module_rule(Conv2dSame)
    def conv2d_same_module(ctx: Context, module: nn.Conv2d, args: tuple, kwargs: dict) -> MT:
        """timm ``Conv2dSame``: TensorFlow "SAME" padding computed from the input size."""
        x = require_nchw(ctx, _first(args, kwargs))
        window = conv_window(
            tuple(module.weight.shape[-2:]),
            module.stride,
            0,
            module.dilation,
            x.mask.hw,
            same_dynamic=True,
        )
        t, b, left, r = window.pad

        def without_bias(v: torch.Tensor) -> torch.Tensor:
            v = F.pad(v, (left, r, t, b))
            return F.conv2d(
                v, module.weight, None, module.stride, 0, module.dilation, module.groups
            )

        return masked_conv(ctx, x, window, module, without_bias, module.bias, kind="same")


_register_timm()
