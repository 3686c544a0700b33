"""Back-test of every forecast form on one run: fit on the first part, score on the rest.

Each form is fitted on the evaluations of the early window only (the same window for all) and
forecasts every later evaluation, with a prediction band at ``level``:

- ``law`` — ``R = −a·exp(H) + b`` at the entropy *observed* at the later steps (the paper's
  check; it needs the future entropy, so it is a check of the law, not a forecast proper).
  Band: ``±t(P−2)·√(σ̂² + se²(H))``, the Student-t prediction interval of a new point;
- ``law+entropy`` — the law through the entropy decay model fitted on the window (a true
  forecast, :mod:`.forecast`); band: Monte Carlo over both fits and the residual noise;
- ``sigmoid``, ``power`` — curves in training progress (:mod:`.forms`); band: Monte Carlo over
  the profile likelihood of the shape, the linear parameters and Student-t residual noise.

Every band is then widened by the window's own lack of fit (:func:`misfit_scale`), so that
a form which already misses the window's points does not claim a narrow band.

Per form: ``rmse`` (root mean square forecast error over the later evaluations),
``final_error`` (predicted − observed at the last one), ``bias`` (mean predicted − observed),
and ``coverage`` (fraction of later evaluations inside the band) — for a calibrated band,
close to ``level``.

Shapes: ``P`` window points, ``Q`` later evaluations, ``K`` Monte Carlo draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entropyrl.law._data import LawDataError, t_quantile
from entropyrl.law.forecast import EarlyForecast, ForwardForecast
from entropyrl.law.forms import FORMULAS, PROGRESS_FORMS, fit_progress

ALL_FORMS: tuple[str, ...] = ("law", "law+entropy", *PROGRESS_FORMS)
FORM_FORMULAS = {
    "law": "−a·exp(H) + b at the observed H",
    "law+entropy": "−a·exp(H(t)) + b, H(t) the entropy decay model",
    **FORMULAS,
}
N_DRAWS = 4000


@dataclass(frozen=True, eq=False)
class FormBacktest:
    """One form's forecast of the later evaluations of a run."""

    form: str
    formula: str
    n_fit: int  # window points the form was fitted on (0 when skipped)
    steps: np.ndarray  # [Q] later evaluation steps
    observed: np.ndarray  # [Q]
    predicted: np.ndarray  # [Q]
    low: np.ndarray  # [Q] band edges at ``level``
    high: np.ndarray  # [Q]
    level: float
    note: str | None = None  # why the form was skipped

    @property
    def ok(self) -> bool:
        """Whether the form could be fitted on the window."""
        return self.note is None and len(self.steps) > 0

    @property
    def rmse(self) -> float:
        """√(mean (predicted − observed)²) over the later evaluations; NaN when skipped."""
        return (
            float(np.sqrt(np.mean((self.predicted - self.observed) ** 2)))
            if self.ok
            else float("nan")
        )

    @property
    def final_error(self) -> float:
        """Predicted − observed at the last evaluation; NaN when skipped."""
        return float(self.predicted[-1] - self.observed[-1]) if self.ok else float("nan")

    @property
    def bias(self) -> float:
        """Mean of predicted − observed; positive: the form over-predicts."""
        return float(np.mean(self.predicted - self.observed)) if self.ok else float("nan")

    @property
    def width(self) -> float:
        """Mean width of the band over the later evaluations; NaN when skipped."""
        return float(np.mean(self.high - self.low)) if self.ok else float("nan")

    @property
    def coverage(self) -> float:
        """Fraction of later evaluations inside the band; NaN when skipped."""
        if not self.ok:
            return float("nan")
        return float(np.mean((self.observed >= self.low) & (self.observed <= self.high)))


def misfit_scale(resid: np.ndarray, n_params: int) -> float:
    """Band inflation from the window's lack of fit, ``≥ 1``.

    The residual ``σ̂`` already measures scatter; this factor grows when the window's
    residuals are *serially* structured (runs of one sign: a form that misses the curve's
    shape, or noise correlated from step to step), from their lag-1 autocorrelation ``ρ`` as
    ``√((1 + ρ)/(1 − ρ))`` — the variance ratio of the mean of an AR(1) series — capped at 3.
    """
    r = resid - resid.mean()
    if len(r) < n_params + 2 or not (r @ r) > 0:
        return 1.0
    rho = float(np.clip((r[1:] @ r[:-1]) / (r @ r), 0.0, 0.8))
    return float(min(np.sqrt((1 + rho) / (1 - rho)), 3.0))


