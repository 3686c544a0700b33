"""The self-contained ``report.html``: summary table, findings, figures with captions, skew table.

Built from the ``summary.json`` dict alone (plus the PNG files, embedded as base64 so the page
can be mailed or attached as one file). Every "n/a" carries its reason, as a tooltip and in the
notes under the table, so a reader never has to guess why a number is missing.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# (summary field, column header, formatter, tooltip of the header)
Fmt = Callable[[Any], str]


def _num(digits: int) -> Fmt:
    return lambda v: f"{v:.{digits}g}"


def _fixed(digits: int) -> Fmt:
    return lambda v: f"{v:.{digits}f}"


def pct(v: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * v:.1f}%"


def duration(seconds: float) -> str:
    """Seconds as ``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


COLUMNS: tuple[tuple[str, str, Fmt, str], ...] = (
    ("n_steps", "steps", str, "rollout steps logged"),
    ("wall_time_s", "wall time", duration, "Σ time/step_s (training steps, without validation)"),
    ("initial_entropy", "initial H", _num(3), "train/entropy at the first step, nats"),
    ("final_entropy", "final H", _num(3), "mean train/entropy over the last 10% of steps"),
    ("entropy_ratio", "final/initial H", pct, "final H as a share of the initial H"),
    ("final_val_acc", "final acc", pct, "last val/acc"),
    ("best_val_acc", "best acc", pct, "highest val/acc"),
    ("a", "a", _num(3), "law R = −a·exp(H) + b, least squares"),
    ("b", "b", _num(3), "law R = −a·exp(H) + b, least squares"),
    ("r2", "R²", _fixed(3), "coefficient of determination of the law fit"),
    ("ceiling", "ceiling b−a", pct, "the law's accuracy at zero entropy"),
    ("forecast_rmse", "forecast RMSE", pct,
     "law fitted on the first 15% of the run, error on the later validations"),
    ("pos_cov_frac", "cov > 0", pct, "share of steps with dyn/cov_npg > 0"),
    ("corr_dh_pred", "corr(ΔH, −cov)", _fixed(2),
     "Pearson correlation across steps of measured ΔH and its prediction −cov_npg"),
)

