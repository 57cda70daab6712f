"""Input-space fills against exact, independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from scipy import ndimage, stats

import maskbench as mb
from maskbench import testing as mbt
from maskbench.models import IMAGENET_MEAN

SIZE = (24, 20)
FILLS = ["black", "grey", "image_mean", "blur", "noise", "inpaint_neighbor", "inpaint_linear"]


def batch(seed: int = 0, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@given(spec=mbt.mask_specs(SIZE, patch=4))
@settings(max_examples=25)
def test_fills_keep_kept_pixels_and_shape(spec):
    images = batch()
    keep = spec.build(SIZE).expand(3, 1, *SIZE)
    for name in FILLS:
        filled = mb.get_strategy(name).fill(images, keep)
        assert filled.shape == images.shape and filled.dtype == images.dtype
        assert torch.equal(filled[keep.expand_as(images)], images[keep.expand_as(images)]), name
        assert bool(torch.isfinite(filled).all()), name


def test_black_and_grey_paint_constants():
    images = batch()
    keep = mb.rectangle_masks(SIZE, [(2, 3, 5, 6)])
    removed = ~keep.expand_as(images)
    black = mb.get_strategy("black").fill(images, keep)
    assert bool((black[removed] == 0).all())
    grey = mb.get_strategy("grey").fill(images, keep)
    for c, value in enumerate(IMAGENET_MEAN):
        assert bool((grey[:, c][removed[:, c]] == torch.tensor(value)).all())


def test_image_mean_is_each_images_mean_over_kept_pixels():
    images = batch()
    keep = torch.stack(
        [
            mb.rectangle_masks(SIZE, [(0, 0, 4, 4)])[0],
            mb.rectangle_masks(SIZE, [(10, 5, 7, 3)])[0],
            torch.zeros(1, *SIZE, dtype=torch.bool),
        ]
    )
    filled = mb.get_strategy("image_mean").fill(images, keep)
    for i in range(3):
        kept = keep[i, 0]
        expected = (
            images[i][:, kept].double().mean(dim=1)
            if kept.any()
            else torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
        )
        removed_pixels = filled[i][:, ~kept]
        assert torch.allclose(
            removed_pixels.double(), expected[:, None].expand_as(removed_pixels), atol=1e-6
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_image_mean_of_large_half_precision_images_is_the_mean(dtype):
    # 300 x 300 = 90,000 kept pixels: a count summed in float16 overflows (65504) and
    # the fill became 0; bfloat16 counts only to 256 exactly.
    generator = torch.Generator().manual_seed(3)
    images = torch.rand((2, 3, 300, 300), generator=generator).to(dtype)
    keep = torch.ones((2, 1, 300, 300), dtype=torch.bool)
    keep[:, :, :10, :10] = False
    filled = mb.get_strategy("image_mean").fill(images, keep)
    wide = images.double()
    expected = (wide.sum(dim=(2, 3)) - wide[:, :, :10, :10].sum(dim=(2, 3))) / (300 * 300 - 100)
    got = filled[:, :, 0, 0].double()
    # One ulp of the dtype at about 0.5 (2**-11 float16, 2**-8 bfloat16): a float32 mean
    # rounded once to the dtype is within half of it.
    tolerance = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[dtype]
    assert torch.allclose(got, expected, atol=tolerance, rtol=0)


def gaussian_reference(image: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Separable Gaussian with explicit weights, mirror borders (torchvision's 'reflect')."""
    half = size // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    weights /= weights.sum()
    out = ndimage.correlate1d(image, weights, axis=-1, mode="mirror")
    return ndimage.correlate1d(out, weights, axis=-2, mode="mirror")


@pytest.mark.parametrize("sigma", [1.0, 2.5, 8.0])
def test_blur_matches_an_independent_gaussian(sigma):
    images = batch(1)
    strategy = mb.get_strategy("blur", sigma=sigma)
    keep = mb.rectangle_masks(SIZE, [(0, 0, 10, 10)])
    filled = strategy.fill(images, keep)
    size = strategy.kernel_size(*SIZE)
    assert size % 2 == 1 and size <= 2 * min(SIZE) - 1
    reference = gaussian_reference(images.double().numpy(), sigma, size)
    removed = ~keep.expand_as(images)
    np.testing.assert_allclose(filled[removed].numpy(), reference[removed.numpy()], atol=2e-6)


