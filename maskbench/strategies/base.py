"""The Strategy interface: ``strategy(model, images, mask) -> logits``.

A strategy decides how "removed" pixels are removed. Every strategy validates its
input against the mask contract, leaves the model unchanged, works on the images'
device and dtype, and splits large batches into chunks so that any number of masks can
be evaluated in one call.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn

from maskbench.errors import MaskbenchError
from maskbench.masks.validate import broadcast_batch
from maskbench.strategies.claims import Claim

#: Default memory budget (bytes) for one chunk of a strategy call.
DEFAULT_MEMORY_BUDGET = int(float(os.environ.get("MASKBENCH_MEMORY_BUDGET", 2 * 1024**3)))
#: Activation memory of a forward pass, as a multiple of the input's size (a generous
#: figure for ResNet-50-like CNNs under no_grad).
ACTIVATION_FACTOR = 48


class ModelMismatchError(MaskbenchError, ValueError):
    """The model cannot take these images (device, dtype or mode mismatch)."""


def _first_float_parameter(model: nn.Module) -> torch.Tensor | None:
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor
    return None


def check_model_for(model: nn.Module, images: torch.Tensor) -> None:
    """Refuse models in training mode or on another device/dtype than ``images``."""
    if not isinstance(model, nn.Module):
        raise ModelMismatchError(f"model must be an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ModelMismatchError(
            "model is in training mode; call model.eval() first (masking must not update "
            "batch-norm statistics or depend on dropout)"
        )
    param = _first_float_parameter(model)
    if param is None:
        return
    if param.device != images.device:
        raise ModelMismatchError(
            f"model is on {param.device} but the images are on {images.device}; move one of them"
        )
    if param.dtype != images.dtype:
        raise ModelMismatchError(
            f"model parameters are {param.dtype} but the images are {images.dtype}; "
            f"convert with model.to({images.dtype}) or images.to({param.dtype})"
        )


class Strategy(abc.ABC):
    """A way of removing pixels from a model's view.

    Subclasses implement :meth:`masked_logits` (or, for input-space strategies, derive
    from :class:`InputSpaceStrategy` and implement :meth:`InputSpaceStrategy.compute_fill`)
    and declare their :attr:`claims` honestly: the audit tests every claim made.

    Args:
        batch_size: the most samples evaluated at once; ``None`` derives it from
            ``memory_budget``.
        memory_budget: bytes one chunk may use, estimated from the input size.
    """

    #: Registered name (set by :func:`maskbench.register_strategy`).
    name: ClassVar[str] = ""
    #: The invariants this strategy promises.
    claims: ClassVar[frozenset[Claim]] = frozenset()
    #: Multiplier on the dtype's rounding tolerance for claims that hold up to float
    #: rounding (batch consistency): above 1 for strategies whose arithmetic amplifies
    #: rounding (e.g. dividing by a count of visible pixels), stated, never hidden.
    rounding_scale: ClassVar[float] = 1.0

    def __init__(self, *, batch_size: int | None = None, memory_budget: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.memory_budget = memory_budget or DEFAULT_MEMORY_BUDGET

    # ------------------------------------------------------------------ public

    def __call__(self, model: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of ``model`` on ``images`` with ``mask``'s pixels removed.

        ``images`` (B or 1, C, H, W) are in pixel space [0, 1]; ``mask`` is (B or 1, 1,
        H, W) or (H, W), True/1 = kept. One image with many masks is fine: the batch is
        split into chunks internally.
        """
        images, keep = broadcast_batch(images, mask)
        check_model_for(model, images)
        with torch.no_grad():
            outputs = [
                self.masked_logits(model, chunk_images, chunk_keep)
                for chunk_images, chunk_keep in self._chunks(images, keep)
            ]
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def chunk_size(self, images: torch.Tensor) -> int:
        """How many samples one chunk holds for images of this shape and dtype."""
        if self.batch_size is not None:
            return self.batch_size
        per_sample = images[0].numel() * images.element_size() * ACTIVATION_FACTOR
        return max(1, self.memory_budget // max(per_sample, 1))

    # ------------------------------------------------------------------ subclass API

    @abc.abstractmethod
    def masked_logits(
        self, model: nn.Module, images: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Logits for validated ``images`` (B, C, H, W) and bool ``keep`` (B, 1, H, W).

        Called under ``torch.no_grad()`` with a chunk of at most :meth:`chunk_size`
        samples; must not change ``model``.
        """

    # ------------------------------------------------------------------ helpers

    def _chunks(
        self, images: torch.Tensor, keep: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.chunk_size(images)
        for start in range(0, images.shape[0], size):
            yield images[start : start + size], keep[start : start + size]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class InputSpaceStrategy(Strategy):
    """A strategy that paints the removed pixels and runs the model on the result.

    Subclasses implement :meth:`compute_fill`; :meth:`fill` exposes the painted image so
    fills can be inspected, plotted and tested.
    """

    def fill(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The image the model will see: same shape, dtype and device as the batch."""
        images, keep = broadcast_batch(images, mask)
        with torch.no_grad():
            return self.compute_fill(images, keep)

    def masked_logits(
        self, model: nn.Module, images: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Run the model on the filled images."""
        return model(self.compute_fill(images, keep))

    @abc.abstractmethod
    def compute_fill(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Filled images for validated ``images`` (B, C, H, W) and bool ``keep`` (B, 1, H, W).

        Kept pixels must be returned unchanged.
        """
