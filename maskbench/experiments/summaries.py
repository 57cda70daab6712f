"""Markdown summaries and headline numbers of each evaluation's result.

``headline(result)`` gives, per strategy, the few numbers a report leads with (each with
its 95% bootstrap interval); ``markdown(result)`` renders a result as a Markdown
section with tables; both are used by the single-evaluation outputs and by the
``paper`` report.
"""

from __future__ import annotations

from collections.abc import Sequence

from maskbench.experiments.metrics import METRICS
from maskbench.experiments.results import EvaluationResult
from maskbench.experiments.stats import Bootstrap, as_estimate, weighted_mean

#: Metrics shown as percentages.
PERCENT_METRICS = frozenset(
    {"accuracy", "unchanged", "accuracy_silhouette", "accuracy_shifted", "win_share"}
)


def fmt(row: dict | None, metric: str, *, ci: bool = True) -> str:
    """A value (and its interval) for a table cell: percentages or 3 decimals."""
    if not row or row.get("value") is None:
        return "n/a"
    scale, digits, unit = (100.0, 1, "%") if metric in PERCENT_METRICS else (1.0, 3, "")
    text = f"{row['value'] * scale:.{digits}f}{unit}"
    if ci and row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" [{row['ci_low'] * scale:.{digits}f}, {row['ci_high'] * scale:.{digits}f}]"
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _boot(result: EvaluationResult, n: int) -> Bootstrap:
    config = result.config.get("bootstrap", {})
    return Bootstrap(n, reps=int(config.get("reps", 1000)), seed=int(config.get("seed", 0)))


# --------------------------------------------------------------------------- headlines


def _interior(fractions: Sequence[float]) -> list[int]:
    return [j for j, f in enumerate(fractions) if 0.0 < f < 1.0] or list(range(len(fractions)))


def segment_removal_headline(
    result: EvaluationResult, order: str | None = "random"
) -> dict[str, dict[str, dict]]:
    """Per strategy: each metric averaged over the interior fractions (0 < f < 1) and all
    segmentations, for one removal order (all orders when ``order`` is None or was not
    run), with a bootstrap interval over images."""
    from maskbench.experiments.findings import entropy_headline
    from maskbench.experiments.segment_removal import per_image_array

    interior = _interior(result.config["fractions"])
    orders = result.config["orders"]
    order_idx = [orders.index(order)] if order in orders else list(range(len(orders)))
    columns = {"unchanged": "unchanged", "kl_drift": "kl"}
    if "correct" in result.per_image:
        columns = {"accuracy": "correct", **columns}
    arrays = {metric: per_image_array(result, column) for metric, column in columns.items()}
    out: dict[str, dict[str, dict]] = {}
    for name in result.strategies:
        entry: dict[str, dict] = {}
        for metric, per_strategy in arrays.items():
            values = per_strategy[name][:, order_idx][:, :, interior]
            flat = values.reshape(-1, values.shape[-1])
            boot = _boot(result, flat.shape[-1])
            estimate = boot.estimate(flat, lambda v, w: weighted_mean(v, w).mean(dim=0))
            entry[metric] = as_estimate(estimate)
        entry["entropy"] = entropy_headline(
            result, name, int(result.meta["num_classes"]), orders=order_idx
        )
        out[name] = {m: entry[m] for m in METRICS if m in entry}
    return out


def unchanged_by_order(result: EvaluationResult) -> dict[str, dict[str, dict]]:
    """Per strategy and removal order: mean ``unchanged`` over the interior fractions and
    all segmentations, with a bootstrap interval over images."""
    from maskbench.experiments.segment_removal import per_image_array

    interior = _interior(result.config["fractions"])
    unchanged = per_image_array(result, "unchanged")
    out: dict[str, dict[str, dict]] = {}
    for name in result.strategies:
        out[name] = {}
        for o, order in enumerate(result.config["orders"]):
            values = unchanged[name][:, o][:, interior]
            flat = values.reshape(-1, values.shape[-1])
            boot = _boot(result, flat.shape[-1])
            estimate = boot.estimate(flat, lambda v, w: weighted_mean(v, w).mean(dim=0))
            out[name][order] = as_estimate(estimate)
    return out


