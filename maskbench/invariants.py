"""The claims as plain functions: measure one example, say whether the claim holds.

Each ``check_*`` function runs one concrete example (images, masks, offsets are
given; drawing them is the caller's job, e.g. hypothesis in the audit) and returns a
:class:`CheckResult` with the measured gap, the tolerance it was held to and a
readable message. They need no pytest and work from a notebook::

    result = check_content_independence(strategy, model, images, mask)
    assert result.passed, result.message

Gaps are measured relative to the largest absolute reference logit, so tolerances
mean the same for every model. Claims that are *exact* by construction (content
independence, determinism) are held to zero on the CPU, where kernels are
deterministic; elsewhere to the dtype's rounding tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskbench.strategies.base import Strategy
from maskbench.strategies.claims import Claim

#: Relative tolerance for results that should agree up to rounding, by dtype.
ROUNDING_TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}
#: Relative tolerance for crop equivalence (issue #3: 1e-4 in float32).
CROP_TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


def rounding_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for 'equal up to floating-point rounding' in ``dtype``."""
    return ROUNDING_TOLERANCE.get(dtype, 1e-5)


def exact_tolerance(tensor: torch.Tensor) -> float:
    """Zero on CPU (bit-exact), the rounding tolerance on accelerators."""
    return 0.0 if tensor.device.type == "cpu" else rounding_tolerance(tensor.dtype)


@dataclass
class CheckResult:
    """Outcome of one check on one example.

    Attributes:
        claim: which claim was checked.
        passed: whether the measured gap is within tolerance.
        gap: the measured figure (relative max difference, or as documented).
        tolerance: the bound ``gap`` was held to.
        message: a readable account: what was compared, how big and where the
            mismatch was.
        details: extra figures (e.g. per-sample gaps, drift curves).
    """

    claim: Claim
    passed: bool
    gap: float
    tolerance: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def relative_gap(result: torch.Tensor, reference: torch.Tensor) -> tuple[float, str]:
    """max |result - reference| / max |reference| and where the largest difference sits."""
    diff = (result.double() - reference.double()).abs()
    scale = float(reference.double().abs().max().clamp(min=1e-12))
    if diff.numel() == 0:
        return 0.0, "empty"
    if not bool(torch.isfinite(diff).all()):
        return float("inf"), "non-finite values"
    flat = int(diff.argmax())
    sample, index = divmod(flat, diff.shape[-1]) if diff.dim() == 2 else (0, flat)
    where = (
        f"sample {sample}, logit {index}: {float(result.reshape(-1)[flat]):.6g} vs "
        f"{float(reference.reshape(-1)[flat]):.6g}"
    )
    return float(diff.max()) / scale, where


def _result(
    claim: Claim, gap: float, tolerance: float, what: str, where: str, **details
) -> CheckResult:
    passed = gap <= tolerance
    verdict = "holds" if passed else "FAILS"
    message = (
        f"{claim.value} {verdict}: {what}; relative gap {gap:.3g} "
        f"(tolerance {tolerance:.3g}); largest difference at {where}"
    )
    return CheckResult(claim, passed, gap, tolerance, message, details)


def check_identity(strategy: Strategy, model: nn.Module, images: torch.Tensor) -> CheckResult:
    """An all-kept mask gives the unmasked logits (bit-exact on CPU)."""
    keep = torch.ones((1, 1, *images.shape[-2:]), dtype=torch.bool, device=images.device)
    with torch.no_grad():
        reference = model(images)
    masked = strategy(model, images, keep)
    gap, where = relative_gap(masked, reference)
    return _result(
        Claim.IDENTITY, gap, exact_tolerance(images), "all-kept mask vs plain forward", where
    )


def replace_removed(
    images: torch.Tensor, keep: torch.Tensor, replacement: torch.Tensor
) -> torch.Tensor:
    """``images`` with the pixels under removed positions taken from ``replacement``."""
    return torch.where(keep, images, replacement.expand_as(images))


def check_content_independence(
    strategy: Strategy,
    model: nn.Module,
    images: torch.Tensor,
    mask: torch.Tensor,
    *,
    seed: int = 0,
) -> CheckResult:
    """Logits do not change when the pixels under removed positions change.

    Three replacements are tried: uniform noise drawn from ``seed``, all black and all
    white (extremes expose clipping leaks). The gap is the largest over the three.
    """
    keep = mask.expand(images.shape[0], 1, *images.shape[-2:])
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.rand(images.shape, generator=generator).to(images)
    replacements = {
        "noise": noise,
        "black": torch.zeros_like(images),
        "white": torch.ones_like(images),
    }
    reference = strategy(model, images, keep)
    worst, worst_where, worst_name = -1.0, "nowhere", ""
    for name, replacement in replacements.items():
        gap, where = relative_gap(
            strategy(model, replace_removed(images, keep, replacement), keep), reference
        )
        if gap > worst:
            worst, worst_where, worst_name = gap, where, name
    removed = int((~keep).sum())
    return _result(
        Claim.CONTENT_INDEPENDENCE,
        worst,
        exact_tolerance(images),
        f"removed pixels ({removed} positions) replaced by {worst_name}",
        worst_where,
    )


