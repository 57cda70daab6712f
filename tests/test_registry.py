"""Strategy registry: names, import paths, entry points, errors."""

from __future__ import annotations

import textwrap

import pytest
import torch

import maskbench as mb
from maskbench.strategies import ENTRY_POINT_GROUP, unregister_strategy

INPUT_SPACE = ["black", "blur", "grey", "image_mean", "inpaint_linear", "inpaint_neighbor", "noise"]


def test_builtin_input_space_strategies_are_listed_sorted():
    names = mb.list_strategies()
    assert names == sorted(names)
    assert set(INPUT_SPACE) <= set(names)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(mb.UnknownStrategyError) as info:
        mb.get_strategy("gray")
    message = str(info.value)
    assert "unknown strategy 'gray'" in message
    for name in INPUT_SPACE:
        assert name in message


def test_get_strategy_passes_options():
    assert mb.get_strategy("blur", sigma=3.0).sigma == 3.0
    assert mb.get_strategy("noise", seed=9).seed == 9
    with pytest.raises(TypeError):
        mb.get_strategy("black", sigma=3.0)


def test_import_path_to_class_instance_and_factory():
    strategy = mb.get_strategy("maskbench.strategies.constant:Grey", colour=(0.5, 0.5, 0.5))
    assert strategy.colour == (0.5, 0.5, 0.5)
    with pytest.raises(mb.UnknownStrategyError, match="cannot import"):
        mb.get_strategy("no_such_package.mod:Thing")
    with pytest.raises(mb.UnknownStrategyError, match="has no attribute"):
        mb.get_strategy("maskbench.strategies.constant:Nope")
    with pytest.raises(mb.UnknownStrategyError, match="expected a Strategy"):
        mb.get_strategy("maskbench.models:IMAGENET_MEAN")
    with pytest.raises(mb.UnknownStrategyError, match="not a maskbench Strategy"):
        mb.get_strategy("maskbench.models:resolve_device", device="cpu")


def test_register_strategy_decorator_and_duplicates():
    @mb.register_strategy("test_white")
    class White(mb.InputSpaceStrategy):
        """Fill white."""

        claims = frozenset({mb.Claim.IDENTITY})

        def compute_fill(self, images, keep):
            return torch.where(keep, images, 1.0)

    try:
        assert "test_white" in mb.list_strategies()
        strategy = mb.get_strategy("test_white")
        assert strategy.name == "test_white"
        filled = strategy.fill(torch.zeros(1, 3, 2, 2), torch.tensor([[1, 0], [0, 1]]))
        assert filled[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(ValueError, match="already registered"):
            mb.register_strategy("test_white")(type("Other", (White,), {}))
        mb.register_strategy("test_white", overwrite=True)(type("Other", (White,), {}))
    finally:
        unregister_strategy("test_white")
    assert "test_white" not in mb.list_strategies()
    with pytest.raises(TypeError, match="Strategy subclasses"):
        mb.register_strategy("bad")(object)
    with pytest.raises(ValueError, match="without ':'"):
        mb.register_strategy("a:b")


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A tiny installed distribution that registers a strategy by entry point."""
    package = tmp_path / "dummy_maskbench_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            import torch
            import maskbench as mb

            class Checker(mb.InputSpaceStrategy):
                claims = frozenset({mb.Claim.IDENTITY, mb.Claim.CONTENT_INDEPENDENCE})

                def compute_fill(self, images, keep):
                    return torch.where(keep, images, 0.25)

            def broken():
                raise RuntimeError("boom")
            """
        )
    )
    dist = tmp_path / "dummy_maskbench_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dummy-maskbench-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "dummy_checker = dummy_maskbench_plugin:Checker\n"
        "dummy_broken = dummy_maskbench_plugin.missing:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_strategies_are_listed_and_loadable(installed_plugin):
    names = mb.list_strategies()
    assert "dummy_checker" in names and "dummy_broken" in names
    strategy = mb.get_strategy("dummy_checker")
    assert strategy.name == "dummy_checker"
    assert "content_independence" in strategy.claims
    filled = strategy.fill(torch.ones(1, 3, 2, 2), torch.zeros(2, 2))
    assert bool((filled == 0.25).all())
    with pytest.raises(mb.UnknownStrategyError, match="loading it failed"):
        mb.get_strategy("dummy_broken")


def test_claims_compare_with_strings():
    assert "identity" in mb.get_strategy("black").claims
    assert "content_independence" not in mb.get_strategy("blur").claims
    assert str(mb.Claim.FINITE) == "finite"
