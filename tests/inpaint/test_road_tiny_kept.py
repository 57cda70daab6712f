"""ROAD imputation when only a pixel or a tiny block is kept (regression tests).

With one kept pixel in a corner of a 224 x 224 image the system is nearly the singular
Neumann problem: its float32 residual's round-off, amplified by the multigrid
V-cycle (about ``A^-1``), is itself above the default tolerance. The solver then used
to iterate on round-off until conjugate gradients diverged ("broke down (non-finite
residual)"). These tests draw tiny kept regions (1x1 to 3x3 blocks, a few scattered
pixels) at corners, edges and anywhere, on real photographs of 8 to 224 pixels a side:

* up to 128 pixels a side, the solution is compared with ``scipy.sparse.linalg.spsolve``;
* at 160 to 224 (spsolve would be slow), the solve must converge and satisfy ROAD's
  equations (every removed pixel is the renormalised weighted mean of its neighbours)
  to 1e-4, and agree with a float64 solve of the same system;
* one kept pixel has a closed form: every removed pixel equals it;
* batches mixing such samples with ordinary ones stay bit-for-bit consistent.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maskbench as mb
from maskbench.inpaint import RoadConvergenceError, road_impute, road_solution
from maskbench.inpaint import _multigrid as mg
from maskbench.inpaint.scipy_reference import NEIGHBOUR_WEIGHTS, scipy_road_solution

ACCURACY = 1e-3  # max abs error vs spsolve (float32, default tol), as in test_road.py
EQUATION_TOL = 1e-4  # max |removed pixel - weighted mean of its neighbours|


@functools.cache
def photo(size: int = 224) -> torch.Tensor:
    """One real photograph, ``(1, 3, size, size)`` float32 in [0, 1]."""
    return mb.sample_images(1, size)


def images_for(height: int, width: int) -> torch.Tensor:
    return photo()[..., :height, :width].contiguous()


def keep_mask(height: int, width: int, pixels: list[tuple[int, int]]) -> torch.Tensor:
    """``(1, 1, height, width)`` keep-mask with only ``pixels`` kept."""
    keep = torch.zeros((1, 1, height, width), dtype=torch.bool)
    for i, j in pixels:
        keep[0, 0, i, j] = True
    return keep


def block(top: int, left: int, h: int, w: int) -> list[tuple[int, int]]:
    return [(top + a, left + b) for a in range(h) for b in range(w)]


def road_equation_error(filled: np.ndarray, keep: np.ndarray) -> float:
    """Max over removed pixels of ``|x_i - weighted mean of x's in-bounds neighbours|``.

    ``filled`` is ``(C, H, W)`` float64, ``keep`` ``(H, W)`` bool.
    """
    _, height, width = filled.shape
    padded = np.pad(filled, ((0, 0), (1, 1), (1, 1)))
    exists = np.pad(np.ones((height, width)), 1)
    total = np.zeros_like(filled)
    weight_sum = np.zeros((height, width))
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        window = (slice(1 + dy, 1 + dy + height), slice(1 + dx, 1 + dx + width))
        total += weight * padded[(slice(None), *window)]
        weight_sum += weight * exists[window]
    return float(np.abs(filled - total / weight_sum)[:, ~keep].max())


@st.composite
def tiny_kept_regions(draw, min_side: int, max_side: int, sides=None):
    """``(height, width, kept pixels)``: a 1x1..3x3 block at a corner, on an edge or
    anywhere, or 2 to 4 scattered single pixels."""
    if sides is None:
        height = draw(st.integers(min_side, max_side))
        width = draw(st.integers(min_side, max_side))
    else:
        height, width = draw(st.sampled_from(sides)), draw(st.sampled_from(sides))
    where = draw(st.sampled_from(["corner", "edge", "anywhere", "scattered"]))
    if where == "scattered":
        count = draw(st.integers(2, 4))
        pixels = [
            (draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1)))
            for _ in range(count)
        ]
        return height, width, pixels
    h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    bottom, right = height - h, width - w
    if where == "corner":
        top, left = draw(st.sampled_from([(0, 0), (0, right), (bottom, 0), (bottom, right)]))
    elif where == "edge":
        side = draw(st.sampled_from(["top", "bottom", "left", "right"]))
        if side in ("top", "bottom"):
            top, left = (0 if side == "top" else bottom), draw(st.integers(0, right))
        else:
            top, left = draw(st.integers(0, bottom)), (0 if side == "left" else right)
    else:
        top, left = draw(st.integers(0, bottom)), draw(st.integers(0, right))
    return height, width, block(top, left, h, w)


# -- the reported cases -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "pixel"),
    [(224, (0, 0)), (224, (223, 223)), (224, (0, 223)), (224, (223, 0)), (160, (0, 0))],
)
@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_one_kept_corner_pixel_fills_the_image_with_its_value(size, pixel, kernels):
    # Closed form: the constant image satisfies every equation, and the system is
    # non-singular, so each removed pixel equals the kept one.
    images = mb.sample_images(2, size)
    keep = keep_mask(size, size, [pixel]).expand(2, 1, size, size)
    solution, infos = road_solution(images, keep, kernels=kernels)
    expected = images[:, :, pixel[0], pixel[1]][..., None, None].expand_as(images)
    assert float((solution - expected).abs().max()) <= 1e-5
    assert all(bool((info.error_estimate <= 1e-4).all()) for info in infos)
    # Such a system's float32 round-off floor is above tol: its residual went float64.
    assert all(bool(info.float64_residual.all()) for info in infos)


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_a_kept_2x2_corner_block_at_224(kernels):
    images = mb.sample_images(2, 224)
    keep = keep_mask(224, 224, block(0, 0, 2, 2)).expand(2, 1, 224, 224)
    solution, _ = road_solution(images, keep, kernels=kernels)
    reference, _ = road_solution(images.double(), keep, tol=1e-10)
    assert float((solution.double() - reference).abs().max()) <= ACCURACY
    for i in range(2):
        assert road_equation_error(solution[i].double().numpy(), keep[i, 0].numpy()) <= (
            EQUATION_TOL
        )


# -- drawn tiny kept regions ---------------------------------------------------------------


@given(region=tiny_kept_regions(8, 128), kernels=st.sampled_from(["native", "torch"]))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_tiny_kept_regions_match_scipy(region, kernels):
    height, width, pixels = region
    images = images_for(height, width)
    keep = keep_mask(height, width, pixels)
    solution, infos = road_solution(images, keep, kernels=kernels)
    assert all(bool((info.error_estimate <= 1e-4).all()) for info in infos)
    reference = scipy_road_solution(images[0].double().numpy(), keep[0, 0].numpy())
    assert float(np.abs(solution[0].double().numpy() - reference).max()) <= ACCURACY


@given(
    region=tiny_kept_regions(0, 0, sides=[160, 192, 224]),
    kernels=st.sampled_from(["native", "torch"]),
)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_tiny_kept_regions_on_large_images_satisfy_roads_equations(region, kernels):
    height, width, pixels = region
    images = images_for(height, width)
    keep = keep_mask(height, width, pixels)
    solution, infos = road_solution(images, keep, kernels=kernels)  # raises if unconverged
    assert all(bool((info.error_estimate <= 1e-4).all()) for info in infos)
    filled = solution[0].double().numpy()
    assert bool(np.isfinite(filled).all())
    assert road_equation_error(filled, keep[0, 0].numpy()) <= EQUATION_TOL
    # ROAD's equations alone barely see a smooth error in such an ill-conditioned
    # system; a float64 solve (no float32 round-off floor) pins the solution down.
    reference, _ = road_solution(images.double(), keep, tol=1e-10)
    assert float(np.abs(filled - reference[0].numpy()).max()) <= ACCURACY


# -- batching -------------------------------------------------------------------------------


def test_batch_mixing_tiny_kept_regions_with_ordinary_masks_is_bit_exact():
    size = 160
    generator = torch.Generator().manual_seed(40)
    keep = torch.cat(
        [
            keep_mask(size, size, [(0, 0)]),  # switches to a float64 residual
            torch.rand((1, 1, size, size), generator=generator) >= 0.5,  # does not
            keep_mask(size, size, block(157, 80, 3, 2)),
            ~keep_mask(size, size, block(40, 40, 80, 80)),  # a central hole
            keep_mask(size, size, [(5, 150), (150, 3)]),
        ]
    )
    images = mb.sample_images(5, size)
    for kernels in ("native", "torch"):
        impute = functools.partial(road_impute, kernels=kernels)
        together = impute(images, keep)
        alone = torch.cat([impute(images[i : i + 1], keep[i : i + 1]) for i in range(5)])
        order = [3, 0, 4, 2, 1]
        permuted = impute(images[order], keep[order])
        assert torch.equal(together, alone), kernels
        assert torch.equal(permuted, alone[order]), kernels
    # Samples 0, 1, 2 and 4 (whole-image boxes) are solved together, and with the torch
    # kernels only some of them switch to a float64 residual (the native kernel always
    # evaluates it in double).
    _, infos = road_solution(images, keep, kernels="torch")
    flags = [info.float64_residual.tolist() for info in infos]
    assert flags[0][:2] == [True, False]


# -- the safeguards -----------------------------------------------------------------------


def test_ordinary_masks_keep_the_float32_residual():
    # The torch kernels' speed in the common case: no sample of these needs the float64
    # residual.
    generator = torch.Generator().manual_seed(41)
    images = mb.sample_images(3, 224)
    keep = torch.cat(
        [
            torch.rand((1, 1, 224, 224), generator=generator) >= 0.5,
            ~keep_mask(224, 224, block(56, 56, 112, 112)),
            (torch.rand((1, 1, 14, 14), generator=generator) >= 0.5)
            .repeat_interleave(16, dim=2)
            .repeat_interleave(16, dim=3),
        ]
    )
    _, infos = road_solution(images, keep, kernels="torch")
    assert not any(bool(info.float64_residual.any()) for info in infos)
    assert sum(info.restarts for info in infos) == 0


def test_stagnation_alone_still_rescues_a_corner_pixel(monkeypatch):
    # Without the round-off probe, the stagnation check must catch the same system:
    # switch it to a float64 residual and restart CG, instead of diverging.
    monkeypatch.setattr(mg, "_FLOOR_FRACTION", float("inf"))
    images = mb.sample_images(2, 224)
    keep = keep_mask(224, 224, [(0, 0)]).expand(2, 1, 224, 224)
    solution, infos = road_solution(images, keep, kernels="torch")
    expected = images[:, :, :1, :1].expand_as(images)
    assert float((solution - expected).abs().max()) <= ACCURACY
    assert sum(info.restarts for info in infos) > 0


def test_unreachable_tolerance_raises_instead_of_diverging():
    # float64 round-off floors this system near 1e-13: tol 1e-15 cannot be met. CG
    # restarts keep the iterate bounded, so the error is "did not converge" with a small
    # estimate, not a non-finite breakdown.
    images = mb.sample_images(1, 224).double()
    keep = keep_mask(224, 224, [(0, 0)])
    with pytest.raises(RoadConvergenceError, match="did not converge") as caught:
        road_solution(images, keep, tol=1e-15, max_iter=40)
    estimate = float(str(caught.value).split("estimate ")[1].split(" ")[0])
    assert estimate < 1e-9
