"""Strategies on the layer-masking engine: the paper variant, its ablations, crop-exact.

The model sees only the visible pixels: the keep-mask is carried beside the
activations through the whole network (see :mod:`maskbench.engine`). These strategies
need a :class:`~maskbench.models.NormalizedModel` (from ``load_model`` or
``wrap_model``), because "removed" is defined after normalisation (0 = grey).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maskbench.engine import Variant, crop_applicability, masked_forward
from maskbench.errors import UnsupportedModelError
from maskbench.models import split_model
from maskbench.strategies.base import Strategy
from maskbench.strategies.claims import CONTENT_INDEPENDENT_CLAIMS, Claim
from maskbench.strategies.registry import register_strategy


class EngineStrategy(Strategy):
    """A strategy that runs the network through the layer-masking engine.

    Args:
        cuda_graphs: on CUDA devices, replay each chunk's masked forward as a CUDA graph
            captured once per input shape (:mod:`maskbench.engine.graphs`): the engine is
            launch-bound on GPUs, and a graph replays its kernels without the host-side
            work. The first call per shape pays for the capture; each graph keeps one
            forward's activation memory. Ignored on the CPU.
        batch_size, memory_budget: as for every :class:`Strategy`.
    """

    variant: Variant

    def __init__(self, *, cuda_graphs: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cuda_graphs = bool(cuda_graphs)

    def network_input(
        self, model: nn.Module, images: torch.Tensor
    ) -> tuple[nn.Module, torch.Tensor]:
        """(network, normalised images); refuses models maskbench cannot normalise."""
        wrapper, network = split_model(model)
        if wrapper is None:
            raise UnsupportedModelError(
                f"{self.name} needs to know the model's normalisation: wrap it with "
                "maskbench.wrap_model(module, mean=..., std=...) or use maskbench.load_model"
            )
        return network, wrapper.normalize(images)

    def masked_logits(
        self, model: nn.Module, images: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Run the engine on the normalised images with the keep-mask."""
        network, x = self.network_input(model, images)
        return masked_forward(network, x, keep, self.variant, cuda_graphs=self.cuda_graphs)


@register_strategy("layer_masking")
class LayerMasking(EngineStrategy):
    """The paper's layer masking: neighbour padding before k x k convs, mask dilation,
    intersection at adds, masked means in squeeze-excite and global pooling."""

    variant = Variant.PAPER
    claims = CONTENT_INDEPENDENT_CLAIMS


@register_strategy("layer_masking_zero")
class LayerMaskingZero(EngineStrategy):
    """The paper's "masking only" ablation: zero fill instead of neighbour padding."""

    variant = Variant.ZERO
    claims = CONTENT_INDEPENDENT_CLAIMS


@register_strategy("partial_conv")
class PartialConv(EngineStrategy):
    """The paper's partial-convolution ablation: convs rescaled by visible window share.

    The rescaling divides by the visible count of a window, which amplifies float
    rounding when only a pixel or two is visible; batch consistency then holds to a
    looser tolerance (see ``rounding_scale``).
    """

    variant = Variant.PARTIAL_CONV
    claims = CONTENT_INDEPENDENT_CLAIMS
    #: Multiplier on the dtype's rounding tolerance for rounding-level claims.
    rounding_scale = 20.0


