"""Mask derivations and fills against explicit formulas (hypothesis draws mask parameters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_resnet import neighbour_pad

from maskbench.engine.fill import (
    NEIGHBOUR_EPS,
    box_sum3,
    neighbour_fill,
    neighbour_weights,
    value_fill,
)
from maskbench.engine.masks import MT, NCHW, Mask, Window, dilate, intersect, subsample

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def rect_masks(draw, max_size: int = 14):
    """A (2, 1, H, W) mask: union of one or two rectangles (sizes drawn, not tensors)."""
    h = draw(st.integers(4, max_size))
    w = draw(st.integers(4, max_size))
    keep = torch.zeros(2, 1, h, w, dtype=torch.bool)
    for b in range(2):
        for _ in range(draw(st.integers(1, 2))):
            top, left = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            keep[
                b, :, top : top + draw(st.integers(1, h)), left : left + draw(st.integers(1, w))
            ] = True
    return keep


@SETTINGS
@given(keep=rect_masks(), rings=st.integers(0, 4), seed=st.integers(0, 1000))
def test_neighbour_fill_matches_published_passes(keep, rings, seed):
    """``rings`` rings of onion-peel fill equal the published code's first ``rings`` passes."""
    x = torch.randn(2, 3, *keep.shape[2:], generator=torch.Generator().manual_seed(seed))
    filled = neighbour_fill(MT(x, Mask(keep), NCHW), rings)
    expected = neighbour_pad(x, keep.float(), rings)
    torch.testing.assert_close(filled, expected, rtol=1e-5, atol=1e-6)


def _published_weights(keep: torch.Tensor, rings: int) -> list[torch.Tensor]:
    """The ring weights as the published code forms them, one pass per ring."""
    known = keep.double()
    weights = []
    for _ in range(rings):
        count = F.conv2d(known, torch.ones(1, 1, 3, 3, dtype=known.dtype), padding=1)
        ring = (count > 0) & (known == 0)
        weights.append(torch.where(ring, 1.0 / (count + NEIGHBOUR_EPS), 0.0))
        known = torch.where(ring, 1.0, known)
    return weights


@SETTINGS
@given(keep=rect_masks(), rings=st.integers(1, 6), batched=st.booleans())
def test_both_ring_schedules_give_the_published_weights(keep, rings, batched):
    """Ring by ring (the CPU's) and all rings at once (the GPU's): the same weights."""
    got = neighbour_weights(Mask(keep), rings, torch.float64, batched=batched)
    expected = _published_weights(keep, rings)
    assert len(got) == rings
    for ours, published in zip(got, expected, strict=True):
        assert ours.shape == published.shape
        assert torch.equal(ours, published)  # exact: counts are small integers


def test_neighbour_fill_ignores_garbage_and_has_no_gradient():
    keep = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    keep[..., 2:4, 2:4] = True
    x = torch.full((1, 2, 6, 6), float("nan"))
    x[..., 2:4, 2:4] = 1.0
    x.requires_grad_(True)
    filled = neighbour_fill(MT(x, Mask(keep), NCHW), 2)
    assert torch.isfinite(filled).all()
    filled.sum().backward()
    assert torch.equal(x.grad, keep.expand_as(x).float())


def test_box_sum3():
    x = torch.randn(2, 3, 7, 5)
    expected = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True) * 9
    torch.testing.assert_close(box_sum3(x), expected, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(
    keep=rect_masks(),
    k=st.sampled_from([1, 2, 3, 5, 7]),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
)
def test_dilate_is_max_pool(keep, k, s, d):
    p = d * (k - 1) // 2
    window = Window.make(k, s, p, d)
    expected = F.max_pool2d(F.pad(keep.float(), (p, p, p, p)), k, s, 0, d) > 0
    out = dilate(Mask(keep), window, expected.shape[-2:])
    assert torch.equal(out.keep, expected)


@SETTINGS
@given(keep=rect_masks(), k=st.sampled_from([1, 2, 3, 4, 5]), s=st.integers(1, 4))
def test_subsample_takes_window_centres(keep, k, s):
    p = (k - 1) // 2
    window = Window.make(k, s, p)
    h, w = keep.shape[2:]
    out_hw = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    out = subsample(Mask(keep), window, out_hw).keep
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            r, c = i * s - p + (k - 1) // 2, j * s - p + (k - 1) // 2
            inside = 0 <= r < h and 0 <= c < w
            assert bool(out[0, 0, i, j]) == (inside and bool(keep[0, 0, r, c]))


def test_subsample_stride_one_is_the_same_mask():
    mask = Mask(torch.rand(1, 1, 5, 5) > 0.5)
    assert subsample(mask, Window.make(3, 1, 1), (5, 5)) is mask
    assert dilate(mask, Window.make(1, 1, 0), (5, 5)) is mask


def test_intersect_and_value_fill():
    a = Mask(torch.rand(1, 1, 5, 5) > 0.5)
    b = Mask(torch.rand(1, 1, 5, 5) > 0.5)
    assert intersect([a, a]) is a
    assert torch.equal(intersect([a, b]).keep, a.keep & b.keep)
    x = torch.randn(1, 2, 5, 5)
    filled = value_fill(MT(x, a, NCHW), float("-inf"))
    assert torch.equal(filled, x.masked_fill(~a.keep, float("-inf")))


def test_box_sum3_many_channels_and_bfloat16():
    """The depthwise path (many channels) agrees with explicit shifted sums."""
    x = torch.randn(2, 32, 9, 6)
    padded = F.pad(x, (1, 1, 1, 1))
    expected = sum(padded[..., i : i + 9, j : j + 6] for i in range(3) for j in range(3))
    torch.testing.assert_close(box_sum3(x), expected, rtol=1e-5, atol=1e-5)
    low = box_sum3(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, rtol=3e-2, atol=3e-2)
