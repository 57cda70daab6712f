"""The scorecard: per-check records merged into one JSON document and a Markdown table.

A :class:`Record` is the result of one (model, strategy, claim) check, small and
JSON-ready so it can travel from a pytest-xdist worker to the controller on the test
report. :func:`build_scorecard` merges records (in any order, from any worker) into the
scorecard; everything that may differ between two otherwise identical runs (timings,
worker assignment, dates) lives under its ``"run"`` key, so :func:`comparable` of a
serial run and of a ``-n auto`` run are equal.

Layout::

    {"schema": "maskbench-scorecard/1",
     "versions": {"maskbench": ..., "torch": ..., "timm": ..., ...},
     "settings": {"image_size": ..., "batch_size": ..., "seeds": {...}, ...},
     "models": {"resnet18": {"weights": "random", "weights_source": ..., "device": ...}},
     "results": {"resnet18": {"black": {
         "claims_made": [...],
         "geometry": {"stride": 32, "crop_applicable": true, "reason": ""},
         "claims": {"identity": {"status": "pass", "claimed": true, "figure": "identity_gap",
                                 "value": 0.0, "tolerance": 0.0, "message": ..., "example": ""},
                    ...},
         "figures": {"crop_gap": {"value": 1.28, "better": "lower", "tolerance": 0.128,
                                  "claim": "crop_equivalence", "doc": ...}, ...}}}},
     "summary": {"pass": 30, "fail": 0, ...},
     "run": {"seconds": ..., "workers": {...}, "timings": {...}}}
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskbench.audit.runner import ERROR, FAIL, NOT_APPLICABLE, NOT_CLAIMED, PASS, STATUSES
from maskbench.io import atomic_write_text
from maskbench.strategies.claims import ALL_CLAIMS

SCHEMA = "maskbench-scorecard/1"


@dataclass
class Record:
    """The result of one (model, strategy, claim) check, as it travels between processes.

    Attributes:
        model, strategy, claim: the cell.
        claimed: whether the strategy makes the claim.
        status: ``pass``, ``fail``, ``not_claimed``, ``not_applicable`` or ``error``.
        figure: name of the claim's primary figure.
        figures: every figure the check measured (name -> Figure.to_dict()).
        tolerance: the bound the claim was held to.
        message: readable account (failure, reason, error).
        example: the failing example, described.
        seconds: wall time.
        worker: xdist worker id (``"main"`` in a serial run).
        model_info: what was loaded (weights actually used, device, dtype ...).
        geometry: stride and crop applicability of the (model, strategy) pair.
        claims_made: every claim the strategy makes.
    """

    model: str
    strategy: str
    claim: str
    claimed: bool
    status: str
    figure: str = ""
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    tolerance: float | None = None
    message: str = ""
    example: str = ""
    seconds: float = 0.0
    worker: str = "main"
    model_info: dict[str, Any] = field(default_factory=dict)
    geometry: dict[str, Any] = field(default_factory=dict)
    claims_made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins only (travels through execnet and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _jsonable(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def as_number(value: Any) -> float | None:
    """A figure value back as a float ("inf"/"nan" strings included); None if not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def versions() -> dict[str, str]:
    """Versions of maskbench and the libraries its figures depend on."""
    import hypothesis
    import timm
    import torch

    import maskbench

    return {
        "maskbench": maskbench.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "hypothesis": hypothesis.__version__,
        "python": platform.python_version(),
    }


