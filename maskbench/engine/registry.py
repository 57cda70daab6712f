"""Masking rules: which op gets which rule, and the context a rule runs in.

A rule is a function ``rule(ctx, target, args, kwargs)``; ``target`` is the module
instance (``call_module``), the function (``call_function``) or the method name
(``call_method``). Among ``args`` / ``kwargs`` every activation that carries a keep-mask
is an :class:`~maskbench.engine.masks.MT`; everything else is a plain value. A rule only
runs when at least one argument is masked; ops on unmasked values run as they are.

Ops that mix spatial positions need a real rule. Position-wise ops (activations,
eval-mode batch norm, per-position linear layers ...) share :func:`pointwise`. An op
with masked inputs and no rule is refused with :class:`UnsupportedModelError`: a wrong
answer is worse than no answer.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskbench.engine import masks as _masks
from maskbench.engine.masks import MT, Layout, Mask, Window, intersect
from maskbench.engine.variants import Variant
from maskbench.errors import UnsupportedModelError

__all__ = [
    "Context",
    "GeometryRecord",
    "Rule",
    "describe",
    "function_rule_for",
    "has_masked",
    "map_masked",
    "method_rule_for",
    "module_rule_for",
    "pointwise",
    "register_function_rule",
    "register_method_rule",
    "register_module_rule",
    "unwrap",
    "wrap_output",
]

Rule = Callable[["Context", Any, tuple, dict], Any]

_MODULE_RULES: dict[type, tuple[Rule, bool]] = {}
_FUNCTION_RULES: dict[Any, Rule] = {}
_METHOD_RULES: dict[str, Rule] = {}


def register_module_rule(*types: type, inherit: bool = False) -> Callable[[Rule], Rule]:
    """Register ``rule`` for modules of exactly these types.

    With ``inherit=True`` subclasses use it too, but only when they do not override
    ``forward`` (a subclass with its own forward computes something else).
    Modules with a rule are fx leaves: the engine never traces into them.
    """

    def decorate(rule: Rule) -> Rule:
        for t in types:
            _MODULE_RULES[t] = (rule, inherit)
        return rule

    return decorate


def register_function_rule(*functions: Any) -> Callable[[Rule], Rule]:
    """Register ``rule`` for ``call_function`` nodes calling any of ``functions``."""

    def decorate(rule: Rule) -> Rule:
        for f in functions:
            _FUNCTION_RULES[f] = rule
        return rule

    return decorate


def register_method_rule(*names: str) -> Callable[[Rule], Rule]:
    """Register ``rule`` for ``call_method`` nodes (``x.mean(...)``) of these names."""

    def decorate(rule: Rule) -> Rule:
        for n in names:
            _METHOD_RULES[n] = rule
        return rule

    return decorate


def module_rule_for(module: nn.Module) -> Rule | None:
    """The rule for ``module``'s exact type, or an inherited one (forward not overridden)."""
    cls = type(module)
    found = _MODULE_RULES.get(cls)
    if found is not None:
        return found[0]
    for base in cls.__mro__[1:]:
        found = _MODULE_RULES.get(base)
        if found is not None and found[1] and cls.forward is base.forward:
            return found[0]
    return None


def leaf_types() -> tuple[type, ...]:
    """Module types with a registered rule (the tracer keeps them as leaves)."""
    return tuple(_MODULE_RULES)


def function_rule_for(fn: Any) -> Rule | None:
    """The rule registered for a ``call_function`` target."""
    try:
        return _FUNCTION_RULES.get(fn)
    except TypeError:  # unhashable target
        return None


def method_rule_for(name: str) -> Rule | None:
    """The rule registered for a ``call_method`` name."""
    return _METHOD_RULES.get(name)


