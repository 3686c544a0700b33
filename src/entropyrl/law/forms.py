"""Forecast forms in training progress ``C`` (no entropy needed), fitted like the law.

Two saturating curves, each ``R(C) = R0·(1 − g(C; θ)) + A·g(C; θ)`` with ``g`` rising from 0
at ``C = 0`` to 1, ``R0`` the score before training and ``A`` the asymptote:

- ``sigmoid`` (ScaleRL, Khatri et al. 2025, arXiv 2510.13786, with ``C`` = steps instead of
  compute — proportional for a fixed batch): ``R = R0 + (A − R0)/(1 + (C_mid/C)^B)``,
  ``θ = (C_mid, B)``: ``C_mid`` the progress at half the gain, ``B`` the steepness;
- ``power`` (a saturating power law in progress, as in arXiv 2509.25300):
  ``R = A − (A − R0)·(1 + C/c0)^(−α)``, ``θ = (c0, α)``: ``c0`` a progress scale, ``α`` the
  decay exponent of the remaining gap.

``C`` is the number of updates behind the evaluated policy (:mod:`.frameworks` gives the
origin per framework). Fit (separable least squares, as :mod:`.entropy_model`): for fixed
``θ`` the model is linear in ``(R0, A)``; ``θ`` runs over a log-spaced 2-D grid, the best grid
point is refined, and the uncertainty is sampled from the profile likelihood
``L(θ) ∝ RSS(θ)^(−P/2)`` (flat in ``log θ``) and then ``(R0, A)`` from their least-squares
Gaussian at that ``θ``. Early in a run the asymptote is barely constrained; that shows as a
wide band, which is the honest answer. Scores that are fractions (all in [0, 1]) keep ``A``
and the band in [0, 1].

Shapes: ``P`` fitted points, ``G`` grid points, ``K`` samples, ``S`` forecast steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import LawDataError, as_points, check_enough, check_same_length

PROGRESS_FORMS: tuple[str, ...] = ("sigmoid", "power")
FORMULAS = {
    "sigmoid": "R0 + (A − R0)/(1 + (C_mid/C)^B)",
    "power": "A − (A − R0)·(1 + C/c0)^(−α)",
}
THETA_NAMES = {"sigmoid": ("C_mid", "B"), "power": ("c0", "alpha")}
GRID_SCALE, GRID_SHAPE = 60, 30


def rise(form: str, c: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``g(C; θ)`` for ``θ`` [G, 2] and ``C`` [S] → [G, S], 0 at ``C = 0``, → 1 as C → ∞."""
    c = np.maximum(np.asarray(c, dtype=np.float64), 0.0)[None, :]
    scale, shape = theta[:, :1], theta[:, 1:]
    if form == "sigmoid":
        with np.errstate(divide="ignore", over="ignore"):
            z = shape * (np.log(scale) - np.log(c))  # (C_mid/C)^B = exp(z); C = 0 → z = inf
        return 1.0 / (1.0 + np.exp(np.minimum(z, 700.0)))
    return 1.0 - (1.0 + c / scale) ** (-shape)


@dataclass(frozen=True, eq=False)
class ProgressFit:
    """A fitted progress form and what :meth:`sample` needs for its band."""

    form: str
    r0: float  # score at C = 0
    asymptote: float  # A
    theta: tuple[float, float]  # (C_mid, B) or (c0, α)
    sigma: float  # residual scale sqrt(RSS/(P − 4)) at the best fit
    rmse: float  # sqrt(RSS/P)
    n_points: int
    bounded: bool  # scores are fractions: A and predictions kept in [0, 1]
    grid: np.ndarray  # [G, 2] θ
    weight: np.ndarray  # [G] profile-likelihood weights, sum 1
    mean: np.ndarray  # [G, 2] least-squares (R0, A) at each θ
    cov: np.ndarray  # [G, 2, 2] their covariance at each θ

    def predict(self, progress: Any) -> np.ndarray:
        """The fitted curve at ``progress`` [S]."""
        g = rise(self.form, np.atleast_1d(progress), np.array([self.theta]))[0]
        out = self.r0 * (1.0 - g) + self.asymptote * g
        return np.clip(out, 0.0, 1.0) if self.bounded else out

    def sample(
        self, progress: Any, k: int, rng: np.random.Generator, *, noise: bool = True
    ) -> np.ndarray:
        """``[K, S]`` plausible scores: θ from the profile, (R0, A) Gaussian, t noise."""
        c = np.atleast_1d(np.asarray(progress, dtype=np.float64))
        idx = rng.choice(len(self.grid), size=k, p=self.weight)
        mean, cov = self.mean[idx], self.cov[idx]
        z = rng.standard_normal((k, 2))
        l11 = np.sqrt(np.maximum(cov[:, 0, 0], 0.0))
        l21 = np.divide(cov[:, 0, 1], l11, out=np.zeros(k), where=l11 > 0)
        l22 = np.sqrt(np.maximum(cov[:, 1, 1] - l21**2, 0.0))
        r0 = mean[:, 0] + l11 * z[:, 0]
        a = mean[:, 1] + l21 * z[:, 0] + l22 * z[:, 1]
        if self.bounded:
            r0, a = np.clip(r0, 0.0, 1.0), np.clip(a, 0.0, 1.0)
        g = rise(self.form, c, self.grid[idx])
        out = r0[:, None] * (1.0 - g) + a[:, None] * g
        if noise:
            dof = max(self.n_points - 4, 1)
            out = out + self.sigma * rng.standard_t(dof, size=(k, 1))
        return np.clip(out, 0.0, 1.0) if self.bounded else out


