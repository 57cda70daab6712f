"""The benchmark's machinery (functional checks only: no timing assertions)."""

from __future__ import annotations

import json

import torch

from maskbench.bench.memory import peak_memory_bytes
from maskbench.bench.run import BOX_CASE, run_benchmark
from maskbench.bench.targets import target_for
from maskbench.bench.timing import time_round_robin
from maskbench.cli import main


def test_round_robin_runs_every_call_interleaved():
    order = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}
    samples = time_round_robin(calls, device=torch.device("cpu"), warmup=1, repeats=3)
    assert order == ["a", "b", "c"] * 4  # one warm-up + three repetitions, interleaved
    assert all(len(v) == 3 and all(t >= 0 for t in v) for v in samples.values())


def test_peak_memory_counts_a_known_allocation():
    size = 4_000_000  # float32 elements: 16 MB

    def allocate_and_drop():
        tensor = torch.ones(size)
        return float(tensor[0])

    peak = peak_memory_bytes(allocate_and_drop, torch.device("cpu"))
    assert 4 * size <= peak < 3 * 4 * size


def test_targets_follow_the_issue():
    assert target_for("layer_masking", "cpu") == 1.5
    assert target_for("layer_masking", "cuda") == 1.3
    assert target_for(BOX_CASE, "cpu") == 0.4
    assert target_for("blur", "cpu") is None


def test_run_benchmark_reports_every_case_against_plain():
    result = run_benchmark(
        "resnet18",
        strategies=["black", "blur"],
        batch=2,
        size=32,
        warmup=0,
        repeats=2,
        measure_memory=False,
    )
    cases = {row.case: row for row in result.cases}
    assert list(cases) == ["plain", "black", "blur"]
    assert cases["plain"].ratio == 1.0
    for row in result.cases:
        assert abs(row.ratio - row.median_seconds / cases["plain"].median_seconds) < 1e-12
        assert len(row.samples) == 2
    assert cases["black"].target == 1.05 and cases["black"].met == (cases["black"].ratio <= 1.05)
    assert cases["blur"].target is None and cases["blur"].met is None
    table = result.to_markdown()
    assert "| black |" in table and "ratio to plain" in table
    assert json.loads(result.to_json())["config"]["model"] == "resnet18"


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    code = main(
        [
            "bench",
            "--out",
            str(tmp_path),
            "--model",
            "resnet18",
            "--batch",
            "2",
            "--size",
            "32",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--strategies",
            "grey",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [c["case"] for c in data["cases"]] == ["plain", "grey"]
    assert data["cases"][1]["peak_memory_mb"] is not None
    assert "| grey |" in (tmp_path / "bench.md").read_text()
    assert "| grey |" in capsys.readouterr().out
