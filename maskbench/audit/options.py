"""The audit's settings and plan: which models, strategies and claims, and how.

:func:`make_options` validates raw option values (as the pytest plugin receives them)
and raises :class:`OptionError` with a message that names the option and the accepted
values; :func:`build_plan` turns options into one :class:`AuditCase` per (model,
strategy, claim). Nothing here touches CUDA or builds a model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskbench import models
from maskbench.audit import drift
from maskbench.audit.checks import DRIFT_REFERENCE_ORDERS
from maskbench.audit.targets import (
    MODEL_SEED,
    ModelTarget,
    TargetError,
    resolve_models,
    split_values,
    validate_weights,
)
from maskbench.errors import DeviceError, UnknownStrategyError
from maskbench.strategies.claims import ALL_CLAIMS
from maskbench.strategies.registry import get_strategy, list_strategies

#: Default image side: small enough that ``pytest --model resnet18`` over ~10 strategies
#: stays well within 10 minutes on 2 CPU cores; 5 x 5 cells of stride 32 (room for crops
#: and moves) and 10 x 10 patches of 16 px (each drift step removes exactly 10 patches).
DEFAULT_IMAGE_SIZE = 160
#: Default images per example (batch consistency needs 2).
DEFAULT_BATCH_SIZE = 2
#: Default hypothesis examples per claimed check (on top of the reference examples).
DEFAULT_EXAMPLES = 3
#: Smallest image side the audit accepts.
MIN_IMAGE_SIZE = 16


class OptionError(ValueError):
    """An option value the audit cannot use (the message says which and why)."""


@dataclass(frozen=True)
class AuditOptions:
    """Validated audit settings.

    Attributes:
        models: the models to audit.
        strategies: strategy names or ``pkg.module:attr`` paths.
        weights: ``auto``, ``random``, ``pretrained`` or a checkpoint path.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        image_size: side of the square images.
        batch_size: images per example.
        images: directory of images (None: maskbench's bundled photographs).
        examples: hypothesis examples per claimed check.
        stride: total stride override (None: from the model, else 32).
        derandomize: draw the same hypothesis examples every run (CI).
        database: hypothesis example database directory (None: none).
        notes: lines for the run's header (pattern expansion ...).
    """

    models: tuple[ModelTarget, ...]
    strategies: tuple[str, ...]
    weights: str = "auto"
    device: str = "auto"
    image_size: int = DEFAULT_IMAGE_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    images: str | None = None
    examples: int = DEFAULT_EXAMPLES
    stride: int | None = None
    derandomize: bool = False
    database: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def settings(self, device_type: str, dtype: str = "float32") -> dict[str, Any]:
        """The scorecard's ``settings`` section (what figures depend on)."""
        return {
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "images": self.images or "maskbench.sample_images",
            "examples": self.examples,
            "derandomize": self.derandomize,
            "weights": self.weights,
            "device": device_type,
            "dtype": dtype,
            "stride": self.stride or "model (timm feature_info), else 32",
            "seeds": {
                "model_init": MODEL_SEED,
                "torch_manual_seed_per_check": 0,
                "drift_reference_orders": list(DRIFT_REFERENCE_ORDERS),
                "reference_examples": "fixed (maskbench.audit.checks)",
            },
            "drift": {
                "fractions": list(drift.DRIFT_FRACTIONS),
                "patch": drift.DRIFT_PATCH,
                "min_spearman": drift.MIN_SPEARMAN,
                "step_tolerance": drift.STEP_TOLERANCE,
            },
        }


@dataclass(frozen=True)
class AuditCase:
    """One cell of the audit: a claim of a strategy on a model."""

    model: str
    strategy: str
    claim: str
    claimed: bool

    @property
    def id(self) -> str:
        """The pytest parameter id, e.g. ``resnet18-black-identity``."""
        return f"{self.model}-{self.strategy}-{self.claim}"


def resolve_device(value: str) -> str:
    """Check a ``--device`` value; ``auto`` becomes ``cuda`` or ``cpu``.

    Must run after a worker pinned its GPU (it asks torch whether CUDA is available).
    Availability and the device index are checked by :func:`maskbench.models.resolve_device`.
    """
    text = str(value).strip().lower()
    if text not in ("auto", "cpu", "cuda") and not text.startswith("cuda:"):
        raise OptionError(f"--device {value!r}: expected auto, cpu, cuda or cuda:N")
    try:
        return str(models.resolve_device(text))
    except DeviceError as exc:
        raise OptionError(f"--device: {exc}") from None


def ci_environment(environ: dict[str, str] | None = None) -> bool:
    """Whether the ``CI`` environment variable is set to something true."""
    value = (environ if environ is not None else os.environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def resolve_strategies(values: Sequence[str]) -> tuple[str, ...]:
    """Strategy names (default: every registered one), each checked to load."""
    names = split_values(values) or list_strategies()
    for name in names:
        try:
            get_strategy(name)
        except UnknownStrategyError as exc:
            raise OptionError(f"--strategy {name!r}: {exc}") from None
        except Exception as exc:
            raise OptionError(
                f"--strategy {name!r} could not be created: {type(exc).__name__}: {exc}"
            ) from None
    return tuple(names)


def make_options(
    *,
    models: Sequence[str],
    strategies: Sequence[str] = (),
    weights: str = "auto",
    device: str = "auto",
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    images: str | None = None,
    examples: int = DEFAULT_EXAMPLES,
    stride: int | None = None,
    derandomize: bool | None = None,
    database: Path | None = None,
) -> AuditOptions:
    """Validate raw option values into :class:`AuditOptions` (raises :class:`OptionError`).

    ``device`` is checked for its form only; :func:`resolve_device` checks availability.
    """
    try:
        targets, notes = resolve_models(models)
        weights = validate_weights(weights)
    except TargetError as exc:
        raise OptionError(str(exc)) from None
    if not targets:
        raise OptionError("--model: give at least one model name, pattern or factory path")
    text = str(device).strip().lower()
    if not (text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit())):
        raise OptionError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if image_size < MIN_IMAGE_SIZE:
        raise OptionError(f"--image-size {image_size}: must be at least {MIN_IMAGE_SIZE}")
    if batch_size < 2:
        raise OptionError(
            f"--batch-size {batch_size}: must be at least 2 (batch consistency compares a "
            "batch with its samples one by one)"
        )
    if examples < 0:
        raise OptionError(f"--audit-examples {examples}: must be >= 0")
    if stride is not None and not 1 <= stride <= image_size:
        raise OptionError(f"--audit-stride {stride}: must be in 1..{image_size}")
    if images is not None and not Path(images).is_dir():
        raise OptionError(f"--images {images!r}: no such directory")
    return AuditOptions(
        models=tuple(targets),
        strategies=resolve_strategies(strategies),
        weights=weights,
        device=text,
        image_size=image_size,
        batch_size=batch_size,
        images=images,
        examples=examples,
        stride=stride,
        derandomize=ci_environment() if derandomize is None else derandomize,
        database=database,
        notes=tuple(notes),
    )


def build_plan(options: AuditOptions) -> list[AuditCase]:
    """One case per (model, strategy, claim), models first, claims in DESIGN.md order."""
    cases = []
    for target in options.models:
        for name in options.strategies:
            claims = {c.value for c in get_strategy(name).claims}
            for claim in ALL_CLAIMS:
                cases.append(AuditCase(target.name, name, claim.value, claim.value in claims))
    return cases
