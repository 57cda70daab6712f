"""OpTape, the CPU stand-in for CUDA graph capture, and the engine's capture safety.

A CUDA graph freezes every host-side decision of the call it captured. The tape does
the same on the CPU, so a replay on *other* masks that equals a fresh run shows that no
decision in the engine's sync-free forward depended on the first mask's values.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_helpers import MODEL_SPECS, garbage_like, make_timm_model, patch_mask

from maskbench.engine import Variant
from maskbench.engine.interpreter import masked_logits
from maskbench.engine.masks import Mask, Window, subsample
from maskbench.engine.registry import leaf_types
from maskbench.engine.tape import CaptureError, OpTape
from maskbench.engine.tracing import traced


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_replay_recomputes_every_op_on_new_inputs():
    weight = torch.randn(4, 3, 3, 3, generator=_generator(0))

    def fn(x, keep):
        filled = torch.where(keep, x, 0.0)
        y = F.conv2d(filled, weight, padding=1)
        y.relu_()  # in place: the replay must apply it to the replayed tensor
        top, bottom = y.split(2, dim=1)  # several outputs, views
        return {"sum": top + bottom, "pooled": y.mean((2, 3))}

    x0, x1 = torch.randn(2, 2, 3, 8, 8, generator=_generator(1))
    k0 = torch.rand(2, 1, 8, 8, generator=_generator(2)) < 0.5
    k1 = torch.rand(2, 1, 8, 8, generator=_generator(3)) < 0.5
    tape = OpTape.record(fn, x0, k0)
    got, expected = tape.replay(x1, k1), fn(x1, k1)
    assert set(got) == {"sum", "pooled"}
    for key in got:
        assert torch.equal(got[key], expected[key]), key
    assert not torch.equal(got["sum"], fn(x0, k0)["sum"])  # it did use the new inputs


def test_tensors_from_before_the_call_are_read_at_replay_time():
    # as a CUDA graph reads parameters by address: an in-place update is seen
    weight = torch.ones(3)
    x = torch.randn(3, generator=_generator(0))
    tape = OpTape.record(lambda v: v * weight, x)
    weight.mul_(2)
    assert torch.equal(tape.replay(x), 2 * x)


def test_a_frozen_host_decision_shows_up_as_a_replay_difference():
    # what the engine tests rely on: a branch taken from values outside the recording
    # (here a Python flag set from the first input) is frozen, so a replay on inputs
    # that would take the other branch differs from a fresh run
    def fn(x, flag):
        return x + 1 if flag else x - 1

    x0 = torch.zeros(3)
    tape = OpTape.record(lambda v: fn(v, True), x0)
    assert not torch.equal(tape.replay(x0), fn(x0, False))


@pytest.mark.parametrize(
    ("call", "op"),
    [
        (lambda x: x.sum().item(), "_local_scalar_dense"),
        (lambda x: bool(x.all()), "_local_scalar_dense"),
        (lambda x: torch.equal(x, x), "equal"),
        (lambda x: x.nonzero(), "nonzero"),
        (lambda x: x[x > 0], "index"),
        (lambda x: x.index_put_((x > 0,), torch.zeros(())), "index_put_"),
        (lambda x: x.repeat_interleave((x > 0).long()), "repeat_interleave"),
        (lambda x: x.index_select(0, torch.tensor([0, 1])), "lift_fresh"),
    ],
)
def test_host_reads_are_refused_naming_the_op_and_the_line(call, op):
    with pytest.raises(CaptureError, match=rf"aten\.{op} .*test_engine_tape\.py:\d+"):
        OpTape.record(call, torch.randn(4, generator=_generator(0)))


@pytest.mark.parametrize("call", [lambda x: x.tolist(), lambda x: x.numpy(), np.asarray])
def test_reads_around_the_dispatcher_are_refused_and_restored(call):
    with pytest.raises(CaptureError, match=r"Tensor\.(tolist|numpy)\(\) .*test_engine_tape\.py"):
        OpTape.record(call, torch.arange(3.0))
    assert call(torch.arange(3.0)) is not None  # the methods are back after recording
    assert torch.arange(3.0).tolist() == [0.0, 1.0, 2.0]


def test_repeats_with_a_known_output_size_are_capturable():
    x = torch.arange(4.0)
    tape = OpTape.record(lambda v: v.repeat_interleave(2), x)
    assert torch.equal(tape.replay(x + 1), (x + 1).repeat_interleave(2))


def test_replay_refuses_inputs_of_another_shape():
    tape = OpTape.record(lambda v: v * 2, torch.zeros(3))
    with pytest.raises(ValueError, match=r"input 0 must be \(3,\)"):
        tape.replay(torch.zeros(4))
    with pytest.raises(ValueError, match="takes 1 inputs"):
        tape.replay(torch.zeros(3), torch.zeros(3))


@functools.lru_cache(maxsize=2)  # the variants of a model run one after another
def _model(name: str) -> torch.nn.Module:
    return make_timm_model(name)


def _engine_call(name: str, variant: Variant, host_reads: bool):
    traced_model, modules = traced(_model(name), leaf_types())
    return lambda x, keep: masked_logits(
        traced_model, modules, variant, x, keep, host_reads=host_reads
    )


@pytest.mark.parametrize("variant", list(Variant), ids=str)
@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_the_sync_free_forward_is_capturable_and_replays_on_other_masks(name, variant):
    call = _engine_call(name, variant, host_reads=False)
    x0, x1 = torch.randn(2, 2, 3, 64, 64, generator=_generator(4))
    k0 = patch_mask(2, 64, 16, 0.5, seed=5)
    k1 = patch_mask(2, 64, 8, 0.7, seed=6)
    k1[1] = False
    k1[1, :, 10:14, 50:53] = True  # a tiny kept region: partial masks to the end
    with torch.no_grad():
        tape = OpTape.record(call, x0, k0)
        got = tape.replay(x1, k1)
        assert torch.equal(got, call(x1, k1))
        # content independence holds for the replay too
        assert torch.equal(tape.replay(garbage_like(x1, k1), k1), got)


def test_the_host_shortcuts_are_what_a_capture_refuses():
    call = _engine_call("resnet18", Variant.PAPER, host_reads=True)
    keep = patch_mask(1, 64, 16, 0.5, seed=5)
    with torch.no_grad(), pytest.raises(CaptureError, match=r"masks\.py"):
        OpTape.record(call, torch.zeros(1, 3, 64, 64), keep)


def test_subsampling_at_window_centres_outside_the_image_is_capturable():
    # a 1 x 1 window with padding 1: the first and last centres lie outside the input,
    # the one case where subsampling builds an index instead of slicing
    window = Window.make(1, 2, 1)
    keep = torch.rand(2, 1, 7, 9, generator=_generator(0)) < 0.5
    out_hw = ((7 + 2 - 1) // 2 + 1, (9 + 2 - 1) // 2 + 1)

    def centres(k: torch.Tensor) -> torch.Tensor:
        return subsample(Mask(k), window, out_hw).keep

    tape = OpTape.record(centres, keep)
    other = torch.rand(2, 1, 7, 9, generator=_generator(1)) < 0.5
    got = tape.replay(other)
    assert torch.equal(got, centres(other))
    assert not got[:, :, 0].any() and not got[:, :, :, 0].any()  # centres outside: removed
    assert torch.equal(got[:, :, 1:-1, 1:-1], other[:, :, 1:-1:2, 1:-1:2][:, :, :3, :4])
