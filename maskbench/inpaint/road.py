"""ROAD's noisy linear imputation, batched, on the images' device.

ROAD (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods"; reference code ``NoisyLinearImputer`` in
github.com/tleemann/road_evaluation, ``road/imputations.py``) fills every removed pixel
with the weighted mean of its 8 neighbours (1/6 for the 4 edge neighbours, 1/12 for the
4 diagonal ones; at the image border only in-bounds neighbours count and the weights are
renormalised by their sum). Neighbours may themselves be removed, so all removed pixels
of an image are solved jointly as one sparse linear system (per channel); then Gaussian
noise of standard deviation 0.01 is added to the imputed pixels only.

Agreement with the reference, detail by detail:

* Equations: the reference writes, per removed pixel ``i``,
  ``sum_{j removed} w_ij x_j - s_i x_i = -sum_{j kept} w_ij v_j`` with ``s_i`` the sum of
  the in-bounds weights (``1`` minus the weights of out-of-bounds offsets). Dividing by
  ``s_i`` gives the renormalised weighted mean; as written (not divided) the matrix is
  symmetric, and its negation ``S - W_UU`` is positive definite. That system (times 12,
  which makes every coefficient an integer) is what is solved here: same solution.
* Noise: the reference adds ``noise * randn`` to the imputed pixels only (kept pixels
  are returned unchanged), independently per pixel and channel. Same here, but the
  draws come from :func:`maskbench.seeding.per_sample_randn_each`, keyed by ``seed`` and the
  sample's mask, so a sample gets the same noise alone, in any batch and in any order
  (the reference uses the global torch RNG): one draw per removed pixel and channel,
  channel by channel, the removed pixels in row-major order. The stream of a mask
  differs between CPU and CUDA, and may differ between GPU models (CUDA's ``randn``
  depends on the launch grid), so compare ROAD scorecards from one kind of device.
* A removed pixel whose neighbours are all removed: nothing special, it is one more
  unknown of the joint system (as in the reference).
* Nothing kept: the reference's matrix is then singular (``spsolve`` warns and returns
  NaN). Here the removed pixels get a constant per-channel ``empty_fill`` (default: the
  ImageNet mean ``(0.485, 0.456, 0.406)`` for 3 channels, ``0.5`` otherwise, which
  assumes images in [0, 1]) plus the noise. If anything is kept, every removed
  8-connected region touches a kept pixel and the system is non-singular.
* Nothing removed: the sample is returned unchanged (no noise; the reference would
  build an empty system).
* Precision: the reference solves in float64 with a direct solver and returns float32.
  Here float64 images are solved in float64 and all other dtypes (float32, float16,
  bfloat16) in float32, iteratively to the error tolerance ``tol``; the result is cast
  back to the images' dtype. ``tol`` bounds the multigrid *estimate* of the error, which
  tracks the error closely: in a randomised check against a direct float64 solve (about
  4,300 masks up to 300 x 300: random pixels, patches of 2 to 40 px with 5% to 99%
  removed, rectangles, single kept pixels) the worst error was 1.1e-4 of the kept
  values' scale with the default ``tol`` of 1e-4; typical errors are about 1e-5 (4e-5
  with 99% of 16 x 16 patches removed). Tests require ``<= 1e-3`` against
  ``scipy.sparse.linalg.spsolve``. Not bit for bit.
* Kernels: on the CPU the solve runs in a compiled kernel (:mod:`._native`), elsewhere
  (CUDA, float64 images) in torch operations; ``kernels=`` picks. Both solve the same
  system with the same preconditioner and stopping rule and agree to float32 round-off.

Batching: each sample is solved on the bounding box of its removed pixels grown by one
pixel (the only pixels its equations involve), rounded up to a multiple of 8 per side
and padded with "outside the image" cells; samples with the same rounded box size are
solved together. A sample's arithmetic therefore depends only on its own image and mask:
a batch gives exactly (bit for bit, on the CPU) what its samples give one by one, in any
order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from maskbench.errors import ImageError
from maskbench.inpaint._buffers import BufferPool, thread_buffers
from maskbench.inpaint._multigrid import (
    Kernels,
    RoadConvergenceError,
    SolveInfo,
    solve_system,
    uses_native_kernel,
)
from maskbench.inpaint._native import native_assemble
from maskbench.masks.validate import check_image_layout, check_mask
from maskbench.seeding import per_sample_randn_each

__all__ = [
    "IMAGENET_MEAN",
    "RoadConvergenceError",
    "road_impute",
    "road_solution",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Default fill of 3-channel images with nothing kept (other channel counts: 0.5)."""

