"""Offline ground-truth benchmark: textured shapes with exact masks, and a model for it.

:func:`generate_shapes` draws images whose class is carried only by the silhouette of one
object, with the object's exact mask; :func:`load_shapes_network` loads the small ResNet
shipped with maskbench that was trained (on clean images only) to classify them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from torch import nn

from maskbench.benchmark.shapes import (
    AREA_RANGE,
    SHAPE_CLASSES,
    SampleParams,
    ShapesDataset,
    generate_shapes,
    render_sample,
    sample_params,
    shape_mask,
)

#: Directory of the shipped weights (``<name>.safetensors`` + ``<name>.json`` pairs).
WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"

__all__ = [
    "AREA_RANGE",
    "SHAPE_CLASSES",
    "WEIGHTS_DIR",
    "SampleParams",
    "ShapesDataset",
    "generate_shapes",
    "load_shapes_metadata",
    "load_shapes_network",
    "render_sample",
    "sample_params",
    "shape_mask",
]


def load_shapes_metadata(name: str = "shapes_resnet") -> dict[str, Any]:
    """The JSON metadata of a shipped network (architecture, normalisation, accuracy)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped network metadata at {path}")
    return json.loads(path.read_text())


def load_shapes_network(
    name: str = "shapes_resnet", device: torch.device | str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a shipped shapes network: ``(timm network in eval mode, metadata dict)``.

    The network is re-created with ``timm.create_model(meta["timm_name"],
    **meta["timm_kwargs"])`` and loaded strictly from the safetensors file (float32). It
    takes *normalised* input: ``(pixels - meta["mean"]) / meta["std"]`` per channel, with
    pixels in [0, 1], images of ``meta["image_size"]`` pixels; logits follow
    ``meta["classes"]``.
    """
    meta = load_shapes_metadata(name)
    network = timm.create_model(meta["timm_name"], pretrained=False, **meta["timm_kwargs"])
    state = safetensors.torch.load_file(str(WEIGHTS_DIR / f"{name}.safetensors"))
    reference = network.state_dict()
    network.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=True)
    if device is not None:
        network = network.to(device)
    return network.eval(), meta
