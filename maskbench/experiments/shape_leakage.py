"""Shape leakage: does the *shape* of the removed region tell the model the class?

For every image the model classifies correctly when unmasked ("clean-correct"), two
masks of exactly the same area are applied:

* ``silhouette``: the object removed through its exact mask (keep = not object). No
  object pixel is visible; what is left is the background and a hole with the
  object's outline.
* ``shifted``: the same object mask cyclically translated (``torch.roll``) by an
  offset ``(dy, dx)`` and removed instead. A cyclic shift is a permutation of the
  pixels, so the area is identical; where the shifted mask crosses the image border
  it continues at the opposite border, which breaks the outline. The offset is drawn
  (seeded, per image) uniformly from all offsets whose shifted mask overlaps the object
  in at most ``max_overlap`` of its pixels (default 0: no overlap, so the object stays
  fully visible); when no offset achieves that, one with the smallest overlap is used
  and the achieved overlap is recorded.

The shifted condition is the "same damage, no silhouette over the object" control: the
model sees a hole of the same size and shape statistics, and the object.

Reported per strategy, with 95% bootstrap intervals over the clean-correct images:
``accuracy_silhouette``, ``accuracy_shifted`` and the ``leakage`` ratio
``accuracy_silhouette / accuracy_shifted``. A strategy that hides removed pixels
completely should score near chance (1 / number of classes) with the silhouette on a
benchmark where only the object carries the class; accuracy well above chance means
the hole's outline leaks the class. Without labels the target is the unmasked
prediction (every image counts as clean-correct).
"""

from __future__ import annotations

import time

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
from maskbench.experiments.stats import (
    Bootstrap,
    as_estimate,
    mean_estimate,
    ratio_of_means_estimate,
)
from maskbench.experiments.strategy_set import StrategySpec, resolve_strategies

#: Images per strategy call.
CHUNK = 32
#: The two mask conditions, in report order.
CONDITIONS: tuple[str, ...] = ("silhouette", "shifted")


def cyclic_overlaps(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) int64: ``overlaps[dy, dx]`` = pixels shared by ``mask`` and its roll by (dy, dx).

    The cyclic autocorrelation, computed with an FFT and rounded (exact for masks up to
    millions of pixels).
    """
    spectrum = torch.fft.fft2(mask.to(torch.float64))
    correlation = torch.fft.ifft2(spectrum * spectrum.conj()).real
    return correlation.round().to(torch.int64)


def shifted_mask(
    mask: torch.Tensor, seed: int, *, max_overlap: float = 0.0
) -> tuple[torch.Tensor, tuple[int, int], float]:
    """The object mask cyclically shifted so it overlaps itself in at most ``max_overlap``.

    Args:
        mask: (H, W) bool object mask with at least one pixel.
        seed: seed of the offset draw.
        max_overlap: largest allowed overlap, as a fraction of the object's area.

    Returns:
        ``(shifted, (dy, dx), overlap)``: the shifted (H, W) bool mask (same area), the
        offset used, and the achieved overlap fraction.
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be an (H, W) bool tensor, got {mask.dtype} {tuple(mask.shape)}"
        )
    area = int(mask.sum())
    if area == 0:
        raise DataError("an object mask is empty; shape leakage needs an object on every image")
    overlaps = cyclic_overlaps(mask.cpu())
    overlaps[0, 0] = area + 1  # never the identity shift
    allowed = overlaps <= int(max_overlap * area + 1e-9)
    if not bool(allowed.any()):
        allowed = overlaps == overlaps.min()
    candidates = allowed.flatten().nonzero().flatten()
    generator = torch.Generator().manual_seed(int(seed))
    pick = int(candidates[torch.randint(len(candidates), (1,), generator=generator)])
    dy, dx = divmod(pick, mask.shape[1])
    shifted = torch.roll(mask, shifts=(dy, dx), dims=(0, 1))
    overlap = int((shifted & mask).sum()) / area
    return shifted, (dy, dx), overlap


