"""LIME on torch, batched, with one shared random design for every strategy.

For one image with ``S`` segments, LIME (Ribeiro et al. 2016, ``lime_image``):

1. draws a design ``Z`` (n, S) of keep-vectors: each segment kept with probability
   0.5, independently; row 0 is all ones (the unmasked image), as in ``lime_image``;
2. evaluates the model on the image with each row's removed segments removed, here
   *through a strategy* (all n masks in one call: strategies chunk internally), and
   takes the target class's output (softmax probability by default, as LIME does);
3. weights each sample by LIME's exponential kernel on the cosine distance ``d`` between
   its row and the all-ones row, ``pi = sqrt(exp(-d**2 / 0.25**2))`` (kernel width
   0.25, ``lime_image``'s default; ``d = 1`` for an all-zero row);
4. fits a weighted ridge regression (alpha 1, unpenalised intercept; sklearn's ``Ridge``
   as LIME uses it) of the outputs on ``Z``, solved exactly with ``torch.linalg``.

The per-segment coefficients are the explanation. The design depends only on the seed
and the image index, so every strategy sees the same masks and strategies differ only
in how they remove.

Score (as in the paper): cosine similarity between the coefficients and the object
mask's per-segment *mass* ``sum over segment pixels of (mask - mean(mask))``, which is
positive for segments mostly on the object and negative for background segments. Per
image, the strategy with the highest score wins (ties split the win).
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
from maskbench.experiments.data import DataError, EvalData
from maskbench.experiments.results import EvaluationResult, summary_row
from maskbench.experiments.segmentation import segment, segment_sums
from maskbench.experiments.stats import Bootstrap, as_estimate, mean_estimate
from maskbench.experiments.strategy_set import StrategySpec, resolve_strategies
from maskbench.masks import masks_from_keep
from maskbench.strategies import Strategy

#: LIME's kernel width for images (``lime_image.LimeImageExplainer``).
KERNEL_WIDTH = 0.25
#: Ridge penalty of LIME's default regressor.
RIDGE_ALPHA = 1.0
#: Probability that a segment is kept in a LIME sample.
KEEP_PROBABILITY = 0.5
#: Samples per image in the paper.
DEFAULT_SAMPLES = 512
#: Scores closer than this count as a tie when deciding the winner of an image.
TIE_TOLERANCE = 1e-9


def lime_design(
    num_segments: int,
    n_samples: int,
    seed: int,
    *,
    keep_probability: float = KEEP_PROBABILITY,
) -> torch.Tensor:
    """(n, S) bool design: row 0 all True, the others Bernoulli(``keep_probability``)."""
    if n_samples < 2:
        raise ValueError(f"LIME needs at least 2 samples, got {n_samples}")
    if not 0.0 < keep_probability < 1.0:
        raise ValueError(f"keep_probability must be in (0, 1), got {keep_probability}")
    generator = torch.Generator().manual_seed(int(seed))
    design = torch.rand(n_samples, num_segments, generator=generator) < keep_probability
    design[0] = True
    return design


def kernel_weights(design: torch.Tensor, width: float = KERNEL_WIDTH) -> torch.Tensor:
    """LIME's sample weights ``sqrt(exp(-d**2 / width**2))``, d = cosine distance to all-ones.

    For a row with ``k`` of ``S`` segments kept, ``d = 1 - sqrt(k / S)``; an all-zero
    row has ``d = 1`` (cosine similarity taken as 0, as scikit-learn does).
    """
    kept = design.to(torch.float64).sum(dim=-1)
    similarity = torch.sqrt(kept / design.shape[-1])
    distance = 1.0 - similarity
    return torch.sqrt(torch.exp(-(distance**2) / width**2))


def weighted_ridge(
    features: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    alpha: float = RIDGE_ALPHA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted ridge regression with an unpenalised intercept, solved in float64.

    Minimises ``sum_i w_i (y_i - b - x_i . beta)**2 + alpha * |beta|**2`` (scikit-learn's
    ``Ridge(alpha).fit(X, y, sample_weight=w)``). ``features`` (n, S), ``targets`` (n,)
    or (n, K), ``weights`` (n,). Returns ``(beta (S,) or (S, K), intercept)``.
    """
    x = features.to(torch.float64)
    y = targets.to(torch.float64)
    w = weights.to(torch.float64)
    squeeze = y.dim() == 1
    if squeeze:
        y = y[:, None]
    total = w.sum()
    x_mean = (w[:, None] * x).sum(0) / total
    y_mean = (w[:, None] * y).sum(0) / total
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (w[:, None] * xc)
    gram = gram + alpha * torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
    beta = torch.linalg.solve(gram, xc.T @ (w[:, None] * yc))
    intercept = y_mean - x_mean @ beta
    if squeeze:
        return beta[:, 0], intercept[0]
    return beta, intercept


