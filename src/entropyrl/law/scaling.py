"""Cross-size scaling of the law's coefficients (PAPER.md §1).

For one task and model family, ``a`` and ``b`` are log-linear in the non-embedding parameter
count ``N`` (Qwen2.5 0.5B–32B in the paper):

    a(N) = α_a + β_a·log10 N,    b(N) = α_b + β_b·log10 N.

Each line is fitted by least squares over the ``M`` sizes. The ceiling ``b − a`` is then
log-linear too, and fitting ``c_i = b_i − a_i`` directly gives exactly ``b(N) − a(N)`` while
its residuals carry the real correlation of ``a_i`` and ``b_i`` (no cross-covariance needed).
Intervals at a new size are Student-t *prediction* intervals (``M − 2`` degrees of freedom):
another model's coefficients scatter around the line like the fitted ones do, so
``var = s²·(1 + 1/M + (x* − x̄)²/Sxx)``, ``x = log10 N``. With 3 sizes there is one degree of
freedom and the intervals are wide: that is the honest answer.

Shapes: ``M`` model sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import (
    LawDataError,
    as_points,
    check_enough,
    check_level,
    check_same_length,
    t_quantile,
)


@dataclass(frozen=True)
class LogLinear:
    """``y = intercept + slope·log10 N`` fitted over ``M`` sizes."""

    intercept: float
    slope: float
    slope_ci: tuple[float, float]
    sigma: float  # residual standard deviation, sqrt(RSS/(M − 2))
    x_mean: float  # mean of log10 N over the fitted sizes
    sxx: float  # Σ (log10 N − x_mean)²
    n: int
    level: float

    def predict(self, n_params: Any) -> np.ndarray:
        """Value of the line at ``n_params``."""
        return self.intercept + self.slope * np.log10(np.asarray(n_params, dtype=np.float64))

    def interval(self, n_params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Prediction interval ``(low, high)`` at ``n_params`` for a new model of that size."""
        x = np.log10(np.asarray(n_params, dtype=np.float64))
        q = t_quantile(self.level, self.n - 2)
        half = q * self.sigma * np.sqrt(1.0 + 1.0 / self.n + (x - self.x_mean) ** 2 / self.sxx)
        centre = self.predict(n_params)
        return centre - half, centre + half


@dataclass(frozen=True)
class ScalingPrediction:
    """Extrapolated coefficients and ceiling of a model with ``n_params`` parameters."""

    n_params: float
    a: float
    a_ci: tuple[float, float]
    b: float
    b_ci: tuple[float, float]
    ceiling: float
    ceiling_ci: tuple[float, float]


@dataclass(frozen=True, eq=False)
class ScalingFit:
    """Log-linear fits of ``a``, ``b`` and ``b − a`` against parameter count."""

    n_params: np.ndarray  # [M]
    a_values: np.ndarray  # [M] the fitted a of each run
    b_values: np.ndarray  # [M] the fitted b of each run
    a: LogLinear
    b: LogLinear
    ceiling: LogLinear

    def extrapolate(self, n_params: float) -> ScalingPrediction:
        """Predict a, b and the ceiling of a model of ``n_params`` non-embedding parameters."""
        if not (np.isfinite(n_params) and n_params > 0):
            raise LawDataError(f"n_params: expected a positive parameter count, got {n_params!r}")

        def one(line: LogLinear) -> tuple[float, tuple[float, float]]:
            lo, hi = line.interval(n_params)
            return float(line.predict(n_params)), (float(lo), float(hi))

        (a, a_ci), (b, b_ci), (c, c_ci) = one(self.a), one(self.b), one(self.ceiling)
        return ScalingPrediction(float(n_params), a, a_ci, b, b_ci, c, c_ci)


def _line(x: np.ndarray, y: np.ndarray, level: float) -> LogLinear:
    n = len(x)
    xm, ym = float(x.mean()), float(y.mean())
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = ym - slope * xm
    resid = y - (intercept + slope * x)
    sigma = float(np.sqrt(resid @ resid / (n - 2)))
    half = t_quantile(level, n - 2) * sigma / np.sqrt(sxx)
    return LogLinear(intercept, slope, (slope - half, slope + half), sigma, xm, sxx, n,
                     float(level))


def fit_scaling(n_params: Any, a: Any, b: Any, *, level: float = 0.95) -> ScalingFit:
    """Fit ``a``, ``b`` and ``b − a`` log-linearly in the parameter count.

    Args:
        n_params: ``[M]`` non-embedding parameter counts (one per fitted run).
        a: ``[M]`` fitted ``a`` of each run.
        b: ``[M]`` fitted ``b`` of each run.
        level: two-sided level of the intervals.

    Raises:
        LawDataError: fewer than 3 sizes, fewer than 2 distinct sizes, a size <= 0, NaN/inf.
    """
    check_level(level)
    n = as_points("n_params", n_params)
    av, bv = as_points("a", a), as_points("b", b)
    m = check_same_length(n_params=n, a=av, b=bv)
    check_enough("cross-size scaling", m, 3, "fit runs of at least 3 model sizes (2 define a "
                 "line but leave nothing to estimate its uncertainty)")
    if (n <= 0).any():
        raise LawDataError(f"n_params: parameter counts must be positive, got {n.tolist()}")
    x = np.log10(n)
    if np.ptp(x) == 0:
        raise LawDataError("n_params: all runs have the same size; scaling needs several sizes")
    return ScalingFit(n_params=n, a_values=av, b_values=bv, a=_line(x, av, level),
                      b=_line(x, bv, level), ceiling=_line(x, bv - av, level))
