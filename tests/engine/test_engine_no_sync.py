"""The engine without host shortcuts (``masks.HOST_SHORTCUTS = False``).

With the shortcuts, masks read their values on the host to skip work that changes
nothing: fills for all-visible masks, and new mask objects for intersections equal to
an input. Without them no mask op synchronises with the host. The shortcuts must change
nothing but speed: the same logits (up to float32 rounding: a partial convolution adds
its bias after a rescaling by exactly 1), and content independence stays exact.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import garbage_like, make_timm_model, patch_mask

from maskbench.engine import Variant, masked_forward
from maskbench.engine import masks as engine_masks

MODELS = ["resnet50", "seresnet50", "efficientnet_b0", "convnext_tiny", "densenet121"]
RTOL = 1e-5  # float32, relative to the largest |logit|


@pytest.mark.parametrize("name", MODELS)
def test_without_host_syncs_the_logits_are_the_same(name, monkeypatch):
    model = make_timm_model(name)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    keep = patch_mask(3, 64, 16, 0.6, seed=5)
    keep[2] = False
    keep[2, :, 10:14, 50:53] = True  # a tiny kept region: masks stay partial to the end
    with torch.no_grad():
        expected = {v: masked_forward(model, x, keep, v) for v in Variant}
        monkeypatch.setattr(engine_masks, "HOST_SHORTCUTS", False)
        for variant in Variant:
            got = masked_forward(model, x, keep, variant)
            scale = expected[variant].abs().max()
            assert float((got - expected[variant]).abs().max() / scale) <= RTOL, variant
            dirty = masked_forward(model, garbage_like(x, keep), keep, variant)
            assert torch.equal(got, dirty), variant
