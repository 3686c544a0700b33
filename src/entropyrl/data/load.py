"""Load a math dataset into task rows: read, detect the schema, adapt, template, validate."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entropyrl.data.io import RawRecord, is_local, read_hub, read_local
from entropyrl.data.prompts import render_prompt
from entropyrl.data.schemas import SCHEMAS, BadRow, detect_schema
from entropyrl.errors import UserError

logger = logging.getLogger(__name__)

Row = dict[str, Any]

# How many records auto-detection looks at before giving up (bad leading rows are tolerated).
_DETECT_WINDOW = 100
_MAX_REPORTED = 20


@dataclass
class LoadResult:
    """The task rows of one source and what was skipped."""

    rows: list[Row]
    """Task rows: ``prompt``, ``answer``, ``data_source``, ``question``, ``schema``, ``row``."""
    schema: str
    """The schema used (given or detected)."""
    source: str
    """The file path or hub id read."""
    skipped: int = 0
    """Bad rows skipped (only with ``skip_bad_rows=True``)."""
    problems: list[str] = field(default_factory=list)
    """Messages for the first skipped rows (at most 20)."""


def default_source_name(source: str | Path) -> str:
    """Per-source metric name when rows carry none: the file stem, or the hub id's last part."""
    if is_local(source):
        return Path(source).stem
    return str(source).partition(":")[0].partition("@")[0].rstrip("/").rsplit("/", 1)[-1]


def distinct_source_names(sources: list[str | Path]) -> list[str]:
    """A default source name per source, longer where two would be equal.

    Two files with the same stem (``a/test.jsonl``, ``b/test.jsonl``) are named by as many
    trailing path parts as make them differ (``a/test``, ``b/test``), so their rows are never
    merged into one source.
    """
    names = [default_source_name(s) for s in sources]
    for depth in range(2, 8):
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            break
        for i, src in enumerate(sources):
            if names[i] in clash and is_local(src):
                parts = Path(src).with_suffix("").parts
                names[i] = "/".join(parts[-depth:])
    return names


def read_records(source: str | Path, split: str | None = None,
                 config: str | None = None) -> list[RawRecord]:
    """The raw records of a local file or a hub dataset (``id`` or ``id:split``)."""
    return _records(source, split, config)


def _records(source: str | Path, split: str | None, config: str | None) -> list[RawRecord]:
    if is_local(source):
        return list(read_local(source))
    return [RawRecord(i, rec) for i, rec in enumerate(read_hub(str(source), split, config), 1)]


def _choose_schema(source: str, records: list[RawRecord], schema: str | None) -> str:
    if schema is not None:
        if schema not in SCHEMAS:
            raise UserError(
                f"{source}: unknown dataset schema {schema!r}; expected one of {list(SCHEMAS)}."
            )
        return schema
    for rec in records[:_DETECT_WINDOW]:
        found = detect_schema(rec.data)
        if found is not None:
            return found
    first = next((r.data for r in records if isinstance(r.data, dict)), None)
    fields = sorted(first) if first is not None else "no JSON objects"
    raise UserError(
        f"{source}: could not tell the dataset schema from the fields {fields}. Name it "
        f"(data.math.schema in a training config, --schema for entropyrl eval; one of "
        f"{list(SCHEMAS)}), or convert the rows to "
        '{"prompt": ..., "answer": ...} (the generic schema). See docs/data.md.'
    )


def _adapt(
    rec: RawRecord, schema: str, default_source: str, template: str, tokenizer: Any,
    system: str | None,
) -> Row:
    if rec.error is not None:
        raise BadRow("<json>", rec.error)
    if not isinstance(rec.data, dict):
        raise BadRow("<row>", f"expected a JSON object, got {type(rec.data).__name__}")
    adapted = SCHEMAS[schema].adapt(rec.data)
    return {
        "prompt": render_prompt(adapted.question, template, tokenizer, system=system),
        "answer": adapted.answer,
        "data_source": adapted.data_source or default_source,
        "question": adapted.question,
        "schema": schema,
        "row": rec.number,
    }


def load_math_dataset(
    source: str | Path,
    *,
    schema: str | None = None,
    split: str | None = None,
    config: str | None = None,
    template: str = "paper",
    tokenizer: Any = None,
    system: str | None = None,
    data_source: str | None = None,
    skip_bad_rows: bool = False,
    limit: int | None = None,
) -> LoadResult:
    """Read one dataset (local file or hub id) into task rows.

    Args:
        source: a ``.jsonl``/``.json``/``.parquet`` path, or a Hugging Face dataset id
            (``"HuggingFaceH4/MATH-500"``, optionally ``":test"`` for the split).
        schema: one of :data:`~entropyrl.data.schemas.SCHEMAS`; None detects it from the fields.
        split: hub split (ignored for local files).
        config: hub configuration name.
        template: prompt template (see :mod:`entropyrl.data.prompts`).
        tokenizer: apply its chat template to the prompt (falls back to ``plain`` without one).
        system: system message for the chat template.
        data_source: source name for rows without their own ``data_source`` (default: the
            file stem or the id's last part).
        skip_bad_rows: skip rows that do not fit the schema instead of raising; the count is
            in :attr:`LoadResult.skipped`.
        limit: keep at most this many rows (after skipping).

    Raises:
        UserError: unreadable source, undetectable schema, a bad row (file, 1-based row number
            and field in the message) unless ``skip_bad_rows``, or no rows at all.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected an integer >= 1 or None, got {limit!r}")
    name = str(source)
    records = _records(source, split, config)
    chosen = _choose_schema(name, records, schema)
    default_source = data_source or default_source_name(source)
    rows: list[Row] = []
    problems: list[str] = []
    skipped = 0
    for rec in records:
        if limit is not None and len(rows) >= limit:
            break
        try:
            rows.append(_adapt(rec, chosen, default_source, template, tokenizer, system))
        except BadRow as e:
            reads = SCHEMAS[chosen].reads
            message = f"{name}: row {rec.number}: {e} (schema '{chosen}' reads {reads})"
            if not skip_bad_rows:
                raise UserError(
                    f"{message}. Fix or remove the row, or load with skip_bad_rows=True to "
                    "skip bad rows."
                ) from e
            skipped += 1
            if len(problems) < _MAX_REPORTED:
                problems.append(message)
    if skipped:
        logger.warning("%s: skipped %d bad rows (first: %s)", name, skipped, problems[0])
    if not rows:
        raise UserError(f"{name}: no usable rows ({skipped} skipped, {len(records)} read).")
    return LoadResult(rows, chosen, name, skipped, problems)


def load_math_datasets(sources: Iterable[str | Path], **kwargs: Any) -> list[LoadResult]:
    """:func:`load_math_dataset` for each source, with the same options.

    Rows without their own ``data_source`` are named after their file, with enough of its
    path that two files never share a name (:func:`distinct_source_names`).
    """
    sources = list(sources)
    if kwargs.get("data_source") is not None:
        return [load_math_dataset(s, **kwargs) for s in sources]
    names = distinct_source_names(sources)
    return [load_math_dataset(s, **{**kwargs, "data_source": n})
            for s, n in zip(sources, names, strict=True)]
