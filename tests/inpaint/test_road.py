"""Tests of :func:`maskbench.inpaint.road_impute` (ROAD's noisy linear imputation).

The reference is ``scipy.sparse.linalg.spsolve`` on ROAD's system
(:mod:`maskbench.inpaint.scipy_reference`, built like
``NoisyLinearImputer.setup_sparse_system`` in tleemann/road_evaluation).
Images are small (at most 64 x 64) so the whole file runs in seconds.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskbench.errors import ImageError, MaskError
from maskbench.inpaint import IMAGENET_MEAN, RoadConvergenceError, road_impute, road_solution
from maskbench.inpaint import _multigrid as mg
from maskbench.inpaint.scipy_reference import NEIGHBOUR_WEIGHTS, build_system, scipy_road_solution

ACCURACY = 1e-3  # required max abs error vs spsolve before noise (float32, default tol)


# -- helpers -------------------------------------------------------------------------


# Both ways of running the solver (see road_impute's ``kernels``); float32 CPU images
# take the native kernel by default.
KERNELS = ["native", "torch"]


def oracle(images: torch.Tensor, keep: torch.Tensor) -> np.ndarray:
    """SciPy's noise-free solution of every sample, float64 ``(B, C, H, W)``."""
    imgs = images.double().cpu().numpy()
    masks = keep[:, 0].cpu().numpy()
    return np.stack([scipy_road_solution(img, k) for img, k in zip(imgs, masks, strict=True)])


def max_error(result: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(result.double().cpu().numpy() - reference).max())


def random_images(batch: int, size: int, seed: int, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, channels, size, size), generator=generator)


def random_keep(batch: int, size: int, removed: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 1, size, size), generator=generator) >= removed


def box_keep(size: int, *boxes: tuple[int, int, int, int]) -> torch.Tensor:
    """``(1, 1, size, size)`` keep-mask with the given (r0, r1, c0, c1) boxes removed."""
    keep = torch.ones((1, 1, size, size), dtype=torch.bool)
    for r0, r1, c0, c1 in boxes:
        keep[..., r0:r1, c0:c1] = False
    return keep


def weighted_mean(filled: np.ndarray, i: int, j: int) -> np.ndarray:
    """ROAD's renormalised weighted mean of the in-bounds neighbours of pixel (i, j)."""
    _, height, width = filled.shape
    total, weight_sum = 0.0, 0.0
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        if 0 <= i + dy < height and 0 <= j + dx < width:
            total = total + weight * filled[:, i + dy, j + dx]
            weight_sum += weight
    return total / weight_sum


# -- agreement with the direct solver --------------------------------------------------


