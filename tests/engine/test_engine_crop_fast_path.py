"""The layer_masking_crop strategy's bounding-box fast path equals the full computation."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_timm_model
from hypothesis import given, settings
from hypothesis import strategies as st

import maskbench as mb
from maskbench import invariants as inv
from maskbench import testing as mbt

FAST = mb.get_strategy("layer_masking_crop")
FULL = mb.get_strategy("layer_masking_crop", fast_path=False)
TOLERANCE = 1e-4  # crop-exact claims, float32, relative to the largest logit


@pytest.fixture(scope="module", params=["resnet18", "efficientnet_b0", "convnext_tiny"])
def model(request):
    return mb.wrap_model(make_timm_model(request.param), name=request.param)


def mixed_masks(size: tuple[int, int]) -> torch.Tensor:
    """Same-size boxes at different places, a full mask, an empty one, a thin strip."""
    height, width = size
    masks = mb.rectangle_masks(
        size,
        [(0, 0, 40, 40), (height - 40, width - 40, 40, 40), (5, 9, 1, 1), (0, 0, height, 7)],
    )
    return torch.cat(
        [
            masks,
            torch.ones(1, 1, *size, dtype=torch.bool),
            torch.zeros(1, 1, *size, dtype=torch.bool),
        ]
    )


@pytest.mark.parametrize("size", [(96, 96), (100, 84)])
def test_fast_path_equals_full_computation(model, size):
    masks = mixed_masks(size)
    images = torch.rand(masks.shape[0], 3, *size, generator=torch.Generator().manual_seed(0))
    gap, where = inv.relative_gap(FAST(model, images, masks), FULL(model, images, masks))
    assert gap <= TOLERANCE, where


@given(rect=mbt.rectangles((96, 96)), seed=mbt.seeds())
@settings(max_examples=8)
def test_fast_path_equals_full_computation_for_drawn_rectangles(rect, seed):
    model = mb.wrap_model(make_timm_model("resnet18"))
    mask = mb.rectangle_masks((96, 96), [rect])
    images = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(seed))
    gap, where = inv.relative_gap(FAST(model, images, mask), FULL(model, images, mask))
    assert gap <= TOLERANCE, f"{rect}: {where}"


@given(box=mbt.aligned_rectangles((128, 128), 32), seed=mbt.seeds())
@settings(max_examples=6)
def test_crop_equivalence_and_translation_through_the_strategy(box, seed):
    model = mb.wrap_model(make_timm_model("resnet18"))
    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed))
    result = inv.check_crop_equivalence(FAST, model, images, box)
    assert result.passed, result.message
    top, _, height, _ = box
    offset = (128 - height - top, 0)  # move the box to the bottom edge
    result = inv.check_translation_invariance(FAST, model, images, box, offset)
    assert result.passed, result.message


def test_models_needing_aligned_images_skip_the_fast_path_and_stay_exact():
    model = mb.wrap_model(make_timm_model("tf_efficientnet_b0"))
    masks = mixed_masks((100, 84))
    images = torch.rand(masks.shape[0], 3, 100, 84, generator=torch.Generator().manual_seed(1))
    assert FAST._boxes(model.network, model.normalize(images), masks) is None
    assert torch.equal(FAST(model, images, masks), FULL(model, images, masks))


def test_not_crop_applicable_models_run_the_full_computation():
    model = mb.wrap_model(make_timm_model("vgg16"))
    masks = mixed_masks((64, 64))
    images = torch.rand(masks.shape[0], 3, 64, 64)
    assert FAST._boxes(model.network, model.normalize(images), masks) is None
    out = FAST(model, images, masks)
    assert bool(torch.isfinite(out).all())


def test_boxes_are_stride_aligned_and_grouped_by_size():
    model = mb.wrap_model(make_timm_model("resnet18"))
    masks = mixed_masks((96, 96))
    boxes = FAST._boxes(model.network, model.normalize(torch.rand(6, 3, 96, 96)), masks)
    assert boxes[0] == (0, 64, 0, 64)
    assert boxes[1] == (32, 96, 32, 96)
    assert boxes[2] == (0, 32, 0, 32)
    assert boxes[3] == (0, 96, 0, 32)
    assert boxes[4] == (0, 96, 0, 96)
    assert boxes[5] is None


@pytest.mark.parametrize(
    "name", ["layer_masking", "layer_masking_zero", "partial_conv", "layer_masking_crop"]
)
def test_engine_strategies_need_a_normalising_model(name):
    net = make_timm_model("resnet18")
    with pytest.raises(mb.UnsupportedModelError, match="wrap_model"):
        mb.get_strategy(name)(net, torch.rand(1, 3, 32, 32), torch.ones(32, 32))


@given(batch=st.integers(1, 9))
@settings(max_examples=5)
def test_one_image_many_masks_chunked(batch):
    model = mb.wrap_model(make_timm_model("resnet18"))
    image = torch.rand(1, 3, 64, 64)
    masks = mb.random_removal_masks(mb.patch_grid((64, 64), 16), 0.5, batch, seed=batch)
    small = mb.get_strategy("layer_masking", batch_size=2)(model, image, masks)
    whole = mb.get_strategy("layer_masking")(model, image, masks)
    assert small.shape == (batch, 1000)
    assert inv.relative_gap(small, whole)[0] <= inv.rounding_tolerance(torch.float32)
