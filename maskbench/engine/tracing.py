"""torch.fx tracing of an unmodified model, cached per model, safe across threads.

* timm's own no-trace registries (``timm.layers._fx``) give the leaf modules and the
  autowrapped functions, as in timm's feature extraction; modules the engine has a
  dedicated rule for are leaves too.
* The trace runs on a throw-away wrapper module, so tensor constants that fx attaches
  to its root never land on the user's model. The cached :class:`TracedModel` holds
  the graph and those constants but no reference to the model: modules and parameters
  are looked up on the live model at every call.
* The cache is a ``WeakKeyDictionary`` keyed by the model and validated by a structural
  fingerprint (every submodule's name, identity, type and training flag): replacing a
  submodule or switching train/eval mode re-traces.
* fx tracing patches ``torch.nn.Module.__call__`` process-wide while it runs, so a
  module called from another thread during a trace would be traced by mistake. Tracing
  therefore takes :data:`MODEL_LOCK` exclusively; every engine forward holds it shared.
  (Code outside maskbench that calls models while maskbench traces is not protected.)
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from maskbench.errors import UnsupportedModelError

__all__ = ["MODEL_LOCK", "TracedModel", "fingerprint", "traced"]

_WRAPPER_PREFIX = "net."


class _SharedExclusiveLock:
    """A readers-writer lock: many engine forwards, or one trace, at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._writer_depth = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock shared (re-entrant for the exclusive holder)."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
                reentrant = True
            else:
                while self._writer is not None:
                    self._cond.wait()
                self._readers += 1
                reentrant = False
        try:
            yield
        finally:
            with self._cond:
                if reentrant:
                    self._writer_depth -= 1
                else:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone (waits for running forwards to finish)."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                while self._writer is not None or self._readers > 0:
                    self._cond.wait()
                self._writer = me
                self._writer_depth = 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._cond.notify_all()


MODEL_LOCK = _SharedExclusiveLock()


def _timm_registries() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    try:
        from timm.layers import _fx as timm_fx
    except ImportError:  # timm is optional for user models
        return (), ()
    return tuple(timm_fx.get_notrace_modules()), tuple(timm_fx.get_notrace_functions())


class _Tracer(fx.Tracer):
    def __init__(self, extra_leaves: tuple[type, ...]) -> None:
        leaves, functions = _timm_registries()
        super().__init__(autowrap_functions=functions)
        self._leaves = leaves + extra_leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m) in self._leaves:
            return True
        return super().is_leaf_module(m, module_qualified_name)


class _Wrapper(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(x)


def fingerprint(network: nn.Module) -> tuple[tuple, dict[str, nn.Module]]:
    """(structural fingerprint, {qualified name: module}) of ``network``, one traversal."""
    modules: dict[str, nn.Module] = {}
    items = []
    for name, module in network.named_modules():
        modules[name] = module
        items.append((name, id(module), type(module), module.training))
    return tuple(items), modules


@dataclass
class TracedModel:
    """A traced graph of one model structure, with no reference to the model itself."""

    graph: fx.Graph
    fingerprint: tuple
    constants: dict[str, Any]
    # lazily computed analyses, keyed by their arguments (see maskbench.engine.check)
    analyses: dict[Any, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def node_path(self, node: fx.Node) -> str:
        """The module path a node belongs to ("" for the model's own forward)."""
        if node.op == "call_module":
            return _strip(str(node.target))
        stack = node.meta.get("nn_module_stack")
        if stack:
            path, _ = list(stack.values())[-1]
            return _strip(str(path))
        return ""


def _strip(path: str) -> str:
    if path == "net":
        return ""
    return path[len(_WRAPPER_PREFIX) :] if path.startswith(_WRAPPER_PREFIX) else path


_CACHE: weakref.WeakKeyDictionary[nn.Module, TracedModel] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def traced(
    network: nn.Module, extra_leaves: tuple[type, ...] = ()
) -> tuple[TracedModel, dict[str, nn.Module]]:
    """The cached trace of ``network`` and its modules by qualified name.

    Re-traced when the model's structure or train/eval flags changed, or when the set
    of leaf types (modules with registered rules) changed since the last trace.
    Raises :class:`~maskbench.errors.UnsupportedModelError` when fx cannot trace it.
    """
    if not isinstance(network, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(network).__name__}")
    structure, modules = fingerprint(network)
    key = (structure, extra_leaves)
    with _CACHE_LOCK:
        entry = _CACHE.get(network)
    if entry is not None and entry.fingerprint == key:
        return entry, modules
    with MODEL_LOCK.exclusive():
        with _CACHE_LOCK:  # another thread may have traced it meanwhile
            entry = _CACHE.get(network)
        if entry is not None and entry.fingerprint == key:
            return entry, modules
        entry = _trace(network, key, extra_leaves)
        with _CACHE_LOCK:
            _CACHE[network] = entry
    return entry, modules


def _trace(network: nn.Module, key: tuple, extra_leaves: tuple[type, ...]) -> TracedModel:
    wrapper = _Wrapper(network)
    tracer = _Tracer(extra_leaves)
    try:
        graph = tracer.trace(wrapper)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...)
        raise UnsupportedModelError(
            f"{type(network).__name__} cannot be traced by torch.fx "
            f"({type(exc).__name__}: {exc}); the masking engine needs a traceable model"
        ) from exc
    constants: dict[str, Any] = {}
    for node in graph.nodes:
        if node.op == "get_attr" and not str(node.target).startswith(_WRAPPER_PREFIX):
            constants[str(node.target)] = _get_path(wrapper, str(node.target))
    return TracedModel(graph=graph, fingerprint=key, constants=constants)


def _get_path(root: Any, path: str) -> Any:
    value = root
    for part in path.split("."):
        value = getattr(value, part)
    return value


def resolve_attr(traced_model: TracedModel, modules: dict[str, nn.Module], target: str) -> Any:
    """The live value of a ``get_attr`` target (a parameter, buffer or constant)."""
    if target in traced_model.constants:
        return traced_model.constants[target]
    path = _strip(target)
    owner, _, attr = path.rpartition(".")
    return getattr(modules[owner], attr)


def resolve_module(modules: dict[str, nn.Module], target: str) -> nn.Module:
    """The live submodule behind a ``call_module`` target."""
    return modules[_strip(target)]


def cached_traces(network: nn.Module | None = None) -> list[TracedModel]:
    """The cached traces: of ``network`` (none or one), or of every model when None."""
    with _CACHE_LOCK:
        if network is None:
            return list(_CACHE.values())
        entry = _CACHE.get(network)
    return [] if entry is None else [entry]


def clear_cache() -> None:
    """Forget every cached trace (tests use it; never needed for correctness)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def is_traced(network: nn.Module) -> bool:
    """Whether a trace of ``network`` is cached (for tests)."""
    with _CACHE_LOCK:
        return network in _CACHE
