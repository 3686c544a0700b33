"""Fit of the entropy–performance law ``R = −a·exp(H) + b`` with intervals.

The law (Cui et al. 2025, §1 of PAPER.md) is *linear in (a, b)* once ``x = exp(H)`` is
computed, so the least-squares fit is ordinary linear regression of ``R`` on ``x``, solved in
closed form (exact, microseconds). The robust variants (soft-L1, Huber) down-weight outlier
evaluations; they are solved by ``scipy.optimize.least_squares`` from the least-squares start.

Intervals (the paper states no fitting method; ours is documented in docs/law.md):

- ``analytic``: covariance from the Jacobian ``J = [−x, 1]`` of the model. Least squares:
  ``cov = σ̂²·(JᵀJ)⁻¹`` with ``σ̂² = RSS/(P − 2)``; robust: Huber's sandwich estimate
  ``cov = K²·[Σψ(r)²/(P − 2)]/mean(ψ'(r))²·(JᵀJ)⁻¹`` (Huber 1981, §7.6), which reduces to the
  former for the quadratic loss. Intervals use Student's t with ``P − 2`` degrees of freedom,
  exact for Gaussian noise. The ceiling ``b − a`` (the score at ``H = 0``) gets
  ``var(b − a) = var a + var b − 2·cov(a, b)`` (delta method; exact here, the map is linear).
- ``bootstrap``: pairs bootstrap (resample the (H, R) points with replacement, seeded), refit,
  percentile intervals; robust to heteroscedastic noise such as binomial accuracy noise.

Shapes: ``P`` fitted (entropy, score) points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from entropyrl.law._data import (
    LawDataError,
    as_points,
    check_choice,
    check_enough,
    check_level,
    check_same_length,
    t_quantile,
)

Method = Literal["ols", "soft_l1", "huber"]
IntervalMethod = Literal["analytic", "bootstrap"]
METHODS: tuple[str, ...] = ("ols", "soft_l1", "huber")
INTERVAL_METHODS: tuple[str, ...] = ("analytic", "bootstrap")

# Huber's tuning constant: 95% efficiency under Gaussian noise (Huber 1981). The robust losses
# switch from quadratic to linear at f_scale = 1.345·σ̂, σ̂ = 1.4826·MAD of the OLS residuals.
HUBER_TUNING = 1.345
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, eq=False)
class LawFit:
    """A fitted law ``R = −a·exp(H) + b``; intervals at ``level`` (two-sided)."""

    a: float
    b: float
    cov: np.ndarray  # [2, 2] covariance of (a, b)
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    ceiling: float  # b − a: the score the law predicts at zero entropy
    ceiling_ci: tuple[float, float]
    r2: float  # 1 − RSS/TSS over the fitted points (NaN if the scores are constant)
    rmse: float  # sqrt(RSS/P)
    sigma: float  # noise scale: sqrt(RSS/(P−2)); robust fits: 1.4826·MAD of the residuals
    n_points: int
    method: str
    interval_method: str
    level: float
    f_scale: float | None  # robust loss threshold (score units); None for least squares
    n_boot: int  # bootstrap resamples used (0 for analytic intervals)

    @property
    def a_se(self) -> float:
        """Standard error of ``a``."""
        return float(np.sqrt(self.cov[0, 0]))

    @property
    def b_se(self) -> float:
        """Standard error of ``b``."""
        return float(np.sqrt(self.cov[1, 1]))

    @property
    def ceiling_se(self) -> float:
        """Standard error of ``b − a``: ``sqrt(var a + var b − 2·cov(a, b))``."""
        var = self.cov[0, 0] + self.cov[1, 1] - 2.0 * self.cov[0, 1]
        return float(np.sqrt(max(var, 0.0)))

    def predict(self, entropy: Any) -> np.ndarray:
        """Score the law predicts at each entropy: ``−a·exp(H) + b``; shape of ``entropy``."""
        return -self.a * np.exp(np.asarray(entropy, dtype=np.float64)) + self.b

    def predict_se(self, entropy: Any) -> np.ndarray:
        """Standard error of :meth:`predict` from ``cov`` (the fitted curve, not new points)."""
        x = np.exp(np.asarray(entropy, dtype=np.float64))
        var = x * x * self.cov[0, 0] + self.cov[1, 1] - 2.0 * x * self.cov[0, 1]
        return np.sqrt(np.maximum(var, 0.0))


def fit_law(
    entropy: Any,
    score: Any,
    *,
    method: Method = "ols",
    intervals: IntervalMethod = "analytic",
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    f_scale: float | None = None,
) -> LawFit:
    """Fit ``R = −a·exp(H) + b`` to paired points.

    Args:
        entropy: ``[P]`` mean token entropy ``H`` (nats) at each evaluation.
        score: ``[P]`` score ``R`` (e.g. validation accuracy as a fraction) at the same steps.
        method: ``"ols"`` (least squares, closed form), ``"soft_l1"`` or ``"huber"`` (robust).
        intervals: ``"analytic"`` (Jacobian covariance, Student t) or ``"bootstrap"``.
        level: two-sided confidence level of the intervals.
        n_boot: bootstrap resamples (``intervals="bootstrap"`` only).
        seed: seed of the bootstrap resampling.
        f_scale: robust loss threshold in score units; default ``1.345·1.4826·MAD`` of the
            least-squares residuals.

    Raises:
        LawDataError: fewer than 3 points, NaN/inf values, or a constant entropy.
    """
    check_choice("method", method, METHODS)
    check_choice("intervals", intervals, INTERVAL_METHODS)
    check_level(level)
    h = as_points("entropy", entropy)
    y = as_points("score", score)
    n = check_same_length(entropy=h, score=y)
    check_enough("law fit", n, 3, "the law has 2 parameters and its intervals need a third "
                 "point; log more evaluations (or align more of them to entropy steps)")
    with np.errstate(over="ignore"):
        x = np.exp(h)
    if not np.isfinite(x).all():
        raise LawDataError("entropy: exp(H) overflows; H must be an entropy in nats (< 700)")
    if np.ptp(x) <= 1e-12 * np.abs(x).max():
        raise LawDataError(
            f"entropy: all {n} points have the same entropy ({h[0]:.6g}), so a and b cannot "
            "be separated; the law needs evaluations at different entropies"
        )
    a, b = _ols(x, y)
    f: float | None = None
    if method != "ols":
        f = f_scale if f_scale is not None else _default_f_scale(y - (b - a * x), y)
        a, b = _robust(x, y, method, f, (a, b))
    resid = y - (b - a * x)
    rss = float(resid @ resid)
    if method == "ols":
        sigma = float(np.sqrt(rss / (n - 2)))
    else:
        sigma = float(MAD_TO_SIGMA * np.median(np.abs(resid - np.median(resid))))
    if intervals == "analytic":
        cov = _sandwich_cov(x, resid, method, f)
        a_ci, b_ci, c_ci = _t_intervals(a, b, cov, n - 2, level)
        used = 0
    else:
        samples = _bootstrap(x, y, method, f, (a, b), n_boot, seed)
        cov = np.cov(samples, rowvar=False)
        a_ci, b_ci, c_ci = _percentile_intervals(samples, level)
        used = len(samples)
    tss = float(((y - y.mean()) ** 2).sum())
    return LawFit(
        a=float(a), b=float(b), cov=cov, a_ci=a_ci, b_ci=b_ci,
        ceiling=float(b - a), ceiling_ci=c_ci,
        r2=1.0 - rss / tss if tss > 0 else float("nan"),
        rmse=float(np.sqrt(rss / n)), sigma=sigma, n_points=n, method=method,
        interval_method=intervals, level=float(level), f_scale=f, n_boot=used,
    )


def _ols_many(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form least squares of ``y = b − a·x`` for each row of ``x, y`` [K, P].

    Centred sums (not the normal equations) keep it accurate when ``exp(H)`` varies little.
    """
    xm = x.mean(axis=-1, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    dx = x - xm
    sxx = (dx * dx).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (dx * (y - ym)).sum(axis=-1) / sxx  # dR/dx = −a
    intercept = ym[..., 0] - slope * xm[..., 0]
    return -slope, intercept


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a, b = _ols_many(x[None], y[None])
    return float(a[0]), float(b[0])


def _default_f_scale(resid: np.ndarray, y: np.ndarray) -> float:
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid))))
    # Floor for (mostly) exact data, where the MAD is 0: the loss is then ~L1.
    return max(HUBER_TUNING * sigma, 1e-9 * max(float(np.ptp(y)), 1.0))


