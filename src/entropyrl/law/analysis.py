"""Everything ``entropyrl fit`` reports about one run, and its JSON form (docs/law.md).

:func:`analyze_run` chains the pieces: pair the logs (``same-step`` or ``policy``, the default
from the log's framework, :mod:`.frameworks`), check whether the first evaluations break the
law (:mod:`.early_check`) and skip those before ``from_step``, fit the law on all points, the early
forecast (law fitted on the first ``fit_fraction``), the forward forecast from that same
window (entropy model + law, no later data used), and the projection from all the data to a
horizon and to the entropy plateau. The optional parts that the data cannot support (too few
early points, an entropy trajectory the decay model cannot fit) are skipped with a note; the
main fit never is: it raises. With ``backtest``, every forecast form is back-tested on the
same window (:mod:`.backtest`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import LawDataError, check_choice
from entropyrl.law.align import Aligned, align
from entropyrl.law.backtest import (
    FormBacktest,
    forward_backtest,
    law_backtest,
    progress_forms_backtest,
    skipped,
)
from entropyrl.law.early_check import EarlyBreak, early_break
from entropyrl.law.entropy_model import EntropyDecay, fit_entropy_decay
from entropyrl.law.fit import IntervalMethod, LawFit, Method, fit_law
from entropyrl.law.forecast import (
    EarlyForecast,
    ForwardForecast,
    early_forecast,
    forward_forecast,
    split_step,
)
from entropyrl.law.frameworks import PAIRINGS, Framework
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
    pairing: str = "same-step"  # "same-step" | "policy"
    pairing_note: str = ""  # what the pairing means for this log, shown to the user
    from_step: float | None = None  # evaluations before this step were not fitted
    n_skipped: int = 0  # … how many
    early_break: EarlyBreak | None = None  # leading evaluations far off the law (all points)
    backtest: tuple[FormBacktest, ...] = ()  # every form's forecast of the later evaluations

    @property
    def early_warning(self) -> str | None:
        """A warning when the first evaluations break the law and were not skipped."""
        eb = self.early_break
        if eb is None or (self.from_step is not None and self.from_step > eb.last_step):
            return None
        far = "> 100" if eb.max_z > 100 else format(eb.max_z, ".0f")
        return (f"the first {eb.n_points} evaluation(s) (steps ≤ {eb.last_step:g}) sit up to "
                f"{far}σ below the law — often the format-learning phase, which the "
                f"law does not describe; they pull the fit: pass --from-step "
                f"{eb.next_step:g} (or --from-step auto) to fit from after them")


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
    pair: str | None = None,
    from_step: float | str | None = None,
    backtest: bool = False,
) -> RunAnalysis:
    """Fit, forecast and project one run (see the module docstring).

    Args:
        run: the run's entropy and score series.
        fit_fraction: fraction of the run (after ``from_step``) the early forecast fits on.
        method: the law's loss (:func:`~entropyrl.law.fit.fit_law`).
        intervals: ``"analytic"`` or ``"bootstrap"`` intervals of the law's parameters.
        level: level of every interval and band.
        n_boot: bootstrap resamples (``intervals="bootstrap"``).
        seed: seed of bootstrap and Monte Carlo bands.
        horizon: step to project the score to (default the last logged step).
        pair: ``"same-step"`` or ``"policy"``; default: the log's framework's (:mod:`.frameworks`).
        from_step: fit only evaluations at steps ``>=`` this; ``"auto"``: skip the leading
            evaluations that break the law (:mod:`.early_check`), if any.
        backtest: back-test every forecast form on the early window (:mod:`.backtest`).
    """
    options: dict[str, Any] = dict(method=method, intervals=intervals, level=level,
                                   n_boot=n_boot, seed=seed)
    conv = run.conventions
    pairing = pair or conv.default_pair
    check_choice("pair", pairing, PAIRINGS)
    lag = 0.0 if pairing == "same-step" else (conv.policy_lag if conv.policy_lag is not None
                                             else 1.0)
    every = align(run.entropy, run.score, lag=lag)
    eb = early_break(every.steps, every.entropy, every.score)
    start = (eb.next_step if eb else None) if from_step == "auto" else from_step
    aligned = every if start is None else _from(every, float(start))
    if len(aligned.steps) < len(every.steps) and len(aligned.steps) == 0:
        raise LawDataError(f"run {run.name!r}: no evaluation at or after --from-step {start:g}; "
                           "lower it")
    try:
        fit = fit_law(aligned.entropy, aligned.score, **options)
    except LawDataError as err:
        raise LawDataError(f"run {run.name!r} ({run.source}): {err} [{_counts(aligned)}]") from None
    last = float(max(run.entropy.steps[-1], aligned.steps[-1]))
    end = max(float(horizon), last) if horizon is not None else last
    early = decay_early = forward = None
    f_rmse = f_final = None
    early_note: str | None = None
    # The early window is the first fit_fraction of the run, or of what follows --from-step.
    span = ((float(aligned.steps.min()) if start is not None else float(every.steps.min()),
             float(every.steps.max())) if len(aligned.steps) else None)
    try:
        early = early_forecast(aligned.steps, aligned.entropy, aligned.score,
                               fit_fraction=fit_fraction, span=span, **options)
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
    tests: tuple[FormBacktest, ...] = ()
    if backtest and span is not None:
        tests = _backtest(run, conv, aligned, early, forward, split_step(np.array(span),
                          fit_fraction), start, level, seed)
    return RunAnalysis(
        run=run, aligned=aligned, fit=fit, early=early, early_note=early_note,
        decay_early=decay_early, forward=forward, forward_rmse=f_rmse,
        forward_final_error=f_final, decay=decay, projection=projection, plateau=plateau,
        projection_note=projection_note, horizon=end, pairing=pairing,
        pairing_note=_pairing_note(conv, pairing), from_step=None if start is None
        else float(start), n_skipped=len(every.steps) - len(aligned.steps), early_break=eb,
        backtest=tests,
    )


def _from(al: Aligned, start: float) -> Aligned:
    """The aligned points at steps ``>= start``."""
    keep = al.steps >= start
    return Aligned(steps=al.steps[keep], entropy=al.entropy[keep], score=al.score[keep],
                   n_exact=al.n_exact, n_interpolated=al.n_interpolated,
                   dropped_steps=al.dropped_steps, lag=al.lag)


def progress_origin(run: RunLog, conv: Framework) -> float:
    """The step of the policy before any update: progress ``C = step − origin``."""
    first = float(run.entropy.steps[0]) if len(run.entropy) else 0.0
    return {"first": first, "first-minus-1": first - 1.0}.get(conv.origin, 0.0)


def _backtest(run: RunLog, conv: Framework, aligned: Aligned, early: EarlyForecast | None,
              forward: ForwardForecast | None, split: float, start: float | str | None,
              level: float, seed: int) -> tuple[FormBacktest, ...]:
    """Every form fitted on steps ≤ ``split``, forecasting the later aligned evaluations."""
    targets = aligned.steps[aligned.steps > split]
    observed = aligned.score[aligned.steps > split]
    out = []
    if early is not None:
        out.append(law_backtest(early, level))
    else:
        out.append(skipped("law", targets, observed, level, "law skipped: too few early points"))
    if early is not None and forward is not None:
        out.append(forward_backtest(forward, early, level))
    else:
        out.append(skipped("law+entropy", targets, observed, level,
                           "law+entropy skipped: no entropy model on the window"))
    steps, score = run.score.steps, run.score.values
    if start is not None:
        keep = steps >= float(start)
        steps, score = steps[keep], score[keep]
    progress = np.maximum(steps - progress_origin(run, conv), 0.0)
    # Targets are the aligned later evaluations: the same points for every form.
    out += progress_forms_backtest(steps, progress, score, split, targets, level, seed)
    return tuple(out)


def _pairing_note(conv: Framework, pairing: str) -> str:
    if conv.name == "entropyrl":
        return (f"pairing {pairing}: entropyrl validates at the start of a step, so a step's "
                "score and entropy describe the same policy")
    if conv.policy_lag is None:
        return (f"pairing {pairing}: the log's framework is unknown; "
                + ("scores are paired with the entropy at the same step number (pass --pair "
                   "policy if the evaluation logged at step s runs after update s, as in "
                   "verl and TRL)" if pairing == "same-step" else
                   "each score is paired with the entropy logged one step later (the policy "
                   "it evaluated, if evaluations run after the update)"))
    if pairing == "policy":
        return (f"pairing policy: {conv.name} logs the evaluation at step s after update s "
                "and the entropy at s before it, so each score is paired with the entropy "
                "logged at s + 1, the policy it evaluated (the pre-training score included); "
                "--pair same-step pairs by step number")
    return (f"pairing same-step: scores are paired with the entropy logged at the same step "
            f"number, one update before the policy {conv.name} evaluated; the pre-training "
            "score has no entropy and is dropped (--pair policy pairs by policy)")


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
        "framework": r.run.framework,
        "keys": {"entropy": list(r.run.entropy_columns), "score": list(r.run.score_columns)},
        "alignment": {"exact": r.aligned.n_exact, "interpolated": r.aligned.n_interpolated,
                      "dropped": r.aligned.n_dropped},
        "pairing": {"mode": r.pairing, "lag": r.aligned.lag, "note": r.pairing_note},
        "from_step": r.from_step, "n_skipped": r.n_skipped,
        "early_warning": r.early_warning,
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
        "backtest": [_backtest_json(b) for b in r.backtest] if r.backtest else None,
        "notes": list(r.run.notes),
    }


def _backtest_json(b: FormBacktest) -> dict[str, Any]:
    return {"form": b.form, "formula": b.formula, "n_fit": b.n_fit,
            "n_forecast": len(b.steps) if b.ok else 0, "rmse": _num(b.rmse),
            "final_error": _num(b.final_error), "bias": _num(b.bias),
            "coverage": _num(b.coverage), "level": b.level, "note": b.note}


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
