"""Per-run summary numbers of the report (formulas in docs/report.md).

Every number is computed from the run's ``metrics.jsonl`` (keys of docs/metrics.md) and may be
``None``: then ``RunSummary.na`` says why, in words shown next to the "n/a" in the report. The
law ``R = −a·exp(H) + b`` (PAPER.md §1) is fitted with :mod:`entropyrl.law`: its alignment
rule pairs each ``val/acc`` with ``train/entropy`` at the same step (interpolated between
logged steps, never extrapolated), then least squares; the early forecast refits on the first
15% of the evaluated step range and scores the rest.

Shapes: ``S`` logged steps, ``P`` aligned validation points.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from entropyrl.law import EarlyForecast, LawDataError, LawFit, align, early_forecast, fit_law
from entropyrl.law import make_series as law_series
from entropyrl.report.load import RunData, load_run_data

FINAL_FRACTION = 0.10  # final entropy: mean over the last 10% of the logged steps
EARLY_FIT_FRACTION = 0.15  # the paper's check: the first ~15% of a run predicts the rest
SKEW_EARLY_STEPS = 10  # the skew table's "early" column averages the first 10 steps
MIN_POINTS = 3  # a correlation or a 2-parameter fit needs at least 3 points
LOW_R2 = 0.5  # below this the law's a, b and ceiling are flagged in the run's notes

ENTROPY, SCORE, STEP_TIME, EVAL_TIME = "train/entropy", "val/acc", "time/step_s", "time/eval_s"
COV_NPG, COV_PG = "dyn/cov_npg", "dyn/cov_pg"
DELTA_H, PRED_DELTA_H = "dyn/delta_entropy", "dyn/pred_delta_entropy"
TARGET = "control/target"  # the entropy controller's H*, in controlled runs
_SKEW_KEY = re.compile(r"^dyn/cov_top([0-9.]+)pct$")


class Stat(NamedTuple):
    """A number, or ``None`` and the reason it could not be computed."""

    value: float | None
    reason: str | None = None


class DeltaHCorrelations(NamedTuple):
    """Correlations across steps of the measured ``ΔH`` with its two first-order predictors."""

    with_pred: Stat  # corr(dyn/delta_entropy, dyn/pred_delta_entropy = −cov_npg)
    with_cov_pg: Stat  # corr(dyn/delta_entropy, −dyn/cov_pg)
    n_steps: int  # steps where ΔH and the prediction are both finite


@dataclass(frozen=True, eq=False)
class LawResult:
    """The law fitted to one run: the aligned points, the fit and the early forecast."""

    steps: np.ndarray  # [P] validation steps paired with an entropy
    entropy: np.ndarray  # [P] train/entropy at those steps (nats)
    score: np.ndarray  # [P] val/acc at those steps (fraction)
    fit: LawFit | None
    reason: str | None  # why ``fit`` is None
    early: EarlyForecast | None
    early_reason: str | None  # why ``early`` is None
    n_dropped: int  # validations outside the logged entropy range


@dataclass
class RunSummary:
    """The summary numbers of one run (see docs/report.md for each formula)."""

    name: str
    source: str
    n_steps: int
    last_step: int | None
    planned_steps: int | None
    in_progress: bool | None
    initial_entropy: float | None
    final_entropy: float | None
    final_entropy_steps: int  # how many last steps the final entropy averages
    entropy_ratio: float | None  # final / initial
    n_val: int
    first_val_acc: float | None
    final_val_acc: float | None
    final_val_step: int | None
    best_val_acc: float | None
    best_val_step: int | None
    a: float | None
    b: float | None
    r2: float | None
    ceiling: float | None  # b − a, the law's score at zero entropy
    ceiling_ci: list[float] | None
    law_rmse: float | None
    law_points: int
    forecast_rmse: float | None
    forecast_final_error: float | None
    forecast_fit_points: int | None
    pos_cov_frac: float | None
    cov_steps: int
    corr_dh_pred: float | None
    corr_dh_cov_pg: float | None
    corr_steps: int
    wall_time_s: float | None
    eval_time_s: float | None
    skew_early_steps: int
    skew_early: dict[str, float | None] = field(default_factory=dict)
    skew_all: dict[str, float | None] = field(default_factory=dict)
    na: dict[str, str] = field(default_factory=dict)  # field → why it is None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: NaN/inf become ``None``."""
        return {k: _json_safe(v) for k, v in dataclasses.asdict(self).items()}


def summarize_run(run_dir: Path, *, name: str | None = None) -> RunSummary:
    """Read ``run_dir/metrics.jsonl`` and compute its :class:`RunSummary`.

    Raises:
        UserError: the run has no readable ``metrics.jsonl``.
    """
    return summarize(load_run_data(Path(run_dir), name))


