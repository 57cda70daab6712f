"""The CI gate: compare a run's scorecard with a stored baseline scorecard.

A run regresses against its baseline when, for a model and strategy both audited:

* a claim that held in the baseline (``pass``) no longer does (``fail``, ``error``, not
  applicable any more, or no longer claimed: a withdrawn claim must be a deliberate
  baseline update, not a quiet way to turn CI green);
* a gated figure (``better`` is ``"lower"`` or ``"higher"``) is worse than the baseline's
  value by more than the ``tolerance`` stored *with that figure in the baseline*
  (edit it there to loosen or tighten the gate);
* the settings that figures depend on differ (image size, images, batch size, weights
  actually loaded, drift parameters): the figures would not be comparable.

Models or strategies in the baseline that this run did not audit are reported as notes,
not regressions (a run may audit a subset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from maskbench.audit.runner import PASS
from maskbench.audit.scorecard import as_number, format_value

#: Settings whose change makes figures incomparable.
COMPARED_SETTINGS = ("image_size", "images", "batch_size", "dtype", "drift")


@dataclass(frozen=True)
class Regression:
    """One way the run is worse than its baseline."""

    model: str
    strategy: str
    what: str
    message: str

    def __str__(self) -> str:
        where = "/".join(p for p in (self.model, self.strategy) if p) or "settings"
        return f"{where}: {self.message}"


def _first_line(text: Any) -> str:
    return str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""


def compare(
    baseline: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[list[Regression], list[str]]:
    """(regressions, notes) of ``current`` against ``baseline``."""
    regressions: list[Regression] = []
    notes: list[str] = []
    base_settings = baseline.get("settings", {})
    settings = current.get("settings", {})
    for key in COMPARED_SETTINGS:
        if key in base_settings and base_settings.get(key) != settings.get(key):
            regressions.append(
                Regression(
                    "",
                    "",
                    f"setting {key}",
                    f"setting {key!r} differs from the baseline ({base_settings.get(key)!r} "
                    f"there, {settings.get(key)!r} now): figures are not comparable; rerun "
                    "with the baseline's settings or store a new baseline",
                )
            )
    base_results = baseline.get("results", {})
    results = current.get("results", {})
    for model, base_strategies in sorted(base_results.items()):
        if model not in results:
            notes.append(f"model {model!r} is in the baseline but was not audited in this run")
            continue
        base_info = baseline.get("models", {}).get(model, {})
        info = current.get("models", {}).get(model, {})
        if base_info.get("weights") and info.get("weights") != base_info.get("weights"):
            regressions.append(
                Regression(
                    model,
                    "",
                    "weights",
                    f"weights differ from the baseline ({base_info.get('weights')!r} there, "
                    f"{info.get('weights')!r} now): figures are not comparable",
                )
            )
        for strategy, base_entry in sorted(base_strategies.items()):
            entry = results[model].get(strategy)
            if entry is None:
                notes.append(f"{model}/{strategy} is in the baseline but was not audited")
                continue
            regressions += _compare_claims(model, strategy, base_entry, entry)
            regressions += _compare_figures(model, strategy, base_entry, entry)
    return regressions, notes


def _compare_claims(
    model: str, strategy: str, base_entry: Mapping[str, Any], entry: Mapping[str, Any]
) -> list[Regression]:
    out = []
    for claim, base_claim in base_entry.get("claims", {}).items():
        if base_claim.get("status") != PASS:
            continue
        now = entry.get("claims", {}).get(claim)
        if now is None:
            continue  # not run this time (deselected); the notes cover missing strategies
        if now.get("status") != PASS:
            status = now.get("status")
            detail = _first_line(now.get("message"))
            if status == "not_claimed":
                detail = "the strategy no longer makes this claim"
            out.append(
                Regression(
                    model,
                    strategy,
                    f"claim {claim}",
                    f"claim {claim!r} held in the baseline but is now {status}"
                    + (f": {detail}" if detail else ""),
                )
            )
    return out


def _compare_figures(
    model: str, strategy: str, base_entry: Mapping[str, Any], entry: Mapping[str, Any]
) -> list[Regression]:
    out = []
    for name, base_figure in base_entry.get("figures", {}).items():
        better = base_figure.get("better")
        tolerance = as_number(base_figure.get("tolerance"))
        old = as_number(base_figure.get("value"))
        if better not in ("lower", "higher") or tolerance is None or old is None:
            continue
        figure = entry.get("figures", {}).get(name)
        if figure is None:
            continue
        new = as_number(figure.get("value"))
        if new is None:
            out.append(
                Regression(
                    model,
                    strategy,
                    f"figure {name}",
                    f"figure {name!r} was {format_value(old)} in the baseline and is not "
                    "measured now",
                )
            )
            continue
        worse = new > old + tolerance if better == "lower" else new < old - tolerance
        if worse or (new != new and old == old):
            out.append(
                Regression(
                    model,
                    strategy,
                    f"figure {name}",
                    f"figure {name!r} regressed: {format_value(old)} -> {format_value(new)} "
                    f"({better} is better; tolerance {format_value(tolerance)} stored in the "
                    "baseline)",
                )
            )
    return out
