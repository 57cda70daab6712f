"""What a spatial op reads at removed positions: zeros, -inf, or neighbour padding.

All fills use ``torch.where`` (never multiplication by the mask), so NaN or Inf garbage
under removed positions cannot reach any visible output: content independence is exact.
Fill values carry no gradient (the published code computes them under ``no_grad``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskbench.engine.masks import MT, Mask, work_dtype

__all__ = ["neighbour_fill", "neighbour_weights", "value_fill", "zero_fill"]

# published constant: sum of known neighbours / (count + 1e-5)
NEIGHBOUR_EPS = 1e-5


def value_fill(x: MT, value: float) -> torch.Tensor:
    """The activation with removed positions set to ``value`` (0, or -inf for max pools)."""
    if x.mask.all_visible():
        return x.value
    return torch.where(x.keep_view(), x.value, value)


def zero_fill(x: MT) -> torch.Tensor:
    """The activation with removed positions set to 0."""
    return value_fill(x, 0.0)


# below this many channels a separable sum beats a depthwise convolution on CPU
_DEPTHWISE_MIN_CHANNELS = 16


def box_sum3(x: torch.Tensor) -> torch.Tensor:
    """Sum over each 3 x 3 neighbourhood of a (B, C, H, W) tensor, zero padded.

    A depthwise convolution with a ones kernel (one kernel call) for many channels;
    separable shifted sums for few. Both are several times faster than ``avg_pool2d``
    on CPU in NCHW.
    """
    channels = x.shape[1]
    if channels >= _DEPTHWISE_MIN_CHANNELS:
        ones = x.new_ones((channels, 1, 3, 3))
        return F.conv2d(x, ones, None, 1, 1, 1, channels)
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :, :-2] + padded[..., :, 1:-1]
    rows += padded[..., :, 2:]
    out = rows[..., :-2, :] + rows[..., 1:-1, :]
    out += rows[..., 2:, :]
    return out


def neighbour_weights(
    mask: Mask, rings: int, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """Per-ring fill weights for onion-peel neighbour padding, (B, 1, H, W) each.

    Ring r holds the positions that touch the known region (visible positions plus rings
    1 .. r-1) in their 3 x 3 neighbourhood. Its weight is ``1 / (count + 1e-5)`` there
    (count = known neighbours) and 0 elsewhere.
    The image border counts as unknown (zero padding), as in the published code.
    Weights are computed once per (mask, ring count) and cached on the mask.
    """

    def compute() -> list[torch.Tensor]:
        known = mask.as_float(dtype)
        weights = []
        for _ in range(rings):
            count = box_sum3(known).round()
            ring = (count > 0) & (known == 0)
            weights.append(torch.where(ring, 1.0 / (count + NEIGHBOUR_EPS), 0.0))
            known = torch.where(ring, 1.0, known)
        return weights

    return mask.memo(("neighbour", rings, dtype), compute)


def neighbour_fill(x: MT, rings: int) -> torch.Tensor:
    """Onion-peel neighbour padding of ``rings`` rings, removed positions beyond them 0.

    Each ring takes the mean of its known 3 x 3 neighbours (sum / (count + 1e-5)) and
    then counts as known. A k x k conv with dilation d only reads ``d * (k - 1)`` rings
    around the visible region at any visible output, so that is all that is computed
    (the published code runs k full passes; visible outputs are identical).
    Costs per ring: a 3 x 3 box sum and one fused multiply-add over the activation.
    Fill values carry no gradient.
    """
    if x.mask.all_visible():
        return x.value
    filled = torch.where(x.keep_view(), x.value, 0.0)
    if rings <= 0:
        return filled
    dtype = x.value.dtype
    weights = x.mask.memo(
        ("neighbour-cast", rings, dtype),
        lambda: [w.to(dtype) for w in neighbour_weights(x.mask, rings, work_dtype(dtype))],
    )
    current = filled.detach()
    with torch.no_grad():
        for weight in weights:
            # ring positions hold 0 and weight 0 is everywhere else: a pure update
            current = torch.addcmul(current, box_sum3(current), weight)
    if filled.requires_grad:
        # visible positions keep their gradient; ring values are constants
        return torch.where(x.keep_view(), filled, current)
    return current
