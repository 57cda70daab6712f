"""The dtype that sums and means are accumulated in."""

from __future__ import annotations

import torch


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where to sum values (or counts) of floating ``dtype``: at least float32.

    A float16 sum overflows past 65504 (a count of 256 x 256 pixels), and bfloat16
    counts only to 256 exactly; float32 and float64 are kept as they are.
    """
    return torch.promote_types(dtype, torch.float32)
