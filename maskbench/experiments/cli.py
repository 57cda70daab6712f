"""``maskbench run NAME``: the evaluations and the paper report from the command line.

Examples::

    maskbench run paper --out results/            # shipped model, benchmark test split
    maskbench run paper --quick --out /tmp/quick  # about a minute
    maskbench run segment_removal --model resnet50 --weights pretrained \\
        --images photos/ --masks photo_masks/ --strategies black,grey,layer_masking --out r/
    maskbench run lime --samples 512 --out r/
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskbench.errors import MaskbenchError, UnknownModelError
from maskbench.experiments.data import EvalData, load_benchmark, load_folder
from maskbench.experiments.report import (
    FULL_SIZES,
    QUICK_SIZES,
    PaperSizes,
    paper_report,
    with_sizes,
    write_result,
)
from maskbench.experiments.segment_removal import ORDERS
from maskbench.experiments.strategy_set import PAPER_STRATEGIES, resolve_strategies

EVALUATIONS = ("segment_removal", "shape_leakage", "lime", "paper")
#: The model of the benchmark, shipped with maskbench.
BENCHMARK_MODEL = "shapes_resnet"
#: Image side of the benchmark when the model does not say.
BENCHMARK_SIZE = 96
#: Images up to this side run on one torch thread unless --threads says otherwise.
SMALL_IMAGE_SIDE = 128


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``run`` subcommand on the ``maskbench`` command line."""
    p = subparsers.add_parser(
        "run",
        help="run an evaluation (segment_removal, shape_leakage, lime) or the paper report",
        description=(
            "Run an evaluation and write JSON, a Markdown summary and PNG plots into --out. "
            "Without --images, the shapes benchmark (test split) is used; without --model, "
            f"the shipped benchmark model {BENCHMARK_MODEL}."
        ),
    )
    p.add_argument(
        "evaluation", choices=EVALUATIONS, metavar="NAME", help=f"one of {', '.join(EVALUATIONS)}"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--quick", action="store_true", help="a small version (about a minute) for smoke tests"
    )
    group = p.add_argument_group("model")
    group.add_argument(
        "--model",
        default=BENCHMARK_MODEL,
        help="timm name, shipped model name, or 'pkg.module:attr' returning a model "
        f"(default: {BENCHMARK_MODEL})",
    )
    group.add_argument(
        "--weights",
        default="auto",
        help="random | pretrained | auto (default) | PATH to a checkpoint",
    )
    group.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch CPU threads (default: 1 for images up to {SMALL_IMAGE_SIDE} px, where "
        "per-op work is too small for threads to pay off; torch's default otherwise)",
    )
    group = p.add_argument_group("data")
    group.add_argument("--images", type=Path, help="folder of images (see docs/experiments.md)")
    group.add_argument(
        "--masks", type=Path, help="folder of same-stem object masks (nonzero=object)"
    )
    group.add_argument(
        "--labels", type=Path, help="labels CSV (default: IMAGES/labels.csv if present)"
    )
    group.add_argument("--saliency", type=Path, help="folder of same-stem .npy saliency maps")
    group.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize+centre-crop images to this side (default: the model's input size)",
    )
    group.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="images per evaluation (default: the evaluation's own)",
    )
    group.add_argument(
        "--benchmark-seed", type=int, default=0, help="seed of the shapes benchmark (default: 0)"
    )
    group = p.add_argument_group("evaluation")
    group.add_argument(
        "--strategies",
        default=None,
        help=f"comma-separated strategy names (default: {','.join(PAPER_STRATEGIES)})",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of orders, shifts, LIME designs and bootstrap (default: 0)",
    )
    group.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        help="bootstrap resamples (default: 1000; 200 with --quick)",
    )
    group.add_argument(
        "--segmentations",
        default=None,
        help="segment removal: comma-separated (patches16, slic, quickshift)",
    )
    group.add_argument(
        "--fractions",
        default=None,
        help="segment removal: comma-separated removal fractions in [0, 1]",
    )
    group.add_argument(
        "--orders", default=None, help=f"segment removal: comma-separated ({', '.join(ORDERS)})"
    )
    group.add_argument(
        "--max-overlap",
        type=float,
        default=0.0,
        help="shape leakage: largest overlap of the shifted mask with the object (default: 0)",
    )
    group.add_argument(
        "--samples",
        type=int,
        default=None,
        help="LIME: samples per image (default: 192; 48 with --quick)",
    )
    group.add_argument(
        "--lime-segmentation", default=None, help="LIME: segmentation (default: quickshift)"
    )
    group.add_argument(
        "--target",
        choices=("predicted", "label"),
        default="predicted",
        help="LIME: explain the predicted (default) or the labelled class",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)
    return p


# --------------------------------------------------------------------------- helpers


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("expected a comma-separated list, got an empty one")
    return items


def load_cli_model(spec: str, weights: str, device: str) -> nn.Module:
    """A model from a shipped/timm name or a ``pkg.module:attr`` import path."""
    import maskbench as mb

    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        model = target() if callable(target) and not isinstance(target, nn.Module) else target
        if not isinstance(model, nn.Module):
            raise MaskbenchError(f"{spec} gave {type(model).__name__}, not an nn.Module")
        model = model if isinstance(model, mb.NormalizedModel) else mb.wrap_model(model)
        target_device = torch.device(
            "cuda"
            if device == "auto" and torch.cuda.is_available()
            else ("cpu" if device == "auto" else device)
        )
        return model.to(target_device).eval()
    try:
        return mb.load_model(spec, weights=weights, device=device)
    except UnknownModelError as exc:
        if spec == BENCHMARK_MODEL:
            raise UnknownModelError(
                f"the benchmark model {BENCHMARK_MODEL!r} is not installed "
                "(maskbench/benchmark/weights/ has no shapes_resnet.json + .safetensors); "
                "train it with scripts/train_shapes_model.py or pass --model"
            ) from exc
        raise


