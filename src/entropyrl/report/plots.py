"""The report's figures (matplotlib, Agg backend), one PNG each, one colour per method.

Each method keeps its colour in every figure: fixed colours for the methods of the paper
(GRPO grey as the baseline, clip-higher orange, Clip-Cov green, KL-Cov blue, entropy bonus
purple; Okabe–Ito colour-blind-safe hues), the rest of the palette for other names.
Accuracy is drawn in percent; entropy in nats. Captions live in :mod:`.html`.

Shapes: ``S`` logged steps of a run, ``P`` its aligned validation points.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from entropyrl.report.load import RunData
from entropyrl.report.summary import (
    COV_NPG,
    DELTA_H,
    ENTROPY,
    SCORE,
    TARGET,
    LawResult,
    RunSummary,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Known methods by normalised name (lower case, letters and digits only).
KNOWN_COLORS = {
    "grpo": "#4d4d4d",
    "cliphigher": "#e69f00",
    "clipcov": "#009e73",
    "klcov": "#0072b2",
    "entropybonus": "#cc79a7",
}
SPARE_COLORS = ("#d55e00", "#56b4e9", "#8c564b", "#bcbd22", "#17becf", "#9467bd", "#7f7f7f")
FIGURES = {
    "entropy": "entropy.png",
    "val_acc": "val_acc.png",
    "law": "law_fit.png",
    "covariance": "covariance.png",
    "skew": "skew.png",
}
_STYLE: Any = {  # rc parameters (typed Any: matplotlib types the keys as literals)
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10.5,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.dpi": 110,
}


def method_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per method name, stable across figures (see the module docstring)."""
    out: dict[str, str] = {}
    spare = iter(SPARE_COLORS)
    for name in names:
        known = KNOWN_COLORS.get(re.sub(r"[^a-z0-9]", "", name.lower()))
        out[name] = known if known and known not in out.values() else next(spare, "#7f7f7f")
    return out


