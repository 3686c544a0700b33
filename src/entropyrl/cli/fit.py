"""``entropyrl fit``: fit the entropy–performance law to runs, forecast, extrapolate across sizes.

Thin layer over :mod:`entropyrl.law` (docs/law.md): read each run, analyse it, print one table
per run (and one for scaling), optionally write JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def param_count(text: str) -> float:
    """Parse a parameter count: ``494M``, ``1.5B``, ``7e9``, ``32b``."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*", text, re.I)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a parameter count; use e.g. 494M, 1.5B or 7e9")
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a fraction in (0, 1), e.g. 0.15 or 0.95 (not a percent)")
    return value


def _from_step(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a step number or 'auto'")
    return value


def add_parser(sub: Any) -> None:
    """Register the ``fit`` subcommand."""
    p = sub.add_parser(
        "fit",
        help="fit R = -a*exp(H) + b to runs; forecast the ceiling early; scale across sizes",
        description=(
            "Fits the entropy-performance law R = -a*exp(H) + b to each RUN (a run directory "
            "or a log file: our metrics.jsonl, verl console or file logs, W&B CSV exports, "
            "TensorBoard events, trainer_state.json; recognised by content), with intervals; "
            "checks how well the first part of the run forecasts the rest; with --backtest, "
            "compares the law with a sigmoid and a power law in training progress; projects "
            "the score to a horizon and to the entropy plateau; with --sizes, fits a and b "
            "log-linearly in parameter count. See docs/law.md."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or log files")
    p.add_argument("--entropy-key", action="append", metavar="KEY",
                   help="key of the policy entropy H (default: train/entropy, else the log's "
                        "framework's, e.g. verl's actor/entropy)")
    p.add_argument("--score-key", action="append", metavar="KEY",
                   help="key of the evaluation score R; repeat it, or use a pattern with * "
                        "or ?, to merge several names into one series (e.g. verl's "
                        "test_score/… before training and val/test_score/… after); default: "
                        "val/acc, else the log's framework's")
    p.add_argument("--pair", choices=("same-step", "policy"),
                   help="pair each score with the entropy logged at the same step, or with "
                        "the entropy of the policy it evaluated (verl, TRL: the next step's); "
                        "default: what the log's framework means, said in the output")
    p.add_argument("--from-step", type=_from_step, metavar="STEP|auto",
                   help="fit only evaluations at steps >= STEP (skip a format-learning phase); "
                        "auto: skip the leading evaluations that sit far below the law")
    p.add_argument("--backtest", action="store_true",
                   help="back-test every forecast form (the law, the law with an entropy "
                        "model, a sigmoid and a power law in progress) on the early window: "
                        "forecast RMSE, final error and coverage of its band")
    p.add_argument("--step-key", default="step",
                   help="key of the training step (default: step; falls back to _step, "
                        "global_step, trainer/global_step, Step)")
    p.add_argument("--fit-fraction", type=_fraction, default=0.15, metavar="F",
                   help="fraction of the run's steps the early forecast fits on (default 0.15)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a log with NaN/inf values (default: drop them with a note)")
    p.add_argument("--robust", action="store_true",
                   help="fit with a robust loss, against outlier evaluations")
    p.add_argument("--robust-loss", choices=("soft_l1", "huber"), default="soft_l1",
                   help="the robust loss used by --robust (default soft_l1)")
    p.add_argument("--intervals", choices=("analytic", "bootstrap"), default="analytic",
                   help="interval method: Jacobian covariance + Student t, or pairs bootstrap")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--level", type=_fraction, default=0.95,
                   help="confidence level of every interval (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of bootstrap and Monte Carlo bands")
    p.add_argument("--horizon", type=float, metavar="STEP",
                   help="project the score to this step (default: the last logged step)")
    p.add_argument("--sizes", nargs="+", type=param_count, metavar="N",
                   help="non-embedding parameter count of each run, in RUN order (1.5B, 494M)")
    p.add_argument("--extrapolate", nargs="+", type=param_count, default=[], metavar="N",
                   help="with --sizes: predict a, b and the ceiling of these sizes")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="write the figure as PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, analyse and report every run."""
    from entropyrl.errors import UserError
    from entropyrl.law import analyze_run, fit_scaling, load_run, run_to_json, scaling_to_json

    if args.sizes is not None and len(args.sizes) != len(args.runs):
        raise UserError(f"--sizes has {len(args.sizes)} value(s) for {len(args.runs)} run(s); "
                        "give one parameter count per RUN, in the same order")
    if args.extrapolate and args.sizes is None:
        raise UserError("--extrapolate needs --sizes (the parameter count of each RUN)")
    if args.n_boot < 50:
        raise UserError(f"--n-boot {args.n_boot}: use at least 50 bootstrap resamples")
    logs = [load_run(path, entropy_key=args.entropy_key, score_key=args.score_key,
                     step_key=args.step_key, strict=args.strict) for path in args.runs]
    logs = _dedupe_names(logs)
    method: Any = args.robust_loss if args.robust else "ols"  # argparse restricts the choices
    analyses = [
        analyze_run(log, fit_fraction=args.fit_fraction, method=method, intervals=args.intervals,
                    level=args.level, n_boot=args.n_boot, seed=args.seed, horizon=args.horizon,
                    pair=args.pair, from_step=args.from_step, backtest=args.backtest)
        for log in logs
    ]
    scaling, predictions = None, []
    if args.sizes is not None:
        scaling = fit_scaling(args.sizes, [r.fit.a for r in analyses],
                              [r.fit.b for r in analyses], level=args.level)
        predictions = [scaling.extrapolate(n) for n in args.extrapolate]
    _print_tables(analyses, scaling, predictions, args.sizes)
    if args.json is not None:
        doc = {
            "runs": [run_to_json(r) for r in analyses],
            "scaling": None if scaling is None else scaling_to_json(
                scaling, [r.run.name for r in analyses], predictions),
        }
        _write(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        from entropyrl.law.plot import plot_analyses

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_analyses(analyses, args.plot, scaling=scaling, predictions=predictions)
        print(f"wrote {args.plot}")
    return 0


def _write(path: Path, text: str) -> None:
    from entropyrl.errors import UserError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write {path}: {err}") from None


def _dedupe_names(logs: list[Any]) -> list[Any]:
    """Runs named alike (``a/run/metrics.jsonl``, ``b/run/metrics.jsonl``) are named by path."""
    from dataclasses import replace

    names = [log.name for log in logs]
    return [replace(log, name=str(log.source)) if names.count(log.name) > 1 else log
            for log in logs]


def _g(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _size(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{_g(ci[0])}, {_g(ci[1])}]"


def _print_tables(analyses: list[Any], scaling: Any, predictions: list[Any], sizes: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: rich would fall back to 80 columns
        console = Console(width=120)
    for r in analyses:
        f, al = r.fit, r.aligned
        pct = f"{round(100 * f.level)}% interval"
        how = f"{f.method}, {f.interval_method}" + (f" ({f.n_boot} resamples)" if f.n_boot else "")
        t = Table(title=f"{r.run.name}  ·  R = −a·exp(H) + b  ·  {how}", title_justify="left")
        t.add_column("quantity", no_wrap=True)
        t.add_column("estimate", justify="right", no_wrap=True)
        t.add_column(pct, justify="right", no_wrap=True)
        t.add_column("note")
        skipped = f", {r.n_skipped} before step {r.from_step:g} skipped" if r.n_skipped else ""
        t.add_row("points", str(f.n_points), "", f"{al.n_exact} exact, {al.n_interpolated} "
                  f"interpolated, {al.n_dropped} without entropy{skipped}; pairing {r.pairing}")
        t.add_row("a", _g(f.a), _ci(f.a_ci), f"se {_g(f.a_se)}")
        t.add_row("b", _g(f.b), _ci(f.b_ci), f"se {_g(f.b_se)}")
        t.add_row("ceiling b − a", _g(f.ceiling), _ci(f.ceiling_ci), "score at H = 0")
        t.add_row("R² / RMSE", f"{_g(f.r2)} / {_g(f.rmse)}", "", "all points")
        if r.early:
            e = r.early
            where = f"fit on steps ≤ {e.split_step:g} ({e.fit.n_points} pts), {len(e.steps)} later"
            t.add_row("early forecast RMSE", _g(e.rmse), "", where)
            t.add_row("  final-step error", f"{e.final_error:+.4g}", "", "predicted − observed")
        if r.forward_rmse is not None:
            t.add_row("forward forecast RMSE", _g(r.forward_rmse), "", "entropy model + law, "
                      "window data only")
            t.add_row("  final-step error", f"{r.forward_final_error:+.4g}", "", "")
        if r.projection is not None:
            pr = r.projection
            t.add_row(f"projected score @ {r.horizon:g}", _g(float(pr.score[-1])),
                      _ci((pr.low[-1], pr.high[-1])), f"entropy {_g(float(pr.entropy[-1]))}, "
                      "all data")
            t.add_row("plateau score", _g(float(r.plateau.score[0])),
                      _ci((r.plateau.low[0], r.plateau.high[0])),
                      f"entropy plateau H∞ = {_g(r.decay.h_inf)}")
        console.print(t)
        if r.backtest:
            _print_backtest(console, r)
        if r.early_warning:
            console.print(f"  warning: {r.early_warning}", highlight=False)
        for note in (r.pairing_note, r.early_note, r.projection_note, *r.run.notes):
            if note:
                console.print(f"  note: {note}", highlight=False)
    if scaling is not None:
        _print_scaling(console, analyses, scaling, predictions, sizes)


def _print_backtest(console: Any, r: Any) -> None:
    from rich.table import Table

    level = round(100 * r.backtest[0].level)
    window = f" fitted on steps ≤ {r.early.split_step:g}" if r.early else ""
    t = Table(title=f"{r.run.name}  ·  back-test: each form{window}, forecasting the later "
                    "evaluations", title_justify="left")
    for col in ("form", "fit pts", "RMSE", "final error", "bias", f"{level}% band coverage",
                "band width"):
        t.add_column(col, justify="left" if col == "form" else "right", no_wrap=True)
    t.add_column("formula / note")
    for b in r.backtest:
        if b.ok:
            t.add_row(b.form, str(b.n_fit), _g(b.rmse), f"{b.final_error:+.4g}",
                      f"{b.bias:+.4g}", f"{b.coverage:.0%} of {len(b.steps)}", _g(b.width),
                      b.formula)
        else:
            t.add_row(b.form, "—", "—", "—", "—", "—", "—", b.note)
    console.print(t)


def _print_scaling(console: Any, analyses: list[Any], scaling: Any, predictions: list[Any],
                   sizes: list[float]) -> None:
    from rich.table import Table

    t = Table(title=f"cross-size scaling  ·  a, b, b − a linear in log10 N  ·  "
                    f"{round(100 * scaling.a.level)}% prediction intervals", title_justify="left")
    t.add_column("run", no_wrap=True)
    for col in ("N params", "a", "a interval", "b", "b interval", "b − a", "b − a interval"):
        t.add_column(col, justify="right", no_wrap=True)
    for r, n in zip(analyses, sizes, strict=True):
        t.add_row(r.run.name, _size(n), _g(r.fit.a), "", _g(r.fit.b), "", _g(r.fit.ceiling), "")
    for p in predictions:
        t.add_row("extrapolated", _size(p.n_params), _g(p.a), _ci(p.a_ci), _g(p.b),
                  _ci(p.b_ci), _g(p.ceiling), _ci(p.ceiling_ci))
    console.print(t)
    for name, line in (("a", scaling.a), ("b", scaling.b), ("b − a", scaling.ceiling)):
        sign = "+" if line.slope >= 0 else "−"
        console.print(f"  {name} = {line.intercept:.4g} {sign} {abs(line.slope):.4g}·log10 N "
                      f"(slope {_ci(line.slope_ci)})", highlight=False)
