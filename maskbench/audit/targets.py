"""What ``--model`` names: timm models, fnmatch patterns, shipped models, user factories.

* a timm name (``resnet50``, ``resnet50.a1_in1k``) or a model shipped with maskbench;
* an fnmatch pattern (``resnet*``) matched against ``timm.list_models`` and the shipped
  models; at most :data:`MAX_PATTERN_MODELS` of the sorted matches are audited (the run's
  header says how many matched);
* ``pkg.module:factory``: a callable returning an ``nn.Module`` (wrapped with the
  ImageNet mean/std, which the run's header and the scorecard say) or a maskbench
  :class:`~maskbench.NormalizedModel` (used as it is).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from maskbench.importing import ImportPathError, import_object
from maskbench.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NormalizedModel,
    load_checkpoint,
    load_model,
    shipped_models,
    wrap_model,
)

#: The most models one fnmatch pattern expands to.
MAX_PATTERN_MODELS = 8
#: Seed of randomly initialised weights.
MODEL_SEED = 0


class TargetError(ValueError):
    """A ``--model`` value that names nothing usable (the message lists alternatives)."""


@dataclass(frozen=True)
class ModelTarget:
    """One model to audit.

    Attributes:
        name: the name as the scorecard shows it (timm name or ``pkg.module:factory``).
        kind: ``"timm"``, ``"shipped"`` or ``"factory"``.
    """

    name: str
    kind: str


def _is_pattern(value: str) -> bool:
    return any(ch in value for ch in "*?[")


def split_values(values: Sequence[str]) -> list[str]:
    """Flatten repeated and comma-separated option values, dropping blanks and repeats."""
    out: list[str] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _timm_names() -> list[str]:
    import timm

    return list(timm.list_models())


def _unknown(name: str) -> TargetError:
    shipped = sorted(shipped_models())
    close = difflib.get_close_matches(name, _timm_names() + shipped, n=6, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return TargetError(
        f"--model {name!r} is not a timm model, a shipped maskbench model "
        f"({', '.join(shipped) or 'none shipped'}) or a 'pkg.module:factory' path.{hint} "
        "Patterns such as 'resnet*' match timm.list_models()."
    )


def import_factory(path: str) -> Any:
    """The object a ``pkg.module:attr`` path names (raising :class:`TargetError`)."""
    try:
        target = import_object(path, attr_hint="factory")
    except ImportPathError as exc:
        raise TargetError(f"--model {path!r}: {exc}") from exc
    if not callable(target):
        raise TargetError(f"--model {path!r} is {type(target).__name__}, not a callable factory")
    return target


def resolve_models(values: Sequence[str]) -> tuple[list[ModelTarget], list[str]]:
    """The models ``--model`` values name, and notes for the run's header.

    Raises :class:`TargetError` for names that match nothing.
    """
    import timm

    shipped = shipped_models()
    targets: list[ModelTarget] = []
    notes: list[str] = []

    def add(target: ModelTarget) -> None:
        if target not in targets:
            targets.append(target)

    for value in split_values(values):
        if ":" in value:
            import_factory(value)
            add(ModelTarget(value, "factory"))
        elif _is_pattern(value):
            matches = sorted(set(timm.list_models(value)) | set(fnmatch.filter(shipped, value)))
            if not matches:
                raise TargetError(
                    f"--model pattern {value!r} matches no timm or shipped model "
                    "(see timm.list_models())"
                )
            chosen = matches[:MAX_PATTERN_MODELS]
            notes.append(
                f"--model {value!r} matches {len(matches)} models; auditing "
                f"{len(chosen)}: {', '.join(chosen)}"
                + (
                    f" (at most {MAX_PATTERN_MODELS} per pattern; name others explicitly)"
                    if len(matches) > len(chosen)
                    else ""
                )
            )
            for name in chosen:
                add(ModelTarget(name, "shipped" if name in shipped else "timm"))
        elif value in shipped:
            add(ModelTarget(value, "shipped"))
        elif timm.is_model(value):
            add(ModelTarget(value, "timm"))
        else:
            raise _unknown(value)
    return targets, notes


@dataclass
class BuiltModel:
    """A model ready for the audit and the facts the scorecard records about it."""

    model: NormalizedModel
    info: dict[str, Any]


def build_model(target: ModelTarget, weights: str, device: torch.device) -> BuiltModel:
    """Build ``target`` on ``device`` in eval mode, with the weights ``weights`` asks for.

    ``weights`` is ``auto``, ``random``, ``pretrained`` or a checkpoint path; factory
    models keep the weights their factory gives unless ``weights`` is a path.
    """
    note = ""
    if target.kind == "factory":
        made = import_factory(target.name)()
        if isinstance(made, NormalizedModel):
            model = made
        elif isinstance(made, nn.Module):
            model = wrap_model(made, IMAGENET_MEAN, IMAGENET_STD, name=target.name)
            note = "plain nn.Module wrapped by the audit with the ImageNet mean/std"
        else:
            raise TargetError(
                f"--model {target.name!r} returned {type(made).__name__}; the factory must "
                "return an nn.Module or a maskbench NormalizedModel"
            )
        if weights not in ("auto", "random", "pretrained"):
            load_checkpoint(model.network, weights)
            model.weights, model.weights_source = "checkpoint", str(weights)
        model = model.to(device).eval()
    else:
        model = load_model(target.name, weights=weights, seed=MODEL_SEED, device=device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    info = {
        "kind": target.kind,
        "class": type(model.network).__name__,
        "weights": model.weights,
        "weights_source": model.weights_source,
        "mean": [round(float(v), 6) for v in model.mean.flatten()],
        "std": [round(float(v), 6) for v in model.std.flatten()],
        "dtype": str(dtype).replace("torch.", ""),
        "device": torch.device(device).type,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if note:
        info["note"] = note
    return BuiltModel(model, info)


def validate_weights(value: str) -> str:
    """``auto``, ``random``, ``pretrained`` or an existing checkpoint path."""
    if value in ("auto", "random", "pretrained"):
        return value
    if os.path.isfile(value):
        return value
    raise TargetError(
        f"--weights {value!r}: expected auto, random, pretrained or a checkpoint file "
        "(.safetensors or a torch state dict); no such file"
    )
