"""Side-by-side timing: maskbench's batched ROAD imputation vs SciPy's ``spsolve``.

Usage::

    python benchmarks/road_vs_scipy.py [--batch 16] [--size 224] [--threads 2]
                                       [--repeats 5] [--scipy-images 4] [--json PATH]
                                       [--omp-wait-policy passive]

For each case (224 x 224 RGB, half the pixels removed as random 16 x 16 patches or as
random pixels, and one central 112 x 112 hole) it builds ``--batch`` images with
*different* masks (the central hole is the same everywhere by definition), then times

* SciPy: the reference system of ROAD (``tests/inpaint/scipy_oracle.py``: vectorised
  assembly + ``scipy.sparse.linalg.spsolve``, float64, all channels at once), one image
  at a time, on ``--scipy-images`` of the images, reported per image;
* ours: one ``road_impute`` call on the whole batch (with its noise), reported per image.

Both run in this process, interleaved, ``--repeats`` times, and the minimum is kept
(the machine may be shared: the minimum is the least disturbed run; medians are also
shown). The max error column compares ``road_impute(..., noise_std=0)`` with SciPy on
the images SciPy solved. The load average before and after is printed: on a machine
busy with other processes, spinning OpenMP threads (the default ``OMP_WAIT_POLICY``)
can make ``--threads 2`` many times slower than ``--threads 1``;
``--omp-wait-policy passive`` (set before torch is imported) avoids that. SciPy's
``spsolve`` (SuperLU) is single-threaded either way. This is a benchmark, not a test:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "inpaint"))


def patch_masks(rng: np.random.Generator, batch: int, size: int, patch: int) -> np.ndarray:
    """``(batch, size, size)`` keep-masks with half of the ``patch``-squares removed."""
    cells = size // patch
    masks = []
    for _ in range(batch):
        removed = np.zeros(cells * cells, dtype=bool)
        removed[rng.permutation(cells * cells)[: cells * cells // 2]] = True
        grid = np.kron(removed.reshape(cells, cells), np.ones((patch, patch), dtype=bool))
        masks.append(~grid)
    return np.stack(masks)


def pixel_masks(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    """``(batch, size, size)`` keep-masks with exactly half the pixels removed at random."""
    masks = []
    for _ in range(batch):
        keep = np.ones(size * size, dtype=bool)
        keep[rng.permutation(size * size)[: size * size // 2]] = False
        masks.append(keep.reshape(size, size))
    return np.stack(masks)


def hole_masks(batch: int, size: int) -> np.ndarray:
    """``(batch, size, size)`` keep-masks with a central ``size/2`` square removed."""
    keep = np.ones((size, size), dtype=bool)
    quarter = size // 4
    keep[quarter : size - quarter, quarter : size - quarter] = False
    return np.broadcast_to(keep, (batch, size, size)).copy()


def smooth_images(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    """Photo-like test images in [0, 1]: smooth random fields plus a little noise."""
    import torch

    coarse = rng.random((batch, 3, size // 16 + 2, size // 16 + 2))
    images = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bicubic", align_corners=False
    ).numpy()
    images += 0.05 * rng.standard_normal(images.shape)
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(
    name: str, images: np.ndarray, keep: np.ndarray, repeats: int, scipy_images: int
) -> dict[str, object]:
    """Time SciPy (per image) and ``road_impute`` (per batch) side by side."""
    import torch
    from scipy_oracle import scipy_road_solution

    from maskbench.inpaint import road_impute

    batch = images.shape[0]
    images_t = torch.from_numpy(images)
    keep_t = torch.from_numpy(keep).unsqueeze(1)
    picks = list(range(min(scipy_images, batch)))
    road_impute(images_t, keep_t)  # warm-up
    scipy_times: list[float] = []
    ours_times: list[float] = []
    for _ in range(repeats):
        for i in picks:
            scipy_times.append(_timed(lambda i=i: scipy_road_solution(images[i], keep[i])))
        ours_times.append(_timed(lambda: road_impute(images_t, keep_t)) / batch)
    solution = road_impute(images_t, keep_t, noise_std=0.0).double().numpy()
    error = max(
        float(np.abs(solution[i] - scipy_road_solution(images[i], keep[i])).max()) for i in picks
    )
    # One image per repeat and pick: the minimum over all of them is SciPy's best time.
    scipy_best, ours_best = min(scipy_times), min(ours_times)
    return {
        "case": name,
        "removed_fraction": float((~keep).mean()),
        "scipy_s_per_image": scipy_best,
        "ours_s_per_image": ours_best,
        "speedup": scipy_best / ours_best,
        "scipy_median_s_per_image": statistics.median(scipy_times),
        "ours_median_s_per_image": statistics.median(ours_times),
        "median_speedup": statistics.median(scipy_times) / statistics.median(ours_times),
        "max_abs_error_vs_scipy": error,
    }


def markdown(rows: list[dict[str, object]], header: str) -> str:
    """The results as a small Markdown table."""
    lines = [
        header,
        "",
        "| case | scipy s/image | ours s/image | speedup | median speedup | max error vs scipy |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['scipy_s_per_image']:.4f} | {row['ours_s_per_image']:.4f} "
            f"| {row['speedup']:.1f}x | {row['median_speedup']:.1f}x "
            f"| {row['max_abs_error_vs_scipy']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run all cases, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scipy-images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--omp-wait-policy",
        choices=["active", "passive"],
        default=None,
        help="set OMP_WAIT_POLICY before torch starts (default: leave the environment)",
    )
    args = parser.parse_args(argv)
    if args.omp_wait_policy is not None:
        if "torch" in sys.modules:
            raise SystemExit("--omp-wait-policy must be set before torch is imported")
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    size, batch = args.size, args.batch
    images = smooth_images(rng, batch, size)
    cases = {
        "16x16 patches, 50% removed": patch_masks(rng, batch, size, 16),
        "random pixels, 50% removed": pixel_masks(rng, batch, size),
        f"central {size // 2}x{size // 2} hole": hole_masks(batch, size),
    }
    rows = [
        run_case(name, images, keep, args.repeats, args.scipy_images)
        for name, keep in cases.items()
    ]
    load_after = os.getloadavg()
    header = (
        f"{size}x{size} RGB, batch of {batch} (ours: one `road_impute` call, noise included) "
        f"vs one image at a time (scipy spsolve); torch {torch.__version__}, "
        f"threads={args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
        f", best of {args.repeats}; {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after"
    )
    print(markdown(rows, header))
    if args.json is not None:
        settings: dict[str, Any] = vars(args) | {"json": str(args.json)}
        machine = {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_before": load_before,
            "load_average_after": load_after,
        }
        payload = {"settings": settings, "machine": machine, "results": rows}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
