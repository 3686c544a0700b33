"""Read one run's ``metrics.jsonl`` into per-key columns, tolerating imperfect logs.

The report must never crash on a run a user can produce: an older file without the newest
keys, a run still being written (a torn last line), a resumed run that re-logged steps, or
NaN values (the metrics sink writes non-finite floats as ``null``; other writers may write a
bare ``NaN``). Every such value becomes NaN in its column and is skipped by the statistics,
and what was tolerated is recorded in ``RunData.notes``. Only a missing or unreadable file is
an error (a :class:`~entropyrl.errors.UserError`: the CLI exits with status 2).

Shapes: ``S`` logged steps of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from entropyrl.errors import UserError
from entropyrl.train.metrics import parse_json_lines

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True, eq=False)
class RunData:
    """The numeric columns of one run, aligned on its steps."""

    name: str
    source: Path  # the metrics.jsonl file read
    steps: np.ndarray  # [S] float64, strictly increasing
    columns: dict[str, np.ndarray]  # key → [S] float64, NaN where not logged / not finite
    notes: tuple[str, ...]  # what the reader tolerated, shown in the report
    planned_steps: int | None  # ``steps`` of the run's config.yaml, when readable
    nonfinite: dict[str, int]  # key → rows where it was written as null/NaN/inf

    def has(self, key: str) -> bool:
        """Whether ``key`` has at least one finite value."""
        col = self.columns.get(key)
        return col is not None and bool(np.isfinite(col).any())

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [K], values [K])`` of the finite values of ``key`` (empty if absent)."""
        col = self.columns.get(key)
        if col is None:
            return np.empty(0), np.empty(0)
        ok = np.isfinite(col)
        return self.steps[ok], col[ok]


def metrics_path(run: Path) -> Path:
    """The metrics file of a run argument: ``RUN/metrics.jsonl``, or ``RUN`` if it is a file."""
    run = Path(run)
    if run.is_file():
        return run
    path = run / METRICS_FILE
    if not path.is_file():
        if not run.exists():
            raise UserError(f"{run}: no such directory; pass a training run directory "
                            f"(the --out of `entropyrl train`), which holds {METRICS_FILE}")
        raise UserError(f"{run}: no {METRICS_FILE} in this directory; pass a training run "
                        f"directory (the --out of `entropyrl train`) or the {METRICS_FILE} "
                        "file itself")
    return path


def load_run_data(run: Path, name: str | None = None) -> RunData:
    """Read a run directory (or its ``metrics.jsonl``) into :class:`RunData`.

    Args:
        run: the run directory, or the metrics file itself.
        name: display name; default the run directory's name.

    Raises:
        UserError: the file is missing or unreadable.
    """
    path = metrics_path(run)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}; is it a metrics.jsonl file?") from None
    notes: list[str] = []
    rows = _parse_rows(text, path, notes)
    steps, columns, bad = _to_columns(rows)
    for key, count in sorted(bad.items()):
        notes.append(f"{key}: {count} non-finite value(s) (null/NaN) ignored")
    return RunData(
        name=name or path.resolve().parent.name,
        source=path,
        steps=steps,
        columns=columns,
        notes=tuple(notes),
        planned_steps=_planned_steps(path.parent),
        nonfinite=bad,
    )


def _parse_rows(text: str, path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """JSON objects of the file; bad lines are skipped with a note, never fatal."""
    parsed = parse_json_lines(text)
    if parsed.torn_last is not None:
        notes.append(f"skipped an incomplete last line ({parsed.torn_last}); run in progress?")
    rows: list[dict[str, Any]] = []
    skipped = [lineno for lineno, _ in parsed.bad]
    for lineno, obj in parsed.rows:
        if not isinstance(obj, dict) or _float(obj.get("step")) is None:
            skipped.append(lineno)
            continue
        rows.append(obj)
    if skipped:
        shown = ", ".join(str(n) for n in sorted(skipped)[:5])
        notes.append(f"skipped {len(skipped)} line(s) that are not JSON objects with a "
                     f"numeric 'step' (line {shown})")
    return rows


def _to_columns(
    rows: list[dict[str, Any]],
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, int]]:
    """Columns on sorted unique steps; a re-logged step (a resume) keeps its last row."""
    by_step: dict[float, dict[str, Any]] = {}
    for row in rows:
        step = _float(row["step"])
        assert step is not None  # filtered by _parse_rows
        by_step[step] = row  # later rows win, as after a resume
    steps = np.array(sorted(by_step), dtype=np.float64)
    keys = sorted({k for row in by_step.values() for k in row if k != "step"})
    columns: dict[str, np.ndarray] = {}
    bad: dict[str, int] = {}
    for key in keys:
        col = np.full(len(steps), np.nan)
        for i, s in enumerate(steps):
            row = by_step[float(s)]
            if key not in row:
                continue
            raw = row[key]
            value = _float(raw)
            if raw is None or (value is not None and not math.isfinite(value)):
                bad[key] = bad.get(key, 0) + 1  # a metric that went NaN (the sink writes null)
            elif value is not None:
                col[i] = value
            # strings, lists, objects: not a metric, left NaN without a note
        if key in bad or np.isfinite(col).any():
            columns[key] = col
    return steps, columns, bad


def _float(value: Any) -> float | None:
    """A JSON value as float; ``None`` for null, booleans, strings and containers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _planned_steps(run_dir: Path) -> int | None:
    """``steps`` from the run's ``config.yaml`` (written by the trainer), if readable."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        import yaml

        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # a report must not fail on a config it only reads for a hint
        return None
    steps = cfg.get("steps") if isinstance(cfg, dict) else None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None
