"""Per-op rules on small tensors, against explicit formulas.

Each test calls the op's rule directly with a masked input and compares the output at
*visible output positions* (the only ones the engine promises anything about) and the
output mask with a hand-written formula.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import patch_mask
from reference_resnet import neighbour_pad
from torch import nn

from maskbench.engine.masks import MT, NCHW, Layout, Mask
from maskbench.engine.registry import (
    Context,
    function_rule_for,
    method_rule_for,
    module_rule_for,
)
from maskbench.engine.variants import Variant
from maskbench.errors import UnsupportedModelError

ALL = list(Variant)


def _input(seed: int = 0, batch: int = 2, channels: int = 4, size: int = 12):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=generator)
    keep = patch_mask(batch, size, 3, 0.5, seed=seed + 1)
    keep[0, :, 4:7, 4:8] = True  # make sure something is visible
    return x, keep


def _mt(ctx: Context, x: torch.Tensor, keep: torch.Tensor) -> MT:
    return MT(x, ctx.new_mask(keep), NCHW)


def _apply(target, variant: Variant, x, keep, *args, **kwargs):
    """Run the rule for ``target`` (module, function or method name) on masked ``x``."""
    ctx = Context(variant=variant)
    mt = _mt(ctx, x, keep)
    if isinstance(target, nn.Module):
        rule = module_rule_for(target)
    elif isinstance(target, str):
        rule = method_rule_for(target)
    else:
        rule = function_rule_for(target)
    assert rule is not None, target
    return rule(ctx, target, (mt, *args), kwargs)


def _assert_visible_close(out: MT, expected: torch.Tensor, expected_mask: torch.Tensor):
    assert torch.equal(out.mask.keep, expected_mask), "output mask"
    visible = out.mask.keep.expand_as(out.value)
    torch.testing.assert_close(out.value[visible], expected[visible], rtol=1e-5, atol=1e-5)


def _dilate(keep: torch.Tensor, k, s, p, d=1) -> torch.Tensor:
    return F.max_pool2d(F.pad(keep.float(), (p, p, p, p)), k, s, 0, d) > 0


# --- convolutions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "s", "p", "d"), [(3, 1, 1, 1), (7, 2, 3, 1), (3, 2, 1, 1), (3, 1, 2, 2), (5, 2, 2, 1)]
)
def test_conv_paper(k, s, p, d):
    """PAPER: neighbour-pad (>= d(k-1) rings suffice), conv; mask = max_pool(M) (dilated)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, k, s, p, d)
    x, keep = _input()
    out = _apply(conv, Variant.PAPER, x, keep)
    # the published k passes (more rings never change visible outputs)
    expected = conv(neighbour_pad(x, keep.float(), d * (k - 1) + 1))
    _assert_visible_close(out, expected.detach(), _dilate(keep, k, s, p, d))


def test_conv_paper_1x1_needs_no_fill():
    """1 x 1 convs read only their own position: no fill, mask unchanged (same object)."""
    conv = nn.Conv2d(4, 5, 1)
    x, keep = _input()
    ctx = Context(variant=Variant.PAPER)
    mt = _mt(ctx, x, keep)
    out = module_rule_for(conv)(ctx, conv, (mt,), {})
    assert out.mask is mt.mask
    assert torch.equal(out.value, conv(x))


