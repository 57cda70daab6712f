"""Position-wise ops: an explicit whitelist, plus norms/linear layers checked per call.

Nothing here reads a position other than the one it writes, so the rule is
:func:`~maskbench.engine.registry.pointwise`: compute as usual, keep the mask
(intersected across inputs, e.g. the residual add of the paper). Anything that is not
listed here and has no rule elsewhere is refused.
"""

from __future__ import annotations

import builtins
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskbench.engine.masks import MT
from maskbench.engine.registry import (
    ELEMENTWISE_OPERATORS,
    Context,
    masked_in,
    normalize_dim,
    pointwise,
    register_function_rule,
    register_method_rule,
    register_module_rule,
)

POINTWISE_MODULES: tuple[type, ...] = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.ChannelShuffle,
    nn.LocalResponseNorm,
)

POINTWISE_FUNCTIONS: tuple[Any, ...] = (
    *ELEMENTWISE_OPERATORS,
    torch.add,
    torch.sub,
    torch.subtract,
    torch.mul,
    torch.multiply,
    torch.div,
    torch.divide,
    torch.true_divide,
    torch.pow,
    torch.neg,
    torch.abs,
    torch.exp,
    torch.log,
    torch.sqrt,
    torch.rsqrt,
    torch.square,
    torch.reciprocal,
    torch.sign,
    torch.erf,
    torch.clamp,
    torch.clip,
    torch.clamp_min,
    torch.clamp_max,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.lerp,
    torch.addcmul,
    torch.addcdiv,
    torch.nan_to_num,
    torch.zeros_like,
    torch.ones_like,
    torch.full_like,
    torch.empty_like,
    torch.relu,
    torch.relu_,
    torch.sigmoid,
    torch.tanh,
    torch.channel_shuffle,
    F.relu,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.prelu,
    F.rrelu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.hardshrink,
    F.softshrink,
    F.softplus,
    F.softsign,
    F.tanhshrink,
    F.logsigmoid,
    F.threshold,
    F.sigmoid,
    F.tanh,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
    F.local_response_norm,
    F.channel_shuffle,
)

POINTWISE_METHODS: tuple[str, ...] = (
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "pow",
    "pow_",
    "neg",
    "neg_",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "square",
    "reciprocal",
    "sign",
    "erf",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "relu",
    "relu_",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_min_",
    "clamp_max",
    "clamp_max_",
    "clip",
    "clip_",
    "maximum",
    "minimum",
    "lerp",
    "addcmul",
    "addcdiv",
    "nan_to_num",
    "masked_fill",
    "contiguous",
    "to",
    "float",
    "half",
    "bfloat16",
    "double",
    "type",
    "type_as",
    "detach",
    "clone",
    "expand_as",
    "requires_grad_",
    "zero_",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
)

# methods and attributes that return metadata, not data
METADATA_METHODS = ("size", "dim", "numel", "nelement", "element_size", "get_device")
METADATA_ATTRIBUTES = frozenset(
    {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "is_sparse"}
)


def _timm_activation_types() -> tuple[type, ...]:
    try:
        from timm.layers import activations
    except ImportError:
        return ()
    found = []
    for _, obj in inspect.getmembers(activations, inspect.isclass):
        if issubclass(obj, nn.Module) and obj.__module__ == activations.__name__:
            found.append(obj)
    return tuple(found)


def _timm_activation_functions() -> tuple[Any, ...]:
    try:
        from timm.layers import activations
    except ImportError:
        return ()
    names = (
        "swish",
        "mish",
        "sigmoid",
        "tanh",
        "hard_sigmoid",
        "hard_swish",
        "hard_mish",
        "gelu",
        "gelu_tanh",
        "quick_gelu",
    )
    return tuple(f for n in names if callable(f := getattr(activations, n, None)))


register_module_rule(*POINTWISE_MODULES, *_timm_activation_types())(pointwise)
register_function_rule(*POINTWISE_FUNCTIONS, *_timm_activation_functions())(pointwise)
register_method_rule(*POINTWISE_METHODS)(pointwise)


@register_method_rule(*METADATA_METHODS)
def metadata_method(ctx: Context, target: str, args: tuple, kwargs: dict) -> Any:
    """``x.size()``, ``x.dim()`` ...: metadata of a masked activation (no data read)."""
    self, *rest = args
    return getattr(self.value, target)(*rest, **kwargs)


