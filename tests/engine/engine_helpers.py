"""Helpers for the engine tests: coverage models with non-trivial random weights, masks."""

from __future__ import annotations

import torch
from torch import nn

# name -> kwargs for timm.create_model (pretrained=False is added)
MODEL_SPECS: dict[str, dict] = {
    "resnet18": {"model_name": "resnet18"},
    "resnet50": {"model_name": "resnet50"},
    "resnext50_32x4d": {"model_name": "resnext50_32x4d"},
    "wide_resnet50_2": {"model_name": "wide_resnet50_2"},
    "seresnet50": {"model_name": "seresnet50"},
    "resnet50d": {"model_name": "resnet50d"},
    "resnetaa50": {"model_name": "resnetaa50"},
    "densenet121": {"model_name": "densenet121"},
    "efficientnet_b0": {"model_name": "efficientnet_b0"},
    "tf_efficientnet_b0": {"model_name": "tf_efficientnet_b0"},
    "mobilenetv2_100": {"model_name": "mobilenetv2_100"},
    "mobilenetv3_large_100": {"model_name": "mobilenetv3_large_100"},
    "regnety_008": {"model_name": "regnety_008"},
    "convnext_tiny": {"model_name": "convnext_tiny"},
    "vgg16": {"model_name": "vgg16"},
    "resnet50_os16": {"model_name": "resnet50", "output_stride": 16},
}


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norms and layer scales non-trivial values (timm zero-inits some of them).

    With timm's init, the last BN of every residual branch has weight 0 (and ConvNeXt's
    layer scale is 1e-6), so branches would not reach the logits and masking bugs in
    them would go unnoticed.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=generator) * (high - low) + low

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(uniform(module.running_mean, -0.1, 0.1))
                module.running_var.copy_(uniform(module.running_var, 0.5, 1.5))
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                if module.bias is not None:
                    module.bias.copy_(uniform(module.bias, -0.1, 0.1))
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                with torch.no_grad():
                    param.copy_(uniform(param, 0.5, 1.0))
    return model


def make_timm_model(key: str) -> nn.Module:
    """A coverage model with random weights, in eval mode."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(pretrained=False, **MODEL_SPECS[key])
    return randomise_norms(model.eval())


def patch_mask(
    batch: int, size: int, patch: int, keep: float, seed: int, *, width: int | None = None
) -> torch.Tensor:
    """(B, 1, H, W) bool mask of random square patches, each kept with prob. ``keep``."""
    generator = torch.Generator().manual_seed(seed)
    width = width or size
    rows, cols = -(-size // patch), -(-width // patch)
    grid = torch.rand(batch, 1, rows, cols, generator=generator) < keep
    full = grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return full[:, :, :size, :width].contiguous()


def rect_mask(batch: int, height: int, width: int, top: int, left: int, h: int, w: int):
    """(B, 1, H, W) bool mask keeping one rectangle."""
    keep = torch.zeros(batch, 1, height, width, dtype=torch.bool)
    keep[:, :, top : top + h, left : left + w] = True
    return keep


def garbage_like(x: torch.Tensor, keep: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """``x`` with removed positions replaced by wild values: NaN, +-Inf, 1e30, noise."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator) * 1e3
    noise = noise.to(x.dtype)
    pick = torch.randint(0, 4, x.shape, generator=generator)
    noise[pick == 0] = float("nan")
    noise[pick == 1] = float("inf")
    noise[pick == 2] = float("-inf")
    return torch.where(keep, x, noise.to(x.device))