DEFAULT_TOL = 1e-4
DEFAULT_MAX_ITER = 100
_BOX_GRANULARITY = 8  # box sides are rounded up to a multiple of this (see module doc)


def road_impute(
    images: torch.Tensor,
    keep: torch.Tensor,
    *,
    noise_std: float = 0.01,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    empty_fill: float | Sequence[float] | None = None,
    kernels: Kernels = "auto",
) -> torch.Tensor:
    """Fill removed pixels with ROAD's noisy linear imputation.

    Args:
        images: ``(B, C, H, W)`` floating tensor on any device.
        keep: ``(B, 1, H, W)`` (or ``(1, 1, H, W)`` / ``(H, W)``, shared by the batch)
            bool or 0/1 tensor on the same device, True = pixel kept (visible).
        noise_std: standard deviation of the Gaussian noise added to the imputed pixels
            (ROAD: 0.01). ``0`` gives the noise-free solution (see :func:`road_solution`).
        seed: noise seed; each sample's stream is keyed by ``seed`` and its own mask.
        tol: stopping tolerance of the iterative solver: the multigrid estimate of the
            max abs error of the imputed pixels, relative to the largest ``|value|`` of
            the kept pixels around the holes (in their bounding box grown by one pixel),
            per image and channel. With the default ``1e-4`` the imputed values of
            images in [0, 1] were within about 1e-5 of a direct solve at 50% removed,
            4e-5 at 99% removed, and 1.1e-4 in the worst of some 4,300 random masks
            (see the module docstring).
        max_iter: cap on conjugate-gradient iterations (4 to 6 are typical).
        empty_fill: value(s) for samples with nothing kept (one per channel or a
            scalar); default ImageNet mean grey for 3 channels, else 0.5.
        kernels: how the solver runs. ``"auto"`` (default): the compiled CPU kernel
            for images on the CPU solved in float32 (everything but float64), torch
            operations otherwise (CUDA, float64). ``"torch"``: torch operations
            everywhere (the same arithmetic as on a GPU). ``"native"``: the compiled
            kernel, an error where it does not apply. Both solve the same system with
            the same preconditioner and stopping rule; they agree to float32 round-off
            (see :mod:`maskbench.inpaint._native`).

    Returns:
        A new tensor like ``images``: kept pixels bit-for-bit unchanged, removed pixels
        set to the solution of ROAD's linear system plus noise. Values at removed pixels
        of the input never influence the result (they may even be NaN).

    Raises:
        ImageError: ``images`` is not a float ``(B, C, H, W)`` tensor, or has NaN/Inf at
            a kept pixel.
        MaskError: ``keep`` breaks the mask contract (shape, values, device).
        ValueError: a negative or NaN ``noise_std``, ``tol <= 0``, ``max_iter < 1``, or
            an ``empty_fill`` with the wrong number of values.
        RoadConvergenceError: some system did not reach ``tol`` within ``max_iter``.
        NativeKernelsMissingError: the compiled kernel is needed but was not built
            (maskbench was not installed with pip).
    """
    filled, _ = _impute(images, keep, noise_std, seed, tol, max_iter, empty_fill, kernels)
    return filled


