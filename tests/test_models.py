"""load_model / wrap_model / sample_images: weights modes, normalisation, errors."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from safetensors.torch import save_file

import maskbench as mb
from maskbench.models import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel, resolve_device


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_weights_are_seeded_and_reproducible():
    a = mb.load_model("resnet18", weights="random", seed=0)
    b = mb.load_model("resnet18", weights="random", seed=0)
    c = mb.load_model("resnet18", weights="random", seed=1)
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert a.weights == "random" and "seed=0" in a.weights_source


def test_loading_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    mb.load_model("resnet18", weights="random", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_model_normalises_pixel_space_input_and_is_in_eval_mode(resnet18):
    assert isinstance(resnet18, NormalizedModel)
    assert not resnet18.training and not resnet18.network.training
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(resnet18(x), resnet18.network((x - mean) / std), atol=1e-6)
    assert resnet18.mean_colour == pytest.approx(IMAGENET_MEAN)


def test_pretrained_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(mb.WeightsUnavailableError, match="not in the local cache"):
        mb.load_model("resnet18", weights="pretrained")
    assert time.monotonic() - started < 10


def test_auto_offline_falls_back_to_random_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, logger="maskbench"):
        model = mb.load_model("resnet18", weights="auto", seed=3)
    assert model.weights == "random"
    assert "hub unreachable" in model.weights_source
    assert any("random weights" in r.getMessage() for r in caplog.records)
    assert same_weights(model, mb.load_model("resnet18", weights="random", seed=3))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_round_trip(tmp_path, suffix):
    source = mb.load_model("resnet18", weights="random", seed=7)
    path = tmp_path / f"ckpt{suffix}"
    state = {k: v.contiguous() for k, v in source.network.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = mb.load_model("resnet18", weights=str(path), seed=0)
    assert loaded.weights == "checkpoint" and loaded.weights_source == str(path)
    assert same_weights(loaded, source)


def test_checkpoint_of_a_wrapped_model_and_nested_state_dict(tmp_path):
    source = mb.load_model("resnet18", weights="random", seed=7)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "wrapped.pth")
    loaded = mb.load_model("resnet18", weights=tmp_path / "wrapped.pth")
    assert same_weights(loaded, source)


def test_bad_checkpoints_are_refused_specifically(tmp_path):
    with pytest.raises(mb.WeightsUnavailableError, match="not found"):
        mb.load_model("resnet18", weights=str(tmp_path / "missing.pt"))
    other = mb.load_model("resnet34", weights="random")
    torch.save(other.network.state_dict(), tmp_path / "r34.pt")
    with pytest.raises(mb.WeightsUnavailableError, match="unexpected keys"):
        mb.load_model("resnet18", weights=tmp_path / "r34.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(mb.WeightsUnavailableError, match="could not read"):
        mb.load_model("resnet18", weights=tmp_path / "junk.pt")


def test_pickled_code_is_not_executed_when_loading(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(mb.WeightsUnavailableError, match="could not read"):
        mb.load_model("resnet18", weights=tmp_path / "evil.pt")


def test_unknown_model_lists_similar_names():
    with pytest.raises(mb.UnknownModelError, match="resnet50") as info:
        mb.load_model("resnet5O", weights="random")  # letter O
    assert "not a timm model" in str(info.value)


def test_timm_kwargs_pass_through():
    model = mb.load_model("resnet50", weights="random", output_stride=16)
    assert model.network.layer4[1].conv2.dilation == (2, 2)
    assert model.network.layer4[0].conv2.stride == (1, 1)


def test_wrap_model_for_a_users_cnn():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    net.train()
    model = mb.wrap_model(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny")
    assert not model.training and not net.training
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - 0.5) / 0.25))
    assert model.name == "tiny" and model.weights == "user"
    assert mb.wrap_model(model) is model
    with pytest.raises(ValueError, match="std must be positive"):
        mb.wrap_model(net, std=(0, 1, 1))


def test_sample_images_are_real_distinct_photos():
    x = mb.sample_images(10, 48)
    assert x.shape == (10, 3, 48, 48) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    flat = x.flatten(1)
    for i in range(10):
        for j in range(i):
            assert not torch.equal(flat[i], flat[j])
    assert torch.equal(x, mb.sample_images(10, 48))
    assert float(x.std()) > 0.1  # photographs, not flat colour
    with pytest.raises(mb.ImageError, match="at most"):
        mb.sample_images(1000, 32)
    assert mb.sample_images(2, 32, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_shipped_benchmark_model_loads_by_name():
    assert "shapes_resnet" in mb.shipped_models()
    model = mb.load_model("shapes_resnet")
    assert model.weights == "shipped" and model.weights_source.endswith(".safetensors")
    assert model.classes is not None and len(model.classes) == 9
    assert model.input_size == (96, 96)
    assert mb.load_model("shapes_resnet", weights="pretrained").weights == "shipped"
    random = mb.load_model("shapes_resnet", weights="random", seed=1)
    assert random.weights == "random" and not same_weights(random, model)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 96, 96)).shape == (2, 9)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", "unknown device 'gpu'"),
        ("cuda:99", r"CUDA is not available here|only \d+ CUDA device"),
    ],
)
def test_bad_or_missing_devices_raise_device_error(device, message):
    with pytest.raises(mb.DeviceError, match=message):
        mb.load_model("resnet18", weights="random", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_cuda_on_a_cpu_only_machine_says_so():
    with pytest.raises(mb.DeviceError, match=r"CUDA is not available here.*use cpu or auto"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
