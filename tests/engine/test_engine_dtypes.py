"""Low precision: bfloat16 on CPU; float16 / bfloat16 on CUDA when a GPU is visible."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import garbage_like, make_timm_model, patch_mask

from maskbench.engine import Variant, masked_forward
from maskbench.errors import NumericalRangeError

MODELS = ["resnet50", "efficientnet_b0", "convnext_tiny", "tf_efficientnet_b0"]
# batch-consistency tolerance relative to the largest |logit| (bf16 has 8 mantissa bits)
LOW_PRECISION_RTOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
# low precision vs float32 on the same weights and mask (rounding accumulates over depth)
VS_FLOAT32_RTOL = {torch.bfloat16: 0.05, torch.float16: 0.01}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _check_low_precision(name: str, dtype: torch.dtype, device: str) -> None:
    model32 = make_timm_model(name).to(device)
    model = make_timm_model(name).to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(0)
    x32 = torch.randn(3, 3, 64, 64, generator=generator).to(device)
    x = x32.to(dtype)
    keep = patch_mask(3, 64, 8, 0.5, seed=2)
    keep[2] = False
    keep[2, :, 30, 30] = True
    keep = keep.to(device)
    with torch.no_grad():
        for variant in Variant:
            if _overflows_float16(model32, x32, keep, variant, dtype):
                # the method's own float32 logits exceed float16: refused, by name
                with pytest.raises(NumericalRangeError, match=r"samples \[2\] overflow"):
                    masked_forward(model, x, keep, variant)
                x, x32, keep = x[:2], x32[:2], keep[:2]
            out = masked_forward(model, x, keep, variant)
            assert out.dtype == dtype and out.device.type == device
            assert torch.isfinite(out).all(), variant
            dirty = masked_forward(
                model, garbage_like(x.cpu(), keep.cpu()).to(device), keep, variant
            )
            assert torch.equal(out, dirty), variant
            single = masked_forward(model, x[1:2], keep[1:2], variant)
            assert _rel_err(single[0], out[1]) <= LOW_PRECISION_RTOL[dtype], variant
            ref = masked_forward(model32, x32, keep, variant)
            assert _rel_err(out[:2], ref[:2]) <= VS_FLOAT32_RTOL[dtype], variant
        ones = torch.ones_like(keep)
        assert torch.equal(masked_forward(model, x, ones), model(x))


def _overflows_float16(model32, x32, keep, variant, dtype) -> bool:
    if dtype != torch.float16 or variant is not Variant.PARTIAL_CONV:
        return False
    reference = masked_forward(model32, x32, keep, variant)
    return bool(reference.abs().max() > torch.finfo(torch.float16).max)


def test_float16_partial_conv_overflow_is_refused_with_the_samples_named():
    """partial_conv's rescaling compounds: one kept pixel gives ResNet-50 logits near 1e8
    in float32. In float16 that is refused, not returned as inf/NaN; other samples and
    the other variants still run."""
    model32 = make_timm_model("resnet50")
    model = make_timm_model("resnet50").half()
    x32 = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    keep = patch_mask(3, 64, 8, 0.5, seed=2)
    keep[2] = False
    keep[2, :, 30, 30] = True
    with torch.no_grad():
        assert masked_forward(model32, x32, keep, "partial_conv")[2].abs().max() > 65504
        with pytest.raises(NumericalRangeError, match=r"samples \[2\] overflow float16"):
            masked_forward(model, x32.half(), keep, "partial_conv")
        assert torch.isfinite(masked_forward(model, x32[:2].half(), keep[:2], "partial_conv")).all()
        assert torch.isfinite(masked_forward(model, x32.half(), keep, "layer_masking")).all()


@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_cpu(name):
    """bf16 on CPU: runs, finite, exact content independence and identity, close to fp32."""
    _check_low_precision(name, torch.bfloat16, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_cuda_low_precision(name, dtype):
    """fp16 / bf16 on CUDA: the same checks."""
    _check_low_precision(name, dtype, "cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float32_crop_exact():
    """Device-agnostic: the crop-exact check on CUDA in float32."""
    from maskbench.engine import crop_applicability

    model = make_timm_model("resnet50").cuda()
    assert crop_applicability(model).ok
    x = torch.randn(2, 3, 128, 128, device="cuda")
    keep = torch.zeros(2, 1, 128, 128, dtype=torch.bool, device="cuda")
    keep[:, :, 32:96, 32:96] = True
    with torch.no_grad():
        out = masked_forward(model, x, keep, Variant.CROP)
        ref = model(x[:, :, 32:96, 32:96])
    assert _rel_err(out, ref) <= 1e-3  # TF32 convolutions may be on
