"""``noise``: removed pixels become seeded uniform random colours."""

from __future__ import annotations

import torch

from maskbench.seeding import per_sample_rand
from maskbench.strategies.base import InputSpaceStrategy
from maskbench.strategies.claims import CONTENT_INDEPENDENT_CLAIMS
from maskbench.strategies.registry import register_strategy


@register_strategy("noise")
class Noise(InputSpaceStrategy):
    """Removed pixels become uniform noise in [0, 1), independently per pixel and channel.

    The noise of a sample is a counter-based hash keyed by ``seed`` and the sample's
    mask (:func:`maskbench.seeding.per_sample_rand`), so it is the same alone or in any
    batch, never depends on pixel values, and is the same bits on every device. It is
    drawn for the whole batch in about 30 integer ops, with no host read.
    """

    claims = CONTENT_INDEPENDENT_CLAIMS

    def __init__(self, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = int(seed)

    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Kept pixels unchanged, removed pixels replaced by seeded uniform noise."""
        if bool(keep.all()):
            return images
        noise = per_sample_rand(tuple(images.shape[1:]), keep, self.seed, dtype=images.dtype)
        return torch.where(keep, images, noise)
