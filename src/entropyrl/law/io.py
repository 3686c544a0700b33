"""Read entropy and score series from training logs: ours and other frameworks'.

Formats (chosen from the path; docs/law.md has examples):

- **JSON lines** — one object per line: our ``<run>/metrics.jsonl``, verl's file logger
  (``{"step": 3, "data": {"actor/entropy": …}}``) and similar. Nested objects are flattened
  with ``/`` (``data/actor/entropy``). A truncated *last* line (a run being written, or a
  crash) is skipped with a note; a bad line elsewhere is an error.
- **CSV / TSV** with a header row (W&B exports, any table). Empty cells mean "not logged".
- **TensorBoard** event files (scalar and tensor-scalar summaries), through the
  ``tensorboard`` package (optional extra ``entropyrl[tensorboard]``).

A run argument is a file, or a directory holding ``metrics.jsonl`` or TensorBoard event
files. Key lookup: a column *equal* to the key, else the one column *ending* with ``/KEY``
(flattened nesting, e.g. verl's ``data/…``) or `` - KEY`` (W&B chart export
``"<run> - KEY"``). A missing key fails with the keys the file has.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError
from entropyrl.law.align import Series, make_series
from entropyrl.train.metrics import parse_json_lines

# Step columns tried, in order, when the default step key is absent (W&B, HF Trainer, verl).
STEP_FALLBACKS: tuple[str, ...] = ("_step", "global_step", "trainer/global_step", "Step")
DEFAULT_KEYS = {"entropy": "train/entropy", "score": "val/acc", "step": "step"}


@dataclass(frozen=True)
class RunLog:
    """The two series the law needs from one run, and where they came from."""

    name: str
    source: Path  # the file (or TensorBoard directory) read
    format: str  # "jsonl" | "csv" | "tensorboard"
    entropy: Series
    score: Series
    notes: tuple[str, ...] = ()  # things the reader tolerated, shown to the user


def load_run(
    path: str | Path,
    *,
    entropy_key: str = DEFAULT_KEYS["entropy"],
    score_key: str = DEFAULT_KEYS["score"],
    step_key: str = DEFAULT_KEYS["step"],
    name: str | None = None,
    strict: bool = False,
) -> RunLog:
    """Read the entropy and score series of one run.

    NaN/inf values are dropped with a note (``strict``: refused).

    Args:
        path: a log file, or a run directory (``metrics.jsonl`` or TensorBoard events).
        entropy_key: key of the policy entropy ``H``.
        score_key: key of the evaluation score ``R``.
        step_key: key of the training step (ignored for TensorBoard, whose events carry it).
        name: display name; default the run directory's (or file's) name.
        strict: refuse NaN/inf values instead of dropping them.

    Raises:
        UserError: unreadable file, unknown format, missing key (listing the keys present),
            non-numeric or NaN/inf values.
    """
    file, fmt = detect_format(path)
    keys = (entropy_key, score_key)
    notes: list[str] = []
    if fmt == "tensorboard":
        columns = _read_tensorboard(file, keys)
    elif fmt == "csv":
        columns = _read_csv(file, keys, step_key)
    else:
        columns = _read_jsonl(file, keys, step_key, notes)
    where = str(file)
    drop = not strict
    entropy = make_series(entropy_key, *columns[entropy_key], source=where,
                          drop_nonfinite=drop, notes=notes)
    score = make_series(score_key, *columns[score_key], source=where, drop_nonfinite=drop,
                        notes=notes)
    return RunLog(name or default_name(Path(path)), file, fmt, entropy, score, tuple(notes))


def default_name(path: Path) -> str:
    """A run's display name: its directory's name for ``<run>/metrics.jsonl``, else the stem."""
    if path.is_dir():
        return path.resolve().name
    if path.name == "metrics.jsonl" or "tfevents" in path.name:
        return path.resolve().parent.name
    return path.stem


def detect_format(path: str | Path) -> tuple[Path, str]:
    """Resolve a run argument to ``(file or TensorBoard directory, format)``."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or directory; pass a run directory or a log file")
    if p.is_dir():
        if (p / "metrics.jsonl").is_file():
            return p / "metrics.jsonl", "jsonl"
        dirs = sorted({e.parent for e in p.rglob("*tfevents*") if e.is_file()})
        if len(dirs) == 1:
            return dirs[0], "tensorboard"
        if dirs:
            listing = ", ".join(str(d) for d in dirs[:10])
            raise UserError(f"{p}: TensorBoard events in {len(dirs)} directories ({listing}); "
                            "pass the one directory of the run to fit")
        raise UserError(f"{p}: no metrics.jsonl and no TensorBoard event files in this "
                        "directory; pass the log file itself (.jsonl, .csv or tfevents)")
    lower = p.name.lower()
    if "tfevents" in lower:
        return p, "tensorboard"
    if lower.endswith((".csv", ".tsv")):
        return p, "csv"
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return p, "jsonl"
    first = _read_text(p).lstrip()[:1]
    return p, ("jsonl" if first == "{" else "csv")


Columns = dict[str, tuple[list[float], list[float]]]  # key → (steps, values)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"cannot read {path}: {err}; is it a text log (JSON lines or CSV)?"
        ) from None


