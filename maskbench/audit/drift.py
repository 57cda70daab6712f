"""The drift measure behind the ``monotone_drift`` claim.

Drift of a masked prediction is ``KL(softmax(unmasked logits) || softmax(masked logits))``:
how far the masked output distribution has moved from the unmasked one, in nats. Over a
nested removal sequence (fractions 0, 0.1, ..., 0.9 of 16 x 16 patches, each mask a
subset of the previous one), removing more should move the prediction further away.

The claim is judged on two figures (see :func:`summarize_drift`):

* the mean **Spearman correlation** between removed fraction and drift over all
  sequences; it is scale-free (random-weight models drift by tiny amounts, pretrained
  ones by nats) and tolerates the small wiggles one random sequence shows;
* the **worst step**: the largest decrease between consecutive fractions of the mean
  drift curve, relative to the curve's maximum. One sequence may wiggle, but the
  average over sequences and images must not go down noticeably.

Defaults and why: :data:`MIN_SPEARMAN` = 0.8 lets about one adjacent pair in ten swap
in a sequence (a rank correlation of 1 would demand strict monotonicity of every single
sequence, which the honest input-space fills do not show on every image); a strategy
whose drift does not grow with removal (e.g. one that ignores the mask, or saturates
at the first step) scores near 0. :data:`STEP_TOLERANCE` = 0.1 allows the averaged
curve to dip by 10 % of its height between neighbouring fractions (sampling noise of a
few sequences), but not to turn around.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Removal fractions of a nested sequence: 0, 0.1, ..., 0.9.
DRIFT_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))
#: Side of the square patches removed (pixels).
DRIFT_PATCH = 16
#: The mean Spearman correlation the claim requires.
MIN_SPEARMAN = 0.8
#: The largest allowed decrease of the mean curve between neighbouring fractions,
#: relative to its maximum.
STEP_TOLERANCE = 0.1


def kl_drift(reference: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(reference) || softmax(masked))`` in nats, float64.

    ``reference`` and ``masked`` are (B, num_classes) logits; the result is (B,) and
    never negative (rounding below zero is clamped).
    """
    ref = torch.log_softmax(reference.double(), dim=-1)
    out = torch.log_softmax(masked.double(), dim=-1)
    return (ref.exp() * (ref - out)).sum(dim=-1).clamp(min=0.0)


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) of a 1-D tensor, float64."""
    values = values.double()
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    result = torch.empty_like(values)
    start = 0
    count = values.numel()
    while start < count:
        stop = start + 1
        while stop < count and sorted_values[stop] == sorted_values[start]:
            stop += 1
        result[order[start:stop]] = (start + stop - 1) / 2.0 + 1.0
        start = stop
    return result


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors; 0.0 when either is constant."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    if denominator == 0.0:
        return 0.0
    return float((rx * ry).sum()) / denominator


@dataclass(frozen=True)
class DriftSummary:
    """The drift of a set of nested removal sequences, summarised.

    Attributes:
        fractions: removed fraction of each step.
        curve: mean drift per fraction over all sequences (nats).
        mean_spearman: mean over sequences of Spearman(fraction, drift).
        worst_step: largest decrease of ``curve`` between neighbouring fractions,
            relative to ``max(curve)`` (0 when the curve never decreases).
        worst_step_at: index of the fraction *after* that decrease (0 if none).
        sequences: how many sequences were averaged.
    """

    fractions: tuple[float, ...]
    curve: tuple[float, ...]
    mean_spearman: float
    worst_step: float
    worst_step_at: int
    sequences: int

    def holds(self, min_spearman: float = MIN_SPEARMAN, tolerance: float = STEP_TOLERANCE) -> bool:
        """Whether the claim holds for these thresholds."""
        return self.mean_spearman >= min_spearman and self.worst_step <= tolerance


def summarize_drift(drifts: torch.Tensor, fractions: Sequence[float]) -> DriftSummary:
    """Summarise drifts of shape (sequences, len(fractions)).

    Each row is one nested sequence (one image, one removal order).
    """
    drifts = drifts.detach().double().cpu()  # small; the fractions below live on the CPU
    if drifts.dim() != 2 or drifts.shape[1] != len(fractions):
        raise ValueError(f"drifts must be (sequences, {len(fractions)}), got {tuple(drifts.shape)}")
    x = torch.tensor(list(fractions), dtype=torch.float64)
    correlations = [spearman(x, row) for row in drifts]
    curve = drifts.mean(dim=0)
    height = float(curve.max()) if curve.numel() else 0.0
    drops = curve[:-1] - curve[1:]
    worst, worst_at = 0.0, 0
    if drops.numel() and height > 0.0:
        index = int(drops.argmax())
        if float(drops[index]) > 0.0:
            worst, worst_at = float(drops[index]) / height, index + 1
    return DriftSummary(
        fractions=tuple(float(f) for f in fractions),
        curve=tuple(float(v) for v in curve),
        mean_spearman=sum(correlations) / max(len(correlations), 1),
        worst_step=worst,
        worst_step_at=worst_at,
        sequences=drifts.shape[0],
    )
