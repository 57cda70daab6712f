"""Every built-in input-space strategy keeps the claims it makes (hypothesis-drawn masks).

Model: timm resnet18 with seeded random weights; images: bundled photographs.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskbench as mb
from maskbench import invariants as inv
from maskbench import testing as mbt

SIZE = (64, 64)
INPUT_SPACE = ["black", "blur", "grey", "image_mean", "inpaint_linear", "inpaint_neighbor", "noise"]
EXAMPLES = settings(max_examples=6)


def claims_of(name: str) -> frozenset:
    return mb.get_strategy(name).claims


@pytest.mark.parametrize("name", INPUT_SPACE)
def test_identity(name, resnet18, photos):
    strategy = mb.get_strategy(name)
    assert mb.Claim.IDENTITY in strategy.claims
    result = inv.check_identity(strategy, resnet18, photos)
    assert result.passed, result.message
    assert result.gap == 0.0


@pytest.mark.parametrize("name", [n for n in INPUT_SPACE if "content_independence" in claims_of(n)])
@given(spec=mbt.partial_mask_specs(SIZE), seed=mbt.seeds())
@EXAMPLES
def test_content_independence(name, spec, seed, resnet18, photos):
    result = inv.check_content_independence(
        mb.get_strategy(name), resnet18, photos[:2], spec.build(SIZE), seed=seed
    )
    assert result.passed, f"{spec.describe()}: {result.message}"


@pytest.mark.parametrize("name", INPUT_SPACE)
@given(
    specs=st.lists(mbt.mask_specs(SIZE), min_size=3, max_size=3), perm=st.permutations([0, 1, 2])
)
@EXAMPLES
def test_batch_consistency(name, specs, perm, resnet18, photos):
    masks = torch.cat([s.build(SIZE) for s in specs])
    result = inv.check_batch_consistency(
        mb.get_strategy(name), resnet18, photos[:3], masks, permutation=perm
    )
    assert result.passed, f"{[s.describe() for s in specs]}: {result.message}"


@pytest.mark.parametrize("name", INPUT_SPACE)
@given(spec=mbt.mask_specs(SIZE))
@settings(max_examples=4)
def test_determinism_and_finiteness(name, spec, resnet18, photos):
    strategy = mb.get_strategy(name)
    mask = spec.build(SIZE)
    for result in (
        inv.check_determinism(strategy, resnet18, photos[:2], mask),
        inv.check_finite(strategy, resnet18, photos[:2], mask),
    ):
        assert result.passed, f"{spec.describe()}: {result.message}"


@pytest.mark.parametrize("name", INPUT_SPACE)
def test_finite_with_nothing_or_one_pixel_kept(name, resnet18, photos):
    strategy = mb.get_strategy(name)
    one = torch.zeros(SIZE, dtype=torch.bool)
    one[17, 40] = True
    for mask in (torch.zeros(SIZE, dtype=torch.bool), one):
        result = inv.check_finite(strategy, resnet18, photos[:2], mask)
        assert result.passed, result.message


def test_blur_really_leaks_which_is_why_it_does_not_claim_independence(resnet18, photos):
    mask = mb.rectangle_masks(SIZE, [(16, 16, 32, 32)], keep_inside=False)
    result = inv.check_content_independence(mb.get_strategy("blur"), resnet18, photos[:2], mask)
    assert not result.passed
    assert result.gap > 1e-3
    assert "FAILS" in result.message and "replaced by" in result.message


def test_a_leaky_strategy_that_claims_independence_is_caught(resnet18, photos):
    class LyingBlur(mb.get_strategy("blur").__class__):
        claims = mb.get_strategy("black").claims

    mask = mb.rectangle_masks(SIZE, [(8, 8, 24, 24)], keep_inside=False)
    result = inv.check_content_independence(LyingBlur(), resnet18, photos[:1], mask)
    assert not result.passed


def test_strategy_calls_leave_the_model_unchanged(resnet18, photos):
    before = {k: v.clone() for k, v in resnet18.state_dict().items()}
    modules = list(resnet18.modules())
    mask = mb.rectangle_masks(SIZE, [(8, 8, 24, 24)])
    for name in INPUT_SPACE:
        mb.get_strategy(name)(resnet18, photos, mask)
        with pytest.raises(mb.MaskError):
            mb.get_strategy(name)(resnet18, photos, torch.full(SIZE, 0.5))
    after = resnet18.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert list(resnet18.modules()) == modules
    assert not resnet18.training
    for module in resnet18.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_model_in_training_mode_or_wrong_dtype_is_refused(photos):
    model = mb.load_model("resnet18", weights="random")
    mask = torch.ones(SIZE, dtype=torch.bool)
    model.train()
    with pytest.raises(mb.ModelMismatchError, match="training mode"):
        mb.get_strategy("black")(model, photos, mask)
    model.eval()
    with pytest.raises(mb.ModelMismatchError, match="bfloat16"):
        mb.get_strategy("black")(model, photos.bfloat16(), mask)


def test_many_masks_for_one_image_are_chunked(resnet18, photos):
    strategy = mb.get_strategy("grey", batch_size=4)
    segments = mb.patch_grid(SIZE, 16)
    masks = mb.random_removal_masks(segments, 0.5, 10, seed=0)
    chunked = strategy(resnet18, photos[:1], masks)
    assert chunked.shape == (10, 1000)
    whole = mb.get_strategy("grey", batch_size=100)(resnet18, photos[:1], masks)
    result = inv.relative_gap(chunked, whole)[0]
    assert result <= inv.rounding_tolerance(torch.float32)
    assert strategy.chunk_size(photos) == 4
    assert mb.get_strategy("grey").chunk_size(photos) >= 1


def test_bfloat16_model_and_images(photos):
    model = mb.load_model("resnet18", weights="random").to(torch.bfloat16)
    mask = mb.rectangle_masks(SIZE, [(8, 8, 24, 24)])
    for name in INPUT_SPACE:
        out = mb.get_strategy(name)(model, photos[:2].bfloat16(), mask)
        assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
