"""Versions and machine facts recorded beside results (evaluations, benchmarks)."""

from __future__ import annotations

import platform
from typing import Any

import torch


def environment_meta() -> dict[str, Any]:
    """Versions and machine facts that affect timings and numerics."""
    import maskbench

    return {
        "maskbench": maskbench.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
