"""Key lookup: names, aliases and patterns → one merged series per quantity.

A key *spec* is one or more names or shell-style patterns (``*``, ``?``, ``[…]``). Each name
matches a column *equal* to it, else the one column *ending* with ``/NAME`` (flattened nesting,
verl's ``data/…``) or `` - NAME`` (a W&B chart export's ``"<run> - NAME"``). A pattern
matches every column it fits, in the same three ways. All matched columns are merged into
one series: at a step logged under several of them, the first (in spec order) wins, and a
note says what was merged. This is how a metric logged under two names is read, e.g. verl's
pre-training validation ``test_score/openai/gsm8k`` with the later ``val/test_score/…``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from entropyrl.errors import UserError

PATTERN_CHARS = set("*?[")


@dataclass(frozen=True)
class Resolved:
    """The columns a spec matched, in merge order."""

    spec: tuple[str, ...]
    columns: tuple[str, ...]


def is_pattern(name: str) -> bool:
    """Whether ``name`` holds a shell-style wildcard."""
    return bool(PATTERN_CHARS & set(name))


def _matches(name: str, column: str) -> bool:
    if is_pattern(name):
        return any(fnmatch.fnmatchcase(column, p) for p in (name, "*/" + name, "* - " + name))
    return column.endswith("/" + name) or column.endswith(" - " + name)


def match_one(name: str, names: Sequence[str]) -> list[str]:
    """Columns ``name`` selects: the exact column, else the suffix (or pattern) matches."""
    if name in names:
        return [name]
    return [c for c in names if _matches(name, c)]


def resolve(spec: Sequence[str], names: Sequence[str], source: str, option: str) -> Resolved:
    """Resolve a spec against the columns of a log, or raise a ``UserError`` that helps.

    A plain name matching several columns is ambiguous (an error asking for the full name);
    a pattern may match several (they are merged).
    """
    cols: list[str] = []
    for name in spec:
        hits = match_one(name, names)
        if not hits:
            raise missing_key(name, names, source, option)
        if len(hits) > 1 and not is_pattern(name):
            raise UserError(
                f"{source}: key {name!r} matches several columns "
                f"({', '.join(hits)}); pass the full name with {option}"
            )
        cols += [h for h in hits if h not in cols]
    return Resolved(tuple(spec), tuple(cols))


def missing_key(name: str, names: Sequence[str], source: str, option: str) -> UserError:
    """The error for a key not in the log: the closest names and the keys present."""
    shown_names = sorted(set(names))
    close = difflib.get_close_matches(name, shown_names, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(shown_names[:60])
    if len(shown_names) > 60:
        shown += f", … ({len(shown_names)} in all)"
    return UserError(
        f"{source}: no key {name!r} (option {option}).{hint} Keys in the file: {shown or '(none)'}"
    )


def first_resolvable(
    candidates: Sequence[Sequence[str]], names: Sequence[str], source: str, option: str
) -> Resolved | None:
    """The first candidate spec whose *first* entry matches; ``None`` when none does.

    Used for a framework's default keys: later entries of a candidate are optional aliases
    (dropped when absent). A first entry matching several columns (e.g. two validation data
    sets) is an error asking the user to choose.
    """
    for spec in candidates:
        hits = match_one(spec[0], names)
        if not hits:
            continue
        if len(hits) > 1:
            raise UserError(
                f"{source}: key {spec[0]!r} matches several columns "
                f"({', '.join(hits[:8])}), each could be the {_what(option)}; "
                f"pass the full name with {option}"
            )
        # An alias must name the same metric: one name the other's "…/" suffix
        # (``test_score/openai/gsm8k`` for ``val/test_score/openai/gsm8k``).
        aliases = [
            c
            for alias in spec[1:]
            for c in match_one(alias, names)
            if c != hits[0] and (hits[0].endswith("/" + c) or c.endswith("/" + hits[0]))
        ]
        return Resolved(tuple(spec), (hits[0], *dict.fromkeys(aliases)))
    return None


def _what(option: str) -> str:
    return "score" if "score" in option else "entropy"
