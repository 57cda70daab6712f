"""Shape ops: they move data between dims, so the mask's layout has to follow.

Allowed: any rearrangement that keeps batch and both spatial dims whole (permute,
transpose, channel split / chunk / slicing / concat, reshapes of the channel dims,
(un)squeezing non-spatial dims). Flattening space into features is refused unless the
spatial size is 1 x 1, where it is the global pooling of a single position (removed
positions give 0, the masked mean of nothing).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn

from maskbench.engine.fill import zero_fill
from maskbench.engine.masks import MT, Layout
from maskbench.engine.registry import (
    Context,
    common_mask,
    masked_in,
    normalize_dim,
    register_function_rule,
    register_method_rule,
    register_module_rule,
    unwrap,
)

__all__: list[str] = []


def _check_free_dim(ctx: Context, x: MT, dim: int, what: str) -> int:
    d = normalize_dim(ctx, dim, x.layout.ndim)
    if d == 0:
        raise ctx.refuse(f"{what} along the batch dim of a masked activation")
    if d in (x.layout.h, x.layout.w):
        raise ctx.refuse(f"{what} along a spatial dim; no masking rule")
    return d


# --- flatten ------------------------------------------------------------------------------


def _flatten(ctx: Context, x: MT, start: int, end: int, run: Any) -> Any:
    ndim = x.layout.ndim
    s, e = normalize_dim(ctx, start, ndim), normalize_dim(ctx, end, ndim)
    if s > e:
        raise ctx.refuse(f"flattens an empty dim range {start}..{end}")
    if s == 0:
        raise ctx.refuse("flattens the batch dim of a masked activation")
    spatial = [d for d in (x.layout.h, x.layout.w) if s <= d <= e]
    if spatial:
        if x.mask.hw != (1, 1):
            raise ctx.refuse(
                f"flattens spatial dims of size {x.mask.hw} into features, mixing "
                "positions; no masking rule (pool over space first)"
            )
        ctx.record("global", None, (1, 1), (1, 1))
        visible = zero_fill(x)
        return run(visible)
    shift = e - s
    h = x.layout.h - (shift if x.layout.h > e else 0)
    w = x.layout.w - (shift if x.layout.w > e else 0)
    return MT(run(x.value), x.mask, Layout(ndim - shift, h, w))


@register_module_rule(nn.Flatten)
def flatten_module(ctx: Context, module: nn.Flatten, args: tuple, kwargs: dict) -> Any:
    """``nn.Flatten(start_dim, end_dim)``."""
    x = args[0]
    return _flatten(ctx, x, module.start_dim, module.end_dim, module)


@register_method_rule("flatten")
@register_function_rule(torch.flatten)
def flatten_call(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``x.flatten(start_dim, end_dim)`` / ``torch.flatten``."""
    x = args[0]
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)

    def run(v: torch.Tensor) -> torch.Tensor:
        return v.flatten(start, end)

    return _flatten(ctx, x, start, end, run)


# --- permute / transpose / (un)squeeze ----------------------------------------------------


def _dims_arg(args: tuple, kwargs: dict, name: str) -> list[int]:
    if name in kwargs:
        dims = kwargs[name]
    elif len(args) == 2 and isinstance(args[1], (tuple, list)):
        dims = args[1]
    else:
        dims = args[1:]
    return [int(d) for d in dims]


@register_method_rule("permute")
@register_function_rule(torch.permute)
def permute_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``x.permute(dims)``: the spatial dims move with the data (e.g. NCHW -> NHWC)."""
    x = args[0]
    dims = [normalize_dim(ctx, d, x.layout.ndim) for d in _dims_arg(args, kwargs, "dims")]
    if dims[0] != 0:
        raise ctx.refuse("moves the batch dim of a masked activation")
    out = x.value.permute(dims)
    return MT(out, x.mask, Layout(x.layout.ndim, dims.index(x.layout.h), dims.index(x.layout.w)))


@register_method_rule("transpose", "swapaxes", "swapdims")
@register_function_rule(torch.transpose, torch.swapaxes, torch.swapdims)
def transpose_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``x.transpose(a, b)``."""
    x, a, b = args[0], args[1], args[2]
    ndim = x.layout.ndim
    a, b = normalize_dim(ctx, a, ndim), normalize_dim(ctx, b, ndim)
    if 0 in (a, b):
        raise ctx.refuse("moves the batch dim of a masked activation")
    swap = {a: b, b: a}
    out = x.value.transpose(a, b)
    return MT(
        out,
        x.mask,
        Layout(ndim, swap.get(x.layout.h, x.layout.h), swap.get(x.layout.w, x.layout.w)),
    )