def onion_peel_reference(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Slow, obvious onion peeling: ring by ring, each new pixel = mean of known 3x3."""
    values = np.where(keep[None], image, 0.0).astype(np.float64)
    known = keep.copy()
    height, width = keep.shape
    while not known.all():
        frontier = []
        for r in range(height):
            for c in range(width):
                if known[r, c]:
                    continue
                neighbours = [
                    (rr, cc)
                    for rr in range(max(r - 1, 0), min(r + 2, height))
                    for cc in range(max(c - 1, 0), min(c + 2, width))
                    if known[rr, cc]
                ]
                if neighbours:
                    mean = np.mean([values[:, rr, cc] for rr, cc in neighbours], axis=0)
                    frontier.append((r, c, mean))
        if not frontier:
            break
        for r, c, mean in frontier:
            values[:, r, c] = mean
            known[r, c] = True
    return values


@given(spec=mbt.partial_mask_specs((12, 10), patch=3))
@settings(max_examples=20)
def test_inpaint_neighbor_matches_slow_onion_peel(spec):
    image = batch(2, 1)[:, :, :12, :10].contiguous()
    keep = spec.build((12, 10))
    filled = mb.get_strategy("inpaint_neighbor").fill(image, keep)
    reference = onion_peel_reference(image[0].double().numpy(), keep[0, 0].numpy())
    np.testing.assert_allclose(filled[0].double().numpy(), reference, atol=1e-6)


def test_inpaint_neighbor_single_pixel_spreads_its_colour_and_empty_is_grey():
    image = batch(3, 2)
    keep = torch.zeros(2, 1, *SIZE, dtype=torch.bool)
    keep[0, 0, 5, 7] = True
    filled = mb.get_strategy("inpaint_neighbor").fill(image, keep)
    colour = image[0, :, 5, 7]
    assert torch.allclose(filled[0], colour[:, None, None].expand(3, *SIZE), atol=1e-6)
    assert torch.allclose(filled[1], torch.tensor(IMAGENET_MEAN)[:, None, None].expand(3, *SIZE))


def test_noise_is_uniform_seeded_and_keyed_by_mask():
    images = batch(4, 2)
    keep = torch.zeros(2, 1, *SIZE, dtype=torch.bool)
    keep[1, 0, :4] = True
    strategy = mb.get_strategy("noise", seed=5)
    filled = strategy.fill(images, keep)
    # alone, in reverse order, with other content: the same noise
    assert torch.equal(strategy.fill(images[1:], keep[1:])[0], filled[1])
    assert torch.equal(strategy.fill(images.flip(0), keep.flip(0))[1], filled[0])
    assert torch.equal(strategy.fill(torch.rand_like(images), keep)[0], filled[0])
    # another seed or another mask gives other noise
    assert not torch.equal(mb.get_strategy("noise", seed=6).fill(images, keep), filled)
    assert not torch.equal(filled[0, :, 10:], filled[1, :, 10:])
    # Kolmogorov-Smirnov against U(0, 1) on 1440 values; the fixed seeds make this
    # deterministic, and with alpha = 1e-3 a correct sampler fails 1 seed in 1000.
    values = filled[0].flatten().numpy()
    assert stats.kstest(values, "uniform").pvalue > 1e-3


def test_blur_and_noise_of_all_kept_masks_return_the_images():
    images = batch()
    keep = torch.ones(SIZE, dtype=torch.bool)
    for name in ["blur", "noise", "inpaint_neighbor"]:
        assert torch.equal(mb.get_strategy(name).fill(images, keep), images), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fills_follow_the_images_dtype(dtype):
    images = batch().to(dtype)
    keep = mb.rectangle_masks(SIZE, [(4, 4, 8, 8)])
    for name in FILLS:
        filled = mb.get_strategy(name).fill(images, keep)
        assert filled.dtype == dtype, name
        assert not math.isnan(float(filled.float().sum())), name
