"""``blur``: removed pixels become a Gaussian blur of the image."""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

from maskbench.strategies.base import InputSpaceStrategy
from maskbench.strategies.claims import Claim
from maskbench.strategies.registry import register_strategy


@register_strategy("blur")
class Blur(InputSpaceStrategy):
    """Removed pixels take the value of a Gaussian-blurred copy of the image.

    The blur reads the removed pixels too, so this strategy does **not** claim content
    independence: a blur keeps a low-pass copy of what was "removed".

    Args:
        sigma: standard deviation of the Gaussian in pixels.
    """

    claims = frozenset({Claim.IDENTITY, Claim.BATCH_CONSISTENCY, Claim.DETERMINISM, Claim.FINITE})

    def __init__(self, sigma: float = 8.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def kernel_size(self, height: int, width: int) -> int:
        """Odd kernel covering +-3 sigma, capped so reflect padding fits the image."""
        size = 2 * math.ceil(3 * self.sigma) + 1
        cap = 2 * min(height, width) - 1
        return max(1, min(size, cap if cap % 2 else cap - 1))

    def blurred(self, images: torch.Tensor) -> torch.Tensor:
        """The blurred images (reflect padding at the border)."""
        size = self.kernel_size(*images.shape[-2:])
        return TF.gaussian_blur(images, kernel_size=[size, size], sigma=[self.sigma, self.sigma])

    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Kept pixels unchanged, removed pixels from the blurred image."""
        if bool(keep.all()):
            return images
        return torch.where(keep, images, self.blurred(images))
