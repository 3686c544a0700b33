"""Where metrics go: ``<run>/metrics.jsonl`` (always) and optional TensorBoard / W&B / MLflow.

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
    """Append-only metrics writer with optional mirrors to external trackers."""

    def __init__(self, run_dir: Path, sinks: list[str], run_name: str, config: Mapping[str, Any]):
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._mirrors: list[Any] = []
        for sink in sinks:
            self._mirrors.append(_open_mirror(sink, run_dir, run_name, config))

    def write(self, metrics: Mapping[str, Any]) -> None:
        """Write one step's metrics (must contain ``step``)."""
        row = {k: _clean(v) for k, v in metrics.items()}
        self._file.write(json.dumps(row, sort_keys=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        step = int(row["step"])
        numbers = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        for mirror in self._mirrors:
            mirror(numbers, step)

    def close(self) -> None:
        """Close the file (and flush the mirrors)."""
        self._file.close()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the rows with ``step <= last_step`` (used when resuming)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= last_step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a crash
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _open_mirror(sink: str, run_dir: Path, run_name: str, config: Mapping[str, Any]) -> Any:
    try:
        if sink == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

            def tb(numbers: dict[str, float], step: int) -> None:
                for key, value in numbers.items():
                    writer.add_scalar(key, value, step)
                writer.flush()

            return tb
        if sink == "wandb":
            import wandb

            wb_run = wandb.init(name=run_name, dir=str(run_dir), config=dict(config))
            return lambda numbers, step: wb_run.log(numbers, step=step)
        if sink == "mlflow":
            import mlflow

            mlflow.start_run(run_name=run_name)
            return lambda numbers, step: mlflow.log_metrics(
                {k.replace("/", "_"): v for k, v in numbers.items()}, step=step
            )
    except ImportError as err:
        raise UserError(
            f"metric sink {sink!r} needs a package that is not installed ({err.name}). "
            f"Install it with: pip install 'entropyrl[{sink}]', or remove it from `sinks`."
        ) from None
    raise UserError(f"unknown metric sink {sink!r}; expected tensorboard, wandb or mlflow")
