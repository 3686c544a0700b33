"""The figure of ``entropyrl fit --plot``: one row per run, plus one for cross-size scaling.

Per run, left to right:

1. score vs entropy: the evaluations (early-fit window filled, later ones hollow), the law
   fitted on all of them with its 95% band, the law fitted on the window alone (dashed), and
   the ceiling ``b − a`` at ``H = 0`` with its interval;
2. entropy vs step: the log, the window, the entropy model fitted on the window and extended;
3. score vs step: the evaluations (those skipped by ``--from-step`` as grey crosses), the
   window, the law applied to the observed entropy, and the forward forecast (entropy model +
   law, window data only) with its prediction band; with ``--backtest``, the sigmoid and
   power-law forecasts; with a horizon past the last step, the projection from all the data
   (also in panel 2). Without an early forecast the reason is printed *below* the panel.

Legends list only what is drawn: an entry whose artist holds no point is left out.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entropyrl.law.analysis import RunAnalysis
from entropyrl.law.scaling import ScalingFit, ScalingPrediction

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WINDOW = "#fde9c4"  # fill of the early-fit window
FIT, EARLY, FWD, OBS = "#1f4e9c", "#d9730d", "#7b3fa0", "#333333"
FORM_COLOURS = {"sigmoid": "#2a9d8f", "power": "#c0392b"}


def _legend(ax: Axes, **kwargs: Any) -> None:
    """A legend of the artists that hold at least one point (none at all: no legend)."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels, strict=True) if _drawn(h)]
    if keep:
        ax.legend([h for h, _ in keep], [lab for _, lab in keep], **kwargs)


def _drawn(artist: object) -> bool:
    if hasattr(artist, "get_xdata"):  # Line2D
        return len(np.asarray(artist.get_xdata())) > 0
    if hasattr(artist, "get_offsets"):  # scatter (PathCollection)
        return len(np.asarray(artist.get_offsets())) > 0
    if hasattr(artist, "get_paths"):  # fill_between, axvspan
        return any(len(p.vertices) > 0 for p in artist.get_paths())
    return True


