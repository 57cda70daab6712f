"""Inpainting (imputation) of removed pixels.

* :func:`road_impute`: ROAD's noisy linear imputation (Rong et al., ICML 2022), batched
  and on the images' device; :func:`road_solution` is its noise-free form with solver
  diagnostics.
"""

from maskbench.inpaint.road import (
    IMAGENET_MEAN,
    RoadConvergenceError,
    road_impute,
    road_solution,
)

__all__ = ["IMAGENET_MEAN", "RoadConvergenceError", "road_impute", "road_solution"]