def headline(result: EvaluationResult) -> dict[str, dict[str, dict]]:
    """Per strategy, the evaluation's headline metrics with intervals."""
    if result.evaluation == "segment_removal":
        head = segment_removal_headline(result)
        by_order = unchanged_by_order(result)
        return {
            name: {**metrics, **{f"unchanged_{o}": v for o, v in by_order[name].items()}}
            for name, metrics in head.items()
        }
    out: dict[str, dict[str, dict]] = {}
    for row in result.summary:
        out.setdefault(row["strategy"], {})[row["metric"]] = {
            k: row[k] for k in ("value", "ci_low", "ci_high", "n")
        }
    return out


# --------------------------------------------------------------------------- markdown


def _notes(result: EvaluationResult) -> str:
    return "".join(f"\n> Note: {note}\n" for note in result.notes)


def segment_removal_markdown(
    result: EvaluationResult, images: dict[str, str], *, detail: bool = True
) -> str:
    """Markdown for a segment-removal result (``images``: order -> plot file name).

    With ``detail`` every order gets per-fraction tables; without, only the random order.
    """
    config = result.config
    head = headline(result)
    metrics = [m for m in METRICS if any(m in v for v in head.values())]
    fractions = config["fractions"]
    interior = [f for f in fractions if 0.0 < f < 1.0]
    lines = [
        "## Segment removal",
        "",
        f"Segments removed cumulatively in each order ({', '.join(config['orders'])}); "
        f"segmentations: {', '.join(config['segmentations'])}; fractions "
        f"{', '.join(f'{f:g}' for f in fractions)}. "
        f"Segments per image: "
        + ", ".join(
            f"{g} {v['mean']:.1f} (min {v['min']}, max {v['max']})"
            for g, v in result.meta.get("segments_per_image", {}).items()
        )
        + ".",
        _notes(result),
        "Headline (random order, the setting of the paper's headline numbers): each "
        + (
            f"metric averaged over the fractions {interior[0]:g}-{interior[-1]:g} "
            if interior
            else "metric averaged over all fractions "
        )
        + "and all segmentations, per image; 95% bootstrap interval over images (entropy: "
        "+- 1.96 bootstrap standard errors).",
        "",
        table(
            ["strategy", *metrics],
            [[name, *(fmt(head[name].get(m), m) for m in metrics)] for name in head],
        ),
        "",
        "Metric meanings: " + "; ".join(f"**{m}**: {METRICS[m]}" for m in metrics) + ".",
        "",
    ]
    if len(config["orders"]) > 1:
        lines += [
            "Fraction of predictions unchanged by removal order (same averaging). Under "
            "random and least-salient-first removal, keeping the prediction is the goal; "
            "under most-salient-first removal the object goes first, so a prediction that "
            "survives may owe more to the mask's shape than to the image.",
            "",
            table(
                ["strategy", *config["orders"]],
                [
                    [
                        name,
                        *(
                            fmt(head[name].get(f"unchanged_{o}"), "unchanged")
                            for o in config["orders"]
                        ),
                    ]
                    for name in head
                ],
            ),
            "",
        ]
    for order in config["orders"]:
        for metric in ("accuracy", "unchanged"):
            if not result.rows(metric=metric) or (not detail and order != "random"):
                continue
            lines.append(f"### {metric} by fraction ({order} order)")
            lines.append("")
            for seg in config["segmentations"]:
                rows = []
                for name in result.strategies:
                    cells = [
                        fmt(
                            result.value(
                                strategy=name,
                                segmentation=seg,
                                order=order,
                                fraction=f,
                                metric=metric,
                            ),
                            metric,
                            ci=False,
                        )
                        for f in fractions
                    ]
                    rows.append([name, *cells])
                lines += [
                    f"{seg}:",
                    "",
                    table(["strategy", *(f"{f:g}" for f in fractions)], rows),
                    "",
                ]
        if order in images:
            lines += [f"![segment removal, {order} order]({images[order]})", ""]
    return "\n".join(lines)


