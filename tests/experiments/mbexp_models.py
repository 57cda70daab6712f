"""Tiny models for the experiment tests (importable as ``mbexp_models:NAME`` by the CLI)."""

from __future__ import annotations

import torch
from torch import nn

import maskbench as mb

#: Class names of the stand-in benchmark model.
CLASSES = ("disk", "square", "triangle", "star", "cross", "ring", "crescent", "heart", "l_shape")


def tiny_resnet() -> mb.NormalizedModel:
    """A narrow timm ResNet (random, seeded) with the benchmark's 9 classes, 64 px input."""
    import timm

    torch.manual_seed(0)
    network = timm.create_model(
        "resnet18",
        pretrained=False,
        num_classes=len(CLASSES),
        layers=[1, 1, 1, 1],
        channels=[8, 16, 32, 64],
    )
    return mb.NormalizedModel(
        network,
        name="tiny_resnet",
        weights="random",
        weights_source="seed=0",
        classes=CLASSES,
        input_size=(64, 64),
    ).eval()


class SegmentLinearModel(nn.Module):
    """Logit 0 = bias + sum_s w_s * mean(pixel value over segment s); logit 1 = 0.

    On an all-white image under the ``black`` strategy, the mean over a segment is 1
    when the segment is kept and 0 when removed, so logit 0 is exactly
    ``bias + sum_s w_s * z_s``: a known linear function of the LIME design.
    """

    def __init__(self, segments: torch.Tensor, weights: torch.Tensor, bias: float = 0.0):
        super().__init__()
        num = int(segments.max()) + 1
        one_hot = torch.nn.functional.one_hot(segments.flatten(), num).double()
        self.register_buffer("pool", one_hot / one_hot.sum(0, keepdim=True))  # (HW, S)
        self.register_buffer("w", weights.double())
        self.bias = float(bias)
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # device/dtype probe

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grey = images.double().mean(dim=1).flatten(1)  # (B, HW)
        logit = grey @ self.pool @ self.w + self.bias
        return torch.stack([logit, torch.zeros_like(logit)], dim=1).to(images.dtype)
