"""Up-front analysis of a model: unsupported ops, and whether ``CROP`` is crop-exact.

Both come from one *symbolic* pass: the traced graph runs under ``FakeTensorMode``
(shapes only, no arithmetic, parameters untouched) with the real masking rules, which
record refusals instead of raising and note the geometry of every spatial op. The pass
is cached per (model structure, input size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn

import maskbench.engine.rules  # noqa: F401  (registers the rules)
from maskbench.engine.interpreter import run_graph
from maskbench.engine.registry import Context, GeometryRecord, leaf_types
from maskbench.engine.tracing import MODEL_LOCK, traced
from maskbench.engine.variants import Variant
from maskbench.errors import UnsupportedModelError

__all__ = [
    "CropApplicability",
    "ModelReport",
    "UnsupportedOp",
    "check_model",
    "crop_applicability",
]

# analysis input size: a multiple of 2**9, so every stride up to 512 divides it
_ANALYSIS_SIZE = 512


@dataclass(frozen=True)
class UnsupportedOp:
    """One op the engine cannot mask: where it is, what it is, and why."""

    path: str
    op: str
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ModelReport:
    """Result of :func:`check_model`."""

    ok: bool
    unsupported: tuple[UnsupportedOp, ...]
    input_size: tuple[int, int, int]

    @property
    def message(self) -> str:
        """All problems, one per line ("" when ``ok``)."""
        return "\n".join(str(u) for u in self.unsupported)

    def raise_if_unsupported(self) -> None:
        """Raise :class:`UnsupportedModelError` listing every unsupported op."""
        if not self.ok:
            count = len(self.unsupported)
            raise UnsupportedModelError(
                f"{count} op{'s' if count > 1 else ''} cannot be masked:\n{self.message}"
            )


@dataclass(frozen=True)
class CropApplicability:
    """Whether ``Variant.CROP`` equals running the model on a stride-aligned crop.

    ``total_stride``: crop offsets and sizes must be multiples of it. With
    ``needs_aligned_image`` (dynamic "same" padding) the full image's height and width
    must be multiples of it too. ``reason`` says why not, when ``ok`` is False.
    Iterating gives ``(ok, reason, total_stride)``.
    """

    ok: bool
    reason: str
    total_stride: int | None
    needs_aligned_image: bool = False
    ops: tuple[GeometryRecord, ...] = field(default=(), repr=False)

    def __iter__(self):
        return iter((self.ok, self.reason, self.total_stride))


@dataclass
class _Analysis:
    problems: list[tuple[str, str, str]]
    geometry: list[GeometryRecord]
    input_size: tuple[int, int, int]


def _candidate_sizes(network: nn.Module) -> list[tuple[int, int, int]]:
    """Analysis sizes to try: 512 x 512 (large power-of-two factor), then the model's own."""
    cfg = getattr(network, "pretrained_cfg", None) or getattr(network, "default_cfg", None)
    native = None
    if isinstance(cfg, dict) and cfg.get("input_size"):
        native = tuple(int(v) for v in cfg["input_size"])
    channels = native[0] if native else None
    if channels is None:
        for module in network.modules():
            if isinstance(module, nn.Conv2d):
                channels = module.in_channels
                break
    sizes = [(channels or 3, _ANALYSIS_SIZE, _ANALYSIS_SIZE)]
    if native is not None and native not in sizes:
        sizes.append(native)
    return sizes


def _analyse(network: nn.Module, input_size: tuple[int, int, int] | None) -> _Analysis:
    if input_size is not None:
        if len(tuple(input_size)) != 3:
            raise ValueError(f"input_size must be (C, H, W), got {input_size!r}")
        sizes = [tuple(int(v) for v in input_size)]
    else:
        sizes = _candidate_sizes(network)
    traced_model, modules = traced(network, leaf_types())
    failures = []
    for size in sizes:
        key = ("analysis", size)
        cached = traced_model.analyses.get(key)
        if cached is not None:
            return cached
        try:
            analysis = _run_symbolic(traced_model, modules, network, size)
        except UnsupportedModelError:
            raise
        except Exception as error:  # the model itself rejects this size: try the next
            failures.append(f"{size}: {type(error).__name__}: {error}")
            continue
        with traced_model.lock:
            traced_model.analyses[key] = analysis
        return analysis
    raise UnsupportedModelError(
        "the model could not be evaluated symbolically at input size(s) "
        + "; ".join(failures)
        + " (pass input_size=(C, H, W) the model accepts)"
    )


