"""Per-sample random streams (:mod:`maskbench.seeding`): keyed by seed and mask only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from maskbench import seeding
from maskbench.engine.tape import CaptureError, OpTape
from maskbench.seeding import (
    mask_keys,
    per_sample_rand,
    per_sample_randn,
    per_sample_randn_each,
    sample_generators,
)

_U64 = 1 << 64


def _splitmix64(z: int) -> int:
    """SplitMix64's finaliser on Python ints: the oracle for the torch version."""
    z %= _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % _U64
    return z ^ (z >> 31)


def _reference_uniform(key: int, seed: int, numel: int, bits: int) -> list[float]:
    start = _splitmix64(key + (seed * 1_000_003) % ((1 << 61) - 1))
    return [
        (_splitmix64(start + (i + 1) * 0x9E3779B97F4A7C15) >> (64 - bits)) / 2**bits
        for i in range(numel)
    ]


def masks(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 1, 12, 12), generator=generator) > 0.5


def test_normal_draws_are_each_samples_generator_in_turn():
    keep = masks(7, seed=0)
    expected = torch.stack(
        [torch.randn((3, 12, 12), generator=g) for g in sample_generators(keep, 11)]
    )
    assert torch.equal(per_sample_randn((3, 12, 12), keep, 11), expected)


def test_mask_keys_are_the_weighted_sums_of_kept_positions():
    keep = masks(4, seed=3)
    weights = seeding._position_weights(144, torch.device("cpu")).tolist()
    expected = [
        sum(w for w, kept in zip(weights, row, strict=True) if kept) % ((1 << 61) - 1)
        for row in keep.reshape(4, -1).tolist()
    ]
    assert mask_keys(keep) == expected
    assert len(set(expected)) == 4


@pytest.mark.parametrize(
    ("dtype", "bits"), [(torch.float32, 24), (torch.float64, 53), (torch.bfloat16, 8)]
)
def test_uniform_draws_equal_a_python_splitmix64(dtype, bits):
    keep = masks(3, seed=4)
    draws = per_sample_rand((2, 3, 5), keep, 7, dtype=dtype)
    assert draws.dtype == dtype and draws.shape == (3, 2, 3, 5)
    for row, key in zip(draws, mask_keys(keep), strict=True):
        expected = torch.tensor(_reference_uniform(key, 7, 30, bits), dtype=torch.float64)
        assert torch.equal(row.flatten().double(), expected)


@pytest.mark.parametrize("block", [1, 7, 64, 200])
def test_cpu_blocks_do_not_change_the_bits(monkeypatch, block):
    keep = masks(5, seed=5)
    whole = per_sample_rand((3, 12, 12), keep, 2)
    monkeypatch.setattr(seeding, "CPU_BLOCK", block)  # partial blocks, several rows each
    assert torch.equal(per_sample_rand((3, 12, 12), keep, 2), whole)


def test_uniform_draws_stay_below_one_in_low_precision():
    """bfloat16 keeps 8 bits: k / 256 with k < 256, so the largest draw is 255/256. A
    float32 draw rounded to bfloat16 reaches 1.0 (any draw above 1 - 2**-9 does)."""
    keep = masks(16, seed=6)
    draws = per_sample_rand((3, 32, 32), keep, 0, dtype=torch.bfloat16).double()
    assert float(draws.max()) == 1 - 2**-8
    assert torch.equal(draws * 256, (draws * 256).round())


@pytest.mark.parametrize("draw", [per_sample_rand, per_sample_randn])
def test_a_sample_gets_the_same_draw_alone_in_any_batch_and_order(draw):
    keep = masks(5, seed=1)
    together = draw((2, 6, 6), keep, 3)
    order = [4, 0, 3, 1, 2]
    shuffled = draw((2, 6, 6), keep[order], 3)
    assert torch.equal(shuffled, together[order])
    for i in range(5):
        assert torch.equal(draw((2, 6, 6), keep[i : i + 1], 3)[0], together[i])
    assert not torch.equal(draw((2, 6, 6), keep, 4), together)  # seed matters


def test_uniform_draws_pass_uniformity_and_independence_tests():
    """One mask and a copy with one pixel flipped (neighbouring keys) give two streams of
    60000 float64 draws. Kolmogorov-Smirnov against U(0, 1) at alpha = 1e-3 on each;
    Pearson correlation between the streams and at lag 1 within one, each refused above
    |r| > 4 / sqrt(n) (a two-sided false alarm of 6e-5 for independent draws). The
    seeds are fixed, so the test is deterministic: a correct generator would fail such
    a draw about one time in 1000."""
    keep = masks(1, seed=7).repeat(2, 1, 1, 1)
    keep[1, 0, 0, 0] = ~keep[1, 0, 0, 0]
    a, b = per_sample_rand((3, 100, 200), keep, 1, dtype=torch.float64).reshape(2, -1).numpy()
    for stream in (a, b):
        assert stats.kstest(stream, "uniform").pvalue > 1e-3
    limit = 4 / np.sqrt(a.size)
    assert abs(np.corrcoef(a, b)[0, 1]) < limit
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < limit


def test_uniform_draws_read_nothing_back_to_the_host():
    """Recorded once and replayed on other masks (OpTape, the CPU stand-in for a CUDA
    graph capture, refuses host reads), the uniform draws equal fresh ones: no sync and
    no decision on mask values. The generator-based normal draws are refused."""
    shape = (3, 8, 8)
    tape = OpTape.record(lambda k: per_sample_rand(shape, k, 5), masks(4, seed=8))
    for seed in (9, 10):
        keep = masks(4, seed=seed)
        assert torch.equal(tape.replay(keep), per_sample_rand(shape, keep, 5))
    with pytest.raises(CaptureError):
        OpTape.record(lambda k: per_sample_randn(shape, k, 5), masks(4, seed=8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_uniform_draws_are_the_same_bits_on_cuda():
    keep = masks(6, seed=11)
    for dtype in (torch.float32, torch.float64, torch.float16):
        cpu = per_sample_rand((3, 40, 40), keep, 4, dtype=dtype)
        cuda = per_sample_rand((3, 40, 40), keep.cuda(), 4, dtype=dtype)
        assert torch.equal(cuda.cpu(), cpu), dtype


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
