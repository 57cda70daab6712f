"""Kernel launches per masked forward, counted with OpTape on the meta device.

On a GPU every op is a kernel launch with a fixed cost of several microseconds, which
dominates the small mask ops; the count is what a CUDA graph replays. It does not
depend on the machine, so it is checked here as a bound, not timed. The meta device
takes the schedules a GPU takes (e.g. the batched neighbour-padding rings).
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_timm_model, patch_mask

from maskbench.engine import Variant
from maskbench.engine.interpreter import masked_logits
from maskbench.engine.registry import leaf_types
from maskbench.engine.tape import OpTape
from maskbench.engine.tracing import traced

# launches as a multiple of the plain forward's (ResNet-50, 2 x 3 x 64 x 64). Measured
# when these bounds were set: plain 174; layer_masking 497 (1026 before the batched
# ring weights, shared scalars and kernels), layer_masking_zero 266 (286),
# partial_conv 436 (541), layer_masking_crop 202 (219).
BOUNDS = {
    Variant.PAPER: 3.1,
    Variant.ZERO: 1.6,
    Variant.PARTIAL_CONV: 2.6,
    Variant.CROP: 1.25,
}


@pytest.fixture(scope="module")
def resnet50_meta():
    model = make_timm_model("resnet50").to("meta")
    x = torch.empty(2, 3, 64, 64, device="meta")
    with torch.no_grad():
        plain = OpTape.record(model, x).launches()
    return model, x, plain


@pytest.mark.parametrize("variant", list(Variant), ids=str)
def test_masked_forward_launches_stay_within_their_bound(resnet50_meta, variant):
    model, x, plain = resnet50_meta
    traced_model, modules = traced(model, leaf_types())
    keep = patch_mask(2, 64, 16, 0.5, seed=1).to("meta")
    with torch.no_grad():
        tape = OpTape.record(
            lambda v, k: masked_logits(traced_model, modules, variant, v, k, host_reads=False),
            x,
            keep,
        )
    assert plain > 100  # the count is of a real forward
    assert tape.launches() <= BOUNDS[variant] * plain, (tape.launches(), plain)
