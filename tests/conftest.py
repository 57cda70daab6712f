"""Shared fixtures and settings for maskbench's own tests."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One torch thread per xdist worker: two workers on two cores must not fight.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

settings.register_profile(
    "maskbench",
    deadline=None,  # model calls have no meaningful deadline
    derandomize=bool(os.environ.get("CI")),  # CI draws the same examples every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile("maskbench")


@pytest.fixture(scope="session")
def resnet18():
    """timm resnet18 with seeded random weights, pixel-space input, eval mode."""
    import maskbench as mb

    return mb.load_model("resnet18", weights="random", seed=0)


@pytest.fixture(scope="session")
def photos():
    """Four real photographs at 64 x 64."""
    import maskbench as mb

    return mb.sample_images(4, 64)
