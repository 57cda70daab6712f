"""Constant fills: ``black``, ``grey`` and ``image_mean``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maskbench.dtypes import accumulate_dtype
from maskbench.models import IMAGENET_MEAN
from maskbench.strategies.base import InputSpaceStrategy
from maskbench.strategies.claims import CONTENT_INDEPENDENT_CLAIMS
from maskbench.strategies.registry import register_strategy


def _colour_image(colour: Sequence[float], images: torch.Tensor) -> torch.Tensor:
    colour_t = torch.as_tensor(colour, dtype=images.dtype, device=images.device)
    if colour_t.numel() not in (1, images.shape[1]):
        raise ValueError(
            f"fill colour has {colour_t.numel()} values but the images have "
            f"{images.shape[1]} channels"
        )
    return colour_t.reshape(1, -1, 1, 1)


class ColourFill(InputSpaceStrategy):
    """Paint removed pixels with one constant colour (pixel space)."""

    claims = CONTENT_INDEPENDENT_CLAIMS

    def __init__(self, colour: Sequence[float] = (0.0, 0.0, 0.0), **kwargs) -> None:
        super().__init__(**kwargs)
        self.colour = tuple(float(c) for c in colour)

    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Kept pixels unchanged, removed pixels set to ``colour``."""
        return torch.where(keep, images, _colour_image(self.colour, images))


@register_strategy("black")
class Black(ColourFill):
    """Removed pixels become black (pixel value 0)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(colour=(0.0,), **kwargs)


@register_strategy("grey")
class Grey(ColourFill):
    """Removed pixels become the ImageNet mean colour, which is 0 after normalisation.

    Pass ``colour=model.mean_colour`` for a model trained with other statistics.
    """

    def __init__(self, colour: Sequence[float] = IMAGENET_MEAN, **kwargs) -> None:
        super().__init__(colour=colour, **kwargs)


@register_strategy("image_mean")
class ImageMean(InputSpaceStrategy):
    """Removed pixels become each image's mean colour over its *kept* pixels.

    An image with nothing kept falls back to ``fallback`` (the ImageNet mean colour).
    """

    claims = CONTENT_INDEPENDENT_CLAIMS

    def __init__(self, fallback: Sequence[float] = IMAGENET_MEAN, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fallback = tuple(float(c) for c in fallback)

    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Kept pixels unchanged, removed pixels set to the kept pixels' mean colour."""
        acc = accumulate_dtype(images.dtype)  # a float16 count overflows at 256 x 256
        count = keep.sum(dim=(2, 3), keepdim=True, dtype=acc)
        total = torch.where(keep, images, 0).sum(dim=(2, 3), keepdim=True, dtype=acc)
        mean = (total / count.clamp(min=1)).to(images.dtype)
        fallback = _colour_image(self.fallback, images).expand_as(mean)
        colour = torch.where(count > 0, mean, fallback)
        return torch.where(keep, images, colour)
