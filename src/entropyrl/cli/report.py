"""``entropyrl report``: compare training runs in one HTML page, JSON file and terminal table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``report`` subcommand."""
    p = sub.add_parser(
        "report",
        help="summarise and plot training runs: entropy, accuracy, the law, covariance",
        description=(
            "Reads each RUN's metrics.jsonl and writes DIR/report.html (figures embedded), "
            "DIR/summary.json and the PNG figures: entropy and validation accuracy over "
            "steps, accuracy vs entropy with the fitted law R = -a*exp(H) + b and its "
            "ceiling, covariance vs the measured entropy change, and the covariance skew "
            "table. Runs in progress and older metrics files are reported with n/a where a "
            "number cannot be computed. See docs/report.md."
        ),
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run directories (the --out of `entropyrl train`) or metrics.jsonl files")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                   help="output directory for report.html, summary.json and the figures")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="display name of each RUN, in order (default: the directory names)")
    p.add_argument("--skew-steps", type=int, default=10, metavar="N",
                   help="the skew table's early column averages the first N steps (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the arguments, write the report and print the summary."""
    from entropyrl.errors import UserError
    from entropyrl.report import print_summary, write_report
    from entropyrl.report.load import metrics_path

    runs: list[Path] = list(args.runs)
    for path in runs:
        metrics_path(path)  # fails early, naming the run without a metrics.jsonl
    if args.names is not None and len(args.names) != len(runs):
        raise UserError(f"--names has {len(args.names)} name(s) for {len(runs)} run(s); give "
                        "one name per RUN, in the same order, or leave --names out")
    if args.skew_steps < 1:
        raise UserError(f"--skew-steps must be a positive number of steps, got {args.skew_steps}")
    names = args.names or [_default_name(p) for p in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"several runs are named {', '.join(duplicates)}; give each a distinct "
                        "name with --names")
    summary = write_report(dict(zip(names, runs, strict=True)), args.out,
                           skew_steps=args.skew_steps)
    print_summary(summary)
    print(f"report: {args.out / 'report.html'}")
    return 0


def _default_name(path: Path) -> str:
    path = path.resolve()
    return path.parent.name if path.is_file() else path.name
