"""``masked_forward``: run an unmodified network with a keep-mask beside its activations."""

from __future__ import annotations

import torch
from torch import nn

import maskbench.engine.rules  # noqa: F401  (registers the rules)
from maskbench.engine.graphs import graph_logits, uses_graphs
from maskbench.engine.interpreter import masked_logits
from maskbench.engine.registry import leaf_types
from maskbench.engine.tracing import MODEL_LOCK, traced
from maskbench.engine.variants import Variant, as_variant
from maskbench.errors import MaskError, NumericalRangeError

__all__ = ["masked_forward"]


def _validate(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise MaskError(f"images must be a (B, C, H, W) tensor, got {getattr(x, 'shape', x)}")
    if not isinstance(keep, torch.Tensor):
        raise MaskError(f"the keep-mask must be a tensor, got {type(keep).__name__}")
    b, _, h, w = x.shape
    if tuple(keep.shape) != (b, 1, h, w):
        raise MaskError(
            f"the keep-mask must have shape {(b, 1, h, w)} for images {tuple(x.shape)}, "
            f"got {tuple(keep.shape)}"
        )
    if keep.dtype != torch.bool:
        keep = keep != 0
    return keep.to(device=x.device)


def masked_forward(
    network: nn.Module,
    x: torch.Tensor,
    keep: torch.Tensor,
    variant: Variant | str = Variant.PAPER,
    *,
    cuda_graphs: bool = False,
) -> torch.Tensor:
    """Logits of ``network`` on ``x`` where only positions with ``keep`` True exist.

    Args:
        network: an unmodified ``nn.Module`` in eval mode that maps *normalised* images
            to logits (the caller normalises; "grey" is 0). It is traced with torch.fx
            once (cached per model) and never changed: no hooks, no replaced modules.
        x: (B, C, H, W) images, any float dtype the model runs in.
        keep: (B, 1, H, W) bool keep-mask, True = visible (0/1 floats are accepted).
        variant: a :class:`Variant` or its name (``"layer_masking"`` ...).
        cuda_graphs: on a CUDA device and without autograd, replay the masked forward
            as a CUDA graph captured once per input shape (see
            :mod:`maskbench.engine.graphs`): the first call per shape captures, later
            ones skip the engine's host-side work. Ignored elsewhere.

    Returns:
        (B, num_classes) logits in the dtype and on the device the network produces
        for ``x``.

    Samples whose mask keeps everything are run through ``network`` itself, so an
    all-kept mask gives exactly the unmasked logits (for a mixed batch those samples run
    as one sub-batch, identical up to the float effects of batch size). Other samples
    are masked; no rule uses statistics across the batch. With nothing kept, every
    global pool returns 0, so e.g. a ResNet returns its classifier bias.

    Raises:
        UnsupportedModelError: an op that mixes positions has no masking rule (the
            message names the op and its module path), batch norm is in training
            mode, or fx cannot trace the model. :func:`check_model` lists all such
            ops without running anything.
        MaskError: ``keep`` does not match ``x``.
        CaptureError: with ``cuda_graphs``, the forward could not be captured.
    """
    variant = as_variant(variant)
    keep = _validate(x, keep)
    traced_model, modules = traced(network, leaf_types())
    graphs = cuda_graphs and uses_graphs(x, network)
    with MODEL_LOCK.shared():
        full = keep.flatten(1).all(dim=1)
        n_full = int(full.sum())
        if n_full == x.shape[0]:
            return network(x)
        if n_full == 0:
            return _masked(traced_model, modules, variant, x, keep, graphs)
        idx_full = full.nonzero().squeeze(1)
        idx_part = (~full).nonzero().squeeze(1)
        plain = network(x.index_select(0, idx_full))
        masked = _masked(
            traced_model,
            modules,
            variant,
            x.index_select(0, idx_part),
            keep.index_select(0, idx_part),
            graphs,
        )
        out = masked.new_zeros((x.shape[0], *masked.shape[1:]))
        out = out.index_copy(0, idx_part, masked)
        return out.index_copy(0, idx_full, plain.to(masked.dtype))


def _masked(
    traced_model, modules, variant: Variant, x: torch.Tensor, keep: torch.Tensor, graphs: bool
):
    if graphs:
        out = graph_logits(traced_model, modules, variant, x, keep)
    else:
        out = masked_logits(traced_model, modules, variant, x, keep)
    if variant is Variant.PARTIAL_CONV and out.dtype == torch.float16:
        _check_float16_range(out, keep)
    return out


def _check_float16_range(out: torch.Tensor, keep: torch.Tensor) -> None:
    """Refuse non-finite float16 partial-convolution logits (one host sync).

    Partial convolution multiplies each window's output by (window size / visible
    pixels); over many layers this compounds, e.g. ResNet-50 with one kept pixel gives
    logits near 1e8 in float32, far beyond float16's 65504. Returning inf/NaN would
    silently break the strategy's ``finite`` claim.
    """
    bad = ~torch.isfinite(out).flatten(1).all(dim=1)
    if bool(bad.any()):
        samples = bad.nonzero().flatten().tolist()
        kept = keep.flatten(1).sum(dim=1)[bad].tolist()
        raise NumericalRangeError(
            f"partial_conv: the logits of samples {samples[:10]} overflow float16 (largest "
            f"finite value 65504); those masks keep {kept[:10]} pixels. Partial convolution "
            "rescales every window by window size / visible pixels, which compounds over "
            "the layers when few pixels are kept. Run this strategy with the model in "
            "float32 or bfloat16."
        )