def describe(target: Any) -> str:
    """A readable, fully qualified name for a module, function or method name."""
    if isinstance(target, nn.Module):
        cls = type(target)
        return f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(target, str):
        return f"torch.Tensor.{target}"
    if getattr(target, "__module__", None) == "_operator":
        return f"operator.{target.__name__}"
    module = getattr(target, "__module__", None) or "torch"
    name = getattr(target, "__name__", None) or repr(target)
    qualname = getattr(target, "__qualname__", None) or name
    if module.startswith("torch._C") or "_VariableFunctions" in qualname:
        return f"torch.{name}"  # builtins such as torch.roll
    return f"{module}.{qualname}"


# ---------------------------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------------------------


@dataclass
class GeometryRecord:
    """One spatial op seen during an analysis pass (for crop applicability)."""

    path: str
    op: str
    kind: str  # "window", "same" (dynamic TF padding), "global", "identity" or "inexact"
    window: Window | None
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    note: str = ""


@dataclass
class Context:
    """Per-forward state handed to every rule."""

    variant: Variant
    symbolic: bool = False
    path: str = ""
    op: str = ""
    geometry: list[GeometryRecord] | None = None
    problems: list[tuple[str, str, str]] | None = None  # (path, op, reason) in check mode
    masks: list[Mask] = field(default_factory=list)  # every mask of this forward
    #: whether masks may read their values on the host to skip work (host syncs; see
    #: :data:`maskbench.engine.masks.HOST_SHORTCUTS`, the default)
    host_reads: bool = field(default_factory=lambda: _masks.HOST_SHORTCUTS)

    def refuse(self, reason: str, op: str | None = None) -> UnsupportedModelError:
        """An :class:`UnsupportedModelError` naming the current module path and op.

        Rules ``raise ctx.refuse(...)``.
        """
        where = self.path or "<model>"
        return UnsupportedModelError(f"{where}: {op or self.op} {reason}")

    def record(
        self,
        kind: str,
        window: Window | None,
        in_hw: tuple[int, int],
        out_hw: tuple[int, int],
        note: str = "",
    ) -> None:
        """Note a spatial op's geometry when an analysis pass asked for it."""
        if self.geometry is not None:
            self.geometry.append(
                GeometryRecord(
                    self.path,
                    self.op,
                    kind,
                    window,
                    (int(in_hw[0]), int(in_hw[1])),
                    (int(out_hw[0]), int(out_hw[1])),
                    note,
                )
            )

    def new_mask(self, keep: torch.Tensor) -> Mask:
        """A mask living for this forward (``masks`` becomes its family: every mask
        derived from it is added there)."""
        return Mask(keep, symbolic=self.symbolic, host_reads=self.host_reads, family=self.masks)

    def release(self) -> None:
        """Free this forward's masks and their memos (see :meth:`Mask.release`)."""
        if self.masks:
            self.masks[0].release()  # empties the family, i.e. self.masks

    def call(self, module: nn.Module, *args: Any, name: str = "", **kwargs: Any) -> Any:
        """Apply child ``module`` (attribute ``name``) through its masking rule.

        For rules of composite leaf modules; error messages and geometry records name
        the child (``path.name``) while it runs.
        """
        if not has_masked((args, kwargs)):
            return module(*unwrap(args), **unwrap(kwargs))
        rule = module_rule_for(module)
        saved = self.path, self.op
        if name:
            self.path = f"{self.path}.{name}" if self.path else name
        self.op = describe(module)
        try:
            if rule is None:
                raise self.refuse("has no masking rule")
            return rule(self, module, args, kwargs)
        finally:
            self.path, self.op = saved


# ---------------------------------------------------------------------------------------
# Helpers on nested arguments
# ---------------------------------------------------------------------------------------


def has_masked(obj: Any) -> bool:
    """Whether any :class:`MT` occurs in a nested tuple/list/dict structure."""
    if isinstance(obj, MT):
        return True
    if isinstance(obj, (tuple, list)):
        return any(has_masked(o) for o in obj)
    if isinstance(obj, dict):
        return any(has_masked(o) for o in obj.values())
    return False