def _aligned_span(start: int, stop: int, stride: int) -> tuple[int, int]:
    """[start, stop) widened to multiples of ``stride``."""
    return (start // stride) * stride, -(-stop // stride) * stride


@register_strategy("layer_masking_crop")
class LayerMaskingCrop(EngineStrategy):
    """Crop-exact layer masking: the model sees exactly the kept pixels.

    Zero fill at every spatial op's input, the mask propagated by stride subsampling,
    masked global pooling. For a rectangle whose offsets and size are multiples of the
    model's total stride, the logits equal the model run on the crop.

    Fast path (``fast_path=True``): each sample is computed only on the stride-aligned
    bounding box of its kept pixels, which is exact by construction (the positions
    outside the box are removed, so they act like the crop's own zero padding).
    Samples are grouped by box *size*, so boxes at different places run as one batch;
    a box covering most of the image runs the full image instead.

    Args:
        fast_path: compute on the kept bounding box when it pays off.
        min_saving: run the box instead of the full image only if the box has at most
            this fraction of the image's area.
    """

    variant = Variant.CROP
    claims = CONTENT_INDEPENDENT_CLAIMS | {Claim.CROP_EQUIVALENCE, Claim.TRANSLATION_INVARIANCE}

    def __init__(self, *, fast_path: bool = True, min_saving: float = 0.75, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fast_path = fast_path
        self.min_saving = float(min_saving)

    def masked_logits(
        self, model: nn.Module, images: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Engine forward, on each sample's kept bounding box where that is cheaper."""
        network, x = self.network_input(model, images)
        height, width = x.shape[-2:]
        boxes = self._boxes(network, x, keep) if self.fast_path else None
        if boxes is None:
            return masked_forward(network, x, keep, self.variant, cuda_graphs=self.cuda_graphs)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, box in enumerate(boxes):
            size = (box[1] - box[0], box[3] - box[2]) if box else (height, width)
            if size[0] * size[1] > self.min_saving * height * width:
                size = (height, width)
            groups.setdefault(size, []).append(index)
        if list(groups) == [(height, width)]:
            return masked_forward(network, x, keep, self.variant, cuda_graphs=self.cuda_graphs)
        outputs: list[torch.Tensor | None] = [None] * x.shape[0]
        for size, members in groups.items():
            if size == (height, width):
                idx = torch.tensor(members, device=x.device)
                group_x, group_keep = x[idx], keep[idx]
            else:
                crops = [self._crop(x[i], keep[i], boxes[i], size) for i in members]
                group_x = torch.stack([c[0] for c in crops])
                group_keep = torch.stack([c[1] for c in crops])
            logits = masked_forward(
                network, group_x, group_keep, self.variant, cuda_graphs=self.cuda_graphs
            )
            for position, index in enumerate(members):
                outputs[index] = logits[position]
        return torch.stack(outputs)

    def _boxes(
        self, network: nn.Module, x: torch.Tensor, keep: torch.Tensor
    ) -> list[tuple[int, int, int, int] | None] | None:
        """Per sample the stride-aligned kept box (r0, r1, c0, c1); None: no fast path."""
        height, width = keep.shape[-2:]
        info = crop_applicability(network, tuple(x.shape[1:]))
        if not info.ok:
            return None
        stride = info.total_stride
        if info.needs_aligned_image and (height % stride or width % stride):
            return None
        rows = keep.any(dim=3)[:, 0]  # (B, H)
        cols = keep.any(dim=2)[:, 0]  # (B, W)
        boxes: list[tuple[int, int, int, int] | None] = []
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            if not any(row):
                boxes.append(None)
                continue
            r0 = row.index(True)
            r1 = len(row) - row[::-1].index(True)
            c0 = col.index(True)
            c1 = len(col) - col[::-1].index(True)
            r0, r1 = _aligned_span(r0, r1, stride)
            c0, c1 = _aligned_span(c0, c1, stride)
            boxes.append((r0, r1, c0, c1))
        return boxes

    @staticmethod
    def _crop(
        image: torch.Tensor,
        keep: torch.Tensor,
        box: tuple[int, int, int, int],
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The box's image and mask, padded (removed) where it reaches past the image."""
        r0, _, c0, _ = box
        height, width = size
        crop_x = image[:, r0 : r0 + height, c0 : c0 + width]
        crop_keep = keep[:, r0 : r0 + height, c0 : c0 + width]
        pad_h, pad_w = height - crop_x.shape[-2], width - crop_x.shape[-1]
        if pad_h or pad_w:
            crop_x = F.pad(crop_x, (0, pad_w, 0, pad_h))
            crop_keep = F.pad(crop_keep, (0, pad_w, 0, pad_h), value=False)
        return crop_x, crop_keep
