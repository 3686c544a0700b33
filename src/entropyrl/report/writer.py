"""``write_report``: summaries, figures, ``summary.json`` and ``report.html`` for a set of runs.

The comparison uses a *baseline*: the method named GRPO if there is one, else the first run.
Each other method's final entropy is given as a multiple of the baseline's (the paper's
"KL-Cov keeps entropy >10× GRPO's plateau"), its final accuracy as a difference in points, and
its late validations' mean distance above the baseline's law (:mod:`entropyrl.report.compare`):
whether the entropy it keeps buys accuracy, or costs it at the law's rate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError
from entropyrl.report.compare import LATE_FRACTION, law_offset
from entropyrl.report.load import load_run_data
from entropyrl.report.summary import (
    EARLY_FIT_FRACTION,
    FINAL_FRACTION,
    SKEW_EARLY_STEPS,
    LawResult,
    RunSummary,
    fit_run_law,
    summarize,
)

DEFINITIONS = {
    "initial_entropy": "train/entropy at the first logged step (nats)",
    "final_entropy": f"mean train/entropy over the last {FINAL_FRACTION:.0%} of logged steps "
                     "(at least one)",
    "entropy_ratio": "final_entropy / initial_entropy",
    "final_val_acc": "val/acc at the last validation step (fraction)",
    "best_val_acc": "highest val/acc (fraction)",
    "a, b, r2, ceiling": "least-squares fit of val/acc = −a·exp(H) + b, H = train/entropy at "
                         "the validation step (entropyrl.law alignment); ceiling = b − a",
    "forecast_rmse": f"law fitted on the first {EARLY_FIT_FRACTION:.0%} of the validated step "
                     "range, RMSE on the later validations (fraction)",
    "pos_cov_frac": "share of steps with dyn/cov_npg > 0",
    "corr_dh_pred": "Pearson correlation across steps of dyn/delta_entropy and "
                    "dyn/pred_delta_entropy (= −dyn/cov_npg)",
    "corr_dh_cov_pg": "Pearson correlation across steps of dyn/delta_entropy and −dyn/cov_pg",
    "wall_time_s": "Σ time/step_s (training steps; validation time is eval_time_s)",
    "law_offset_vs_baseline": "mean of val/acc − (b₀ − a₀·exp(H)) over the method's validations "
                              f"after {LATE_FRACTION:.0%} of its step range with H inside the "
                              "baseline's fitted range; a₀, b₀ the baseline's law (fraction)",
    "skew_early / skew_all": "mean of dyn/cov_top*pct and dyn/cov_all over the first "
                             "skew_early_steps logged steps / over all steps",
}


def write_report(
    runs: Mapping[str, Path], out_dir: Path, *, skew_steps: int = SKEW_EARLY_STEPS
) -> dict[str, Any]:
    """Summarise each run, draw the figures, write ``summary.json`` and ``report.html``.

    Args:
        runs: method name → run directory (or its ``metrics.jsonl``), in display order.
        out_dir: where the files go (created if needed).
        skew_steps: how many first steps the skew table's "early" column averages.

    Returns:
        The ``summary.json`` dict: ``methods`` (name → :meth:`RunSummary.to_dict`),
        ``colors``, ``baseline``, ``comparison``, ``findings``, ``figures``, ``definitions``.

    Raises:
        UserError: a run has no readable ``metrics.jsonl``.
    """
    from entropyrl.report.plots import write_figures

    out_dir = Path(out_dir)
    data = [load_run_data(Path(path), name) for name, path in runs.items()]
    laws = {d.name: fit_run_law(d) for d in data}
    summaries = {d.name: summarize(d, law=laws[d.name], skew_steps=skew_steps) for d in data}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = write_figures(data, laws, summaries, out_dir)
        return _write_summary(summaries, laws, figures, out_dir)
    except OSError as err:  # a full disk, a read-only location, a file in the way
        raise UserError(
            f"cannot write the report in {out_dir} ({err.strerror or err}). Choose a writable "
            "--out with free space; the runs themselves were only read."
        ) from None


def _write_summary(summaries: dict[str, Any], laws: dict[str, Any], figures: dict[str, Path],
                   out_dir: Path) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.html``; returns the summary."""
    from entropyrl import __version__
    from entropyrl.report.html import render_html
    from entropyrl.report.plots import method_colors

    baseline = _baseline(list(summaries))
    comparison = _comparison(summaries, laws, baseline)
    summary: dict[str, Any] = {
        "version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "methods": {name: s.to_dict() for name, s in summaries.items()},
        "colors": method_colors(list(summaries)),
        "baseline": baseline,
        "comparison": comparison,
        "findings": _findings(summaries, comparison, baseline),
        "figures": {key: path.name for key, path in figures.items()},
        "definitions": DEFINITIONS,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n",
                                          encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(summary, figures), encoding="utf-8")
    return summary


