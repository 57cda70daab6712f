"""The compiled CPU kernel of the ROAD solver (maskbench/inpaint/_road_kernels.c).

Oracles: SciPy's direct solve (accuracy), the torch kernels (same algorithm: the two must
agree to float32 round-off and take about as many iterations), the torch Galerkin
product (bit for bit: its entries are exact in float32), and the same systems solved
alone, in other batches or with another thread count (bit for bit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskbench.inpaint import (
    NativeKernelsMissingError,
    RoadConvergenceError,
    _native,
    native_available,
    road_impute,
    road_solution,
)
from maskbench.inpaint import _multigrid as mg
from maskbench.inpaint.scipy_reference import scipy_road_solution
from maskbench.seeding import per_sample_randn_each


def images_and_masks(batch: int, h: int, w: int, seed: int, removed: float = 0.5):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, 3, h, w), generator=generator)
    keep = torch.rand((batch, 1, h, w), generator=generator) >= removed
    return images, keep


def patch_masks(batch: int, size: int, cell: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    cells = torch.rand((batch, 1, size // cell, size // cell), generator=generator) < 0.5
    return ~cells.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)


def hole_masks(batch: int, size: int, hole: int) -> torch.Tensor:
    keep = torch.ones((batch, 1, size, size), dtype=torch.bool)
    start = (size - hole) // 2
    keep[:, :, start : start + hole, start : start + hole] = False
    return keep


def scipy_error(solution: torch.Tensor, images: torch.Tensor, keep: torch.Tensor) -> float:
    worst = 0.0
    for i in range(images.shape[0]):
        if not bool(keep[i].any()):  # nothing kept: a constant fill, no system
            continue
        reference = scipy_road_solution(images[i].double().numpy(), keep[i, 0].numpy())
        worst = max(worst, float(np.abs(solution[i].double().numpy() - reference).max()))
    return worst


def test_the_kernel_was_built_by_the_install():
    # CI installs with the README's `pip install -e .`, which compiles the kernel: if it
    # is missing here, the install step is broken.
    assert native_available()


@pytest.mark.parametrize(
    ("h", "w"),
    [
        (1, 1),
        (2, 3),
        (5, 8),
        (8, 8),
        (9, 9),
        (16, 11),
        (17, 40),
        (33, 64),
        (64, 64),
        (266, 1),  # one-pixel-wide images: Galerkin terms with no column (found by a
        (1, 266),  # randomised check against SciPy)
        (2, 100),
    ],
)
def test_every_hierarchy_depth_matches_scipy(h, w):
    # 8 x 8 and smaller: the fine grid is solved densely (no coarse level); 9 to 16: the
    # first coarse grid is the coarsest; larger: full V-cycles.
    images, keep = images_and_masks(3, h, w, seed=h * 100 + w)
    keep[0] = False
    keep[0, 0, 0, 0] = True  # one kept pixel: the weakest anchoring
    solution, infos = road_solution(images, keep, kernels="native")
    assert solution.dtype == torch.float32
    assert scipy_error(solution, images, keep) <= 2e-4
    assert all(bool((info.error_estimate <= 1e-4).all()) for info in infos)


@pytest.mark.parametrize(
    ("name", "keep"),
    [
        ("random pixels", images_and_masks(4, 96, 96, seed=1)[1]),
        ("16 px patches", patch_masks(4, 96, 16, seed=2)),
        ("central hole", hole_masks(4, 96, 48)),
    ],
)
def test_native_and_torch_kernels_agree(name, keep):
    images = images_and_masks(4, 96, 96, seed=3)[0]
    native, native_infos = road_solution(images, keep, kernels="native")
    torch_, torch_infos = road_solution(images, keep, kernels="torch")
    # Both stop when the multigrid error estimate is below tol = 1e-4 of the scale (1
    # here) and land within about 3e-5 of the exact solution (measured), and within
    # 3e-5 of each other (measured: 4e-6 or less; the same iterates up to round-off).
    assert float((native - torch_).abs().max()) <= 3e-5, name
    assert scipy_error(native, images, keep) <= 1e-4, name
    native_iterations = max(info.iterations for info in native_infos)
    torch_iterations = max(info.iterations for info in torch_infos)
    assert abs(native_iterations - torch_iterations) <= 1, name
    assert all(bool(info.float64_residual.all()) for info in native_infos)


@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    seed=st.integers(0, 2**31 - 1),
    inside=st.booleans(),
)
@settings(max_examples=25, deadline=None)
def test_galerkin_first_level_equals_the_torch_product_bit_for_bit(h, w, seed, inside):
    generator = torch.Generator().manual_seed(seed)
    unknown = (torch.rand((2, h, w), generator=generator) < 0.6).float()
    exists = None
    if inside:  # cells outside the image (as for boxes padded to a multiple of 8)
        exists = (torch.rand((2, h, w), generator=generator) < 0.9).float()
        unknown = unknown * exists
    fine = mg._FineOperator(mg._Grid(h, w), unknown, exists)
    expected = mg.galerkin(fine.stencil(slice(None)))
    assert torch.equal(_native.native_galerkin_first(fine), expected)


def test_results_do_not_depend_on_the_thread_count():
    images, keep = images_and_masks(5, 80, 72, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = road_solution(images, keep, kernels="native")
        torch.set_num_threads(3)
        three, _ = road_solution(images, keep, kernels="native")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, three)


def test_values_at_removed_pixels_never_enter():
    images, keep = images_and_masks(2, 40, 40, seed=5)
    poisoned = torch.where(keep, images, torch.full_like(images, float("nan")))
    clean, _ = road_solution(images, keep, kernels="native")
    dirty, _ = road_solution(poisoned, keep, kernels="native")
    assert torch.equal(clean, dirty)


def test_unconverged_and_broken_solves_raise():
    images, keep = images_and_masks(1, 64, 64, seed=6, removed=0.9)
    with pytest.raises(RoadConvergenceError, match=r"did not converge in 1 iterations"):
        road_solution(images, keep, tol=1e-9, max_iter=1, kernels="native")
    # road_impute rejects NaN at kept pixels; straight into the solver it must be
    # reported, not returned.
    for value in (float("nan"), float("inf")):
        for where in ("all", "one"):  # every kept value of a channel, or a single one
            bad = images.clone()
            if where == "all":
                bad[0, 1, keep[0, 0]] = value
            else:
                row, col = torch.nonzero(keep[0, 0])[3].tolist()
                bad[0, 1, row, col] = value
            with pytest.raises(RoadConvergenceError, match="broke down"):
                mg.solve_system(bad, ~keep[:, 0], tol=1e-4, max_iter=50, kernels="native")


def test_kernel_choice_is_checked():
    images, keep = images_and_masks(1, 16, 16, seed=7)
    with pytest.raises(ValueError, match="kernels must be"):
        road_impute(images, keep, kernels="fast")
    with pytest.raises(ValueError, match="float32"):
        road_impute(images.double(), keep, kernels="native")
    # float64 images take the torch kernels under "auto": solved in float64.
    solution, _ = road_solution(images.double(), keep, tol=1e-11)
    assert solution.dtype == torch.float64
    assert scipy_error(solution, images.double(), keep) <= 1e-9


def test_a_missing_library_is_an_actionable_error(monkeypatch):
    monkeypatch.setattr(_native, "_library", lambda: None)
    images, keep = images_and_masks(1, 16, 16, seed=8)
    with pytest.raises(NativeKernelsMissingError, match=r"pip install -e \."):
        road_impute(images, keep)
    # ... and the torch kernels still work without it.
    solution = road_impute(images, keep, kernels="torch", noise_std=0.0)
    assert scipy_error(solution, images, keep) <= 1e-4


@given(h=st.integers(1, 60), w=st.integers(1, 60), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25, deadline=None)
def test_galerkin_of_any_stencil_equals_the_torch_product_bit_for_bit(h, w, seed):
    # Deeper levels are not exact in float32: equal only because the kernel adds the same
    # terms in the same order as torch (weights are powers of two).
    generator = torch.Generator().manual_seed(seed)
    stencil = torch.randn((3, 3, 3, h, w), generator=generator)
    assert torch.equal(_native.native_galerkin(stencil), mg.galerkin(stencil))


def mixed_keep(size: int) -> torch.Tensor:
    """Whole-image masks, hole boxes of two sizes, nothing kept, nothing removed."""
    generator = torch.Generator().manual_seed(11)
    keep = torch.rand((6, 1, size, size), generator=generator) >= 0.5
    keep[1] = hole_masks(1, size, size // 2)[0]
    keep[2] = True
    keep[2, :, 3:9, 30:37] = False  # a small box by the border
    keep[3] = False  # nothing kept: the constant fill
    keep[4] = True  # nothing removed
    return keep


@pytest.mark.parametrize("noise_std", [0.0, 0.01])
def test_native_assembly_equals_the_torch_assembly(noise_std):
    # Float32 contiguous images are assembled by the kernel; a non-contiguous copy of the
    # same images takes torch's per-sample assembly of the same native solutions.
    images = images_and_masks(6, 40, 40, seed=12)[0]
    keep = mixed_keep(40)
    strided = images.transpose(2, 3).contiguous().transpose(2, 3)
    assert not strided.is_contiguous() and torch.equal(strided, images)
    native = road_impute(images, keep, noise_std=noise_std, seed=5)
    reference = road_impute(strided, keep, noise_std=noise_std, seed=5)
    kept = keep.expand_as(images)
    assert torch.equal(native[kept], images[kept])  # copied, bit for bit
    assert torch.equal(native[4], images[4])
    # Removed pixels: solution + std * noise, rounded once or twice (torch may fuse).
    assert float((native - reference).abs().max()) <= 1e-6
    if noise_std > 0:  # the noise went in: ~11,000 N(0, 0.01^2) draws (SE of the std 0.7%)
        plain = road_impute(images, keep, noise_std=0.0)
        spread = float((native - plain)[~kept].std())
        assert 0.009 < spread < 0.011


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_noise_is_one_draw_per_removed_pixel_in_row_major_order(kernels):
    # The documented stream: per sample, per_sample_randn_each of shape (C, removed
    # pixels), keyed by seed and mask; both assemblies must consume it the same way.
    images = images_and_masks(6, 40, 40, seed=13)[0]
    keep = mixed_keep(40)
    noisy = road_impute(images, keep, noise_std=0.01, seed=7, kernels=kernels)
    plain = road_impute(images, keep, noise_std=0.0, kernels=kernels)
    for i in range(6):
        removed = ~keep[i, 0]
        if not bool(removed.any()):
            assert torch.equal(noisy[i], images[i])
            continue
        expected = per_sample_randn_each([(3, int(removed.sum()))], keep[i : i + 1], 7)[0]
        drawn = (noisy[i] - plain[i])[:, removed] / 0.01
        assert float((drawn - expected).abs().max()) <= 1e-4, i
