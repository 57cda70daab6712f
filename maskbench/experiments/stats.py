"""Bootstrap confidence intervals over images (seeded, percentile, 95% by default).

Every interval in maskbench's experiment reports comes from here: resample the *images*
with replacement ``reps`` times, recompute the statistic on each resample, and take the
2.5th and 97.5th percentiles of the resampled values.

A resample is represented by its *counts*: how often each image was drawn. A statistic
is a function ``statistic(values, weights)`` of per-image values (..., n) and weights
(R, n) that returns (..., R): the statistic of each weighted sample. The point value is
the statistic with all weights 1. One count matrix (from one seed) is shared by every
condition of a run, so differences and ratios between strategies are *paired*: both
sides are computed on the same resampled images.

Two interval methods:

* ``percentile`` (the default, for means, ratios and differences): the 2.5th and 97.5th
  percentiles of the resampled statistic;
* ``normal`` (for the predicted-class entropy): the point value +- 1.96 bootstrap
  standard errors. A plug-in entropy is biased low on a resample (drawing images with
  replacement repeats some and so merges their predictions), often so much that the
  percentile interval would lie entirely below the point value; the normal interval
  keeps the bootstrap's measure of spread but is centred on the estimate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Default number of bootstrap resamples.
DEFAULT_REPS = 1000
#: Default confidence level.
DEFAULT_LEVEL = 0.95

#: ``statistic(values (..., n), weights (R, n)) -> (..., R)``.
Statistic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Bootstrap:
    """A seeded percentile bootstrap over ``n`` images.

    Attributes:
        n: number of images.
        reps: number of resamples.
        seed: seed of the resampling.
        level: confidence level of the interval.
    """

    n: int
    reps: int = DEFAULT_REPS
    seed: int = 0
    level: float = DEFAULT_LEVEL

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"a bootstrap needs at least one image, got n={self.n}")
        if self.reps < 1:
            raise ValueError(f"reps must be >= 1, got {self.reps}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")

    @functools.cached_property
    def counts(self) -> torch.Tensor:
        """(reps, n) float64: how often each image is drawn in each resample."""
        generator = torch.Generator().manual_seed(int(self.seed))
        draws = torch.randint(0, self.n, (self.reps, self.n), generator=generator)
        counts = torch.zeros(self.reps, self.n, dtype=torch.float64)
        counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
        return counts

    def interval(self, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Percentile interval of bootstrap ``draws`` (..., reps): (low, high).

        NaN draws (statistic undefined on that resample) are left out.
        """
        alpha = (1.0 - self.level) / 2.0
        q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
        bounds = torch.nanquantile(draws.to(torch.float64), q, dim=-1)
        return bounds[0], bounds[1]

    def normal_interval(
        self, point: torch.Tensor, draws: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``point`` +- z * (standard deviation of the ``draws``), NaN draws left out."""
        draws = draws.to(torch.float64)
        valid = ~torch.isnan(draws)
        count = valid.sum(dim=-1).clamp(min=2)
        mean = torch.where(valid, draws, 0.0).sum(dim=-1) / count
        sq = torch.where(valid, (draws - mean[..., None]) ** 2, 0.0).sum(dim=-1)
        sd = torch.sqrt(sq / (count - 1))
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + self.level / 2))
        return point - z.double() * sd, point + z.double() * sd

    def estimate(
        self, values: torch.Tensor, statistic: Statistic, *, method: str = "percentile"
    ) -> dict[str, torch.Tensor]:
        """Point value, interval and image count of ``statistic`` on ``values`` (..., n).

        ``method`` is ``"percentile"`` or ``"normal"`` (see the module docstring).
        Returns a dict of tensors shaped like ``values`` without its last dimension:
        ``value``, ``ci_low``, ``ci_high`` and ``n`` (images with a defined value).
        """
        if values.shape[-1] != self.n:
            raise ValueError(f"values have {values.shape[-1]} images, the bootstrap has {self.n}")
        if method not in ("percentile", "normal"):
            raise ValueError(f"method must be 'percentile' or 'normal', got {method!r}")
        ones = torch.ones(1, self.n, dtype=torch.float64)
        point = statistic(values, ones)[..., 0]
        draws = statistic(values, self.counts)
        if method == "percentile":
            low, high = self.interval(draws)
        else:
            low, high = self.normal_interval(point.to(torch.float64), draws)
        if values.is_floating_point() and values.shape[:-1] == point.shape:
            n = (~torch.isnan(values)).sum(dim=-1)
        else:
            n = torch.full(point.shape, self.n, dtype=torch.int64)
        return {"value": point, "ci_low": low, "ci_high": high, "n": n}


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over images: (..., n) values, (R, n) weights -> (..., R).

    NaN values (undefined for that image) are left out; a sample with no defined value
    gives NaN.
    """
    values = values.to(torch.float64)
    weights = weights.to(torch.float64)
    valid = ~torch.isnan(values)
    total = torch.where(valid, values, 0.0) @ weights.T
    count = valid.to(torch.float64) @ weights.T
    return torch.where(count > 0, total / count.clamp(min=1e-300), torch.nan)


def mean_estimate(values: torch.Tensor, boot: Bootstrap) -> dict[str, torch.Tensor]:
    """Mean over images (last dimension) with its bootstrap interval."""
    return boot.estimate(values, weighted_mean)


def ratio_of_means_estimate(
    numerator: torch.Tensor, denominator: torch.Tensor, boot: Bootstrap
) -> dict[str, torch.Tensor]:
    """mean(numerator) / mean(denominator) over images, with a paired bootstrap interval.

    Both are (..., n) and resampled together. A (re)sample whose denominator mean is 0
    gives NaN (left out of the interval; a NaN point value is reported as missing).
    """
    stacked = torch.stack([numerator, denominator]).to(torch.float64)

    def ratio(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        means = weighted_mean(values, weights)
        num, den = means[0], means[1]
        return torch.where(den > 0, num / den.clamp(min=1e-300), torch.nan)

    return boot.estimate(stacked, ratio)


def difference_estimate(
    first: torch.Tensor,
    second: torch.Tensor,
    boot: Bootstrap,
    statistic: Statistic = weighted_mean,
) -> dict[str, torch.Tensor]:
    """statistic(first) - statistic(second), paired over images, with its interval."""
    stacked = torch.stack([first, second]).to(torch.float64)

    def difference(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        both = statistic(values, weights)
        return both[0] - both[1]

    return boot.estimate(stacked, difference)


def as_estimate(estimate: dict[str, torch.Tensor], index: tuple[int, ...] = ()) -> dict:
    """One entry of a batched estimate as plain Python numbers (NaN becomes None)."""
    out: dict[str, float | int | None] = {}
    for key, tensor in estimate.items():
        item = tensor[index].item()
        if key == "n":
            out[key] = int(item)
        else:
            out[key] = None if item != item else float(item)  # NaN -> None
    return out
