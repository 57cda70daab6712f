"""Mask builders: rectangles, segment keep-vectors, nested removal sequences.

All builders return bool keep-masks of shape (B, 1, H, W) (True = kept) on the
requested device, batched, with no Python loop over pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maskbench.errors import MaskError

Box = tuple[int, int, int, int]  # (top, left, height, width)


def rectangle_masks(
    size: tuple[int, int],
    boxes: Sequence[Box] | torch.Tensor,
    *,
    keep_inside: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One mask per box ``(top, left, height, width)``; the box is kept (or removed).

    Boxes may reach past the image edge; the part inside the image is used.
    """
    height, width = size
    boxes_t = torch.as_tensor(boxes, dtype=torch.int64, device=device).reshape(-1, 4)
    if bool((boxes_t[:, 2:] < 0).any()):
        raise MaskError(f"rectangle height and width must be >= 0, got {boxes_t.tolist()}")
    rows = torch.arange(height, device=boxes_t.device)
    cols = torch.arange(width, device=boxes_t.device)
    top, left, h, w = boxes_t.unbind(1)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + h)[:, None])
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < (left + w)[:, None])
    inside = in_rows[:, :, None] & in_cols[:, None, :]
    return (inside if keep_inside else ~inside)[:, None]


def masks_from_keep(segments: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Turn per-segment keep-vectors into pixel masks.

    ``segments`` is an (H, W) or (B, H, W) integer map with ids ``0 .. S-1``; ``keep`` is
    (B, S) or (S,) bool (or 0/1). Returns (B, 1, H, W) bool: a pixel is kept when its
    segment is kept.
    """
    if segments.is_floating_point() or segments.dtype == torch.bool:
        raise MaskError(f"segments must be an integer id map, got dtype {segments.dtype}")
    keep = torch.as_tensor(keep, device=segments.device)
    if keep.dim() == 1:
        keep = keep[None]
    if keep.dim() != 2:
        raise MaskError(f"keep must be (B, S) or (S,), got shape {tuple(keep.shape)}")
    if keep.dtype != torch.bool:
        if bool(((keep != 0) & (keep != 1)).any()):
            raise MaskError("keep-vector values must be 0 or 1 (or bool)")
        keep = keep != 0
    num_segments = int(segments.max()) + 1
    if int(segments.min()) < 0:
        raise MaskError("segment ids must be >= 0")
    if keep.shape[1] < num_segments:
        raise MaskError(
            f"keep-vector has {keep.shape[1]} entries but the segment map has "
            f"{num_segments} segments"
        )
    if segments.dim() == 2:
        return keep[:, segments][:, None]
    if segments.dim() == 3:
        if segments.shape[0] not in (1, keep.shape[0]):
            raise MaskError(
                f"segment maps batch {segments.shape[0]} does not match keep batch {keep.shape[0]}"
            )
        segments = segments.expand(keep.shape[0], -1, -1)
        flat = torch.gather(keep, 1, segments.reshape(keep.shape[0], -1))
        return flat.reshape(segments.shape)[:, None]
    raise MaskError(f"segments must be (H, W) or (B, H, W), got {tuple(segments.shape)}")


def count_segments(segments: torch.Tensor) -> int:
    """Number of segments in an id map (ids are 0 .. S-1)."""
    return int(segments.max()) + 1


def random_order(num_segments: int, seed: int, *, device=None) -> torch.Tensor:
    """A seeded random permutation of segment ids (a removal order)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(num_segments, generator=generator).to(device)


def removed_count(num_segments: int, fraction: float) -> int:
    """How many of ``num_segments`` segments a removal ``fraction`` removes (rounded)."""
    if not 0.0 <= fraction <= 1.0:
        raise MaskError(f"removal fraction must be in [0, 1], got {fraction}")
    return round(fraction * num_segments)


def nested_keep_vectors(
    num_segments: int, fractions: Sequence[float], order: torch.Tensor
) -> torch.Tensor:
    """(F, S) keep-vectors: row f removes the first round(f*S) segments of ``order``.

    With increasing fractions, each row keeps a subset of the previous row's segments.
    """
    order = torch.as_tensor(order, dtype=torch.int64)
    if sorted(order.tolist()) != list(range(num_segments)):
        raise MaskError(f"order must be a permutation of 0..{num_segments - 1}")
    # rank[s] = position of segment s in the removal order
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_segments, device=order.device)
    counts = torch.tensor([removed_count(num_segments, f) for f in fractions], device=order.device)
    return rank[None, :] >= counts[:, None]


def nested_removal_masks(
    segments: torch.Tensor,
    fractions: Sequence[float],
    *,
    order: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Nested masks (F, 1, H, W) removing ``fractions`` of the segments in ``order``.

    ``order`` defaults to a random order drawn from ``seed``. Each mask keeps a subset
    of the previous one when fractions increase.
    """
    num_segments = count_segments(segments)
    if order is None:
        order = random_order(num_segments, seed, device=segments.device)
    keep = nested_keep_vectors(num_segments, fractions, order.to(segments.device))
    return masks_from_keep(segments, keep)


def random_removal_masks(
    segments: torch.Tensor, fraction: float, count: int, *, seed: int = 0
) -> torch.Tensor:
    """``count`` independent masks, each removing a random ``fraction`` of the segments."""
    num_segments = count_segments(segments)
    generator = torch.Generator().manual_seed(int(seed))
    removed = removed_count(num_segments, fraction)
    ranks = torch.rand(count, num_segments, generator=generator).argsort(dim=1).argsort(dim=1)
    keep = (ranks >= removed).to(segments.device)
    return masks_from_keep(segments, keep)
