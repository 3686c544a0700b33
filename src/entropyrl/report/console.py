"""``print_summary``: the report's summary table in the terminal (rich)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from entropyrl.report.html import duration, pct

# (summary field, row label, formatter)
_ROWS: tuple[tuple[str, str, Any], ...] = (
    ("n_steps", "steps", str),
    ("wall_time_s", "wall time", duration),
    ("initial_entropy", "initial H (nats)", lambda v: f"{v:.3g}"),
    ("final_entropy", "final H (nats)", lambda v: f"{v:.3g}"),
    ("entropy_ratio", "final / initial H", pct),
    ("final_val_acc", "final val acc", pct),
    ("best_val_acc", "best val acc", pct),
    ("a", "law a", lambda v: f"{v:.3g}"),
    ("b", "law b", lambda v: f"{v:.3g}"),
    ("r2", "law R²", lambda v: f"{v:.3f}"),
    ("ceiling", "ceiling b − a", pct),
    ("forecast_rmse", "forecast RMSE", pct),
    ("pos_cov_frac", "steps cov > 0", pct),
    ("corr_dh_pred", "corr(ΔH, −cov)", lambda v: f"{v:.2f}"),
)


def print_summary(summary: Mapping[str, Any], console: Any = None) -> None:
    """Print a ``write_report`` result: one column per method, then n/a reasons and notes.

    Methods are columns (not rows) so that the table fits a terminal of 80 columns.

    Args:
        summary: the dict returned by :func:`~entropyrl.report.write_report`.
        console: a ``rich.console.Console`` (default: a new one on stdout).
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console if console is not None else Console()
    methods: Mapping[str, Mapping[str, Any]] = summary.get("methods", {})
    colors: Mapping[str, str] = summary.get("colors", {})
    table = Table(title="Entropy report", header_style="bold", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", no_wrap=True)
    for name in methods:
        color = colors.get(name)
        table.add_column(f"[{color}]{name}[/]" if color else name, justify="right")
    reasons: dict[tuple[str, str], list[str]] = {}  # (method, reason) → row labels
    for field, label, fmt in _ROWS:
        cells = []
        for name, m in methods.items():
            value = m.get(field)
            if value is None:
                cells.append("[dim]n/a[/dim]")
                reason = m.get("na", {}).get(field, "not available")
                reasons.setdefault((name, reason), []).append(label)
            else:
                cells.append(fmt(value))
        table.add_row(label, *cells)
    console.print(table)
    for (name, reason), labels in reasons.items():
        console.print(f"[dim]n/a — {name}, {', '.join(labels)}: {reason}[/dim]", highlight=False)
    for name, m in methods.items():
        for note in m.get("notes", []):
            console.print(f"[dim]note — {name}: {note}[/dim]", highlight=False)
    for finding in summary.get("findings", []):
        console.print(f"• {finding}", highlight=False)
