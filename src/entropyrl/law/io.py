"""Read entropy and score series from training logs: ours and other frameworks'.

The format is recognised from the content (docs/law.md has examples of each):

- **JSON lines** — our ``<run>/metrics.jsonl``; verl's file logger
  (``{"step": 3, "data": {…}}``) (:mod:`.read_json`);
- **trainer_state.json** — Hugging Face Trainer's ``log_history`` (TRL) (:mod:`.read_json`);
- **verl console log** — ``step:N - key:value - …`` lines as printed to stdout, with Ray
  prefixes and colour codes (:mod:`.read_console`);
- **CSV / TSV** with a header row — W&B exports, any table (:mod:`.read_csv`);
- **TensorBoard** event files or directories (:mod:`.read_tensorboard`).

A run argument is a file, or a directory holding ``metrics.jsonl``, ``trainer_state.json``
(also in its newest ``checkpoint-N/``) or TensorBoard event files. Keys are looked up by
:mod:`.keys` (names, aliases, patterns); with no key given, the framework's defaults
(:mod:`.frameworks`) are tried after ours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from entropyrl.errors import UserError
from entropyrl.law.align import Series, make_series
from entropyrl.law.frameworks import FRAMEWORKS, Framework, guess_framework
from entropyrl.law.keys import Resolved, first_resolvable, missing_key, resolve
from entropyrl.law.logtable import LogTable, number, read_text
from entropyrl.law.read_console import looks_like_console, read_console
from entropyrl.law.read_csv import read_csv, sniff_delimiter
from entropyrl.law.read_json import read_json_lines, read_trainer_state, try_json_document
from entropyrl.law.read_tensorboard import read_tensorboard

# Step columns tried, in order, when the default step key is absent (W&B, HF Trainer, verl).
STEP_FALLBACKS: tuple[str, ...] = ("_step", "global_step", "trainer/global_step", "Step")
DEFAULT_KEYS = {"entropy": "train/entropy", "score": "val/acc", "step": "step"}
KeySpec = str | Sequence[str] | None


@dataclass(frozen=True)
class RunLog:
    """The two series the law needs from one run, and where they came from."""

    name: str
    source: Path  # the file (or TensorBoard directory) read
    format: str  # "jsonl" | "verl-jsonl" | "csv" | "verl-console" | "trainer-state" | "tensorboard"
    entropy: Series
    score: Series
    notes: tuple[str, ...] = ()  # things the reader tolerated or merged, shown to the user
    framework: str = "unknown"  # whose conventions the log follows (frameworks.py)
    entropy_columns: tuple[str, ...] = ()  # the log's columns read as the entropy
    score_columns: tuple[str, ...] = ()  # … and as the score (several: merged aliases)

    @property
    def conventions(self) -> Framework:
        """The :class:`~entropyrl.law.frameworks.Framework` of this log."""
        return FRAMEWORKS.get(self.framework, FRAMEWORKS["unknown"])


def load_run(
    path: str | Path,
    *,
    entropy_key: KeySpec = None,
    score_key: KeySpec = None,
    step_key: str = DEFAULT_KEYS["step"],
    name: str | None = None,
    strict: bool = False,
) -> RunLog:
    """Read the entropy and score series of one run.

    NaN/inf values are dropped with a note (``strict``: refused).

    Args:
        path: a log file or a run directory (see the module docstring).
        entropy_key: name(s) or pattern(s) of the policy entropy ``H``; ``None``: ours
            (``train/entropy``), else the framework's default.
        score_key: name(s) or pattern(s) of the evaluation score ``R``, merged into one series;
            ``None``: ours (``val/acc``), else the framework's default.
        step_key: key of the training step in JSON lines and CSV (other formats carry it).
        name: display name; default the run directory's (or file's) name.
        strict: refuse NaN/inf values instead of dropping them.

    Raises:
        UserError: unreadable file, unrecognised format, missing key (listing the keys
            present), non-numeric or NaN/inf values.
    """
    table = read_log(path, step_key)
    framework = guess_framework(table.format, table.keys)
    notes = list(table.notes)
    h_cols = _columns(table, framework, entropy_key, "entropy", notes)
    r_cols = _columns(table, framework, score_key, "score", notes)
    entropy = _series(table, h_cols, "--entropy-key", strict, notes)
    score = _series(table, r_cols, "--score-key", strict, notes)
    return RunLog(name or default_name(Path(path)), table.source, table.format, entropy, score,
                  tuple(notes), framework.name, h_cols.columns, r_cols.columns)


def default_name(path: Path) -> str:
    """A run's display name: its directory's name for ``<run>/metrics.jsonl``, else the stem."""
    if path.is_dir():
        return path.resolve().name
    if path.name in ("metrics.jsonl", "trainer_state.json") or "tfevents" in path.name:
        parent = path.resolve().parent
        return parent.parent.name if parent.name.startswith("checkpoint-") else parent.name
    return path.stem


def read_log(path: str | Path, step_key: str = DEFAULT_KEYS["step"]) -> LogTable:
    """Every key of a run's log, the format recognised from the content."""
    file, kind = _locate(Path(path))
    if kind == "tensorboard":
        return read_tensorboard(file)
    text = read_text(file)
    if not text.strip():
        raise UserError(f"{file}: empty file; expected a training log (JSON lines, CSV with a "
                        "header row, a verl console log, trainer_state.json)")
    doc = try_json_document(text)
    if doc is not None:
        return read_trainer_state(file, doc)
    if text.lstrip()[:1] in ("{", "["):
        return read_json_lines(file, text, step_key, STEP_FALLBACKS)
    if looks_like_console(text):
        return read_console(file, text)
    delimiter = sniff_delimiter(file, text)
    if delimiter is not None:
        return read_csv(file, text, delimiter, step_key, STEP_FALLBACKS)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")[:120]
    raise UserError(
        f"{file}: not a log format entropyrl fit recognises. It reads JSON lines (one object "
        "per line), trainer_state.json, a verl console log ('step:N - key:value - …' lines), "
        f"CSV/TSV with a header row, and TensorBoard events; the file starts with {first!r}. "
        "Convert the log to one of these (e.g. CSV with a step column)"
    )


