"""Small helpers shared by the evaluations: devices, clean logits, progress, metadata."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn

#: Images per forward pass when computing unmasked logits.
CLEAN_BATCH = 64


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 when none)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def clean_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's logits on unmasked ``images``, in batches, as float32 on the CPU."""
    device, dtype = model_device(model), model_dtype(model)
    outputs = []
    with torch.no_grad():
        for start in range(0, images.shape[0], CLEAN_BATCH):
            batch = images[start : start + CLEAN_BATCH].to(device=device, dtype=dtype)
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm progress bar on stderr (a silent stand-in when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)


def model_meta(model: nn.Module) -> dict[str, Any]:
    """What a report says about the model: name, weights and their source, classes."""
    classes = getattr(model, "classes", None)
    return {
        "name": getattr(model, "name", type(model).__name__),
        "weights": getattr(model, "weights", "user"),
        "weights_source": getattr(model, "weights_source", ""),
        "classes": list(classes) if classes else None,
        "device": str(model_device(model)),
        "dtype": str(model_dtype(model)).replace("torch.", ""),
    }


class Stopwatch:
    """Wall-clock seconds since creation (``elapsed``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the stopwatch was created."""
        return time.perf_counter() - self.start


def num_classes_of(model: nn.Module, logits: torch.Tensor) -> int:
    """Number of classes: the logits' width (checked against ``model.classes``)."""
    width = int(logits.shape[-1])
    classes = getattr(model, "classes", None)
    if classes and len(classes) != width:
        raise ValueError(f"model.classes has {len(classes)} names but the logits have {width}")
    return width


def image_seed(seed: int, index: int, salt: int = 0) -> int:
    """A per-image seed derived from the run's seed (independent of batching)."""
    return (int(seed) * 1_000_003 + int(index) * 7919 + int(salt) * 104_729) % (2**62)
