"""``run_benchmark``: every strategy's masked forward timed beside the plain forward."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from maskbench.bench.memory import peak_memory_bytes
from maskbench.bench.road import RoadCaseResult, road_markdown
from maskbench.bench.targets import target_for
from maskbench.bench.timing import median, time_round_robin
from maskbench.engine import graphs
from maskbench.environment import environment_meta
from maskbench.errors import DeviceError
from maskbench.masks.builders import random_removal_masks, rectangle_masks
from maskbench.masks.segments import patch_grid
from maskbench.models import resolve_device
from maskbench.strategies.layer_masking import EngineStrategy

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The crop fast-path case: a 112 x 112 kept square whose offset is a multiple of 32.
BOX_CASE = "layer_masking_crop@box112"
#: Suffix of the cases that replay CUDA graphs (``run_benchmark(cuda_graphs=True)``).
GRAPHS_SUFFIX = "+graphs"


@dataclass
class CaseResult:
    """Timing of one case (the plain forward or one strategy)."""

    case: str
    median_seconds: float
    ratio: float
    target: float | None
    met: bool | None
    peak_memory_mb: float | None
    samples: list[float] = field(default_factory=list)


@dataclass
class BenchResult:
    """A whole benchmark run: its configuration, one row per case and the ROAD section.

    ``cases`` is empty when only ROAD was timed; ``road`` is empty when it was not.
    """

    config: dict[str, Any]
    cases: list[CaseResult]
    road: list[RoadCaseResult] = field(default_factory=list)
    road_config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The result as indented JSON."""
        return json.dumps(asdict(self), indent=2)

    def to_markdown(self) -> str:
        """Markdown tables (strategies, then ROAD), each with its configuration."""
        sections = []
        if self.cases:
            sections.append(self._strategies_markdown())
        if self.road:
            sections.append(road_markdown(self.road, self.road_config))
        return "\n".join(sections)

    def missed_targets(self) -> list[str]:
        """Names of the cases (strategies and ROAD) that missed their target."""
        missed = [row.case for row in self.cases if row.met is False]
        return missed + [f"inpaint_linear: {row.case}" for row in self.road if not row.met]

    def _strategies_markdown(self) -> str:
        c = self.config
        lines = [
            f"Model `{c['model']}`, batch {c['batch']}, {c['size']}x{c['size']}, {c['dtype']}, "
            f"device {c['device_name']}, {c['threads']} torch threads; "
            f"median of {c['repeats']} interleaved repetitions after {c['warmup']} warm-up; "
            f"masks remove 50% of 16x16 patches (a different random half per image)."
            + (
                " Rows `NAME+graphs` replay the masked forward as CUDA graphs (`cuda_graphs=True`);"
                " their peak memory is of a first call, which captures the graph."
                if c.get("cuda_graphs")
                else ""
            ),
            "",
            "| case | median ms | ratio to plain | target | met | peak MB |",
            "|---|---:|---:|---:|:---:|---:|",
        ]
        for row in self.cases:
            target = f"<= {row.target:g}" if row.target is not None else "-"
            met = {True: "yes", False: "**no**", None: "-"}[row.met]
            memory = f"{row.peak_memory_mb:.0f}" if row.peak_memory_mb is not None else "-"
            lines.append(
                f"| {row.case} | {row.median_seconds * 1e3:.1f} | {row.ratio:.2f} | {target} "
                f"| {met} | {memory} |"
            )
        return "\n".join(lines) + "\n"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    """Where and with what a benchmark ran: device name, torch threads, the facts of
    :func:`maskbench.environment.environment_meta`, NumPy and SciPy versions, and the
    date (UTC)."""
    import numpy
    import scipy

    facts = environment_meta()
    return {
        "device_name": _device_name(device),
        "threads": facts.pop("torch_threads"),
        **facts,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run_benchmark(
    model_name: str = "resnet50",
    *,
    strategies: Sequence[str] | None = None,
    batch: int = 16,
    size: int = 224,
    device: str = "cpu",
    dtype: str = "float32",
    warmup: int = 2,
    repeats: int = 7,
    threads: int | None = None,
    measure_memory: bool = True,
    seed: int = 0,
    cuda_graphs: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time the plain forward and each strategy on the same batch, side by side.

    Every strategy gets the same images and the same masks (50% of 16x16 patches
    removed, a different random half per image); ``layer_masking_crop`` also runs on
    a 112 x 112 kept square to measure its bounding-box fast path. Ratios are medians
    divided by the plain forward's median from the same interleaved repetitions.

    ``cuda_graphs=True`` (CUDA devices only) adds a row ``NAME+graphs`` for every
    layer-masking strategy, the same strategy with ``cuda_graphs=True``, timed in the
    same rounds as the rest (its warm-up calls capture the graphs).
    """
    import maskbench as mb

    if threads is not None:
        torch.set_num_threads(threads)
    target_device = resolve_device(device)
    if cuda_graphs and not graphs.capture_available(target_device):
        raise DeviceError(f"--cuda-graphs needs a CUDA device, not {target_device}")
    torch_dtype = DTYPES[dtype]
    names = list(strategies) if strategies is not None else mb.list_strategies()
    resolved = {name: mb.get_strategy(name) for name in names}  # unknown names fail first
    if cuda_graphs:
        for name, strategy in list(resolved.items()):
            if isinstance(strategy, EngineStrategy):
                resolved[name + GRAPHS_SUFFIX] = mb.get_strategy(name, cuda_graphs=True)
    model = mb.load_model(model_name, weights="random", seed=seed, device=target_device)
    model = model.to(torch_dtype)
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator)
    images = images.to(device=target_device, dtype=torch_dtype)
    segments = patch_grid((size, size), 16, device=target_device)
    masks = random_removal_masks(segments, 0.5, batch, seed=seed)
    box = rectangle_masks((size, size), [(64, 64, 112, 112)], device=target_device)

    calls: dict[str, Callable[[], object]] = {}

    def plain() -> object:
        with torch.no_grad():
            return model(images)

    calls["plain"] = plain
    for name, strategy in resolved.items():
        calls[name] = lambda s=strategy: s(model, images, masks)
        if name.startswith("layer_masking_crop"):
            box_case = BOX_CASE + name[len("layer_masking_crop") :]
            calls[box_case] = lambda s=strategy: s(model, images, box)

    samples = time_round_robin(
        calls, device=target_device, warmup=warmup, repeats=repeats, progress=progress
    )
    base = median(samples["plain"])
    rows = []
    for case, values in samples.items():
        ratio = median(values) / base
        target = target_for(case, target_device.type)
        peak = None
        if measure_memory:
            if progress:
                progress(f"memory {case}")
            if case.endswith(GRAPHS_SUFFIX):
                # a replay allocates almost nothing: the graph's memory was taken when
                # it was captured, so measure a first call (capture included)
                graphs.clear()
            peak = peak_memory_bytes(calls[case], target_device) / 2**20
        rows.append(
            CaseResult(
                case=case,
                median_seconds=median(values),
                ratio=ratio,
                target=target,
                met=None if target is None else ratio <= target,
                peak_memory_mb=peak,
                samples=values,
            )
        )
    config = {
        "model": model_name,
        "batch": batch,
        "size": size,
        "device": str(target_device),
        "dtype": dtype,
        "warmup": warmup,
        "repeats": repeats,
        "seed": seed,
        "cuda_graphs": cuda_graphs,
        **environment(target_device),
    }
    return BenchResult(config=config, cases=rows)
