"""Early forecast of a run from its first steps (PAPER.md §1: 15% of the run predicts the rest).

Two forecasts, both from the *first fraction* of a run only:

- **From observed entropy** (:func:`early_forecast`): fit the law on the evaluations in the
  first ``fit_fraction`` of the run's steps, then predict the score at every later evaluation
  from the entropy *observed* there — the paper's check (RMSE 0.9% math / 1.2% code).
- **Forward** (:func:`forward_forecast`): steps not yet run have no entropy, so the entropy
  trajectory is modelled (:mod:`.entropy_model`, an exponential decay to a plateau) and put
  through the law. The band is Monte Carlo over the law's (a, b), the entropy model's
  parameters and the law's residual noise: where a future evaluation is expected to fall.

Shapes: ``P`` aligned evaluation points, ``S`` steps (logged or forecast).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import (
    LawDataError,
    as_points,
    check_enough,
    check_fraction,
    check_level,
    check_same_length,
)
from entropyrl.law.entropy_model import EntropyDecay
from entropyrl.law.fit import LawFit, fit_law


@dataclass(frozen=True, eq=False)
class EarlyForecast:
    """The law fitted on the first ``fit_fraction`` of a run, scored on the rest."""

    fit: LawFit  # fitted on the window only
    fit_fraction: float
    split_step: float  # last step of the fit window: s_first + f·(s_last − s_first)
    steps: np.ndarray  # [Q] evaluation steps after the window
    predicted: np.ndarray  # [Q] law(observed entropy at those steps)
    observed: np.ndarray  # [Q] observed scores
    rmse: float  # sqrt(mean((predicted − observed)²)) over the Q later evaluations
    final_error: float  # predicted − observed at the last evaluation (signed)
    entropy: np.ndarray | None = None  # [Q] observed entropy at the later evaluations
    window_resid: np.ndarray | None = None  # [P] residuals of the window fit, in step order


def split_step(steps: np.ndarray, fit_fraction: float) -> float:
    """Last step of the fit window: ``s_first + fit_fraction·(s_last − s_first)``."""
    return float(steps.min() + fit_fraction * (steps.max() - steps.min()))


def early_forecast(
    steps: Any, entropy: Any, score: Any, *, fit_fraction: float = 0.15,
    span: tuple[float, float] | None = None, **fit_options: Any
) -> EarlyForecast:
    """Fit on the evaluations up to the split step; predict the later ones from their entropy.

    Args:
        steps: ``[P]`` evaluation steps (any order).
        entropy: ``[P]`` entropy at those steps.
        score: ``[P]`` scores at those steps.
        fit_fraction: fraction of the run's step range used for the fit (default 0.15).
        span: ``(first, last)`` step of the whole run, when ``steps`` leave some out (e.g.
            evaluations skipped with ``--from-step``); default the range of ``steps``.
        **fit_options: passed to :func:`~entropyrl.law.fit.fit_law` (method, intervals, …).
    """
    check_fraction("fit_fraction", fit_fraction)
    s, h, y = as_points("steps", steps), as_points("entropy", entropy), as_points("score", score)
    check_same_length(steps=s, entropy=h, score=y)
    order = np.argsort(s, kind="stable")
    s, h, y = s[order], h[order], y[order]
    cut = split_step(np.asarray(span if span is not None else s, dtype=np.float64),
                     fit_fraction)
    window = s <= cut
    check_enough(f"early forecast (first {fit_fraction:g} of the run, steps <= {cut:g})",
                 int(window.sum()), 3, "raise --fit-fraction or evaluate more often early on")
    if window.all():
        raise LawDataError(f"early forecast: no evaluation after step {cut:g} to forecast; "
                           "lower --fit-fraction")
    fit = fit_law(h[window], y[window], **fit_options)
    pred = fit.predict(h[~window])
    err = pred - y[~window]
    return EarlyForecast(
        fit=fit, fit_fraction=float(fit_fraction), split_step=cut, steps=s[~window],
        predicted=pred, observed=y[~window], rmse=float(np.sqrt(np.mean(err**2))),
        final_error=float(err[-1]), entropy=h[~window],
        window_resid=y[window] - fit.predict(h[window]),
    )


@dataclass(frozen=True, eq=False)
class ForwardForecast:
    """Score forecast at steps from the entropy model and the law, with a band."""

    steps: np.ndarray  # [S]
    entropy: np.ndarray  # [S] modelled entropy
    score: np.ndarray  # [S] law(modelled entropy)
    low: np.ndarray  # [S] lower edge of the score band
    high: np.ndarray  # [S] upper edge of the score band
    entropy_low: np.ndarray  # [S] lower edge of the entropy band
    entropy_high: np.ndarray  # [S] upper edge of the entropy band
    level: float


def forward_forecast(
    law: LawFit,
    decay: EntropyDecay,
    steps: Any,
    *,
    level: float = 0.95,
    n_samples: int = 2000,
    seed: int = 0,
    noise: bool = True,
) -> ForwardForecast:
    """Forecast ``R(t) = −a·exp(H(t)) + b`` at ``[S]`` steps (``+inf``: the plateau).

    The bands hold the central ``level`` of Monte Carlo draws: (a, b) ~ N(fit, cov),
    (H∞, H0, τ) from :meth:`EntropyDecay.sample` and, with ``noise``, a residual
    ``N(0, law.sigma²)`` — the spread of a new evaluation rather than of the expected score.
    """
    check_level(level)
    t = np.asarray(steps, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    ab = rng.multivariate_normal([law.a, law.b], law.cov, size=n_samples, method="svd")
    h_inf, h0, tau = (x[:, None] for x in decay.sample(n_samples, rng))
    # One residual per draw, shared across steps: the band's quantiles at each step are the
    # same as with fresh noise per step (noise is independent of the parameters), and smooth.
    eps = law.sigma * rng.standard_normal((n_samples, 1)) if noise else np.zeros((n_samples, 1))
    q = [0.5 - level / 2.0, 0.5 + level / 2.0]
    bands = np.empty((4, len(t)))  # score low/high, entropy low/high
    for i in range(0, len(t), 256):  # bounds memory: n_samples × 256 at a time
        tt = t[None, i:i + 256]
        h = h_inf + (h0 - h_inf) * np.exp(-(tt - decay.t0) / tau)
        r = ab[:, 1:2] - ab[:, :1] * np.exp(h) + eps
        bands[0:2, i:i + 256] = np.quantile(r, q, axis=0)
        bands[2:4, i:i + 256] = np.quantile(h, q, axis=0)
    h_mean = decay.predict(t)
    return ForwardForecast(steps=t, entropy=h_mean, score=law.predict(h_mean), low=bands[0],
                           high=bands[1], entropy_low=bands[2], entropy_high=bands[3],
                           level=float(level))
