"""Readers of JSON logs: JSON lines (ours, verl's file logger) and ``trainer_state.json``.

- **JSON lines**: one object per line. Our ``metrics.jsonl`` (``{"step": 3, "train/entropy":
  …}``) and verl's file logger (``{"step": 3, "data": {"actor/entropy": …}}``). Nested objects
  are flattened with ``/`` (``data/actor/entropy``); verl's ``data`` wrapper is also readable
  without its prefix (key lookup matches ``…/KEY``). A torn *last* line (a live run, a crash)
  is skipped with a note; a bad line elsewhere is an error with its line number.
- **trainer_state.json** (Hugging Face Trainer: TRL's GRPO/PPO trainers, OpenRLHF-style HF
  runs): ``{"log_history": [{"step": 10, "entropy": …}, {"step": 10, "eval_reward": …}]}``;
  the step of each entry is its ``step`` field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError
from entropyrl.law.logtable import LogTable, number
from entropyrl.train.metrics import parse_json_lines


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, names joined with ``/``."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "/"))
        else:
            out[name] = v
    return out


def read_json_lines(
    path: Path, text: str, step_key: str, step_fallbacks: tuple[str, ...]
) -> LogTable:
    """Read a JSON-lines log (see the module docstring)."""
    parsed = parse_json_lines(text)
    bad = parsed.bad or (
        [(parsed.torn_last, "a lone unreadable line")]
        if parsed.torn_last is not None and not parsed.rows
        else []
    )
    if bad:
        lineno, msg = bad[0]
        raise UserError(
            f"{path}:{lineno}: not valid JSON ({msg}); the file must hold one JSON object per line"
        )
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, obj in parsed.rows:
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append((lineno, flatten(obj)))
    verl = bool(rows) and all(any(k.startswith("data/") for k in r) for _, r in rows)
    table = LogTable(path, "verl-jsonl" if verl else "jsonl")
    if parsed.torn_last is not None:
        table.notes.append(f"skipped an incomplete last line ({parsed.torn_last}) of {path}")
    available = {k for _, r in rows for k in r}
    step = step_key
    if step not in available:
        step = next((s for s in step_fallbacks if s in available), step_key)
    table.step_key, table.step_found = step, step in available
    for lineno, row in rows:
        s = number(row.get(step), step, f"{path}:{lineno}")
        for key, value in row.items():
            if key != step:
                table.add(key, s, value, f"{path}:{lineno}")
    return table


def read_trainer_state(path: Path, doc: dict[str, Any]) -> LogTable:
    """Read the ``log_history`` of a Hugging Face ``trainer_state.json``."""
    history = doc.get("log_history")
    if not isinstance(history, list):
        raise UserError(
            f"{path}: no 'log_history' list; is this a Hugging Face trainer_state.json?"
        )
    table = LogTable(path, "trainer-state", step_key="step")
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            continue
        where = f"{path}:log_history[{i}]"
        s = number(entry.get("step"), "step", where)
        for key, value in flatten(entry).items():
            if key != "step":
                table.add(key, s, value, where)
    return table


def try_json_document(text: str) -> dict[str, Any] | None:
    """The text as one JSON object when it is one (``trainer_state.json``), else ``None``."""
    head = text.lstrip()[:1]
    if head != "{":
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "log_history" in doc else None
