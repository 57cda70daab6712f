"""Metrics of masked predictions, per image and over a set of images.

Per image (one value per image, averaged over images in a report):

* ``correct``: top-1 prediction equals the label (needs labels);
* ``unchanged``: top-1 prediction equals the prediction on the unmasked image;
* ``kl``: KL(softmax(unmasked logits) || softmax(masked logits)) in nats, how far the
  masked output distribution drifts from the unmasked one.

Over a set of images:

* ``accuracy``, ``unchanged fraction`` and ``KL drift`` are means of the above;
* ``entropy`` of the predicted-class histogram, in bits: 0 when every image gets the
  same class (collapse onto one class), ``log2(C)`` when predictions spread evenly over
  ``C`` classes. It exposes fills that push every image to one "mask class".
"""

from __future__ import annotations

import math

import torch

#: Metric names as they appear in results, with a one-line meaning for reports.
METRICS: dict[str, str] = {
    "accuracy": "top-1 accuracy (prediction equals the label)",
    "unchanged": "fraction of predictions equal to the unmasked prediction",
    "entropy": "entropy (bits) of the histogram of predicted classes over images",
    "kl_drift": "mean KL(softmax unmasked || softmax masked), nats",
}


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 class of each row of (N, C) logits."""
    return logits.argmax(dim=-1)


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) bool: top-1 prediction equals the label."""
    return predictions(logits) == labels.to(logits.device)


def unchanged(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """(N,) bool: top-1 prediction equals the reference (unmasked) prediction."""
    return predictions(logits) == predictions(reference_logits)


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(N,) KL(softmax(reference) || softmax(logits)) in nats, computed in float64.

    Computed from log-softmax, so it stays finite for any finite logits.
    """
    log_p = torch.log_softmax(reference_logits.to(torch.float64), dim=-1)
    log_q = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp(min=0.0)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of histograms (..., C) of counts (or weights); empty gives NaN."""
    counts = counts.to(torch.float64)
    total = counts.sum(dim=-1, keepdim=True)
    p = counts / total.clamp(min=1e-300)
    terms = torch.where(p > 0, -p * torch.log2(p.clamp(min=1e-300)), 0.0)
    return torch.where(total[..., 0] > 0, terms.sum(dim=-1), torch.nan)


def class_histograms(
    predicted: torch.Tensor, num_classes: int, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted predicted-class histograms: (..., n) ints, (R, n) weights -> (..., R, C)."""
    one_hot = torch.nn.functional.one_hot(predicted.long(), num_classes).to(torch.float64)
    return torch.einsum("...nc,rn->...rc", one_hot, weights.to(torch.float64))


def entropy_statistic(num_classes: int, chunk: int = 64):
    """A bootstrap statistic: entropy (bits) of the weighted predicted-class histogram.

    The returned function maps (..., n) predictions and (R, n) weights to (..., R); it
    works through the leading conditions ``chunk`` at a time to bound memory.
    """

    def statistic(predicted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        lead = predicted.shape[:-1]
        flat = predicted.reshape(-1, predicted.shape[-1])
        parts = [
            entropy_bits(class_histograms(flat[i : i + chunk], num_classes, weights))
            for i in range(0, flat.shape[0], chunk)
        ]
        out = torch.cat(parts) if parts else torch.empty(0, weights.shape[0])
        return out.reshape(*lead, weights.shape[0])

    return statistic


# --------------------------------------------------------------------------- aggregates


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of (N, C) logits against (N,) labels."""
    return float(correct(logits, labels).double().mean())


def unchanged_fraction(logits: torch.Tensor, reference_logits: torch.Tensor) -> float:
    """Fraction of images whose top-1 prediction equals the reference prediction."""
    return float(unchanged(logits, reference_logits).double().mean())


def prediction_entropy(
    logits_or_predictions: torch.Tensor, num_classes: int | None = None
) -> float:
    """Entropy (bits) of the histogram of predicted classes over images.

    Accepts (N, C) logits or (N,) predicted classes (then ``num_classes`` is needed).
    """
    if logits_or_predictions.dim() == 2:
        num_classes = logits_or_predictions.shape[-1]
        predicted = predictions(logits_or_predictions)
    else:
        if num_classes is None:
            raise ValueError("num_classes is needed when passing predicted classes")
        predicted = logits_or_predictions
    counts = torch.bincount(predicted.long().flatten(), minlength=num_classes)
    return float(entropy_bits(counts))


def kl_drift(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over images of KL(softmax(reference) || softmax(logits)), in nats."""
    return float(kl_divergence(reference_logits, logits).mean())


def max_entropy_bits(num_classes: int) -> float:
    """The largest possible predicted-class entropy for ``num_classes`` classes."""
    return math.log2(num_classes)
