"""What every log reader returns: each logged key's raw ``(step, value, where)`` entries.

Readers keep values raw and convert only the keys a fit uses (:func:`number`), so a text
column or a list somewhere else in a log never stops a fit of two numeric keys. ``where`` is
``file:line`` (or ``file:tag``) for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError

Entry = tuple[float | None, Any, str]  # (step or None when the row has none, raw value, where)


@dataclass
class LogTable:
    """Every key of one log file (or TensorBoard directory) with its raw entries."""

    source: Path
    format: str  # "jsonl" | "verl-jsonl" | "csv" | "verl-console" | "trainer-state" | "tensorboard"
    columns: dict[str, list[Entry]] = field(default_factory=dict)
    step_key: str = "step"  # the column (or built-in counter) the steps came from
    step_found: bool = True  # False: the log has no such column (an error if a key is used)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, step: float | None, value: Any, where: str) -> None:
        """Append one logged value of ``key``."""
        self.columns.setdefault(key, []).append((step, value, where))

    @property
    def keys(self) -> list[str]:
        """The logged keys, sorted."""
        return sorted(self.columns)


def number(value: Any, key: str, where: str) -> float | None:
    """A logged value as float; ``None`` when absent (null, empty cell)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{where}: {key} = {value!r} is not a number; pick a numeric key")
    try:
        return float(value)
    except ValueError:
        raise UserError(
            f"{where}: {key} = {value!r} is not a number; pick a numeric key, or repair that row"
        ) from None


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or a ``UserError`` saying it is not a text log."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"cannot read {path}: {err}; is it a text log (JSON lines, CSV, a "
            "verl console log) or a TensorBoard events file?"
        ) from None