def write_figures(
    runs: Sequence[RunData],
    laws: Mapping[str, LawResult],
    summaries: Mapping[str, RunSummary],
    out_dir: Path,
) -> dict[str, Path]:
    """Draw every figure into ``out_dir``; returns ``{figure id: path}`` (ids of FIGURES)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = method_colors([r.name for r in runs])
    drawers = {
        "entropy": lambda: _entropy_figure(plt, runs, colors),
        "val_acc": lambda: _val_acc_figure(plt, runs, colors),
        "law": lambda: _law_figure(plt, runs, laws, colors),
        "covariance": lambda: _covariance_figure(plt, runs, summaries, colors),
        "skew": lambda: _skew_figure(plt, summaries, colors),
    }
    paths: dict[str, Path] = {}
    with plt.rc_context(_STYLE):
        for key, draw in drawers.items():
            fig = draw()
            paths[key] = out_dir / FIGURES[key]
            fig.savefig(paths[key], bbox_inches="tight")
            plt.close(fig)
    return paths


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 48)), ha="center", va="center",
            transform=ax.transAxes, color="#777777", fontsize=9.5)


def _entropy_figure(plt: Any, runs: Sequence[RunData], colors: Mapping[str, str]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    low, high = math.inf, 0.0
    for r in runs:
        s, h = r.series(ENTROPY)
        label = r.name if len(h) else f"{r.name} (no {ENTROPY})"
        ax.plot(s, h, color=colors[r.name], lw=1.8, label=label,
                marker="o" if len(h) < 5 else None, ms=4)  # a run just started: show its dots
        if len(h):
            low, high = min(low, float(h.min())), max(high, float(h.max()))
        st, target = r.series(TARGET)
        if len(target):  # a controlled run: its target, dashed, in its colour
            ax.plot(st, target, color=colors[r.name], lw=1.2, ls="--",
                    label=f"{r.name}: target H*")
    # A collapsed run ends 10-100× below the others: a log axis keeps every method readable.
    if 0 < low and high / low > 10:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.05, not 5×10⁻²
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
        ax.set_ylabel("policy entropy H (nats, log scale)")
    else:
        ax.set_ylabel("policy entropy H (nats)")
    ax.set_xlabel("training step")
    ax.set_title("Policy entropy on the training batch")
    ax.legend(loc="best")
    return fig


def _val_acc_figure(plt: Any, runs: Sequence[RunData], colors: Mapping[str, str]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for r in runs:
        s, v = r.series(SCORE)
        label = r.name if len(v) else f"{r.name} (no validation points)"
        ax.plot(s, 100 * v, color=colors[r.name], lw=1.6, marker="o", ms=4, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Validation accuracy (the R of the law)")
    ax.legend(loc="best")
    return fig


def _law_figure(
    plt: Any, runs: Sequence[RunData], laws: Mapping[str, LawResult], colors: Mapping[str, str]
) -> Figure:
    # With several methods a first panel overlays them all: the paper finds the same curve
    # whatever the algorithm (a, b depend on the model and data), which this panel tests.
    overlay = len(runs) > 1
    n = len(runs) + overlay
    cols = min(max(n, 1), 3)
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows), squeeze=False,
                             sharey=True)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    if overlay:
        _law_overlay(flat.pop(0), runs, laws, colors)
    for ax, r in zip(flat, runs, strict=False):
        _law_panel(ax, r.name, laws[r.name], colors[r.name])
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy R (%)")
    fig.suptitle("Entropy–performance law  R = −a·exp(H) + b", fontsize=13, fontweight="bold")
    fig.tight_layout()
    return fig


def _law_overlay(
    ax: Axes, runs: Sequence[RunData], laws: Mapping[str, LawResult], colors: Mapping[str, str]
) -> None:
    ax.set_title("All methods")
    ax.set_xlabel("train entropy H (nats)")
    for r in runs:
        law = laws[r.name]
        ax.scatter(law.entropy, 100 * law.score, s=14, alpha=0.6, color=colors[r.name],
                   label=r.name if len(law.entropy) else f"{r.name} (no points)")
        if law.fit is not None:
            grid = np.linspace(0.0, float(law.entropy.max()), 100)
            ax.plot(grid, 100 * law.fit.predict(grid), color=colors[r.name], lw=1.2)
    ax.set_xlim(left=0.0)
    ax.legend(loc="lower left", fontsize=8)


def _law_panel(ax: Axes, name: str, law: LawResult, color: str) -> None:
    ax.set_title(name, color=color)
    ax.set_xlabel("train entropy H (nats)")
    if len(law.entropy):
        ax.scatter(law.entropy, 100 * law.score, s=26, color=color, alpha=0.85, zorder=3,
                   label="validation points")
    fit = law.fit
    if fit is None:
        _no_data(ax, f"law not fitted: {law.reason}")
        return
    h_max = float(law.entropy.max())
    h_min = float(law.entropy.min())
    seen = np.linspace(h_min, h_max, 100)
    ax.plot(seen, 100 * fit.predict(seen), color=color, lw=2, label="fitted law")
    # The law extended to H = 0 (dashed): the ceiling is an extrapolation, not an observation.
    beyond = np.linspace(0.0, h_min, 50)
    ax.plot(beyond, 100 * fit.predict(beyond), color=color, lw=1.5, ls="--",
            label="law extended to H = 0")
    ax.axhline(100 * fit.ceiling, color=color, lw=0.9, ls=":")
    ax.plot([0], [100 * fit.ceiling], marker="*", ms=14, ls="none", color=color, mec="white",
            zorder=4, clip_on=False, label=f"ceiling b − a = {100 * fit.ceiling:.1f}%")
    r2 = f"{fit.r2:.3f}" if math.isfinite(fit.r2) else "n/a"
    ax.text(0.97, 0.97, f"a = {fit.a:.3g}\nb = {fit.b:.3g}\nR² = {r2}\nn = {fit.n_points}",
            transform=ax.transAxes, ha="right", va="top", fontsize=9,
            bbox={"boxstyle": "round", "fc": "white", "ec": "#cccccc"})
    ax.set_xlim(left=0.0, right=h_max * 1.08 if h_max > 0 else 1.0)
    ax.legend(loc="lower left", fontsize=8)


def _covariance_figure(
    plt: Any,
    runs: Sequence[RunData],
    summaries: Mapping[str, RunSummary],
    colors: Mapping[str, str],
) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    window = 1
    for r in runs:
        cov, dh = r.columns.get(COV_NPG), r.columns.get(DELTA_H)
        color = colors[r.name]
        if cov is not None and dh is not None:
            ok = np.isfinite(cov) & np.isfinite(dh)
            corr = summaries[r.name].corr_dh_pred
            tag = f"r = {corr:.2f}" if corr is not None else "r = n/a"
            left.scatter(cov[ok], -dh[ok], s=16, alpha=0.7, color=color,
                         label=f"{r.name} ({tag}, {int(ok.sum())} steps)")
        else:
            left.scatter([], [], s=16, color=color, label=f"{r.name} (not logged)")
        s, c = r.series(COV_NPG)
        if not len(c):
            right.plot([], [], color=color, lw=2.0, label=f"{r.name} (not logged)")
            continue
        k = max(1, len(c) // 20)
        right.plot(s, c, color=color, lw=0.8, alpha=0.25)
        right.plot(s, moving_average(c, k), color=color, lw=2.0, label=r.name)
        window = max(window, k)
    for ax in (left, right):
        ax.axhline(0.0, color="black", lw=0.8)
    left.axvline(0.0, color="black", lw=0.8)
    left.set_xlabel("token covariance Cov(log π, A)  [dyn/cov_npg]")
    left.set_ylabel("measured entropy drop −ΔH (nats)")
    left.set_title("Covariance predicts the entropy drop")
    left.legend(loc="best", title="r: Pearson, across steps", title_fontsize=8.5)
    right.set_xlabel("training step")
    right.set_ylabel("Cov(log π, A)" + (f", moving average of {window} steps" if window > 1
                                         else ""))
    right.set_title("Covariance over training (> 0: entropy falls)")
    right.legend(loc="best")
    fig.tight_layout()
    return fig


def moving_average(values: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean over the last ``k`` values (fewer at the start); ``[S]`` → ``[S]``."""
    if k <= 1 or not len(values):
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - k, 0)
    return (csum[idx] - csum[start]) / (idx - start)


