"""Where metrics go: ``<run>/metrics.jsonl`` (always) and optional TensorBoard / W&B / MLflow.

This module also holds the project's one JSON-lines parser (:func:`parse_json_lines`): the
trainer's resume truncation, :func:`read_metrics`, the report and the law tool all read
``metrics.jsonl`` files through it, with one rule for a torn last line.

The JSONL file is the contract (keys and formulas in ``docs/metrics.md``): one object per step,
flushed and fsynced after each write, so a crash loses at most the step in flight. On resume
the file is truncated to the steps covered by the checkpoint, so a resumed run's file reads
exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError


def _clean(value: Any) -> Any:
    """JSON-safe scalar: floats stay floats (NaN/inf become null), tensors become numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsSink:
    """Append-only metrics writer, mirrored to accelerate's trackers (TensorBoard, W&B, MLflow).

    Every tracker is started, and given the run's config as hyper-parameters, before the
    first step: one that cannot start is a :class:`~entropyrl.errors.UserError` and the ones
    already started are finished. :meth:`close` finishes them all.
    """

    def __init__(self, run_dir: Path, sinks: list[str], run_name: str, config: Mapping[str, Any]):
        self.path = run_dir / "metrics.jsonl"
        self._trackers: list[Any] = []
        try:
            for sink in sinks:
                tracker = _tracker(sink, run_dir, run_name)
                self._trackers.append(tracker)
                tracker.start()
                tracker.store_init_configuration(_hyperparameters(config))
        except UserError:
            self._finish_trackers()
            raise
        except Exception as err:  # each tracker library raises its own types
            self._finish_trackers()
            raise UserError(
                f"metric sink {sinks[len(self._trackers) - 1]!r} could not start "
                f"({type(err).__name__}: {err}). Fix its settings (e.g. MLFLOW_TRACKING_URI, "
                "WANDB_MODE) or remove it from `sinks`."
            ) from None
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, metrics: Mapping[str, Any]) -> None:
        """Write one step's metrics (must contain ``step``)."""
        row = {k: _clean(v) for k, v in metrics.items()}
        self._file.write(json.dumps(row, sort_keys=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        step = int(row["step"])
        numbers = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        for tracker in self._trackers:
            tracker.log(numbers, step=step)

    def close(self) -> None:
        """Close the file and finish the trackers."""
        self._file.close()
        self._finish_trackers()

    def _finish_trackers(self) -> None:
        for tracker in self._trackers:
            try:
                tracker.finish()
            except Exception:
                pass
        self._trackers = []


def _hyperparameters(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config flattened to dotted keys with scalar values, as trackers store them."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_hyperparameters(value, f"{prefix}{key}."))
        else:
            scalar = isinstance(value, bool | int | float | str) or value is None
            out[prefix + key] = value if scalar else str(value)
    return out


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the rows with ``step <= last_step`` (used when resuming)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed = parse_json_lines("\n".join(lines))
    steps = [(n, _step(row)) for n, row in parsed.rows]
    keep = [lines[n - 1] for n, step in steps if step is not None and step <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    tmp.replace(path)


@dataclass
class JsonLines:
    """A JSON-lines text, parsed.

    Attributes:
        rows: ``(line number, value)`` of every line that parsed, in file order.
        bad: ``(line number, error)`` of lines that did not, except a torn last line.
        torn_last: the line number of an unparsable *last* line (a step still being written,
            or cut by a crash), or None.
    """

    rows: list[tuple[int, Any]]
    bad: list[tuple[int, str]]
    torn_last: int | None


def parse_json_lines(text: str) -> JsonLines:
    """Parse one JSON value per non-blank line (bare NaN / Infinity read as floats)."""
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    out = JsonLines([], [], None)
    for k, (lineno, line) in enumerate(lines):
        try:
            out.rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as err:
            if k == len(lines) - 1:
                out.torn_last = lineno
            else:
                out.bad.append((lineno, err.msg))
    return out


def _step(row: Any) -> float | None:
    """The row's numeric ``step``, or None."""
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    return float(step) if isinstance(step, int | float) and not isinstance(step, bool) else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file (a torn last line is skipped).

    Raises:
        UserError: a line other than the last is not JSON.
    """
    parsed = parse_json_lines(path.read_text(encoding="utf-8"))
    if parsed.bad:
        lineno, msg = parsed.bad[0]
        raise UserError(f"{path}:{lineno}: not valid JSON ({msg}); a metrics.jsonl file holds "
                        "one JSON object per line")
    return [row for _, row in parsed.rows if isinstance(row, dict)]


def _tracker(sink: str, run_dir: Path, run_name: str) -> Any:
    """An accelerate tracker for a sink name (not started)."""
    try:
        from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

        if sink == "tensorboard":
            import tensorboard  # noqa: F401 - fail here, with the install hint, if missing

            return TensorBoardTracker(run_name, run_dir / "tensorboard")
        if sink == "wandb":
            import wandb  # noqa: F401

            return WandBTracker(run_name, dir=str(run_dir))
        if sink == "mlflow":
            import mlflow  # noqa: F401

            return MLflowTracker(experiment_name=run_name, logging_dir=str(run_dir / "mlruns"))
    except ImportError as err:
        raise UserError(
            f"metric sink {sink!r} needs a package that is not installed ({err.name}). "
            f"Install it with: pip install 'entropyrl[{sink}]', or remove it from `sinks`."
        ) from None
    raise UserError(f"unknown metric sink {sink!r}; expected tensorboard, wandb or mlflow")