@pytest.mark.parametrize("variant", [Variant.ZERO, Variant.CROP])
@pytest.mark.parametrize(("k", "s", "p"), [(3, 1, 1), (3, 2, 1), (1, 2, 0), (4, 4, 0)])
def test_conv_zero_and_crop(variant, k, s, p):
    """ZERO / CROP: conv(x * M); mask dilated (ZERO) or subsampled at centres (CROP)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, k, s, p)
    x, keep = _input()
    out = _apply(conv, variant, x, keep)
    expected = conv(x * keep)
    if variant is Variant.ZERO:
        mask = _dilate(keep, k, s, p)
    else:
        c = (k - 1) // 2 - p  # window centre offset
        n = out.value.shape[-1]
        mask = keep[:, :, c : c + s * n : s, c : c + s * n : s]
    _assert_visible_close(out, expected.detach(), mask)


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize(("k", "s", "p"), [(3, 1, 1), (3, 2, 1), (5, 1, 2)])
def test_partial_conv(groups, k, s, p):
    """PARTIAL_CONV: conv(x*M) w/o bias * (in-image window / visible count) + bias."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, k, s, p, groups=groups)
    x, keep = _input()
    out = _apply(conv, Variant.PARTIAL_CONV, x, keep)
    raw = F.conv2d(x * keep, conv.weight, None, s, p, 1, groups)
    ones = torch.ones(1, 1, k, k)
    visible = F.conv2d(keep.float(), ones, None, s, p)
    in_image = F.conv2d(torch.ones_like(keep, dtype=torch.float32), ones, None, s, p)
    expected = raw * (in_image / visible.clamp(min=1)) + conv.bias.view(1, -1, 1, 1)
    _assert_visible_close(out, expected.detach(), visible > 0)


def test_partial_conv_depthwise_and_all_visible():
    """Depthwise partial conv; an all-visible mask gives the plain conv."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, 1, 1, groups=4)
    x, _ = _input()
    keep = torch.ones(2, 1, 12, 12, dtype=torch.bool)
    out = _apply(conv, Variant.PARTIAL_CONV, x, keep)
    assert torch.equal(out.value, conv(x))


def test_conv_functional():
    """``F.conv2d`` with weights from elsewhere (e.g. a standardised weight)."""
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4, 3, 3), torch.randn(3)
    x, keep = _input()
    out = _apply(F.conv2d, Variant.ZERO, x, keep, weight, bias, 2, 1)
    expected = F.conv2d(x * keep, weight, bias, 2, 1)
    _assert_visible_close(out, expected, _dilate(keep, 3, 2, 1))


@pytest.mark.parametrize("variant", [Variant.PAPER, Variant.CROP])
def test_conv2d_same(variant):
    """timm ``Conv2dSame``: asymmetric TF padding computed from the input size."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(4, 3, 3, stride=2)
    x, keep = _input()
    out = _apply(conv, variant, x, keep)
    # padding for 12 -> 6 with k=3, s=2: total 1, (0 before, 1 after)
    if variant is Variant.PAPER:
        filled = neighbour_pad(x, keep.float(), 3)
        mask = F.max_pool2d(F.pad(keep.float(), (0, 1, 0, 1)), 3, 2) > 0
    else:
        filled = x * keep
        mask = keep[:, :, 1::2, 1::2]  # window centres: 2i - 0 + 1
    expected = F.conv2d(F.pad(filled, (0, 1, 0, 1)), conv.weight, conv.bias, 2)
    _assert_visible_close(out, expected.detach(), mask)


