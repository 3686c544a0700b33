"""Entropy trajectory model for forecasting steps not yet run.

Policy entropy collapses fast and then flattens (PAPER.md §1: 73% of the drop in the first 200
of 2400 steps), so the model is an exponential decay to a plateau,

    H(t) = H∞ + (H0 − H∞)·exp(−(t − t0)/τ),    H∞ >= 0 (an entropy),

fitted by least squares. For a fixed τ the model is *linear* in (H∞, H0) — columns
``1 − e`` and ``e`` with ``e = exp(−(t − t0)/τ)`` — so the fit profiles τ out (separable least
squares): closed-form (H∞, H0) and residual sum RSS(τ) on a log-spaced grid of τ, then a
bounded 1-D refinement of the best τ.

Uncertainty: early in a run H∞ and τ trade off against each other (a curved, banana-shaped
confidence region) and a Gaussian approximation of (H∞, H0, τ) is far too narrow there.
Instead :meth:`EntropyDecay.sample` draws τ from its profile likelihood
``L(τ) ∝ RSS(τ)^(−S/2)`` (flat in log τ over the grid) and then (H∞, H0) from their exact
Gaussian least-squares distribution at that τ. Residuals are treated as independent; per-step
entropy noise is autocorrelated, so far from the data the spread is a lower bound.

Shapes: ``S`` logged steps, ``G`` grid values of τ, ``K`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import LawDataError, as_points, check_enough, check_same_length

GRID = 300  # τ grid size: from a tenth of the smallest step gap to 100 spans, log-spaced


@dataclass(frozen=True, eq=False)
class EntropyDecay:
    """A fitted entropy decay and the profile over τ used to sample its uncertainty."""

    h_inf: float  # plateau entropy H∞ (>= 0)
    h0: float  # entropy at t0
    tau: float  # decay time, in steps
    t0: float  # first fitted step
    rmse: float  # sqrt(RSS/S) at the best fit
    n_points: int
    grid_tau: np.ndarray  # [G] τ values
    grid_weight: np.ndarray  # [G] profile-likelihood weights (sum to 1)
    grid_mean: np.ndarray  # [G, 2] least-squares (H∞, H0) at each τ
    grid_cov: np.ndarray  # [G, 2, 2] their covariance at each τ

    def predict(self, steps: Any) -> np.ndarray:
        """Modelled entropy at ``steps`` (``+inf`` gives the plateau ``H∞``)."""
        t = np.asarray(steps, dtype=np.float64)
        return self.h_inf + (self.h0 - self.h_inf) * np.exp(-(t - self.t0) / self.tau)

    def sample(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Draw ``k`` plausible ``(H∞, H0, τ)``, each ``[K]`` (see the module docstring)."""
        g = rng.choice(len(self.grid_tau), size=k, p=self.grid_weight)
        mean, cov = self.grid_mean[g], self.grid_cov[g]
        z = rng.standard_normal((k, 2))
        # 2×2 Cholesky per draw; a zero variance (H∞ pinned at 0) gives a zero row.
        l11 = np.sqrt(np.maximum(cov[:, 0, 0], 0.0))
        l21 = np.divide(cov[:, 0, 1], l11, out=np.zeros(k), where=l11 > 0)
        l22 = np.sqrt(np.maximum(cov[:, 1, 1] - l21**2, 0.0))
        h_inf = np.maximum(mean[:, 0] + l11 * z[:, 0], 0.0)
        h0 = np.maximum(mean[:, 1] + l21 * z[:, 0] + l22 * z[:, 1], 0.0)
        return h_inf, h0, self.grid_tau[g]


def _profile(
    t: np.ndarray, h: np.ndarray, taus: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of ``h ≈ H∞·(1 − e) + H0·e`` at each τ: mean [G, 2], RSS [G], cov [G, 2, 2].

    Where the unconstrained H∞ is negative, H∞ is pinned at 0 (its variance then 0).
    """
    e = np.exp(-(t[None, :] - t[0]) / taus[:, None])  # [G, S]
    u = 1.0 - e
    s11, s12, s22 = (u * u).sum(1), (u * e).sum(1), (e * e).sum(1)
    r1, r2 = u @ h, e @ h
    det = s11 * s22 - s12**2
    with np.errstate(divide="ignore", invalid="ignore"):
        h_inf = (s22 * r1 - s12 * r2) / det
        h0 = (s11 * r2 - s12 * r1) / det
    pinned = ~(np.isfinite(h_inf) & (h_inf >= 0))
    h_inf = np.where(pinned, 0.0, h_inf)
    h0 = np.where(pinned, r2 / s22, h0)
    resid = h[None, :] - h_inf[:, None] * u - h0[:, None] * e
    rss = (resid * resid).sum(1)
    n_free = np.where(pinned, 1, 2)
    s2 = rss / np.maximum(len(t) - n_free, 1)
    cov = np.zeros((len(taus), 2, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        cov[:, 0, 0] = np.where(pinned, 0.0, s2 * s22 / det)
        cov[:, 0, 1] = cov[:, 1, 0] = np.where(pinned, 0.0, -s2 * s12 / det)
        cov[:, 1, 1] = np.where(pinned, s2 / s22, s2 * s11 / det)
    return np.column_stack([h_inf, h0]), rss, cov


def fit_entropy_decay(steps: Any, entropy: Any) -> EntropyDecay:
    """Fit the exponential decay to ``[S]`` logged ``(step, entropy)`` points (S >= 4)."""
    from scipy.optimize import minimize_scalar

    t, h = as_points("steps", steps), as_points("entropy", entropy)
    n = check_same_length(steps=t, entropy=h)
    check_enough("entropy decay fit", n, 4, "the decay has 3 parameters; log entropy at more "
                 "steps (or raise --fit-fraction)")
    order = np.argsort(t, kind="stable")
    t, h = t[order], h[order]
    gaps = np.diff(t)
    if not (gaps > 0).any():
        raise LawDataError("entropy decay fit: all entropy points are at one step")
    span = float(t[-1] - t[0])
    lo, hi = np.log(gaps[gaps > 0].min() / 10.0), np.log(100.0 * span)
    taus = np.exp(np.linspace(lo, hi, GRID))
    mean, rss, cov = _profile(t, h, taus)
    best = int(np.argmin(rss))
    # Refine τ between the neighbours of the best grid point.
    a, b = np.log(taus[max(best - 1, 0)]), np.log(taus[min(best + 1, GRID - 1)])
    res = minimize_scalar(lambda lt: float(_profile(t, h, np.exp([lt]))[1][0]),
                          bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    tau = float(np.exp(res.x))
    m1, rss1, _ = _profile(t, h, np.array([tau]))
    if rss1[0] > rss[best]:  # the refinement can only help; keep the grid point otherwise
        tau, m1, rss1 = float(taus[best]), mean[best:best + 1], rss[best:best + 1]
    # Profile likelihood of τ with σ profiled out: L ∝ RSS^(−S/2), computed in log space.
    floor = max(float(rss.min()), 1e-300)
    logw = -0.5 * n * np.log(np.maximum(rss, floor) / floor)
    w = np.exp(logw - logw.max())
    return EntropyDecay(
        h_inf=float(m1[0, 0]), h0=float(m1[0, 1]), tau=tau, t0=float(t[0]),
        rmse=float(np.sqrt(rss1[0] / n)), n_points=n, grid_tau=taus, grid_weight=w / w.sum(),
        grid_mean=mean, grid_cov=cov,
    )
