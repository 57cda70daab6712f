"""Mask builders: rectangles, segment maps, keep-vectors, nested removals."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import maskbench as mb
from maskbench import testing as mbt
from maskbench.masks import count_segments, nested_keep_vectors, random_order


@given(rect=mbt.rectangles((20, 30)))
def test_rectangle_mask_matches_slicing(rect):
    top, left, h, w = rect
    expected = torch.zeros(20, 30, dtype=torch.bool)
    expected[top : top + h, left : left + w] = True
    mask = mb.rectangle_masks((20, 30), [rect])
    assert mask.shape == (1, 1, 20, 30)
    assert torch.equal(mask[0, 0], expected)
    assert torch.equal(mb.rectangle_masks((20, 30), [rect], keep_inside=False)[0, 0], ~expected)


def test_rectangles_are_batched_and_clip_at_the_edge():
    masks = mb.rectangle_masks((8, 8), [(0, 0, 2, 2), (6, 6, 5, 5)])
    assert masks.shape == (2, 1, 8, 8)
    assert int(masks[0].sum()) == 4
    assert int(masks[1].sum()) == 4  # only the 2x2 inside the image
    with pytest.raises(mb.MaskError, match=">= 0"):
        mb.rectangle_masks((8, 8), [(0, 0, -1, 2)])


def test_patch_grid_ids_and_ragged_edges():
    seg = mb.patch_grid((40, 36), 16)
    assert seg.shape == (40, 36)
    assert count_segments(seg) == 3 * 3
    assert int(seg[0, 0]) == 0 and int(seg[0, 16]) == 1 and int(seg[16, 0]) == 3
    assert int(seg[39, 35]) == 8
    # each id is one rectangular block
    for sid in range(9):
        rows, cols = torch.nonzero(seg == sid, as_tuple=True)
        block = seg[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool((block == sid).all())


@given(keep=mbt.keep_vectors(6), data=st.data())
def test_masks_from_keep_matches_per_pixel_lookup(keep, data):
    seg = mb.patch_grid((12, 8), 4)  # 3 x 2 = 6 segments
    mask = mb.masks_from_keep(seg, torch.tensor(keep))
    for r in range(12):
        for c in range(8):
            assert bool(mask[0, 0, r, c]) == keep[int(seg[r, c])]


def test_masks_from_keep_with_per_image_segment_maps():
    seg = torch.stack([mb.patch_grid((4, 4), 2), mb.patch_grid((4, 4), 2).flip(-1)])
    keep = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    masks = mb.masks_from_keep(seg, keep)
    assert bool(masks[0, 0, 0, 0]) and not bool(masks[0, 0, 0, 3])
    assert bool(masks[1, 0, 0, 3]) and not bool(masks[1, 0, 0, 0])
    with pytest.raises(mb.MaskError, match="keep-vector has 2 entries"):
        mb.masks_from_keep(seg[0], torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(mb.MaskError, match="0 or 1"):
        mb.masks_from_keep(seg[0], torch.full((1, 4), 3))


@given(seed=mbt.seeds(), fractions=st.lists(mbt.fractions(), min_size=1, max_size=8))
def test_nested_removal_masks_are_nested_and_remove_the_right_count(seed, fractions):
    fractions = sorted(fractions)
    seg = mb.patch_grid((32, 48), 8)  # 24 segments
    masks = mb.nested_removal_masks(seg, fractions, seed=seed)
    assert masks.shape == (len(fractions), 1, 32, 48)
    for f, mask in zip(fractions, masks, strict=True):
        kept_segments = {int(s) for s in seg[mask[0]].unique()}
        assert len(kept_segments) == 24 - round(f * 24)
    for earlier, later in itertools.pairwise(masks):
        assert bool((later <= earlier).all()), "a later mask keeps a pixel the earlier removed"


def test_nested_keep_vectors_follow_the_given_order():
    order = torch.tensor([3, 1, 0, 2])
    keep = nested_keep_vectors(4, [0.0, 0.25, 0.5, 1.0], order)
    assert keep.tolist() == [
        [True, True, True, True],
        [True, True, True, False],
        [True, False, True, False],
        [False, False, False, False],
    ]
    with pytest.raises(mb.MaskError, match="permutation"):
        nested_keep_vectors(4, [0.5], torch.tensor([0, 0, 1, 2]))
    with pytest.raises(mb.MaskError, match="fraction"):
        nested_keep_vectors(4, [1.5], order)


def test_random_order_is_seeded():
    assert torch.equal(random_order(10, 3), random_order(10, 3))
    assert not torch.equal(random_order(50, 3), random_order(50, 4))


def test_random_removal_masks_remove_the_fraction_independently():
    seg = mb.patch_grid((16, 16), 4)  # 16 segments
    masks = mb.random_removal_masks(seg, 0.25, 20, seed=1)
    kept_pixels = masks.flatten(1).sum(1)
    assert bool((kept_pixels == 12 * 16).all())
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 1


def test_superpixel_maps_cover_the_image_with_contiguous_ids(photos):
    for seg in (mb.slic(photos[0], n_segments=20), mb.quickshift(photos[1], max_dist=10)):
        assert seg.shape == photos.shape[-2:]
        assert seg.dtype == torch.int64
        ids = seg.unique()
        assert torch.equal(ids, torch.arange(len(ids)))
        assert len(ids) > 1
        mask = mb.masks_from_keep(seg, torch.arange(len(ids)) % 2 == 0)
        assert 0 < int(mask.sum()) < seg.numel()


def test_slic_respects_requested_granularity(photos):
    coarse = count_segments(mb.slic(photos[0], n_segments=8))
    fine = count_segments(mb.slic(photos[0], n_segments=60))
    assert coarse < fine
