"""The audit's checks, one per claim: what hypothesis draws, what the figure is measured on.

Every check knows, for its claim:

* :meth:`Check.draw`: a hypothesis strategy of :class:`Example` *parameters* (image
  indices, :class:`~maskbench.testing.MaskSpec`, boxes, offsets, seeds; never raw
  tensors), used to search for counterexamples when a strategy makes the claim;
* :meth:`Check.references`: a few fixed, readable examples, the same for every
  strategy, on which the recorded figure is measured (so figures are reproducible and
  comparable between strategies, runs and machines);
* :meth:`Check.run`: one example through the plain check function of
  :mod:`maskbench.invariants`, giving a :class:`~maskbench.invariants.CheckResult`;
* :meth:`Check.figures`: the named figures that results give.

Nothing here needs pytest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

from maskbench import invariants as inv
from maskbench import testing as mbt
from maskbench.audit import drift
from maskbench.strategies.base import Strategy
from maskbench.strategies.claims import Claim
from maskbench.testing import MaskSpec

Box = tuple[int, int, int, int]

#: Total stride used for crop and translation checks when the model does not say.
DEFAULT_STRIDE = 32
#: Regression tolerance of a relative-gap figure: max(floor, share * value).
GAP_TOLERANCE_FLOOR = 1e-4
GAP_TOLERANCE_SHARE = 0.1
#: Regression tolerance of the drift figures (absolute).
DRIFT_TOLERANCE = 0.05
#: Removal orders per drawn drift example, and for the reference measurement.
DRIFT_SEARCH_ORDERS = 2
DRIFT_REFERENCE_ORDERS = (0, 1)
#: Images in the reference drift measurement (the first ones of the bank).
DRIFT_REFERENCE_IMAGES = 4


@dataclass(frozen=True)
class Applicability:
    """Whether crop-based claims (crop equivalence, translation) apply, and why not."""

    applicable: bool = True
    reason: str = ""


@dataclass(frozen=True)
class AuditInputs:
    """Everything a check needs: the strategy, the model, images and geometry.

    Attributes:
        strategy: the strategy under audit.
        model: a pixel-space model in eval mode.
        images: (N, C, H, W) pixel-space images on the model's device and dtype.
        batch_size: images per example (>= 2 for batch consistency).
        stride: the model's total stride (crop and translation boxes are aligned to it).
        crop: whether the model/strategy pair supports crop-exact semantics.
    """

    strategy: Strategy
    model: nn.Module
    images: torch.Tensor
    batch_size: int
    stride: int = DEFAULT_STRIDE
    crop: Applicability = field(default_factory=Applicability)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return (int(self.images.shape[-2]), int(self.images.shape[-1]))

    @property
    def count(self) -> int:
        """How many images the bank holds."""
        return int(self.images.shape[0])

    def indices(self, start: int, count: int | None = None) -> tuple[int, ...]:
        """``count`` (default ``batch_size``) image indices from ``start``, wrapping around."""
        count = self.batch_size if count is None else count
        return tuple((start + k) % self.count for k in range(count))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` as one batch."""
        return self.images[list(indices)]

    def grid(self) -> tuple[int, int]:
        """Rows and columns of stride cells that fit in the image."""
        return (self.size[0] // self.stride, self.size[1] // self.stride)

    def mask(self, spec: MaskSpec) -> torch.Tensor:
        """The (1, 1, H, W) keep-mask of ``spec`` on the images' device."""
        return spec.build(self.size, device=self.images.device)


@dataclass(frozen=True)
class Example:
    """The parameters of one check run (only the fields a claim uses are set)."""

    images: tuple[int, ...]
    masks: tuple[MaskSpec, ...] = ()
    seed: int | None = None
    box: Box | None = None
    offset: tuple[int, int] | None = None
    permutation: tuple[int, ...] | None = None
    orders: tuple[int, ...] = ()

    def describe(self) -> str:
        """A one-line, human-readable account of the example."""
        parts = [f"image index {self.images[0]}" if len(self.images) == 1 else ""]
        if len(self.images) > 1:
            parts = [f"image indices {list(self.images)}"]
        if len(self.masks) == 1:
            parts.append(f"mask {self.masks[0].describe()}")
        elif self.masks:
            parts.append("masks [" + "; ".join(m.describe() for m in self.masks) + "]")
        if self.box is not None:
            parts.append(f"kept box (top, left, h, w)={self.box}")
        if self.offset is not None:
            parts.append(f"moved by (dy, dx)={self.offset}")
        if self.permutation is not None:
            parts.append(f"permutation {list(self.permutation)}")
        if self.orders:
            parts.append(f"removal-order seeds {list(self.orders)}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    Attributes:
        value: the number (or, for curves, the list of numbers).
        better: ``"lower"``, ``"higher"`` or ``None`` (informational, not gated).
        tolerance: how much worse a later run may be before the baseline gate fails.
        doc: what the figure means.
    """

    value: float | list[float] | None
    better: str | None
    tolerance: float | None
    doc: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "value": self.value,
            "better": self.better,
            "tolerance": self.tolerance,
            "doc": self.doc,
        }


def gap_figure(value: float, doc: str) -> Figure:
    """A relative-gap figure (lower is better) with its default regression tolerance."""
    tolerance = max(GAP_TOLERANCE_FLOOR, GAP_TOLERANCE_SHARE * abs(value))
    if value != value or value == float("inf"):
        tolerance = 0.0
    return Figure(value, "lower", tolerance, doc)


def _start(inputs: AuditInputs) -> st.SearchStrategy[tuple[int, ...]]:
    return st.integers(0, inputs.count - 1).map(inputs.indices)


def _reference_starts(inputs: AuditInputs) -> list[tuple[int, ...]]:
    starts = range(0, inputs.count, inputs.batch_size)
    return [inputs.indices(s) for s in starts][:2] or [inputs.indices(0)]


def _centre_rect(size: tuple[int, int], share: float = 0.5) -> Box:
    height, width = size
    rect_h, rect_w = max(1, round(height * share)), max(1, round(width * share))
    return ((height - rect_h) // 2, (width - rect_w) // 2, rect_h, rect_w)


class Check:
    """The audit of one claim. Subclasses set the class attributes and the methods."""

    claim: Claim
    #: Name of the figure recorded for the claim (its column in the scorecard).
    figure: str
    #: What that figure means.
    figure_doc: str

    def unavailable(self, inputs: AuditInputs) -> str:
        """Why the check cannot even be measured on these inputs ("" if it can)."""
        return ""

    def not_applicable(self, inputs: AuditInputs) -> str:
        """Why the claim does not apply to this model/strategy ("" if it does)."""
        return ""

    def draw(self, inputs: AuditInputs) -> st.SearchStrategy[Example]:
        """Hypothesis strategy of examples for the counterexample search."""
        raise NotImplementedError

    def references(self, inputs: AuditInputs) -> list[Example]:
        """The fixed examples the recorded figure is measured on."""
        raise NotImplementedError

    def run(self, inputs: AuditInputs, example: Example) -> inv.CheckResult:
        """Run one example."""
        raise NotImplementedError

    def figures(self, results: Sequence[inv.CheckResult]) -> dict[str, Figure]:
        """Named figures from the reference results (default: the worst gap)."""
        return {self.figure: gap_figure(inv.measure(results).worst, self.figure_doc)}


class IdentityCheck(Check):
    """An all-kept mask gives the unmasked logits."""

    claim = Claim.IDENTITY
    figure = "identity_gap"
    figure_doc = "relative logit gap, all-kept mask vs plain forward (worst over references)"

    def draw(self, inputs):
        return _start(inputs).map(lambda idx: Example(images=idx))

    def references(self, inputs):
        return [Example(images=idx) for idx in _reference_starts(inputs)]

    def run(self, inputs, example):
        return inv.check_identity(inputs.strategy, inputs.model, inputs.batch(example.images))


class ContentIndependenceCheck(Check):
    """Logits ignore the pixel values under removed positions."""

    claim = Claim.CONTENT_INDEPENDENCE
    figure = "content_sensitivity"
    figure_doc = (
        "relative logit change when removed pixels are replaced by noise, black or white "
        "(worst over references): how much removed content leaks"
    )

    def draw(self, inputs):
        return st.builds(
            lambda idx, spec, seed: Example(images=idx, masks=(spec,), seed=seed),
            _start(inputs),
            mbt.partial_mask_specs(inputs.size),
            mbt.seeds(),
        )

    def references(self, inputs):
        starts = _reference_starts(inputs)
        return [
            Example(
                images=starts[0],
                masks=(MaskSpec("remove_rect", _centre_rect(inputs.size)),),
                seed=0,
            ),
            Example(images=starts[-1], masks=(MaskSpec("patches", fraction=0.5, seed=1),), seed=1),
        ]

    def run(self, inputs, example):
        return inv.check_content_independence(
            inputs.strategy,
            inputs.model,
            inputs.batch(example.images),
            inputs.mask(example.masks[0]),
            seed=example.seed or 0,
        )


class BatchConsistencyCheck(Check):
    """A batch gives its samples' one-by-one logits, in any order."""

    claim = Claim.BATCH_CONSISTENCY
    figure = "batch_gap"
    figure_doc = "relative logit gap, batch vs one by one and permuted (worst over references)"

    def unavailable(self, inputs):
        if inputs.batch_size < 2:
            return "batch consistency needs --batch-size >= 2"
        return ""

    def draw(self, inputs):
        count = inputs.batch_size
        return st.builds(
            lambda idx, specs, perm: Example(images=idx, masks=tuple(specs), permutation=perm),
            _start(inputs),
            st.lists(mbt.mask_specs(inputs.size), min_size=count, max_size=count),
            st.permutations(list(range(count))).map(tuple),
        )

    def references(self, inputs):
        pool = [
            MaskSpec("keep_rect", _centre_rect(inputs.size)),
            MaskSpec("patches", fraction=0.5, seed=0),
            MaskSpec("all"),
            MaskSpec("remove_rect", (0, 0, inputs.size[0] // 2, inputs.size[1] // 2)),
        ]
        specs = tuple(pool[i % len(pool)] for i in range(inputs.batch_size))
        perm = tuple(reversed(range(inputs.batch_size)))
        return [Example(images=inputs.indices(0), masks=specs, permutation=perm)]

    def run(self, inputs, example):
        masks = torch.cat([inputs.mask(spec) for spec in example.masks])
        return inv.check_batch_consistency(
            inputs.strategy,
            inputs.model,
            inputs.batch(example.images),
            masks,
            permutation=example.permutation,
        )


class DeterminismCheck(Check):
    """Two identical calls give identical logits."""

    claim = Claim.DETERMINISM
    figure = "determinism_gap"
    figure_doc = "relative logit gap between two identical calls (worst over references)"

    def draw(self, inputs):
        return st.builds(
            lambda idx, spec: Example(images=idx, masks=(spec,)),
            _start(inputs),
            mbt.mask_specs(inputs.size),
        )

    def references(self, inputs):
        return [
            Example(images=inputs.indices(0), masks=(MaskSpec("patches", fraction=0.5, seed=0),))
        ]

    def run(self, inputs, example):
        return inv.check_determinism(
            inputs.strategy,
            inputs.model,
            inputs.batch(example.images),
            inputs.mask(example.masks[0]),
        )


class CropEquivalenceCheck(Check):
    """Keeping a stride-aligned box gives the model's logits on the crop."""

    claim = Claim.CROP_EQUIVALENCE
    figure = "crop_gap"
    figure_doc = (
        "relative logit gap between keeping a stride-aligned box and running the model on "
        "the crop (worst over references)"
    )

    def unavailable(self, inputs):
        rows, cols = inputs.grid()
        if rows < 1 or cols < 1:
            return f"a {inputs.size} image holds no {inputs.stride}px stride cell"
        return ""

    def not_applicable(self, inputs):
        return "" if inputs.crop.applicable else inputs.crop.reason

    def draw(self, inputs):
        return st.builds(
            lambda idx, box: Example(images=idx, box=box),
            _start(inputs),
            mbt.aligned_rectangles(inputs.size, inputs.stride),
        )

    def references(self, inputs):
        rows, cols = inputs.grid()
        s = inputs.stride
        cells_h, cells_w = max(1, rows // 2), max(1, cols // 2)
        centre = ((rows - cells_h) // 2 * s, (cols - cells_w) // 2 * s, cells_h * s, cells_w * s)
        corner = (0, 0, min(2, rows) * s, min(2, cols) * s)
        starts = _reference_starts(inputs)
        return [Example(images=starts[0], box=centre), Example(images=starts[-1], box=corner)]

    def run(self, inputs, example):
        return inv.check_crop_equivalence(
            inputs.strategy, inputs.model, inputs.batch(example.images), example.box
        )


@st.composite
def aligned_moves(draw, size: tuple[int, int], stride: int) -> tuple[Box, tuple[int, int]]:
    """A stride-aligned box and a stride-aligned offset that keeps it inside ``size``."""
    rows, cols = size[0] // stride, size[1] // stride
    if rows * cols < 2:
        raise ValueError(f"a {size} image has room for no move at stride {stride}")
    if cols == 1:
        cells_h, cells_w = draw(st.integers(1, rows - 1)), 1
    else:
        cells_h = draw(st.integers(1, rows))
        cells_w = draw(st.integers(1, cols if cells_h < rows else cols - 1))
    top = draw(st.integers(0, rows - cells_h))
    left = draw(st.integers(0, cols - cells_w))
    new_top = draw(st.integers(0, rows - cells_h))
    new_left = draw(st.integers(0, cols - cells_w))
    if (new_top, new_left) == (top, left):
        # Move along an axis with room (there is one: the box is smaller than the grid).
        if rows > cells_h:
            new_top = (top + 1) % (rows - cells_h + 1)
        else:
            new_left = (left + 1) % (cols - cells_w + 1)
    box = (top * stride, left * stride, cells_h * stride, cells_w * stride)
    return box, ((new_top - top) * stride, (new_left - left) * stride)


class TranslationCheck(Check):
    """Moving the kept box and its content by an aligned offset keeps the logits."""

    claim = Claim.TRANSLATION_INVARIANCE
    figure = "translation_gap"
    figure_doc = (
        "relative logit gap after moving a stride-aligned kept box and its content by a "
        "stride-aligned offset (worst over references)"
    )

    def unavailable(self, inputs):
        rows, cols = inputs.grid()
        if rows * cols < 2:
            return (
                f"a {inputs.size[0]}x{inputs.size[1]} image has room for no translation at "
                f"stride {inputs.stride}"
            )
        return ""

    def not_applicable(self, inputs):
        return "" if inputs.crop.applicable else inputs.crop.reason

    def draw(self, inputs):
        return st.builds(
            lambda idx, move: Example(images=idx, box=move[0], offset=move[1]),
            _start(inputs),
            aligned_moves(inputs.size, inputs.stride),
        )

    def references(self, inputs):
        rows, cols = inputs.grid()
        s = inputs.stride
        cells_h = max(1, rows // 2) if rows > 1 else 1
        cells_w = max(1, cols // 2) if cols > 1 else 1
        box = (0, 0, cells_h * s, cells_w * s)
        offset = ((rows - cells_h) * s, (cols - cells_w) * s)
        return [Example(images=inputs.indices(0), box=box, offset=offset)]

    def run(self, inputs, example):
        return inv.check_translation_invariance(
            inputs.strategy, inputs.model, inputs.batch(example.images), example.box, example.offset
        )


class MonotoneDriftCheck(Check):
    """Drift from the unmasked logits grows over nested removals."""

    claim = Claim.MONOTONE_DRIFT
    figure = "drift_spearman"
    figure_doc = (
        "mean Spearman correlation between removed fraction (0..0.9 of 16px patches) and "
        "KL drift from the unmasked prediction; higher is better"
    )

    def unavailable(self, inputs):
        if min(inputs.size) < drift.DRIFT_PATCH:
            return f"images smaller than one {drift.DRIFT_PATCH}px patch"
        return ""

    def draw(self, inputs):
        return st.builds(
            lambda idx, orders: Example(images=idx, orders=tuple(orders)),
            _start(inputs),
            st.lists(mbt.seeds(), min_size=DRIFT_SEARCH_ORDERS, max_size=DRIFT_SEARCH_ORDERS),
        )

    def references(self, inputs):
        count = min(inputs.count, max(inputs.batch_size, DRIFT_REFERENCE_IMAGES))
        return [Example(images=tuple(range(count)), orders=DRIFT_REFERENCE_ORDERS)]

    def run(self, inputs, example):
        return inv.check_monotone_drift(
            inputs.strategy, inputs.model, inputs.batch(example.images), example.orders
        )

    def figures(self, results):
        details = results[0].details
        return {
            self.figure: Figure(
                details["mean_spearman"], "higher", DRIFT_TOLERANCE, self.figure_doc
            ),
            "drift_worst_step": Figure(
                details["worst_step"],
                "lower",
                DRIFT_TOLERANCE,
                "largest fall of the mean drift curve between neighbouring fractions, "
                "relative to its maximum",
            ),
            "drift_curve": Figure(
                [float(v) for v in details["curve"]],
                None,
                None,
                "mean KL drift (nats) at removed fractions 0, 0.1, ..., 0.9",
            ),
        }


class FiniteCheck(Check):
    """No NaN/Inf, also with nothing or almost nothing kept."""

    claim = Claim.FINITE
    figure = "nonfinite_logits"
    figure_doc = "non-finite logits with nothing or one pixel kept (worst over references)"

    def draw(self, inputs):
        nearly_empty = st.one_of(
            st.just(MaskSpec("none")),
            mbt.rectangles(inputs.size, max_side=2).map(lambda r: MaskSpec("keep_rect", rect=r)),
            st.builds(
                lambda f, s: MaskSpec("patches", fraction=f, seed=s),
                st.sampled_from([0.9, 1.0]),
                mbt.seeds(),
            ),
        )
        return st.builds(
            lambda idx, spec: Example(images=idx, masks=(spec,)), _start(inputs), nearly_empty
        )

    def references(self, inputs):
        height, width = inputs.size
        idx = inputs.indices(0)
        return [
            Example(images=idx, masks=(MaskSpec("none"),)),
            Example(images=idx, masks=(MaskSpec("keep_rect", (height // 2, width // 2, 1, 1)),)),
        ]

    def run(self, inputs, example):
        return inv.check_finite(
            inputs.strategy,
            inputs.model,
            inputs.batch(example.images),
            inputs.mask(example.masks[0]),
        )

    def figures(self, results):
        worst = inv.measure(results).worst
        return {self.figure: Figure(worst, "lower", 0.0, self.figure_doc)}


#: One check per claim, in the order of :data:`maskbench.ALL_CLAIMS`.
CHECKS: dict[Claim, Check] = {
    check.claim: check
    for check in (
        IdentityCheck(),
        ContentIndependenceCheck(),
        BatchConsistencyCheck(),
        DeterminismCheck(),
        CropEquivalenceCheck(),
        TranslationCheck(),
        MonotoneDriftCheck(),
        FiniteCheck(),
    )
}


def check_for(claim: Claim | str) -> Check:
    """The :class:`Check` of ``claim`` (a Claim or its name)."""
    return CHECKS[Claim(claim)]
