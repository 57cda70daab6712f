"""Reusable CPU scratch tensors for the ROAD solver.

A fresh multi-megabyte CPU tensor is fresh memory from the operating system: the first
write to every 4 KB page faults. ROAD's solver used to allocate its conjugate-gradient
vectors anew on every call, some 12,000 page faults per batch of 16 images at 224 x 224
(about 8% of its time, measured). A :class:`BufferPool` lends such tensors and takes
them back at the end of the call, so repeated calls (a ROAD evaluation makes thousands)
reuse the same memory.

Between calls a pool keeps only what its last call used, and at most
:data:`MAX_POOLED_BYTES` (per thread); release it with :func:`free_solver_buffers`. CUDA
tensors are never pooled: PyTorch's caching allocator already reuses GPU memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["MAX_POOLED_BYTES", "BufferPool", "free_solver_buffers", "thread_buffers"]

_Key = tuple[tuple[int, ...], torch.dtype]

#: A pool keeps at most this many bytes between calls (a batch of 16 RGB images of
#: 224 x 224 needs about 40 MB; bigger calls still work, their excess is freed).
MAX_POOLED_BYTES = 256 << 20


class BufferPool:
    """Lends uninitialised CPU tensors by shape and dtype; :meth:`release` takes them back.

    A tensor is never lent twice before a release, so two tensors taken in one call
    never alias, whatever their shapes.
    """

    def __init__(self, max_bytes: int = MAX_POOLED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._free: dict[_Key, list[torch.Tensor]] = {}
        self._lent: list[tuple[_Key, torch.Tensor]] = []

    def take(self, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor with the shape, dtype and device of ``like``."""
        return self.empty(tuple(like.shape), like.dtype, like.device)

    def empty(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """An uninitialised contiguous tensor (pooled on the CPU, fresh elsewhere)."""
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        key = (tuple(shape), dtype)
        free = self._free.get(key)
        tensor = free.pop() if free else torch.empty(shape, dtype=dtype)
        self._lent.append((key, tensor))
        return tensor

    def release(self) -> None:
        """Take back what was lent since the last release, up to ``max_bytes``; drop
        free tensors that were not lent in that time (the pool holds at most what one
        call used)."""
        kept: dict[_Key, list[torch.Tensor]] = {}
        total = 0
        for key, tensor in self._lent:
            size = tensor.numel() * tensor.element_size()
            if total + size <= self.max_bytes:
                kept.setdefault(key, []).append(tensor)
                total += size
        self._free, self._lent = kept, []

    @contextlib.contextmanager
    def lending(self) -> Iterator[BufferPool]:
        """``with pool.lending():`` releases everything lent inside the block at its end
        (also when it raises)."""
        try:
            yield self
        finally:
            self.release()

    def clear(self) -> None:
        """Drop every free tensor (tensors still lent stay valid for their borrower)."""
        self._free = {}

    @property
    def nbytes(self) -> int:
        """Bytes held by free tensors."""
        return sum(t.numel() * t.element_size() for ts in self._free.values() for t in ts)


_LOCAL = threading.local()


def thread_buffers() -> BufferPool:
    """This thread's pool (each thread has its own: calls in parallel threads never
    share scratch)."""
    pool = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = BufferPool()
    return pool


def free_solver_buffers() -> int:
    """Free the ROAD solver's cached CPU scratch of the calling thread; returns the
    number of bytes released."""
    pool = thread_buffers()
    released = pool.nbytes
    pool.clear()
    return released
