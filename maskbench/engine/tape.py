"""A CPU stand-in for CUDA graph capture: record a call's tensor ops once, replay them.

A CUDA graph records the kernels one call launched and replays exactly those on new
data, with every shape, Python scalar and branch frozen as it was at capture. A call is
only safe to capture if nothing in it depends on tensor *values* on the host: no
``.item()``, ``bool(t)``, ``torch.equal``, ``nonzero`` (whose output shape depends on
the data), and no tensors made from host data in the middle of it.

:class:`OpTape` gives the same contract on any device, the CPU included, so capture
safety can be tested without a GPU: it records the ATen ops of one call (through a
``TorchDispatchMode``), refuses the host reads a capture would refuse, and replays the
recorded ops on new inputs. If any decision in the recorded code had depended on the
first input's values, a replay would differ from running the code afresh: tests compare
the two.

Tensors that existed before the call (parameters, buffers, cached constants) are used
as they are at replay, as a graph uses them by address; tensors made inside the call are
recomputed.

Reads that bypass the dispatcher (``tolist()``, ``numpy()``) are refused too: the
tape replaces those two methods while it records.

What the tape cannot see on the CPU: copies of existing host tensors to the device
(there is no device), and synchronisation inside CUDA libraries. The CUDA tests of
graph mode (``tests/engine/test_engine_graphs.py``) cover those on a GPU.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from maskbench.errors import CaptureError

__all__ = [
    "HOST_DATA_OPS",
    "HOST_READ_OPS",
    "MASK_INDEX_OPS",
    "UNDISPATCHED_READS",
    "CaptureError",
    "OpTape",
]

#: ATen ops that read tensor values on the host, or whose output shape depends on them
#: (and ``repeat_interleave`` with tensor repeats and no ``output_size``).
HOST_READ_OPS = frozenset(
    {
        "_local_scalar_dense",  # .item(), bool(t), int(t), float(t)
        "equal",
        "is_nonzero",
        "nonzero",
        "argwhere",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "bincount",
    }
)
#: ATen indexing ops that need the data on the host when an index is a bool mask
#: (``x[keep]``: the output's size is the number of True values).
MASK_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
#: ATen ops that make a tensor from host data (``torch.tensor([...])``, a list index).
HOST_DATA_OPS = frozenset({"lift_fresh", "lift_fresh_copy"})


#: ATen ops that only allocate memory (no kernel runs).
_ALLOCATIONS = frozenset({"empty", "empty_strided", "empty_like", "new_empty"})


def _caller() -> str:
    """The innermost stack frame outside torch and this module, as ``file:line in fn``."""
    here = Path(__file__).resolve()
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path.resolve() == here or "torch" in path.parts:
            continue
        return f"{path.name}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


@dataclass(frozen=True)
class _Ref:
    """A recorded op's argument that is a tensor made inside the call (by slot)."""

    slot: int


def _encode(leaves: list, slots: dict[int, int]) -> list:
    """``leaves`` with each tensor made inside the call replaced by its slot."""
    return [
        _Ref(slots[id(leaf)]) if isinstance(leaf, torch.Tensor) and id(leaf) in slots else leaf
        for leaf in leaves
    ]


def _decode(leaves: list, values: dict[int, torch.Tensor]) -> list:
    """The inverse of :func:`_encode` at replay: slots become the replayed tensors."""
    return [values[leaf.slot] if isinstance(leaf, _Ref) else leaf for leaf in leaves]


@dataclass
class _Op:
    func: Any  # an OpOverload
    spec: Any  # pytree spec of (args, kwargs)
    leaves: list  # leaves with tensors made inside the call replaced by _Ref
    outputs: list[int | None]  # slot of each output leaf (None: not a tensor)
    out_spec: Any


