"""ROAD's torch solver reads little back to the host (what a GPU waits on), and the
batched forms of its per-sample steps equal the per-sample ones bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from maskbench.engine.tape import OpTape
from maskbench.inpaint import _multigrid as mg
from maskbench.inpaint import road


def _per_sample_assembly(
    out: torch.Tensor,
    images: torch.Tensor,
    keep: torch.Tensor,
    i: int,
    box: tuple[int, int, int, int],
    imputed: torch.Tensor,
    draw: torch.Tensor | None,
    std: float,
) -> None:
    """The oracle: sample ``i``'s box solution ``imputed`` (``(C, box h, box w)``) plus
    ``std`` times its ``draw`` added through the box's bool mask of removed pixels, then
    written over a copy of the image at its removed pixels (what road.py did per sample)."""
    r0, r1, c0, c1 = box
    removed = ~keep[i, 0, r0:r1, c0:c1]
    noisy = imputed.clone()
    if draw is not None:
        noisy[:, removed] += std * draw
    out[i] = images[i]
    region = out[i, :, r0:r1, c0:c1]
    region.copy_(torch.where(removed, noisy.to(images.dtype), region))


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 6), (2, 2), (7, 6), (4, 9)])
def test_dense_matrix_equals_an_entry_by_entry_assembly(h, w):
    generator = torch.Generator().manual_seed(h * 10 + w)
    stencil = torch.randn((3, 3, 3, h, w), generator=generator)
    expected = torch.zeros((3, h * w, h * w), dtype=torch.float64)
    for a, b, i, j in (
        (a, b, i, j) for a in range(3) for b in range(3) for i in range(h) for j in range(w)
    ):
        if 0 <= i + a - 1 < h and 0 <= j + b - 1 < w:
            expected[:, i * w + j, (i + a - 1) * w + j + b - 1] = stencil[:, a, b, i, j].double()
    assert torch.equal(mg._dense_matrix(stencil), expected)


def test_dense_matrix_reads_nothing_back_to_the_host():
    generator = torch.Generator().manual_seed(1)
    stencils = torch.randn((2, 2, 3, 3, 5, 4), generator=generator)
    mg._dense_positions(5, 4, torch.device("cpu"))  # cached before, as after a first call
    tape = OpTape.record(mg._dense_matrix, stencils[0])
    assert torch.equal(tape.replay(stencils[1]), mg._dense_matrix(stencils[1]))


def test_whole_image_assembly_equals_the_per_sample_one():
    """Noise scattered to the removed pixels by one gather, then one ``where``: the
    same bits as adding each sample's draws through its bool mask and assembling it."""
    generator = torch.Generator().manual_seed(2)
    images = torch.rand((5, 3, 9, 11), generator=generator)
    keep = torch.rand((5, 1, 9, 11), generator=generator) > 0.6
    keep[3] = True  # nothing removed: no draws, nothing assembled
    rows = [0, 1, 2, 4]
    solution = torch.rand((4, 3, 9, 11), generator=generator)
    draws = [torch.randn((3, int((~keep[i]).sum())), generator=generator) for i in rows]
    full = (0, 9, 0, 11)
    expected = images.clone()
    for k, i in enumerate(rows):
        _per_sample_assembly(expected, images, keep, i, full, solution[k], draws[k], 0.01)
    out = images.clone()
    road._assemble_group(out, images, keep, rows, [full] * 4, solution, draws, 0.01)
    assert torch.equal(out, expected)
    noiseless = images.clone()
    road._assemble_group(noiseless, images, keep, rows, [full] * 4, solution, None, 0.0)
    assert torch.equal(noiseless[rows], torch.where(keep[rows], images[rows], solution))


