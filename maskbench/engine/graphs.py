"""The engine's masked forward replayed as a captured CUDA graph.

On a GPU the engine's forward is bound by kernel launches, not arithmetic: its Python
interpreter and several hundred small mask ops each cost a few microseconds of host
time, while the kernels themselves are short. A CUDA graph records the kernels of one
forward and replays all of them with one launch, so after the first call per input
shape only the GPU's own work remains.

Capturing needs a forward that never reads tensor values on the host, so graph mode
runs the engine with ``host_reads=False`` (the sync-free path; the same logits up to
float rounding, tested) and every call in graph mode, the first included, is a replay:
the same inputs give the same logits, whichever call it is. :mod:`maskbench.engine.tape`
tests on the CPU that no decision in that path depends on mask values.

Graphs are cached per model, keyed by variant, input shapes, dtype, device, the math
flags that choose kernels (TF32, cuDNN determinism) and the addresses of the model's
parameters and buffers; a graph reads those by address, so in-place updates (such as
``load_state_dict``) are seen, and moving or replacing a parameter makes a new graph.
The cache keeps at most :data:`CACHE_SIZE` graphs per model (least recently used
first out); each holds the memory of one forward's activations. :func:`clear` frees
them. Graph mode applies to CUDA tensors without autograd (strategies run under
``no_grad``); elsewhere the ordinary forward runs.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from maskbench.engine.interpreter import masked_logits
from maskbench.engine.tape import OpTape
from maskbench.engine.tracing import TracedModel, cached_traces
from maskbench.engine.variants import Variant
from maskbench.errors import CaptureError

__all__ = [
    "CACHE_SIZE",
    "cached_graphs",
    "capture_available",
    "clear",
    "graph_logits",
    "tape_capture",
    "uses_graphs",
]

#: The most captured graphs kept per model.
CACHE_SIZE = 8
#: Untimed eager runs on a side stream before a capture (lazy CUDA initialisation).
WARMUP_RUNS = 1

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``capture(forward, static_x, static_keep) -> replay``: ``replay()`` reruns the
#: captured forward on whatever the static inputs hold and returns its output.
Capture = Callable[[Forward, torch.Tensor, torch.Tensor], Callable[[], torch.Tensor]]


def _capture_cuda(
    forward: Forward, static_x: torch.Tensor, static_keep: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """Capture ``forward`` on the static inputs as a CUDA graph (PyTorch's recipe)."""
    with torch.cuda.device(static_x.device):
        return _capture_on_current_device(forward, static_x, static_keep)


def _capture_on_current_device(
    forward: Forward, static_x: torch.Tensor, static_keep: torch.Tensor
) -> Callable[[], torch.Tensor]:
    side = torch.cuda.Stream(device=static_x.device)
    side.wait_stream(torch.cuda.current_stream(static_x.device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_RUNS):
            forward(static_x, static_keep)
    torch.cuda.current_stream(static_x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_x, static_keep)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay


def tape_capture(
    forward: Forward, static_x: torch.Tensor, static_keep: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """A :data:`Capture` by :class:`~maskbench.engine.tape.OpTape`, for any device.

    For testing graph mode without a GPU: like a CUDA graph, it freezes the recorded
    ops and every replay overwrites the same output tensor.
    """
    tape = OpTape.record(forward, static_x, static_keep)
    static_out = tape.replay(static_x, static_keep)

    def replay() -> torch.Tensor:
        static_out.copy_(tape.replay(static_x, static_keep))
        return static_out

    return replay


def _capture_backend(device: torch.device) -> Capture | None:
    """How graphs are captured on ``device``; None where there are no graphs."""
    return _capture_cuda if device.type == "cuda" else None


def capture_available(device: torch.device) -> bool:
    """Whether graphs can be captured on ``device`` (CUDA devices)."""
    return _capture_backend(device) is not None


def uses_graphs(x: torch.Tensor, network: nn.Module) -> bool:
    """Whether graph mode applies: a capture backend for the device, and no autograd."""
    if _capture_backend(x.device) is None:
        return False
    if not torch.is_grad_enabled():
        return True
    return not (x.requires_grad or any(p.requires_grad for p in network.parameters()))


@dataclass
class _Graph:
    replay: Callable[[], torch.Tensor]
    static_x: torch.Tensor
    static_keep: torch.Tensor
    pinned: tuple[torch.Tensor, ...]  # what the graph reads by address, kept alive
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        with self.lock:  # the static inputs and output are shared
            self.static_x.copy_(x)
            self.static_keep.copy_(keep)
            return self.replay().clone()


@dataclass
class _Cache:
    graphs: OrderedDict[tuple, _Graph] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    captures: int = 0  # how many graphs were captured (for tests and reports)


def _math_flags() -> tuple:
    """Global settings that choose kernels: a graph keeps what was chosen at capture."""
    return (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
    )


def _tensors_read(network: nn.Module, traced_model: TracedModel) -> tuple[torch.Tensor, ...]:
    constants = (v for v in traced_model.constants.values() if isinstance(v, torch.Tensor))
    return tuple(itertools.chain(network.parameters(), network.buffers(), constants))


def _cache_of(traced_model: TracedModel) -> _Cache:
    with traced_model.lock:
        cache = traced_model.analyses.get("cuda-graphs")
        if cache is None:
            cache = traced_model.analyses["cuda-graphs"] = _Cache()
    return cache


def cached_graphs(traced_model: TracedModel) -> tuple[int, int]:
    """(graphs held now, graphs captured so far) for a traced model."""
    cache = _cache_of(traced_model)
    with cache.lock:
        return len(cache.graphs), cache.captures


def graph_logits(
    traced_model: TracedModel,
    modules: dict[str, nn.Module],
    variant: Variant,
    x: torch.Tensor,
    keep: torch.Tensor,
) -> torch.Tensor:
    """:func:`~maskbench.engine.interpreter.masked_logits` as a replay of a graph
    captured for these shapes (captured now if there is none).

    Raises:
        CaptureError: the forward could not be captured (e.g. a custom rule reads
            tensor values on the host: :class:`~maskbench.engine.tape.OpTape` finds
            where); the message says how to run without graphs.
    """
    capture = _capture_backend(x.device)
    if capture is None:
        raise CaptureError(f"no graph capture on {x.device}; graph mode needs a CUDA device")
    network = modules[""]
    pinned = _tensors_read(network, traced_model)
    key = (
        variant,
        tuple(x.shape),
        x.dtype,
        x.device,
        tuple(keep.shape),
        _math_flags(),
        tuple(t.data_ptr() for t in pinned),
    )
    cache = _cache_of(traced_model)
    with cache.lock:
        graph = cache.graphs.get(key)
        if graph is not None:
            cache.graphs.move_to_end(key)
        else:
            graph = _capture_graph(capture, traced_model, modules, variant, x, keep, pinned)
            cache.graphs[key] = graph
            cache.captures += 1
            while len(cache.graphs) > CACHE_SIZE:
                cache.graphs.popitem(last=False)
    return graph.run(x, keep)


def _capture_graph(
    capture: Capture,
    traced_model: TracedModel,
    modules: dict[str, nn.Module],
    variant: Variant,
    x: torch.Tensor,
    keep: torch.Tensor,
    pinned: tuple[torch.Tensor, ...],
) -> _Graph:
    def forward(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return masked_logits(traced_model, modules, variant, v, k, host_reads=False)

    # Static inputs and captured tensors are ordinary ones even under
    # torch.inference_mode(): a later call outside inference mode could not copy into an
    # inference tensor.
    with torch.inference_mode(False):
        static_x = torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x)
        static_keep = torch.empty_like(keep, memory_format=torch.contiguous_format).copy_(keep)
    try:
        with torch.inference_mode(False), torch.no_grad():
            replay = capture(forward, static_x, static_keep)
    except CaptureError:
        raise
    except RuntimeError as exc:
        raise CaptureError(
            f"capturing the {variant.value} forward of {tuple(x.shape)} {x.dtype} inputs as "
            f"a CUDA graph failed ({exc}). An op reads tensor values on the host (a custom "
            "masking rule?): maskbench.engine.tape.OpTape.record(...) on the CPU names it. "
            "Run with cuda_graphs=False meanwhile."
        ) from exc
    return _Graph(replay, static_x, static_keep, pinned)


def clear(network: nn.Module | None = None) -> None:
    """Free the captured graphs of ``network`` (of every traced model when None)."""
    for entry in cached_traces(network):
        cache = _cache_of(entry)
        with cache.lock:
            cache.graphs.clear()