def _run_symbolic(traced_model, modules, network: nn.Module, size) -> _Analysis:
    from torch._subclasses.fake_tensor import FakeTensorMode

    param = next(iter(network.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    ctx = Context(variant=Variant.CROP, symbolic=True, geometry=[], problems=[])
    with MODEL_LOCK.shared(), torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty((1, *size), device=device, dtype=dtype)
        keep = torch.empty((1, 1, *size[1:]), device=device, dtype=torch.bool)
        run_graph(traced_model, modules, ctx, x, keep)
    return _Analysis(ctx.problems or [], ctx.geometry or [], tuple(size))


def check_model(
    network: nn.Module,
    input_size: tuple[int, int, int] | None = None,
    *,
    raise_on_unsupported: bool = False,
) -> ModelReport:
    """List every op of ``network`` that the masking engine cannot handle, running nothing.

    Traces the model (cached) and evaluates its graph symbolically (fake tensors: no
    arithmetic, weights untouched) at ``input_size`` (C, H, W); by default at
    (channels, 512, 512), or at the model's ``pretrained_cfg`` input size when it rejects
    512 x 512. Each refused op is reported with its module path, e.g.
    ``"layer3.1.attn: torch.roll has no masking rule"``. An untraceable model raises
    :class:`UnsupportedModelError` directly.
    """
    analysis = _analyse(network, input_size)
    seen: set[tuple[str, str, str]] = set()
    unsupported = []
    for path, op, reason in analysis.problems:
        if (path, op, reason) not in seen:
            seen.add((path, op, reason))
            unsupported.append(UnsupportedOp(path, op, reason))
    report = ModelReport(not unsupported, tuple(unsupported), analysis.input_size)
    if raise_on_unsupported:
        report.raise_if_unsupported()
    return report


def _window_exact(record: GeometryRecord) -> str:
    """'' if a strided window maps a stride-aligned crop exactly, else why not."""
    window = record.window
    assert window is not None
    for axis, name in ((0, "height"), (1, "width")):
        k = window.effective[axis]
        s = window.stride[axis]
        before = window.pad[2 * axis]
        after = window.pad[2 * axis + 1]
        if record.kind == "same":
            before = max(k - s, 0) // 2
            after = max(k - s, 0) - before
        slack = before + after - k
        steps = -(-slack // s) if window.ceil_mode else slack // s
        if steps != -1:
            return (
                f"{record.path or '<model>'}: {record.op} (kernel {window.kernel}, stride "
                f"{window.stride}, padding {window.pad}) maps {s}n inputs to "
                f"n{steps + 1:+d} outputs along {name}, so a crop's map differs in size"
            )
        offset = window.centre[axis] - before
        if not 0 <= offset < s:
            return (
                f"{record.path or '<model>'}: {record.op} window centre lies outside its "
                f"stride cell along {name} (padding {window.pad})"
            )
    return ""


def crop_applicability(
    network: nn.Module, input_size: tuple[int, int, int] | None = None
) -> CropApplicability:
    """Whether ``Variant.CROP`` is crop-exact for ``network``, and the stride it needs.

    Crop-exact means: for a rectangle whose offsets and sizes are multiples of
    ``total_stride``, ``masked_forward(..., variant=CROP)`` with that rectangle kept
    equals ``network(x[..., rectangle])`` up to float rounding. That holds when every
    spatial op maps an aligned crop to an aligned crop: strided windows whose padding
    gives exactly n outputs for n * stride inputs, zero padding, global pooling at the
    end. Not crop-exact: "valid" convs that shrink the map (VGG's 7 x 7 ``ConvMlp``),
    reflect padding (BlurPool), non-global adaptive pooling, non-nearest upsampling.
    """
    analysis = _analyse(network, input_size)
    if analysis.problems:
        reason = analysis.problems[0][2]
        return CropApplicability(False, f"unsupported op: {reason}", None)
    size = analysis.input_size[1:]
    strides: list[int] = []
    needs_aligned = False
    for record in analysis.geometry:
        if record.kind == "identity":
            continue
        where = record.path or "<model>"
        if record.kind == "inexact":
            return CropApplicability(
                False,
                f"{where}: {record.op} ({record.note}) is not crop-exact",
                None,
                ops=tuple(analysis.geometry),
            )
        cumulative = [Fraction(size[i], record.in_hw[i]) for i in range(2)]
        if any(c.denominator != 1 for c in cumulative):
            return CropApplicability(
                False,
                f"{where}: {record.op} sees a map of {record.in_hw} that is not an "
                f"integer downsampling of the {tuple(size)} input",
                None,
                ops=tuple(analysis.geometry),
            )
        c = [int(v) for v in cumulative]
        if record.kind in ("window", "same"):
            why = _window_exact(record)
            if why:
                return CropApplicability(
                    False, f"{why}: not crop-exact", None, ops=tuple(analysis.geometry)
                )
            strides += [c[i] * record.window.stride[i] for i in range(2)]
            needs_aligned = needs_aligned or record.kind == "same"
        else:  # global pooling / upsampling: the crop must be whole at this resolution
            strides += c
    total = 1
    for s in strides:
        total = math.lcm(total, s)
    reason = ""
    if needs_aligned:
        reason = "dynamic 'same' padding: image height and width must be multiples too"
    return CropApplicability(True, reason, total, needs_aligned, tuple(analysis.geometry))
