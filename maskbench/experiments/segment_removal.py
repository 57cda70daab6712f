"""Segment removal: remove a growing fraction of segments and watch the predictions.

For every image, segmentation (16 x 16 patches, SLIC, quickshift) and removal order,
the segments are removed cumulatively in that order: fraction ``f`` removes the first
``round(f * S)`` of the ``S`` segments (so masks are nested). Orders:

* ``random``: a seeded random permutation, one per image and segmentation, shared by
  every strategy;
* ``most_salient`` / ``least_salient`` (when a saliency map or object mask is known):
  segments ranked by their mean saliency, or by their object coverage (the fraction of
  the segment's pixels on the object); ties (e.g. all pure-background segments) follow
  the random order.

Every strategy sees exactly the same masks. Metrics per strategy, segmentation, order
and fraction (see :mod:`maskbench.experiments.metrics`): accuracy (with labels),
fraction of predictions unchanged, predicted-class entropy and KL drift, each with a
95% bootstrap interval over images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from maskbench.environment import environment_meta
from maskbench.experiments.common import (
    Stopwatch,
    clean_logits,
    image_seed,
    model_device,
    model_dtype,
    model_meta,
    num_classes_of,
    progress_bar,
)
from maskbench.experiments.data import EvalData
from maskbench.experiments.metrics import entropy_statistic, kl_divergence
from maskbench.experiments.results import EvaluationResult, summary_row
from maskbench.experiments.segmentation import SEGMENTATIONS, removal_orders, segment
from maskbench.experiments.stats import Bootstrap, as_estimate, mean_estimate
from maskbench.experiments.strategy_set import StrategySpec, resolve_strategies
from maskbench.masks import masks_from_keep, nested_keep_vectors, random_order

#: Removal fractions of the paper: 0, 0.1, ..., 1.0.
DEFAULT_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))
#: All removal orders, in report order.
ORDERS: tuple[str, ...] = ("random", "most_salient", "least_salient")


def image_masks(
    image: torch.Tensor,
    salience: torch.Tensor | None,
    segmentations: Sequence[str],
    orders: Sequence[str],
    fractions: Sequence[float],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """All removal masks of one image.

    Returns ``(masks, inverse, counts)``: the *distinct* keep-masks (M, 1, H, W), the
    index (G * O * F,) of the mask of every (segmentation, order, fraction) condition
    in that nesting order, and the number of segments of each segmentation.
    """
    distinct: list[torch.Tensor] = []
    inverse: list[torch.Tensor] = []
    counts: dict[str, int] = {}
    offset = 0
    for g, name in enumerate(segmentations):
        segments = segment(image, name, seed=seed)
        num = int(segments.max()) + 1
        counts[name] = num
        shuffled = random_order(num, image_seed(seed, 0, g), device=segments.device)
        available = removal_orders(segments, shuffled, salience)
        keep = torch.cat(
            [nested_keep_vectors(num, fractions, available[order]) for order in orders]
        )
        unique, index = torch.unique(keep, dim=0, return_inverse=True)
        distinct.append(masks_from_keep(segments, unique))
        inverse.append(index + offset)
        offset += unique.shape[0]
    return torch.cat(distinct), torch.cat(inverse), counts


def segment_removal(
    model: nn.Module,
    data: EvalData,
    strategies: StrategySpec,
    *,
    segmentations: Sequence[str] = SEGMENTATIONS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    orders: Sequence[str] | None = None,
    seed: int = 0,
    bootstrap_reps: int = 1000,
    progress: bool = False,
) -> EvaluationResult:
    """Run the segment-removal evaluation; see the module docstring.

    Args:
        model: a pixel-space model in eval mode (e.g. from :func:`maskbench.load_model`).
        data: images, and optionally labels and object masks / saliency maps.
        strategies: names (or instances) of the strategies to compare.
        segmentations: segmentation names (``patches16``, ``slic``, ``quickshift``).
        fractions: removal fractions in [0, 1].
        orders: removal orders; by default ``random`` plus the salience orders when
            ``data`` has saliency maps or object masks (saliency takes precedence).
        seed: seed of the random orders and of the bootstrap.
        bootstrap_reps: bootstrap resamples for the 95% intervals.
        progress: show a progress bar on stderr.
    """
    watch = Stopwatch()
    resolved = resolve_strategies(strategies, model)
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must be in [0, 1], got {fractions}")
    salience_maps, salience_source = _salience(data)
    if orders is None:
        orders = ORDERS if salience_maps is not None else ("random",)
    orders = list(orders)
    unknown = [o for o in orders if o not in ORDERS]
    if unknown:
        raise ValueError(f"unknown removal orders {unknown}; choose from {', '.join(ORDERS)}")
    if salience_maps is None and any(o != "random" for o in orders):
        raise ValueError(
            "salience orders need object masks or saliency maps (--masks or --saliency)"
        )

    device, dtype = model_device(model), model_dtype(model)
    reference = clean_logits(model, data.images)
    num_classes = num_classes_of(model, reference)
    n, names = len(data), list(resolved)
    conditions = [(g, o, f) for g in segmentations for o in orders for f in fractions]
    predicted = torch.empty(len(names), len(conditions), n, dtype=torch.int64)
    kl = torch.empty(len(names), len(conditions), n, dtype=torch.float64)
    segment_counts: dict[str, list[int]] = {g: [] for g in segmentations}
    strategy_seconds = dict.fromkeys(names, 0.0)

    bar = progress_bar(n * len(names), "segment_removal", progress)
    with bar:
        for i in range(n):
            image = data.images[i]
            salience = None if salience_maps is None else salience_maps[i, 0]
            masks, inverse, counts = image_masks(
                image, salience, segmentations, orders, fractions, image_seed(seed, i)
            )
            for g in segmentations:
                segment_counts[g].append(counts[g])
            image_batch = image[None].to(device=device, dtype=dtype)
            masks = masks.to(device)
            for k, name in enumerate(names):
                started = time.perf_counter()
                logits = resolved[name](model, image_batch, masks).float().cpu()[inverse]
                strategy_seconds[name] += time.perf_counter() - started
                predicted[k, :, i] = logits.argmax(-1)
                kl[k, :, i] = kl_divergence(reference[i : i + 1].expand_as(logits), logits)
                bar.update(1)

    boot = Bootstrap(n, reps=bootstrap_reps, seed=seed)
    reference_pred = reference.argmax(-1)
    per_metric = {
        "unchanged": mean_estimate((predicted == reference_pred).double(), boot),
        "entropy": boot.estimate(predicted, entropy_statistic(num_classes), method="normal"),
        "kl_drift": mean_estimate(kl, boot),
    }
    correct = None
    if data.labels is not None:
        correct = predicted == data.labels.cpu()
        per_metric = {"accuracy": mean_estimate(correct.double(), boot), **per_metric}

    summary = []
    for k, name in enumerate(names):
        for c, (g, o, f) in enumerate(conditions):
            condition = {"strategy": name, "segmentation": g, "order": o, "fraction": f}
            for metric, estimate in per_metric.items():
                summary.append(summary_row(condition, metric, as_estimate(estimate, (k, c))))

    per_image = _per_image_columns(names, conditions, data.names, predicted, reference_pred, kl)
    if correct is not None:
        per_image["correct"] = correct.reshape(-1).tolist()

    notes = []
    if data.labels is None:
        notes.append("No labels were given: accuracy is not reported.")
    return EvaluationResult(
        evaluation="segment_removal",
        summary=summary,
        per_image=per_image,
        config={
            "strategies": names,
            "segmentations": list(segmentations),
            "fractions": fractions,
            "orders": orders,
            "salience_source": salience_source,
            "seed": seed,
            "bootstrap": {"reps": bootstrap_reps, "level": 0.95, "seed": seed},
        },
        meta={
            "model": model_meta(model),
            "data": data.describe(),
            "num_classes": num_classes,
            "clean": _clean_facts(reference, data),
            "segments_per_image": {
                g: {"mean": sum(v) / len(v), "min": min(v), "max": max(v)}
                for g, v in segment_counts.items()
            },
            "seconds": watch.elapsed,
            "strategy_seconds": strategy_seconds,
            "environment": environment_meta(),
        },
        notes=notes,
    )


def _salience(data: EvalData) -> tuple[torch.Tensor | None, str | None]:
    """The maps that rank segments: saliency when given, else object masks."""
    if data.saliency is not None:
        return data.saliency.float(), "saliency"
    if data.objects is not None:
        return data.objects.float(), "object_mask"
    return None, None


def _clean_facts(reference: torch.Tensor, data: EvalData) -> dict:
    facts: dict = {"n_images": int(reference.shape[0])}
    if data.labels is not None:
        facts["accuracy"] = float((reference.argmax(-1) == data.labels.cpu()).double().mean())
    return facts


def _per_image_columns(
    names: Sequence[str],
    conditions: Sequence[tuple[str, str, float]],
    image_names: Sequence[str],
    predicted: torch.Tensor,
    reference_pred: torch.Tensor,
    kl: torch.Tensor,
) -> dict[str, list]:
    """Column-wise per-image table in (strategy, condition, image) order."""
    n = predicted.shape[-1]
    columns: dict[str, list] = {
        "strategy": [],
        "segmentation": [],
        "order": [],
        "fraction": [],
        "image": [],
    }
    for name in names:
        for g, o, f in conditions:
            columns["strategy"] += [name] * n
            columns["segmentation"] += [g] * n
            columns["order"] += [o] * n
            columns["fraction"] += [f] * n
            columns["image"] += list(image_names)
    columns["predicted"] = predicted.reshape(-1).tolist()
    columns["unchanged"] = (predicted == reference_pred).reshape(-1).tolist()
    columns["kl"] = kl.reshape(-1).tolist()
    return columns


def per_image_array(result: EvaluationResult, column: str) -> dict[str, torch.Tensor]:
    """Strategy -> (G, O, F, N) tensor of a per-image column of a segment-removal result.

    G segmentations, O orders, F fractions (in the result's config order), N images.
    The layout is checked, so a hand-edited or foreign table raises instead of mixing up
    conditions.
    """
    config, table = result.config, result.per_image
    segs, orders, fractions = config["segmentations"], config["orders"], config["fractions"]
    strategies = config["strategies"]
    total = len(table["strategy"])
    per_strategy = total // max(len(strategies), 1)
    n = per_strategy // max(len(segs) * len(orders) * len(fractions), 1)
    if n * len(segs) * len(orders) * len(fractions) * len(strategies) != total:
        raise ValueError("per-image table does not match the result's configuration")
    expected_order = [o for _ in segs for o in orders for _ in fractions for _ in range(n)]
    values = torch.tensor(
        [float(v) if v is not None else float("nan") for v in table[column]], dtype=torch.float64
    )
    out = {}
    for k, name in enumerate(strategies):
        rows = slice(k * per_strategy, (k + 1) * per_strategy)
        if set(table["strategy"][rows]) != {name} or table["order"][rows] != expected_order:
            raise ValueError(f"per-image rows of {name!r} are not in the expected layout")
        out[name] = values[rows].reshape(len(segs), len(orders), len(fractions), n)
    return out
