"""Engine tests: helper modules importable; one torch thread while they run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# engine_helpers.py and reference_resnet.py live next to the tests
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Run engine tests with one intra-op thread, restoring the setting afterwards.

    These tests run many small forwards; with OpenMP on a loaded 2-core machine two
    threads can be ten times slower than one (threads spin at every barrier).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