def _locate(p: Path) -> tuple[Path, str]:
    """Resolve a run argument to ``(file or TensorBoard directory, "text" | "tensorboard")``."""
    if not p.exists():
        raise UserError(f"{p}: no such file or directory; pass a run directory or a log file")
    if not p.is_dir():
        return p, ("tensorboard" if "tfevents" in p.name.lower() else "text")
    if (p / "metrics.jsonl").is_file():
        return p / "metrics.jsonl", "text"
    if (p / "trainer_state.json").is_file():
        return p / "trainer_state.json", "text"
    checkpoints = sorted(p.glob("checkpoint-*/trainer_state.json"), key=_checkpoint_number)
    if checkpoints:
        return checkpoints[-1], "text"  # the newest holds the whole log history
    dirs = sorted({e.parent for e in p.rglob("*tfevents*") if e.is_file()})
    if len(dirs) == 1:
        return dirs[0], "tensorboard"
    if dirs:
        listing = ", ".join(str(d) for d in dirs[:10])
        raise UserError(f"{p}: TensorBoard events in {len(dirs)} directories ({listing}); "
                        "pass the one directory of the run to fit")
    raise UserError(f"{p}: no metrics.jsonl, trainer_state.json or TensorBoard event files in "
                    "this directory; pass the log file itself")


def _checkpoint_number(path: Path) -> int:
    m = re.search(r"checkpoint-(\d+)", str(path))
    return int(m.group(1)) if m else -1


def _columns(table: LogTable, framework: Framework, spec: KeySpec, what: str,
             notes: list[str]) -> Resolved:
    option = f"--{what}-key"
    names = table.keys
    source = str(table.source)
    if spec is not None:
        return resolve([spec] if isinstance(spec, str) else list(spec), names, source, option)
    ours = DEFAULT_KEYS[what]
    if ours in names:
        return Resolved((ours,), (ours,))
    candidates = (tuple((k,) for k in framework.entropy_keys) if what == "entropy"
                  else framework.score_keys)
    found = first_resolvable([(ours,), *candidates], names, source, option)
    if found is None:
        raise missing_key(ours, names, source, option)
    if found.spec != (ours,):
        notes.append(f"{what}: no {ours!r} in the log; read {' + '.join(found.columns)} "
                     f"({framework.name} default; choose another with {option})")
    return found


def _series(table: LogTable, cols: Resolved, option: str, strict: bool,
            notes: list[str]) -> Series:
    """One series from the resolved columns; several columns are merged (first one wins)."""
    where = str(table.source)
    parts: list[Series] = []
    for col in cols.columns:
        steps, values = [], []
        for step, raw, loc in table.columns[col]:
            value = number(raw, col, loc)
            if value is None:
                continue
            if step is None:
                if not table.step_found:
                    raise missing_key(table.step_key, table.keys, where, "--step-key")
                raise UserError(f"{loc}: has {col} but no step ({table.step_key}); repair the "
                                "row or pass --step-key")
            steps.append(step)
            values.append(value)
        parts.append(make_series(col, steps, values, source=where, drop_nonfinite=not strict,
                                 notes=notes))
    if len(parts) == 1:
        return parts[0]
    merged: dict[float, float] = {}
    clashes = 0
    for part in reversed(parts):  # the first column is written last: it wins
        for s, v in zip(part.steps.tolist(), part.values.tolist(), strict=True):
            clashes += s in merged and merged[s] != v
            merged[s] = v
    counts = ", ".join(f"{p.key} ({len(p)} value{'s' * (len(p) != 1)}"
                       f"{', step ' + format(p.steps[0], 'g') if len(p) == 1 else ''})"
                       for p in parts)
    clash = f"; {clashes} step(s) logged under several names kept the first" if clashes else ""
    notes.append(f"{option[2:]}: merged {len(parts)} keys into one series: {counts}{clash}")
    steps_m = np.array(sorted(merged))
    return make_series(parts[0].key, steps_m, [merged[s] for s in steps_m.tolist()])