def _resolve(key: str, available: Iterable[str], source: Path, option: str) -> str:
    """The column ``key`` names in ``available`` (exact, else a unique ``/KEY`` / `` - KEY``)."""
    names = sorted(set(available))
    if key in names:
        return key
    hits = [n for n in names if n.endswith("/" + key) or n.endswith(" - " + key)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UserError(f"{source}: key {key!r} matches several columns ({', '.join(hits)}); "
                        f"pass the full name with {option}")
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(names[:60]) + (f", … ({len(names)} in all)" if len(names) > 60 else "")
    raise UserError(f"{source}: no key {key!r} (option {option}).{hint} Keys in the file: "
                    f"{shown or '(none)'}")


def _resolve_step(step_key: str, available: Sequence[str], source: Path) -> str:
    try:
        return _resolve(step_key, available, source, "--step-key")
    except UserError:
        if step_key != DEFAULT_KEYS["step"]:
            raise
        for alt in STEP_FALLBACKS:
            if alt in available:
                return alt
        raise


def _number(value: Any, key: str, where: str) -> float | None:
    """A logged value as float; ``None`` when absent (null / empty cell)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"{where}: {key} = {value!r} is not a number")
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{where}: {key} = {value!r} is not a number") from None


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "/"))
        else:
            out[name] = v
    return out


def _read_jsonl(path: Path, keys: Sequence[str], step_key: str, notes: list[str]) -> Columns:
    parsed = parse_json_lines(_read_text(path))
    bad = parsed.bad or ([(parsed.torn_last, "a lone unreadable line")]
                         if parsed.torn_last is not None and not parsed.rows else [])
    if bad:
        lineno, msg = bad[0]
        raise UserError(f"{path}:{lineno}: not valid JSON ({msg}); the file must hold "
                        "one JSON object per line")
    if parsed.torn_last is not None:  # a line still being written, or torn by a crash
        notes.append(f"skipped an incomplete last line ({parsed.torn_last}) of {path}")
    rows: list[tuple[int, dict[str, Any]]] = []
    for lineno, obj in parsed.rows:
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        rows.append((lineno, _flatten(obj)))
    available = sorted({name for _, row in rows for name in row})
    step = _resolve_step(step_key, available, path)
    columns = {key: _resolve(key, available, path, _option(key, keys)) for key in keys}
    out: Columns = {key: ([], []) for key in keys}
    for lineno, row in rows:
        for key, col in columns.items():
            value = _number(row.get(col), col, f"{path}:{lineno}")
            if value is None:
                continue
            s = _number(row.get(step), step, f"{path}:{lineno}")
            if s is None:
                raise UserError(f"{path}:{lineno}: has {col} but no step ({step})")
            out[key][0].append(s)
            out[key][1].append(value)
    return out


def _read_csv(path: Path, keys: Sequence[str], step_key: str) -> Columns:
    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    table = list(csv.reader(_read_text(path).splitlines(), delimiter=delimiter))
    if not table:
        raise UserError(f"{path}: empty file; expected a header row and one row per step")
    header = [h.strip() for h in table[0]]
    step = header.index(_resolve_step(step_key, header, path))
    columns = {key: header.index(_resolve(key, header, path, _option(key, keys))) for key in keys}
    out: Columns = {key: ([], []) for key in keys}
    for lineno, row in enumerate(table[1:], start=2):
        for key, col in columns.items():
            cell = row[col].strip() if col < len(row) else ""
            value = _number(cell, header[col], f"{path}:{lineno}")
            if value is None:
                continue
            s = _number(row[step].strip() if step < len(row) else "", header[step],
                        f"{path}:{lineno}")
            if s is None:
                raise UserError(f"{path}:{lineno}: has {header[col]} but no step")
            out[key][0].append(s)
            out[key][1].append(value)
    return out


def _read_tensorboard(path: Path, keys: Sequence[str]) -> Columns:
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError:
        raise UserError("reading TensorBoard event files needs the `tensorboard` package: "
                        "pip install 'entropyrl[tensorboard]' (or export the run to CSV)") from None
    acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    try:
        acc.Reload()
    except Exception as err:  # the reader raises several private error types on corrupt files
        raise UserError(f"cannot read TensorBoard events at {path}: {err}") from None
    tags = acc.Tags()
    scalar_tags, tensor_tags = list(tags.get("scalars", [])), list(tags.get("tensors", []))
    out: Columns = {}
    for key in keys:
        tag = _resolve(key, scalar_tags + tensor_tags, path, _option(key, keys))
        if tag in scalar_tags:
            events = [(float(e.step), float(e.value)) for e in acc.Scalars(tag)]
        else:  # TF2-style summaries store a scalar tensor
            events = []
            for e in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                if arr.size != 1:
                    raise UserError(f"{path}: tag {tag!r} holds tensors of shape "
                                    f"{list(arr.shape)}, not scalars")
                events.append((float(e.step), float(arr.reshape(-1)[0])))
        out[key] = ([s for s, _ in events], [v for _, v in events])
    return out


def _option(key: str, keys: Sequence[str]) -> str:
    return "--entropy-key" if key == keys[0] else "--score-key"
