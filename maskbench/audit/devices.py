"""Which device each pytest-xdist worker uses (pure functions; no CUDA is touched).

On CUDA every worker takes its own GPU: worker ``gwN`` gets visible GPU ``N modulo
count``. "Visible" honours an outer ``CUDA_VISIBLE_DEVICES`` (its entries, in order,
may be indices or UUIDs); without one, all ``device_count`` GPUs are visible. The choice
is applied by setting the worker's ``CUDA_VISIBLE_DEVICES`` to that one entry in its
``pytest_configure``, before torch initialises CUDA, so the worker's ``cuda:0`` is its
own GPU (and a user's factory that calls ``.cuda()`` lands there too).

On the CPU each audit process (every worker, and a serial run) runs torch with one thread
by default (``--audit-threads``), so that N workers on N cores do not oversubscribe them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

#: Environment variable CUDA reads the visible devices from.
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"

_WORKER_ID = re.compile(r"^gw(\d+)$")


def worker_index(worker_id: str | None) -> int | None:
    """The index of an xdist worker id (``"gw3"`` -> 3); None outside xdist or for "master"."""
    if not worker_id:
        return None
    match = _WORKER_ID.match(worker_id)
    return int(match.group(1)) if match else None


def visible_gpus(outer: str | None, device_count: int) -> list[str]:
    """The GPUs this run may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``outer`` is the ``CUDA_VISIBLE_DEVICES`` the run was started with (None: unset);
    ``device_count`` is how many GPUs torch sees. An outer value is honoured as given,
    up to its first empty entry (as CUDA does); ``""`` means no GPU.
    """
    if outer is None:
        return [str(i) for i in range(max(0, int(device_count)))]
    entries = []
    for entry in outer.split(","):
        entry = entry.strip()
        if not entry or entry == "-1":
            break  # CUDA ignores everything after an invalid entry
        entries.append(entry)
    return entries


def gpu_for_worker(worker_id: str | None, gpus: Sequence[str]) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry of ``worker_id``: worker index modulo GPU count.

    Returns None when there is no GPU or no worker index (a serial run keeps every GPU).
    """
    index = worker_index(worker_id)
    if index is None or not gpus:
        return None
    return gpus[index % len(gpus)]


def worker_environment(
    worker_id: str | None, environ: Mapping[str, str], device_count: int
) -> dict[str, str]:
    """Environment updates that pin ``worker_id`` to its GPU (empty when nothing changes)."""
    gpu = gpu_for_worker(worker_id, visible_gpus(environ.get(CUDA_VISIBLE_DEVICES), device_count))
    return {} if gpu is None else {CUDA_VISIBLE_DEVICES: gpu}


def torch_threads(device_type: str, requested: int) -> int | None:
    """torch intra-op threads for an audit process; None means leave torch's setting.

    ``requested`` is ``--audit-threads`` (default 1; 0 keeps torch's default). On CUDA
    torch's setting is kept unless a count was asked for explicitly (``requested`` > 1).
    One thread per process is the default on the CPU: the audit's many small calls
    parallelise better over pytest-xdist workers than inside each call, and two threads
    waiting for each other on a busy machine made serial runs up to 18x slower.
    """
    if requested <= 0:
        return None
    if device_type != "cpu" and requested == 1:
        return None
    return requested


def disable_tf32() -> None:
    """Make CUDA float32 convolutions and matrix products round like float32.

    PyTorch lets cuDNN convolutions use TF32 (10-bit mantissa) by default on Ampere and
    newer GPUs, and which kernel runs depends on the batch size; measured on an H200,
    a batch and its samples one by one then differ by up to 4e-4 of the largest logit,
    which no float32 claim can be held to. The audit checks float32 semantics, so on
    CUDA it turns TF32 off (recorded in the scorecard). Flags only: CUDA is not
    initialised here.
    """
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