def object_mass(segments: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
    """(S,) per-segment mass of an object mask: sum of ``mask - mean(mask)`` over each segment."""
    values = object_mask.to(torch.float64)
    return segment_sums(segments, values - values.mean())


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors; 0 when either is (numerically) zero."""
    a, b = a.to(torch.float64).flatten(), b.to(torch.float64).flatten()
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 1e-300 else 0.0


def explain(
    model: nn.Module,
    image: torch.Tensor,
    segments: torch.Tensor,
    strategy: Strategy,
    target: int,
    design: torch.Tensor,
    *,
    output: str = "probability",
    kernel_width: float = KERNEL_WIDTH,
    alpha: float = RIDGE_ALPHA,
) -> torch.Tensor:
    """LIME coefficients (S,) of one (3, H, W) image under ``strategy`` for class ``target``.

    ``output`` is ``"probability"`` (softmax of the target class, LIME's default) or
    ``"logit"`` (the target class's logit).
    """
    if output not in ("probability", "logit"):
        raise ValueError(f"output must be 'probability' or 'logit', got {output!r}")
    device, dtype = model_device(model), model_dtype(model)
    masks = masks_from_keep(segments.to(device), design.to(device))
    logits = strategy(model, image[None].to(device=device, dtype=dtype), masks).to(torch.float64)
    values = logits.softmax(-1)[:, target] if output == "probability" else logits[:, target]
    weights = kernel_weights(design).to(values.device)
    beta, _ = weighted_ridge(design.to(values.device), values, weights, alpha)
    return beta.cpu()


def win_shares(scores: torch.Tensor, tolerance: float = TIE_TOLERANCE) -> torch.Tensor:
    """(K, N) share of each image's win per strategy; tied best strategies split it."""
    best = scores.max(dim=0).values
    winners = (scores >= best - tolerance).to(torch.float64)
    return winners / winners.sum(dim=0, keepdim=True)


def lime_evaluation(
    model: nn.Module,
    data: EvalData,
    strategies: StrategySpec,
    *,
    n_samples: int = DEFAULT_SAMPLES,
    segmentation: str = "quickshift",
    target: str = "predicted",
    output: str = "probability",
    seed: int = 0,
    bootstrap_reps: int = 1000,
    progress: bool = False,
) -> EvaluationResult:
    """Run LIME under every strategy and score the explanations against the object masks.

    Args:
        model: a pixel-space model in eval mode.
        data: images with object masks (labels needed for ``target="label"``).
        strategies: names (or instances) of the strategies to compare.
        n_samples: LIME samples per image (row 0 is the unmasked image).
        segmentation: the segmentation LIME explains in (see
            :mod:`maskbench.experiments.segmentation`).
        target: ``"predicted"`` (the unmasked top-1 class) or ``"label"``.
        output: ``"probability"`` or ``"logit"`` of the target class.
        seed: seed of the designs and of the bootstrap.
        bootstrap_reps: bootstrap resamples for the 95% intervals.
        progress: show a progress bar on stderr.
    """
    watch = Stopwatch()
    if data.objects is None:
        raise DataError("the LIME evaluation needs object masks (--masks DIR or the benchmark)")
    if target not in ("predicted", "label"):
        raise ValueError(f"target must be 'predicted' or 'label', got {target!r}")
    if target == "label" and data.labels is None:
        raise DataError("target='label' needs labels; use target='predicted'")
    resolved = resolve_strategies(strategies, model)
    reference = clean_logits(model, data.images)
    num_classes_of(model, reference)
    targets = data.labels.cpu() if target == "label" else reference.argmax(-1)
    names, n = list(resolved), len(data)
    scores = torch.empty(len(names), n, dtype=torch.float64)
    coefficients: list[list[list[float]]] = [[] for _ in names]
    segment_counts: list[int] = []
    strategy_seconds = dict.fromkeys(names, 0.0)
    bar = progress_bar(n * len(names), "lime", progress)
    with bar:
        for i in range(n):
            image = data.images[i]
            segments = segment(image, segmentation, seed=image_seed(seed, i))
            num = int(segments.max()) + 1
            segment_counts.append(num)
            design = lime_design(num, n_samples, image_seed(seed, i, 2))
            mass = object_mass(segments, data.objects[i, 0].cpu())
            for k, name in enumerate(names):
                started = time.perf_counter()
                beta = explain(
                    model, image, segments, resolved[name], int(targets[i]), design, output=output
                )
                strategy_seconds[name] += time.perf_counter() - started
                scores[k, i] = cosine_similarity(beta, mass)
                coefficients[k].append(beta.tolist())
                bar.update(1)

    boot = Bootstrap(n, reps=bootstrap_reps, seed=seed)
    score_estimate = mean_estimate(scores, boot)
    wins = win_shares(scores)
    win_estimate = mean_estimate(wins, boot)
    summary = []
    for k, name in enumerate(names):
        condition = {"strategy": name}
        summary.append(summary_row(condition, "score", as_estimate(score_estimate, (k,))))
        summary.append(summary_row(condition, "win_share", as_estimate(win_estimate, (k,))))

    per_image: dict[str, list] = {
        "strategy": [],
        "image": [],
        "target": [],
        "score": [],
        "win": [],
        "coefficients": [],
    }
    for k, name in enumerate(names):
        per_image["strategy"] += [name] * n
        per_image["image"] += list(data.names)
        per_image["target"] += targets.tolist()
        per_image["score"] += scores[k].tolist()
        per_image["win"] += wins[k].tolist()
        per_image["coefficients"] += coefficients[k]

    return EvaluationResult(
        evaluation="lime",
        summary=summary,
        per_image=per_image,
        config={
            "strategies": names,
            "n_samples": n_samples,
            "keep_probability": KEEP_PROBABILITY,
            "kernel_width": KERNEL_WIDTH,
            "kernel": "sqrt(exp(-d^2 / width^2)), d = cosine distance to the all-ones row",
            "ridge_alpha": RIDGE_ALPHA,
            "segmentation": segmentation,
            "target": target,
            "output": output,
            "seed": seed,
            "bootstrap": {"reps": bootstrap_reps, "level": 0.95, "seed": seed},
        },
        meta={
            "model": model_meta(model),
            "data": data.describe(),
            "segments_per_image": {
                "mean": sum(segment_counts) / n,
                "min": min(segment_counts),
                "max": max(segment_counts),
            },
            "seconds": watch.elapsed,
            "strategy_seconds": strategy_seconds,
            "environment": environment_meta(),
        },
    )


def explanation_maps(
    result: EvaluationResult, data: EvalData, index: int, strategies: Sequence[str] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(segments, {strategy: (H, W) map of coefficients}) for image ``index`` of ``data``.

    The segmentation is recomputed with the result's seed (it is deterministic), so the
    maps line up with the stored coefficients.
    """
    seed = int(result.config.get("seed", 0))
    image = data.images[index]
    segments = segment(image, result.config["segmentation"], seed=image_seed(seed, index)).cpu()
    name = data.names[index]
    maps: dict[str, torch.Tensor] = {}
    table = result.per_image
    for row, (strategy, image_name) in enumerate(
        zip(table["strategy"], table["image"], strict=True)
    ):
        if image_name != name or (strategies is not None and strategy not in strategies):
            continue
        beta = torch.tensor(table["coefficients"][row], dtype=torch.float64)
        if beta.numel() != int(segments.max()) + 1:
            raise ValueError(
                f"stored coefficients of {strategy} on {name} have {beta.numel()} segments, "
                f"the recomputed segmentation has {int(segments.max()) + 1}"
            )
        maps[strategy] = beta[segments]
    return segments, maps
