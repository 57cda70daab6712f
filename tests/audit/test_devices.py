"""Worker -> GPU assignment and CPU threads, as pure functions (no GPU needed)."""

from __future__ import annotations

import os

import pytest

from maskbench.audit import devices


@pytest.mark.parametrize(
    ("worker_id", "index"),
    [("gw0", 0), ("gw7", 7), ("gw12", 12), (None, None), ("", None), ("master", None)],
)
def test_worker_index(worker_id, index):
    assert devices.worker_index(worker_id) == index


def test_without_outer_variable_every_gpu_is_visible():
    assert devices.visible_gpus(None, 4) == ["0", "1", "2", "3"]
    assert devices.visible_gpus(None, 0) == []


def test_an_outer_cuda_visible_devices_is_honoured_in_its_order():
    assert devices.visible_gpus("3,1", 8) == ["3", "1"]
    assert devices.visible_gpus(" GPU-aa , GPU-bb ", 2) == ["GPU-aa", "GPU-bb"]
    assert devices.visible_gpus("", 8) == []  # explicitly no GPU
    assert devices.visible_gpus("2,-1,3", 8) == ["2"]  # CUDA stops at an invalid entry


def test_workers_take_gpus_round_robin():
    gpus = ["0", "1", "2"]
    chosen = [devices.gpu_for_worker(f"gw{i}", gpus) for i in range(7)]
    assert chosen == ["0", "1", "2", "0", "1", "2", "0"]


def test_round_robin_over_the_outer_list_not_over_indices():
    gpus = devices.visible_gpus("5,7", 8)
    assert [devices.gpu_for_worker(f"gw{i}", gpus) for i in range(4)] == ["5", "7", "5", "7"]


def test_serial_runs_and_cpu_only_machines_keep_their_environment():
    assert devices.gpu_for_worker(None, ["0", "1"]) is None
    assert devices.gpu_for_worker("gw1", []) is None
    assert devices.worker_environment(None, {}, 2) == {}
    assert devices.worker_environment("gw3", {}, 0) == {}
    assert devices.worker_environment("gw3", {"CUDA_VISIBLE_DEVICES": ""}, 4) == {}


def test_worker_environment_pins_one_gpu():
    assert devices.worker_environment("gw3", {}, 2) == {"CUDA_VISIBLE_DEVICES": "1"}
    env = {"CUDA_VISIBLE_DEVICES": "4,6,7"}
    assert devices.worker_environment("gw4", env, 8) == {"CUDA_VISIBLE_DEVICES": "6"}


def test_cpu_audits_use_one_thread_unless_asked_and_cuda_is_left_alone():
    assert devices.torch_threads("cpu", 1) == 1
    assert devices.torch_threads("cpu", 4) == 4
    assert devices.torch_threads("cpu", 0) is None
    assert devices.torch_threads("cuda", 1) is None
    assert devices.torch_threads("cuda", 3) == 3


def fake_worker_config(worker_id: str, gpus: list[str]):
    from types import SimpleNamespace

    return SimpleNamespace(workerinput={"workerid": worker_id, "maskbench_gpus": gpus})


def test_plugin_pins_a_worker_before_cuda_starts(monkeypatch):
    import torch

    from maskbench.audit import plugin

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    device = plugin._pin_worker_gpu(fake_worker_config("gw3", ["4", "6"]), "auto")
    assert device == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"


def test_plugin_falls_back_to_a_device_index_when_cuda_already_started(monkeypatch):
    import torch

    from maskbench.audit import plugin

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert plugin._pin_worker_gpu(fake_worker_config("gw3", ["4", "6"]), "cuda") == "cuda:1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"


def test_plugin_leaves_explicit_devices_and_cpu_alone(monkeypatch):
    from maskbench.audit import plugin

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert plugin._pin_worker_gpu(fake_worker_config("gw1", ["0", "1"]), "cuda:0") == "cuda:0"
    assert plugin._pin_worker_gpu(fake_worker_config("gw1", ["0", "1"]), "cpu") == "cpu"
    assert plugin._pin_worker_gpu(fake_worker_config("gw1", []), "auto") == "auto"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_controller_hands_workers_the_outer_visible_gpus(monkeypatch):
    from types import SimpleNamespace

    import torch

    from maskbench.audit import plugin

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    reporter = plugin.AuditReporter(SimpleNamespace(), SimpleNamespace(device="cuda"))
    node = SimpleNamespace(workerinput={})
    reporter.pytest_configure_node(node)
    assert node.workerinput["maskbench_gpus"] == ["3", "5"]
    cpu = plugin.AuditReporter(SimpleNamespace(), SimpleNamespace(device="cpu"))
    node = SimpleNamespace(workerinput={})
    cpu.pytest_configure_node(node)
    assert node.workerinput == {}


def test_disable_tf32_turns_off_both_tf32_flags():
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        devices.disable_tf32()
        assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
