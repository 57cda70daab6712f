"""Resolve ``"package.module:attr"`` paths (user strategies, user model factories)."""

from __future__ import annotations

import importlib
from typing import Any


class ImportPathError(ValueError):
    """A ``package.module:attr`` path that is malformed or names nothing.

    Callers re-raise it as their own error, prefixed with what the path was for.
    """


def import_object(path: str, *, attr_hint: str = "attr") -> Any:
    """The object ``path`` names: ``package.module:attr``, where ``attr`` may be dotted.

    ``attr_hint`` names the attribute in the format message (e.g. ``"factory"``).
    Raises :class:`ImportPathError` saying what is wrong: the form, the import (with
    the original error), or the missing attribute (with the module's public names).
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ImportPathError(f"import paths look like 'package.module:{attr_hint}', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))
            raise ImportPathError(
                f"module {module_name!r} has no attribute {attr!r} "
                f"(it has: {', '.join(public[:20])})"
            )
        target = getattr(target, part)
    return target
