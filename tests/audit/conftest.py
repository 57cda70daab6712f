"""Fixtures for the audit plugin's tests: pytester and a tiny CNN project."""

from __future__ import annotations

import contextlib
import importlib
import textwrap

import pytest

# ``pytester`` is enabled by ``pytest_plugins`` in test_plugin.py: pytest refuses
# ``pytest_plugins`` in a conftest below the rootdir (this one is not loaded at start-up
# when the whole suite runs), but accepts it in a test module.

#: A tiny CNN with total stride 32 (so 64 px images hold 2 x 2 stride cells).
TINY_MODELS = textwrap.dedent(
    '''
    """Tiny models for audit tests (a user's own CNN, as far as maskbench knows)."""
    import torch
    from torch import nn


    def tiny():
        torch.manual_seed(0)
        layers = []
        channels = 3
        for out in (8, 8, 8, 8, 16):
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
        return nn.Sequential(*layers)


    def not_a_model():
        return "nope"
    '''
)

#: Strategies for audit tests: a blur that lies about leaking, and one that crashes.
TEST_STRATEGIES = textwrap.dedent(
    '''
    """Strategies whose claims are wrong on purpose."""
    import os
    from pathlib import Path

    import maskbench as mb
    from maskbench.strategies.blur import Blur


    class LyingBlur(Blur):
        """A blur that says it does not leak removed pixels (it does)."""

        claims = Blur.claims | {mb.Claim.CONTENT_INDEPENDENCE}


    class CrashOnce(mb.InputSpaceStrategy):
        """Black fill, but the first call in the whole run kills its process."""

        claims = frozenset({mb.Claim.IDENTITY, mb.Claim.FINITE})

        def compute_fill(self, images, keep):
            marker = Path(os.environ["CRASH_MARKER"])
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                pass
            else:
                os._exit(3)
            return images * keep
    '''
)


@pytest.fixture(scope="session")
def preloaded() -> None:
    """Import here, once, what an audit imports.

    In-process pytester runs unload the modules first imported during a run; importing
    torch's compiled extensions (pulled in by torchvision) a second time fails. Modules
    already loaded in this process are kept, so load them once up front.
    """
    import skimage.data  # noqa: F401  (sample_images)
    import timm
    import torchvision.transforms.v2  # noqa: F401

    import maskbench

    maskbench.list_strategies()
    timm.list_models("resnet*")
    for name in ("maskbench.audit.plugin", "maskbench.engine", "PIL.Image"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


@pytest.fixture
def audit_project(preloaded: None, pytester: pytest.Pytester) -> pytest.Pytester:
    """A project directory (not the checkout) with a tiny CNN and test strategies."""
    pytester.makepyfile(tinymodels=TINY_MODELS, teststrategies=TEST_STRATEGIES)
    pytester.syspathinsert()
    return pytester
