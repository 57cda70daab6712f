"""``inpaint_neighbor``: onion-peel neighbour averaging over the whole removed region."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from maskbench.models import IMAGENET_MEAN
from maskbench.strategies.base import InputSpaceStrategy
from maskbench.strategies.claims import CONTENT_INDEPENDENT_CLAIMS
from maskbench.strategies.registry import register_strategy


def neighbour_sums(values: torch.Tensor) -> torch.Tensor:
    """Sum over each position's 3x3 neighbourhood (zero outside the image)."""
    return F.avg_pool2d(values, 3, stride=1, padding=1, divisor_override=1)


def onion_peel(images: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill removed pixels ring by ring with the mean of their known 3x3 neighbours.

    Each pass, every unknown pixel that touches the known region becomes the mean of
    its known neighbours and joins the known region, until nothing more can be filled.
    Returns (filled images, known mask); pixels of an image with nothing kept stay
    unknown. Vectorised over the batch; one pass per ring.
    """
    known = keep.clone()
    values = torch.where(known, images, 0)
    dtype = images.dtype
    while True:
        count = neighbour_sums(known.to(dtype))
        frontier = ~known & (count > 0)
        if not bool(frontier.any()):
            return values, known
        mean = neighbour_sums(values) / count.clamp(min=1)
        values = torch.where(frontier, mean, values)
        known = known | frontier


@register_strategy("inpaint_neighbor")
class InpaintNeighbor(InputSpaceStrategy):
    """Fill the whole removed region by the paper's onion-peel neighbour averaging.

    The paper applies this averaging inside the network before each conv; here it
    fills the image itself until no removed pixel is left. Each filled pixel is the
    exact mean of its already-known 3x3 neighbours (the paper's ``+1e-5`` in the
    denominator only guards a division that cannot be by zero here). An image with
    nothing kept becomes ``fallback`` (the ImageNet mean grey).
    """

    claims = CONTENT_INDEPENDENT_CLAIMS

    def __init__(self, fallback: Sequence[float] = IMAGENET_MEAN, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fallback = tuple(float(c) for c in fallback)

    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Kept pixels unchanged, removed pixels inpainted from their neighbours."""
        if bool(keep.all()):
            return images
        values, known = onion_peel(images, keep)
        fallback = torch.as_tensor(self.fallback, dtype=images.dtype, device=images.device)
        values = torch.where(known, values, fallback.reshape(1, -1, 1, 1))
        return torch.where(keep, images, values)
