"""Tidy result objects: one :class:`EvaluationResult` per evaluation run.

A result holds two tidy tables and the facts needed to reproduce it:

* ``summary``: one row per condition and metric, with the value, its bootstrap
  confidence interval and the number of images it rests on;
* ``per_image``: one row per image and condition (stored column-wise to keep the JSON
  small), from which every summary number can be recomputed;
* ``config`` (the arguments of the run), ``meta`` (model, data, runtime, versions) and
  ``notes`` (plain-language caveats, e.g. "no labels: accuracy skipped").

Everything is plain JSON types, so ``EvaluationResult.from_json(r.to_json()) == r``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Version of the JSON layout; bumped when a field changes meaning.
SCHEMA_VERSION = 1


def _plain(value: Any) -> Any:
    """Convert numpy/torch scalars and tuples into JSON-friendly Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass
class EvaluationResult:
    """The outcome of one evaluation (segment removal, shape leakage or LIME).

    Attributes:
        evaluation: the evaluation's name, e.g. ``"segment_removal"``.
        summary: tidy rows; each has the condition's keys (``strategy`` and the
            evaluation's own, e.g. ``fraction``), ``metric``, ``value``, ``ci_low``,
            ``ci_high`` and ``n`` (images the value rests on).
        per_image: column-wise table, one entry per image and condition; every column
            has the same length.
        config: the arguments the evaluation ran with.
        meta: model, data and runtime facts.
        notes: caveats in plain language, shown in every report of this result.
    """

    evaluation: str
    summary: list[dict[str, Any]] = field(default_factory=list)
    per_image: dict[str, list[Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _index: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lengths = {name: len(column) for name, column in self.per_image.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"per_image columns differ in length: {lengths}")

    # ------------------------------------------------------------------ queries

    def rows(self, **filters: Any) -> list[dict[str, Any]]:
        """Summary rows whose fields equal every given filter (e.g. ``metric="kl_drift"``).

        Lookups go through an index per set of filter keys, rebuilt when the summary
        changes, so building large tables stays fast.
        """
        keys = tuple(sorted(filters))
        signature = (id(self.summary), len(self.summary))
        cached = self._index.get(keys)
        if cached is None or cached[0] != signature:
            index: dict[tuple, list[dict[str, Any]]] = {}
            for row in self.summary:
                index.setdefault(tuple(row.get(k) for k in keys), []).append(row)
            cached = (signature, index)
            self._index[keys] = cached
        return list(cached[1].get(tuple(filters[k] for k in keys), []))

    def value(self, **filters: Any) -> dict[str, Any]:
        """The single summary row matching ``filters``; raises if there is not exactly one."""
        found = self.rows(**filters)
        if len(found) != 1:
            raise LookupError(f"{len(found)} summary rows match {filters}, expected exactly 1")
        return found[0]

    def column_values(self, column: str) -> list[Any]:
        """Distinct values of a summary column, in first-seen order."""
        seen: dict[Any, None] = {}
        for row in self.summary:
            if column in row:
                seen.setdefault(row[column], None)
        return list(seen)

    @property
    def strategies(self) -> list[str]:
        """The strategies this result covers, in the order they were run."""
        return self.column_values("strategy")

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "schema_version": SCHEMA_VERSION,
            "evaluation": self.evaluation,
            "config": _plain(self.config),
            "meta": _plain(self.meta),
            "notes": list(self.notes),
            "summary": _plain(self.summary),
            "per_image": _plain(self.per_image),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_dict` output."""
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"result has schema version {version}; this maskbench reads {SCHEMA_VERSION}"
            )
        return cls(
            evaluation=data["evaluation"],
            summary=[dict(r) for r in data.get("summary", [])],
            per_image={k: list(v) for k, v in data.get("per_image", {}).items()},
            config=dict(data.get("config", {})),
            meta=dict(data.get("meta", {})),
            notes=list(data.get("notes", [])),
        )

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 1) -> str:
        """Serialise to JSON text; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> EvaluationResult:
        """Read a result from JSON text or from a path to a JSON file."""
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))


def summary_row(
    condition: Mapping[str, Any],
    metric: str,
    estimate: Mapping[str, float],
) -> dict[str, Any]:
    """One tidy summary row: the condition's keys, then metric, value, CI and n."""
    return {
        **condition,
        "metric": metric,
        "value": estimate["value"],
        "ci_low": estimate["ci_low"],
        "ci_high": estimate["ci_high"],
        "n": estimate["n"],
    }


def columns_from_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Turn row dictionaries (all with the same keys) into a column-wise table."""
    columns: dict[str, list[Any]] = {}
    for index, row in enumerate(rows):
        if index == 0:
            columns = {k: [] for k in row}
        elif set(row) != set(columns):
            raise ValueError(f"row {index} has keys {sorted(row)}, expected {sorted(columns)}")
        for key, value in row.items():
            columns[key].append(value)
    return columns
