"""ROAD imputation on the device, timed beside SciPy's ``spsolve`` of the same system.

Three cases on ``size x size`` RGB images, a batch with a *different* mask per image
(except the central hole, the same everywhere by definition):

* half of the 16 x 16 patches removed;
* half of the pixels removed at random (many small, well-anchored unknowns);
* one central ``size/2`` square hole (a large hole: plain Jacobi sweeps would take
  thousands of iterations; the multigrid-preconditioned solver takes a handful).

Per case, interleaved ``repeats`` times: SciPy solves ``scipy_images`` of the images one
at a time (:func:`maskbench.inpaint.scipy_reference.scipy_road_solution`: vectorised
assembly of ROAD's system, float64 ``spsolve`` with all channels as right-hand sides),
and :func:`maskbench.inpaint.road_impute` solves the whole batch in one call (noise
included). Reported: seconds per image of each (minimum over repetitions: the least
disturbed run on a shared machine; medians too), their ratio, and the largest
difference from SciPy of the noise-free solution.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maskbench.bench.timing import synchronize

#: Speed-up over SciPy (per image) that ``inpaint_linear`` must reach: (CPU, GPU).
ROAD_TARGETS = (10.0, 100.0)
#: The tests' accuracy requirement against ``spsolve``, before noise.
ROAD_MAX_ERROR = 1e-3


@dataclass
class RoadCaseResult:
    """One ROAD case: seconds per image for SciPy and for the batched device solver."""

    case: str
    removed_fraction: float
    scipy_seconds_per_image: float
    ours_seconds_per_image: float
    speedup: float
    median_speedup: float
    target: float
    met: bool
    max_abs_error_vs_scipy: float


def road_cases(batch: int, size: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(images, {case name: keep masks})``: float32 ``(batch, 3, size, size)`` images in
    [0, 1] (smooth random fields plus a little noise) and ``(batch, size, size)`` bool
    keep-masks per case."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((batch, 3, size // 16 + 2, size // 16 + 2)))
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    images = smooth.numpy() + 0.05 * rng.standard_normal((batch, 3, size, size))
    images = np.clip(images, 0.0, 1.0).astype(np.float32)

    cells = max(size // 16, 1)
    patches = []
    for _ in range(batch):
        removed = np.zeros(cells * cells, dtype=bool)
        removed[rng.permutation(cells * cells)[: cells * cells // 2]] = True
        grid = np.kron(removed.reshape(cells, cells), np.ones((16, 16), dtype=bool))
        removed_full = np.zeros((size, size), dtype=bool)
        removed_full[: grid.shape[0], : grid.shape[1]] = grid[:size, :size]
        patches.append(~removed_full)
    pixels = []
    for _ in range(batch):
        keep = np.ones(size * size, dtype=bool)
        keep[rng.permutation(size * size)[: size * size // 2]] = False
        pixels.append(keep.reshape(size, size))
    hole = np.ones((size, size), dtype=bool)
    quarter = size // 4
    hole[quarter : size - quarter, quarter : size - quarter] = False
    cases = {
        "16x16 patches, 50% removed": np.stack(patches),
        "random pixels, 50% removed": np.stack(pixels),
        f"central {size - 2 * quarter}x{size - 2 * quarter} hole": np.broadcast_to(
            hole, (batch, size, size)
        ).copy(),
    }
    return images, cases


def _seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def run_road_benchmark(
    *,
    batch: int = 16,
    size: int = 224,
    device: torch.device | None = None,
    repeats: int = 5,
    scipy_images: int = 4,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[RoadCaseResult]:
    """Time ``road_impute`` on a batch beside SciPy on single images, per case.

    Args:
        batch: images per ``road_impute`` call (each with its own mask).
        size: image side in pixels.
        device: where ``road_impute`` runs (SciPy always runs on the CPU).
        repeats: interleaved repetitions; the minimum per image is reported.
        scipy_images: how many of the batch's images SciPy solves per repetition.
        seed: seed of the images and masks.
        progress: called with a short message before each case.
    """
    from maskbench.inpaint import road_impute
    from maskbench.inpaint.scipy_reference import scipy_road_solution

    device = device or torch.device("cpu")
    sync = functools.partial(synchronize, device)  # this device, not the current one
    target = ROAD_TARGETS[1] if device.type == "cuda" else ROAD_TARGETS[0]
    images, cases = road_cases(batch, size, seed)
    images_t = torch.from_numpy(images).to(device)
    picks = range(min(scipy_images, batch))
    results = []
    for name, keep in cases.items():
        if progress:
            progress(f"ROAD imputation: {name}")
        keep_t = torch.from_numpy(keep).unsqueeze(1).to(device)
        road_impute(images_t, keep_t)  # warm-up
        scipy_times: list[float] = []
        ours_times: list[float] = []
        for _ in range(repeats):
            for i in picks:
                solve = functools.partial(scipy_road_solution, images[i], keep[i])
                scipy_times.append(_seconds(solve, lambda: None))
            ours = _seconds(functools.partial(road_impute, images_t, keep_t), sync)
            ours_times.append(ours / batch)
        solution = road_impute(images_t, keep_t, noise_std=0.0).double().cpu().numpy()
        error = max(
            float(np.abs(solution[i] - scipy_road_solution(images[i], keep[i])).max())
            for i in picks
        )
        speedup = min(scipy_times) / min(ours_times)
        results.append(
            RoadCaseResult(
                case=name,
                removed_fraction=float((~keep).mean()),
                scipy_seconds_per_image=min(scipy_times),
                ours_seconds_per_image=min(ours_times),
                speedup=speedup,
                median_speedup=statistics.median(scipy_times) / statistics.median(ours_times),
                target=target,
                met=speedup >= target and error <= ROAD_MAX_ERROR,
                max_abs_error_vs_scipy=error,
            )
        )
    return results


def road_markdown(rows: list[RoadCaseResult], config: Mapping[str, Any]) -> str:
    """The ROAD results as a Markdown table with a one-line description.

    ``config`` needs ``batch``, ``size`` and ``repeats``; ``device_name``, ``threads``
    and ``scipy`` (see :func:`maskbench.bench.run.environment`) are shown when present.
    """
    size = config["size"]
    where = ""
    if "device_name" in config:
        where = f"device {config['device_name']}, {config['threads']} torch threads, "
        where += f"SciPy {config['scipy']}; "
    lines = [
        f"`inpaint_linear` (ROAD imputation): {size}x{size} RGB, one `road_impute` call on a "
        f"batch of {config['batch']} (noise included) vs SciPy `spsolve` on one image at a "
        f"time; {where}seconds per image, best of {config['repeats']} interleaved "
        "repetitions.",
        "",
        "| case | SciPy s/image | ours s/image | speed-up | median speed-up | target | met "
        "| max error vs SciPy |",
        "|---|---:|---:|---:|---:|---:|:---:|---:|",
    ]
    for row in rows:
        met = "yes" if row.met else "**no**"
        lines.append(
            f"| {row.case} | {row.scipy_seconds_per_image:.4f} | "
            f"{row.ours_seconds_per_image:.4f} | {row.speedup:.1f}x | "
            f"{row.median_speedup:.1f}x | >= {row.target:g}x | {met} | "
            f"{row.max_abs_error_vs_scipy:.1e} |"
        )
    return "\n".join(lines) + "\n"