def _sizes(args: argparse.Namespace) -> PaperSizes:
    base = QUICK_SIZES if args.quick else FULL_SIZES
    n = args.n_images
    fractions = _split(args.fractions)
    segmentations = _split(args.segmentations)
    return with_sizes(
        base,
        segment_removal_images=n,
        shape_leakage_images=n,
        lime_images=n,
        lime_samples=args.samples,
        bootstrap_reps=args.bootstrap,
        fractions=tuple(float(f) for f in fractions) if fractions else None,
        segmentations=tuple(segmentations) if segmentations else None,
        lime_segmentation=args.lime_segmentation,
    )


def load_cli_data(args: argparse.Namespace, model: nn.Module, n_images: int) -> EvalData:
    """Images from ``--images`` (and masks, labels) or from the benchmark."""
    input_size = getattr(model, "input_size", None)
    size = args.size if args.size is not None else (input_size[0] if input_size else None)
    if args.size == 0:
        size = None
    if args.images is not None:
        return load_folder(
            args.images,
            args.masks,
            labels=args.labels,
            saliency=args.saliency,
            size=size,
            classes=getattr(model, "classes", None),
            limit=args.n_images,
        )
    if args.masks is not None or args.labels is not None or args.saliency is not None:
        raise MaskbenchError("--masks, --labels and --saliency need --images")
    return load_benchmark(
        n_images, size=size or BENCHMARK_SIZE, seed=args.benchmark_seed, split="test"
    )


def choose_threads(requested: int | None, size: tuple[int, int]) -> int | None:
    """Torch CPU threads for a run: ``requested``, else 1 for small images, else None.

    On small images (the 96 px benchmark) each op is so small that a second thread
    mostly spins at barriers: measured on 2 cores, the default ``paper`` run took 2.2
    minutes with 1 thread and 7.2 with 2 (other load on the machine makes it worse).
    None keeps torch's default.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return requested
    return 1 if max(size) <= SMALL_IMAGE_SIDE else None


def _say(message: str) -> None:
    print(f"maskbench run: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- command


def run_command(args: argparse.Namespace) -> int:
    """Run ``maskbench run NAME ...``; returns the exit code.

    The torch thread count chosen for the run is restored afterwards, so calling the
    command in-process (tests, notebooks) leaves no global change behind.
    """
    threads_before = torch.get_num_threads()
    try:
        return _run(args)
    except (MaskbenchError, ValueError, FileNotFoundError) as exc:
        print(f"maskbench run: error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace) -> int:
    sizes = _sizes(args)
    explicit = args.strategies is not None
    names = _split(args.strategies) if explicit else list(PAPER_STRATEGIES)
    model = load_cli_model(args.model, args.weights, args.device)
    strategies = resolve_strategies(names, model, explicit=explicit)
    progress = not args.no_progress
    name = args.evaluation
    needed = {
        "segment_removal": sizes.segment_removal_images,
        "shape_leakage": sizes.shape_leakage_images,
        "lime": sizes.lime_images,
        "paper": sizes.max_images,
    }[name]
    _say(
        f"{name}: model {getattr(model, 'name', args.model)} "
        f"({getattr(model, 'weights', 'user')} weights), strategies {', '.join(strategies)}"
    )
    data = load_cli_data(args, model, needed)
    threads = choose_threads(args.threads, data.size)
    if threads is not None:
        torch.set_num_threads(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    common = {"seed": args.seed, "bootstrap_reps": sizes.bootstrap_reps, "progress": progress}

    if name == "paper":
        paper_report(
            model,
            data,
            strategies,
            args.out,
            sizes=sizes,
            seed=args.seed,
            progress=progress,
            log=_say,
        )
        _say(f"report: {args.out / 'report.md'}")
        return 0
    if name == "segment_removal":
        from maskbench.experiments.segment_removal import segment_removal

        result = segment_removal(
            model,
            data.head(sizes.segment_removal_images),
            strategies,
            segmentations=sizes.segmentations,
            fractions=sizes.fractions,
            orders=_split(args.orders),
            **common,
        )
        written = write_result(result, args.out)
    elif name == "shape_leakage":
        from maskbench.experiments.shape_leakage import shape_leakage

        result = shape_leakage(
            model,
            data.head(sizes.shape_leakage_images),
            strategies,
            max_overlap=args.max_overlap,
            **common,
        )
        written = write_result(result, args.out)
    else:
        from maskbench.experiments.lime import lime_evaluation

        lime_data = data.head(sizes.lime_images)
        result = lime_evaluation(
            model,
            lime_data,
            strategies,
            n_samples=sizes.lime_samples,
            segmentation=sizes.lime_segmentation,
            target=args.target,
            **common,
        )
        written = write_result(result, args.out, data=lime_data)
    for kind, path in written.items():
        _say(f"wrote {kind}: {path}")
    return 0
