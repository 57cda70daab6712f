"""The benchmark's machinery (functional checks only: no timing assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy
import torch

from maskbench.bench import road as road_bench
from maskbench.bench.memory import peak_memory_bytes
from maskbench.bench.road import (
    ROAD_MAX_ERROR,
    ROAD_TARGETS,
    road_cases,
    road_markdown,
    run_road_benchmark,
)
from maskbench.bench.run import BOX_CASE, run_benchmark
from maskbench.bench.targets import target_for
from maskbench.bench.timing import time_round_robin
from maskbench.cli import main
from maskbench.engine import graphs
from maskbench.errors import DeviceError


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


def test_graph_cases_have_their_strategys_target():
    assert target_for("layer_masking+graphs", "cuda") == 1.3
    assert target_for(BOX_CASE + "+graphs", "cuda") == 0.4


def test_cuda_graph_rows_need_a_device_that_captures():
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        run_benchmark("resnet18", strategies=["black"], cuda_graphs=True, batch=1, size=32)


def test_cuda_graph_rows_time_the_engine_strategies_beside_the_rest(monkeypatch):
    # graph capture on the CPU by OpTape (as tests/engine/test_engine_graphs.py does)
    monkeypatch.setattr(graphs, "_capture_backend", lambda device: graphs.tape_capture)
    cleared = []
    monkeypatch.setattr(graphs, "clear", lambda network=None: cleared.append("memory"))
    result = run_benchmark(
        "resnet18",
        strategies=["black", "layer_masking", "layer_masking_crop"],
        batch=2,
        size=64,
        warmup=1,
        repeats=1,
        measure_memory=True,
        cuda_graphs=True,
    )
    cases = [row.case for row in result.cases]
    assert cases == [
        "plain",
        "black",
        "layer_masking",
        "layer_masking_crop",
        BOX_CASE,
        "layer_masking+graphs",
        "layer_masking_crop+graphs",
        BOX_CASE + "+graphs",
    ]
    assert result.config["cuda_graphs"] is True
    # a replay allocates little: each graph row's memory is measured on a first call,
    # after the graphs were cleared, so that it includes the capture
    assert cleared == ["memory"] * 3
    assert "Rows `NAME+graphs` replay" in result.to_markdown()


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
    # The ROAD section runs by default, on the same image size.
    assert [row["case"] for row in data["road"]][1] == "random pixels, 50% removed"
    assert data["road_config"]["size"] == 32


def test_road_cases_remove_what_they_say():
    images, cases = road_cases(batch=3, size=64, seed=0)
    assert images.shape == (3, 3, 64, 64) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    patches, pixels, hole = cases.values()
    assert all(abs((~keep).mean() - 0.5) < 1e-9 for keep in pixels)
    assert all(abs((~keep).mean() - 0.5) < 1e-9 for keep in patches)
    # patches: constant on every 16 x 16 cell, and a different half per image
    cells = patches.reshape(3, 4, 16, 4, 16)
    assert (cells == cells[:, :, :1, :, :1]).all()
    assert not (patches[0] == patches[1]).all()
    assert (~hole[0]).sum() == 32 * 32 and not hole[0, 16:48, 16:48].any()


def test_road_benchmark_reports_speedups_and_the_error_against_scipy():
    rows = run_road_benchmark(batch=2, size=32, repeats=2, scipy_images=2)
    assert [row.case for row in rows] == [
        "16x16 patches, 50% removed",
        "random pixels, 50% removed",
        "central 16x16 hole",
    ]
    for row in rows:
        ratio = row.scipy_seconds_per_image / row.ours_seconds_per_image
        assert abs(row.speedup - ratio) <= 1e-9 * ratio
        assert row.max_abs_error_vs_scipy <= ROAD_MAX_ERROR
        assert row.target == ROAD_TARGETS[0]
        assert row.met == (row.speedup >= row.target)
    table = road_markdown(rows, {"batch": 2, "size": 32, "repeats": 2})
    assert "| random pixels, 50% removed |" in table and "32x32 RGB" in table


def test_cli_road_only_needs_no_model(tmp_path, monkeypatch, capsys):
    # Both modules are imported before patching: importing bench.cli while run.py is
    # patched would bind the stub into it for good (monkeypatch would "restore" the stub).
    import maskbench.bench.cli as bench_cli
    import maskbench.bench.run as bench_run

    def no_model(*args, **kwargs):
        raise AssertionError("--road-only must not time the strategies")

    monkeypatch.setattr(bench_run, "run_benchmark", no_model)
    monkeypatch.setattr(bench_cli, "run_benchmark", no_model)
    args = ["bench", "--out", str(tmp_path), "--road-only", "--size", "32", "--batch", "2"]
    assert main([*args, "--repeats", "1", "--scipy-images", "1"]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["cases"] == [] and len(data["road"]) == 3
    road_config = data["road_config"]  # what the comparison ran on, even without a model
    assert road_config["scipy"] == scipy.__version__ and road_config["torch"] == torch.__version__
    assert road_config["threads"] == torch.get_num_threads() and road_config["date"]
    markdown = (tmp_path / "bench.md").read_text()
    assert "ROAD imputation" in markdown and f"SciPy {scipy.__version__}" in markdown


def test_cli_unknown_strategy_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["bench", "--out", str(tmp_path), "--strategies", "nope", "--no-road"])
    assert code == 2
    err = capsys.readouterr().err
    assert "maskbench bench: error: unknown strategy 'nope'" in err and "Known strategies" in err
    assert "Traceback" not in err and not (tmp_path / "bench.json").exists()


def test_road_benchmark_waits_on_its_own_device(monkeypatch):
    # torch.cuda.synchronize() without a device waits on the current GPU only, so a
    # run on cuda:1 would have timed launches, not work.
    seen = []
    monkeypatch.setattr(road_bench, "synchronize", seen.append)
    run_road_benchmark(batch=1, size=16, repeats=1, scipy_images=1, device=torch.device("cpu"))
    assert seen and all(device == torch.device("cpu") for device in seen)