class _Recorder(TorchDispatchMode):
    def __init__(self, inputs: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.slots: dict[int, int] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while recording
        self.ops: list[_Op] = []
        for tensor in inputs:
            self.slot_for(tensor)

    def slot_for(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self.slots:
            self.slots[key] = len(self.alive)
            self.alive.append(tensor)
        return self.slots[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in HOST_READ_OPS or (name == "repeat_interleave" and "output_size" not in kwargs):
            raise CaptureError(
                f"aten.{name} reads tensor values on the host (at {_caller()}); a CUDA "
                "graph cannot capture it"
            )
        if name in MASK_INDEX_OPS and _has_bool_index(args):
            raise CaptureError(
                f"aten.{name} with a bool mask as index (at {_caller()}) needs the number "
                "of True values on the host; a CUDA graph cannot capture it"
            )
        if name in HOST_DATA_OPS:
            raise CaptureError(
                f"aten.{name} makes a tensor from host data (at {_caller()}); inside a "
                "CUDA graph capture that is a host-to-device copy, which it refuses"
            )
        leaves, spec = tree_flatten((args, kwargs))
        recorded = _encode(leaves, self.slots)
        out = func(*args, **kwargs)
        out_leaves, out_spec = tree_flatten(out)
        outputs = [
            self.slot_for(leaf) if isinstance(leaf, torch.Tensor) else None for leaf in out_leaves
        ]
        self.ops.append(_Op(func, spec, recorded, outputs, out_spec))
        return out


#: Tensor methods that read values on the host without going through the dispatcher.
UNDISPATCHED_READS = ("tolist", "numpy")


@contextlib.contextmanager
def _refusing_undispatched_reads() -> Iterator[None]:
    """Make :data:`UNDISPATCHED_READS` raise :class:`CaptureError` (restored after)."""
    saved = {name: getattr(torch.Tensor, name) for name in UNDISPATCHED_READS}

    def refuse(name: str):
        def method(self, *args, **kwargs):
            raise CaptureError(
                f"Tensor.{name}() copies tensor values to the host (at {_caller()}); a "
                "CUDA graph cannot capture it"
            )

        return method

    try:
        for name in UNDISPATCHED_READS:
            setattr(torch.Tensor, name, refuse(name))
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


class OpTape:
    """The ATen ops of one call of ``fn(*inputs)``, replayable on new inputs.

    Example::

        tape = OpTape.record(lambda x, k: masked_forward_fn(x, k), x0, keep0)
        out = tape.replay(x1, keep1)   # the recorded ops, on x1 and keep1

    Replay needs inputs of the recorded shapes, dtypes and devices (like a CUDA graph's
    static inputs), and returns fresh tensors.

    Raises:
        CaptureError: (from :meth:`record`) ``fn`` reads tensor values on the host or
            makes tensors from host data.
    """

    def __init__(self, ops: list[_Op], inputs: list[torch.Tensor], output: Any, slots: dict):
        self._ops = ops
        self._shapes = [(tuple(t.shape), t.dtype, t.device) for t in inputs]
        self._n_inputs = len(inputs)
        out_leaves, self._out_spec = tree_flatten(output)
        self._out = _encode(out_leaves, slots)
        self._free_after = _last_uses(ops, self._out)

    @classmethod
    def record(cls, fn: Callable[..., Any], *inputs: torch.Tensor) -> OpTape:
        """Run ``fn(*inputs)`` once, recording its ops (the result is discarded)."""
        recorder = _Recorder(inputs)
        with _refusing_undispatched_reads(), recorder:
            output = fn(*inputs)
        return cls(recorder.ops, list(inputs), output, recorder.slots)

    def launches(self) -> int:
        """Recorded ops that run a kernel: all but views and bare allocations.

        On a GPU each is (at least) one kernel launch, the fixed cost that dominates
        small ops; a device-independent measure of a call's launch overhead.
        """
        return sum(
            1
            for op in self._ops
            if not op.func.is_view and op.func.overloadpacket.__name__ not in _ALLOCATIONS
        )

    def replay(self, *inputs: torch.Tensor) -> Any:
        """The recorded ops on ``inputs`` (same shapes, dtypes and devices as recorded)."""
        if len(inputs) != self._n_inputs:
            raise ValueError(f"the tape takes {self._n_inputs} inputs, got {len(inputs)}")
        expected = zip(inputs, self._shapes, strict=True)
        for i, (tensor, (shape, dtype, device)) in enumerate(expected):
            if (tuple(tensor.shape), tensor.dtype, tensor.device) != (shape, dtype, device):
                raise ValueError(
                    f"input {i} must be {shape} {dtype} on {device} as recorded, got "
                    f"{tuple(tensor.shape)} {tensor.dtype} on {tensor.device}"
                )
        values: dict[int, torch.Tensor] = dict(enumerate(inputs))
        for index, op in enumerate(self._ops):
            args, kwargs = tree_unflatten(_decode(op.leaves, values), op.spec)
            out_leaves, _ = tree_flatten(op.func(*args, **kwargs))
            for slot, leaf in zip(op.outputs, out_leaves, strict=True):
                if slot is not None:
                    values[slot] = leaf
            for slot in self._free_after.get(index, ()):
                values.pop(slot, None)
        return tree_unflatten(_decode(self._out, values), self._out_spec)


def _last_uses(ops: list[_Op], output: list) -> dict[int, list[int]]:
    """For each op index, the slots no later op (nor the output) reads."""
    last: dict[int, int] = {}
    for index, op in enumerate(ops):
        for leaf in op.leaves:
            if isinstance(leaf, _Ref):
                last[leaf.slot] = index
        for slot in op.outputs:
            if slot is not None:
                last[slot] = max(last.get(slot, index), index)
    keep = {leaf.slot for leaf in output if isinstance(leaf, _Ref)}
    dying: dict[int, list[int]] = {}
    for slot, index in last.items():
        if slot not in keep:
            dying.setdefault(index, []).append(slot)
    return dying
