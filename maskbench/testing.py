"""Hypothesis strategies for mask *parameters* (never raw tensors).

Drawing parameters instead of tensors keeps failures small and readable: a shrunk
example reads "keep rectangle (0, 0, 1, 3) of a 32x32 image, seed 0", not a wall of
numbers. Every draw here has a ``build`` step that turns it into a mask.

Example::

    from hypothesis import given
    from maskbench import testing as mbt

    @given(spec=mbt.mask_specs((64, 64)))
    def test_something(spec):
        mask = spec.build((64, 64))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from maskbench.masks.builders import (
    masks_from_keep,
    random_order,
    rectangle_masks,
    removed_count,
)
from maskbench.masks.segments import patch_grid

MAX_SEED = 2**31 - 1


def seeds() -> st.SearchStrategy[int]:
    """Seeds for random number generators (shrink towards 0)."""
    return st.integers(min_value=0, max_value=MAX_SEED)


def fractions(*, step: float | None = None, low: float = 0.0, high: float = 1.0):
    """Removal fractions in [low, high]; on a grid of ``step`` when given (e.g. 0.1)."""
    if step is None:
        return st.floats(min_value=low, max_value=high, allow_nan=False)
    count = round((high - low) / step)
    return st.integers(0, count).map(lambda i: round(low + i * step, 10))


@st.composite
def rectangles(
    draw, size: tuple[int, int], *, min_side: int = 1, max_side: int | None = None
) -> tuple[int, int, int, int]:
    """A rectangle ``(top, left, height, width)`` fully inside an image of ``size``."""
    height, width = size
    max_h = min(height, max_side or height)
    max_w = min(width, max_side or width)
    rect_h = draw(st.integers(min_side, max_h))
    rect_w = draw(st.integers(min_side, max_w))
    top = draw(st.integers(0, height - rect_h))
    left = draw(st.integers(0, width - rect_w))
    return (top, left, rect_h, rect_w)


@st.composite
def aligned_rectangles(
    draw, size: tuple[int, int], stride: int, *, min_cells: int = 1, max_cells: int | None = None
) -> tuple[int, int, int, int]:
    """A rectangle whose offsets and sides are multiples of ``stride``, inside ``size``."""
    rows, cols = size[0] // stride, size[1] // stride
    if rows < min_cells or cols < min_cells:
        raise ValueError(f"a {size} image has no {min_cells}-cell rectangle at stride {stride}")
    cells_h = draw(st.integers(min_cells, min(rows, max_cells or rows)))
    cells_w = draw(st.integers(min_cells, min(cols, max_cells or cols)))
    top = draw(st.integers(0, rows - cells_h))
    left = draw(st.integers(0, cols - cells_w))
    return (top * stride, left * stride, cells_h * stride, cells_w * stride)


def keep_vectors(num_segments: int, *, min_kept: int = 0) -> st.SearchStrategy[tuple[bool, ...]]:
    """Per-segment keep-vectors (True = kept) with at least ``min_kept`` kept segments."""
    return (
        st.lists(st.booleans(), min_size=num_segments, max_size=num_segments)
        .filter(lambda v: sum(v) >= min_kept)
        .map(tuple)
    )


@dataclass(frozen=True)
class MaskSpec:
    """A mask described by parameters; :meth:`build` makes the tensor.

    kinds:
        ``"keep_rect"``: keep ``rect`` (top, left, h, w), remove the rest;
        ``"remove_rect"``: remove ``rect``, keep the rest;
        ``"patches"``: remove ``fraction`` of ``patch`` x ``patch`` patches in a random
        order drawn from ``seed``;
        ``"all"`` / ``"none"``: keep everything / nothing.
    """

    kind: str
    rect: tuple[int, int, int, int] | None = None
    fraction: float = 0.0
    patch: int = 16
    seed: int = 0

    def build(self, size: tuple[int, int], device=None) -> torch.Tensor:
        """The (1, 1, H, W) bool keep-mask for an image of ``size``."""
        if self.kind == "all":
            return torch.ones((1, 1, *size), dtype=torch.bool, device=device)
        if self.kind == "none":
            return torch.zeros((1, 1, *size), dtype=torch.bool, device=device)
        if self.kind in ("keep_rect", "remove_rect"):
            return rectangle_masks(
                size, [self.rect], keep_inside=self.kind == "keep_rect", device=device
            )
        if self.kind == "patches":
            segments = patch_grid(size, self.patch, device=device)
            num = int(segments.max()) + 1
            order = random_order(num, self.seed, device=device)
            removed = removed_count(num, self.fraction)
            keep = torch.ones(num, dtype=torch.bool, device=device)
            keep[order[:removed]] = False
            return masks_from_keep(segments, keep)
        raise ValueError(f"unknown MaskSpec kind {self.kind!r}")

    def describe(self) -> str:
        """A short human-readable description for failure messages."""
        if self.kind in ("keep_rect", "remove_rect"):
            return f"{self.kind} (top, left, h, w)={self.rect}"
        if self.kind == "patches":
            return f"remove {self.fraction:g} of {self.patch}px patches, order seed {self.seed}"
        return self.kind


def mask_specs(
    size: tuple[int, int], *, patch: int = 16, allow_empty: bool = True
) -> st.SearchStrategy[MaskSpec]:
    """Masks of every kind for an image of ``size``: rectangles, patch removals, edges."""
    rect = rectangles(size)
    kinds = [
        rect.map(lambda r: MaskSpec("keep_rect", rect=r)),
        rect.map(lambda r: MaskSpec("remove_rect", rect=r)),
        st.builds(
            lambda f, s: MaskSpec("patches", fraction=f, patch=patch, seed=s),
            fractions(step=0.1),
            seeds(),
        ),
        st.just(MaskSpec("all")),
    ]
    if allow_empty:
        kinds.append(st.just(MaskSpec("none")))
    return st.one_of(*kinds)


def partial_mask_specs(size: tuple[int, int], *, patch: int = 16) -> st.SearchStrategy[MaskSpec]:
    """Masks that remove something and keep something (for content-dependence checks)."""
    height, width = size

    def partial(spec: MaskSpec) -> bool:
        if spec.kind in ("all", "none"):
            return False
        if spec.kind == "patches":
            return 0.0 < spec.fraction < 1.0
        _top, _left, rect_h, rect_w = spec.rect
        return rect_h * rect_w < height * width

    return mask_specs(size, patch=patch, allow_empty=False).filter(partial)
