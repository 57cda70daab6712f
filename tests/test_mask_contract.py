"""The mask and image contract: every malformed input raises a specific error."""

from __future__ import annotations

import pytest
import torch

import maskbench as mb
from maskbench.masks import broadcast_batch, check_images, check_mask

SIZE = (8, 8)


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, *SIZE)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(8), "rank 1"),
        (torch.ones(1, 8, 8), "rank 3"),
        (torch.ones(1, 1, 1, 8, 8), "rank 5"),
        (torch.ones(2, 3, 8, 8), "one channel"),
        (torch.ones(1, 1, 8, 9), r"spatial size \(8, 9\)"),
        (torch.ones(7, 8), r"spatial size \(7, 8\)"),
        (torch.ones(3, 1, 8, 8), "batch 3 does not match the image batch 2"),
        (torch.full((1, 1, 8, 8), 0.5), "must be 0 or 1"),
        (torch.full((1, 1, 8, 8), 2), "must be 0 or 1"),
        (torch.full((1, 1, 8, 8), -1.0), "must be 0 or 1"),
        (torch.full((1, 1, 8, 8), float("nan")), "NaN"),
        (torch.ones(1, 1, 8, 8, dtype=torch.complex64), "complex64"),
        (torch.ones(0, 1, 8, 8), "empty batch"),
        ([[1, 0], [0, 1]], "torch.Tensor"),
    ],
)
def test_malformed_masks_raise_mask_error_naming_the_problem(mask, message):
    with pytest.raises(mb.MaskError, match=message):
        broadcast_batch(images(), mask)


def test_mask_on_another_device_is_refused_not_moved():
    mask = torch.ones(1, 1, *SIZE, dtype=torch.bool, device="meta")
    with pytest.raises(mb.MaskError, match="mask is on meta but the images are on cpu"):
        broadcast_batch(images(), mask)


@pytest.mark.parametrize(
    ("batch_images", "message"),
    [
        (torch.rand(3, 8, 8), "shape \\(B, C, H, W\\)"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "convert uint8"),
        (torch.rand(1, 3, 8, 8) * 255, "0-255"),
        (torch.randn(1, 3, 8, 8) * 2, "normalised"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN or Inf"),
        (torch.full((1, 3, 8, 8), float("inf")), "NaN or Inf"),
        (torch.rand(0, 3, 8, 8), "empty batch"),
    ],
)
def test_malformed_images_raise_image_error(batch_images, message):
    with pytest.raises(mb.ImageError, match=message):
        check_images(batch_images)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 2, 7, 3)])
def test_one_non_finite_pixel_among_valid_ones_is_found_and_counted(bad, where):
    batch_images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    batch_images[where] = bad
    with pytest.raises(mb.ImageError, match="contain 1 NaN or Inf values"):
        check_images(batch_images)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_valid_images_of_every_float_dtype_pass(dtype):
    batch_images = torch.rand(2, 3, 8, 8).to(dtype)
    assert check_images(batch_images) is batch_images


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32])
def test_binary_masks_of_any_dtype_become_bool(dtype):
    raw = (torch.arange(64).reshape(8, 8) % 3 == 0).to(dtype)
    keep = check_mask(raw, size=SIZE)
    assert keep.dtype == torch.bool
    assert keep.shape == (1, 1, 8, 8)
    assert torch.equal(keep[0, 0], raw.bool())


def test_broadcasting_shapes():
    x = images(2)
    hw = torch.ones(SIZE, dtype=torch.bool)
    out_x, out_m = broadcast_batch(x, hw)
    assert out_m.shape == (2, 1, 8, 8)
    assert out_x is x
    one = torch.zeros(1, 1, *SIZE)
    assert broadcast_batch(x, one)[1].shape == (2, 1, 8, 8)
    # one image, many masks: the image is shared as a view, not copied
    single = images(1)
    many = torch.ones(5, 1, *SIZE, dtype=torch.bool)
    out_x, out_m = broadcast_batch(single, many)
    assert out_x.shape == (5, 3, 8, 8)
    assert out_x.data_ptr() == single.data_ptr()
    assert out_m.shape == (5, 1, 8, 8)


def test_strategy_call_validates_masks(resnet18):
    strategy = mb.get_strategy("black")
    x = mb.sample_images(1, 32)
    with pytest.raises(mb.MaskError, match="must be 0 or 1"):
        strategy(resnet18, x, torch.full((32, 32), 0.3))
    with pytest.raises(mb.MaskError, match="spatial size"):
        strategy.fill(x, torch.ones(16, 16))
