"""Finding strategies by name: in-process registration, entry points, import paths.

Three sources, in this order of precedence:

1. strategies registered in this process with :func:`register_strategy` (the
   built-ins register themselves this way);
2. the entry-point group ``maskbench.strategies`` of installed distributions, e.g. in a
   third-party ``pyproject.toml``::

       [project.entry-points."maskbench.strategies"]
       my_fill = "my_package.fills:MyFill"

3. an import path ``"pkg.module:attr"`` given directly to :func:`get_strategy`.

The target of an entry point or import path may be a :class:`Strategy` subclass
(instantiated with the keyword arguments of :func:`get_strategy`), a ready instance,
or a factory function returning one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from maskbench.errors import UnknownStrategyError
from maskbench.importing import ImportPathError, import_object
from maskbench.strategies.base import Strategy

ENTRY_POINT_GROUP = "maskbench.strategies"

_registry: dict[str, Any] = {}
_lock = threading.Lock()
_builtins_loaded = False

S = TypeVar("S", bound=type[Strategy])


def register_strategy(name: str, *, overwrite: bool = False) -> Callable[[S], S]:
    """Class decorator registering a :class:`Strategy` subclass under ``name``.

    Re-registering a name raises unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"strategy names must be non-empty strings without ':', got {name!r}")

    def decorate(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"register_strategy decorates Strategy subclasses, got {cls!r}")
        with _lock:
            existing = _registry.get(name)
            if existing is not None and existing is not cls and not overwrite:
                raise ValueError(
                    f"a strategy named {name!r} is already registered ({existing!r}); "
                    "pass overwrite=True to replace it"
                )
            cls.name = name
            _registry[name] = cls
        return cls

    return decorate


def unregister_strategy(name: str) -> None:
    """Remove an in-process registration (mainly for tests)."""
    with _lock:
        _registry.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module("maskbench.strategies.builtin")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


def list_strategies() -> list[str]:
    """Names of all strategies: registered in-process and installed by entry point."""
    _load_builtins()
    return sorted(set(_registry) | set(_entry_points()))


def _instantiate(target: Any, origin: str, kwargs: dict[str, Any]) -> Strategy:
    if isinstance(target, type) and issubclass(target, Strategy):
        strategy = target(**kwargs)
    elif isinstance(target, Strategy):
        if kwargs:
            raise TypeError(f"{origin} is a ready strategy instance; it takes no options")
        strategy = target
    elif callable(target):
        strategy = target(**kwargs)
        if not isinstance(strategy, Strategy):
            raise UnknownStrategyError(
                f"{origin} returned {type(strategy).__name__}, not a maskbench Strategy"
            )
    else:
        raise UnknownStrategyError(
            f"{origin} is {type(target).__name__}; expected a Strategy subclass, instance "
            "or factory"
        )
    if not getattr(strategy, "name", ""):
        strategy.name = origin
    return strategy


def _import_path(path: str) -> Any:
    try:
        return import_object(path)
    except ImportPathError as exc:
        raise UnknownStrategyError(f"strategy {path!r}: {exc}") from exc


def get_strategy(name: str, **kwargs: Any) -> Strategy:
    """A strategy instance by registered name, entry-point name, or ``"pkg.module:attr"``.

    Keyword arguments configure it (e.g. ``get_strategy("blur", sigma=4.0)``).
    Unknown names raise :class:`UnknownStrategyError` listing the known ones.
    """
    if isinstance(name, Strategy):
        return name
    if not isinstance(name, str):
        raise UnknownStrategyError(f"strategy names are strings, got {type(name).__name__}")
    if ":" in name:
        return _instantiate(_import_path(name), name, kwargs)
    _load_builtins()
    if name in _registry:
        return _instantiate(_registry[name], name, kwargs)
    entry_points = _entry_points()
    if name in entry_points:
        try:
            target = entry_points[name].load()
        except Exception as exc:
            raise UnknownStrategyError(
                f"strategy {name!r} is installed by entry point "
                f"{entry_points[name].value!r}, but loading it failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        strategy = _instantiate(target, name, kwargs)
        if strategy.name != name:
            warnings.warn(
                f"entry point {name!r} gives a strategy named {strategy.name!r}",
                stacklevel=2,
            )
        return strategy
    known = ", ".join(list_strategies())
    raise UnknownStrategyError(
        f"unknown strategy {name!r}. Known strategies: {known}. "
        "Third-party strategies are found by registered name, by the "
        f"'{ENTRY_POINT_GROUP}' entry-point group, or as 'package.module:attr'."
    )
