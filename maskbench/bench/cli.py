"""``maskbench bench``: time every strategy beside the plain forward, write JSON + Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from maskbench.bench.road import run_road_benchmark
from maskbench.bench.run import DTYPES, BenchResult, environment, run_benchmark
from maskbench.errors import MaskbenchError
from maskbench.io import atomic_write_text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``bench`` subcommand."""
    parser = subparsers.add_parser(
        "bench",
        help="time each strategy's masked forward as a ratio to the plain forward",
        description=(
            "Times the plain forward and every strategy's masked forward on the same batch, "
            "interleaved, and reports medians as ratios to the plain forward; then times "
            "ROAD imputation (inpaint_linear) on a batch against SciPy's spsolve on single "
            "images. Each figure is shown with its target (issue #6). Writes DIR/bench.json "
            "and DIR/bench.md."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", default="resnet50", help="timm model name (random weights)")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (16)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (224)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument(
        "--strategies", nargs="+", default=None, help="strategy names (default: all registered)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls (2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also time each layer-masking strategy replaying CUDA graphs (NAME+graphs rows)",
    )
    section = parser.add_mutually_exclusive_group()
    section.add_argument("--no-road", action="store_true", help="skip the ROAD-vs-SciPy section")
    section.add_argument(
        "--road-only", action="store_true", help="only the ROAD-vs-SciPy section (no model)"
    )
    parser.add_argument(
        "--scipy-images",
        type=int,
        default=4,
        help="images SciPy solves per repetition in the ROAD section (4)",
    )
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the benchmark and write its outputs; a bad argument exits 2 with one line."""
    try:
        return _run(args)
    except (MaskbenchError, ValueError) as exc:
        print(f"maskbench bench: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(f"[maskbench bench] {message}", file=sys.stderr, flush=True)

    if args.threads is not None:  # for both sections (run_benchmark records it)
        torch.set_num_threads(args.threads)
    if args.road_only:
        result = BenchResult(config={}, cases=[])
    else:
        result = run_benchmark(
            args.model,
            strategies=args.strategies,
            batch=args.batch,
            size=args.size,
            device=args.device,
            dtype=args.dtype,
            warmup=args.warmup,
            repeats=args.repeats,
            threads=args.threads,
            measure_memory=not args.no_memory,
            seed=args.seed,
            cuda_graphs=args.cuda_graphs,
            progress=progress,
        )
    if not args.no_road:
        from maskbench.models import resolve_device

        road_device = resolve_device(args.device)
        result.road = run_road_benchmark(
            batch=args.batch,
            size=args.size,
            device=road_device,
            repeats=args.repeats,
            scipy_images=args.scipy_images,
            seed=args.seed,
            progress=progress,
        )
        result.road_config = {
            "batch": args.batch,
            "size": args.size,
            "device": args.device,
            "repeats": args.repeats,
            "scipy_images": args.scipy_images,
            "seed": args.seed,
            **environment(road_device),
        }
    markdown = result.to_markdown()
    atomic_write_text(args.out / "bench.json", result.to_json())
    atomic_write_text(args.out / "bench.md", markdown)
    print(markdown)
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}", file=sys.stderr)
    missed = result.missed_targets()
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 0
