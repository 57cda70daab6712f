"""Segment statistics, salience ranking and nested removal masks."""

from __future__ import annotations

import pytest
import torch

import maskbench as mb
from maskbench.experiments.segment_removal import image_masks
from maskbench.experiments.segmentation import (
    removal_orders,
    salience_order,
    segment,
    segment_means,
)


def _quadrants() -> torch.Tensor:
    """4 x 4 image split into four 2 x 2 segments: ids 0 1 / 2 3."""
    return mb.patch_grid((4, 4), 2)


def test_segment_means_are_object_coverage():
    objects = torch.zeros(4, 4)
    objects[0:2, 0:2] = 1  # segment 0 fully covered
    objects[0, 2] = 1  # segment 1: 1 of 4 pixels
    objects[2:4, 2] = 1  # segment 3: 2 of 4 pixels
    coverage = segment_means(_quadrants(), objects)
    assert coverage.tolist() == [1.0, 0.25, 0.0, 0.5]


def test_ranking_by_object_coverage_with_seeded_ties():
    scores = torch.tensor([1.0, 0.25, 0.0, 0.5, 0.0, 0.0])
    tie_order = torch.tensor([5, 2, 0, 4, 1, 3])
    most = salience_order(scores, tie_order)
    # highest first: 0 (1.0), 3 (0.5), 1 (0.25), then the zero-coverage ties 5, 2, 4 in
    # the order they appear in tie_order
    assert most.tolist() == [0, 3, 1, 5, 2, 4]


def test_removal_orders():
    segments = _quadrants()
    objects = torch.zeros(4, 4)
    objects[2:4, 0:2] = 1  # segment 2 is the object
    orders = removal_orders(segments, torch.tensor([3, 1, 0, 2]), objects)
    assert set(orders) == {"random", "most_salient", "least_salient"}
    assert orders["most_salient"][0].item() == 2
    assert orders["least_salient"].tolist() == orders["most_salient"].flip(0).tolist()
    assert set(removal_orders(segments, torch.arange(4), None)) == {"random"}


def test_image_masks_are_nested_and_shared_conditions_are_deduplicated():
    image = mb.sample_images(1, 64)[0]
    objects = torch.zeros(64, 64)
    objects[10:40, 20:50] = 1
    fractions = [0.0, 0.25, 0.5, 0.75, 1.0]
    orders = ["random", "most_salient", "least_salient"]
    masks, inverse, counts = image_masks(image, objects, ["patches16"], orders, fractions, 0)
    assert counts == {"patches16": 16}
    full = masks[inverse].view(len(orders), len(fractions), 64, 64)
    for o in range(len(orders)):
        for f in range(1, len(fractions)):
            assert not bool((full[o, f] & ~full[o, f - 1]).any()), "masks must be nested"
        kept = full[o].flatten(1).float().mean(1)
        assert kept.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    # fraction 0 and 1 are the same mask for every order: 3 * 5 conditions, 3 * 3 + 2 masks
    assert masks.shape[0] == 11
    # most-salient-first removes the object before any pure-background patch
    first_removed = ~full[1, 1]
    assert objects[first_removed].mean() > objects.mean()


def test_segmentations_by_name():
    image = mb.sample_images(1, 64)[0]
    assert int(segment(image, "patches16").max()) + 1 == 16
    assert int(segment(image, "patches32").max()) + 1 == 4
    assert int(segment(image, "slic").max()) + 1 > 4
    assert int(segment(image, "quickshift").max()) + 1 > 4
    with pytest.raises(ValueError, match="unknown segmentation"):
        segment(image, "watershed")