def plot_analyses(
    analyses: Sequence[RunAnalysis],
    path: str | Path,
    *,
    scaling: ScalingFit | None = None,
    predictions: Sequence[ScalingPrediction] = (),
) -> Path:
    """Draw the figure and save it as PNG at ``path`` (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(analyses) + (scaling is not None)
    fig, axes = plt.subplots(rows, 3, figsize=(16, 4.6 * rows), squeeze=False)
    for row, r in zip(axes, analyses, strict=False):
        _score_vs_entropy(row[0], r)
        _entropy_vs_step(row[1], r)
        _score_vs_step(row[2], r)
    if scaling is not None:
        _scaling_row(axes[-1], scaling, predictions, [r.run.name for r in analyses])
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110, bbox_inches="tight")  # keeps notes written below the axes
    plt.close(fig)
    return out


def _fmt_ci(v: float, ci: tuple[float, float]) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _score_vs_entropy(ax: Axes, r: RunAnalysis) -> None:
    fit, al = r.fit, r.aligned
    in_win = al.steps <= r.early.split_step if r.early else np.zeros(len(al.steps), bool)
    if in_win.any():  # a legend entry only for points that are drawn
        ax.scatter(al.entropy[in_win], al.score[in_win], s=22, color=EARLY, zorder=3,
                   label="evaluations in the early-fit window")
    if (~in_win).any():
        ax.scatter(al.entropy[~in_win], al.score[~in_win], s=22, facecolors="none",
                   edgecolors=OBS, zorder=3,
                   label="later evaluations" if r.early else "evaluations")
    h = np.linspace(0.0, float(al.entropy.max()) * 1.05, 200)
    pct = round(100 * fit.level)
    q = (fit.ceiling_ci[1] - fit.ceiling) / max(fit.ceiling_se, 1e-300)  # t quantile used
    y, se = fit.predict(h), fit.predict_se(h)
    ax.plot(h, y, color=FIT, lw=2, label=f"law fitted on all {fit.n_points} points")
    ax.fill_between(h, y - q * se, y + q * se, color=FIT, alpha=0.15, lw=0,
                    label=f"{pct}% band of the fitted curve")
    if r.early:
        ax.plot(h, r.early.fit.predict(h), color=EARLY, lw=1.5, ls="--",
                label=f"law fitted on the first {r.early.fit_fraction:.0%} only")
    lo, hi = fit.ceiling_ci
    ax.errorbar([0.0], [fit.ceiling], yerr=[[fit.ceiling - lo], [hi - fit.ceiling]], fmt="D",
                color=FIT, ms=7, capsize=5, zorder=4,
                label=f"ceiling b − a (score at H = 0) = {_fmt_ci(fit.ceiling, fit.ceiling_ci)}")
    ax.axhline(fit.ceiling, color=FIT, ls=":", lw=1)
    top = max(float(al.score.max()), hi)
    bottom = min(float(al.score.min()), float(y.min()))
    ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.08 * (top - bottom))
    ax.set_xlim(left=-0.03 * h[-1])
    ax.set_xlabel("policy entropy H (nats)")
    ax.set_ylabel("score R")
    ax.set_title(f"{r.run.name}: R = −a·exp(H) + b\n"
                 f"a = {_fmt_ci(fit.a, fit.a_ci)}, b = {_fmt_ci(fit.b, fit.b_ci)}, "
                 f"R² = {fit.r2:.3f}", fontsize=10)
    _legend(ax, fontsize=8, loc="lower left")


def _window(ax: Axes, r: RunAnalysis) -> None:
    if r.early:
        first = min(float(r.aligned.steps[0]), float(r.run.entropy.steps[0]))
        after = f" after step {r.from_step:g}" if r.from_step is not None else ""
        ax.axvspan(first, r.early.split_step, color=WINDOW, zorder=0,
                   label=f"early-fit window (first {r.early.fit_fraction:.0%}{after})")


def _entropy_vs_step(ax: Axes, r: RunAnalysis) -> None:
    _window(ax, r)
    ax.plot(r.run.entropy.steps, r.run.entropy.values, color=OBS, lw=1, label="logged entropy")
    if r.decay_early is not None and r.forward is not None:
        d, f = r.decay_early, r.forward
        t = np.linspace(d.t0, r.early.split_step if r.early else d.t0, 50)
        ax.plot(t, d.predict(t), color=FWD, lw=1.5, ls="--")
        ax.plot(f.steps, f.entropy, color=FWD, lw=1.5, ls="--",
                label=f"decay model fitted on the window (H∞ = {d.h_inf:.3f})")
        ax.fill_between(f.steps, f.entropy_low, f.entropy_high, color=FWD, alpha=0.15, lw=0,
                        label=f"{round(100 * f.level)}% band of the model")
    p = r.projection
    if p is not None and len(p.steps) > 1:
        ax.plot(p.steps, p.entropy, color=FIT, lw=1.5, ls="--", label="decay model, all data")
        ax.fill_between(p.steps, p.entropy_low, p.entropy_high, color=FIT, alpha=0.15, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("policy entropy H (nats)")
    ax.set_title("entropy trajectory (forward forecast needs H at future steps)", fontsize=10)
    _legend(ax, fontsize=8, loc="upper right")


def _score_vs_step(ax: Axes, r: RunAnalysis) -> None:
    _window(ax, r)
    al, fit = r.aligned, r.fit
    ax.scatter(al.steps, al.score, s=18, color=OBS, zorder=3, label="observed score")
    if r.from_step is not None:
        early = r.run.score.steps < r.from_step
        ax.scatter(r.run.score.steps[early], r.run.score.values[early], s=22, marker="x",
                   color="#999999", zorder=3, label=f"skipped (before step {r.from_step:g})")
    for b in r.backtest:
        if b.ok and b.form in FORM_COLOURS:
            ax.plot(b.steps, b.predicted, color=FORM_COLOURS[b.form], lw=1.2, ls="-.",
                    label=f"{b.form} in progress: RMSE {b.rmse:.3f}, "
                          f"{b.coverage:.0%} in band")
    if r.forward is not None:
        f = r.forward
        ax.fill_between(f.steps, f.low, f.high, color=FWD, alpha=0.15, lw=0,
                        label=f"{round(100 * f.level)}% prediction band (forward)")
        ax.plot(f.steps, f.score, color=FWD, lw=1.5, ls="--",
                label=f"forward: law(decay model), RMSE {r.forward_rmse:.3f}")
    if r.early:
        e = r.early
        ax.plot(e.steps, e.predicted, color=EARLY, lw=1.8,
                label=f"window law at observed H: RMSE {e.rmse:.3f}, final {e.final_error:+.3f}")
    p = r.projection
    if p is not None and len(p.steps) > 1:
        ax.plot(p.steps, p.score, color=FIT, lw=1.5, ls="--",
                label=f"projection from all data to step {r.horizon:g}")
        ax.fill_between(p.steps, p.low, p.high, color=FIT, alpha=0.15, lw=0,
                        label=f"{round(100 * p.level)}% band of the expected score")
    ax.axhline(fit.ceiling, color=FIT, ls=":", lw=1, label=f"ceiling b − a = {fit.ceiling:.3f}")
    ax.set_xlabel("training step")
    ax.set_ylabel("score R")
    if r.early:
        ax.set_title(f"forecast from the first {r.early.fit_fraction:.0%} of the run only",
                     fontsize=10)
    else:
        # The reason goes below the axes, wrapped to the panel's width: as a title it would
        # run over the neighbouring panel's.
        ax.set_title("no early forecast (reason below)", fontsize=10)
        ax.text(0.0, -0.16, textwrap.fill(str(r.early_note), 70), transform=ax.transAxes,
                va="top", ha="left", fontsize=8, color="#555555")
    _legend(ax, fontsize=8, loc="lower right")


def _scaling_row(
    axes: Sequence[Axes], scaling: ScalingFit, predictions: Sequence[ScalingPrediction],
    names: Sequence[str],
) -> None:
    n = scaling.n_params
    sizes = np.concatenate([n, [p.n_params for p in predictions]])
    grid = np.logspace(np.log10(sizes.min()) - 0.1, np.log10(sizes.max()) + 0.1, 100)
    for ax, line, name in zip(axes, (scaling.a, scaling.b, scaling.ceiling),
                              ("a", "b", "ceiling b − a"), strict=True):
        lo, hi = line.interval(grid)
        sign = "+" if line.slope >= 0 else "−"
        ax.plot(grid, line.predict(grid), color=FIT, lw=1.5,
                label=f"{name} = {line.intercept:.3f} {sign} {abs(line.slope):.3f}·log10 N")
        ax.fill_between(grid, lo, hi, color=FIT, alpha=0.15, lw=0,
                        label=f"{round(100 * line.level)}% prediction band")
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel(name)
        ax.set_title(f"cross-size scaling of {name}", fontsize=10)
    for ax, values in zip(axes, _observed(scaling), strict=True):
        ax.scatter(n, values, color=OBS, zorder=3, label="fitted runs")
        for x, v, name in zip(n, values, names, strict=False):
            ax.annotate(name, (x, v), xytext=(6, -10), textcoords="offset points", fontsize=8)
    for i, p in enumerate(predictions):
        for ax, v, ci in zip(axes, (p.a, p.b, p.ceiling), (p.a_ci, p.b_ci, p.ceiling_ci),
                             strict=True):
            ax.errorbar([p.n_params], [v], yerr=[[v - ci[0]], [ci[1] - v]], fmt="D",
                        color=EARLY, capsize=4, zorder=4,
                        label="extrapolated, with prediction interval" if i == 0 else None)
            ax.annotate(f"{v:.3f}", (p.n_params, v), xytext=(6, 4), textcoords="offset points",
                        color=EARLY, fontsize=8)
    for ax in axes:
        _legend(ax, fontsize=8)


def _observed(scaling: ScalingFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return scaling.a_values, scaling.b_values, scaling.b_values - scaling.a_values
