"""Read raw records from a local file (``.jsonl``, ``.json``, ``.parquet``) or the Hugging Face hub.

Each record comes with its 1-based row number, the number an error message quotes: for
``.jsonl`` the line number in the file (blank lines are skipped but counted), for ``.json`` and
``.parquet`` the position in the list. A ``.jsonl`` line that is not valid JSON is a bad row
(it can be skipped like any other); a ``.json`` file that does not parse is unreadable.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropyrl.errors import UserError

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class RawRecord:
    """One record as read, before any schema is applied."""

    number: int
    """1-based row number in the source (the line number for ``.jsonl``)."""
    data: Any
    """The decoded record (normally a dict); None when ``error`` is set."""
    error: str | None = None
    """Why the record could not be decoded (invalid JSON line)."""


def is_local(source: str | Path) -> bool:
    """True when ``source`` names a local file (existing, or with a data-file suffix)."""
    p = Path(source)
    return p.exists() or p.suffix.lower() in LOCAL_SUFFIXES or isinstance(source, Path)


def read_local(path: str | Path) -> Iterator[RawRecord]:
    """Yield the records of a local ``.jsonl``, ``.json`` or ``.parquet`` file.

    ``.json`` holds a list of objects or ``{"data": [...]}``.

    Raises:
        UserError: missing file, unsupported suffix, unreadable content, or no parquet reader.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: data file not found. Check the path (relative to {Path.cwd()}).")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        try:
            records = list(_read_jsonl(p) if suffix == ".jsonl" else _read_json(p))
        except UnicodeDecodeError as e:
            raise UserError(
                f"{p}: not UTF-8 text (byte {e.start}: {e.reason}). Save the file as UTF-8, or "
                "check that it is the data file you meant."
            ) from None
        yield from records
    elif suffix == ".parquet":
        for i, rec in enumerate(_read_parquet(p), start=1):
            yield RawRecord(i, rec)
    else:
        raise UserError(
            f"{p}: unsupported data file type {suffix or '(none)'!r}; "
            f"use one of {', '.join(LOCAL_SUFFIXES)}, or a Hugging Face dataset id."
        )


def _read_jsonl(p: Path) -> Iterator[RawRecord]:
    with p.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield RawRecord(number, json.loads(line))
            except json.JSONDecodeError as e:
                yield RawRecord(number, None, f"invalid JSON ({e.msg} at column {e.colno})")


def _read_json(p: Path) -> Iterator[RawRecord]:
    try:
        with p.open(encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{p}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}). A .json file "
            "must hold a list of objects or {\"data\": [...]}; use .jsonl for one object per line."
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise UserError(
            f"{p}: expected a JSON list of objects or {{\"data\": [...]}}, "
            f"got a {type(obj).__name__} at the top level."
        )
    for i, rec in enumerate(obj, start=1):
        yield RawRecord(i, rec)


def _read_parquet(p: Path) -> list[Any]:
    try:
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        pq = None
    try:
        if pq is not None:
            return list(pq.read_table(p).to_pylist())
        pd = importlib.import_module("pandas")
        return list(pd.read_parquet(p).to_dict("records"))
    except ImportError as e:
        raise UserError(
            f"{p}: reading .parquet files needs pyarrow (or pandas with a parquet engine). "
            "Install it with `pip install pyarrow`, or convert the file to .jsonl."
        ) from e
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(
            f"{p}: not a readable parquet file ({type(e).__name__}: {e}). Check that the "
            "download finished, or convert the data to .jsonl."
        ) from None


def read_hub(source: str, split: str | None = None, config: str | None = None) -> list[Any]:
    """Records of a Hugging Face dataset, through ``datasets.load_dataset``.

    Args:
        source: dataset id, optionally with its configuration after ``@`` and the split after
            a colon: ``"openai/gsm8k@main:test"``.
        split: split to read; when neither this nor the id names one, the dataset's only split,
            else ``test``, else ``train``.
        config: dataset configuration name, if it has several (overrides the id's ``@``).

    Raises:
        UserError: ``datasets`` missing, the dataset or split not found, or no network.
    """
    name, _, id_split = source.partition(":")
    name, _, id_config = name.partition("@")
    split = split or id_split or None
    config = config or id_config or None
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as e:
        raise UserError(
            f"{source!r} is not a local file, and loading Hugging Face datasets needs the "
            "`datasets` package: `pip install 'entropyrl[math]'` (or pass a local .jsonl file)."
        ) from e
    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise UserError(
            f"Could not load the Hugging Face dataset {name!r} (split {split!r}): "
            f"{type(e).__name__}: {e}. Check the id, config and split, and that you are online "
            "(or download the data and pass a local file)."
        ) from e
    if split is None and isinstance(loaded, Mapping):
        splits = list(loaded)
        chosen = splits[0] if len(splits) == 1 else next(
            (s for s in ("test", "train") if s in loaded), None
        )
        if chosen is None:
            raise UserError(
                f"{name}: several splits {splits} and none is 'test' or 'train'; "
                f"name one, e.g. {name}:{splits[0]}."
            )
        loaded = loaded[chosen]
    return list(loaded)
