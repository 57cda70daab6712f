"""Inpainting (imputation) of removed pixels.

* :func:`road_impute`: ROAD's noisy linear imputation (Rong et al., ICML 2022), batched
  and on the images' device; :func:`road_solution` is its noise-free form with solver
  diagnostics. On the CPU the solver runs in a compiled kernel (built by ``pip install``;
  :class:`NativeKernelsMissingError` if it is not there), and reuses its scratch between
  calls (per thread); :func:`free_solver_buffers` releases it.
"""

from maskbench.inpaint._buffers import free_solver_buffers
from maskbench.inpaint._native import NativeKernelsMissingError, native_available
from maskbench.inpaint.road import (
    IMAGENET_MEAN,
    RoadConvergenceError,
    road_impute,
    road_solution,
)

__all__ = [
    "IMAGENET_MEAN",
    "NativeKernelsMissingError",
    "RoadConvergenceError",
    "free_solver_buffers",
    "native_available",
    "road_impute",
    "road_solution",
]
