"""Keep-masks carried beside activations, and the geometry of spatial windows.

A :class:`Mask` is one (B, 1, H, W) bool tensor (True = visible) that lives for one
forward pass. Masks belong to *tensors*: the value flowing along each graph edge is an
:class:`MT` (masked tensor) that pairs the activation with its mask and a
:class:`Layout` saying which dims of the activation are batch and space.

Everything derived from a mask (its dilation by a conv window, its stride subsampling,
neighbour-fill weights, window counts) is memoised on the mask, so it is computed once
per distinct (mask, op parameters) within a forward pass, never per activation channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "MT",
    "Layout",
    "Mask",
    "Window",
    "dilate",
    "intersect",
    "subsample",
    "window_count",
    "work_dtype",
]


class Layout(NamedTuple):
    """Where batch and space sit in an activation: dim 0 is always the batch.

    ``ndim`` is the activation's rank, ``h`` and ``w`` the dims holding height and
    width. NCHW is ``Layout(4, 2, 3)``; channels-last NHWC is ``Layout(4, 1, 2)``.
    """

    ndim: int
    h: int
    w: int

    @property
    def is_nchw(self) -> bool:
        """True for the (B, C, H, W) layout every spatial op expects."""
        return self.ndim == 4 and self.h == 2 and self.w == 3


NCHW = Layout(4, 2, 3)


#: Whether masks may read their values on the host (``all_visible``, the intersection
#: reuse test) to skip work that would change nothing. Each read is a host sync (some
#: 36 per ResNet-50 forward), but on an H200 skipping the work is worth more than
#: avoiding the syncs: without these reads ``layer_masking`` took 5.5x the plain
#: forward instead of 4.2x (neighbour padding ran at every all-visible deep layer).
#: False is the sync-free path, kept tested (same values up to float rounding). This is
#: the default of each forward's :attr:`Context.host_reads`; forwards captured in a CUDA
#: graph (:mod:`maskbench.engine.graphs`) never read the host, whatever it says.
HOST_SHORTCUTS: bool = True


class Mask:
    """A keep-mask of shape (B, 1, H, W), bool, True = visible; one forward pass only.

    Derived masks and weights are memoised on the instance (see :meth:`memo`), so a mask
    that feeds twenty convolutions is dilated once per distinct window.
    """

    __slots__ = ("__weakref__", "_all", "_family", "_host_reads", "_memo", "_symbolic", "keep")

    def __init__(
        self,
        keep: torch.Tensor,
        *,
        symbolic: bool = False,
        host_reads: bool = True,
        family: list[Mask] | None = None,
    ) -> None:
        if keep.dtype != torch.bool or keep.dim() != 4 or keep.shape[1] != 1:
            raise ValueError(f"a Mask needs a (B, 1, H, W) bool tensor, got {keep.shape}")
        self.keep = keep
        self._memo: dict[Hashable, Any] = {}
        self._all: bool | None = None
        # symbolic: values are fake/meta tensors (check mode); never read data
        self._symbolic = symbolic
        # whether values may be read on the host to skip work (never in symbolic mode)
        self._host_reads = host_reads and not symbolic
        # every mask derived from the same input mask, so that release() can find them
        self._family = [] if family is None else family
        self._family.append(self)

    @property
    def hw(self) -> tuple[int, int]:
        """Spatial size (H, W)."""
        return int(self.keep.shape[2]), int(self.keep.shape[3])

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Return the value cached under ``key``, computing it on first use."""
        try:
            return self._memo[key]
        except KeyError:
            value = compute()
            self._memo[key] = value
            return value

    def derive(self, keep: torch.Tensor) -> Mask:
        """A new mask with the same symbolic-ness, host reads (and family) as this one."""
        return Mask(keep, symbolic=self._symbolic, host_reads=self._host_reads, family=self._family)

    def release(self) -> None:
        """Forget the memos of this mask and of every mask derived from the same root.

        Memos refer to other masks (an intersection memoised on one mask may be the
        other), and the family list refers to every member: reference cycles. Call this
        when the forward pass is over, so that its masks are freed at once by reference
        counting rather than whenever the cyclic garbage collector runs.
        """
        family = self._family
        for mask in family:
            mask._memo.clear()
            mask._family = []
        family.clear()

    def all_visible(self) -> bool:
        """True when every position of every sample is visible (one host sync, cached).

        Rules use it to skip masking work that would change nothing. Always False in
        symbolic (check) mode, and for masks made without host reads (the forward's
        :attr:`Context.host_reads`; then the general path runs: the same values up to
        float rounding, and no host sync).
        """
        if not self._host_reads:
            return False
        if self._all is None:
            self._all = bool(self.keep.all())
        return self._all

    def view(self, layout: Layout) -> torch.Tensor:
        """The mask as a bool tensor that broadcasts against an activation of ``layout``."""
        if layout.is_nchw:
            return self.keep
        return self.memo(("view", layout), lambda: _view_for(self.keep, layout))

    def as_float(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The mask as 0/1 floats of ``dtype`` (cached per dtype)."""
        return self.memo(("float", dtype), lambda: self.keep.to(dtype))

    def shared_memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Like :meth:`memo`, but shared by every mask of the forward (its family).

        For values that depend on the mask's geometry or device only, not its values.
        """
        root = self._family[0] if self._family else self
        return root.memo(("shared", key), compute)

    def scalar(self, value: float, dtype: torch.dtype) -> torch.Tensor:
        """``value`` as a 0-d tensor on the mask's device, one per forward and dtype.

        ``torch.where(keep, x, 0.0)`` makes a device scalar for its ``0.0`` at every
        call (a kernel of its own on a GPU); rules pass this shared one instead.
        """
        return self.shared_memo(
            ("scalar", value, dtype),
            lambda: torch.full((), value, dtype=dtype, device=self.keep.device),
        )

    def ones_kernel(
        self, kernel: tuple[int, int], dtype: torch.dtype, channels: int = 1
    ) -> torch.Tensor:
        """A (channels, 1, kh, kw) ones convolution kernel on the mask's device (shared):
        a window sum, depthwise for ``channels`` > 1."""
        return self.shared_memo(
            ("ones", tuple(kernel), dtype, channels),
            lambda: torch.ones((channels, 1, *kernel), dtype=dtype, device=self.keep.device),
        )

    def where_visible(self, layout: Layout, x: torch.Tensor, fill: float) -> torch.Tensor:
        """``x`` at visible positions, ``fill`` at removed ones (one kernel)."""
        return torch.where(self.view(layout), x, self.scalar(fill, x.dtype))


def _view_for(keep: torch.Tensor, layout: Layout) -> torch.Tensor:
    b, _, h, w = keep.shape
    plane = keep[:, 0]
    if layout.h > layout.w:
        plane = plane.transpose(1, 2)
    shape = [1] * layout.ndim
    shape[0] = b
    shape[layout.h] = h
    shape[layout.w] = w
    return plane.reshape(shape)


class MT(NamedTuple):
    """A masked tensor: an activation, its keep-mask, and where batch/space sit in it.

    Values of the activation under removed positions are garbage (possibly NaN or Inf);
    every rule that mixes positions must read only visible ones.
    """

    value: torch.Tensor
    mask: Mask
    layout: Layout

    def keep_view(self) -> torch.Tensor:
        """The mask broadcastable against :attr:`value`."""
        return self.mask.view(self.layout)


@dataclass(frozen=True)
class Window:
    """The window geometry of a spatial op along (height, width).

    ``pad`` is explicit and possibly asymmetric: (top, bottom, left, right).
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]
    ceil_mode: bool = False

    @property
    def effective(self) -> tuple[int, int]:
        """Span of the window in input positions, dilation included."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def is_pointwise(self) -> bool:
        """A 1 x 1 window: reads only the position it writes."""
        return self.effective == (1, 1)

    @property
    def symmetric(self) -> bool:
        """Whether padding is the same on both sides of each dim."""
        t, b, left, r = self.pad
        return t == b and left == r

    @property
    def centre(self) -> tuple[int, int]:
        """Offset of the window's centre (the lower middle for even kernels)."""
        return tuple(d * ((k - 1) // 2) for k, d in zip(self.kernel, self.dilation, strict=True))

    def rings(self) -> int:
        """Neighbour-padding rings a visible output can read: d * (k - 1)."""
        return max(e - 1 for e in self.effective)

    def key(self) -> tuple:
        """Hashable identity for memoisation."""
        return (self.kernel, self.stride, self.dilation, self.pad, self.ceil_mode)

    @staticmethod
    def make(
        kernel: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        ceil_mode: bool = False,
    ) -> Window:
        """Build a window from the usual conv / pool arguments (symmetric padding)."""
        k = _pair(kernel)
        s = _pair(stride) if stride not in (None, (), []) else k
        p = _pair(padding)
        d = _pair(dilation)
        return Window(k, s, d, (p[0], p[0], p[1], p[1]), ceil_mode)


def _pair(v: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision for mask-derived weights: float64 for float64 activations, else float32.

    Weights are computed at this precision and cast to the activation's dtype once per
    (mask, dtype), so low-precision runs never compute them in bf16 / fp16.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one dim, as timm's ``pad_same``."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


# ---------------------------------------------------------------------------------------
# Mask derivations (memoised on the source mask)
# ---------------------------------------------------------------------------------------


def _check_size(out: torch.Tensor, out_hw: tuple[int, int], what: str) -> torch.Tensor:
    if tuple(out.shape[-2:]) != tuple(out_hw):
        raise RuntimeError(
            f"maskbench internal error: {what} mask has size {tuple(out.shape[-2:])}, "
            f"the activation has {tuple(out_hw)}"
        )
    return out


def dilate(mask: Mask, window: Window, out_hw: tuple[int, int], *, pool: bool = False) -> Mask:
    """Output visible where any input of its window is visible: ``max_pool(M, window)``.

    ``pool=True`` mirrors a pooling op exactly (ceil mode and implicit padding as the
    pool does it); otherwise the window is a convolution's (explicit zero padding).
    """
    out_hw = (int(out_hw[0]), int(out_hw[1]))

    def compute() -> Mask:
        if window.is_pointwise and window.pad == (0, 0, 0, 0) and not window.ceil_mode:
            return subsample(mask, window, out_hw)
        m = mask.as_float()
        t, b, left, r = window.pad
        small = t <= window.kernel[0] // 2 and left <= window.kernel[1] // 2
        if window.symmetric and (pool or small):
            # exactly the op's own implicit padding (and ceil mode, for pools)
            out = F.max_pool2d(
                m, window.kernel, window.stride, (t, left), window.dilation, window.ceil_mode
            )
        else:
            m = F.pad(m, (left, r, t, b))
            out = F.max_pool2d(
                m, window.kernel, window.stride, 0, window.dilation, window.ceil_mode
            )
        derived = mask.derive(_check_size(out, out_hw, "dilated") > 0)
        # the max of 0/1 floats is the 0/1 float form of the result: the next dilation
        # of the chain reads it instead of converting the bool mask again
        derived._memo[("float", m.dtype)] = out
        return derived

    return mask.memo(("dilate", window.key(), out_hw, pool), compute)


def subsample(mask: Mask, window: Window, out_hw: tuple[int, int]) -> Mask:
    """Output visible where the *centre* input of its window is visible.

    For a stride-1 "same" window this is the mask itself; for stride s it keeps every
    s-th position. Window centres outside the input count as removed.
    """
    out_hw = (int(out_hw[0]), int(out_hw[1]))

    def compute() -> Mask:
        h, w = mask.hw
        rows = _centres(out_hw[0], window.stride[0], window.pad[0], window.centre[0])
        cols = _centres(out_hw[1], window.stride[1], window.pad[2], window.centre[1])
        if rows == range(h) and cols == range(w):
            return mask
        keep = mask.keep
        keep = _take(keep, 2, rows, h)
        keep = _take(keep, 3, cols, w)
        return mask.derive(keep)

    return mask.memo(("subsample", window.key(), out_hw), compute)


def _centres(n_out: int, stride: int, pad_before: int, centre: int) -> range:
    start = centre - pad_before
    return range(start, start + n_out * stride, stride)


def _take(keep: torch.Tensor, dim: int, idx: range, size: int) -> torch.Tensor:
    """``keep`` at positions ``idx`` along ``dim``; positions outside [0, size) are False."""
    if len(idx) > 0 and idx.start >= 0 and idx[-1] < size:
        index = [slice(None)] * keep.dim()
        index[dim] = slice(idx.start, idx[-1] + 1, idx.step)
        return keep[tuple(index)]
    # arange on the device, not a tensor made from a Python list: no host-to-device copy
    # (which a CUDA graph capture would refuse)
    index_t = torch.arange(idx.start, idx.stop, idx.step, device=keep.device)
    inside = (index_t >= 0) & (index_t < size)
    taken = keep.index_select(dim, index_t.clamp(0, max(size - 1, 0)))
    shape = [1] * keep.dim()
    shape[dim] = len(idx)
    return taken & inside.view(shape)


def window_count(mask: Mask, window: Window, out_hw: tuple[int, int]) -> torch.Tensor:
    """Number of visible inputs in each conv window, float32, shape (B, 1, h', w')."""
    out_hw = (int(out_hw[0]), int(out_hw[1]))

    def compute() -> torch.Tensor:
        m = mask.as_float()
        t, b, left, r = window.pad
        if (t, b, left, r) != (0, 0, 0, 0):
            m = F.pad(m, (left, r, t, b))
        ones = mask.ones_kernel(window.kernel, m.dtype)
        out = F.conv2d(m, ones, None, window.stride, 0, window.dilation)
        return _check_size(out, out_hw, "window-count").round()

    return mask.memo(("count", window.key(), out_hw), compute)


def intersect(masks: list[Mask]) -> Mask:
    """Visible where every mask is visible. Returns an input mask when it is the result."""
    unique: list[Mask] = []
    for m in masks:
        if all(m is not u for u in unique):
            unique.append(m)
    if len(unique) == 1:
        return unique[0]
    first = unique[0]
    key = ("and", *(id(m) for m in unique[1:]))

    def compute() -> Mask:
        keep = first.keep
        for m in unique[1:]:
            keep = keep & m.keep
        if first._host_reads:
            # reuse an input mask object when it *is* the intersection (the usual case
            # for residual adds), so memoised derivations keep being shared downstream
            for m in unique:
                if torch.equal(keep, m.keep):
                    return m
        return first.derive(keep)

    return first.memo(key, compute)