def check_batch_consistency(
    strategy: Strategy,
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    permutation: Sequence[int] | None = None,
) -> CheckResult:
    """A batch gives its samples' one-by-one logits, also in permuted order.

    ``images`` and ``masks`` have the same batch size B >= 2; ``permutation`` defaults
    to the reversed order. The tolerance is the dtype's rounding tolerance times the
    strategy's ``rounding_scale``.
    """
    batch = images.shape[0]
    masks = masks.expand(batch, 1, *images.shape[-2:])
    order = list(permutation) if permutation is not None else list(range(batch))[::-1]
    together = strategy(model, images, masks)
    alone = torch.cat([strategy(model, images[i : i + 1], masks[i : i + 1]) for i in range(batch)])
    permuted = strategy(model, images[order], masks[order])
    unpermuted = torch.empty_like(permuted)
    unpermuted[order] = permuted
    gap_alone, where_alone = relative_gap(together, alone)
    gap_perm, where_perm = relative_gap(unpermuted, alone)
    gap, where = max((gap_alone, where_alone), (gap_perm, f"(permuted {order}) {where_perm}"))
    return _result(
        Claim.BATCH_CONSISTENCY,
        gap,
        rounding_tolerance(images.dtype) * getattr(strategy, "rounding_scale", 1.0),
        f"batch of {batch} vs one by one and permuted",
        where,
        together_gap=gap_alone,
        permuted_gap=gap_perm,
    )


def check_determinism(
    strategy: Strategy, model: nn.Module, images: torch.Tensor, mask: torch.Tensor
) -> CheckResult:
    """Two calls with the same inputs give the same logits (bit-exact on CPU)."""
    first = strategy(model, images, mask)
    second = strategy(model, images, mask)
    gap, where = relative_gap(second, first)
    return _result(Claim.DETERMINISM, gap, exact_tolerance(images), "two identical calls", where)


def check_crop_equivalence(
    strategy: Strategy,
    model: nn.Module,
    images: torch.Tensor,
    box: tuple[int, int, int, int],
) -> CheckResult:
    """Keeping only ``box`` (top, left, h, w) gives the model's logits on the crop."""
    from maskbench.masks.builders import rectangle_masks

    top, left, height, width = box
    keep = rectangle_masks(tuple(images.shape[-2:]), [box], device=images.device)
    masked = strategy(model, images, keep)
    with torch.no_grad():
        cropped = model(images[..., top : top + height, left : left + width].contiguous())
    gap, where = relative_gap(masked, cropped)
    return _result(
        Claim.CROP_EQUIVALENCE,
        gap,
        CROP_TOLERANCE.get(images.dtype, 1e-4),
        f"keep box {box} vs model on the crop",
        where,
    )


def check_translation_invariance(
    strategy: Strategy,
    model: nn.Module,
    images: torch.Tensor,
    box: tuple[int, int, int, int],
    offset: tuple[int, int],
) -> CheckResult:
    """Moving the kept box and its content by ``offset`` (dy, dx) keeps the logits.

    The content of the box is copied to the new place; everything outside is the same
    image (so it is removed content in both runs).
    """
    from maskbench.masks.builders import rectangle_masks

    top, left, height, width = box
    dy, dx = offset
    size = tuple(images.shape[-2:])
    if not (top + dy >= 0 and top + dy + height <= size[0]):
        raise ValueError(f"offset {offset} moves box {box} out of the {size} image")
    if not (left + dx >= 0 and left + dx + width <= size[1]):
        raise ValueError(f"offset {offset} moves box {box} out of the {size} image")
    moved_box = (top + dy, left + dx, height, width)
    keep = rectangle_masks(size, [box], device=images.device)
    moved_keep = rectangle_masks(size, [moved_box], device=images.device)
    moved = images.clone()
    moved[..., top + dy : top + dy + height, left + dx : left + dx + width] = images[
        ..., top : top + height, left : left + width
    ]
    first = strategy(model, images, keep)
    second = strategy(model, moved, moved_keep)
    gap, where = relative_gap(second, first)
    return _result(
        Claim.TRANSLATION_INVARIANCE,
        gap,
        CROP_TOLERANCE.get(images.dtype, 1e-4),
        f"box {box} moved by {offset}",
        where,
    )


def check_finite(
    strategy: Strategy, model: nn.Module, images: torch.Tensor, mask: torch.Tensor
) -> CheckResult:
    """No NaN or Inf in the logits (use with empty and nearly empty masks)."""
    logits = strategy(model, images, mask)
    bad = int((~torch.isfinite(logits)).sum())
    kept = int(mask.sum())
    passed = bad == 0
    message = (
        f"finite {'holds' if passed else 'FAILS'}: {bad} non-finite logits with "
        f"{kept} kept positions"
    )
    return CheckResult(Claim.FINITE, passed, float(bad), 0.0, message)