def build_scorecard(
    records: Iterable[Record],
    settings: Mapping[str, Any],
    *,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``records`` into one scorecard (independent of their order)."""
    ordered = sorted(records, key=lambda r: (r.model, r.strategy, _claim_order(r.claim)))
    models: dict[str, Any] = {}
    results: dict[str, Any] = {}
    summary = {status: 0 for status in STATUSES}
    timings: dict[str, Any] = {}
    for record in ordered:
        summary[record.status] += 1
        if record.model_info and record.model not in models:
            models[record.model] = dict(record.model_info)
        entry = results.setdefault(record.model, {}).setdefault(
            record.strategy, {"claims_made": [], "geometry": {}, "claims": {}, "figures": {}}
        )
        if record.claims_made:
            entry["claims_made"] = sorted(record.claims_made, key=_claim_order)
        if record.geometry and not entry["geometry"]:
            entry["geometry"] = dict(record.geometry)
        primary = record.figures.get(record.figure, {})
        entry["claims"][record.claim] = {
            "status": record.status,
            "claimed": record.claimed,
            "figure": record.figure,
            "value": primary.get("value"),
            "tolerance": record.tolerance,
            "message": record.message,
            "example": record.example,
        }
        for name, figure in record.figures.items():
            entry["figures"][name] = {**figure, "claim": record.claim}
        timings.setdefault(record.model, {}).setdefault(record.strategy, {})[record.claim] = round(
            record.seconds, 3
        )
    for model in results:
        models.setdefault(model, {})
    run_info = dict(run or {})
    run_info["timings"] = timings
    return _jsonable(
        {
            "schema": SCHEMA,
            "versions": versions(),
            "settings": dict(settings),
            "models": models,
            "results": results,
            "summary": summary,
            "run": run_info,
        }
    )


def _claim_order(claim: str) -> int:
    names = [c.value for c in ALL_CLAIMS]
    return names.index(claim) if claim in names else len(names)


def comparable(scorecard: Mapping[str, Any]) -> dict[str, Any]:
    """The scorecard without its ``"run"`` part (timings, workers): equal for equal audits."""
    return {k: v for k, v in scorecard.items() if k != "run"}


# --------------------------------------------------------------------------- files


def markdown_path(json_path: str | os.PathLike) -> Path:
    """``out.md`` next to ``out.json``."""
    return Path(json_path).with_suffix(".md")


def write_scorecard(scorecard: Mapping[str, Any], path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the JSON scorecard to ``path`` and its Markdown next to it (both atomically)."""
    json_path = Path(path)
    atomic_write_text(json_path, json.dumps(scorecard, indent=2, sort_keys=False) + "\n")
    md_path = markdown_path(json_path)
    atomic_write_text(md_path, render_markdown(scorecard))
    return json_path, md_path


def read_scorecard(path: str | os.PathLike) -> dict[str, Any]:
    """Load a scorecard JSON, checking its schema (ValueError with the reason)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"scorecard {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"scorecard {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{str(path)!r} is not a maskbench scorecard (schema {found!r}, expected {SCHEMA!r})"
        )
    return data


# --------------------------------------------------------------------------- rendering

#: Short column titles of the claims.
CLAIM_TITLES = {
    "identity": "identity",
    "content_independence": "content indep.",
    "batch_consistency": "batch",
    "determinism": "determinism",
    "crop_equivalence": "crop",
    "translation_invariance": "translation",
    "monotone_drift": "drift rho",
    "finite": "finite",
}


def format_value(value: Any) -> str:
    """A figure value in 3 significant digits ("0" for zero, "-" for none)."""
    number = as_number(value)
    if number is None:
        return "-"
    if number == 0:
        return "0"
    if not math.isfinite(number):
        return str(value)
    return f"{number:.3g}"


def cell(claim: Mapping[str, Any] | None, *, markdown: bool = True) -> str:
    """One claim's table cell: verdict for claimed claims, the figure for measured ones."""
    if claim is None:
        return "-"
    value = format_value(claim.get("value"))
    status = claim.get("status")
    if status == PASS:
        return f"pass {value}"
    if status == FAIL:
        return f"**FAIL** {value}" if markdown else f"FAIL {value}"
    if status == ERROR:
        return "**ERROR**" if markdown else "ERROR"
    if status == NOT_APPLICABLE:
        return "n/a" if claim.get("claimed") else f"n/a ({value})"
    if status == NOT_CLAIMED:
        return f"({value})" if value != "-" else "n/a"
    return str(status)


def _curve_text(figures: Mapping[str, Any]) -> str:
    curve = figures.get("drift_curve", {}).get("value")
    if not isinstance(curve, list) or len(curve) < 10:
        return "-"
    return " / ".join(format_value(curve[i]) for i in (1, 5, 9))


def strategy_rows(scorecard: Mapping[str, Any], model: str) -> list[list[str]]:
    """Table rows (one per strategy) for ``model``: claims, then extra figures."""
    rows = []
    for strategy, entry in sorted(scorecard.get("results", {}).get(model, {}).items()):
        claims = entry.get("claims", {})
        figures = entry.get("figures", {})
        row = [strategy]
        row += [cell(claims.get(c.value)) for c in ALL_CLAIMS]
        row.append(format_value(figures.get("drift_worst_step", {}).get("value")))
        row.append(_curve_text(figures))
        rows.append(row)
    return rows


def _model_heading(model: str, info: Mapping[str, Any]) -> str:
    weights = info.get("weights", "?")
    source = info.get("weights_source", "")
    text = f"{model}: {weights} weights" + (f" ({source})" if source else "")
    if info.get("note"):
        text += f"; {info['note']}"
    return text


def render_markdown(scorecard: Mapping[str, Any]) -> str:
    """The scorecard as Markdown: one table per model, one row per strategy."""
    settings = scorecard.get("settings", {})
    vers = scorecard.get("versions", {})
    lines = ["# maskbench audit scorecard", ""]
    lines.append(
        " · ".join(f"{k} {v}" for k, v in vers.items() if k in ("maskbench", "torch", "timm"))
        + f" · images {settings.get('image_size')}px ({settings.get('images')})"
        + f" · {settings.get('batch_size')} images per example"
        + f" · {settings.get('examples')} drawn examples per claim"
        + f" · {settings.get('dtype')}"
    )
    lines.append("")
    lines.append(
        "**pass / FAIL**: the strategy makes the claim and the audit tested it (value: the "
        "measured figure). **(value)**: the claim is not made; the figure is measured. "
        "**n/a**: the claim does not apply (reason in the JSON)."
    )
    headers = ["strategy"] + [CLAIM_TITLES[c.value] for c in ALL_CLAIMS]
    headers += ["drift worst step", "drift at 0.1 / 0.5 / 0.9"]
    for model, info in sorted(scorecard.get("models", {}).items()):
        lines += ["", f"## {_model_heading(model, info)}", ""]
        device = info.get("device", "?")
        lines.append(f"device {device}, dtype {info.get('dtype', '?')}")
        lines.append("")
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        for row in strategy_rows(scorecard, model):
            lines.append("| " + " | ".join(row) + " |")
    problems = [
        (model, strategy, claim, entry)
        for model, strategies in sorted(scorecard.get("results", {}).items())
        for strategy, data in sorted(strategies.items())
        for claim, entry in data.get("claims", {}).items()
        if entry.get("status") in (FAIL, ERROR)
    ]
    if problems:
        lines += ["", "## Failures and errors", ""]
        for model, strategy, claim, entry in problems:
            message = str(entry.get("message", "")).replace("\n", "<br>")
            lines.append(f"- **{model} / {strategy} / {claim}** ({entry['status']}): {message}")
    lines += ["", "## Figures", ""]
    docs: dict[str, str] = {}
    for strategies in scorecard.get("results", {}).values():
        for data in strategies.values():
            for name, figure in data.get("figures", {}).items():
                docs.setdefault(name, str(figure.get("doc", "")))
    for name, doc in docs.items():
        lines.append(f"- `{name}`: {doc}")
    return "\n".join(lines) + "\n"


def render_terminal(scorecard: Mapping[str, Any]) -> list[str]:
    """Plain-text summary lines (one table per model) for the end of a pytest run."""
    lines: list[str] = []
    titles = ["strategy"] + [CLAIM_TITLES[c.value] for c in ALL_CLAIMS]
    for model, info in sorted(scorecard.get("models", {}).items()):
        lines.append(_model_heading(model, info) + f"; {info.get('device', '?')}")
        rows = [titles]
        for strategy, entry in sorted(scorecard.get("results", {}).get(model, {}).items()):
            claims = entry.get("claims", {})
            rows.append(
                [strategy] + [cell(claims.get(c.value), markdown=False) for c in ALL_CLAIMS]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(titles))]
        for row in rows:
            lines.append(
                "  ".join(
                    text.ljust(width) for text, width in zip(row, widths, strict=True)
                ).rstrip()
            )
    summary = scorecard.get("summary", {})
    lines.append(
        "checks: "
        + ", ".join(f"{summary.get(s, 0)} {s.replace('_', ' ')}" for s in STATUSES)
        + "  (pass/FAIL: claimed and tested; (value): not claimed, measured)"
    )
    return lines
