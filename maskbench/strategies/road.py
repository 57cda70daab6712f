"""``inpaint_linear``: ROAD's noisy linear imputation as a masking strategy."""

from __future__ import annotations

import torch

from maskbench.inpaint import road_impute
from maskbench.strategies.base import InputSpaceStrategy
from maskbench.strategies.claims import CONTENT_INDEPENDENT_CLAIMS
from maskbench.strategies.registry import register_strategy


@register_strategy("inpaint_linear")
class InpaintLinear(InputSpaceStrategy):
    """Removed pixels are solved from their 8 neighbours (ROAD), plus seeded noise.

    Each removed pixel equals the weighted mean of its neighbours (1/6 edge, 1/12
    diagonal, renormalised at the border), all removed pixels solved jointly as one
    sparse linear system on the images' device; Gaussian noise of ``noise_std`` is then
    added to the imputed pixels, drawn per sample from ``seed`` and the sample's mask.
    See :func:`maskbench.inpaint.road_impute`.
    """

    claims = CONTENT_INDEPENDENT_CLAIMS

    def __init__(self, noise_std: float = 0.01, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self.seed = int(seed)

    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Kept pixels unchanged, removed pixels imputed by ROAD's linear system."""
        return road_impute(images, keep, noise_std=self.noise_std, seed=self.seed)
