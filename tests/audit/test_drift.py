"""The monotone-drift measure and its check."""

from __future__ import annotations

import math

import pytest
import torch

import maskbench as mb
from maskbench import invariants as inv
from maskbench.audit import drift


def test_kl_drift_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drift.kl_drift(logits, logits), torch.zeros(3, dtype=torch.float64))
    moved = logits.clone()
    moved[:, 0] += 5
    assert bool((drift.kl_drift(logits, moved) > 0.1).all())


def test_kl_drift_matches_the_definition():
    ref, out = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.5, 0.0]])
    p, q = ref.double().softmax(-1), out.double().softmax(-1)
    expected = float((p * (p / q).log()).sum())
    assert math.isclose(float(drift.kl_drift(ref, out)[0]), expected, rel_tol=1e-12)


def test_ranks_share_ties():
    assert drift.ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_known_values():
    x = torch.arange(10.0)
    assert drift.spearman(x, x**3) == pytest.approx(1.0)
    assert drift.spearman(x, -x) == pytest.approx(-1.0)
    assert drift.spearman(x, torch.zeros(10)) == 0.0  # a constant curve is not monotone
    swapped = x.clone()
    swapped[[3, 4]] = swapped[[4, 3]]
    assert drift.spearman(x, swapped) == pytest.approx(1 - 6 * 2 / (10 * 99))


def test_summary_reports_the_worst_step_and_where():
    fractions = drift.DRIFT_FRACTIONS
    rising = torch.linspace(0, 1, 10)
    dipping = rising.clone()
    dipping[6] = 0.3  # falls from 0.56 to 0.3, then recovers to 0.78
    summary = drift.summarize_drift(torch.stack([rising, dipping]), fractions)
    assert summary.sequences == 2
    assert summary.worst_step_at == 6
    mean = (rising + dipping) / 2
    assert summary.worst_step == pytest.approx(float(mean[5] - mean[6]) / float(mean.max()))
    assert drift.summarize_drift(rising[None], fractions).holds()
    assert not summary.holds(tolerance=0.05)


def test_summary_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sequences"):
        drift.summarize_drift(torch.zeros(10), drift.DRIFT_FRACTIONS)


class IgnoresMask(mb.InputSpaceStrategy):
    """Pretends to remove pixels but shows the model the whole image."""

    def compute_fill(self, images, keep):
        return images


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    return mb.wrap_model(net)


def test_check_monotone_drift_holds_for_a_grey_fill(tiny):
    images = mb.sample_images(2, 64)
    result = inv.check_monotone_drift(mb.get_strategy("grey"), tiny, images, seeds=[0, 1])
    assert result.passed, result.message
    assert result.details["sequences"] == 4
    assert len(result.details["curve"]) == 10
    assert result.details["curve"][0] == pytest.approx(0.0, abs=1e-9)
    assert result.gap == pytest.approx(1 - result.details["mean_spearman"])


def test_check_monotone_drift_fails_for_a_strategy_that_ignores_the_mask(tiny):
    images = mb.sample_images(2, 64)
    result = inv.check_monotone_drift(IgnoresMask(), tiny, images, seeds=[0])
    assert not result.passed
    assert result.details["mean_spearman"] == 0.0
    assert "FAILS" in result.message and "Spearman" in result.message


def test_check_monotone_drift_needs_a_seed(tiny):
    with pytest.raises(ValueError, match="seed"):
        inv.check_monotone_drift(mb.get_strategy("grey"), tiny, mb.sample_images(2, 64), [])


def test_measure_summarises_gaps():
    results = [inv.CheckResult(mb.Claim.IDENTITY, True, g, 0.0, "") for g in (0.0, 0.5, 0.25)]
    measured = inv.measure(results)
    assert measured.worst == 0.5 and measured.worst_index == 1
    assert measured.mean == pytest.approx(0.25)
    with pytest.raises(ValueError):
        inv.measure([])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_drift_summary_of_cuda_drifts_equals_the_cpu_one():
    # Drifts come from the model's device; the summary's fractions live on the CPU.
    drifts = torch.rand(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    fractions = (0.0, 0.3, 0.6, 0.9)
    assert drift.summarize_drift(drifts.cuda(), fractions) == drift.summarize_drift(
        drifts, fractions
    )
