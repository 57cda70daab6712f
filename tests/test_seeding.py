"""Per-sample random streams (:mod:`maskbench.seeding`): keyed by seed and mask only."""

from __future__ import annotations

import pytest
import torch

from maskbench.seeding import (
    per_sample_rand,
    per_sample_randn,
    per_sample_randn_each,
    sample_generators,
)


def masks(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 1, 12, 12), generator=generator) > 0.5


@pytest.mark.parametrize(
    ("batched", "single"), [(per_sample_rand, torch.rand), (per_sample_randn, torch.randn)]
)
def test_draws_are_each_samples_generator_in_turn(batched, single):
    keep = masks(7, seed=0)
    expected = torch.stack([single((3, 12, 12), generator=g) for g in sample_generators(keep, 11)])
    assert torch.equal(batched((3, 12, 12), keep, 11), expected)


def test_a_sample_gets_the_same_draw_alone_in_any_batch_and_order():
    keep = masks(5, seed=1)
    together = per_sample_randn((2, 6, 6), keep, 3)
    order = [4, 0, 3, 1, 2]
    shuffled = per_sample_randn((2, 6, 6), keep[order], 3)
    assert torch.equal(shuffled, together[order])
    for i in range(5):
        assert torch.equal(per_sample_randn((2, 6, 6), keep[i : i + 1], 3)[0], together[i])
    assert not torch.equal(per_sample_randn((2, 6, 6), keep, 4), together)  # seed matters


def test_each_sample_may_have_its_own_shape():
    keep = masks(3, seed=2)
    shapes = [(3, 2, 5), (3, 12, 12), (1, 1, 1)]
    draws = per_sample_randn_each(shapes, keep, 9, dtype=torch.float64)
    for i, (draw, shape) in enumerate(zip(draws, shapes, strict=True)):
        assert draw.shape == shape and draw.dtype == torch.float64
        assert torch.equal(
            draw, per_sample_randn(shape, keep[i : i + 1], 9, dtype=torch.float64)[0]
        )
    with pytest.raises(ValueError, match="one shape per sample"):
        per_sample_randn_each(shapes[:2], keep, 9)