def _robust(
    x: np.ndarray, y: np.ndarray, loss: str, f: float, start: tuple[float, float]
) -> tuple[float, float]:
    """Minimise ``Σ f²·ρ((r_i/f)²)/2``, ``r = y − (b − a·x)``, with scipy's robust losses."""
    from scipy.optimize import least_squares

    jac = np.column_stack([x, -np.ones_like(x)])  # d r / d (a, b)

    def resid(p: np.ndarray) -> np.ndarray:
        return y - (p[1] - p[0] * x)

    res = least_squares(resid, np.asarray(start), jac=lambda p: jac, loss=loss, f_scale=f,
                        xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return float(res.x[0]), float(res.x[1])


def _psi(r: np.ndarray, method: str, f: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Influence ``ψ(r) = ρ'(z)·r`` and its slope ``ψ'(r) = ρ'(z) + 2z·ρ''(z)``, ``z = (r/f)²``.

    ``ρ`` is scipy's loss on ``z``: soft-L1 ``2(√(1+z) − 1)``, Huber ``z`` (z ≤ 1) else
    ``2√z − 1``; least squares ``z`` (ψ = r, ψ' = 1).
    """
    if method == "ols" or f is None:
        return r, np.ones_like(r)
    z = (r / f) ** 2
    if method == "soft_l1":
        d1 = 1.0 / np.sqrt(1.0 + z)
        d2 = -0.5 * (1.0 + z) ** -1.5
    else:  # huber
        inside = z <= 1.0
        zz = np.maximum(z, 1.0)
        d1 = np.where(inside, 1.0, 1.0 / np.sqrt(zz))
        d2 = np.where(inside, 0.0, -0.5 * zz**-1.5)
    return d1 * r, d1 + 2.0 * z * d2


def _sandwich_cov(x: np.ndarray, resid: np.ndarray, method: str, f: float | None) -> np.ndarray:
    """Covariance of (a, b): Huber's estimate ``K²·s²/m²·(JᵀJ)⁻¹`` (= σ̂²(JᵀJ)⁻¹ for OLS)."""
    n, p = len(x), 2
    psi, dpsi = _psi(resid, method, f)
    m = float(dpsi.mean())
    if m <= 0:
        raise LawDataError("robust fit: no point lies inside the loss threshold; "
                           "pass a larger f_scale or use least squares")
    k = 1.0 + p / n * float(dpsi.var()) / m**2  # Huber's small-sample correction
    s2 = float(psi @ psi) / (n - p)
    # (JᵀJ)⁻¹ for J = [−x, 1], written with centred sums for accuracy.
    xm = float(x.mean())
    sxx = float(((x - xm) ** 2).sum())
    inv = np.array([[1.0 / sxx, xm / sxx], [xm / sxx, 1.0 / n + xm * xm / sxx]])
    return (k * k * s2 / (m * m)) * inv


def _t_intervals(
    a: float, b: float, cov: np.ndarray, dof: int, level: float
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    q = t_quantile(level, dof)
    c_var = max(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], 0.0)

    def around(v: float, var: float) -> tuple[float, float]:
        half = q * float(np.sqrt(max(var, 0.0)))
        return (float(v - half), float(v + half))

    return around(a, cov[0, 0]), around(b, cov[1, 1]), around(b - a, c_var)


def _bootstrap(
    x: np.ndarray, y: np.ndarray, method: str, f: float | None,
    start: tuple[float, float], n_boot: int, seed: int,
) -> np.ndarray:
    """``[n_boot', 2]`` bootstrap replicates of (a, b); degenerate resamples are dropped."""
    if not (isinstance(n_boot, int) and n_boot >= 50):
        raise ValueError(f"n_boot: expected an integer >= 50, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    n = len(x)
    out = np.empty((n_boot, 2))
    chunk = max(1, 2_000_000 // n)  # bounds memory: chunk × P indices at a time
    for start_row in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start_row)
        idx = rng.integers(0, n, size=(rows, n))
        xs, ys = x[idx], y[idx]
        a, b = _ols_many(xs, ys)
        if method != "ols" and f is not None:
            for i in range(rows):
                if np.isfinite(a[i]):
                    a[i], b[i] = _robust(xs[i], ys[i], method, f, start)
        out[start_row:start_row + rows, 0] = a
        out[start_row:start_row + rows, 1] = b
    good = np.isfinite(out).all(axis=1)
    if good.sum() < n_boot // 2:
        raise LawDataError(
            f"bootstrap: {n_boot - int(good.sum())} of {n_boot} resamples had a constant "
            "entropy; too few distinct points for a bootstrap, use analytic intervals"
        )
    return out[good]


def _percentile_intervals(
    samples: np.ndarray, level: float
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    q = [0.5 - level / 2.0, 0.5 + level / 2.0]
    cols = np.column_stack([samples, samples[:, 1] - samples[:, 0]])  # a, b, b − a
    lo, hi = np.quantile(cols, q, axis=0)
    return (
        (float(lo[0]), float(hi[0])),
        (float(lo[1]), float(hi[1])),
        (float(lo[2]), float(hi[2])),
    )