def road_solution(
    images: torch.Tensor,
    keep: torch.Tensor,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    empty_fill: float | Sequence[float] | None = None,
    kernels: Kernels = "auto",
) -> tuple[torch.Tensor, list[SolveInfo]]:
    """Noise-free ROAD imputation plus solver diagnostics.

    Same as ``road_impute(images, keep, noise_std=0, ...)``; also returns the
    :class:`~maskbench.inpaint._multigrid.SolveInfo` of each group of samples solved
    together (iterations, error estimates), empty when nothing needed solving.
    """
    return _impute(images, keep, 0.0, 0, tol, max_iter, empty_fill, kernels)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the system is solved in: float64 for float64 images, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _validated(
    images: torch.Tensor, keep: torch.Tensor, noise_std: float, tol: float, max_iter: int
) -> torch.Tensor:
    """Check the arguments; return ``keep`` as a ``(B, 1, H, W)`` bool tensor.

    Images may hold any finite values at kept pixels (no [0, 1] requirement: ROAD also
    runs on normalised images) and anything at removed pixels. ``keep`` follows the mask
    contract of :func:`maskbench.masks.validate.check_mask` (bool or 0/1; ``(B, 1, H,
    W)``, ``(1, 1, H, W)`` shared by the batch, or ``(H, W)``).
    """
    check_image_layout(images)
    keep = check_mask(
        keep, size=tuple(images.shape[-2:]), device=images.device, batch=images.shape[0]
    )
    keep = keep.expand(images.shape[0], 1, *images.shape[-2:])
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    # NaN or Inf at a kept pixel would enter the system (or its scale) and break the
    # solve with a misleading error. The sum of the images is finite only if every value
    # is: the common all-finite batch costs one reduction. Otherwise (a non-finite value
    # somewhere, or an overflowing sum) the exact check finds the samples with a
    # non-finite value at a kept pixel; removed pixels may hold anything.
    if bool(torch.isfinite(images.sum())):
        return keep
    bad = (~torch.isfinite(images) & keep).flatten(1).any(dim=1)
    if bool(bad.any()):
        samples = torch.nonzero(bad).flatten().tolist()
        raise ImageError(
            f"images contain NaN or Inf at kept pixels (samples {samples[:10]}"
            f"{' ...' if len(samples) > 10 else ''}); removed pixels may hold anything, "
            "kept pixels must be finite"
        )
    return keep


Box = tuple[int, int, int, int]  # rows [r0, r1), columns [c0, c1)


def _impute(
    images: torch.Tensor,
    keep: torch.Tensor,
    noise_std: float,
    seed: int,
    tol: float,
    max_iter: int,
    empty_fill: float | Sequence[float] | None,
    kernels: Kernels,
) -> tuple[torch.Tensor, list[SolveInfo]]:
    keep = _validated(images, keep, noise_std, tol, max_iter)
    dtype = compute_dtype(images.dtype)
    # Checked before any work (also when nothing needs solving).
    native = uses_native_kernel(kernels, images.device, dtype)
    fill = _empty_fill_values(images.shape[1], empty_fill, images, dtype)  # checked early
    boxes = _hole_boxes(keep)
    has_kept = keep.flatten(1).any(dim=1).tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    for i, box in enumerate(boxes):
        if box is not None and has_kept[i]:
            groups.setdefault(_canonical_size(box, images.shape[-2:]), []).append(i)
    full = (0, images.shape[-2], 0, images.shape[-1])
    boxes = [box if box is None or has_kept[i] else full for i, box in enumerate(boxes)]
    infos: list[SolveInfo] = []
    # The noise does not depend on the solutions: drawn first, so that the native kernel
    # can assemble each group as soon as it is solved.
    noise = _noise(boxes, keep, images.shape[1], seed, dtype) if noise_std > 0 else {}
    out = torch.empty_like(images)
    # The native kernel also assembles float32 images (others are cast: torch does it).
    native_assembly = native and images.dtype == torch.float32 and images.is_contiguous()
    keep_flat = keep[:, 0].contiguous() if native_assembly else None
    # The solutions live in the pool's buffers until the images are assembled.
    with thread_buffers().lending() as pool:
        for size, rows in groups.items():
            group_boxes = [boxes[i] for i in rows]
            solution, info = _solve_group(
                images, keep, rows, group_boxes, size, dtype, tol, max_iter, pool, kernels
            )
            infos.append(info)
            if native_assembly:
                places = [
                    (i, r0, c0, r1 - r0, c1 - c0)
                    for i, (r0, r1, c0, c1) in zip(rows, group_boxes, strict=True)
                ]
                draws = [noise.pop(i, None) for i in rows]
                native_assemble(out, images, keep_flat, solution, places, draws, noise_std)
            else:
                draws = [noise.pop(i) for i in rows] if noise_std > 0 else None
                _assemble_group(out, images, keep, rows, group_boxes, solution, draws, noise_std)
        empty = [i for i, box in enumerate(boxes) if box is not None and not has_kept[i]]
        if empty:  # nothing kept, nothing solved: the fill values stand in for a solution
            solution = fill.expand(len(empty), *images.shape[1:])
            draws = [noise.pop(i) for i in empty] if noise_std > 0 else None
            _assemble_group(
                out, images, keep, empty, [full] * len(empty), solution, draws, noise_std
            )
        for i, box in enumerate(boxes):
            if box is None:  # nothing removed
                out[i] = images[i]
    return out, infos