@pytest.mark.parametrize("noise_std", [0.0, 0.01])
def test_group_assembly_of_boxes_equals_the_per_sample_one(noise_std):
    """Boxes at different places, solved on one 8 x 8 grid (each at its top-left
    corner): one gather puts each in place, the same bits as crop by crop."""
    generator = torch.Generator().manual_seed(4)
    images = torch.rand((3, 3, 12, 14), generator=generator)
    keep = torch.ones((3, 1, 12, 14), dtype=torch.bool)
    boxes = [(0, 6, 0, 7), (5, 12, 8, 14), (2, 9, 3, 11)]
    for i, (r0, r1, c0, c1) in enumerate(boxes):  # removed pixels strictly inside
        inner = torch.rand((r1 - r0 - 2, c1 - c0 - 2), generator=generator) > 0.3
        keep[i, 0, r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = ~inner
    solution = torch.rand((3, 3, 8, 8), generator=generator)
    draws = [torch.randn((3, int((~keep[i]).sum())), generator=generator) for i in range(3)]
    expected = images.clone()
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        imputed = solution[i, :, : r1 - r0, : c1 - c0]
        draw = draws[i] if noise_std > 0 else None
        _per_sample_assembly(expected, images, keep, i, boxes[i], imputed, draw, noise_std)
    out = torch.full_like(images, float("nan"))
    group_draws = draws if noise_std > 0 else None
    road._assemble_group(out, images, keep, [0, 1, 2], boxes, solution, group_draws, noise_std)
    assert torch.equal(out, expected)


class _HostReads(TorchDispatchMode):
    """Counts host reads while active: dispatched scalar reads, and ``tolist()``
    (which bypasses the dispatcher; patched through ``monkeypatch``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.count = 0
        plain_tolist = torch.Tensor.tolist

        def counted_tolist(tensor: torch.Tensor) -> list:
            self.count += 1
            return plain_tolist(tensor)

        monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in ("_local_scalar_dense", "nonzero", "equal"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_conjugate_gradients_read_the_host_once_per_iteration(monkeypatch):
    """Before, every check read ``passed.any()``, ``stalled.any()``, and every iteration
    ``all done`` and ``all finite`` separately (4 reads per iteration and chunk)."""
    generator = torch.Generator().manual_seed(3)
    unknown = (torch.rand((4, 48, 48), generator=generator) > 0.5).float()
    values = torch.rand((4, 3, 48, 48), generator=generator)
    solver = mg.MultigridSolver(unknown, 3)
    assert len(solver.chunks) == 1
    rhs = torch.stack([solver.fine.rhs(slice(0, 4), values * (1 - unknown[:, None]), solver.work)])[
        0
    ]
    scale = values.flatten(2).amax(dim=2)
    with _HostReads(monkeypatch) as counter:
        _, info = solver.solve(rhs, scale, tol=1e-4, max_iter=100)
    assert info.iterations >= 3
    # one settle per iteration and one before the first, the round-off probe of the
    # first iteration, and the restart count of the info
    assert counter.count <= info.iterations + 3, (counter.count, info.iterations)


def test_a_batch_reads_the_host_a_few_times_not_per_sample(monkeypatch):
    """road_impute on 16 masks (whole-image and hole boxes) with the GPU's schedule
    (one chunk): before, about 90 host reads (two per sample for the noise, four per CG
    iteration, 27 for the coarsest matrix); now about one per iteration plus a few."""
    monkeypatch.setattr(mg, "fine_chunk_size", lambda unknown, channels: unknown.shape[0])
    generator = torch.Generator().manual_seed(5)
    images = torch.rand((16, 3, 64, 64), generator=generator)
    keep = torch.rand((16, 1, 64, 64), generator=generator) > 0.5
    for i in range(8, 16):  # holes at different places: boxes smaller than the image
        keep[i] = True
        keep[i, 0, i : i + 30, 2 * i : 2 * i + 25] = False
    road.road_impute(images, keep, kernels="torch")  # caches the coarsest positions
    with _HostReads(monkeypatch) as counter:
        road.road_impute(images, keep, kernels="torch")
    assert counter.count <= 30, counter.count