def test_conv2d_same_partial():
    """``Conv2dSame`` partial conv: counts include the asymmetric padding window."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(4, 3, 3, stride=2)
    x, keep = _input()
    out = _apply(conv, Variant.PARTIAL_CONV, x, keep)
    raw = F.conv2d(F.pad(x * keep, (0, 1, 0, 1)), conv.weight, None, 2)
    ones = torch.ones(1, 1, 3, 3)
    visible = F.conv2d(F.pad(keep.float(), (0, 1, 0, 1)), ones, None, 2)
    in_image = F.conv2d(F.pad(torch.ones(2, 1, 12, 12), (0, 1, 0, 1)), ones, None, 2)
    expected = raw * in_image / visible.clamp(min=1) + conv.bias.view(1, -1, 1, 1)
    _assert_visible_close(out, expected.detach(), visible > 0)


# --- pooling ------------------------------------------------------------------------------


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool(ceil_mode):
    """PAPER: max_pool(x*M), mask max_pool(M); CROP: -inf fill, centre subsampling."""
    pool = nn.MaxPool2d(3, 2, 1, ceil_mode=ceil_mode)
    x, keep = _input(size=11)
    out = _apply(pool, Variant.PAPER, x, keep)
    _assert_visible_close(out, pool(x * keep), pool(keep.float()) > 0)
    out = _apply(pool, Variant.CROP, x, keep)
    n = out.value.shape[-1]
    padded = F.pad(keep, (0, 2, 0, 2))
    expected_mask = padded[:, :, 0 : 2 * n : 2, 0 : 2 * n : 2]
    _assert_visible_close(out, pool(x.masked_fill(~keep, float("-inf"))), expected_mask)


def test_max_pool_crop_negative_inputs():
    """CROP max pooling never lets a removed position win, even for negative inputs."""
    pool = nn.MaxPool2d(3, 1, 1)
    x = -torch.rand(1, 1, 5, 5) - 1.0
    keep = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    keep[0, 0, 2, 2] = True
    out = _apply(pool, Variant.CROP, x, keep)
    assert out.value[0, 0, 2, 2] == x[0, 0, 2, 2]


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool(count_include_pad):
    """PAPER: avg_pool(x*M), not renormalised; CROP renormalises when the pool does."""
    pool = nn.AvgPool2d(3, 2, 1, count_include_pad=count_include_pad)
    x, keep = _input()
    out = _apply(pool, Variant.PAPER, x, keep)
    _assert_visible_close(out, pool(x * keep), pool(keep.float()) > 0)
    out = _apply(pool, Variant.CROP, x, keep)
    if count_include_pad:
        expected = pool(x * keep)
    else:
        expected = pool(x * keep) / pool(keep.float()).clamp(min=1e-12)
    _assert_visible_close(out, expected, keep[:, :, ::2, ::2])


def test_avg_pool_2x2_ceil():
    """ResNet-D's average downsample: 2 x 2, stride 2, ceil mode, padding excluded."""
    pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    x, keep = _input(size=11)
    out = _apply(pool, Variant.ZERO, x, keep)
    _assert_visible_close(out, pool(x * keep), F.max_pool2d(keep.float(), 2, 2, ceil_mode=True) > 0)


@pytest.mark.parametrize("variant", ALL)
def test_blur_pool(variant):
    """timm ``BlurPool2d``: filled like a conv, then reflect-padded by the module."""
    from timm.layers import BlurPool2d

    pool = BlurPool2d(4, filt_size=3, stride=2)
    x, keep = _input()
    out = _apply(pool, variant, x, keep)
    filled = neighbour_pad(x, keep.float(), 3) if variant is Variant.PAPER else x * keep
    mask = keep[:, :, ::2, ::2] if variant is Variant.CROP else _dilate(keep, 3, 2, 1)
    _assert_visible_close(out, pool(filled), mask)


