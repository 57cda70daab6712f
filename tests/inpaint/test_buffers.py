"""The ROAD solver's reusable CPU scratch (:mod:`maskbench.inpaint._buffers`)."""

from __future__ import annotations

import threading

import pytest
import torch

from maskbench.inpaint import RoadConvergenceError, free_solver_buffers, road_impute
from maskbench.inpaint._buffers import BufferPool, thread_buffers


def test_tensors_lent_in_one_call_never_alias_and_come_back_after_release():
    pool = BufferPool()
    like = torch.zeros((2, 3, 5))
    first, second = pool.take(like), pool.take(like)
    assert first.data_ptr() != second.data_ptr()
    assert first.shape == like.shape and first.dtype == like.dtype
    pool.release()
    again = {pool.take(like).data_ptr(), pool.take(like).data_ptr()}
    assert again == {first.data_ptr(), second.data_ptr()}  # the same memory, reused
    assert pool.take(like).data_ptr() not in again  # a third is new


def test_release_keeps_only_what_the_last_call_used():
    pool = BufferPool()
    small, large = torch.zeros(10), torch.zeros(1000)
    pool.take(small)
    pool.take(large)
    pool.release()
    assert pool.nbytes == 4 * 1010
    pool.take(small)
    pool.release()  # the large tensor was not used this time: dropped
    assert pool.nbytes == 4 * 10
    pool.clear()
    assert pool.nbytes == 0


def test_a_pool_keeps_at_most_max_bytes():
    pool = BufferPool(max_bytes=4 * 150)
    for _ in range(3):
        pool.take(torch.zeros(100))  # 400 bytes each
    pool.release()
    assert pool.nbytes == 400  # one fits under 600 bytes, the others are freed


def test_only_cpu_tensors_are_pooled():
    pool = BufferPool()
    like = torch.empty((4, 4), device="meta")
    assert pool.take(like).device.type == "meta"
    pool.release()
    assert pool.nbytes == 0


def test_each_thread_has_its_own_pool():
    pools = []
    thread = threading.Thread(target=lambda: pools.append(thread_buffers()))
    thread.start()
    thread.join()
    assert pools[0] is not thread_buffers()


def test_groups_whose_vectors_have_equal_shapes_do_not_overwrite_each_other():
    # Boxes of 16 x 32 and 32 x 16 are solved in two groups whose padded grids have the
    # same number of cells (19 * 35), so their CG vectors have one shape; each must still
    # get its own buffers while the other's solution waits to be assembled.
    images = torch.rand((2, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    keep = torch.ones((2, 1, 64, 64), dtype=torch.bool)
    keep[0, :, 10:24, 5:35] = False  # box 16 x 32 with its ring
    keep[1, :, 30:60, 40:54] = False  # box 32 x 16
    together = road_impute(images, keep)
    for i in range(2):
        alone = road_impute(images[i : i + 1], keep[i : i + 1])
        assert torch.equal(together[i : i + 1], alone)


def test_repeated_calls_reuse_memory_and_free_releases_it():
    images = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    keep = torch.rand((2, 1, 32, 32), generator=torch.Generator().manual_seed(2)) > 0.5
    free_solver_buffers()
    first = road_impute(images, keep)
    held = thread_buffers().nbytes
    assert held > 0
    assert torch.equal(road_impute(images, keep), first)
    assert thread_buffers().nbytes == held  # nothing new kept: the same buffers again
    assert free_solver_buffers() == held and thread_buffers().nbytes == 0


def test_a_failing_solve_still_returns_its_buffers():
    images = torch.rand((1, 3, 48, 48), generator=torch.Generator().manual_seed(3))
    keep = torch.ones((1, 1, 48, 48), dtype=torch.bool)
    keep[..., 4:44, 4:44] = False
    free_solver_buffers()
    with pytest.raises(RoadConvergenceError):
        road_impute(images, keep, tol=1e-12, max_iter=1)
    assert thread_buffers().nbytes > 0  # taken back at the end of the failed call
    held = thread_buffers().nbytes
    road_impute(images, keep)  # and lent again, not allocated anew
    assert thread_buffers().nbytes == held
