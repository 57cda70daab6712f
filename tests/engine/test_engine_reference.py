"""Oracle: the engine's PAPER variant against a slow, explicit reference of the rules."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_timm_model, patch_mask, rect_mask
from reference_resnet import (
    TinyResNet,
    randomise_batch_norm,
    reference_timm_resnet,
    reference_tiny_resnet,
)

from maskbench.engine import Variant, masked_forward


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _masks(batch: int, size: int) -> torch.Tensor:
    keep = patch_mask(batch, size, 6, 0.5, seed=11)
    keep[0] = rect_mask(1, size, size, 5, 9, size // 2, size // 3)[0]
    if batch > 2:
        keep[2] = False
        keep[2, :, size // 2, size // 3] = True  # a single pixel
    return keep


@pytest.mark.parametrize("size", [48, 53])
def test_tiny_resnet_matches_reference(size):
    """Hand-built ResNet (BasicBlock, Bottleneck + SE, max pool, downsample)."""
    torch.manual_seed(0)
    model = TinyResNet().eval()
    randomise_batch_norm(model)
    x = torch.randn(4, 3, size, size)
    keep = _masks(4, size)
    expected = reference_tiny_resnet(model, x, keep)
    with torch.no_grad():
        got = masked_forward(model, x, keep, Variant.PAPER)
    assert _rel_err(got, expected) <= 1e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "seresnet50"])
def test_timm_resnet_matches_reference(name):
    """timm ResNets at a small image size, rules written out for the ResNet structure."""
    model = make_timm_model(name)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    keep = _masks(3, 64)
    expected = reference_timm_resnet(model, x, keep)
    with torch.no_grad():
        got = masked_forward(model, x, keep, Variant.PAPER)
    assert _rel_err(got, expected) <= 1e-4


def test_reference_differs_from_other_variants():
    """Sanity: the oracle is sensitive; ZERO and CROP do not match the PAPER reference."""
    torch.manual_seed(0)
    model = TinyResNet().eval()
    randomise_batch_norm(model)
    x = torch.randn(2, 3, 48, 48)
    keep = _masks(2, 48)
    expected = reference_tiny_resnet(model, x, keep)
    with torch.no_grad():
        for variant in (Variant.ZERO, Variant.CROP):
            assert _rel_err(masked_forward(model, x, keep, variant), expected) > 1e-3