def _baseline(names: list[str]) -> str | None:
    for name in names:
        if re.sub(r"[^a-z0-9]", "", name.lower()) == "grpo":
            return name
    return names[0] if names else None


def _comparison(summaries: Mapping[str, RunSummary], laws: Mapping[str, LawResult],
                baseline: str | None) -> dict[str, Any]:
    """Per method: final entropy ÷ the baseline's, final accuracy − the baseline's, law offset."""
    if baseline is None:
        return {}
    base = summaries[baseline]
    out: dict[str, Any] = {}
    for name, s in summaries.items():
        ratio = None
        if s.final_entropy is not None and base.final_entropy:
            ratio = s.final_entropy / base.final_entropy
        delta = None
        if s.final_val_acc is not None and base.final_val_acc is not None:
            delta = s.final_val_acc - base.final_val_acc
        offset = law_offset(laws[baseline], laws[name])
        out[name] = {"final_entropy_vs_baseline": ratio, "final_val_acc_minus_baseline": delta,
                     "law_offset_vs_baseline": offset.offset.value,
                     "law_offset_points": offset.n_points,
                     "law_offset_reason": offset.offset.reason}
    return out


def _findings(summaries: Mapping[str, RunSummary], comparison: Mapping[str, Any],
              baseline: str | None) -> list[str]:
    """One plain sentence per method (numbers only where they exist)."""
    out = []
    base = summaries.get(baseline) if baseline else None
    for name, s in summaries.items():
        offset = (comparison[name]["law_offset_vs_baseline"]
                  if baseline is not None and name != baseline else None)
        parts = []
        if s.initial_entropy is not None and s.final_entropy is not None:
            share = f" ({s.entropy_ratio:.0%} of its start)" if s.entropy_ratio else ""
            parts.append(f"entropy {s.initial_entropy:.3g} → {s.final_entropy:.3g} nats{share}")
        if base is not None and name != baseline and s.final_entropy and base.final_entropy:
            parts.append(f"{s.final_entropy / base.final_entropy:.1f}× {baseline}'s final "
                         "entropy")
        if s.first_val_acc is not None and s.final_val_acc is not None:
            parts.append(f"accuracy {100 * s.first_val_acc:.1f}% → {100 * s.final_val_acc:.1f}%")
        if (base is not None and name != baseline and s.final_val_acc is not None
                and base.final_val_acc is not None):
            diff = 100 * (s.final_val_acc - base.final_val_acc)
            parts.append(f"{diff:+.1f} points vs {baseline}".replace("-", "−"))
        if offset is not None and round(100 * offset, 1) == 0:
            parts.append(f"late validations on {baseline}'s law at their entropy")
        elif offset is not None:
            where = "above" if offset > 0 else "below"
            parts.append(f"late validations {100 * abs(offset):.1f} points {where} "
                         f"{baseline}'s law at their entropy")
        if s.r2 is not None and s.ceiling is not None:
            parts.append(f"law R² {s.r2:.2f}, ceiling {100 * s.ceiling:.1f}%")
        if s.pos_cov_frac is not None:
            parts.append(f"covariance > 0 on {s.pos_cov_frac:.0%} of steps")
        if s.corr_dh_pred is not None:
            parts.append(f"corr(ΔH, −cov) {s.corr_dh_pred:.2f}")
        if parts:
            out.append(f"{name}: " + "; ".join(parts) + ".")
    return out