def model_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The unmasked logits of ``model`` on ``images`` (no gradient)."""
    with torch.no_grad():
        return model(images)


def check_monotone_drift(
    strategy: Strategy,
    model: nn.Module,
    images: torch.Tensor,
    seeds: Sequence[int],
    *,
    fractions: Sequence[float] | None = None,
    patch: int | None = None,
    min_spearman: float | None = None,
    step_tolerance: float | None = None,
) -> CheckResult:
    """Drift from the unmasked logits grows as nested masks remove more.

    For every image and every removal order (one per seed), the nested masks remove
    ``fractions`` (default 0, 0.1, ..., 0.9) of ``patch`` x ``patch`` patches
    (:func:`maskbench.nested_removal_masks`); drift is
    ``KL(softmax(unmasked) || softmax(masked))``. The claim holds when the mean
    Spearman correlation between fraction and drift is at least ``min_spearman`` and
    the mean drift curve never falls by more than ``step_tolerance`` of its maximum
    between neighbouring fractions (defaults and their reasons:
    :mod:`maskbench.audit.drift`).

    ``gap`` is ``1 - mean Spearman`` (held to ``1 - min_spearman``); ``details`` hold
    the curve, the mean Spearman correlation and the worst step.
    """
    from maskbench.audit import drift
    from maskbench.masks.builders import nested_removal_masks
    from maskbench.masks.segments import patch_grid

    fractions = tuple(drift.DRIFT_FRACTIONS if fractions is None else fractions)
    patch = drift.DRIFT_PATCH if patch is None else int(patch)
    min_spearman = drift.MIN_SPEARMAN if min_spearman is None else float(min_spearman)
    step_tolerance = drift.STEP_TOLERANCE if step_tolerance is None else float(step_tolerance)
    if not seeds:
        raise ValueError("check_monotone_drift needs at least one removal-order seed")
    size = tuple(images.shape[-2:])
    segments = patch_grid(size, patch, device=images.device)
    batch, steps = images.shape[0], len(fractions)
    reference = model_logits(model, images)
    rows = []
    for seed in seeds:
        masks = nested_removal_masks(segments, fractions, seed=int(seed))  # (F, 1, H, W)
        tiled_images = images.repeat_interleave(steps, dim=0)
        tiled_masks = masks.repeat(batch, 1, 1, 1)
        masked = strategy(model, tiled_images, tiled_masks)
        drifts = drift.kl_drift(reference.repeat_interleave(steps, dim=0), masked)
        rows.append(drifts.reshape(batch, steps))
    summary = drift.summarize_drift(torch.cat(rows), fractions)
    passed = summary.holds(min_spearman, step_tolerance)
    verdict = "holds" if passed else "FAILS"
    where = "the mean drift curve never falls"
    if summary.worst_step > 0.0:
        k = summary.worst_step_at
        where = (
            f"largest fall between fractions {fractions[k - 1]:g} and {fractions[k]:g}: "
            f"{summary.curve[k - 1]:.4g} -> {summary.curve[k]:.4g} nats "
            f"({summary.worst_step:.1%} of the curve's maximum, tolerance {step_tolerance:.0%})"
        )
    message = (
        f"monotone_drift {verdict}: mean Spearman(fraction, drift) {summary.mean_spearman:.3f} "
        f"(threshold {min_spearman:g}) over {summary.sequences} nested sequences of "
        f"{patch}px patches; {where}"
    )
    return CheckResult(
        Claim.MONOTONE_DRIFT,
        passed,
        1.0 - summary.mean_spearman,
        1.0 - min_spearman,
        message,
        {
            "mean_spearman": summary.mean_spearman,
            "worst_step": summary.worst_step,
            "curve": list(summary.curve),
            "fractions": list(summary.fractions),
            "sequences": summary.sequences,
        },
    )


@dataclass(frozen=True)
class Measurement:
    """A figure measured over several examples of one check.

    Attributes:
        worst: the largest gap (the figure the audit records).
        mean: the mean gap.
        gaps: every example's gap, in order.
        worst_index: which example gave ``worst``.
    """

    worst: float
    mean: float
    gaps: tuple[float, ...]
    worst_index: int


def measure(results: Sequence[CheckResult]) -> Measurement:
    """Summarise the gaps of several :class:`CheckResult` of the same check."""
    if not results:
        raise ValueError("measure needs at least one CheckResult")
    gaps = tuple(float(r.gap) for r in results)
    worst_index = max(range(len(gaps)), key=lambda i: gaps[i])
    finite = [g for g in gaps if g == g]
    mean = sum(finite) / len(finite) if finite else float("nan")
    return Measurement(gaps[worst_index], mean, gaps, worst_index)