def _skew_figure(
    plt: Any, summaries: Mapping[str, RunSummary], colors: Mapping[str, str]
) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
    names = list(summaries)
    first = next(iter(summaries.values()), None)
    panels = (("skew_early", f"first {first.skew_early_steps if first else 0} steps"),
              ("skew_all", "all steps"))
    labels: list[str] = []
    for s in summaries.values():
        labels += [k for k in s.skew_all if k not in labels]
    values = [v for s in summaries.values() for v in (*s.skew_early.values(),
                                                      *s.skew_all.values()) if v is not None]
    # Means of the top 0.02% and of all tokens differ by 2-4 orders of magnitude (PAPER.md
    # §2: 5.654 vs 0.003): a log axis shows both; symlog if some mean is negative.
    positive = [abs(v) for v in values if v != 0]
    scale = "linear" if not positive else "log" if min(values) > 0 else "symlog"
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(labels))
    for ax, (attr, title) in zip(axes, panels, strict=True):
        for i, name in enumerate(names):
            table: dict[str, float | None] = getattr(summaries[name], attr)
            heights = [table.get(k) for k in labels]
            logged = any(h is not None for h in heights)
            ax.bar(x + (i - (len(names) - 1) / 2) * width,
                   [h if h is not None else np.nan for h in heights], width,
                   color=colors[name], label=name if logged else f"{name} (not logged)")
        ax.set_xticks(x, labels)
        ax.set_xlabel("tokens ranked by cov_i (largest first)")
        ax.set_title(f"Mean token covariance of the top tokens, {title}")
        if scale == "log":
            ax.set_yscale("log")
        elif scale == "symlog":  # linear within ±linthresh, logarithmic outside
            ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(min(positive))))
            ax.axhline(0.0, color="black", lw=0.8)
        if not labels:
            _no_data(ax, "no dyn/cov_top* keys logged")
    axes[0].set_ylabel("mean cov_i" + {"log": " (log scale)", "symlog": " (symmetric log scale)",
                                        "linear": ""}[scale])
    axes[0].legend(loc="best")
    fig.tight_layout()
    return fig