def skipped(
    form: str, steps: np.ndarray, observed: np.ndarray, level: float, note: str
) -> FormBacktest:
    """A form that could not be fitted on the window."""
    empty = np.full(len(steps), np.nan)
    return FormBacktest(
        form, FORM_FORMULAS[form], 0, steps, observed, empty, empty, empty, level, note
    )


def law_backtest(early: EarlyForecast, level: float) -> FormBacktest:
    """The law at the observed entropy, with Student-t prediction bands."""
    fit = early.fit
    h = early.entropy if early.entropy is not None else np.zeros(len(early.steps))
    se = fit.predict_se(h)
    sigma = fit.sigma * early_misfit(early)
    half = t_quantile(level, max(fit.n_points - 2, 1)) * np.sqrt(sigma**2 + se**2)
    return FormBacktest(
        "law",
        FORM_FORMULAS["law"],
        fit.n_points,
        early.steps,
        early.observed,
        early.predicted,
        early.predicted - half,
        early.predicted + half,
        level,
    )


def early_misfit(early: EarlyForecast) -> float:
    """:func:`misfit_scale` of the law's window residuals (stored in the early forecast)."""
    return 1.0 if early.window_resid is None else misfit_scale(early.window_resid, 2)


def forward_backtest(forward: ForwardForecast, early: EarlyForecast, level: float) -> FormBacktest:
    """The law through the window's entropy model, read at the later evaluation steps."""
    idx = np.searchsorted(forward.steps, early.steps)
    pred, lo, hi = forward.score[idx], forward.low[idx], forward.high[idx]
    k = early_misfit(early)
    lo, hi = pred - k * (pred - lo), pred + k * (hi - pred)
    return FormBacktest(
        "law+entropy",
        FORM_FORMULAS["law+entropy"],
        early.fit.n_points,
        early.steps,
        early.observed,
        pred,
        lo,
        hi,
        level,
    )


def progress_backtest(
    form: str,
    fit_c: np.ndarray,
    fit_y: np.ndarray,
    steps: np.ndarray,
    c: np.ndarray,
    observed: np.ndarray,
    level: float,
    seed: int,
) -> FormBacktest:
    """A progress form fitted on ``(fit_c, fit_y)`` [P], forecasting ``observed`` [Q] at ``c``."""
    try:
        fit = fit_progress(form, fit_c, fit_y)
    except LawDataError as err:
        return skipped(form, steps, observed, level, f"{form} skipped: {err}")
    rng = np.random.default_rng(seed)
    draws = fit.sample(c, N_DRAWS, rng)
    lo, hi = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    pred = fit.predict(c)
    k = misfit_scale(fit_y - fit.predict(fit_c), 4)
    lo, hi = pred - k * (pred - lo), pred + k * (hi - pred)
    if fit.bounded:
        lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    return FormBacktest(
        form, FORM_FORMULAS[form], fit.n_points, steps, observed, pred, lo, hi, level
    )


def progress_forms_backtest(
    steps: np.ndarray,
    progress: np.ndarray,
    score: np.ndarray,
    split: float,
    targets: np.ndarray,
    level: float,
    seed: int,
    forms: tuple[str, ...] = PROGRESS_FORMS,
) -> list[FormBacktest]:
    """Every progress form fitted on evaluations with step ≤ ``split``, scored at ``targets``.

    Args:
        steps: ``[E]`` steps of every usable evaluation (with or without an entropy).
        progress: ``[E]`` their progress ``C`` (updates behind the evaluated policy).
        score: ``[E]`` their scores.
        split: last step of the window.
        targets: ``[Q]`` later evaluation steps to forecast (a subset of ``steps``).
        level: level of the bands.
        seed: seed of the Monte Carlo bands.
        forms: the progress forms to test.
    """
    win = steps <= split
    at = np.searchsorted(steps, targets)
    return [
        progress_backtest(
            f, progress[win], score[win], targets, progress[at], score[at], level, seed
        )
        for f in forms
    ]
