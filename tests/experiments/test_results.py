"""Every result survives a JSON round trip; malformed tables are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from maskbench.experiments import (
    EvaluationResult,
    lime_evaluation,
    segment_removal,
    shape_leakage,
)


@pytest.fixture(scope="module")
def results(tiny_model, bench_data):
    data = bench_data.head(3)
    common = {"bootstrap_reps": 20}
    return [
        segment_removal(
            tiny_model,
            data,
            ["black", "grey"],
            segmentations=("patches16",),
            fractions=(0.0, 0.5, 1.0),
            **common,
        ),
        shape_leakage(tiny_model, replace(data, labels=None), ["black", "grey"], **common),
        lime_evaluation(tiny_model, data, ["black", "grey"], n_samples=12, **common),
    ]


def test_json_round_trip(results, tmp_path):
    for result in results:
        text = result.to_json()
        assert EvaluationResult.from_json(text) == result
        path = tmp_path / f"{result.evaluation}.json"
        result.to_json(path)
        assert EvaluationResult.from_json(path) == result


def test_rows_and_value(results):
    lime = results[2]
    assert lime.strategies == ["black", "grey"]
    assert len(lime.rows(metric="score")) == 2
    with pytest.raises(LookupError, match="2 summary rows"):
        lime.value(metric="score")


def test_malformed_results_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        EvaluationResult("x", per_image={"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="schema version"):
        EvaluationResult.from_dict({"schema_version": 99, "evaluation": "x"})


def test_row_index_follows_changes_to_the_summary():
    result = EvaluationResult("x", summary=[{"strategy": "a", "metric": "m", "value": 1.0}])
    assert result.value(strategy="a", metric="m")["value"] == 1.0
    result.summary.append({"strategy": "b", "metric": "m", "value": 2.0})
    assert result.value(strategy="b", metric="m")["value"] == 2.0
    assert result.rows(strategy="c") == []


def test_table_cells():
    from maskbench.experiments.summaries import fmt

    row = {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}
    assert fmt(row, "unchanged") == "50.0% [25.0, 75.0]"
    assert fmt(row, "kl_drift") == "0.500 [0.250, 0.750]"
    assert fmt({"value": None}, "score") == "n/a"
