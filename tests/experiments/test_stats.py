"""The seeded bootstrap: reproducible, paired, and equal to explicit resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maskbench.experiments.stats import (
    Bootstrap,
    as_estimate,
    difference_estimate,
    mean_estimate,
    ratio_of_means_estimate,
    weighted_mean,
)


def test_counts_are_resamples_of_n_images_and_seeded():
    boot = Bootstrap(7, reps=50, seed=3)
    assert boot.counts.shape == (50, 7)
    assert torch.all(boot.counts.sum(1) == 7)
    assert torch.equal(boot.counts, Bootstrap(7, reps=50, seed=3).counts)
    assert not torch.equal(boot.counts, Bootstrap(7, reps=50, seed=4).counts)


def test_weighted_mean_equals_mean_of_explicit_resample():
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    weights = torch.tensor([[2.0, 0.0, 1.0, 1.0]])  # resample {0, 0, 2, 3}
    assert weighted_mean(values, weights).item() == pytest.approx((1 + 1 + 4 + 8) / 4)


def test_weighted_mean_skips_nan():
    values = torch.tensor([1.0, float("nan"), 3.0])
    assert weighted_mean(values, torch.ones(1, 3)).item() == 2.0


def test_constant_values_give_a_zero_width_interval():
    est = as_estimate(mean_estimate(torch.full((10,), 0.3), Bootstrap(10, reps=100)))
    assert est == {
        "value": pytest.approx(0.3),
        "ci_low": pytest.approx(0.3),
        "ci_high": pytest.approx(0.3),
        "n": 10,
    }


def test_interval_contains_the_mean_and_has_about_the_right_width():
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(400, generator=generator)
    est = as_estimate(mean_estimate(values, Bootstrap(400, reps=2000, seed=1)))
    assert est["ci_low"] < est["value"] < est["ci_high"]
    # standard error of a U(0,1) mean over 400 images is 0.2887/20 = 0.0144; 95% ~ +-0.028
    assert est["ci_high"] - est["ci_low"] == pytest.approx(2 * 1.96 * 0.2887 / 20, rel=0.15)


def test_ratio_and_paired_difference():
    num = torch.tensor([1.0, 0.0, 1.0, 1.0])
    den = torch.tensor([1.0, 1.0, 1.0, 1.0])
    boot = Bootstrap(4, reps=200)
    ratio = as_estimate(ratio_of_means_estimate(num, den, boot))
    assert ratio["value"] == pytest.approx(0.75)
    # a paired difference of identical vectors is exactly 0 on every resample
    same = as_estimate(difference_estimate(num, num, boot))
    assert same["value"] == same["ci_low"] == same["ci_high"] == 0.0


def test_ratio_with_zero_denominator_is_missing():
    est = as_estimate(ratio_of_means_estimate(torch.ones(3), torch.zeros(3), Bootstrap(3)))
    assert est["value"] is None and est["ci_low"] is None


def test_bad_arguments():
    with pytest.raises(ValueError):
        Bootstrap(0)
    with pytest.raises(ValueError):
        Bootstrap(3, level=1.5)
    with pytest.raises(ValueError, match="images"):
        mean_estimate(torch.ones(4), Bootstrap(3))


def test_normal_interval_is_centred_on_the_point_value():
    from maskbench.experiments.metrics import entropy_statistic

    predicted = torch.arange(9).repeat(2)  # 18 images spread evenly over 9 classes
    boot = Bootstrap(18, reps=300, seed=0)
    statistic = entropy_statistic(9)
    est = as_estimate(boot.estimate(predicted, statistic, method="normal"))
    assert est["value"] == pytest.approx(np.log2(9))
    # resampled entropies are biased low: the percentile interval misses the estimate ...
    pct = as_estimate(boot.estimate(predicted, statistic))
    assert pct["ci_high"] < est["value"]
    # ... the normal interval is value +- 1.96 bootstrap standard errors
    draws = statistic(predicted, boot.counts)
    half = 1.959964 * draws.std().item()
    assert est["ci_low"] == pytest.approx(est["value"] - half, rel=1e-4)
    assert est["ci_high"] == pytest.approx(est["value"] + half, rel=1e-4)
    with pytest.raises(ValueError, match="method"):
        boot.estimate(predicted, statistic, method="bca")