@register_method_rule("unsqueeze")
@register_function_rule(torch.unsqueeze)
def unsqueeze_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``x.unsqueeze(d)``: a new size-1 dim (not before the batch)."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    d = normalize_dim(ctx, int(dim), x.layout.ndim + 1)
    if d == 0:
        raise ctx.refuse("inserts a dim before the batch dim of a masked activation")
    h = x.layout.h + (1 if x.layout.h >= d else 0)
    w = x.layout.w + (1 if x.layout.w >= d else 0)
    return MT(x.value.unsqueeze(d), x.mask, Layout(x.layout.ndim + 1, h, w))


@register_method_rule("squeeze")
@register_function_rule(torch.squeeze)
def squeeze_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``x.squeeze(d)`` of a non-spatial, non-batch dim."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    ndim = x.layout.ndim
    if dim is None:
        dims = [d for d in range(ndim) if x.value.shape[d] == 1]
    else:
        dims = [dim] if isinstance(dim, int) else list(dim)
        dims = [normalize_dim(ctx, d, ndim) for d in dims]
        dims = [d for d in dims if x.value.shape[d] == 1]
    for d in dims:
        _check_free_dim(ctx, x, d, "squeezes")
    h = x.layout.h - sum(d < x.layout.h for d in dims)
    w = x.layout.w - sum(d < x.layout.w for d in dims)
    out = x.value.squeeze(tuple(dims)) if dims else x.value
    return MT(out, x.mask, Layout(ndim - len(dims), h, w))


# --- reshape / view -----------------------------------------------------------------------


def _reshaped_layout(ctx: Context, x: MT, out: torch.Tensor) -> Layout:
    """Layout of a reshape, when it provably keeps batch and space intact."""
    shape_in = tuple(x.value.shape)
    shape_out = tuple(out.shape)
    layout = x.layout
    if shape_in == shape_out:
        return layout
    b = shape_in[0]
    h, w = x.mask.hw
    space_trailing = layout.h == layout.ndim - 2 and layout.w == layout.ndim - 1
    if space_trailing and len(shape_out) >= 3 and shape_out[0] == b and shape_out[-2:] == (h, w):
        return Layout(len(shape_out), len(shape_out) - 2, len(shape_out) - 1)
    channels_last = layout.h == 1 and layout.w == 2
    if channels_last and len(shape_out) >= 3 and shape_out[:3] == (b, h, w):
        return Layout(len(shape_out), 1, 2)
    raise ctx.refuse(
        f"reshapes a masked activation {shape_in} -> {shape_out} in a way that may move "
        "data across spatial positions; no masking rule"
    )