@register_function_rule(builtins.getattr)
def metadata_attribute(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``x.shape``, ``x.dtype`` ... of a masked activation; other attributes are refused."""
    obj, name, *rest = args
    if name not in METADATA_ATTRIBUTES:
        raise ctx.refuse(f"reads attribute {name!r} of a masked activation", "getattr")
    return getattr(obj.value, name, *rest)


# --- batch norm -----------------------------------------------------------------------


def _check_batch_norm(ctx: Context, module: nn.Module) -> None:
    if module.training or getattr(module, "running_mean", None) is None:
        raise ctx.refuse(
            "uses batch statistics (training mode or no running stats), which mixes "
            "positions and samples; put the model in eval mode (model.eval())"
        )


@register_module_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def batch_norm_module(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Eval-mode batch norm is a per-channel affine map: position-wise."""
    _check_batch_norm(ctx, module)
    return pointwise(ctx, module, args, kwargs)


@register_function_rule(F.batch_norm)
def batch_norm_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.batch_norm`` with running statistics and ``training=False`` is position-wise."""
    names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    bound = dict(zip(names, args, strict=False)) | kwargs
    if bound.get("training", False) or bound.get("running_mean") is None:
        raise ctx.refuse(
            "uses batch statistics (training=True or no running stats); put the model "
            "in eval mode (model.eval())"
        )
    return pointwise(ctx, target, args, kwargs)


# --- per-position linear maps, layer norm, softmax --------------------------------------


def _trailing_dims_are_not_spatial(ctx: Context, x: MT, count: int, what: str) -> None:
    ndim = x.layout.ndim
    dims = set(range(ndim - count, ndim))
    if x.layout.h in dims or x.layout.w in dims:
        raise ctx.refuse(
            f"{what} over a spatial dim of a masked activation (layout {tuple(x.layout)}) "
            "mixes positions; no masking rule"
        )


@register_module_rule(nn.Linear, nn.Bilinear)
def linear_module(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """A linear layer on the last dim is position-wise when that dim is not spatial."""
    for x in masked_in((args, kwargs)):
        _trailing_dims_are_not_spatial(ctx, x, 1, "applies a linear map")
    return pointwise(ctx, module, args, kwargs)


@register_function_rule(F.linear)
def linear_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.linear`` acts on the last dim: position-wise when that dim is not spatial."""
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, MT):
        _trailing_dims_are_not_spatial(ctx, x, 1, "applies a linear map")
    if any(isinstance(a, MT) for a in args[1:]):
        raise ctx.refuse("uses a masked activation as a weight")
    return pointwise(ctx, target, args, kwargs)


@register_module_rule(nn.LayerNorm, nn.RMSNorm, inherit=True)
def layer_norm_module(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Layer norm over trailing non-spatial dims (channels) is position-wise."""
    for x in masked_in((args, kwargs)):
        _trailing_dims_are_not_spatial(ctx, x, len(module.normalized_shape), "normalises")
    return pointwise(ctx, module, args, kwargs)


@register_function_rule(F.layer_norm, F.rms_norm)
def layer_norm_function(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``F.layer_norm`` over trailing non-spatial dims is position-wise."""
    x = args[0] if args else kwargs["input"]
    shape = args[1] if len(args) > 1 else kwargs["normalized_shape"]
    count = 1 if isinstance(shape, int) else len(shape)
    if isinstance(x, MT):
        _trailing_dims_are_not_spatial(ctx, x, count, "normalises")
    return pointwise(ctx, target, args, kwargs)


def _softmax_dim(ctx: Context, x: MT, dim: Any) -> None:
    if dim is None:
        raise ctx.refuse("without an explicit dim over a masked activation")
    d = normalize_dim(ctx, int(dim), x.layout.ndim)
    if d in (x.layout.h, x.layout.w, 0):
        raise ctx.refuse("normalises over a spatial or batch dim; no masking rule")


@register_module_rule(nn.Softmax, nn.LogSoftmax, nn.Softmin)
def softmax_module(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Softmax over channels is position-wise; over space it is refused."""
    for x in masked_in((args, kwargs)):
        _softmax_dim(ctx, x, module.dim)
    return pointwise(ctx, module, args, kwargs)


@register_function_rule(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)
@register_method_rule("softmax", "log_softmax")
def softmax_call(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """``softmax(x, dim)`` over channels is position-wise; over space it is refused."""
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if isinstance(x, MT):
        _softmax_dim(ctx, x, dim)
    return pointwise(ctx, target, args, kwargs)


# --- explicit refusals with a clearer reason than "no rule" ---------------------------


def _refuse_spatial_norm(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    raise ctx.refuse(
        "normalises with statistics over spatial positions; it has no masking rule "
        "(removed positions would change the statistics)"
    )


register_module_rule(nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)(
    _refuse_spatial_norm
)
register_function_rule(F.group_norm, F.instance_norm)(_refuse_spatial_norm)
