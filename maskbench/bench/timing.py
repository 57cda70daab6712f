"""Side-by-side timing: round-robin repetitions, medians, ratios to a baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(
    calls: Mapping[str, Callable[[], object]],
    *,
    device: torch.device,
    warmup: int = 2,
    repeats: int = 7,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call for every entry, measured interleaved.

    Each repetition runs every call once, in turn, so that slow drifts of the machine
    (other processes, thermal state) affect all entries alike and their ratios stay
    meaningful. Warm-up runs are discarded.
    """
    for name, call in calls.items():
        if progress:
            progress(f"warm-up {name}")
        for _ in range(warmup):
            call()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for repeat in range(repeats):
        if progress:
            progress(f"repetition {repeat + 1}/{repeats}")
        for name, call in calls.items():
            synchronize(device)
            started = time.perf_counter()
            call()
            synchronize(device)
            samples[name].append(time.perf_counter() - started)
    return samples


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    return statistics.median(values)
