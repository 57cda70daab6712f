"""Tests of the shipped shapes network (maskbench/benchmark/weights/shapes_resnet.*)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from maskbench.benchmark import (
    SHAPE_CLASSES,
    WEIGHTS_DIR,
    generate_shapes,
    load_shapes_metadata,
    load_shapes_network,
)

NAME = "shapes_resnet"
WEIGHTS = WEIGHTS_DIR / f"{NAME}.safetensors"
META = WEIGHTS_DIR / f"{NAME}.json"
REQUIRED_KEYS = {
    "timm_name",
    "timm_kwargs",
    "num_classes",
    "classes",
    "mean",
    "std",
    "image_size",
    "heldout_accuracy",
    "heldout_n",
    "heldout_seed",
    "train_n",
    "epochs",
    "seed",
    "train_seconds",
    "torch_version",
    "timm_version",
    "dtype",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Evaluate single-threaded (much faster on a shared 2-core machine); restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def meta() -> dict:
    """The shipped JSON metadata."""
    return json.loads(META.read_text())


@pytest.fixture(scope="module")
def network(meta: dict) -> nn.Module:
    """The network re-created the way maskbench loads it: timm.create_model + strict load."""
    model = timm.create_model(meta["timm_name"], **meta["timm_kwargs"])
    state = safetensors.torch.load_file(str(WEIGHTS))
    reference = model.state_dict()
    assert set(state) == set(reference)
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, meta: dict, images: torch.Tensor, labels: torch.Tensor) -> float:
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    correct = 0
    for i in range(0, len(labels), 250):
        logits = model((images[i : i + 250] - mean) / std)
        correct += int((logits.argmax(dim=1) == labels[i : i + 250]).sum())
    return correct / len(labels)


def test_metadata_is_complete(meta: dict) -> None:
    assert not REQUIRED_KEYS - set(meta), REQUIRED_KEYS - set(meta)
    assert tuple(meta["classes"]) == SHAPE_CLASSES
    assert meta["num_classes"] == len(SHAPE_CLASSES) == meta["timm_kwargs"]["num_classes"]
    assert meta["image_size"] % 32 == 0
    assert len(meta["mean"]) == len(meta["std"]) == 3
    assert load_shapes_metadata(NAME) == meta


def test_weights_file_is_small_and_in_the_recorded_dtype(meta: dict) -> None:
    assert WEIGHTS.stat().st_size <= 4 * 2**20
    state = safetensors.torch.load_file(str(WEIGHTS))
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    assert dtypes == {getattr(torch, meta["dtype"])}


def test_architecture_is_a_plain_stride_32_resnet(network: nn.Module, meta: dict) -> None:
    convs = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.kernel_size in ((3, 3), (1, 1)) for m in convs)
    assert all(m.groups == 1 and m.dilation == (1, 1) for m in convs)
    assert any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    size = meta["image_size"]
    features = network.forward_features(torch.zeros(1, 3, size, size))
    assert features.shape[-2:] == (size // 32, size // 32)


def test_heldout_accuracy_reproduces(network: nn.Module, meta: dict) -> None:
    """Re-evaluate on the recorded held-out set: the same images and the same weights.

    Only float rounding (another BLAS, another thread count) can flip a prediction, and
    only on a near-tie; we allow 0.5% of the images to flip.
    """
    heldout = generate_shapes(
        meta["heldout_n"], size=meta["image_size"], seed=meta["heldout_seed"], split="test"
    )
    acc = _accuracy(network, meta, heldout.images, heldout.labels)
    assert abs(acc - meta["heldout_accuracy"]) <= 0.005, (acc, meta["heldout_accuracy"])
    assert meta["heldout_accuracy"] >= 0.90


def test_accuracy_holds_on_a_fresh_test_seed(network: nn.Module, meta: dict) -> None:
    """On 450 new test images (another seed) accuracy matches the recorded one.

    Both are binomial estimates of the same accuracy p, so their difference has standard
    deviation sqrt(p (1 - p) (1/450 + 1/heldout_n)); we fail below the recorded value
    minus 3.5 of those (one-sided false-alarm rate about 2e-4).
    """
    seed = meta["heldout_seed"] + 1
    fresh = generate_shapes(
        50 * len(SHAPE_CLASSES), size=meta["image_size"], seed=seed, split="test"
    )
    acc = _accuracy(network, meta, fresh.images, fresh.labels)
    p, n = meta["heldout_accuracy"], len(fresh)
    sigma = math.sqrt(max(p * (1 - p), 0.01 * 0.99) * (1 / n + 1 / meta["heldout_n"]))
    assert acc >= p - 3.5 * sigma, (acc, p, sigma)


def test_load_shapes_network(meta: dict) -> None:
    model, loaded_meta = load_shapes_network(NAME)
    assert loaded_meta == meta
    assert not model.training
    size = meta["image_size"]
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, len(SHAPE_CLASSES))
