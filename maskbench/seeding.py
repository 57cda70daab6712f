"""Per-sample random streams that do not depend on batching.

Stochastic fills (noise, ROAD's imputation noise) must give a sample the same random
numbers whether it is run alone or inside a batch, in any order. So the stream of each
sample is keyed by the strategy's seed and by the sample's *mask* (never by its batch
index, and never by pixel values, which could leak removed content).

Two kinds of stream:

- uniform draws (:func:`per_sample_rand`) come from a counter-based hash (SplitMix64
  of the sample's key plus the element's position), computed for the whole batch in
  about 30 vectorised integer ops. No generator objects, no Python loop over samples and
  no host read, so a GPU runs them without a sync, and every device gives the same
  numbers bit for bit;
- normal draws (:func:`per_sample_randn`, ROAD's imputation noise) come from one torch
  generator per sample, seeded by the same key.
"""

from __future__ import annotations

import functools
import math
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


def mask_key_tensor(keep: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 tensor on the mask's device: one key per sample that identifies its
    mask (equal masks, equal keys), computed without reading anything back to the host.

    ``keep`` is a (B, 1, H, W) bool tensor. The key is a random-weighted sum of the kept
    positions modulo ``2**61 - 1``, so two different masks collide only by chance (about
    2**-30). The weights are below ``2**30``, so the sum fits int64 for any mask of
    fewer than ``2**33`` pixels.
    """
    flat = keep.reshape(keep.shape[0], -1).to(torch.int64)
    weights = _position_weights(flat.shape[1], flat.device)
    return (flat * weights).sum(dim=1).remainder_(_HASH_MODULUS)


def mask_keys(keep: torch.Tensor) -> list[int]:
    """:func:`mask_key_tensor` as Python ints (one host read)."""
    return mask_key_tensor(keep).tolist()


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


def _signed(constant: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


_GOLDEN_GAMMA = _signed(0x9E3779B97F4A7C15)  # SplitMix64's increment
_MIX_1 = _signed(0xBF58476D1CE4E5B9)  # its finaliser's multipliers
_MIX_2 = _signed(0x94D049BB133111EB)


def _xor_shift_right_(z: torch.Tensor, shift: int, scratch: torch.Tensor) -> None:
    """``z ^= z >> shift`` as an unsigned (logical) shift of int64 ``z``, in place."""
    torch.bitwise_right_shift(z, shift, out=scratch)  # arithmetic: clear the sign copies
    scratch.bitwise_and_((1 << (64 - shift)) - 1)
    z.bitwise_xor_(scratch)


def splitmix64_(z: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """SplitMix64's finaliser applied in place to int64 ``z`` (read as uint64 bits);
    returns ``z``. Multiplication wraps modulo ``2**64`` on every torch device.
    ``scratch``: an int64 tensor of ``z``'s shape to reuse (default: a new one)."""
    scratch = torch.empty_like(z) if scratch is None else scratch
    _xor_shift_right_(z, 30, scratch)
    z.mul_(_MIX_1)
    _xor_shift_right_(z, 27, scratch)
    z.mul_(_MIX_2)
    _xor_shift_right_(z, 31, scratch)
    return z


#: Elements hashed at once on a CPU: 2 MiB of int64, so that the dozen passes of the
#: hash stay in cache (measured 3x faster than whole-batch passes on 2 cores).
CPU_BLOCK = 1 << 18
#: Elements hashed at once elsewhere (a GPU): 16M, two 128 MiB int64 buffers, so that a
#: batch of 16 at 224 x 224 (2.4M) is one block of about 30 launches and a 1000-mask
#: call does not hold 2.4 GB of int64 temporaries. Same bits for any block size.
DEVICE_BLOCK = 1 << 24


@functools.lru_cache(maxsize=8)
def _counters(numel: int, device: torch.device) -> torch.Tensor:
    # (i + 1) * gamma for i < numel: SplitMix64's states before the finaliser, minus the
    # stream's start. Cached like the position weights; never written to.
    counters = torch.arange(1, numel + 1, dtype=torch.int64, device=device)
    return counters.mul_(_GOLDEN_GAMMA)


def uniform_bits(dtype: torch.dtype) -> int:
    """Random bits per uniform draw of ``dtype``: its significand (at most 53), so that
    every draw ``k / 2**bits`` is exact and below 1 (no rounding up to 1.0)."""
    if not dtype.is_floating_point:
        raise TypeError(f"uniform noise needs a floating dtype, got {dtype}")
    significand = round(-math.log2(torch.finfo(dtype).eps)) + 1  # eps = 2**(1 - bits)
    return min(significand, 53)


def per_sample_rand(
    shape: tuple[int, ...],
    keep: torch.Tensor,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform [0, 1) noise of ``(B, *shape)``; sample b's draw depends on its mask only.

    Draw ``i`` (row-major) of sample ``b`` is ``splitmix64(s_b + (i + 1) * gamma)`` with
    ``s_b = splitmix64(key_b + seed')`` (SplitMix64's sequence started at the sample's
    key), its top :func:`uniform_bits` bits scaled to [0, 1). Whole-batch integer ops:
    no host read, and the same bits on every device.
    """
    bits = uniform_bits(dtype)
    batch, numel = keep.shape[0], math.prod(shape)
    seed_term = (int(seed) * 1_000_003) % _HASH_MODULUS
    starts = splitmix64_(mask_key_tensor(keep).add_(seed_term)).unsqueeze(1)
    counters = _counters(numel, keep.device)
    out = torch.empty((batch, numel), dtype=dtype, device=keep.device)
    per_block = CPU_BLOCK if keep.device.type == "cpu" else DEVICE_BLOCK
    cols = min(numel, per_block)
    rows = max(1, per_block // cols)
    z = torch.empty((min(rows, batch), cols), dtype=torch.int64, device=keep.device)
    scratch = torch.empty_like(z)
    for r0 in range(0, batch, rows):
        for c0 in range(0, numel, cols):
            n_rows, n_cols = min(rows, batch - r0), min(cols, numel - c0)
            block, work = z[:n_rows, :n_cols], scratch[:n_rows, :n_cols]
            torch.add(counters[c0 : c0 + n_cols], starts[r0 : r0 + n_rows], out=block)
            splitmix64_(block, work)
            block.bitwise_right_shift_(64 - bits).bitwise_and_((1 << bits) - 1)
            out[r0 : r0 + n_rows, c0 : c0 + n_cols].copy_(block).mul_(2.0**-bits)
    return out.view(batch, *shape)
