"""Segmentations by name, per-segment statistics, and removal orders.

Segmentations (each returns an (H, W) int64 id map, ids ``0 .. S-1``):

* ``patches16``: a regular grid of 16 x 16 patches (``patchesN`` for N x N);
* ``slic``: SLIC superpixels (scikit-image), 50 requested segments, compactness 10;
* ``quickshift``: quickshift superpixels with LIME's parameters (kernel size 4, max
  distance 200, ratio 0.2) *scaled to the image*: kernel size and max distance are
  multiplied by ``min(H, W) / 224`` so a small image gets about as many segments as a
  224-pixel one would (LIME's parameters were chosen for 224 x 224).
"""

from __future__ import annotations

import torch

from maskbench import masks as mb_masks

#: The segmentations of the paper, in report order.
SEGMENTATIONS: tuple[str, ...] = ("patches16", "slic", "quickshift")

#: Image side LIME's quickshift parameters were chosen for.
LIME_REFERENCE_SIZE = 224


def segment(image: torch.Tensor, name: str, *, seed: int = 0) -> torch.Tensor:
    """The ``name`` segmentation of one (3, H, W) image, on the image's device."""
    height, width = image.shape[-2:]
    if name.startswith("patches"):
        text = name[len("patches") :] or "16"
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"patch segmentations look like 'patches16', got {name!r}")
        return mb_masks.patch_grid((height, width), int(text), device=image.device)
    if name == "slic":
        return mb_masks.slic(image, n_segments=50, compactness=10.0)
    if name == "quickshift":
        scale = min(height, width) / LIME_REFERENCE_SIZE
        return mb_masks.quickshift(
            image, kernel_size=4.0 * scale, max_dist=200.0 * scale, ratio=0.2, seed=seed
        )
    raise ValueError(
        f"unknown segmentation {name!r}; choose from {', '.join(SEGMENTATIONS)} "
        "(or patchesN for N x N patches)"
    )


def segment_sums(segments: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(S,) sum of ``values`` (H, W) over each segment of ``segments`` (H, W)."""
    num = int(segments.max()) + 1
    flat = values.reshape(-1).to(torch.float64)
    return torch.zeros(num, dtype=torch.float64, device=values.device).index_add_(
        0, segments.reshape(-1), flat
    )


def segment_means(segments: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(S,) mean of ``values`` (H, W) over each segment (e.g. object coverage, saliency)."""
    sizes = torch.bincount(segments.reshape(-1), minlength=int(segments.max()) + 1)
    return segment_sums(segments, values) / sizes.clamp(min=1).to(torch.float64)


def salience_order(scores: torch.Tensor, tie_order: torch.Tensor) -> torch.Tensor:
    """Segment ids from the highest score to the lowest; ties follow ``tie_order``.

    ``tie_order`` is a permutation of the segment ids (e.g. the random order) so that
    equally scored segments (say, all background segments with coverage 0) are taken in
    a seeded random order rather than by id. Reverse the result for least-salient-first
    (which then also reverses the tie order, as any order-reversal would).
    """
    tie_order = tie_order.to(scores.device)
    ranked = torch.argsort(-scores[tie_order].to(torch.float64), stable=True)
    return tie_order[ranked]


def removal_orders(
    segments: torch.Tensor,
    random_order: torch.Tensor,
    salience: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Removal orders by name: ``random`` always; salience orders when a map is given.

    ``salience`` is an (H, W) map (an object mask or a saliency map); segments are
    ranked by their mean value. ``most_salient`` removes the highest-ranked segment
    first, ``least_salient`` the lowest-ranked first.
    """
    orders = {"random": random_order}
    if salience is not None:
        scores = segment_means(segments, salience.to(torch.float64))
        most = salience_order(scores, random_order)
        orders["most_salient"] = most
        orders["least_salient"] = most.flip(0)
    return orders
