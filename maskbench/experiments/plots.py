"""PNG plots of evaluation results (matplotlib, Agg, no global pyplot state).

Figures are built from :class:`matplotlib.figure.Figure` directly, so plotting never
changes the user's matplotlib backend. Each strategy keeps one colour in every plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from maskbench.experiments.data import EvalData
from maskbench.experiments.metrics import METRICS
from maskbench.experiments.results import EvaluationResult
from maskbench.experiments.strategy_set import PAPER_STRATEGIES

_PALETTE = (
    "#000000",  # black
    "#8c8c8c",  # grey
    "#1f77b4",  # blur
    "#17becf",  # inpaint_neighbor
    "#d62728",  # layer_masking
    "#ff7f0e",  # layer_masking_zero
    "#9467bd",  # partial_conv
    "#2ca02c",  # layer_masking_crop
    "#e377c2",
    "#bcbd22",
    "#8c564b",
    "#7f7f7f",
)
DPI = 100


def strategy_colour(name: str, order: Sequence[str] = ()) -> str:
    """A stable colour per strategy: paper strategies fixed, others by position."""
    if name in PAPER_STRATEGIES:
        return _PALETTE[PAPER_STRATEGIES.index(name)]
    extras = [s for s in order if s not in PAPER_STRATEGIES]
    position = extras.index(name) if name in extras else abs(hash(name))
    return _PALETTE[len(PAPER_STRATEGIES) + position % (len(_PALETTE) - len(PAPER_STRATEGIES))]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _none_to_nan(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_segment_removal(
    result: EvaluationResult, path: str | Path, *, order: str = "random"
) -> Path:
    """Metric vs removal fraction, one line (with 95% band) per strategy.

    One row of panels per metric, one column per segmentation, for one removal order.
    """
    segmentations = result.config["segmentations"]
    metrics = [m for m in METRICS if result.rows(metric=m)]
    strategies = result.strategies
    fig = Figure(figsize=(3.6 * len(segmentations), 2.8 * len(metrics)))
    axes = fig.subplots(len(metrics), len(segmentations), squeeze=False)
    for r, metric in enumerate(metrics):
        for c, seg in enumerate(segmentations):
            ax = axes[r][c]
            for name in strategies:
                rows = result.rows(strategy=name, segmentation=seg, order=order, metric=metric)
                if not rows:
                    continue
                rows = sorted(rows, key=lambda row: row["fraction"])
                x = np.array([row["fraction"] for row in rows])
                y = _none_to_nan([row["value"] for row in rows])
                low = _none_to_nan([row["ci_low"] for row in rows])
                high = _none_to_nan([row["ci_high"] for row in rows])
                colour = strategy_colour(name, strategies)
                ax.plot(x, y, marker="o", markersize=3, color=colour, label=name)
                ax.fill_between(x, low, high, color=colour, alpha=0.12, linewidth=0)
            if r == 0:
                ax.set_title(f"{seg} ({order})", fontsize=10)
            if c == 0:
                ax.set_ylabel(metric)
            if r == len(metrics) - 1:
                ax.set_xlabel("fraction of segments removed")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_rows = int(np.ceil(len(labels) / 4))
    height = fig.get_figheight()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), frameon=False)
    # fixed margins (a layout engine would cost a second full draw of a large figure)
    fig.subplots_adjust(
        left=0.08,
        right=0.98,
        bottom=0.6 / height,
        top=1 - (0.45 + 0.25 * legend_rows) / height,
        hspace=0.3,
        wspace=0.25,
    )
    return _save(fig, path)


def _bar_panel(ax, result: EvaluationResult, metric: str, strategies: Sequence[str]) -> None:
    values, lows, highs = [], [], []
    for name in strategies:
        row = result.value(strategy=name, metric=metric)
        values.append(row["value"])
        lows.append(row["ci_low"])
        highs.append(row["ci_high"])
    y = _none_to_nan(values)
    err = np.vstack([y - _none_to_nan(lows), _none_to_nan(highs) - y])
    colours = [strategy_colour(s, strategies) for s in strategies]
    ax.bar(
        range(len(strategies)),
        np.nan_to_num(y),
        yerr=np.nan_to_num(err),
        color=colours,
        capsize=3,
        edgecolor="black",
        linewidth=0.5,
    )
    ax.set_xticks(range(len(strategies)))
    ax.set_xticklabels(strategies, rotation=35, ha="right", fontsize=8)
    ax.set_title(metric, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def plot_shape_leakage(result: EvaluationResult, path: str | Path) -> Path:
    """Accuracy with the silhouette vs the shifted mask, and the leakage ratio (95% CIs)."""
    strategies = result.strategies
    fig = Figure(figsize=(max(8.0, 1.4 * len(strategies) + 3), 3.6))
    ax_acc, ax_ratio = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    width = 0.38
    x = np.arange(len(strategies))
    for offset, (metric, hatch) in zip(
        (-width / 2, width / 2),
        (("accuracy_silhouette", ""), ("accuracy_shifted", "//")),
        strict=True,
    ):
        rows = [result.value(strategy=s, metric=metric) for s in strategies]
        y = _none_to_nan([r["value"] for r in rows])
        err = np.vstack(
            [
                y - _none_to_nan([r["ci_low"] for r in rows]),
                _none_to_nan([r["ci_high"] for r in rows]) - y,
            ]
        )
        ax_acc.bar(
            x + offset,
            np.nan_to_num(y),
            width,
            yerr=np.nan_to_num(err),
            capsize=2,
            color=[strategy_colour(s, strategies) for s in strategies],
            hatch=hatch,
            edgecolor="black",
            linewidth=0.5,
            alpha=0.45 if hatch else 1.0,
        )
    chance = result.meta.get("chance")
    handles = [
        Patch(facecolor="lightgrey", edgecolor="black", label="silhouette (object removed)"),
        Patch(
            facecolor="lightgrey",
            edgecolor="black",
            hatch="//",
            label="shifted (same area, off the object)",
        ),
    ]
    if chance is not None:
        handles.append(
            ax_acc.axhline(chance, color="red", linestyle=":", linewidth=1, label="chance")
        )
    ax_acc.set_xticks(x)
    ax_acc.set_xticklabels(strategies, rotation=35, ha="right", fontsize=8)
    ax_acc.set_ylabel("accuracy on clean-correct images")
    ax_acc.set_ylim(0, 1.38)
    ax_acc.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax_acc.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", ncol=2)
    ax_acc.grid(axis="y", alpha=0.3)
    _bar_panel(ax_ratio, result, "leakage", strategies)
    ax_ratio.set_title("leakage = silhouette / shifted", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_lime_scores(result: EvaluationResult, path: str | Path) -> Path:
    """Mean LIME score (cosine with the object mass) and win share per strategy (95% CIs)."""
    strategies = result.strategies
    fig = Figure(figsize=(max(7.0, 1.3 * len(strategies) + 2), 3.4))
    ax_score, ax_win = fig.subplots(1, 2)
    _bar_panel(ax_score, result, "score", strategies)
    ax_score.set_title("cosine(LIME weights, object mass)", fontsize=10)
    ax_score.axhline(0, color="black", linewidth=0.6)
    _bar_panel(ax_win, result, "win_share", strategies)
    ax_win.set_title("share of images won", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_lime_explanations(
    result: EvaluationResult, data: EvalData, index: int, path: str | Path
) -> Path:
    """One image's LIME explanations side by side: segment weights painted on the image.

    Red = positive weight (segment supports the target class), blue = negative; each
    panel is scaled to its own largest absolute weight. The object's outline is drawn.
    """
    from maskbench.experiments.lime import explanation_maps

    strategies = result.strategies
    segments, maps = explanation_maps(result, data, index)
    image = data.images[index].permute(1, 2, 0).cpu().numpy()
    grey = image.mean(axis=-1)
    objects = None if data.objects is None else data.objects[index, 0].cpu().numpy()
    panels = 1 + len(strategies)
    fig = Figure(figsize=(2.2 * panels, 2.6))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title(f"image {data.names[index]}", fontsize=8)
    boundaries = _boundaries(segments)
    for ax, name in zip(axes[1:], strategies, strict=True):
        heat = maps[name].numpy()
        scale = float(np.abs(heat).max()) or 1.0
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat, cmap="bwr", vmin=-scale, vmax=scale, alpha=0.6)
        ax.imshow(np.ma.masked_where(~boundaries, boundaries), cmap="gray_r", alpha=0.25)
        score = _score_of(result, name, data.names[index])
        ax.set_title(f"{name}\ncos = {score:+.2f}", fontsize=8)
    for ax in axes:
        if objects is not None:
            ax.contour(objects.astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path)


def _boundaries(segments: torch.Tensor) -> np.ndarray:
    seg = segments.numpy()
    edge = np.zeros_like(seg, dtype=bool)
    edge[:-1] |= seg[:-1] != seg[1:]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    return edge


def _score_of(result: EvaluationResult, strategy: str, image: str) -> float:
    table = result.per_image
    for s, i, score in zip(table["strategy"], table["image"], table["score"], strict=True):
        if s == strategy and i == image:
            return float(score)
    return float("nan")