def masked_in(obj: Any) -> list[MT]:
    """All :class:`MT` values in a nested structure, in order."""
    found: list[MT] = []
    _collect_masked(obj, found)
    return found


def _collect_masked(obj: Any, found: list[MT]) -> None:
    # A module-level function, not a recursive closure: a closure that calls itself is a
    # reference cycle, which would keep every activation it collected alive until the
    # cyclic garbage collector runs (measured: 8x the peak memory of a plain forward).
    if isinstance(obj, MT):
        found.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _collect_masked(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_masked(item, found)


def map_masked(obj: Any, fn: Callable[[MT], Any]) -> Any:
    """Replace every :class:`MT` in a nested structure by ``fn(mt)``."""
    if isinstance(obj, MT):
        return fn(obj)
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(map_masked(o, fn) for o in obj)
    if isinstance(obj, list):
        return [map_masked(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: map_masked(v, fn) for k, v in obj.items()}
    return obj


def unwrap(obj: Any) -> Any:
    """Replace every :class:`MT` by its raw activation."""
    return map_masked(obj, lambda mt: mt.value)


def common_mask(ctx: Context, mts: Iterable[MT]) -> tuple[Mask, Layout]:
    """Intersection of the masks of ``mts`` (which must share a layout)."""
    mts = list(mts)
    layout = mts[0].layout
    for mt in mts[1:]:
        if mt.layout != layout:
            raise ctx.refuse(
                f"combines activations with different layouts ({layout} vs {mt.layout})"
            )
    return intersect([mt.mask for mt in mts]), layout


def wrap_output(ctx: Context, out: Any, mask: Mask, layout: Layout) -> Any:
    """Attach ``mask`` to a position-wise op's output (tensors, or tuples of them)."""
    if isinstance(out, torch.Tensor):
        b = mask.keep.shape[0]
        h, w = mask.hw
        if (
            out.dim() != layout.ndim
            or out.shape[layout.h] != h
            or out.shape[layout.w] != w
            or out.shape[0] != b
        ):
            raise ctx.refuse(
                f"changes the spatial layout of a masked activation (output shape "
                f"{tuple(out.shape)}, mask {b}x{h}x{w} at dims {layout.h},{layout.w})"
            )
        return MT(out, mask, layout)
    if isinstance(out, (tuple, list)):
        wrapped = [wrap_output(ctx, o, mask, layout) for o in out]
        if hasattr(out, "_fields"):
            return type(out)(*wrapped)
        return type(out)(wrapped)
    raise ctx.refuse(f"returns {type(out).__name__} computed from a masked activation")


def pointwise(ctx: Context, target: Any, args: tuple, kwargs: dict) -> Any:
    """Rule for ops that act on each position separately (no mixing).

    The output keeps the intersection of its inputs' masks; garbage under removed
    positions stays there and is never read by a spatial op (they all fill first).
    """
    mask, layout = common_mask(ctx, masked_in((args, kwargs)))
    out = call_plain(target, unwrap(args), unwrap(kwargs))
    return wrap_output(ctx, out, mask, layout)


def call_plain(target: Any, args: tuple, kwargs: dict) -> Any:
    """Run a module, function or method (by name) on plain values."""
    if isinstance(target, str):
        self, *rest = args
        return getattr(self, target)(*rest, **kwargs)
    return target(*args, **kwargs)


def normalize_dim(ctx: Context, dim: int, ndim: int) -> int:
    """A dim index in [0, ndim)."""
    if not -ndim <= dim < ndim:
        raise ctx.refuse(f"uses dim {dim} of a {ndim}-d activation")
    return dim % ndim


# operator functions that are elementwise
ELEMENTWISE_OPERATORS = (
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.pow,
    operator.neg,
    operator.pos,
    operator.abs,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.mod,
    operator.lt,
    operator.le,
    operator.gt,
    operator.ge,
    operator.eq,
    operator.ne,
    operator.and_,
    operator.or_,
    operator.invert,
)
