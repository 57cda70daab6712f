"""Per-sample random streams that do not depend on batching.

Stochastic fills (noise, ROAD's imputation noise) must give a sample the same random
numbers whether it is run alone or inside a batch, in any order. So the stream of each
sample is keyed by the strategy's seed and by the sample's *mask* (never by its batch
index, and never by pixel values, which could leak removed content).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

_HASH_MODULUS = (1 << 61) - 1  # a Mersenne prime: the key fits an int64 seed


@functools.lru_cache(maxsize=8)
def _position_weights(numel: int, device: torch.device) -> torch.Tensor:
    # Cached: drawing 50k int64 on the CPU and copying them over cost more than the
    # noise itself on a GPU. The tensor is never written to.
    generator = torch.Generator().manual_seed(0x6D61736B)  # "mask"
    weights = torch.randint(1, 1 << 30, (numel,), generator=generator, dtype=torch.int64)
    return weights.to(device)


def mask_keys(keep: torch.Tensor) -> list[int]:
    """One integer per sample that identifies its mask (equal masks, equal keys).

    ``keep`` is a (B, 1, H, W) bool tensor. The key is a random-weighted sum of the kept
    positions, so two different masks collide only by chance (about 2**-30).
    """
    flat = keep.reshape(keep.shape[0], -1).to(torch.int64)
    weights = _position_weights(flat.shape[1], flat.device)
    sums = (flat * weights).sum(dim=1)
    return [int(v) % _HASH_MODULUS for v in sums.tolist()]


def sample_generators(keep: torch.Tensor, seed: int) -> list[torch.Generator]:
    """A generator per sample, on the mask's device, seeded by ``seed`` and its mask."""
    generators = []
    for key in mask_keys(keep):
        generator = torch.Generator(device=keep.device)
        generator.manual_seed((int(seed) * 1_000_003 + key) % _HASH_MODULUS)
        generators.append(generator)
    return generators


def _per_sample(
    draw, shape: tuple[int, ...], keep: torch.Tensor, seed: int, dtype: torch.dtype
) -> torch.Tensor:
    """``(B, *shape)`` draws of ``draw`` (``torch.rand``/``randn``), one generator each."""
    out = torch.empty((keep.shape[0], *shape), dtype=torch.float32, device=keep.device)
    for row, generator in zip(out, sample_generators(keep, seed), strict=True):
        draw(shape, generator=generator, out=row)
    return out.to(dtype)


def per_sample_randn_each(
    shapes: Sequence[tuple[int, ...]],
    keep: torch.Tensor,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Standard normal noise of shape ``shapes[b]`` for each sample b (shapes may differ);
    sample b's draw depends on its mask only, and equals ``per_sample_randn`` of the same
    shape for that sample."""
    if len(shapes) != keep.shape[0]:
        raise ValueError(f"need one shape per sample: {len(shapes)} shapes, {keep.shape[0]} masks")
    generators = sample_generators(keep, seed)
    return [
        torch.randn(shape, generator=g, device=keep.device, dtype=torch.float32).to(dtype)
        for shape, g in zip(shapes, generators, strict=True)
    ]


def per_sample_randn(
    shape: tuple[int, ...],
    keep: torch.Tensor,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``(B, *shape)``; sample b's draw depends on its mask only."""
    return _per_sample(torch.randn, shape, keep, seed, dtype)


def per_sample_rand(
    shape: tuple[int, ...],
    keep: torch.Tensor,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [0, 1) noise of ``(B, *shape)``; sample b's draw depends on its mask only."""
    return _per_sample(torch.rand, shape, keep, seed, dtype)