def _noise(
    boxes: list[Box | None], keep: torch.Tensor, channels: int, seed: int, dtype: torch.dtype
) -> dict[int, torch.Tensor]:
    """Standard normal noise for each sample with something removed, keyed by sample
    index: ``(C, removed pixels)``, the removed pixels in row-major order (a function
    of the mask, like the stream's key; nothing is drawn for kept pixels)."""
    rows = [i for i, box in enumerate(boxes) if box is not None]
    if not rows:
        return {}
    index = torch.tensor(rows, device=keep.device)
    masks = keep.index_select(0, index)
    removed = (~masks).flatten(1).sum(dim=1).tolist()
    shapes = [(channels, count) for count in removed]
    draws = per_sample_randn_each(shapes, masks, seed, dtype=dtype)
    return dict(zip(rows, draws, strict=True))


def _scatter_draws(removed: torch.Tensor, draws: list[torch.Tensor]) -> torch.Tensor:
    """``(k, C, n)``: sample ``b``'s draws (``(C, removed pixels)``, see :func:`_noise`)
    at its removed pixels (``removed``: ``(k, n)`` bool), zero elsewhere. One gather for
    all samples, with no host read: a removed pixel's place in its sample's draws is the
    number of removed pixels before it (a cumulative sum)."""
    channels = draws[0].shape[0]
    counts = [draw.shape[1] for draw in draws]
    device = removed.device
    starts = torch.tensor(
        list(itertools.accumulate((channels * c for c in counts[:-1]), initial=0)), device=device
    )
    count = torch.tensor(counts, device=device).view(-1, 1, 1)
    rank = removed.cumsum(dim=1).sub_(1).unsqueeze(1)  # (k, 1, n)
    channel = torch.arange(channels, device=device).view(1, -1, 1)
    place = (channel * count).add_(starts.view(-1, 1, 1)).add(rank)  # (k, C, n)
    flat = torch.cat([draw.reshape(-1) for draw in draws])
    gathered = flat.take(place.clamp_(0, flat.numel() - 1))
    return torch.where(removed.unsqueeze(1), gathered, 0.0)


def _assemble_group(
    out: torch.Tensor,
    images: torch.Tensor,
    keep: torch.Tensor,
    rows: list[int],
    boxes: list[Box],
    solution: torch.Tensor,
    draws: list[torch.Tensor] | None,
    std: float,
) -> None:
    """Write the samples ``rows`` of one solved group into ``out``, all at once.

    ``solution`` (``(k, C, h, w)``) holds sample ``k``'s box at its top-left corner
    (:func:`_solve_group`). Each removed pixel gets its box's solution plus ``std``
    times its draw (``draws[k]``: ``(C, removed pixels)``, see :func:`_noise`; None for
    no noise); kept pixels are copied bit for bit (a ``where``, never arithmetic, so NaN
    at removed pixels cannot leak). A few dozen ops and no host read, whatever ``k``
    (what a GPU waits on); the same bits as crop by crop (tested)."""
    device = images.device
    count, channels, grid_h, grid_w = solution.shape
    height, width = images.shape[-2:]
    index = torch.tensor(rows, device=device)
    masks = keep.index_select(0, index)
    if (grid_h, grid_w) == (height, width) and all(b[0] == b[2] == 0 for b in boxes):
        imputed = solution
    else:  # move each box to its place: one gather (removed pixels are all in the box)
        corners = torch.tensor([(b[0], b[2]) for b in boxes], device=device)
        y = torch.arange(height, device=device).view(1, height, 1) - corners[:, :1, None]
        x = torch.arange(width, device=device).view(1, 1, width) - corners[:, None, 1:]
        place = y.clamp_(0, grid_h - 1) * grid_w + x.clamp_(0, grid_w - 1)  # (k, H, W)
        flat = solution.reshape(count, channels, grid_h * grid_w)
        spread = place.view(count, 1, -1).expand(count, channels, -1)
        imputed = flat.gather(2, spread).view(count, channels, height, width)
    if draws is not None:
        noise = _scatter_draws(~masks.flatten(1), draws).view_as(imputed)
        imputed = imputed + std * noise  # kept pixels are overwritten below
    picked = torch.where(masks, images.index_select(0, index), imputed.to(images.dtype))
    out.index_copy_(0, index, picked)


