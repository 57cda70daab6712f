"""The shifted mask: same area, controlled overlap, seeded; and the evaluation itself."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from maskbench.experiments.data import DataError
from maskbench.experiments.shape_leakage import cyclic_overlaps, shape_leakage, shifted_mask


def _disk(size: int, cy: float, cx: float, r: float) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def test_cyclic_overlaps_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(9, 7, generator=generator) > 0.6
    overlaps = cyclic_overlaps(mask)
    for dy in range(9):
        for dx in range(7):
            rolled = torch.roll(mask, shifts=(dy, dx), dims=(0, 1))
            assert overlaps[dy, dx].item() == int((rolled & mask).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shifted_mask_has_same_area_and_no_overlap(seed):
    mask = _disk(64, 30, 25, 12)
    shifted, (dy, dx), overlap = shifted_mask(mask, seed)
    assert shifted.sum() == mask.sum()
    assert overlap == 0.0 and not bool((shifted & mask).any())
    assert torch.equal(shifted, torch.roll(mask, shifts=(dy, dx), dims=(0, 1)))
    again, offset, _ = shifted_mask(mask, seed)
    assert torch.equal(again, shifted) and offset == (dy, dx)


def test_overlap_is_controlled_and_falls_back_to_the_minimum():
    big = _disk(32, 16, 16, 14)  # too big to move off itself on a 32 x 32 torus
    shifted, _, overlap = shifted_mask(big, 0, max_overlap=0.0)
    assert shifted.sum() == big.sum()
    minimum = cyclic_overlaps(big)
    minimum[0, 0] = big.numel()
    assert overlap == pytest.approx(int(minimum.min()) / int(big.sum()))
    assert overlap > 0
    _, _, loose = shifted_mask(big, 0, max_overlap=0.5)
    assert loose <= 0.5


def test_empty_mask_is_refused():
    with pytest.raises(DataError, match="empty"):
        shifted_mask(torch.zeros(8, 8, dtype=torch.bool), 0)


def test_shape_leakage_on_benchmark(tiny_model, bench_data):
    data = replace(bench_data, labels=None)  # random model: use its own predictions
    result = shape_leakage(tiny_model, data, ["black", "grey"], bootstrap_reps=50)
    assert result.meta["n_clean_correct"] == len(data)
    # objects of up to 30% of a 64 px image cannot always be moved fully off themselves:
    # those images use the smallest possible overlap and are counted
    overlap = result.meta["overlap"]
    assert overlap["mean"] < 0.05
    assert (overlap["above_max_overlap"] == 0) == (overlap["max"] == 0.0)
    for name in ("black", "grey"):
        sil = result.value(strategy=name, metric="accuracy_silhouette")["value"]
        shift = result.value(strategy=name, metric="accuracy_shifted")["value"]
        ratio = result.value(strategy=name, metric="leakage")["value"]
        assert ratio == pytest.approx(sil / shift)
    assert any("No labels" in note for note in result.notes)


def test_shape_leakage_needs_masks(tiny_model, bench_data):
    with pytest.raises(DataError, match="object masks"):
        shape_leakage(tiny_model, replace(bench_data, objects=None), ["black"])
