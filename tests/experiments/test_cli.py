"""``maskbench run``: files written, the paper report end to end, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import maskbench as mb
from maskbench.cli import main
from maskbench.experiments import EvaluationResult
from maskbench.experiments.strategy_set import PAPER_STRATEGIES

TINY = ["--model", "mbexp_models:tiny_resnet", "--no-progress"]


def test_segment_removal_quick_writes_json_markdown_and_png(tmp_path, capsys):
    out = tmp_path / "sr"
    code = main(
        [
            "run",
            "segment_removal",
            "--quick",
            *TINY,
            "--strategies",
            "black,grey",
            "--n-images",
            "3",
            "--bootstrap",
            "50",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = EvaluationResult.from_json(out / "segment_removal.json")
    assert result.meta["data"]["n_images"] == 3
    assert result.strategies == ["black", "grey"]
    assert result.config["fractions"] == [0.0, 0.5, 1.0]
    text = (out / "segment_removal.md").read_text()
    assert "## Segment removal" in text and "segment_removal_random.png" in text
    for order in ("random", "most_salient", "least_salient"):
        png = out / f"segment_removal_{order}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_paper_outputs(out, strategies):
    report = json.loads((out / "report.json").read_text())
    entries = {(e["evaluation"], e["strategy"]) for e in report["entries"]}
    evaluations = ["segment_removal", "shape_leakage", "lime"]
    if any("Shape leakage was skipped" in note for note in report["notes"]):
        # the random tiny model may classify none of the few images correctly
        evaluations.remove("shape_leakage")
        assert "Shape leakage was skipped" in (out / "report.md").read_text()
    assert entries == {(ev, s) for ev in evaluations for s in strategies}
    # layer_masking was not run, so every paper finding is reported as not tested
    assert {f["verdict"] for f in report["findings"]} == {"not tested"}
    text = (out / "report.md").read_text()
    for needle in (
        "# maskbench paper report",
        "## The paper's findings on this data",
        "## Segment removal",
        "## LIME",
        "random weights",
        "95%",
        "lime_explanations.png",
    ):
        assert needle in text, needle
    for name in ("segment_removal.json", "lime.json", "lime_scores.png", "lime_explanations.png"):
        assert (out / name).exists(), name
    return report


def test_paper_small_end_to_end(tmp_path, capsys):
    """The whole ``paper`` command on very few images (the unmarked end-to-end check)."""
    out = tmp_path / "paper"
    args = ["run", "paper", "--quick", *TINY, "--strategies", "black,grey", "--out", str(out)]
    code = main([*args, "--n-images", "3", "--samples", "16", "--bootstrap", "50"])
    assert code == 0, capsys.readouterr().err
    report = _check_paper_outputs(out, ("black", "grey"))
    assert report["meta"]["sizes"]["lime_samples"] == 16


def test_paper_quick_end_to_end(tmp_path, capsys):
    """``maskbench run paper --quick`` exactly as documented (about a minute)."""
    out = tmp_path / "paper"
    args = ["run", "paper", "--quick", *TINY, "--strategies", "black,grey,blur", "--out", str(out)]
    code = main(args)
    assert code == 0, capsys.readouterr().err
    _check_paper_outputs(out, ("black", "grey", "blur"))


def test_missing_default_strategies_fail_clearly(tmp_path, capsys, monkeypatch):
    import maskbench.experiments.cli as experiments_cli

    # pretend the default set holds a strategy this installation does not have
    defaults = (*PAPER_STRATEGIES[:2], "not_registered_yet")
    monkeypatch.setattr(experiments_cli, "PAPER_STRATEGIES", defaults)
    missing = [s for s in defaults if s not in mb.list_strategies()]
    code = main(["run", "paper", "--quick", *TINY, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "not available" in err and all(name in err for name in missing)
    assert f"--strategies {','.join(PAPER_STRATEGIES[:2])}" in err
    assert not (tmp_path / "report.md").exists()


def test_unknown_strategy_is_an_error_even_when_explicit(tmp_path, capsys):
    code = main(
        ["run", "lime", "--quick", *TINY, "--strategies", "black,nope", "--out", str(tmp_path)]
    )
    assert code == 2 and "nope" in capsys.readouterr().err


def test_shape_leakage_from_a_folder(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            images / f"p{i}.jpg"
        )
        mask = np.zeros((64, 64), np.uint8)
        mask[8 + 4 * i : 30 + 4 * i, 10:34] = 1
        Image.fromarray(mask).save(masks / f"p{i}.png")
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "shape_leakage",
            *TINY,
            "--strategies",
            "black",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--bootstrap",
            "50",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = EvaluationResult.from_json(out / "shape_leakage.json")
    assert result.meta["n_clean_correct"] == 4  # no labels: target = own prediction
    assert "No labels" in (out / "shape_leakage.md").read_text()


def test_folder_options_need_images(tmp_path, capsys):
    code = main(
        [
            "run",
            "lime",
            *TINY,
            "--strategies",
            "black",
            "--masks",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "need --images" in capsys.readouterr().err


def test_paper_report_api_runs_all_three_evaluations(tiny_model, bench_data, tmp_path):
    from dataclasses import replace

    from maskbench.experiments import QUICK_SIZES, paper_report

    data = replace(bench_data, labels=None)  # target = own prediction: all clean-correct
    sizes = replace(QUICK_SIZES, lime_samples=16, bootstrap_reps=50)
    report = paper_report(tiny_model, data, ["black", "grey"], tmp_path, sizes=sizes)
    assert {e["evaluation"] for e in report["entries"]} == {
        "segment_removal",
        "shape_leakage",
        "lime",
    }
    assert report["notes"] == []
    assert report["meta"]["bootstrap"]["level"] == 0.95
    text = (tmp_path / "report.md").read_text()
    assert "No labels were given" in text and "## Shape leakage" in text


def test_paper_quick_with_the_shipped_benchmark_model(tmp_path, capsys):
    """The documented default: shipped model, benchmark test split, all paper strategies."""
    if "shapes_resnet" not in mb.shipped_models():
        pytest.skip("the shipped benchmark model shapes_resnet is not installed")
    missing = [s for s in PAPER_STRATEGIES if s not in mb.list_strategies()]
    if missing:
        pytest.skip(f"paper strategies not registered yet: {missing}")
    code = main(["run", "paper", "--quick", "--no-progress", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    verdicts = {f["verdict"] for f in report["findings"]}
    assert verdicts <= {"reproduced", "not reproduced", "contradicted"}
    assert len(report["findings"]) == 6


def test_thread_choice():
    from maskbench.experiments.cli import choose_threads

    assert choose_threads(None, (96, 96)) == 1
    assert choose_threads(None, (224, 224)) is None
    assert choose_threads(3, (96, 96)) == 3
    with pytest.raises(ValueError, match="threads"):
        choose_threads(0, (96, 96))
