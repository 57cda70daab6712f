"""The native CPU kernel of the ROAD solver (``_road_kernels.c``), through ctypes.

The torch solver in :mod:`maskbench.inpaint._multigrid` spends most of a CPU solve on
about 40 separate passes over the fine grid per iteration, and on dispatching some
6,000 small torch operations. The C kernel runs the same multigrid-preconditioned
conjugate gradients (same V-cycle, stopping rule and restarts) for one (sample, channel)
system at a time, so all of a system's passes run in cache; systems are shared out over
``torch.get_num_threads()`` OpenMP threads (torch's own: see ``run_threads`` in the C
file). It also forms the right-hand sides, the Galerkin coarse stencils (bit for bit
torch's) and, for float32 images, the final images (:func:`native_assemble`). The fine
operator and the coarsest grid's dense inverse still come from torch
(:class:`~._multigrid.Hierarchy`).

It differs from the torch solver in two ways, both documented in the C file: the
conjugate-gradient residual is always evaluated in double precision (the torch solver
switches to that only for samples that need it), and dot products are accumulated in
double in one pass. The iterates therefore agree with the torch kernels' to round-off,
not bit for bit; each system's result is still independent of the batch and of the
thread count, bit for bit.

The library is built by ``pip install`` (see ``[[tool.setuptools.ext-modules]]`` in
pyproject.toml). It is plain C with no Python API: ctypes loads it and passes tensor
data pointers.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import cache

import torch

from maskbench.errors import MaskbenchError
from maskbench.inpaint._multigrid import (
    Hierarchy,
    RoadConvergenceError,
    SolveInfo,
    _FineOperator,
    _Grid,
    coarse_size,
    level_smoother,
    unconverged_message,
)

_MODULE = "maskbench.inpaint._road_kernels"
_CONVERGED, _UNCONVERGED, _BROKEN = 0, 1, 2
_NO_MEMORY = 3
_MAX_LEVELS = 32  # ROAD_MAX_LEVELS in the C file


class NativeKernelsMissingError(MaskbenchError, ImportError):
    """The compiled ROAD kernel is needed but not there: maskbench was used from a
    source tree without ``pip install -e .``, which compiles it. Reinstall, or pass
    ``kernels="torch"``."""


class _Assembly(ctypes.Structure):
    """``road_assembly`` in ``_road_kernels.c`` (same fields, same order)."""

    _fields_ = [
        ("count", ctypes.c_int64),
        ("channels", ctypes.c_int64),
        ("height", ctypes.c_int64),
        ("width", ctypes.c_int64),
        ("wp", ctypes.c_int64),
        ("n", ctypes.c_int64),
        ("threads", ctypes.c_int64),
        ("place", ctypes.c_void_p),
        ("images", ctypes.c_void_p),
        ("keep", ctypes.c_void_p),
        ("out", ctypes.c_void_p),
        ("x", ctypes.c_void_p),
        ("noise", ctypes.c_void_p),
        ("removed", ctypes.c_void_p),
        ("noise_std", ctypes.c_float),
    ]


class _Problem(ctypes.Structure):
    """``road_problem`` in ``_road_kernels.c`` (same fields, same order)."""

    _fields_ = [
        ("batch", ctypes.c_int64),
        ("channels", ctypes.c_int64),
        ("levels", ctypes.c_int64),
        ("threads", ctypes.c_int64),
        ("max_iter", ctypes.c_int64),
        ("tol", ctypes.c_double),
        ("dims", ctypes.c_void_p),
        ("c1", ctypes.c_void_p),
        ("c2", ctypes.c_void_p),
        ("dinv", ctypes.c_void_p),
        ("coef", ctypes.c_void_p),
        ("mask", ctypes.c_void_p),
        ("cdinv", ctypes.c_void_p),
        ("inverse", ctypes.c_void_p),
        ("values", ctypes.c_void_p),
        ("scale", ctypes.c_void_p),
        ("x", ctypes.c_void_p),
        ("iterations", ctypes.c_void_p),
        ("restarts", ctypes.c_void_p),
        ("status", ctypes.c_void_p),
        ("estimate", ctypes.c_void_p),
        ("worst", ctypes.c_void_p),
    ]


@cache
def _library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None when it was not built."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or spec.origin is None:
        return None
    library = ctypes.CDLL(spec.origin)
    library.road_pcg.argtypes = [ctypes.POINTER(_Problem)]
    library.road_pcg.restype = ctypes.c_int
    library.road_galerkin_first.argtypes = [
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
    ]
    library.road_galerkin_first.restype = ctypes.c_int
    library.road_galerkin.argtypes = [
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
    ]
    library.road_galerkin.restype = ctypes.c_int
    library.road_assemble.argtypes = [ctypes.POINTER(_Assembly)]
    library.road_assemble.restype = ctypes.c_int
    return library


def _loaded() -> ctypes.CDLL:
    library = _library()
    if library is None:
        raise NativeKernelsMissingError(
            "maskbench's native ROAD kernel is not built; install maskbench with "
            "`pip install -e .` (it compiles maskbench/inpaint/_road_kernels.c), or "
            "solve with the torch kernels (kernels='torch')"
        )
    return library


def native_galerkin_first(fine: _FineOperator) -> torch.Tensor:
    """The first coarse grid's Galerkin stencil ``(B, 3, 3, hc, wc)``, computed from the
    fine operator's coefficients by the native kernel. Equal bit for bit to
    ``galerkin(fine.stencil(...))`` (its entries are exact in float32; see the C file)
    without the nine fine-grid fields that computes."""
    library = _loaded()
    grid = fine.grid
    batch = fine.c2.shape[0]
    c1, c2 = fine.c1.contiguous(), fine.c2.contiguous()
    out = torch.empty((batch, 3, 3, coarse_size(grid.h), coarse_size(grid.w)), dtype=torch.float32)
    dims = torch.tensor([grid.h, grid.w], dtype=torch.int64)
    code = library.road_galerkin_first(
        batch, _pointer(dims), _pointer(c1), _pointer(c2), _pointer(out), torch.get_num_threads()
    )
    _check_memory(code)
    return out


def _check_memory(code: int) -> None:
    """Raise MemoryError for the kernel's ROAD_NO_MEMORY return code."""
    if code == _NO_MEMORY:
        raise MemoryError("native ROAD kernel could not allocate its scratch buffers")