def summarize(
    data: RunData, *, law: LawResult | None = None, skew_steps: int = SKEW_EARLY_STEPS
) -> RunSummary:
    """Compute the summary of loaded run data (``law`` is recomputed if not given)."""
    law = law if law is not None else fit_run_law(data)
    na: dict[str, str] = {}

    def put(name: str, stat: Stat) -> float | None:
        if stat.value is None:
            na[name] = stat.reason or "not available"
        return stat.value

    h = data.series(ENTROPY)[1]
    k_final = max(1, math.ceil(FINAL_FRACTION * len(h)))
    no_h = Stat(None, f"no {ENTROPY} logged")
    initial = put("initial_entropy", Stat(float(h[0])) if len(h) else no_h)
    final = put("final_entropy", Stat(float(h[-k_final:].mean())) if len(h) else no_h)
    ratio = put("entropy_ratio", _ratio(final, initial))
    v_steps, v = data.series(SCORE)
    no_v = Stat(None, f"no validation points ({SCORE} never logged)")
    best = int(np.argmax(v)) if len(v) else 0
    fit, early = law.fit, law.early
    law_na = Stat(None, law.reason)
    cov = data.series(COV_NPG)[1]
    corr = _dh_correlations(data)
    last = int(data.steps[-1]) if len(data.steps) else None
    in_progress = None if last is None or data.planned_steps is None else (
        last < data.planned_steps)
    notes = list(data.notes)
    if in_progress:
        notes.insert(0, f"in progress or stopped early: {last} of {data.planned_steps} steps")
    if law.n_dropped:
        notes.append(f"{law.n_dropped} validation(s) outside the logged entropy range were "
                     "left out of the law fit")
    notes.extend(_law_warnings(fit))
    return RunSummary(
        name=data.name, source=str(data.source), n_steps=len(data.steps), last_step=last,
        planned_steps=data.planned_steps, in_progress=in_progress,
        initial_entropy=initial, final_entropy=final,
        final_entropy_steps=k_final if len(h) else 0, entropy_ratio=ratio,
        n_val=len(v),
        first_val_acc=put("first_val_acc", Stat(float(v[0])) if len(v) else no_v),
        final_val_acc=put("final_val_acc", Stat(float(v[-1])) if len(v) else no_v),
        final_val_step=int(v_steps[-1]) if len(v) else None,
        best_val_acc=put("best_val_acc", Stat(float(v[best])) if len(v) else no_v),
        best_val_step=int(v_steps[best]) if len(v) else None,
        a=put("a", Stat(fit.a) if fit else law_na),
        b=put("b", Stat(fit.b) if fit else law_na),
        r2=put("r2", _r2(fit, law.reason)),
        ceiling=put("ceiling", Stat(fit.ceiling) if fit else law_na),
        ceiling_ci=[*fit.ceiling_ci] if fit else None,
        law_rmse=put("law_rmse", Stat(fit.rmse) if fit else law_na),
        law_points=len(law.steps),
        forecast_rmse=put("forecast_rmse", Stat(early.rmse) if early else
                          Stat(None, law.early_reason)),
        forecast_final_error=early.final_error if early else None,
        forecast_fit_points=early.fit.n_points if early else None,
        pos_cov_frac=put("pos_cov_frac", Stat(float((cov > 0).mean())) if len(cov) else
                         Stat(None, f"no {COV_NPG} logged")),
        cov_steps=len(cov),
        corr_dh_pred=put("corr_dh_pred", corr.with_pred),
        corr_dh_cov_pg=put("corr_dh_cov_pg", corr.with_cov_pg),
        corr_steps=corr.n_steps,
        wall_time_s=put("wall_time_s", _total(data, STEP_TIME, notes)),
        eval_time_s=_total(data, EVAL_TIME, []).value,
        skew_early_steps=skew_steps,
        skew_early=_skew(data, skew_steps), skew_all=_skew(data, None),
        na=na, notes=notes,
    )


def _law_warnings(fit: LawFit | None) -> list[str]:
    """Notes for a law fit whose numbers should not be read as a forecast.

    A low R² means the run's accuracy does not follow ``R = −a·exp(H) + b`` (e.g. entropy kept
    on choices the reward ignores, so accuracy rises while H stays flat); a ceiling above 100%
    means the fitted curve does not bound the run. Either way a, b and the ceiling describe
    the fit, not the run.
    """
    if fit is None:
        return []
    warnings = []
    if math.isfinite(fit.r2) and fit.r2 < LOW_R2:
        warnings.append(f"the law fits this run poorly (R² {fit.r2:.2f} < {LOW_R2}): its "
                        "accuracy does not follow its entropy as R = −a·exp(H) + b says, so "
                        "a, b and the ceiling are not a forecast")
    if fit.ceiling > 1.0:
        warnings.append(f"the law's ceiling b − a = {fit.ceiling:.1%} is above 100%: the "
                        "fitted curve does not bound this run's accuracy")
    return warnings