@pytest.mark.parametrize("variant", ALL)
def test_global_average_pool(variant):
    """Adaptive average pool to 1 x 1: sum(x*M) / sum(M); no mask after it."""
    pool = nn.AdaptiveAvgPool2d(1)
    x, keep = _input()
    keep[1] = False
    out = _apply(pool, variant, x, keep)
    assert isinstance(out, torch.Tensor)
    expected = (x * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp(min=1)
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # nothing visible: 0


def test_global_max_pool():
    """Adaptive max pool to 1 x 1: max over visible positions, 0 when none."""
    pool = nn.AdaptiveMaxPool2d((1, 1))
    x, keep = _input()
    keep[1] = False
    out = _apply(pool, Variant.PAPER, x, keep)
    expected = x.masked_fill(~keep, float("-inf")).amax((2, 3), keepdim=True)
    torch.testing.assert_close(out[0], expected[0])
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_adaptive_pool_to_larger_size():
    """VGG's ConvMlp pools 2 x 2 up to 7 x 7: zero fill, visible if any input is."""
    x, keep = _input(size=2)
    keep[0] = torch.tensor([[True, False], [False, False]])
    out = _apply(F.adaptive_avg_pool2d, Variant.PAPER, x, keep, (7, 7))
    expected = F.adaptive_avg_pool2d(x * keep, 7)
    _assert_visible_close(out, expected, F.adaptive_max_pool2d(keep.float(), 7) > 0)


@pytest.mark.parametrize("variant", ALL)
def test_upsample_nearest(variant):
    """Nearest upsampling copies positions; the mask is upsampled the same way."""
    up = nn.Upsample(scale_factor=2, mode="nearest")
    x, keep = _input()
    out = _apply(up, variant, x, keep)
    _assert_visible_close(out, up(x), up(keep.float()) > 0)


# --- reductions -----------------------------------------------------------------------------


@pytest.mark.parametrize("keepdim", [True, False])
def test_spatial_mean_method(keepdim):
    """Squeeze-excite's ``x.mean((2, 3))`` is a masked mean."""
    x, keep = _input()
    out = _apply("mean", Variant.PAPER, x, keep, (2, 3), keepdim)
    expected = (x * keep).sum((2, 3), keepdim=keepdim) / keep.sum((2, 3), keepdim=keepdim)
    torch.testing.assert_close(out, expected)


def test_channel_mean_keeps_mask():
    """A mean over channels is position-wise: the mask stays, layout adjusts."""
    x, keep = _input()
    out = _apply("mean", Variant.PAPER, x, keep, 1)
    assert isinstance(out, MT) and out.layout == Layout(3, 1, 2)
    assert torch.equal(out.value, x.mean(1))


def test_spatial_sum_amax_and_norm():
    """``sum`` / ``amax`` / ``norm`` over space read visible positions only."""
    x, keep = _input()
    z = x * keep
    torch.testing.assert_close(_apply("sum", Variant.ZERO, x, keep, (2, 3)), z.sum((2, 3)))
    amax = x.masked_fill(~keep, float("-inf")).amax((-1, -2))
    torch.testing.assert_close(_apply(torch.amax, Variant.ZERO, x, keep, (-1, -2)), amax)
    norm = z.norm(2, (2, 3), True)
    torch.testing.assert_close(_apply("norm", Variant.ZERO, x, keep, 2, (2, 3), True), norm)


def test_mean_over_one_spatial_dim_is_refused():
    x, keep = _input()
    with pytest.raises(UnsupportedModelError, match="one spatial dim"):
        _apply("mean", Variant.PAPER, x, keep, 2)


# --- position-wise ops and shapes ---------------------------------------------------------------


def test_residual_add_intersects():
    """a + b is visible where both are (the paper's M_a * M_b)."""
    ctx = Context(variant=Variant.PAPER)
    x, keep_a = _input(seed=0)
    _, keep_b = _input(seed=5)
    a, b = _mt(ctx, x, keep_a), _mt(ctx, x * 2, keep_b)
    out = function_rule_for(operator.add)(ctx, operator.add, (a, b), {})
    assert torch.equal(out.mask.keep, keep_a & keep_b)
    assert torch.equal(out.value, x * 3)


def test_intersection_reuses_identical_mask():
    """When one mask contains the other (ResNet blocks), the result is that very mask."""
    ctx = Context(variant=Variant.PAPER)
    x, keep = _input()
    big = _dilate(keep, 3, 1, 1)
    a, b = _mt(ctx, x, keep), _mt(ctx, x, big)
    out = function_rule_for(operator.add)(ctx, operator.add, (a, b), {})
    assert out.mask is a.mask


def test_cat_intersects_and_split_keeps():
    """Channel concat: intersection of the parts; split: every part keeps the mask."""
    ctx = Context(variant=Variant.PAPER)
    x, keep_a = _input(seed=0)
    _, keep_b = _input(seed=5)
    a, b = _mt(ctx, x, keep_a), _mt(ctx, x, keep_b)
    out = function_rule_for(torch.cat)(ctx, torch.cat, ([a, b], 1), {})
    assert out.value.shape[1] == 8 and torch.equal(out.mask.keep, keep_a & keep_b)
    parts = method_rule_for("split")(ctx, "split", (out, 4, 1), {})
    assert all(p.mask is out.mask for p in parts)
    with pytest.raises(UnsupportedModelError, match="spatial"):
        function_rule_for(torch.cat)(ctx, torch.cat, ([a, b], 3), {})


def test_channels_last_layout_is_tracked():
    """ConvNeXt: permute to NHWC, LayerNorm + Linear per position, permute back."""
    ctx = Context(variant=Variant.PAPER)
    x, keep = _input()
    mt = _mt(ctx, x, keep)
    nhwc = method_rule_for("permute")(ctx, "permute", (mt, 0, 2, 3, 1), {})
    assert nhwc.layout == Layout(4, 1, 2)
    assert torch.equal(nhwc.mask.view(nhwc.layout), keep.permute(0, 2, 3, 1))
    norm = nn.LayerNorm(4)
    normed = module_rule_for(norm)(ctx, norm, (nhwc,), {})
    linear = nn.Linear(4, 6)
    lin = module_rule_for(linear)(ctx, linear, (normed,), {})
    back = method_rule_for("permute")(ctx, "permute", (lin, 0, 3, 1, 2), {})
    assert back.layout == NCHW and back.mask is mt.mask
    assert torch.equal(back.value, linear(norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2))
    # a linear map or layer norm over a spatial dim mixes positions
    with pytest.raises(UnsupportedModelError, match="spatial"):
        module_rule_for(nn.Linear(12, 3))(ctx, nn.Linear(12, 3), (mt,), {})
    with pytest.raises(UnsupportedModelError, match="spatial"):
        module_rule_for(nn.LayerNorm(12))(ctx, nn.LayerNorm(12), (mt,), {})


def test_flatten():
    """Flatten over 1 x 1 space acts as the pool of one position; over H x W it is refused."""
    ctx = Context(variant=Variant.PAPER)
    x, keep = _input(size=1)
    keep[0], keep[1] = True, False
    flat = nn.Flatten()
    out = module_rule_for(flat)(ctx, flat, (_mt(ctx, x, keep),), {})
    assert torch.equal(out[0], x[0].flatten()) and torch.equal(out[1], torch.zeros(4))
    x, keep = _input()
    with pytest.raises(UnsupportedModelError, match="flattens spatial"):
        module_rule_for(flat)(ctx, flat, (_mt(ctx, x, keep),), {})


def test_batch_norm_eval_and_train():
    """Eval-mode BN is position-wise; training mode is refused (batch statistics)."""
    bn = nn.BatchNorm2d(4).eval()
    x, keep = _input()
    out = _apply(bn, Variant.PAPER, x, keep)
    assert torch.equal(out.value, bn(x)) and torch.equal(out.mask.keep, keep)
    bn.train()
    with pytest.raises(UnsupportedModelError, match="eval mode"):
        _apply(bn, Variant.PAPER, x, keep)


def test_group_norm_is_refused():
    """Norms with statistics over space have no rule."""
    x, keep = _input()
    with pytest.raises(UnsupportedModelError, match="spatial positions"):
        _apply(nn.GroupNorm(2, 4), Variant.PAPER, x, keep)


def test_getitem_and_reshape():
    """Channel slicing keeps the mask; reshapes of channel dims keep it; others refused."""
    ctx = Context(variant=Variant.PAPER)
    x, keep = _input()
    mt = _mt(ctx, x, keep)
    getitem = function_rule_for(operator.getitem)
    out = getitem(ctx, operator.getitem, (mt, (slice(None), slice(0, 2))), {})
    assert out.layout == NCHW and torch.equal(out.value, x[:, :2])
    with pytest.raises(UnsupportedModelError):
        getitem(ctx, operator.getitem, (mt, (Ellipsis, slice(0, 4))), {})
    reshape = method_rule_for("reshape")
    grouped = reshape(ctx, "reshape", (mt, 2, 2, 2, 12, 12), {})
    assert grouped.layout == Layout(5, 3, 4)
    with pytest.raises(UnsupportedModelError, match="reshape"):
        reshape(ctx, "reshape", (mt, 2, 4, 144), {})


# --- the mask objects --------------------------------------------------------------------------


def test_mask_views_and_memo():
    keep = patch_mask(2, 6, 2, 0.5, seed=0)
    mask = Mask(keep)
    assert mask.view(Layout(4, 1, 2)).shape == (2, 6, 6, 1)
    assert mask.view(Layout(4, 3, 2)).shape == (2, 1, 6, 6)
    assert torch.equal(mask.view(Layout(4, 3, 2))[:, 0], keep[:, 0].transpose(1, 2))
    calls = []
    for _ in range(3):
        mask.memo("k", lambda: calls.append(1))
    assert len(calls) == 1


def test_stack_inserts_a_dim():
    """``torch.stack`` along dim 1 (selective kernels): layout shifts, masks intersect."""
    ctx = Context(variant=Variant.PAPER)
    x, keep_a = _input(seed=0)
    _, keep_b = _input(seed=5)
    a, b = _mt(ctx, x, keep_a), _mt(ctx, x, keep_b)
    out = function_rule_for(torch.stack)(ctx, torch.stack, ([a, b], 1), {})
    assert out.layout == Layout(5, 3, 4) and torch.equal(out.mask.keep, keep_a & keep_b)
    summed = method_rule_for("sum")(ctx, "sum", (out, 1), {})
    assert summed.layout == NCHW and torch.equal(summed.value, 2 * x)


@pytest.mark.parametrize("variant", [Variant.ZERO, Variant.CROP])
def test_pool_same(variant):
    """timm ``MaxPool2dSame`` / ``AvgPool2dSame``: TF padding from the input size."""
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    x, keep = _input()
    pads = (0, 1, 0, 1)  # 12 -> 6 with k=3, s=2
    pool = MaxPool2dSame(3, 2)
    out = _apply(pool, variant, x, keep)
    fill = float("-inf") if variant is Variant.CROP else 0.0
    expected = F.max_pool2d(F.pad(x.masked_fill(~keep, fill), pads, value=float("-inf")), 3, 2)
    if variant is Variant.CROP:
        mask = keep[:, :, 1::2, 1::2]
    else:
        mask = F.max_pool2d(F.pad(keep.float(), pads), 3, 2) > 0
    _assert_visible_close(out, expected, mask)
    pool = AvgPool2dSame(3, 2)
    out = _apply(pool, variant, x, keep)
    _assert_visible_close(out, F.avg_pool2d(F.pad(x * keep, pads), 3, 2), mask)


def test_batch_norm_act():
    """timm ``BatchNormAct2d`` in eval: BN + act per position; train mode refused."""
    from timm.layers import BatchNormAct2d

    bn = BatchNormAct2d(4, act_layer=nn.SiLU).eval()
    x, keep = _input()
    out = _apply(bn, Variant.PAPER, x, keep)
    assert torch.equal(out.value, bn(x)) and torch.equal(out.mask.keep, keep)
    bn.train()
    with pytest.raises(UnsupportedModelError, match="eval mode"):
        _apply(bn, Variant.PAPER, x, keep)


def test_interpolate_bilinear():
    """Bilinear upsampling: filled input; visible where any visible input contributes."""
    x, keep = _input()
    out = _apply(F.interpolate, Variant.ZERO, x, keep, None, 2, "bilinear")
    expected = F.interpolate(x * keep, scale_factor=2, mode="bilinear")
    mask = F.interpolate(keep.float(), scale_factor=2, mode="bilinear") > 0
    _assert_visible_close(out, expected, mask)


def test_softmax_and_dim_moves():
    """Softmax over channels is position-wise, over space refused; transpose/unsqueeze."""
    x, keep = _input()
    out = _apply(F.softmax, Variant.PAPER, x, keep, 1)
    assert torch.equal(out.value, F.softmax(x, 1))
    with pytest.raises(UnsupportedModelError, match="spatial"):
        _apply(F.softmax, Variant.PAPER, x, keep, -1)
    assert _apply("transpose", Variant.PAPER, x, keep, 1, 3).layout == Layout(4, 2, 1)
    assert _apply("unsqueeze", Variant.PAPER, x, keep, 1).layout == Layout(5, 3, 4)
    with pytest.raises(UnsupportedModelError, match="batch"):
        _apply("transpose", Variant.PAPER, x, keep, 0, 1)


def test_metadata_reads_are_allowed():
    """``x.shape`` / ``x.size()`` of a masked activation are metadata, not data."""
    import builtins

    x, keep = _input()
    assert _apply("size", Variant.PAPER, x, keep, 2) == 12
    assert _apply(builtins.getattr, Variant.PAPER, x, keep, "shape") == x.shape
    with pytest.raises(UnsupportedModelError, match="attribute"):
        _apply(builtins.getattr, Variant.PAPER, x, keep, "T")
