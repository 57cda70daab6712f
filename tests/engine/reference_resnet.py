"""A slow, explicit reference of the published layer-masking rules (shared/PAPER.md).

Written to be obviously correct rather than fast: neighbour padding runs the published
k full passes with explicit shifted sums, every rule multiplies by the mask exactly as
the paper's table says. Used as an oracle for the engine's ``Variant.PAPER``.

* :class:`TinyResNet`: a hand-built small ResNet (BasicBlock + Bottleneck with
  squeeze-excite, max pool, downsample, global average pool, linear head) with an
  ordinary forward, so the engine can trace it.
* :func:`reference_tiny_resnet`: the same network evaluated with the paper's rules.
* :func:`reference_timm_resnet`: the paper's rules written out for timm's ResNet
  (BasicBlock / Bottleneck, optional SE) as an independent check on a real model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------
# The rules, one explicit function each
# ---------------------------------------------------------------------------------------


def neighbour_pad(x: torch.Tensor, mask: torch.Tensor, passes: int) -> torch.Tensor:
    """Published neighbour padding: zero masked positions, then ``passes`` onion-peel passes.

    Each pass: every unknown position with at least one known position in its 3 x 3
    neighbourhood becomes sum(known neighbours) / (count + 1e-5) and becomes known.
    The image border is zero padding and never known.
    """
    x = x * mask
    known = mask.clone()
    height, width = x.shape[-2:]
    for _ in range(passes):
        padded_x = F.pad(x * known, (1, 1, 1, 1))
        padded_k = F.pad(known, (1, 1, 1, 1))
        total = torch.zeros_like(x)
        count = torch.zeros_like(known)
        for dy in range(3):
            for dx in range(3):
                total = total + padded_x[..., dy : dy + height, dx : dx + width]
                count = count + padded_k[..., dy : dy + height, dx : dx + width]
        new = (count > 0) & (known == 0)
        x = torch.where(new, total / (count + 1e-5), x)
        known = torch.where(new, torch.ones_like(known), known)
    return x


def conv_rule(conv: nn.Conv2d, x: torch.Tensor, mask: torch.Tensor):
    """k x k conv (k > 1): neighbour pad (k passes), conv, times M' = max_pool(M)."""
    k = conv.kernel_size[0]
    x = neighbour_pad(x, mask, k) if k > 1 else x * mask
    y = conv(x)
    new_mask = F.max_pool2d(mask, k, conv.stride, conv.padding, conv.dilation)
    return y * new_mask, new_mask


def pointwise_rule(fn, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Batch norm (eval) and activations: f(x * M) * M."""
    return fn(x * mask) * mask


def max_pool_rule(pool: nn.MaxPool2d, x: torch.Tensor, mask: torch.Tensor):
    """max_pool(x) * max_pool(M)."""
    new_mask = F.max_pool2d(mask, pool.kernel_size, pool.stride, pool.padding)
    return pool(x * mask) * new_mask, new_mask


def add_rule(a: torch.Tensor, mask_a: torch.Tensor, b: torch.Tensor, mask_b: torch.Tensor):
    """Residual add: (a + b) * (M_a * M_b)."""
    new_mask = mask_a * mask_b
    return (a + b) * new_mask, new_mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(x * M) / (sum(M) + 1e-8) over space, keepdim."""
    return (x * mask).sum((2, 3), keepdim=True) / (mask.sum((2, 3), keepdim=True) + 1e-8)


# ---------------------------------------------------------------------------------------
# A hand-built small ResNet
# ---------------------------------------------------------------------------------------


class SE(nn.Module):
    """Squeeze-excite: spatial mean, 1 x 1 conv, ReLU, 1 x 1 conv, sigmoid gate."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def gate(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean((2, 3), keepdim=True))


class BasicBlock(nn.Module):
    """Two 3 x 3 convs with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + x)


