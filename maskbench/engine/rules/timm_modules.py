"""Rules for timm's no-trace (leaf) modules that the coverage models contain.

fx does not trace into these (timm registers them as leaves because of data-dependent
control flow), so each needs a rule that mirrors its forward.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from maskbench.engine.masks import MT
from maskbench.engine.registry import (
    Context,
    describe,
    module_rule_for,
    pointwise,
    register_module_rule,
)
from maskbench.engine.rules.pool import adaptive_avg_function

__all__: list[str] = []


def _require_pointwise(ctx: Context, owner: nn.Module, child: nn.Module, role: str) -> None:
    if module_rule_for(child) is not pointwise:
        raise ctx.refuse(
            f"has a {role} {describe(child)} that is not a known position-wise op",
            describe(owner),
        )


def _register() -> None:
    try:
        from timm.layers import norm_act
        from timm.models.vgg import ConvMlp
    except ImportError:  # pragma: no cover
        return
    bn_act_types = tuple(
        t
        for t in (
            getattr(norm_act, "BatchNormAct2d", None),
            getattr(norm_act, "FrozenBatchNormAct2d", None),
        )
        if t is not None
    )

    @register_module_rule(*bn_act_types)
    def batch_norm_act(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """timm ``BatchNormAct2d``: eval-mode BN, dropout and activation: position-wise."""
        if module.training or getattr(module, "running_mean", None) is None:
            raise ctx.refuse(
                "uses batch statistics (training mode or no running stats), which mixes "
                "positions and samples; put the model in eval mode (model.eval())"
            )
        _require_pointwise(ctx, module, module.drop, "drop layer")
        _require_pointwise(ctx, module, module.act, "activation")
        return pointwise(ctx, module, args, kwargs)

    @register_module_rule(ConvMlp)
    def conv_mlp(ctx: Context, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """timm VGG ``ConvMlp``: (adaptive pool up to the kernel size), conv, act, conv, act."""
        x = args[0] if args else kwargs["x"]
        if not isinstance(x, MT):
            raise ctx.refuse("receives its masked input in an unexpected argument")
        k = module.input_kernel_size
        h, w = x.mask.hw
        if h < k or w < k:
            size = (max(k, h), max(k, w))
            x = adaptive_avg_function(ctx, F.adaptive_avg_pool2d, (x, size), {})
        for name in ("fc1", "act1", "drop", "fc2", "act2"):
            x = ctx.call(getattr(module, name), x, name=name)
        return x


_register()