def _hole_boxes(keep: torch.Tensor) -> list[Box | None]:
    """Per sample, the bounding box of its removed pixels grown by one pixel (clipped to
    the image), or None when nothing is removed."""
    removed = ~keep[:, 0]
    height, width = removed.shape[-2:]
    rows = removed.any(dim=2)  # (B, H)
    cols = removed.any(dim=1)  # (B, W)
    found = torch.stack(
        [
            rows.any(dim=1).long(),
            rows.to(torch.uint8).argmax(dim=1),
            height - 1 - rows.flip(1).to(torch.uint8).argmax(dim=1),
            cols.to(torch.uint8).argmax(dim=1),
            width - 1 - cols.flip(1).to(torch.uint8).argmax(dim=1),
        ],
        dim=1,
    ).tolist()  # one host read for the whole batch
    return [
        (max(r_first - 1, 0), min(r_last + 2, height), max(c_first - 1, 0), min(c_last + 2, width))
        if present
        else None
        for present, r_first, r_last, c_first, c_last in found
    ]


def _canonical_size(box: Box, image_size: tuple[int, int] | torch.Size) -> tuple[int, int]:
    """The grid size a box is solved on: its sides rounded up to a multiple of 8
    (at most the image's), a function of the box alone."""
    r0, r1, c0, c1 = box
    sizes = []
    for extent, limit in ((r1 - r0, image_size[0]), (c1 - c0, image_size[1])):
        rounded = -(-extent // _BOX_GRANULARITY) * _BOX_GRANULARITY
        sizes.append(min(rounded, limit) if extent < limit else limit)
    return sizes[0], sizes[1]


def _solve_group(
    images: torch.Tensor,
    keep: torch.Tensor,
    rows: list[int],
    boxes: list[Box],
    size: tuple[int, int],
    dtype: torch.dtype,
    tol: float,
    max_iter: int,
    pool: BufferPool,
    kernels: Kernels,
) -> tuple[torch.Tensor, SolveInfo]:
    """Solve the samples ``rows`` (boxes of one canonical ``size``) together.

    Each box is copied to the top-left corner of a ``size`` grid; the rest of the grid
    is marked outside the image. Returns the ``(k, C, *size)`` solution and the solver's
    info (the solution is a view into ``pool``'s buffers: valid until its release).
    """
    height, width = size
    count, channels = len(rows), images.shape[1]
    full = all(box == (0, images.shape[-2], 0, images.shape[-1]) for box in boxes)
    if full:  # the common case: boxes are the whole image
        index = torch.tensor(rows, device=images.device)
        values = (
            images.index_select(0, index).to(dtype) if count < images.shape[0] else images.to(dtype)
        )
        unknown = ~keep.index_select(0, index)[:, 0]
        return solve_system(values, unknown, tol=tol, max_iter=max_iter, pool=pool, kernels=kernels)
    values = images.new_zeros((count, channels, height, width), dtype=dtype)
    unknown = torch.zeros((count, height, width), dtype=torch.bool, device=images.device)
    inside = torch.zeros_like(unknown)
    for k, (i, (r0, r1, c0, c1)) in enumerate(zip(rows, boxes, strict=True)):
        values[k, :, : r1 - r0, : c1 - c0] = images[i, :, r0:r1, c0:c1]
        unknown[k, : r1 - r0, : c1 - c0] = ~keep[i, 0, r0:r1, c0:c1]
        inside[k, : r1 - r0, : c1 - c0] = True
    solution, info = solve_system(
        values, unknown, tol=tol, max_iter=max_iter, inside=inside, pool=pool, kernels=kernels
    )
    return solution, info


def _empty_fill_values(
    channels: int,
    empty_fill: float | Sequence[float] | None,
    like: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``(C, 1, 1)`` fill values for samples with nothing kept."""
    if empty_fill is None:
        values: Sequence[float] = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    elif isinstance(empty_fill, (int, float)):
        values = (float(empty_fill),) * channels
    else:
        values = tuple(float(v) for v in empty_fill)
        if len(values) != channels:
            raise ValueError(f"empty_fill needs one number or {channels} values, got {len(values)}")
    return torch.tensor(values, dtype=dtype, device=like.device).view(channels, 1, 1)