def _grid(form: str, c: np.ndarray) -> np.ndarray:
    pos = c[c > 0]
    lo = float(pos.min()) if len(pos) else 1.0
    hi = float(c.max()) if c.max() > 0 else 1.0
    if form == "sigmoid":
        scales = np.geomspace(lo / 2.0, 100.0 * hi, GRID_SCALE)
        shapes = np.geomspace(0.3, 4.0, GRID_SHAPE)
    else:
        scales = np.geomspace(lo / 10.0, 100.0 * hi, GRID_SCALE)
        shapes = np.geomspace(0.05, 3.0, GRID_SHAPE)
    s, b = np.meshgrid(scales, shapes, indexing="ij")
    return np.column_stack([s.ravel(), b.ravel()])


def _profile(
    form: str, c: np.ndarray, y: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of ``y ≈ R0·(1 − g) + A·g`` per θ: mean [G, 2], RSS [G], (XᵀX)⁻¹ [G,2,2]."""
    g = rise(form, c, theta)  # [G, P]
    u = 1.0 - g
    s11, s12, s22 = (u * u).sum(1), (u * g).sum(1), (g * g).sum(1)
    r1, r2 = u @ y, g @ y
    det = s11 * s22 - s12**2
    ok = det > 1e-12 * np.maximum(s11 * s22, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        r0 = np.where(ok, (s22 * r1 - s12 * r2) / det, np.nan)
        a = np.where(ok, (s11 * r2 - s12 * r1) / det, np.nan)
    resid = y[None, :] - r0[:, None] * u - a[:, None] * g
    rss = np.where(ok, (resid * resid).sum(1), np.inf)
    inv = np.zeros((len(theta), 2, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv[:, 0, 0] = np.where(ok, s22 / det, 0.0)
        inv[:, 0, 1] = inv[:, 1, 0] = np.where(ok, -s12 / det, 0.0)
        inv[:, 1, 1] = np.where(ok, s11 / det, 0.0)
    return np.column_stack([r0, a]), rss, inv


def fit_progress(form: str, progress: Any, score: Any) -> ProgressFit:
    """Fit ``form`` (``"sigmoid"`` or ``"power"``) to ``[P]`` (progress, score) points (P ≥ 5)."""
    from scipy.optimize import minimize

    if form not in PROGRESS_FORMS:
        raise ValueError(f"form: expected one of {list(PROGRESS_FORMS)}, got {form!r}")
    c, y = as_points("progress", progress), as_points("score", score)
    n = check_same_length(progress=c, score=y)
    check_enough(
        f"{form} fit",
        n,
        5,
        "the form has 4 parameters; its band needs a fifth "
        "point: evaluate more often, or raise --fit-fraction",
    )
    if np.ptp(c) <= 0:
        raise LawDataError(f"{form} fit: every evaluation is at the same step")
    bounded = bool(((y >= 0) & (y <= 1)).all())
    theta = _grid(form, c)
    mean, rss, inv = _profile(form, c, y, theta)
    feasible = np.isfinite(rss)
    if bounded:
        inside = feasible & (mean[:, 1] >= 0) & (mean[:, 1] <= 1)
        feasible = inside if inside.any() else feasible
    if not feasible.any():
        raise LawDataError(f"{form} fit: no curve of this form fits these points")
    best = int(np.argmin(np.where(feasible, rss, np.inf)))

    def objective(log_theta: np.ndarray) -> float:
        m, r, _ = _profile(form, c, y, np.exp(log_theta)[None, :])
        out_of_range = bounded and not 0 <= m[0, 1] <= 1
        return float(r[0]) if np.isfinite(r[0]) and not out_of_range else 1e300

    res = minimize(
        objective,
        np.log(theta[best]),
        method="Nelder-Mead",
        options={"xatol": 1e-4, "fatol": 1e-14, "maxiter": 400},
    )
    th = np.exp(res.x) if res.fun < rss[best] else theta[best]
    m1, rss1, _ = _profile(form, c, y, th[None, :])
    sigma2 = float(rss1[0]) / max(n - 4, 1)
    floor = max(float(rss[feasible].min()), 1e-300)
    logw = np.where(feasible, -0.5 * n * np.log(np.maximum(rss, floor) / floor), -np.inf)
    w = np.exp(logw - logw.max())
    return ProgressFit(
        form=form,
        r0=float(m1[0, 0]),
        asymptote=float(m1[0, 1]),
        theta=(float(th[0]), float(th[1])),
        sigma=float(np.sqrt(sigma2)),
        rmse=float(np.sqrt(rss1[0] / n)),
        n_points=n,
        bounded=bounded,
        grid=theta,
        weight=w / w.sum(),
        mean=np.nan_to_num(mean),
        cov=sigma2 * inv,
    )