class Bottleneck(nn.Module):
    """1 x 1, strided 3 x 3, 1 x 1 convs, squeeze-excite, 1 x 1 strided downsample."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.se = SE(cout, 4)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.se(self.bn3(self.conv3(y)))
        return F.relu(y + self.down(x))


class TinyResNet(nn.Module):
    """Stem 7 x 7/2 + max pool 3 x 3/2, BasicBlock, Bottleneck/2 with SE, GAP, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.block1 = BasicBlock(8)
        self.block2 = Bottleneck(8, 6, 16, 2)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.block2(self.block1(x))
        return self.fc(x.mean((2, 3)))


def randomise_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.1)


@torch.no_grad()
def reference_tiny_resnet(model: TinyResNet, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``model`` evaluated with the published layer-masking rules."""
    m = keep.to(x.dtype)
    x = x * m
    x, m = conv_rule(model.conv1, x, m)
    x = pointwise_rule(lambda t: F.relu(model.bn1(t)), x, m)
    x, m = max_pool_rule(model.pool, x, m)

    b = model.block1
    y, my = conv_rule(b.conv1, x, m)
    y = pointwise_rule(lambda t: F.relu(b.bn1(t)), y, my)
    y, my = conv_rule(b.conv2, y, my)
    y = pointwise_rule(b.bn2, y, my)
    x, m = add_rule(y, my, x, m)
    x = pointwise_rule(F.relu, x, m)

    b = model.block2
    y, my = conv_rule(b.conv1, x, m)
    y = pointwise_rule(lambda t: F.relu(b.bn1(t)), y, my)
    y, my = conv_rule(b.conv2, y, my)
    y = pointwise_rule(lambda t: F.relu(b.bn2(t)), y, my)
    y, my = conv_rule(b.conv3, y, my)
    y = pointwise_rule(b.bn3, y, my)
    y = y * b.se.gate(masked_mean(y, my)) * my
    s, ms = conv_rule(b.down[0], x, m)
    s = pointwise_rule(b.down[1], s, ms)
    x, m = add_rule(y, my, s, ms)
    x = pointwise_rule(F.relu, x, m)

    return model.fc(masked_mean(x, m).flatten(1))


# ---------------------------------------------------------------------------------------
# timm ResNet written out with the same rules
# ---------------------------------------------------------------------------------------


def _timm_block(block: nn.Module, x: torch.Tensor, m: torch.Tensor):
    y, my = conv_rule(block.conv1, x, m)
    y = pointwise_rule(lambda t: block.act1(block.bn1(t)), y, my)
    y, my = conv_rule(block.conv2, y, my)
    y = pointwise_rule(block.bn2, y, my)
    if hasattr(block, "conv3"):  # Bottleneck
        y = pointwise_rule(block.act2, y, my)
        y, my = conv_rule(block.conv3, y, my)
        y = pointwise_rule(block.bn3, y, my)
    if getattr(block, "se", None) is not None:
        se = block.se
        pooled = masked_mean(y, my)
        gate = se.gate(se.fc2(se.act(se.bn(se.fc1(pooled)))))
        y = y * gate * my
    if block.downsample is not None:
        conv, bn = block.downsample[0], block.downsample[1]
        s, ms = conv_rule(conv, x, m)
        s = pointwise_rule(bn, s, ms)
    else:
        s, ms = x, m
    x, m = add_rule(y, my, s, ms)
    act = block.act3 if hasattr(block, "act3") else block.act2
    return pointwise_rule(act, x, m), m


@torch.no_grad()
def reference_timm_resnet(model: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A timm ResNet (plain stem, max pool, BasicBlock/Bottleneck) under the paper's rules."""
    m = keep.to(x.dtype)
    x = x * m
    x, m = conv_rule(model.conv1, x, m)
    x = pointwise_rule(lambda t: model.act1(model.bn1(t)), x, m)
    x, m = max_pool_rule(model.maxpool, x, m)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            x, m = _timm_block(block, x, m)
    return model.fc(masked_mean(x, m).flatten(1))
