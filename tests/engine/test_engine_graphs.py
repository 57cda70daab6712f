"""Graph mode (``cuda_graphs=True``): the cache, the keys, the replays.

On the CPU the capture primitive is swapped for OpTape (which replays recorded ops like a
CUDA graph, into a static output buffer like a graph's), so everything around it runs
as on a GPU: static inputs, output copies, keys, eviction, autograd, strategies. The
last tests capture real CUDA graphs and skip without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import garbage_like, make_timm_model, patch_mask

import maskbench as mb
from maskbench.engine import Variant, graphs, masked_forward
from maskbench.engine.interpreter import masked_logits
from maskbench.engine.registry import leaf_types
from maskbench.engine.tape import CaptureError
from maskbench.engine.tracing import traced

RTOL = 1e-5  # float32, relative to the largest |logit| (sync-free vs host shortcuts)


@pytest.fixture
def tape_graphs(monkeypatch):
    """Graph mode on the CPU, with OpTape as the capture primitive."""
    monkeypatch.setattr(
        graphs,
        "_capture_backend",
        lambda device: graphs.tape_capture if device.type == "cpu" else None,
    )


def _inputs(seed: int, batch: int = 2, size: int = 64):
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    keep = patch_mask(batch, size, 16, 0.5, seed=seed + 100)
    return x, keep


def _captures(model) -> tuple[int, int]:
    return graphs.cached_graphs(traced(model, leaf_types())[0])


@pytest.mark.parametrize("variant", list(Variant), ids=str)
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_tiny"])
def test_graph_mode_equals_the_sync_free_forward(tape_graphs, name, variant):
    model = make_timm_model(name)
    traced_model, modules = traced(model, leaf_types())
    with torch.no_grad():
        for seed in (0, 1):  # the second call replays the graph captured by the first
            x, keep = _inputs(seed)
            got = masked_forward(model, x, keep, variant, cuda_graphs=True)
            sync_free = masked_logits(traced_model, modules, variant, x, keep, host_reads=False)
            assert torch.equal(got, sync_free)
            default = masked_forward(model, x, keep, variant)
            assert float((got - default).abs().max() / default.abs().max()) <= RTOL
            dirty = masked_forward(model, garbage_like(x, keep), keep, variant, cuda_graphs=True)
            assert torch.equal(dirty, got)
    assert _captures(model) == (1, 1)


def test_every_call_replays_and_results_are_not_the_graphs_own_memory(tape_graphs):
    model = make_timm_model("resnet18")
    with torch.no_grad():
        x0, k0 = _inputs(0)
        x1, k1 = _inputs(1)
        first = masked_forward(model, x0, k0, cuda_graphs=True)
        first_copy = first.clone()
        second = masked_forward(model, x1, k1, cuda_graphs=True)
        assert torch.equal(first, first_copy)  # the second replay did not overwrite it
        assert not torch.equal(first, second)
        assert torch.equal(masked_forward(model, x0, k0, cuda_graphs=True), first)
    assert _captures(model) == (1, 1)


def test_a_graph_captured_under_inference_mode_replays_outside_it(tape_graphs):
    model = make_timm_model("resnet18")
    x, keep = _inputs(0)
    with torch.inference_mode():
        first = masked_forward(model, x, keep, cuda_graphs=True)
    with torch.no_grad():  # the same graph: its static inputs must accept a copy here
        second = masked_forward(model, x, keep, cuda_graphs=True)
    with torch.inference_mode():
        third = masked_forward(model, x, keep, cuda_graphs=True)
    assert torch.equal(first, second) and torch.equal(second, third)
    assert _captures(model) == (1, 1)


def test_a_new_shape_is_a_new_graph_and_the_oldest_goes_first(tape_graphs, monkeypatch):
    monkeypatch.setattr(graphs, "CACHE_SIZE", 2)
    model = make_timm_model("resnet18")
    with torch.no_grad():
        for batch in (1, 2, 3):
            x, keep = _inputs(batch, batch=batch)
            masked_forward(model, x, keep, cuda_graphs=True)
        assert _captures(model) == (2, 3)  # batch 1 was evicted
        x, keep = _inputs(5, batch=3)
        masked_forward(model, x, keep, cuda_graphs=True)  # still held
        assert _captures(model) == (2, 3)
        x, keep = _inputs(6, batch=1)
        masked_forward(model, x, keep, cuda_graphs=True)  # captured again
        assert _captures(model) == (2, 4)
        graphs.clear(model)
        assert _captures(model) == (0, 4)


def test_changed_math_flags_or_parameters_make_a_new_graph(tape_graphs, monkeypatch):
    model = make_timm_model("resnet18")
    x, keep = _inputs(0)
    with torch.no_grad():
        before = masked_forward(model, x, keep, cuda_graphs=True)
        # in place: the same addresses, so the same graph, reading the new values
        model.fc.bias.add_(1.0)
        shifted = masked_forward(model, x, keep, cuda_graphs=True)
        torch.testing.assert_close(shifted, before + 1.0, rtol=0, atol=1e-5)
        assert _captures(model) == (1, 1)
        # a new tensor at a new address: a graph would read freed memory, so recapture
        model.fc.bias = torch.nn.Parameter(model.fc.bias.detach() - 1.0)
        restored = masked_forward(model, x, keep, cuda_graphs=True)
        torch.testing.assert_close(restored, before, rtol=0, atol=1e-5)
        assert _captures(model) == (2, 2)
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
        masked_forward(model, x, keep, cuda_graphs=True)
        assert _captures(model) == (3, 3)


def test_autograd_runs_the_ordinary_forward(tape_graphs):
    model = make_timm_model("resnet18")
    x, keep = _inputs(0)
    out = masked_forward(model, x, keep, cuda_graphs=True)  # grad enabled, weights need grad
    assert out.requires_grad
    assert _captures(model) == (0, 0)


def test_all_kept_samples_still_run_the_plain_model(tape_graphs):
    model = make_timm_model("resnet18")
    x, keep = _inputs(0, batch=3)
    keep[1] = True
    with torch.no_grad():
        out = masked_forward(model, x, keep, cuda_graphs=True)
        assert torch.equal(out[1], model(x[1:2])[0])
        partial = masked_forward(model, x[[0, 2]], keep[[0, 2]], cuda_graphs=True)
    torch.testing.assert_close(out[[0, 2]], partial, rtol=0, atol=1e-5)
    assert _captures(model) == (1, 1)  # one graph, for the two masked samples


def test_a_failed_capture_says_how_to_go_on(monkeypatch):
    def failing(forward, static_x, static_keep):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "_capture_backend", lambda device: failing)
    model = make_timm_model("resnet18")
    x, keep = _inputs(0)
    with torch.no_grad(), pytest.raises(CaptureError, match="cuda_graphs=False") as info:
        masked_forward(model, x, keep, cuda_graphs=True)
    assert "OpTape" in str(info.value) and "(2, 3, 64, 64)" in str(info.value)


def test_strategies_take_the_option_and_ignore_it_on_the_cpu():
    model = mb.load_model("resnet18", weights="random")
    images = mb.sample_images(2, 64)
    masks = patch_mask(2, 64, 16, 0.5, seed=3)
    for name in ["layer_masking", "layer_masking_zero", "partial_conv", "layer_masking_crop"]:
        strategy = mb.get_strategy(name, cuda_graphs=True)
        assert strategy.cuda_graphs
        assert torch.equal(
            strategy(model, images, masks), mb.get_strategy(name)(model, images, masks)
        )
    assert _captures(model.network) == (0, 0)
    with pytest.raises(TypeError):
        mb.get_strategy("black", cuda_graphs=True)


def test_strategies_in_graph_mode_keep_their_claims(tape_graphs):
    model = mb.load_model("resnet18", weights="random")
    images = mb.sample_images(3, 64)
    masks = patch_mask(3, 64, 16, 0.5, seed=3)
    strategy = mb.get_strategy("layer_masking", cuda_graphs=True)
    batch = strategy(model, images, masks)
    singles = torch.cat([strategy(model, images[i : i + 1], masks[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-5 * float(batch.abs().max()))
    other = torch.where(masks, images, torch.rand(images.shape, generator=torch.Generator()))
    assert torch.equal(strategy(model, other, masks), batch)  # removed content unseen
    assert torch.equal(strategy(model, images, masks), batch)  # determinism


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("variant", list(Variant), ids=str)
def test_cuda_graph_replays_equal_the_sync_free_forward(variant, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = make_timm_model("resnet50").cuda()
    traced_model, modules = traced(model, leaf_types())
    outputs = []
    with torch.no_grad():
        for seed in (0, 1, 0):
            x, keep = (t.cuda() for t in _inputs(seed, batch=4))
            got = masked_forward(model, x, keep, variant, cuda_graphs=True)
            eager = masked_logits(traced_model, modules, variant, x, keep, host_reads=False)
            scale = eager.abs().max()
            assert float((got - eager).abs().max() / scale) <= RTOL
            dirty = masked_forward(
                model, garbage_like(x.cpu(), keep.cpu()).cuda(), keep, variant, cuda_graphs=True
            )
            assert torch.equal(dirty, got)
            outputs.append(got)
    assert torch.equal(outputs[0], outputs[2])  # the same inputs, the same logits
    assert not torch.equal(outputs[0], outputs[1])
    assert graphs.cached_graphs(traced_model)[1] == 1
    graphs.clear(model)
