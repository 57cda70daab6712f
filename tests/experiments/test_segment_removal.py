"""Segment removal on a tiny model: layout, known answers, errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from maskbench.experiments.segment_removal import per_image_array, segment_removal


@pytest.fixture(scope="module")
def removal(tiny_model, bench_data):
    return segment_removal(
        tiny_model,
        bench_data.head(4),
        ["black", "grey"],
        segmentations=("patches16", "slic"),
        fractions=(0.0, 0.5, 1.0),
        bootstrap_reps=50,
    )


def test_summary_covers_every_condition_and_metric(removal):
    # 2 strategies x 2 segmentations x 3 orders x 3 fractions x 4 metrics
    assert len(removal.summary) == 2 * 2 * 3 * 3 * 4
    assert removal.config["orders"] == ["random", "most_salient", "least_salient"]
    assert removal.config["salience_source"] == "object_mask"
    assert set(removal.column_values("metric")) == {"accuracy", "unchanged", "entropy", "kl_drift"}
    for row in removal.summary:
        if row["value"] is not None and row["ci_low"] is not None:
            assert row["ci_low"] - 1e-9 <= row["value"] <= row["ci_high"] + 1e-9


def test_nothing_removed_changes_nothing(removal):
    for name in ("black", "grey"):
        row = removal.value(
            strategy=name, segmentation="slic", order="random", fraction=0.0, metric="unchanged"
        )
        assert row["value"] == 1.0
        kl = removal.value(
            strategy=name, segmentation="slic", order="random", fraction=0.0, metric="kl_drift"
        )
        assert kl["value"] == pytest.approx(0.0, abs=1e-9)


def test_everything_removed_collapses_onto_one_class(removal):
    # with every segment removed, black shows the same all-black image for every input:
    # one predicted class, entropy 0 bits
    row = removal.value(
        strategy="black",
        segmentation="patches16",
        order="least_salient",
        fraction=1.0,
        metric="entropy",
    )
    assert row["value"] == 0.0


def test_per_image_array_layout(removal):
    unchanged = per_image_array(removal, "unchanged")
    assert set(unchanged) == {"black", "grey"}
    assert unchanged["black"].shape == (2, 3, 3, 4)
    mean = unchanged["grey"][1, 2, 1].mean().item()
    row = removal.value(
        strategy="grey",
        segmentation="slic",
        order="least_salient",
        fraction=0.5,
        metric="unchanged",
    )
    assert row["value"] == pytest.approx(mean)


def test_without_labels_or_masks(tiny_model, bench_data):
    data = replace(bench_data.head(2), labels=None, objects=None)
    result = segment_removal(
        tiny_model,
        data,
        ["black"],
        segmentations=("patches16",),
        fractions=(0.0, 1.0),
        bootstrap_reps=20,
    )
    assert result.config["orders"] == ["random"]
    assert not result.rows(metric="accuracy")
    assert any("accuracy is not reported" in note for note in result.notes)
    with pytest.raises(ValueError, match="salience orders need"):
        segment_removal(tiny_model, data, ["black"], orders=["most_salient"])


def test_bad_fractions(tiny_model, bench_data):
    with pytest.raises(ValueError, match="fractions"):
        segment_removal(tiny_model, bench_data.head(1), ["black"], fractions=(0.5, 1.5))


def test_strategies_see_identical_masks(tiny_model, bench_data):
    # black and a second black instance must agree exactly: same masks, same fill
    from maskbench.strategies.constant import Black

    other = Black()
    other.name = "black_again"
    result = segment_removal(
        tiny_model,
        bench_data.head(2),
        ["black", other],
        segmentations=("quickshift",),
        fractions=(0.3, 0.7),
        bootstrap_reps=10,
    )
    arrays = per_image_array(result, "kl")
    assert torch.equal(arrays["black"], arrays["black_again"])