@register_method_rule("reshape", "view", "view_as", "reshape_as")
@register_function_rule(torch.reshape)
def reshape_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``x.reshape(shape)`` / ``x.view(shape)`` that keeps batch and spatial dims whole."""
    x = args[0]
    if not isinstance(x, MT):
        raise ctx.refuse("reshapes using a masked activation as the shape")
    rest = unwrap(args[1:])
    if isinstance(target, str):
        out = getattr(x.value, target)(*rest, **kwargs)
    else:
        out = target(x.value, *rest, **kwargs)
    return MT(out, x.mask, _reshaped_layout(ctx, x, out))


# --- indexing, split, cat -----------------------------------------------------------------


def _index_layout(ctx: Context, x: MT, index: Any) -> Layout:
    items = list(index) if isinstance(index, tuple) else [index]
    ndim = x.layout.ndim
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if any(i is Ellipsis for i in items):
        pos = next(k for k, i in enumerate(items) if i is Ellipsis)
        items = [*items[:pos], *[slice(None)] * (ndim - consumed), *items[pos + 1 :]]
    items += [slice(None)] * (ndim - sum(1 for i in items if i is not None))
    out_dim = 0
    in_dim = 0
    new_h = new_w = -1
    for item in items:
        if item is None:
            out_dim += 1
            continue
        whole = isinstance(item, slice) and item == slice(None)
        if in_dim in (0, x.layout.h, x.layout.w) and not whole:
            raise ctx.refuse("indexes into the batch or a spatial dim of a masked activation")
        if isinstance(item, (torch.Tensor, list)) and not whole:
            raise ctx.refuse("uses advanced indexing on a masked activation")
        if in_dim == x.layout.h:
            new_h = out_dim
        if in_dim == x.layout.w:
            new_w = out_dim
        if not isinstance(item, int):
            out_dim += 1
        in_dim += 1
    if in_dim != ndim:
        raise ctx.refuse("indexes a masked activation with too many indices")
    return Layout(out_dim, new_h, new_w)


@register_function_rule(operator.getitem)
def getitem_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """Indexing: tuples of masked values pass through; tensor slicing keeps space whole."""
    obj, index = args[0], args[1]
    if isinstance(obj, MT):
        if isinstance(index, MT):
            raise ctx.refuse("indexes with a masked activation")
        layout = _index_layout(ctx, obj, index)
        return MT(obj.value[index], obj.mask, layout)
    if isinstance(index, MT) or masked_in(index):
        raise ctx.refuse("indexes with a masked activation")
    return obj[index]


def _split(ctx: Context, target: Any, args: tuple, kwargs: dict, default_dim: int) -> Any:
    x = args[0]
    dim = kwargs.get("dim", args[2] if len(args) > 2 else default_dim)
    _check_free_dim(ctx, x, int(dim), "splits")
    if isinstance(target, str):
        parts = getattr(x.value, target)(*args[1:], **kwargs)
    else:
        parts = target(x.value, *args[1:], **kwargs)
    return tuple(MT(p, x.mask, x.layout) for p in parts)


@register_method_rule("split", "chunk", "tensor_split")
@register_function_rule(torch.split, torch.chunk, torch.tensor_split)
def split_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``split`` / ``chunk`` along channels: every part keeps the mask."""
    return _split(ctx, target, args, kwargs, 0)


@register_method_rule("unbind")
@register_function_rule(torch.unbind)
def unbind_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``unbind`` along a channel-like dim."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    d = _check_free_dim(ctx, x, int(dim), "unbinds")
    h = x.layout.h - (1 if x.layout.h > d else 0)
    w = x.layout.w - (1 if x.layout.w > d else 0)
    layout = Layout(x.layout.ndim - 1, h, w)
    return tuple(MT(p, x.mask, layout) for p in x.value.unbind(d))


@register_function_rule(torch.cat, torch.concat, torch.concatenate)
def cat_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """Concatenate along channels: visible where every masked part is visible.

    (In a DenseNet the parts' masks agree after intersection: the new features' mask is
    a dilation of the input's, so the block keeps the input's mask.)
    """
    tensors = args[0] if args else kwargs["tensors"]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    parts = masked_in(tensors)
    mask, layout = common_mask(ctx, parts)
    if any(isinstance(t, torch.Tensor) and t.dim() != layout.ndim for t in tensors):
        raise ctx.refuse("concatenates tensors of different ranks")
    d = normalize_dim(ctx, int(dim), layout.ndim)
    if d in (0, layout.h, layout.w):
        raise ctx.refuse("concatenates along the batch or a spatial dim; no masking rule")
    out = target(unwrap(list(tensors)), d)
    return MT(out, mask, layout)


@register_method_rule("expand", "repeat")
def expand_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """``expand`` / ``repeat`` that leave batch and space unchanged."""
    x = args[0]
    out = getattr(x.value, target)(*unwrap(args[1:]), **kwargs)
    h, w = x.mask.hw
    if (
        out.dim() != x.layout.ndim
        or out.shape[0] != x.value.shape[0]
        or out.shape[x.layout.h] != h
        or out.shape[x.layout.w] != w
    ):
        raise ctx.refuse("expands the batch or spatial dims of a masked activation")
    return MT(out, x.mask, x.layout)


@register_function_rule(torch.stack)
def stack_rule(ctx: Context, target: Any, args: tuple, kwargs: dict) -> MT:
    """Stack along a new non-batch dim (selective-kernel branches): masks intersect."""
    tensors = args[0] if args else kwargs["tensors"]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
    mask, layout = common_mask(ctx, masked_in(tensors))
    d = normalize_dim(ctx, int(dim), layout.ndim + 1)
    if d == 0:
        raise ctx.refuse("stacks masked activations along the batch dim")
    h = layout.h + (1 if layout.h >= d else 0)
    w = layout.w + (1 if layout.w >= d else 0)
    out = target(unwrap(list(tensors)), d)
    return MT(out, mask, Layout(layout.ndim + 1, h, w))