def shape_leakage_markdown(result: EvaluationResult, image: str | None) -> str:
    """Markdown for a shape-leakage result."""
    meta = result.meta
    metrics = ["accuracy_silhouette", "accuracy_shifted", "leakage"]
    rows = [
        [name, *(fmt(result.value(strategy=name, metric=m), m) for m in metrics)]
        for name in result.strategies
    ]
    overlap = meta.get("overlap", {})
    lines = [
        "## Shape leakage",
        "",
        f"{meta['n_clean_correct']} of {meta['n_images']} images are classified correctly "
        f"unmasked (target: {meta['target']}); only those are used. **silhouette**: the "
        "object removed through its exact mask. **shifted**: the same mask cyclically "
        "shifted (`torch.roll`, same area; the outline breaks where it wraps around the "
        f"border) to an offset overlapping the object by at most "
        f"{result.config['max_overlap']:.0%} (achieved: mean {overlap.get('mean', 0):.1%}, "
        f"max {overlap.get('max', 0):.1%}), so the object stays visible. **leakage** = "
        "accuracy with the silhouette / accuracy with the shifted mask. Chance accuracy is "
        f"{meta['chance']:.1%}; silhouette accuracy far above chance means the outline of "
        "the hole tells the model the class. 95% bootstrap intervals over images.",
        _notes(result),
        table(["strategy", *metrics], rows),
        "",
    ]
    if image:
        lines += [f"![shape leakage]({image})", ""]
    return "\n".join(lines)


def lime_markdown(result: EvaluationResult, images: Sequence[str]) -> str:
    """Markdown for a LIME result."""
    config, meta = result.config, result.meta
    segs = meta.get("segments_per_image", {})
    rows = [
        [
            name,
            fmt(result.value(strategy=name, metric="score"), "score"),
            fmt(result.value(strategy=name, metric="win_share"), "win_share"),
        ]
        for name in result.strategies
    ]
    lines = [
        "## LIME",
        "",
        f"LIME with {config['n_samples']} samples per image (keep probability "
        f"{config['keep_probability']}, row 0 = unmasked image), the same random design "
        "for every strategy; kernel `sqrt(exp(-d^2 / 0.25^2))` on the cosine distance d to "
        f"the all-ones row (width {config['kernel_width']}); weighted ridge regression, "
        f"alpha {config['ridge_alpha']}, unpenalised intercept; target: the "
        f"{config['target']} class's {config['output']}; segmentation {config['segmentation']} "
        f"({segs.get('mean', 0):.1f} segments per image, min {segs.get('min')}, max "
        f"{segs.get('max')}). **score**: cosine similarity between the per-segment weights and "
        "the object mask's per-segment mass (mask minus its mean, summed per segment). "
        "**win_share**: share of images on which the strategy has the highest score (ties "
        f"split). {meta['data']['n_images']} images; 95% bootstrap intervals over images.",
        _notes(result),
        table(["strategy", "score", "win_share"], rows),
        "",
    ]
    lines += [f"![LIME]({name})" for name in images]
    lines.append("")
    return "\n".join(lines)


def markdown(
    result: EvaluationResult, images: dict[str, str] | None = None, *, detail: bool = True
) -> str:
    """A Markdown section for any result; ``images`` maps plot keys to file names.

    ``detail=False`` leaves out the per-fraction tables of the non-random orders.
    """
    images = images or {}
    if result.evaluation == "segment_removal":
        return segment_removal_markdown(result, images, detail=detail)
    if result.evaluation == "shape_leakage":
        return shape_leakage_markdown(result, images.get("plot"))
    if result.evaluation == "lime":
        return lime_markdown(result, [v for _, v in sorted(images.items())])
    raise ValueError(f"no Markdown summary for evaluation {result.evaluation!r}")
