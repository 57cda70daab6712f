"""What a spatial op reads at removed positions: zeros, -inf, or neighbour padding.

All fills use ``torch.where`` (never multiplication by the mask), so NaN or Inf garbage
under removed positions cannot reach any visible output: content independence is exact.
Fill values carry no gradient (the published code computes them under ``no_grad``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskbench.engine.masks import MT, Mask, Window, dilate, work_dtype

__all__ = ["neighbour_fill", "neighbour_weights", "value_fill", "zero_fill"]

# published constant: sum of known neighbours / (count + 1e-5)
NEIGHBOUR_EPS = 1e-5


def value_fill(x: MT, value: float) -> torch.Tensor:
    """The activation with removed positions set to ``value`` (0, or -inf for max pools)."""
    if x.mask.all_visible():
        return x.value
    return x.mask.where_visible(x.layout, x.value, value)


def zero_fill(x: MT) -> torch.Tensor:
    """The activation with removed positions set to 0."""
    return value_fill(x, 0.0)


# below this many channels a separable sum beats a depthwise convolution on CPU
_DEPTHWISE_MIN_CHANNELS = 16


def _depthwise(x: torch.Tensor) -> bool:
    return x.shape[1] >= _DEPTHWISE_MIN_CHANNELS or x.device.type != "cpu"


def _box_sum3_on(mask: Mask, x: torch.Tensor) -> torch.Tensor:
    """:func:`box_sum3` of ``x``, with the forward's shared ones kernel where it is used."""
    ones = mask.ones_kernel((3, 3), x.dtype, x.shape[1]) if _depthwise(x) else None
    return box_sum3(x, ones)


def box_sum3(x: torch.Tensor, ones: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over each 3 x 3 neighbourhood of a (B, C, H, W) tensor, zero padded.

    A depthwise convolution with a ones kernel (one kernel call) on GPUs, and on the CPU
    for many channels; separable shifted sums (five calls) for few channels on the CPU.
    Both are several times faster than ``avg_pool2d`` on CPU in NCHW. ``ones`` is an
    optional (C, 1, 3, 3) ones kernel to reuse.
    """
    channels = x.shape[1]
    if _depthwise(x):
        if ones is None:
            ones = x.new_ones((channels, 1, 3, 3))
        return F.conv2d(x, ones, None, 1, 1, 1, channels)
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :, :-2] + padded[..., :, 1:-1]
    rows += padded[..., :, 2:]
    out = rows[..., :-2, :] + rows[..., 1:-1, :]
    out += rows[..., 2:, :]
    return out


def neighbour_weights(
    mask: Mask, rings: int, dtype: torch.dtype = torch.float32, *, batched: bool | None = None
) -> list[torch.Tensor]:
    """Per-ring fill weights for onion-peel neighbour padding, (B, 1, H, W) each.

    Ring r holds the positions that touch the known region (visible positions plus rings
    1 .. r-1) in their 3 x 3 neighbourhood. Its weight is ``1 / (count + 1e-5)`` there
    (count = known neighbours) and 0 elsewhere.
    The image border counts as unknown (zero padding), as in the published code.
    Weights are computed once per (mask, ring count) and cached on the mask.

    Two schedules give the same weights (the counts are exact small integers):

    * on the CPU, ring by ring: a box sum of the known region gives the ring's counts,
      and the positions with a count are the next known region (fewest operations);
    * elsewhere (GPUs; or with ``batched=True``), all rings at once: the known region
      before ring r + 1 is the one before ring r dilated by a 3 x 3 square (one max
      pool each; the first is the mask's own 3 x 3 dilation, shared with a stride-1
      convolution's output mask), so one box sum of the stacked regions gives every
      ring's counts (fewest kernel launches: a fixed handful per mask plus one per
      ring, instead of a dozen per ring).
    """

    all_at_once = mask.keep.device.type != "cpu" if batched is None else batched

    def compute() -> list[torch.Tensor]:
        known = mask.as_float(dtype)
        if not all_at_once:
            weights = []
            for _ in range(rings):
                count = _box_sum3_on(mask, known).round()
                weights.append(_ring_weights(count, known))
                known = (count > 0).to(dtype)
            return weights
        stack = [known]
        if rings > 1:
            stack.append(dilate(mask, Window.make(3, 1, 1), mask.hw).as_float(dtype))
        while len(stack) < rings:
            stack.append(F.max_pool2d(stack[-1], 3, 1, 1))
        known = stack[0] if rings == 1 else torch.cat(stack, dim=1)  # (B, rings, H, W)
        return list(_ring_weights(_box_sum3_on(mask, known).round(), known).split(1, dim=1))

    return mask.memo(("neighbour", rings, dtype, all_at_once), compute)


def _ring_weights(count: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``1 / (count + eps)`` in the ring (not known, a known neighbour), 0 elsewhere."""
    # a known position counts itself and count <= 9, so "count > 9 * known" says both
    ring = count > known * 9
    # 1 / (count + eps) is finite everywhere: multiplying by the 0/1 ring equals selecting
    return (count + NEIGHBOUR_EPS).reciprocal_().mul_(ring)


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
    filled = x.mask.where_visible(x.layout, x.value, 0.0)
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
            current = torch.addcmul(current, _box_sum3_on(x.mask, current), weight)
    if filled.requires_grad:
        # visible positions keep their gradient; ring values are constants
        return torch.where(x.keep_view(), filled, current)
    return current
