"""The README stays true: its commands are CI's, and its Python examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

import maskbench as mb
from maskbench import invariants as inv

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = code_blocks("bash")[:2]
    assert install.strip() in ci
    assert test.strip() in ci
    assert "pip install -e" in install and "venv" in install
    assert "pytest" in test


def test_library_example_runs(capsys):
    example = code_blocks("python")[0]
    exec(compile(example, "README.md:library-example", "exec"), {})
    out = capsys.readouterr().out
    assert "layer_masking_crop" in out and "content_independence FAILS" in out


def test_plugin_example_strategy_is_honest(tmp_path, monkeypatch):
    source = code_blocks("python")[1]
    package = tmp_path / "my_fills"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fills.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        strategy = mb.get_strategy("my_fills.fills:MedianFill")
        model = mb.load_model("resnet18", weights="random")
        images = mb.sample_images(2, 64)
        masks = mb.random_removal_masks(mb.patch_grid((64, 64), 16), 0.5, 2, seed=3)
        filled = strategy.fill(images, masks)
        kept = masks.expand_as(images)
        assert torch.equal(filled[kept], images[kept])
        expected = images[0][:, masks[0, 0]].median(dim=1).values
        assert torch.equal(filled[0, :, ~masks[0, 0]][:, 0], expected)
        for result in (
            inv.check_identity(strategy, model, images),
            inv.check_content_independence(strategy, model, images, masks),
            inv.check_batch_consistency(strategy, model, images, masks),
            inv.check_finite(strategy, model, images, torch.zeros(64, 64)),
        ):
            assert result.passed, result.message
    finally:
        sys.modules.pop("my_fills.fills", None)
        sys.modules.pop("my_fills", None)


def test_ci_stops_at_the_first_failing_step(tmp_path):
    """Run .ci/run with its commands stubbed: a failing lint must fail CI."""
    script = (ROOT / ".ci" / "run").read_text()
    fake = tmp_path / "repo"
    (fake / ".ci").mkdir(parents=True)
    bin_dir = fake / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "log"
    for name, status in [("python", 0), ("ruff", 1)]:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit {status}\n')
        stub.chmod(0o755)
    python3 = tmp_path / "python3"  # `python3 -m venv .venv` must not replace the stubs
    python3.write_text(f'#!/bin/sh\necho "python3 $*" >> {log}\n')
    python3.chmod(0o755)
    (fake / ".ci" / "run").write_text(script)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(["bash", str(fake / ".ci" / "run")], env=env, capture_output=True)
    calls = log.read_text().splitlines()
    assert result.returncode != 0
    assert calls[-1].startswith("ruff check"), calls  # stopped there: pytest never ran
    assert not any("pytest" in call for call in calls)
