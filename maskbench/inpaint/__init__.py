"""Inpainting (imputation) of removed pixels.

* :func:`road_impute`: ROAD's noisy linear imputation (Rong et al., ICML 2022), batched
  and on the images' device; :func:`road_solution` is its noise-free form with solver
  diagnostics. On the CPU the solver reuses its scratch between calls (per thread);
  :func:`free_solver_buffers` releases it.
"""

from maskbench.inpaint._buffers import free_solver_buffers
from maskbench.inpaint.road import (
    IMAGENET_MEAN,
    RoadConvergenceError,
    road_impute,
    road_solution,
)

__all__ = [
    "IMAGENET_MEAN",
    "RoadConvergenceError",
    "free_solver_buffers",
    "road_impute",
    "road_solution",
]
