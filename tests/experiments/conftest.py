"""Fixtures for the experiment tests: a tiny model and a few benchmark images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The CLI tests load the tiny model by import path ("mbexp_models:tiny_resnet").
HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

#: Input-space strategies that every installation has; the tests use these.
FAST_STRATEGIES = ("black", "grey", "blur")


@pytest.fixture(scope="session")
def tiny_model():
    """A narrow random timm ResNet with 9 classes (the benchmark's), 64 px input."""
    from mbexp_models import tiny_resnet

    return tiny_resnet()


@pytest.fixture(scope="session")
def bench_data():
    """Twelve 64 px images of the shapes benchmark, with exact masks and labels."""
    from maskbench.experiments import load_benchmark

    return load_benchmark(12, size=64)
