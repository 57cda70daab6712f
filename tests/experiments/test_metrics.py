"""Metrics against hand-computed values and scipy."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from maskbench.experiments import metrics


def test_entropy_of_known_histograms():
    # 8 images: 4 + 4 over two classes -> 1 bit; 2+2+2+2 -> 2 bits; all one class -> 0.
    assert metrics.prediction_entropy(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), 5) == 1.0
    assert metrics.prediction_entropy(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 5) == 2.0
    assert metrics.prediction_entropy(torch.tensor([3] * 8), 5) == 0.0
    counts = torch.tensor([5, 2, 1, 0])
    expected = scipy_entropy(counts.numpy(), base=2)
    assert metrics.entropy_bits(counts).item() == pytest.approx(expected, abs=1e-12)
    assert metrics.max_entropy_bits(8) == 3.0


def test_entropy_from_logits_uses_argmax():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    # predictions 0, 1, 2, 0 -> p = (1/2, 1/4, 1/4) -> 1.5 bits
    assert metrics.prediction_entropy(logits) == pytest.approx(1.5)


def test_unchanged_fraction_and_accuracy():
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    masked = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.2, 0.1], [0.5, 0.6]])
    assert metrics.unchanged_fraction(masked, reference) == 0.75
    labels = torch.tensor([0, 0, 1, 1])
    assert metrics.accuracy(masked, labels) == 0.75  # predictions 0, 0, 0, 1


def test_kl_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(5, 7, generator=generator) * 3
    masked = torch.randn(5, 7, generator=generator) * 3
    p = reference.double().softmax(-1).numpy()
    q = masked.double().softmax(-1).numpy()
    expected = [scipy_entropy(p[i], q[i]) for i in range(5)]
    got = metrics.kl_divergence(reference, masked)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-10)
    assert metrics.kl_drift(reference, masked) == pytest.approx(sum(expected) / 5, abs=1e-10)
    assert metrics.kl_drift(reference, reference) == pytest.approx(0.0, abs=1e-12)


def test_kl_stays_finite_for_extreme_logits():
    reference = torch.tensor([[1000.0, -1000.0]])
    masked = torch.tensor([[-1000.0, 1000.0]])
    value = metrics.kl_divergence(reference, masked).item()
    assert math.isfinite(value) and value == pytest.approx(2000.0)


def test_weighted_entropy_statistic_matches_resampled_histograms():
    predicted = torch.tensor([0, 1, 1, 2, 2, 2])
    weights = torch.tensor([[1.0, 1, 1, 1, 1, 1], [3.0, 0, 0, 0, 0, 3], [0.0, 2, 2, 0, 2, 0]])
    got = metrics.entropy_statistic(3)(predicted[None], weights)[0]
    resampled = [
        predicted,
        torch.tensor([0, 0, 0, 2, 2, 2]),
        torch.tensor([1, 1, 1, 1, 2, 2]),
    ]
    expected = [metrics.prediction_entropy(r, 3) for r in resampled]
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64))
