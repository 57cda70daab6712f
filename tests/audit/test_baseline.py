"""The baseline gate: which differences are regressions."""

from __future__ import annotations

import copy

import pytest

from maskbench.audit.baseline import compare

CARD = {
    "schema": "maskbench-scorecard/1",
    "settings": {"image_size": 64, "images": "x", "batch_size": 2, "dtype": "float32"},
    "models": {"m": {"weights": "random"}},
    "results": {
        "m": {
            "black": {
                "claims": {
                    "identity": {"status": "pass"},
                    "crop_equivalence": {"status": "not_claimed"},
                },
                "figures": {
                    "identity_gap": {"value": 0.0, "better": "lower", "tolerance": 1e-4},
                    "crop_gap": {"value": 1.0, "better": "lower", "tolerance": 0.1},
                    "drift_spearman": {"value": 0.9, "better": "higher", "tolerance": 0.05},
                    "drift_curve": {"value": [0.0, 1.0], "better": None, "tolerance": None},
                },
            }
        }
    },
}


def changed(**edits):
    card = copy.deepcopy(CARD)
    entry = card["results"]["m"]["black"]
    for path, value in edits.items():
        section, name, key = path.split("__")
        entry[section][name][key] = value
    return card


def test_an_identical_run_passes():
    assert compare(CARD, copy.deepcopy(CARD)) == ([], [])


def test_changes_within_tolerance_or_for_the_better_pass():
    card = changed(figures__crop_gap__value=1.09, figures__drift_spearman__value=0.99)
    card["results"]["m"]["black"]["figures"]["drift_curve"]["value"] = [5.0, -1.0]
    assert compare(CARD, card)[0] == []


@pytest.mark.parametrize(
    ("edit", "text"),
    [
        ({"figures__crop_gap__value": 1.2}, "figure 'crop_gap' regressed: 1 -> 1.2"),
        ({"figures__drift_spearman__value": 0.8}, "figure 'drift_spearman' regressed: 0.9 -> 0.8"),
        ({"figures__identity_gap__value": "nan"}, "figure 'identity_gap' regressed"),
        (
            {"claims__identity__status": "fail"},
            "claim 'identity' held in the baseline but is now fail",
        ),
        ({"claims__identity__status": "not_claimed"}, "no longer makes this claim"),
    ],
)
def test_regressions_name_the_strategy_and_the_claim_or_figure(edit, text):
    regressions, _ = compare(CARD, changed(**edit))
    assert len(regressions) == 1
    assert text in str(regressions[0])
    assert str(regressions[0]).startswith("m/black: ")


def test_the_tolerance_stored_in_the_baseline_is_the_one_used():
    loose = copy.deepcopy(CARD)
    loose["results"]["m"]["black"]["figures"]["crop_gap"]["tolerance"] = 0.5
    assert compare(loose, changed(figures__crop_gap__value=1.4))[0] == []


def test_incomparable_settings_or_weights_fail_the_gate():
    card = copy.deepcopy(CARD)
    card["settings"]["image_size"] = 128
    card["models"]["m"]["weights"] = "pretrained"
    messages = [str(r) for r in compare(CARD, card)[0]]
    assert any("image_size" in m and "not comparable" in m for m in messages)
    assert any("weights differ" in m for m in messages)


def test_strategies_or_models_not_audited_are_notes_not_regressions():
    card = copy.deepcopy(CARD)
    card["results"]["m"] = {}
    regressions, notes = compare(CARD, card)
    assert regressions == [] and "m/black" in notes[0]
    card["results"] = {}
    assert "model 'm'" in compare(CARD, card)[1][0]