CAPTIONS = {
    "entropy": (
        "Policy entropy over training",
        "Mean token entropy of the policy on each step's training batch (the H of the law). "
        "Falling lines are entropy collapse: the policy becomes sure of its answers and stops "
        "exploring. Methods that manage entropy should stay above the baseline."),
    "val_acc": (
        "Validation accuracy over training",
        "Accuracy on the held-out set at each validation step (val/acc, the R of the law): "
        "greedy, or the mean over k samples for runs with eval.acc: sampled, as the testbed "
        "presets. Compare where each method ends and whether it is still rising."),
    "law": (
        "Accuracy against entropy, with the fitted law",
        "Each dot is one validation: the training entropy at that step (x) and the accuracy "
        "(y). The solid curve is R = −a·exp(H) + b fitted to the dots; the dashed part extends "
        "it to zero entropy, where the star marks the ceiling b − a: the accuracy the law "
        "predicts once entropy is spent. Runs move from right to left as entropy falls. With "
        "several runs, the first panel overlays them all: the paper finds one curve per model "
        "and data set, whatever the algorithm."),
    "covariance": (
        "Covariance and the entropy change it predicts",
        "Left: each dot is a training step; x is the covariance between the log-probability "
        "of a sampled token and its advantage, y the entropy drop measured on the same batch "
        "before and after the update. Theory predicts −ΔH ∝ covariance (a rising cloud); r is "
        "their correlation across steps. Right: the covariance per step; while it stays "
        "above zero, entropy keeps falling (thin: each step; thick: moving average)."),
    "skew": (
        "How concentrated the covariance is",
        "Mean per-token covariance among the top-ranked tokens (top 0.02%, 0.2%, …, all), "
        "early in training and over the whole run. A few tokens carry covariances orders of "
        "magnitude above the average: those are the tokens Clip-Cov and KL-Cov act on."),
}

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:32px auto;
max-width:1180px;color:#222;line-height:1.45;padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0}
th,td{padding:5px 9px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f6f6f6;font-weight:600;border-bottom:2px solid #ccc;cursor:help}
td:first-child,th:first-child{text-align:left}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;
vertical-align:-1px}
.na{color:#999;cursor:help}
figure{margin:18px 0 30px}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:14px;max-width:900px}figcaption b{color:#222}
ul.notes{font-size:13px;color:#555}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
.findings li{margin:3px 0}
"""


def render_html(summary: Mapping[str, Any], figures: Mapping[str, Path]) -> str:
    """The report page for a ``summary.json`` dict and its figure files."""
    methods: Mapping[str, Mapping[str, Any]] = summary["methods"]
    colors: Mapping[str, str] = summary.get("colors", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>entropyrl report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>Entropy report</h1>",
        f"<p class='sub'>{len(methods)} run(s) · generated {html.escape(summary['created'])} "
        f"by entropyrl {html.escape(summary['version'])} · formulas in docs/report.md</p>",
        "<h2>Summary</h2>",
        "<p class='sub'>Entropy in nats; accuracy in % of the validation set; hover a column "
        "header for its formula.</p>",
        _summary_table(methods, colors), _notes(methods),
        _findings(summary.get("findings", []), summary.get("baseline")),
    ]
    for key, (title, caption) in CAPTIONS.items():
        if key in figures:
            parts.append(_figure(figures[key], title, caption))
        if key == "skew":
            parts.append(_skew_table(methods, colors))
    parts.append("</body></html>")
    return "\n".join(parts)


def _cell(m: Mapping[str, Any], field: str, fmt: Fmt) -> str:
    value = m.get(field)
    if value is None:
        reason = m.get("na", {}).get(field, "not available")
        return f"<td><span class='na' title='{html.escape(reason, quote=True)}'>n/a</span></td>"
    return f"<td>{html.escape(fmt(value))}</td>"


def _swatch(name: str, colors: Mapping[str, str]) -> str:
    color = html.escape(colors.get(name, "#777777"), quote=True)
    return f"<span class='sw' style='background:{color}'></span>{html.escape(name)}"


def _summary_table(methods: Mapping[str, Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    head = "".join(f"<th title='{html.escape(tip, quote=True)}'>{html.escape(label)}</th>"
                   for _, label, _, tip in COLUMNS)
    rows = []
    for name, m in methods.items():
        cells = "".join(_cell(m, field, fmt) for field, _, fmt, _ in COLUMNS)
        rows.append(f"<tr><td>{_swatch(name, colors)}</td>{cells}</tr>")
    return (f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(rows)}"
            "</tbody></table>")


def _notes(methods: Mapping[str, Mapping[str, Any]]) -> str:
    """Why each n/a is n/a (fields sharing a reason grouped), then what the reader tolerated."""
    labels = {field: label for field, label, _, _ in COLUMNS}
    items = []
    for name, m in methods.items():
        by_reason: dict[str, list[str]] = {}
        for field, reason in m.get("na", {}).items():
            if field in labels:
                by_reason.setdefault(reason, []).append(labels[field])
        for reason, fields in by_reason.items():
            items.append(f"<li><b>{html.escape(name)}</b> — {html.escape(', '.join(fields))}: "
                         f"n/a because {html.escape(reason)}</li>")
        items += [f"<li><b>{html.escape(name)}</b> — {html.escape(note)}</li>"
                  for note in m.get("notes", [])]
    if not items:
        return ""
    return f"<ul class='notes'>{''.join(items)}</ul>"


def _findings(findings: list[str], baseline: str | None) -> str:
    if not findings:
        return ""
    items = "".join(f"<li>{html.escape(f)}</li>" for f in findings)
    versus = f" (compared with {html.escape(baseline)})" if baseline and len(findings) > 1 else ""
    return f"<h3>What the runs show{versus}</h3><ul class='findings'>{items}</ul>"


def _figure(path: Path, title: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<h2>{html.escape(title)}</h2><figure><img alt='{html.escape(title, quote=True)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)} "
            f"<i>({html.escape(path.name)})</i></figcaption></figure>")


def _skew_table(methods: Mapping[str, Mapping[str, Any]], colors: Mapping[str, str]) -> str:
    labels: list[str] = []
    for m in methods.values():
        labels += [k for k in m.get("skew_all", {}) if k not in labels]
    if not labels:
        return "<p class='na'>Skew table: no <code>dyn/cov_top*</code> keys were logged.</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in labels)
    rows = []
    for name, m in methods.items():
        for attr, when in (("skew_early", f"first {m.get('skew_early_steps')} steps"),
                           ("skew_all", "all steps")):
            table = m.get(attr, {})
            cells = "".join(
                f"<td>{table[k]:.3g}</td>" if table.get(k) is not None
                else "<td><span class='na' title='not logged'>n/a</span></td>"
                for k in labels)
            rows.append(f"<tr><td>{_swatch(name, colors)} · {when}</td>{cells}</tr>")
    return ("<p>Mean per-token covariance <code>cov_i</code> of the top tokens (keys "
            "<code>dyn/cov_top*</code>, averaged over steps):</p>"
            f"<table><thead><tr><th>method · steps</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")
