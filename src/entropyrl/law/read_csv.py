"""Reader of CSV / TSV tables with a header row: W&B exports and any spreadsheet-like log.

W&B's run-history export has a ``_step`` column and one column per key; its chart export has
``Step`` and ``"<run> - KEY"`` columns, plus ``"<run> - KEY__MIN"`` / ``__MAX`` columns for the
min/max envelope of smoothed charts. The envelope columns are not metrics and are left out
(with a note). Empty cells mean "not logged".
"""

from __future__ import annotations

import csv
from pathlib import Path

from entropyrl.law.logtable import LogTable

ENVELOPE_SUFFIXES = ("__MIN", "__MAX")


def sniff_delimiter(path: Path, text: str) -> str | None:
    """A comma or a tab when the text looks like a table with a header, else ``None``.

    A table: a first line with at least two fields, and a second line with as many.
    """
    lines = [ln for ln in text.splitlines()[:3] if ln.strip()]
    if len(lines) < 2:
        return None
    order = ["\t", ","] if path.name.lower().endswith(".tsv") else [",", "\t"]
    for delim in order:
        rows = list(csv.reader(lines[:2], delimiter=delim))
        if len(rows) == 2 and len(rows[0]) >= 2 and len(rows[1]) == len(rows[0]):
            return delim
    return None


def read_csv(
    path: Path, text: str, delimiter: str, step_key: str, step_fallbacks: tuple[str, ...]
) -> LogTable:
    """Read a table; the step column is ``step_key`` or the first of ``step_fallbacks``."""
    table_rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    header = [h.strip() for h in table_rows[0]]
    table = LogTable(path, "csv")
    step_col = None
    for name in (step_key, *step_fallbacks):
        if name in header:
            step_col = header.index(name)
            table.step_key = name
            break
    envelope = [h for h in header if h.endswith(ENVELOPE_SUFFIXES)]
    if envelope:
        table.notes.append(
            f"{path}: left out {len(envelope)} min/max envelope column(s) "
            f"of a W&B chart export ({envelope[0]}, …)"
        )
    for lineno, row in enumerate(table_rows[1:], start=2):
        where = f"{path}:{lineno}"
        cell = row[step_col].strip() if step_col is not None and step_col < len(row) else ""
        try:
            step = float(cell) if cell else None
        except ValueError:
            step = None
        for col, name in enumerate(header):
            if col == step_col or name in envelope or not name:
                continue
            table.add(name, step, row[col].strip() if col < len(row) else "", where)
    if step_col is None:
        table.step_key, table.step_found = step_key, False
    return table