def fit_run_law(data: RunData, *, fit_fraction: float = EARLY_FIT_FRACTION) -> LawResult:
    """Fit the law on (``train/entropy`` at each validation step, ``val/acc``) pairs."""
    empty = np.empty(0)
    h_steps, h = data.series(ENTROPY)
    v_steps, v = data.series(SCORE)
    reason = None
    if not len(h):
        reason = f"no {ENTROPY} logged"
    elif not len(v):
        reason = f"no validation points ({SCORE} never logged)"
    if reason is not None:
        return LawResult(empty, empty, empty, None, reason, None, reason, 0)
    aligned = align(law_series(ENTROPY, h_steps, h), law_series(SCORE, v_steps, v))
    fit: LawFit | None = None
    early: EarlyForecast | None = None
    p = len(aligned.steps)
    if p < MIN_POINTS:
        reason = (f"only {p} validation point(s) paired with an entropy; the law has 2 "
                  f"parameters and needs at least {MIN_POINTS}")
    else:
        try:
            fit = fit_law(aligned.entropy, aligned.score)
        except LawDataError as err:
            reason = str(err)
    early_reason = reason
    if fit is not None:
        cut = aligned.steps.min() + fit_fraction * np.ptp(aligned.steps)  # the law's split
        n_window = int((aligned.steps <= cut).sum())
        if n_window < MIN_POINTS:
            early_reason = (f"only {n_window} validation(s) in the first {fit_fraction:.0%} of "
                            f"the run (steps <= {cut:g}), at least {MIN_POINTS} needed; "
                            "validate more often early on")
    if fit is not None and early_reason is None:
        try:
            early = early_forecast(aligned.steps, aligned.entropy, aligned.score,
                                   fit_fraction=fit_fraction)
        except LawDataError as err:
            early_reason = str(err)
    return LawResult(aligned.steps, aligned.entropy, aligned.score, fit, reason, early,
                     early_reason, aligned.n_dropped)


def pearson(x: np.ndarray, y: np.ndarray) -> Stat:
    """Pearson correlation of paired ``[K]`` samples, or ``None`` with the reason."""
    if len(x) < MIN_POINTS:
        return Stat(None, f"{len(x)} step(s) with both values; at least {MIN_POINTS} needed")
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return Stat(None, "one of the two series is constant; correlation undefined")
    return Stat(float(dx @ dy) / denom)


def _dh_correlations(data: RunData) -> DeltaHCorrelations:
    """corr(ΔH, predicted ΔH) and corr(ΔH, −cov_pg) over the steps logging both."""
    if not data.has(DELTA_H):
        stat = Stat(None, f"no {DELTA_H} logged (older metrics file?)")
        return DeltaHCorrelations(stat, stat, 0)
    dh = data.columns[DELTA_H]
    pred_key = PRED_DELTA_H if data.has(PRED_DELTA_H) else None
    if pred_key is not None:
        pred = data.columns[pred_key]
    elif data.has(COV_NPG):  # docs/metrics.md: pred_delta_entropy = −cov_npg
        pred = -data.columns[COV_NPG]
    else:
        pred = np.full_like(dh, np.nan)
    both = np.isfinite(dh) & np.isfinite(pred)
    corr_pred = pearson(dh[both], pred[both])
    if data.has(COV_PG):
        neg_pg = -data.columns[COV_PG]
        ok = np.isfinite(dh) & np.isfinite(neg_pg)
        corr_pg = pearson(dh[ok], neg_pg[ok])
    else:
        corr_pg = Stat(None, f"no {COV_PG} logged")
    return DeltaHCorrelations(corr_pred, corr_pg, int(both.sum()))


def _total(data: RunData, key: str, notes: list[str]) -> Stat:
    """Sum of a timing key; notes the steps that lack it."""
    values = data.series(key)[1]
    if not len(values):
        return Stat(None, f"no {key} logged")
    missing = len(data.steps) - len(values)
    if key == STEP_TIME and missing:
        notes.append(f"wall time sums {len(values)} of {len(data.steps)} steps "
                     f"({missing} lack {key})")
    return Stat(float(values.sum()))


def skew_keys(keys: list[str] | set[str] | dict[str, Any]) -> list[str]:
    """The skew-table keys present, from the smallest top fraction to ``dyn/cov_all``."""
    tops = sorted((float(m.group(1)), k) for k in keys if (m := _SKEW_KEY.match(k)))
    out = [k for _, k in tops]
    return [*out, "dyn/cov_all"] if "dyn/cov_all" in keys else out


def skew_label(key: str) -> str:
    """``dyn/cov_top0.2pct`` → ``top 0.2%``; ``dyn/cov_all`` → ``all``."""
    m = _SKEW_KEY.match(key)
    return f"top {m.group(1)}%" if m else "all"


def _skew(data: RunData, first: int | None) -> dict[str, float | None]:
    """Mean of each skew key over the first ``first`` logged steps (all steps if ``None``)."""
    out: dict[str, float | None] = {}
    for key in skew_keys(data.columns):
        col = data.columns[key] if first is None else data.columns[key][:first]
        col = col[np.isfinite(col)]
        out[skew_label(key)] = float(col.mean()) if len(col) else None
    return out


def _ratio(num: float | None, den: float | None) -> Stat:
    if num is None or den is None:
        return Stat(None, f"needs the initial and final {ENTROPY}")
    if den <= 0:
        return Stat(None, "initial entropy is zero")
    return Stat(num / den)


def _r2(fit: LawFit | None, reason: str | None) -> Stat:
    if fit is None:
        return Stat(None, reason)
    if not math.isfinite(fit.r2):
        return Stat(None, "validation accuracy is constant, so R² is undefined")
    return Stat(fit.r2)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value