def native_available() -> bool:
    """Whether the compiled ROAD kernel can be used (it was built by ``pip install``)."""
    return _library() is not None


def _pointer(t: torch.Tensor) -> int:
    if not t.is_contiguous():  # pragma: no cover - every caller passes contiguous tensors
        raise ValueError("native ROAD kernel needs contiguous tensors")
    return t.data_ptr()


def native_galerkin(stencil: torch.Tensor) -> torch.Tensor:
    """``galerkin(stencil)`` for a float32 CPU ``(B, 3, 3, h, w)`` stencil, by the native
    kernel: the same terms added in the same order, so equal bit for bit."""
    library = _loaded()
    stencil = stencil.contiguous()
    batch, _, _, h, w = stencil.shape
    out = torch.empty((batch, 3, 3, coarse_size(h), coarse_size(w)), dtype=torch.float32)
    dims = torch.tensor([h, w], dtype=torch.int64)
    code = library.road_galerkin(
        batch, _pointer(dims), _pointer(stencil), _pointer(out), torch.get_num_threads()
    )
    _check_memory(code)
    return out


def _flat_stencil(grid: _Grid, stencil: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3, h, w)`` stencil as ``(B, 9, n)`` zero-bordered flat fields."""
    return grid.flat(stencil.flatten(1, 2)).contiguous()


def native_solve(
    hierarchy: Hierarchy,
    values: torch.Tensor,
    x: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
) -> SolveInfo:
    """Solve ROAD's systems for ``values`` with the native kernel; ``x`` (``(B, C, n)``
    float32, contiguous, on the fine grid of ``hierarchy``) receives the solution.

    Args:
        hierarchy: the masks' multigrid hierarchy (float32, CPU).
        values: ``(B, C, h, w)`` float32 images; values at unknown pixels are never
            used (they may be NaN). The kernel forms the right-hand side and each
            system's scale (largest kept ``|value|``) itself.
        x: output buffer.
        tol, max_iter: as :meth:`~._multigrid.MultigridSolver.solve`.

    Raises:
        NativeKernelsMissingError: the library was not built.
        RoadConvergenceError: a system did not converge or the iteration broke down.
        MemoryError: the kernel could not allocate its scratch.
    """
    library = _loaded()
    batch, channels = values.shape[:2]
    fine = hierarchy.fine
    grids = [fine.grid] + [grid for grid, _ in hierarchy.coarse]
    if len(hierarchy.coarse) > _MAX_LEVELS:  # pragma: no cover - 2^32-pixel images
        raise ValueError("image too large for the native ROAD kernel")
    dims = torch.tensor([[g.h, g.w] for g in grids], dtype=torch.int64)
    levels = hierarchy.coarse[:-1]  # the coarsest one is solved densely
    coef = [_flat_stencil(grid, stencil) for grid, stencil in levels]
    smoothers = [level_smoother(grid, stencil) for grid, stencil in levels]
    mask = [level_mask for level_mask, _ in smoothers]
    cdinv = [level_dinv for _, level_dinv in smoothers]
    arrays = [
        (ctypes.c_void_p * max(len(t), 1))(*[_pointer(a) for a in t]) for t in (coef, mask, cdinv)
    ]
    per_system = (batch, channels)
    iterations = torch.zeros(per_system, dtype=torch.int64)
    restarts = torch.zeros(per_system, dtype=torch.int64)
    status = torch.zeros(per_system, dtype=torch.int64)
    estimate = torch.zeros(per_system, dtype=torch.float32)
    worst = torch.zeros(per_system, dtype=torch.float32)
    scale = torch.zeros(per_system, dtype=torch.float32)
    c1, c2, dinv = (t.contiguous() for t in (fine.c1, fine.c2, fine.dinv))
    inverse = hierarchy.coarsest_inverse.contiguous()
    values = values.contiguous()
    problem = _Problem(
        batch=batch,
        channels=channels,
        levels=len(hierarchy.coarse),
        threads=torch.get_num_threads(),
        max_iter=max_iter,
        tol=tol,
        dims=_pointer(dims),
        c1=_pointer(c1),
        c2=_pointer(c2),
        dinv=_pointer(dinv),
        coef=ctypes.cast(arrays[0], ctypes.c_void_p),
        mask=ctypes.cast(arrays[1], ctypes.c_void_p),
        cdinv=ctypes.cast(arrays[2], ctypes.c_void_p),
        inverse=_pointer(inverse),
        values=_pointer(values),
        scale=_pointer(scale),
        x=_pointer(x),
        iterations=_pointer(iterations),
        restarts=_pointer(restarts),
        status=_pointer(status),
        estimate=_pointer(estimate),
        worst=_pointer(worst),
    )
    code = library.road_pcg(ctypes.byref(problem))
    _check_memory(code)
    if bool((status == _BROKEN).any()):
        raise RoadConvergenceError("ROAD solver broke down (non-finite residual).")
    if bool((status == _UNCONVERGED).any()):
        raise RoadConvergenceError(
            unconverged_message(max_iter, tol, status == _CONVERGED, worst, scale)
        )
    relative = torch.where(scale > 0, estimate / scale.clamp_min(1e-300), 0.0)
    return SolveInfo(
        iterations=int(iterations.max()) if iterations.numel() else 0,
        error_estimate=relative,
        levels=len(hierarchy.coarse) + 1,
        float64_residual=torch.ones(batch, dtype=torch.bool),
        restarts=int(restarts.sum()),
    )


def native_assemble(
    out: torch.Tensor,
    images: torch.Tensor,
    keep: torch.Tensor,
    solution: torch.Tensor,
    places: list[tuple[int, int, int, int, int]],
    noise: list[torch.Tensor | None],
    noise_std: float,
) -> None:
    """Write solved samples into ``out`` (as ``road._assemble_group`` does, for float32 CPU
    images): ``out[i] = images[i]`` with the removed pixels of the sample's box set to
    its solution plus ``noise_std`` times its noise (a select: kept pixels are copied bit
    for bit). Samples not in ``places`` are not touched.

    Args:
        out, images: ``(B, C, H, W)`` float32, contiguous.
        keep: ``(B, H, W)`` bool, contiguous.
        solution: ``(k, C, h, w)`` float32 solutions of the ``k`` solved samples, each
            box at the top left; the interior view of a solve grid is fine (any row and
            channel strides, unit column stride).
        places: per solved sample ``(image index, r0, c0, box height, box width)``.
        noise: per solved sample its ``(C, removed pixels)`` float32 noise (the removed
            pixels in row-major order), or None.
    """
    library = _loaded()
    if solution.stride(3) != 1 or solution.stride(0) != solution.shape[1] * solution.stride(1):
        raise ValueError("solution must be a grid view with unit column stride")
    for t in (out, images, keep):
        _pointer(t)  # contiguity
    place = torch.tensor(places, dtype=torch.int64).reshape(-1, 5)
    draws = [None if z is None else z.contiguous() for z in noise]
    removed = torch.tensor([0 if z is None else z.shape[-1] for z in draws], dtype=torch.int64)
    pointers = (ctypes.c_void_p * max(len(draws), 1))(
        *[None if z is None else _pointer(z) for z in draws]
    )
    assembly = _Assembly(
        count=len(places),
        channels=images.shape[1],
        height=images.shape[2],
        width=images.shape[3],
        wp=solution.stride(2),
        n=solution.stride(1),
        threads=torch.get_num_threads(),
        place=_pointer(place),
        images=_pointer(images),
        keep=_pointer(keep.view(torch.uint8)),
        out=_pointer(out),
        x=solution.data_ptr(),
        noise=ctypes.cast(pointers, ctypes.c_void_p),
        removed=_pointer(removed),
        noise_std=noise_std,
    )
    _check_memory(library.road_assemble(ctypes.byref(assembly)))