def shape_leakage(
    model: nn.Module,
    data: EvalData,
    strategies: StrategySpec,
    *,
    max_overlap: float = 0.0,
    seed: int = 0,
    bootstrap_reps: int = 1000,
    progress: bool = False,
) -> EvaluationResult:
    """Run the shape-leakage evaluation; see the module docstring.

    Args:
        model: a pixel-space model in eval mode.
        data: images with object masks (labels optional).
        strategies: names (or instances) of the strategies to compare.
        max_overlap: largest overlap of the shifted mask with the object (fraction).
        seed: seed of the offsets and of the bootstrap.
        bootstrap_reps: bootstrap resamples for the 95% intervals.
        progress: show a progress bar on stderr.
    """
    watch = Stopwatch()
    if data.objects is None:
        raise DataError("shape leakage needs object masks (--masks DIR or the benchmark)")
    resolved = resolve_strategies(strategies, model)
    reference = clean_logits(model, data.images)
    num_classes = num_classes_of(model, reference)
    target = data.labels.cpu() if data.labels is not None else reference.argmax(-1)
    keep_images = reference.argmax(-1) == target
    n_total = len(data)
    subset = data.select(keep_images)
    targets = target[keep_images]
    n = len(targets)
    notes = []
    if data.labels is None:
        notes.append(
            "No labels were given: the target is the unmasked prediction, so every image "
            "counts as clean-correct."
        )
    if n == 0:
        raise DataError(
            f"none of the {n_total} images is classified correctly unmasked; shape leakage "
            "is measured on clean-correct images only"
        )

    objects = subset.objects[:, 0].cpu()
    shifted, offsets, overlaps = [], [], []
    for i in range(n):
        mask_i, offset, overlap = shifted_mask(
            objects[i], image_seed(seed, i, 1), max_overlap=max_overlap
        )
        shifted.append(mask_i)
        offsets.append(list(offset))
        overlaps.append(overlap)
    keep = {"silhouette": ~objects, "shifted": ~torch.stack(shifted)}

    device, dtype = model_device(model), model_dtype(model)
    names = list(resolved)
    correct = torch.empty(len(names), len(CONDITIONS), n, dtype=torch.bool)
    strategy_seconds = dict.fromkeys(names, 0.0)
    chunks = range(0, n, CHUNK)
    bar = progress_bar(len(names) * len(chunks), "shape_leakage", progress)
    with bar:
        for k, name in enumerate(names):
            for start in chunks:
                stop = min(start + CHUNK, n)
                images = subset.images[start:stop].to(device=device, dtype=dtype)
                for c, condition in enumerate(CONDITIONS):
                    masks = keep[condition][start:stop, None].to(device)
                    started = time.perf_counter()
                    logits = resolved[name](model, images, masks).float().cpu()
                    strategy_seconds[name] += time.perf_counter() - started
                    correct[k, c, start:stop] = logits.argmax(-1) == targets[start:stop]
                bar.update(1)

    boot = Bootstrap(n, reps=bootstrap_reps, seed=seed)
    accuracy = mean_estimate(correct.double(), boot)
    leakage = ratio_of_means_estimate(correct[:, 0].double(), correct[:, 1].double(), boot)
    summary = []
    for k, name in enumerate(names):
        condition = {"strategy": name}
        for c, label in enumerate(CONDITIONS):
            summary.append(
                summary_row(condition, f"accuracy_{label}", as_estimate(accuracy, (k, c)))
            )
        summary.append(summary_row(condition, "leakage", as_estimate(leakage, (k,))))

    per_image = {"strategy": [], "image": [], "correct_silhouette": [], "correct_shifted": []}
    for k, name in enumerate(names):
        per_image["strategy"] += [name] * n
        per_image["image"] += list(subset.names)
        per_image["correct_silhouette"] += correct[k, 0].tolist()
        per_image["correct_shifted"] += correct[k, 1].tolist()

    overlap_t = torch.tensor(overlaps, dtype=torch.float64)
    areas = objects.flatten(1).sum(1).double() / objects[0].numel()
    return EvaluationResult(
        evaluation="shape_leakage",
        summary=summary,
        per_image=per_image,
        config={
            "strategies": names,
            "max_overlap": max_overlap,
            "seed": seed,
            "bootstrap": {"reps": bootstrap_reps, "level": 0.95, "seed": seed},
        },
        meta={
            "model": model_meta(model),
            "data": data.describe(),
            "num_classes": num_classes,
            "chance": 1.0 / num_classes,
            "n_images": n_total,
            "n_clean_correct": n,
            "target": "label" if data.labels is not None else "unmasked prediction",
            "offsets": offsets,
            "overlap": {
                "mean": float(overlap_t.mean()),
                "max": float(overlap_t.max()),
                "above_max_overlap": int((overlap_t > max_overlap + 1e-9).sum()),
            },
            "object_area_fraction": {"mean": float(areas.mean()), "min": float(areas.min())},
            "seconds": watch.elapsed,
            "strategy_seconds": strategy_seconds,
            "environment": environment_meta(),
        },
        notes=notes,
    )
