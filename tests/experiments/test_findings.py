"""Verdicts follow the numbers: reproduced, not reproduced, contradicted, not tested."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskbench.experiments.findings import (
    lime_findings,
    segment_removal_findings,
    shape_leakage_findings,
    verdict_of,
)
from maskbench.experiments.results import EvaluationResult
from maskbench.experiments.segment_removal import segment_removal
from maskbench.strategies import Strategy


def test_verdict_of_intervals():
    assert verdict_of({"ci_low": 0.1, "ci_high": 0.3}) == "reproduced"
    assert verdict_of({"ci_low": -0.3, "ci_high": -0.1}) == "contradicted"
    assert verdict_of({"ci_low": -0.1, "ci_high": 0.2}) == "not reproduced"
    assert verdict_of({"ci_low": None, "ci_high": None}) == "not reproduced"


def _lime_result(method_scores, baseline_scores) -> EvaluationResult:
    n = len(method_scores)
    return EvaluationResult(
        "lime",
        summary=[{"strategy": s, "metric": "score"} for s in ("layer_masking", "black")],
        per_image={
            "strategy": ["layer_masking"] * n + ["black"] * n,
            "score": list(method_scores) + list(baseline_scores),
        },
        config={"n_samples": 64, "bootstrap": {"reps": 500, "seed": 0}},
    )


def test_lime_verdicts_follow_the_scores():
    generator = torch.Generator().manual_seed(0)
    noise = (torch.rand(30, generator=generator) * 0.1).tolist()
    high = [0.8 + e for e in noise]
    low = [0.2 + e for e in noise]
    (better,) = lime_findings(_lime_result(high, low), baselines=["black"])
    assert better.verdict == "reproduced" and better.difference["value"] == pytest.approx(0.6)
    assert "reproduced" in better.sentence and "0.6" in better.sentence
    (worse,) = lime_findings(_lime_result(low, high), baselines=["black"])
    assert worse.verdict == "contradicted"
    (same,) = lime_findings(_lime_result(high, high), baselines=["black"])
    assert same.verdict == "not reproduced"
    missing = lime_findings(_lime_result(high, low), baselines=["grey"])
    assert missing[0].verdict == "not tested"


def test_shape_leakage_lower_ratio_is_better():
    n = 40
    # layer masking: silhouette accuracy 10%, shifted 100% -> ratio 0.1; black: ratio 1
    sil_lm = [i < 4 for i in range(n)]
    result = EvaluationResult(
        "shape_leakage",
        summary=[{"strategy": s, "metric": "leakage"} for s in ("layer_masking", "black")],
        per_image={
            "strategy": ["layer_masking"] * n + ["black"] * n,
            "correct_silhouette": sil_lm + [True] * n,
            "correct_shifted": [True] * (2 * n),
        },
        config={"bootstrap": {"reps": 500, "seed": 0}},
    )
    (finding,) = shape_leakage_findings(result, baselines=["black"])
    assert finding.method_estimate["value"] == pytest.approx(0.1)
    assert finding.baseline_estimate["value"] == pytest.approx(1.0)
    assert finding.verdict == "reproduced"
    assert finding.difference["value"] == pytest.approx(0.9)  # oriented: positive = better


class _Identity(Strategy):
    """Ignores the mask: every prediction stays unchanged."""

    def masked_logits(self, model: nn.Module, images, keep):
        return model(images)


class _Scramble(Strategy):
    """Random logits: predictions change most of the time."""

    def masked_logits(self, model: nn.Module, images, keep):
        generator = torch.Generator().manual_seed(int(keep.sum()))
        return torch.randn(images.shape[0], 9, generator=generator) * 10


@pytest.mark.parametrize(
    ("method", "baseline", "verdict"),
    [
        (_Identity, _Scramble, "reproduced"),
        (_Scramble, _Identity, "contradicted"),
    ],
)
def test_segment_removal_verdicts(tiny_model, bench_data, method, baseline, verdict):
    lm, black = method(), baseline()
    lm.name, black.name = "layer_masking", "black"
    result = segment_removal(
        tiny_model,
        bench_data.head(6),
        [lm, black],
        segmentations=("patches16",),
        fractions=(0.0, 0.5, 1.0),
        bootstrap_reps=200,
    )
    findings = segment_removal_findings(result, baselines=["black", "grey"])
    assert findings[0].verdict == verdict
    assert findings[1].verdict == "not tested" and "grey was not run" in findings[1].sentence


def test_segment_removal_needs_the_random_order_and_reports_the_others(tiny_model, bench_data):
    from maskbench.experiments.findings import segment_removal_order_contrasts

    lm, black = _Identity(), _Scramble()
    lm.name, black.name = "layer_masking", "black"
    data = bench_data.head(4)
    common = {"segmentations": ("patches16",), "fractions": (0.0, 0.5, 1.0), "bootstrap_reps": 50}
    salient_only = segment_removal(
        tiny_model, data, [lm, black], orders=["most_salient", "least_salient"], **common
    )
    (finding, _) = segment_removal_findings(salient_only)
    assert finding.verdict == "not tested" and "random removal order" in finding.sentence
    contrasts = segment_removal_order_contrasts(salient_only, baselines=["black"])
    assert len(contrasts) == 3 and "most_salient" in contrasts[0]
    assert "no verdict" in contrasts[1] and "least_salient" in contrasts[1]
    assert "all 2 orders pooled" in contrasts[2]
