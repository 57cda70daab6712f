"""LIME on torch: kernel, ridge, recovery of a known linear model, scoring, shared design."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mbexp_models import SegmentLinearModel
from scipy.spatial.distance import cosine as scipy_cosine_distance

import maskbench as mb
from maskbench.experiments.lime import (
    cosine_similarity,
    explain,
    kernel_weights,
    lime_design,
    lime_evaluation,
    object_mass,
    weighted_ridge,
    win_shares,
)
from maskbench.strategies.constant import Black


def test_design_is_seeded_with_the_unmasked_image_first():
    design = lime_design(20, 300, seed=5)
    assert design.shape == (300, 20) and design.dtype == torch.bool
    assert bool(design[0].all())
    assert torch.equal(design, lime_design(20, 300, seed=5))
    assert not torch.equal(design, lime_design(20, 300, seed=6))
    assert design[1:].float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_kernel_is_limes_on_cosine_distance():
    design = lime_design(10, 50, seed=0)
    weights = kernel_weights(design)
    ones = np.ones(10)
    for row, weight in zip(design.numpy().astype(float), weights.tolist(), strict=True):
        d = scipy_cosine_distance(row, ones)
        assert weight == pytest.approx(np.sqrt(np.exp(-(d**2) / 0.25**2)), abs=1e-12)
    # an all-removed row has cosine distance 1 (as scikit-learn treats the zero vector)
    zero = torch.zeros(1, 10, dtype=torch.bool)
    assert kernel_weights(zero).item() == pytest.approx(np.sqrt(np.exp(-1 / 0.25**2)))


def test_weighted_ridge_matches_the_augmented_least_squares_solution():
    generator = torch.Generator().manual_seed(1)
    x = (torch.rand(60, 6, generator=generator) > 0.5).double()
    y = torch.randn(60, generator=generator, dtype=torch.float64)
    w = torch.rand(60, generator=generator, dtype=torch.float64) + 0.1
    alpha = 1.0
    beta, intercept = weighted_ridge(x, y, w, alpha)
    # min sum w (y - b - x beta)^2 + alpha |beta|^2, intercept unpenalised
    root = np.sqrt(w.numpy())[:, None]
    design = np.hstack([np.ones((60, 1)), x.numpy()]) * root
    penalty = np.hstack([np.zeros((6, 1)), np.sqrt(alpha) * np.eye(6)])
    solution = np.linalg.lstsq(
        np.vstack([design, penalty]),
        np.concatenate([y.numpy() * root[:, 0], np.zeros(6)]),
        rcond=None,
    )[0]
    assert intercept.item() == pytest.approx(solution[0], abs=1e-10)
    assert np.allclose(beta.numpy(), solution[1:], atol=1e-10)


def test_lime_recovers_a_linear_model_up_to_ridge_shrinkage():
    """The model's logit is exactly bias + sum_s w_s z_s under the black fill.

    For targets exactly linear in the design, weighted ridge returns
    beta = (A + alpha I)^-1 A w with A = Xc^T W Xc (Xc centred by the weighted mean), so
    |beta - w| = |alpha (A + alpha I)^-1 w| <= alpha / (lambda_min(A) + alpha) * |w|.
    That bound (plus float32 rounding of the model's output) is the test's tolerance.
    """
    segments = mb.patch_grid((32, 32), 8)  # 16 segments
    generator = torch.Generator().manual_seed(0)
    true_w = torch.randn(16, generator=generator, dtype=torch.float64)
    model = mb.wrap_model(
        SegmentLinearModel(segments, true_w, bias=0.3), mean=(0, 0, 0), std=(1, 1, 1)
    )
    image = torch.ones(3, 32, 32)
    design = lime_design(16, 512, seed=0)
    beta = explain(model, image, segments, mb.get_strategy("black"), 0, design, output="logit")

    x = design.double()
    w = kernel_weights(design)
    xc = x - (w[:, None] * x).sum(0) / w.sum()
    gram = xc.T @ (w[:, None] * xc)
    lam_min = torch.linalg.eigvalsh(gram).min().item()
    shrunk = torch.linalg.solve(gram + torch.eye(16, dtype=torch.float64), gram @ true_w)
    assert torch.allclose(beta, shrunk, atol=1e-5)  # exactly the ridge solution
    bound = 1.0 / (lam_min + 1.0) * true_w.norm().item()
    assert (beta - true_w).norm().item() <= bound + 1e-5
    assert bound < 0.1 * true_w.norm().item()  # and that bound is tight enough to matter
    assert cosine_similarity(beta, true_w) > 0.99


def test_object_mass_and_cosine():
    segments = mb.patch_grid((4, 4), 2)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0:2, 0:2] = True  # segment 0 is the object; mean of the mask is 1/4
    mass = object_mass(segments, mask)
    assert mass.tolist() == [3.0, -1.0, -1.0, -1.0]
    assert cosine_similarity(mass, mass) == pytest.approx(1.0)
    assert cosine_similarity(mass, -mass) == pytest.approx(-1.0)
    assert cosine_similarity(torch.zeros(4), mass) == 0.0


def test_win_shares_split_ties():
    scores = torch.tensor([[0.5, 0.2], [0.5, 0.1], [0.1, 0.3]], dtype=torch.float64)
    shares = win_shares(scores)
    assert shares.tolist() == [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]
    assert torch.allclose(shares.sum(0), torch.ones(2, dtype=torch.float64))


class _Recording(Black):
    """The black fill, remembering every keep-mask it was given."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.seen: list[torch.Tensor] = []

    def compute_fill(self, images, keep):
        self.seen.append(keep.clone())
        return super().compute_fill(images, keep)


def test_every_strategy_sees_the_same_design(tiny_model, bench_data):
    first, second = _Recording("first"), _Recording("second")
    data = bench_data.head(2)
    result = lime_evaluation(tiny_model, data, [first, second], n_samples=16, bootstrap_reps=20)
    assert len(first.seen) == len(second.seen) == 2
    for a, b in zip(first.seen, second.seen, strict=True):
        assert torch.equal(a, b)
    # same masks, same deterministic fill: identical explanations, so the wins are split
    assert result.value(strategy="first", metric="score")["value"] == pytest.approx(
        result.value(strategy="second", metric="score")["value"]
    )
    assert result.value(strategy="first", metric="win_share")["value"] == pytest.approx(0.5)
    assert result.config["kernel_width"] == 0.25 and result.config["ridge_alpha"] == 1.0


def test_lime_needs_masks_and_valid_options(tiny_model, bench_data):
    from dataclasses import replace

    from maskbench.experiments.data import DataError

    with pytest.raises(DataError, match="object masks"):
        lime_evaluation(tiny_model, replace(bench_data, objects=None), ["black"])
    with pytest.raises(ValueError, match="target"):
        lime_evaluation(tiny_model, bench_data, ["black"], target="best")
