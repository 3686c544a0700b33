"""Everything ``entropyrl fit`` reports about one run, and its JSON form (docs/law.md).

:func:`analyze_run` chains the pieces: align the logs, fit the law on all points, the early
forecast (law fitted on the first ``fit_fraction``), the forward forecast from that same
window (entropy model + law, no later data used), and the projection from all the data to a
horizon and to the entropy plateau. The optional parts that the data cannot support (too few
early points, an entropy trajectory the decay model cannot fit) are skipped with a note; the
main fit never is: it raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import LawDataError
from entropyrl.law.align import Aligned, align
from entropyrl.law.entropy_model import EntropyDecay, fit_entropy_decay
from entropyrl.law.fit import IntervalMethod, LawFit, Method, fit_law
from entropyrl.law.forecast import EarlyForecast, ForwardForecast, early_forecast, forward_forecast
from entropyrl.law.io import RunLog
from entropyrl.law.scaling import ScalingFit, ScalingPrediction

GRID_POINTS = 200  # steps at which forecast curves are evaluated for plots


@dataclass(frozen=True, eq=False)
class RunAnalysis:
    """The law, its early forecast and its projection for one run."""

    run: RunLog
    aligned: Aligned
    fit: LawFit
    early: EarlyForecast | None
    early_note: str | None
    decay_early: EntropyDecay | None  # entropy model fitted on the early window
    forward: ForwardForecast | None  # early-window forecast from the split step to the horizon
    forward_rmse: float | None  # forward forecast vs observed scores after the window
    forward_final_error: float | None  # … at the last evaluation, predicted − observed
    decay: EntropyDecay | None  # entropy model fitted on every logged entropy
    projection: ForwardForecast | None  # all-data forecast, last step → horizon (expected score)
    plateau: ForwardForecast | None  # all-data forecast as t → ∞ (expected score)
    projection_note: str | None
    horizon: float


def analyze_run(
    run: RunLog,
    *,
    fit_fraction: float = 0.15,
    method: Method = "ols",
    intervals: IntervalMethod = "analytic",
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    horizon: float | None = None,
) -> RunAnalysis:
    """Fit, forecast and project one run (see the module docstring)."""
    options: dict[str, Any] = dict(method=method, intervals=intervals, level=level,
                                   n_boot=n_boot, seed=seed)
    aligned = align(run.entropy, run.score)
    try:
        fit = fit_law(aligned.entropy, aligned.score, **options)
    except LawDataError as err:
        raise LawDataError(f"run {run.name!r} ({run.source}): {err} [{_counts(aligned)}]") from None
    last = float(max(run.entropy.steps[-1], aligned.steps[-1]))
    end = max(float(horizon), last) if horizon is not None else last
    early = decay_early = forward = None
    f_rmse = f_final = None
    early_note: str | None = None
    try:
        early = early_forecast(aligned.steps, aligned.entropy, aligned.score,
                               fit_fraction=fit_fraction, **options)
    except LawDataError as err:
        early_note = f"early forecast skipped: {err}"
    if early is not None:
        try:
            window = run.entropy.steps <= early.split_step
            decay_early = fit_entropy_decay(run.entropy.steps[window], run.entropy.values[window])
            grid = np.union1d(np.linspace(early.split_step, end, GRID_POINTS), early.steps)
            forward = forward_forecast(early.fit, decay_early, grid, level=level, seed=seed)
            diff = forward.score[np.searchsorted(grid, early.steps)] - early.observed
            f_rmse, f_final = float(np.sqrt(np.mean(diff**2))), float(diff[-1])
        except LawDataError as exc:
            early_note = f"forward forecast skipped: {exc}"
    decay = projection = plateau = None
    projection_note: str | None = None
    try:
        decay = fit_entropy_decay(run.entropy.steps, run.entropy.values)
        grid = np.linspace(last, end, GRID_POINTS) if end > last else np.array([end])
        projection = forward_forecast(fit, decay, grid, level=level, seed=seed, noise=False)
        plateau = forward_forecast(fit, decay, [math.inf], level=level, seed=seed, noise=False)
    except LawDataError as err:
        projection_note = f"projection skipped: {err}"
    return RunAnalysis(
        run=run, aligned=aligned, fit=fit, early=early, early_note=early_note,
        decay_early=decay_early, forward=forward, forward_rmse=f_rmse,
        forward_final_error=f_final, decay=decay, projection=projection, plateau=plateau,
        projection_note=projection_note, horizon=end,
    )


def _counts(aligned: Aligned) -> str:
    return (f"{aligned.n_exact} evaluations at an entropy step, {aligned.n_interpolated} "
            f"interpolated, {aligned.n_dropped} outside the entropy log")


def _num(x: float | None) -> float | None:
    """JSON number: NaN/inf become null."""
    return None if x is None or not math.isfinite(x) else float(x)


def _pair(ci: tuple[float, float] | None) -> list[float | None] | None:
    return None if ci is None else [_num(ci[0]), _num(ci[1])]


def _band(f: ForwardForecast | None) -> list[float | None] | None:
    return None if f is None else [_num(f.low[-1]), _num(f.high[-1])]


def run_to_json(r: RunAnalysis) -> dict[str, Any]:
    """One entry of ``runs`` in the documented JSON shape (docs/law.md)."""
    fit, early = r.fit, r.early
    return {
        "run": r.run.name,
        "source": str(r.run.source),
        "format": r.run.format,
        "n_points": fit.n_points,
        "alignment": {"exact": r.aligned.n_exact, "interpolated": r.aligned.n_interpolated,
                      "dropped": r.aligned.n_dropped},
        "method": fit.method,
        "interval_method": fit.interval_method,
        "level": fit.level,
        "a": fit.a, "a_ci": _pair(fit.a_ci), "a_se": _num(fit.a_se),
        "b": fit.b, "b_ci": _pair(fit.b_ci), "b_se": _num(fit.b_se),
        "ceiling": fit.ceiling, "ceiling_ci": _pair(fit.ceiling_ci),
        "ceiling_se": _num(fit.ceiling_se),
        "r2": _num(fit.r2), "rmse": fit.rmse,
        "forecast": {
            "fit_fraction": early.fit_fraction if early else None,
            "split_step": early.split_step if early else None,
            "n_fit_points": early.fit.n_points if early else None,
            "n_forecast_points": len(early.steps) if early else None,
            "rmse": early.rmse if early else None,
            "final_error": early.final_error if early else None,
            "forward_rmse": _num(r.forward_rmse),
            "forward_final_error": _num(r.forward_final_error),
            "note": r.early_note,
        },
        "projection": {
            "horizon_step": r.horizon,
            "entropy": _num(float(r.projection.entropy[-1])) if r.projection else None,
            "score": _num(float(r.projection.score[-1])) if r.projection else None,
            "score_ci": _band(r.projection),
            "entropy_plateau": _num(r.decay.h_inf) if r.decay else None,
            "score_plateau": _num(float(r.plateau.score[0])) if r.plateau else None,
            "score_plateau_ci": _band(r.plateau),
            "note": r.projection_note,
        },
    }


def _prediction_json(p: ScalingPrediction) -> dict[str, Any]:
    return {"n_params": p.n_params, "a": p.a, "a_ci": _pair(p.a_ci), "b": p.b,
            "b_ci": _pair(p.b_ci), "ceiling": p.ceiling, "ceiling_ci": _pair(p.ceiling_ci)}


def scaling_to_json(
    scaling: ScalingFit, runs: list[str], predictions: list[ScalingPrediction]
) -> dict[str, Any]:
    """The ``scaling`` object of the JSON output (docs/law.md)."""

    def line(ll: Any) -> dict[str, Any]:
        return {"intercept": ll.intercept, "slope": ll.slope, "slope_ci": _pair(ll.slope_ci),
                "sigma": ll.sigma}

    return {
        "x": "log10(n_params)",
        "runs": runs,
        "n_params": scaling.n_params.tolist(),
        "level": scaling.a.level,
        "a": line(scaling.a),
        "b": line(scaling.b),
        "ceiling": line(scaling.ceiling),
        "extrapolations": [_prediction_json(p) for p in predictions],
    }
