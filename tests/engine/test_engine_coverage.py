"""Every coverage model x every variant: the invariants hold; CROP is crop-exact.

Each model is built once (module-scoped parametrized fixture; pytest groups the tests
by model). Images are small (64 x 64, batch 3; crops at 128 x 128) to keep this fast.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import MODEL_SPECS, garbage_like, make_timm_model, patch_mask, rect_mask

from maskbench.engine import Variant, check_model, crop_applicability, masked_forward

VARIANTS = list(Variant)
SIZE = 64
# float32 batch-consistency tolerance, relative to the largest |logit|: conv kernels may
# block differently for different batch sizes and batch positions. Partial convolutions
# rescale by up to k*k per layer where few inputs are visible, which amplifies float32
# rounding for the single-pixel sample (in float64 the same check agrees to 1e-15, see
# test_partial_conv_batch_consistency_float64).
BATCH_RTOL = {Variant.PARTIAL_CONV: 2e-4}
DEFAULT_BATCH_RTOL = 1e-5


@pytest.fixture(scope="module", params=list(MODEL_SPECS))
def model(request):
    """One coverage model with random weights (built once per module and key)."""
    net = make_timm_model(request.param)
    net.key = request.param  # plain attribute, only for messages
    return net


def _images(batch: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


def _masks() -> torch.Tensor:
    """Three kinds of partial masks: random patches, a rectangle, a single pixel."""
    keep = torch.zeros(3, 1, SIZE, SIZE, dtype=torch.bool)
    keep[0] = patch_mask(1, SIZE, 8, 0.5, seed=3)[0]
    keep[1, :, 10:41, 5:60] = True
    keep[2, :, 37, 21] = True
    return keep


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def test_check_model_ok(model):
    """Every coverage model has a rule for every op."""
    report = check_model(model)
    assert report.ok, report.message


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_content_independence(model, variant):
    """Values under removed positions (NaN, Inf, huge) never change the logits."""
    x = _images(3)
    keep = _masks()
    with torch.no_grad():
        clean = masked_forward(model, x, keep, variant)
        dirty = masked_forward(model, garbage_like(x, keep), keep, variant)
    assert torch.isfinite(clean).all()
    assert torch.equal(clean, dirty)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_identity(model, variant):
    """An all-kept mask gives exactly the unmasked logits."""
    x = _images(2)
    keep = torch.ones(2, 1, SIZE, SIZE, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(masked_forward(model, x, keep, variant), model(x))


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_batch_consistency(model, variant):
    """A batch equals its samples one by one, in any order (all-kept sample included)."""
    x = _images(4)
    keep = torch.cat([_masks(), torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)])
    with torch.no_grad():
        batch = masked_forward(model, x, keep, variant)
        single = torch.cat(
            [masked_forward(model, x[i : i + 1], keep[i : i + 1], variant) for i in range(4)]
        )
        order = torch.tensor([2, 0, 3, 1])
        shuffled = masked_forward(model, x[order], keep[order], variant)
    rtol = BATCH_RTOL.get(variant, DEFAULT_BATCH_RTOL)
    assert _rel_err(batch, single) <= rtol
    assert _rel_err(shuffled, batch[order]) <= rtol


def test_partial_conv_batch_consistency_float64():
    """In float64, partial conv batches agree with their samples to rounding (1e-12)."""
    model = make_timm_model("tf_efficientnet_b0").double()
    x = _images(4).double()
    keep = torch.cat([_masks(), torch.ones(1, 1, SIZE, SIZE, dtype=torch.bool)])
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        batch = masked_forward(model, x, keep, Variant.PARTIAL_CONV)
        shuffled = masked_forward(model, x[order], keep[order], Variant.PARTIAL_CONV)
        single = masked_forward(model, x[2:3], keep[2:3], Variant.PARTIAL_CONV)
    assert _rel_err(shuffled, batch[order]) <= 1e-12
    assert _rel_err(single[0], batch[2]) <= 1e-12


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_finite_with_almost_nothing(model, variant):
    """Nothing kept, or one pixel kept: finite logits."""
    x = _images(2)
    keep = torch.zeros(2, 1, SIZE, SIZE, dtype=torch.bool)
    keep[1, :, 0, SIZE - 1] = True  # a corner pixel
    with torch.no_grad():
        out = masked_forward(model, x, keep, variant)
    assert out.shape == (2, model.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_odd_image_size(model, variant):
    """Sizes that are not multiples of the stride work (finite, content independent)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 70, 77, generator=generator)
    keep = patch_mask(1, 70, 10, 0.6, seed=5, width=77)
    with torch.no_grad():
        try:
            model(x)
        except RuntimeError as error:
            pytest.skip(f"the model itself rejects a 70 x 77 image: {error}")
        clean = masked_forward(model, x, keep, variant)
        dirty = masked_forward(model, garbage_like(x, keep), keep, variant)
    assert torch.isfinite(clean).all()
    assert torch.equal(clean, dirty)


def test_crop_exact(model):
    """CROP on a stride-aligned rectangle equals the model run on the crop."""
    applicable = crop_applicability(model)
    if not applicable.ok:
        pytest.skip(f"not crop-applicable: {applicable.reason}")
    stride = applicable.total_stride
    assert stride in (16, 32)
    size = 4 * stride  # 128 for stride 32
    x = _images(2, size=size, seed=7)
    checks = [(stride, stride, 2 * stride, 2 * stride), (0, stride, 3 * stride, stride)]
    with torch.no_grad():
        for top, left, h, w in checks:
            keep = rect_mask(2, size, size, top, left, h, w)
            out = masked_forward(model, x, keep, Variant.CROP)
            ref = model(x[:, :, top : top + h, left : left + w])
            assert _rel_err(out, ref) <= 1e-4, (top, left, h, w)


def test_nothing_kept_gives_documented_output(model):
    """With nothing kept the global pool gives 0; for a plain linear head: its bias."""
    x = _images(1)
    keep = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)
    head = model.get_classifier()
    with torch.no_grad():
        out = masked_forward(model, x, keep, Variant.PAPER)
    if model.key.startswith(("resnet", "resnext", "wide_resnet", "seresnet")):
        assert isinstance(head, torch.nn.Linear)
        assert torch.equal(out[0], head.bias)
    assert torch.isfinite(out).all()
