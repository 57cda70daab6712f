"""The pytest plugin end to end, with pytester, on a tiny CNN (a user's factory) at 64 px.

Every run happens in a pytester directory, i.e. a project that is not the checkout and
finds the plugin through the installed ``pytest11`` entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskbench.audit.scorecard import comparable
from maskbench.strategies.claims import ALL_CLAIMS

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
TINY = ("--model", "tinymodels:tiny", "--image-size", "64")
CLAIMS = [c.value for c in ALL_CLAIMS]


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_help_documents_every_option(pytester):
    result = pytester.runpytest("--help")
    for option in (
        "--model=NAME",
        "--strategy=NAME",
        "--weights=auto|random|pretrained|PATH",
        "--device=auto|cpu|cuda|cuda:N",
        "--image-size=N",
        "--batch-size=N",
        "--images=DIR",
        "--audit-examples=N",
        "--maskbench-report=PATH",
        "--maskbench-baseline=PATH",
    ):
        assert option in result.stdout.str(), option


def test_without_model_the_project_runs_its_own_tests_and_no_audit(audit_project):
    audit_project.makepyfile(test_mine="def test_ok():\n    pass\n")
    audit_project.runpytest().assert_outcomes(passed=1)
    result = audit_project.runpytest("--pyargs", "maskbench.audit")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_with_model_only_the_audit_is_collected(audit_project):
    audit_project.makepyfile(test_mine="def test_ok():\n    pass\n")
    result = audit_project.runpytest(*TINY, "--strategy", "black", "--collect-only", "-q")
    assert result.ret == 0
    ids = [line for line in result.stdout.lines if "::test_audit[" in line]
    assert [line.split("[", 1)[1][:-1] for line in ids] == [
        f"tinymodels:tiny-black-{claim}" for claim in CLAIMS
    ]
    assert "test_mine" not in result.stdout.str()
    explicit = audit_project.runpytest(
        "--pyargs", "maskbench.audit", *TINY, "--strategy", "black", "--co", "-q"
    )
    assert len([line for line in explicit.stdout.lines if "::test_audit[" in line]) == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--strategy", "nonsense"), "Known strategies: black, blur"),
        (("--model", "resnett18"), "Did you mean: resnet18"),
        (("--model", "tinymodels:nothing"), "has no attribute 'nothing'"),
        (("--model", "nomodule_xyz:f"), "cannot import 'nomodule_xyz'"),
        (("--model", "zzz*"), "matches no timm or shipped model"),
        (("--batch-size", "1"), "--batch-size 1: must be at least 2"),
        (("--device", "gpu"), "expected auto, cpu, cuda or cuda:N"),
        (("--weights", "nowhere.pt"), "expected auto, random, pretrained or a checkpoint"),
        (("--images", "no_such_dir"), "no such directory"),
        (("--maskbench-baseline", "missing.json"), "does not exist"),
        (("--audit-threads", "-1"), "--audit-threads -1: must be >= 0"),
    ],
)
def test_bad_values_are_usage_errors_that_say_what_to_do(audit_project, args, message):
    result = audit_project.runpytest(*TINY, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_audit_options_without_model_are_refused(audit_project):
    result = audit_project.runpytest("--strategy", "black")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "runs only with --model" in result.stderr.str()


def test_patterns_are_expanded_capped_and_announced(audit_project):
    result = audit_project.runpytest("--model", "resnet*", "--strategy", "black", "--co")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--model 'resnet*' matches * models; auditing 8: *"])
    assert len([line for line in result.stdout.lines if "<Function test_audit[" in line]) == 8 * 8


def test_serial_audit_writes_one_row_per_strategy_with_every_claim(audit_project):
    result = audit_project.runpytest(
        *TINY,
        "--strategy",
        "black,blur",
        "--strategy",
        "grey",
        "--audit-examples",
        "1",
        "--maskbench-report",
        "out.json",
    )
    result.assert_outcomes(passed=3 * 8)
    card = read(audit_project.path / "out.json")
    results = card["results"]["tinymodels:tiny"]
    assert sorted(results) == ["black", "blur", "grey"]
    for entry in results.values():
        assert list(entry["claims"]) == CLAIMS
        for claim in entry["claims"].values():
            assert claim["status"] in ("pass", "not_claimed")
            assert claim["value"] is not None
        assert {"crop_gap", "translation_gap", "content_sensitivity", "drift_curve"} <= set(
            entry["figures"]
        )
    assert results["blur"]["claims"]["content_independence"]["status"] == "not_claimed"
    assert results["blur"]["figures"]["content_sensitivity"]["value"] > 1e-3
    model = card["models"]["tinymodels:tiny"]
    assert model["weights"] == "user" and "ImageNet mean/std" in model["note"]
    assert card["settings"]["image_size"] == 64 and card["versions"]["torch"]
    markdown = (audit_project.path / "out.md").read_text()
    rows = [
        line for line in markdown.splitlines() if line.startswith(("| black", "| blur", "| grey"))
    ]
    assert len(rows) == 3
    result.stdout.fnmatch_lines(
        ["*maskbench audit*", "strategy*identity*", "black*pass 0*", "*scorecard written to*"]
    )


def test_a_strategy_that_lies_about_leaking_fails_with_a_readable_example(
    audit_project, monkeypatch
):
    monkeypatch.delenv("CI", raising=False)  # CI derandomizes and keeps no database
    args = (*TINY, "--strategy", "teststrategies:LyingBlur", "--maskbench-report", "out.json")
    result = audit_project.runpytest(*args, "-k", "content_independence")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*strategy 'teststrategies:LyingBlur' claims 'content_independence' but breaks it"
            " on model 'tinymodels:tiny'.",
            "*example: image ind* mask keep_rect (top, left, h, w)=* seed *",
            "*content_independence FAILS: removed pixels * relative gap * (tolerance 0);"
            " largest difference at sample *",
        ]
    )
    card = read(audit_project.path / "out.json")
    claim = card["results"]["tinymodels:tiny"]["teststrategies:LyingBlur"]["claims"]
    assert claim["content_independence"]["status"] == "fail"
    assert claim["content_independence"]["example"].startswith("image ind")
    database = audit_project.path / ".pytest_cache" / "d" / "maskbench_hypothesis"
    assert any(database.rglob("*")), "the shrunk failure is kept for the next run"


def test_baseline_gate_passes_unchanged_and_fails_on_regressions(audit_project):
    args = (*TINY, "--strategy", "black,grey", "--audit-examples", "0")
    assert audit_project.runpytest(*args, "--maskbench-report", "base.json").ret == 0
    same = audit_project.runpytest(*args, "--maskbench-baseline", "base.json")
    assert same.ret == 0
    same.stdout.fnmatch_lines(["*maskbench baseline gate: passed*"])

    baseline = read(audit_project.path / "base.json")
    grey = baseline["results"]["tinymodels:tiny"]["grey"]
    crop = grey["figures"]["crop_gap"]
    crop["value"], crop["tolerance"] = crop["value"] / 10, crop["value"] / 100
    grey["claims"]["translation_invariance"]["status"] = "pass"  # pretend grey held it
    (audit_project.path / "old.json").write_text(json.dumps(baseline))
    worse = audit_project.runpytest(*args, "--maskbench-baseline", "old.json")
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(
        [
            "*maskbench baseline gate: FAILED*",
            "*2 regression(s) against old.json:",
            "*tinymodels:tiny/grey: claim 'translation_invariance' held in the baseline but is"
            " now not_claimed*",
            "*tinymodels:tiny/grey: figure 'crop_gap' regressed: * -> *",
        ]
    )


def run_subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=240)


def test_parallel_run_gives_the_same_scorecard_as_a_serial_run(audit_project):
    args = (*TINY, "--strategy", "black,noise", "--audit-examples", "1")
    serial = run_subprocess(audit_project, *args, "--maskbench-report", "serial.json")
    parallel = run_subprocess(audit_project, *args, "-n", "2", "--maskbench-report", "par.json")
    assert serial.ret == 0 and parallel.ret == 0, parallel.stdout.str()
    one = read(audit_project.path / "serial.json")
    two = read(audit_project.path / "par.json")
    assert comparable(one) == comparable(two)
    assert set(two["run"]["workers"]) == {"gw0", "gw1"}
    for info in two["run"]["workers"].values():
        assert info["torch_threads"] == 1
        assert info["models_built"] == ["tinymodels:tiny"]  # once per worker, not per test
    assert list(one["run"]["workers"]) == ["main"]
    assert one["run"]["workers"]["main"]["torch_threads"] == 1  # serial runs too


def test_a_crashing_worker_becomes_an_error_and_the_rest_survives(audit_project, monkeypatch):
    monkeypatch.setenv("CRASH_MARKER", str(audit_project.path / "crashed"))
    args = (*TINY, "--strategy", "teststrategies:CrashOnce,black", "--audit-examples", "1")
    result = run_subprocess(audit_project, *args, "-n", "2", "--maskbench-report", "out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    card = read(audit_project.path / "out.json")
    records = [
        (strategy, claim, entry)
        for strategy, data in card["results"]["tinymodels:tiny"].items()
        for claim, entry in data["claims"].items()
    ]
    assert len(records) == 16
    errors = [r for r in records if r[2]["status"] == "error"]
    assert len(errors) == 1
    assert "worker crashed" in errors[0][2]["message"] or "crashed" in errors[0][2]["message"]
    assert all(r[2]["status"] in ("pass", "not_claimed") for r in records if r not in errors)
    assert any("crashed" in info for info in card["run"]["workers"].values())


@pytest.mark.parametrize("autoload", [True, False])
def test_in_the_checkout_model_collects_only_the_audit(audit_project, autoload):
    """Entry point and root conftest.py do not register the plugin twice."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(audit_project.path), env.get("PYTHONPATH", "")])
    env.pop("PYTEST_ADDOPTS", None)
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q"]
    command += [*TINY, "--strategy", "black"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    items = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(items) == 8
    assert all(line.startswith("maskbench/audit/test_audit.py::test_audit[") for line in items)
