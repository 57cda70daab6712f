"""Per-sample random streams that do not depend on batching.

Stochastic fills (noise, ROAD's imputation noise) must give a sample the same random
numbers whether it is run alone or inside a batch, in any order. So the stream of each
sample is keyed by the strategy's seed and by the sample's *mask* (never by its batch
index, and never by pixel values, which could leak removed content).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

_HASH_MODULUS = (1 << 61) - 1  # a Mersenne prime: the key fits an int64 seed
# Below this many values in all, CPU draws run on the calling thread only.
_PARALLEL_MIN_NUMEL = 1 << 17

_T = TypeVar("_T")
_R = TypeVar("_R")
_pool: tuple[ThreadPoolExecutor, int] | None = None  # (pool, its number of threads)
_pool_lock = threading.Lock()


def _draw_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least ``workers`` threads (created on first use; a
    larger one replaces it when more threads are asked for)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[1] < workers:
            _pool = (ThreadPoolExecutor(workers, thread_name_prefix="maskbench-draws"), workers)
        return _pool[0]


def _map_draws(
    draw: Callable[[_T], _R], items: Sequence[_T], numel: int, device: torch.device
) -> list[_R]:
    """``[draw(item) for item in items]``, in order; on the CPU with enough work, split
    into contiguous runs over ``torch.get_num_threads()`` threads.

    Each item owns its generator, so which thread draws it cannot change its values.
    A CPU generator fills its tensor on one thread, and torch releases the GIL while it
    does. Measured on 2 cores, 16 draws of 3 x 224 x 224: 8.2 ms on one thread, 5.1 ms on
    two, but only while torch's OpenMP workers are idle: right after a parallel torch
    operation they spin for a while on the other cores, and the gain is gone (as inside
    ``road_impute``).
    """
    threads = min(torch.get_num_threads(), len(items))
    if device.type != "cpu" or threads < 2 or numel < _PARALLEL_MIN_NUMEL:
        return [draw(item) for item in items]
    bounds = [len(items) * k // threads for k in range(threads + 1)]
    runs = [items[a:b] for a, b in itertools.pairwise(bounds)]
    pool = _draw_pool(threads - 1)
    futures = [pool.submit(lambda run: [draw(item) for item in run], run) for run in runs[1:]]
    first = [draw(item) for item in runs[0]]  # the calling thread draws too
    return first + [result for future in futures for result in future.result()]


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
    _map_draws(
        lambda job: draw(shape, generator=job[1], out=job[0]),
        list(zip(out, sample_generators(keep, seed), strict=True)),
        out.numel(),
        out.device,
    )
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
    numel = sum(math.prod(shape) for shape in shapes)
    return _map_draws(
        lambda job: torch.randn(job[0], generator=job[1], device=keep.device).to(dtype),
        list(zip(shapes, generators, strict=True)),
        numel,
        keep.device,
    )


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