@pytest.mark.parametrize("removed", [0.2, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("kernels", KERNELS)
def test_matches_scipy_on_random_masks(removed, kernels):
    images = random_images(4, 48, seed=1)
    keep = random_keep(4, 48, removed, seed=2)
    solution, infos = road_solution(images, keep, kernels=kernels)
    assert max_error(solution, oracle(images, keep)) <= ACCURACY
    assert all(bool((info.error_estimate <= 1e-4).all()) for info in infos)


@pytest.mark.parametrize("kernels", KERNELS)
def test_matches_scipy_on_random_patches(kernels):
    generator = torch.Generator().manual_seed(3)
    cells = torch.rand((4, 1, 6, 6), generator=generator) < 0.5
    keep = ~cells.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    images = random_images(4, 48, seed=4)
    solution, _ = road_solution(images, keep, kernels=kernels)
    assert max_error(solution, oracle(images, keep)) <= ACCURACY


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("seed", [2, 5, 7])
def test_large_patches_converge_fast_and_match_scipy(seed, kernels):
    # 31 px patches on a 99 x 267 image, 68% removed. With one Jacobi damping per coarse
    # grid (set by its worst point) these took 29-37 CG iterations and missed SciPy by
    # up to 1.8e-3 (seeds 2, 5, 7: 1.0e-3, 1.8e-3, 1.1e-3); per-point damping: 5-6
    # iterations, errors below 7e-5.
    rng = np.random.default_rng(seed)
    cells = rng.random((4, 9)) >= 0.68
    keep = torch.from_numpy(np.kron(cells, np.ones((31, 31), bool))[:99, :267])[None, None]
    images = torch.from_numpy(np.random.default_rng(100 + seed).random((1, 3, 99, 267)))
    solution, infos = road_solution(images.float(), keep, kernels=kernels)
    assert infos[0].iterations <= 8
    assert max_error(solution, oracle(images.float(), keep)) <= 1e-4


@pytest.mark.parametrize(("size", "hole"), [(48, 32), (64, 40), (64, 62)])
@pytest.mark.parametrize("kernels", KERNELS)
def test_matches_scipy_on_a_large_central_hole(size, hole, kernels):
    start = (size - hole) // 2
    keep = box_keep(size, (start, start + hole, start, start + hole))
    images = random_images(1, size, seed=5)
    solution, _ = road_solution(images, keep, kernels=kernels)
    assert max_error(solution, oracle(images, keep)) <= ACCURACY


@pytest.mark.parametrize(
    "boxes",
    [
        [(0, 10, 0, 10)],  # corner
        [(38, 48, 38, 48)],  # opposite corner
        [(0, 48, 20, 23)],  # full-height stripe
        [(20, 22, 0, 48)],  # full-width stripe
        [(0, 48, 0, 5), (0, 5, 0, 48)],  # L along two edges
        [(0, 48, 0, 47)],  # everything but one column
        [(10, 30, 40, 48), (44, 48, 0, 48)],  # two holes on the border
    ],
)
@pytest.mark.parametrize("kernels", KERNELS)
def test_matches_scipy_on_border_touching_holes(boxes, kernels):
    keep = box_keep(48, *boxes)
    images = random_images(1, 48, seed=6)
    solution, _ = road_solution(images, keep, kernels=kernels)
    assert max_error(solution, oracle(images, keep)) <= ACCURACY


@pytest.mark.parametrize("where", [(20, 17), (0, 9), (47, 30), (0, 0), (47, 47), (0, 47)])
def test_single_removed_pixel_is_the_weighted_mean_of_its_neighbours(where):
    i, j = where
    keep = box_keep(48, (i, i + 1, j, j + 1))
    images = random_images(1, 48, seed=7, channels=2).double()
    solution, _ = road_solution(images, keep, tol=1e-12)
    expected = weighted_mean(images[0].numpy(), i, j)  # closed form, no scipy
    np.testing.assert_allclose(solution[0, :, i, j].numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [3, 5])
def test_removed_pixel_with_all_neighbours_removed(block):
    # The centre of a removed block has no kept neighbour: it is only determined jointly.
    keep = box_keep(32, (10, 10 + block, 12, 12 + block))
    images = random_images(1, 32, seed=8).double()
    solution, _ = road_solution(images, keep, tol=1e-12)
    assert max_error(solution, oracle(images, keep)) <= 1e-10
    filled = solution[0].numpy()
    for i in range(10, 10 + block):
        for j in range(12, 12 + block):
            np.testing.assert_allclose(filled[:, i, j], weighted_mean(filled, i, j), atol=1e-10)


@given(
    data=st.data(),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    removed=st.floats(0.05, 0.95),
)
@settings(max_examples=40)
def test_matches_scipy_on_any_small_mask(data, height, width, removed):
    seed = data.draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand((1, 1, height, width), generator=generator) >= removed
    images = torch.rand((1, 2, height, width), generator=generator, dtype=torch.float64)
    solution, _ = road_solution(images, keep, tol=1e-12)
    if not bool(keep.any()):  # nothing kept: the constant fill, not a solve
        assert bool((solution == 0.5).all())
        return
    assert max_error(solution, oracle(images, keep)) <= 1e-9


def test_float64_is_solved_to_float64_accuracy():
    images = random_images(2, 40, seed=9).double()
    keep = random_keep(2, 40, 0.6, seed=10) & box_keep(40, (5, 30, 5, 30))
    solution, _ = road_solution(images, keep, tol=1e-11)
    assert solution.dtype == torch.float64
    assert max_error(solution, oracle(images, keep)) <= 1e-9


@pytest.mark.parametrize("kernels", KERNELS)
def test_float32_reaches_a_tight_tolerance(kernels):
    # Below tol 3e-5 the residual is evaluated in float64; float32 round-off in it would
    # otherwise look like an error of about 1e-6 over a large hole.
    keep = box_keep(64, (6, 58, 6, 58))
    images = random_images(1, 64, seed=30)
    solution, infos = road_solution(images, keep, tol=1e-6, kernels=kernels)
    assert solution.dtype == torch.float32
    assert bool((infos[0].error_estimate <= 1e-6).all())
    assert max_error(solution, oracle(images, keep)) <= 1e-6


# -- kept pixels, noise ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_kept_pixels_are_unchanged_bit_for_bit(dtype):
    images = random_images(3, 32, seed=11).to(dtype)
    keep = random_keep(3, 32, 0.5, seed=12)
    filled = road_impute(images, keep)
    assert filled.dtype == dtype
    kept = keep.expand_as(images)
    assert torch.equal(filled[kept], images[kept])
    assert bool(torch.isfinite(filled).all())


def test_noise_is_gaussian_with_std_001_on_imputed_pixels_only():
    images = random_images(4, 48, seed=13)
    keep = random_keep(4, 48, 0.5, seed=14)
    solution, _ = road_solution(images, keep)
    noise = (road_impute(images, keep, noise_std=0.01) - solution) / 0.01
    removed = ~keep.expand_as(images)
    assert bool((noise[~removed] == 0).all())  # no noise on kept pixels
    draws = noise[removed].double()
    n = draws.numel()  # about 13 800 draws
    # Under H0 (iid N(0, 1)): the mean is N(0, 1/n) and (n-1) S^2 ~ chi2(n-1), whose
    # normal approximation has sd sqrt(2 (n-1)). Both bounds are 5 sigma: each fails by
    # chance with probability about 6e-7 (the noise is seeded, so this run never does).
    assert abs(float(draws.mean())) <= 5 / math.sqrt(n)
    assert abs(float(draws.var()) - 1.0) <= 5 * math.sqrt(2 / (n - 1))


def test_noise_depends_on_seed_and_std():
    images = random_images(2, 32, seed=15)
    keep = random_keep(2, 32, 0.5, seed=16)
    base = road_impute(images, keep, noise_std=0.0)
    a = road_impute(images, keep, seed=1)
    b = road_impute(images, keep, seed=2)
    assert not torch.equal(a, b)
    doubled = road_impute(images, keep, seed=1, noise_std=0.02)
    torch.testing.assert_close(doubled - base, 2 * (a - base), rtol=0, atol=1e-6)


def test_noise_free_solution_equals_road_solution():
    images = random_images(2, 32, seed=17)
    keep = random_keep(2, 32, 0.4, seed=18)
    solution, _ = road_solution(images, keep)
    assert torch.equal(road_impute(images, keep, noise_std=0.0), solution)


# -- batching, determinism, content independence ------------------------------------------


def mixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Six samples of different kinds: random, large hole, border hole, single pixel,
    nothing removed, nothing kept."""
    size = 40
    keep = torch.cat(
        [
            random_keep(1, size, 0.5, seed=19),
            box_keep(size, (8, 32, 8, 32)),
            box_keep(size, (0, 12, 30, 40)),
            box_keep(size, (5, 6, 7, 8)),
            torch.ones((1, 1, size, size), dtype=torch.bool),
            torch.zeros((1, 1, size, size), dtype=torch.bool),
        ]
    )
    return random_images(6, size, seed=20), keep


def test_batch_equals_samples_one_by_one_and_permuted():
    images, keep = mixed_batch()
    together = road_impute(images, keep)
    alone = torch.cat([road_impute(images[i : i + 1], keep[i : i + 1]) for i in range(6)])
    order = [4, 1, 5, 0, 3, 2]
    permuted = road_impute(images[order], keep[order])
    # Bit for bit: each sample's arithmetic depends only on its own image and mask.
    assert torch.equal(together, alone)
    assert torch.equal(permuted, alone[order])


def test_repeated_calls_are_identical():
    images, keep = mixed_batch()
    assert torch.equal(road_impute(images, keep, seed=3), road_impute(images, keep, seed=3))


@pytest.mark.parametrize("fill", [0.0, 1.0, -7.0, float("nan"), float("inf"), "random"])
def test_removed_pixel_values_do_not_matter(fill):
    images, keep = mixed_batch()
    reference = road_impute(images, keep)
    other = random_images(6, 40, seed=21) if fill == "random" else torch.full_like(images, fill)
    changed = torch.where(keep, images, other)
    assert torch.equal(road_impute(changed, keep), reference)


# -- edge cases ------------------------------------------------------------------------


def test_nothing_removed_returns_the_images_unchanged():
    images = random_images(2, 16, seed=22)
    keep = torch.ones((2, 1, 16, 16), dtype=torch.bool)
    filled = road_impute(images, keep)
    assert torch.equal(filled, images)
    assert filled.data_ptr() != images.data_ptr()


def test_nothing_kept_gives_the_documented_constant():
    keep = torch.zeros((2, 1, 16, 16), dtype=torch.bool)
    rgb, _ = road_solution(random_images(2, 16, seed=23), keep)
    expected = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand_as(rgb)
    assert torch.equal(rgb, expected)
    grey, _ = road_solution(random_images(2, 16, seed=23, channels=1), keep)
    assert bool((grey == 0.5).all())
    custom, _ = road_solution(random_images(1, 16, seed=23), keep[:1], empty_fill=(0, 1, 2))
    assert custom[0, :, 3, 4].tolist() == [0.0, 1.0, 2.0]
    noisy = road_impute(random_images(2, 16, seed=23), keep)
    assert bool(torch.isfinite(noisy).all())
    assert abs(float((noisy - expected).std()) - 0.01) < 0.002


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 9), (3, 3), (9, 2), (17, 5)])
def test_tiny_and_thin_images(shape):
    generator = torch.Generator().manual_seed(24)
    images = torch.rand((3, 2, *shape), generator=generator, dtype=torch.float64)
    keep = torch.rand((3, 1, *shape), generator=generator) >= 0.5
    keep[0] = False
    keep[0, 0, 0, 0] = True  # one kept pixel
    solution, _ = road_solution(images, keep, tol=1e-12)
    for i in range(3):
        if bool(keep[i].any()):
            reference = scipy_road_solution(images[i].numpy(), keep[i, 0].numpy())
            assert float(np.abs(solution[i].numpy() - reference).max()) <= 1e-9


@pytest.mark.parametrize("kernels", KERNELS)
def test_unconverged_solve_raises(kernels):
    keep = box_keep(64, (4, 60, 4, 60))
    images = random_images(1, 64, seed=25)
    with pytest.raises(RoadConvergenceError, match="did not converge"):
        road_impute(images, keep, tol=1e-9, max_iter=2, kernels=kernels)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (torch.ones((2, 16, 16), dtype=torch.bool), "must have shape"),
        (torch.ones((2, 1, 8, 16), dtype=torch.bool), "does not match the images"),
        (torch.ones((3, 1, 16, 16), dtype=torch.bool), "mask batch 3"),
        (torch.full((2, 1, 16, 16), 0.5), "must be 0 or 1"),
    ],
)
def test_bad_masks_raise_mask_errors(keep, message):
    with pytest.raises(MaskError, match=message):
        road_impute(random_images(2, 16, seed=26), keep)


def test_masks_follow_the_library_contract():
    # 0/1 floats, one (1, 1, H, W) mask for the batch, or an (H, W) mask: same result.
    images = random_images(2, 16, seed=26)
    keep = random_keep(1, 16, 0.5, seed=27)
    expected = road_impute(images, keep.expand(2, 1, 16, 16))
    assert torch.equal(road_impute(images, keep.float()), expected)
    assert torch.equal(road_impute(images, keep[0, 0]), expected)


def test_bad_images_and_arguments_raise_specific_errors():
    images = random_images(2, 16, seed=28)
    keep = random_keep(2, 16, 0.5, seed=29)
    with pytest.raises(ImageError, match="float"):
        road_impute((images * 255).to(torch.uint8), keep)
    with pytest.raises(ImageError, match="shape"):
        road_impute(images[0], keep[0])
    for name, value in [("noise_std", -0.1), ("noise_std", math.nan), ("tol", 0.0)]:
        with pytest.raises(ValueError, match=name):
            road_impute(images, keep, **{name: value})
    with pytest.raises(ValueError, match="max_iter"):
        road_impute(images, keep, max_iter=0)
    with pytest.raises(ValueError, match="empty_fill"):  # checked even when unused
        road_impute(images, keep, empty_fill=(0.1, 0.2))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_kept_pixels_are_named_but_removed_ones_are_ignored(bad):
    images = random_images(3, 16, seed=30)
    keep = random_keep(3, 16, 0.5, seed=31)
    images[1, 2][~keep[1, 0]] = bad  # removed: allowed, they never matter
    road_impute(images, keep)
    images[2, 0][keep[2, 0]] = bad
    with pytest.raises(ImageError, match=r"kept pixels \(samples \[2\]\)"):
        road_impute(images, keep)


def test_finite_images_whose_sum_overflows_are_still_accepted():
    # The quick check (a finite sum means finite values) must fall back to the exact
    # one when a sum of finite values overflows: float16 images of 1000s sum past 65504.
    images = (1000 + 1000 * random_images(2, 32, seed=32)).half()
    keep = random_keep(2, 32, 0.5, seed=33)
    assert not bool(torch.isfinite(images.sum()))
    filled = road_impute(images, keep, noise_std=0.0)
    assert bool(torch.isfinite(filled).all())
    assert torch.equal(filled[keep.expand_as(filled)], images[keep.expand_as(images)])


# -- the solver's building blocks --------------------------------------------------------


def test_fine_operator_is_twelve_times_roads_matrix():
    keep = random_keep(1, 12, 0.5, seed=27)
    unknown = (~keep[:, 0]).double()
    solver = mg.MultigridSolver(unknown, 1)
    dense = mg._dense_matrix(solver.fine.stencil(slice(0, 1)))[0].numpy()
    index = np.flatnonzero(unknown[0].numpy().ravel())
    matrix, _ = build_system(np.zeros((1, 12, 12)), keep[0, 0].numpy())
    np.testing.assert_allclose(dense[np.ix_(index, index)], 12 * matrix.toarray(), atol=1e-12)


@pytest.mark.parametrize(("h", "w"), [(7, 9), (8, 8), (10, 5), (1, 6), (2, 2), (13, 12)])
def test_galerkin_product_matches_dense(h, w):
    generator = torch.Generator().manual_seed(28)
    stencil = torch.randn((2, 3, 3, h, w), generator=generator, dtype=torch.float64)
    rows, cols = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
    for a in range(3):
        for b in range(3):
            outside = (rows + a - 1 < 0) | (rows + a - 1 >= h) | (cols + b - 1 < 0)
            outside = outside | (cols + b - 1 >= w)
            stencil[:, a, b][:, outside] = 0.0

    def interpolation(n: int) -> torch.Tensor:
        p = torch.zeros((n, mg.coarse_size(n)), dtype=torch.float64)
        for j in range(mg.coarse_size(n)):
            for e, weight in ((-1, 0.5), (0, 1.0), (1, 0.5)):
                if 0 <= 2 * j + e < n:
                    p[2 * j + e, j] = weight
        return p

    p = torch.kron(interpolation(h), interpolation(w))
    expected = p.T @ mg._dense_matrix(stencil) @ p
    torch.testing.assert_close(mg._dense_matrix(mg.galerkin(stencil)), expected)


def test_preconditioner_is_symmetric_positive_definite():
    keep = random_keep(1, 20, 0.6, seed=29) & box_keep(20, (3, 15, 4, 17))
    unknown = (~keep[:, 0]).double()
    count = int(unknown.sum())
    solver = mg.MultigridSolver(unknown, count)  # one channel per unit vector
    grid = solver.grid
    index = torch.nonzero(grid.flat(unknown.view(1, 1, 20, 20)).flatten()).flatten()
    r = torch.zeros((1, count, grid.n), dtype=torch.float64)
    r[0, torch.arange(count), index] = 1.0
    z = torch.zeros_like(r)
    solver.precondition(r, z)
    matrix = z[0][:, index]  # row k: B e_k restricted to the unknowns
    torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(matrix.numpy()).min() > 0


# -- devices ----------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    images, keep = mixed_batch()
    cpu, _ = road_solution(images, keep)
    gpu, _ = road_solution(images.cuda(), keep.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
    noisy = road_impute(images.cuda(), keep.cuda())
    kept = keep.cuda().expand_as(noisy)
    assert torch.equal(noisy[kept], images.cuda()[kept])
    assert max_error(gpu[:4], oracle(images[:4], keep[:4])) <= ACCURACY


@given(batch=st.integers(1, 200), chunk=st.integers(1, 64))
def test_chunks_are_contiguous_and_balanced(batch, chunk):
    chunks = mg._chunks(batch, chunk)
    assert len(chunks) == -(-batch // chunk)  # as few as the chunk size allows
    assert chunks[0].start == 0 and chunks[-1].stop == batch
    assert all(a.stop == b.start for a, b in itertools.pairwise(chunks))
    sizes = [c.stop - c.start for c in chunks]
    assert max(sizes) <= chunk and max(sizes) - min(sizes) <= 1
