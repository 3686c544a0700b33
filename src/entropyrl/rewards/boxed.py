r"""Find the final answer of a response: the content of its last ``\boxed{...}``.

The paper's reward (PAPER.md §4) is 1 when *the last* ``\boxed{}`` answer of a response is
equivalent to the reference, so extraction takes the last box and nothing else: an earlier box
that the model later revised does not count, and a response cut off inside its last box
(unbalanced braces) has no answer.

Accepted forms (``\fbox`` is treated exactly like ``\boxed``)::

    \boxed{\frac{1}{2}}      nested braces                     -> \frac{1}{2}
    \boxed {x}               a space before the brace          -> x
    \boxed{\{1,2\}}          escaped braces do not count       -> \{1,2\}
    \boxed 5  /  \boxed\pi   no braces                         -> 5  /  \pi
    \boxed{7}. So ...        trailing text after the box       -> 7

Without braces TeX would box a single token (``\boxed 42`` boxes ``4``), but models that write
``\boxed 42`` mean 42, so the bare form takes the run of characters up to the next space,
``$`` or ``}``, without a trailing ``.``/``,``/``;``/``:`` (the same reading as the MATH
dataset's reference grader, which splits on ``"\boxed "`` and stops at ``$``).
"""

from __future__ import annotations

import re

# ``\boxed`` or ``\fbox`` not followed by a letter (``\boxedx`` would be another control word).
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_STOP = frozenset(" \t\r\n$}")
_TRAILING_PUNCT = ".,;:"


def _braced_group(text: str, start: int) -> str | None:
    r"""Content of the brace group opening at ``text[start] == "{"``; None when never closed.

    A backslash escapes the next character, so ``\{``, ``\}`` and ``\\`` never open or close
    a group (``\\}`` is a line break followed by a closing brace).
    """
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


def _bare_argument(text: str, start: int) -> str:
    r"""The brace-less argument starting at ``start``: up to a space, ``$`` or an unmatched ``}``.

    Brace groups inside it are taken whole, so ``\boxed\frac{1}{2}`` gives ``\frac{1}{2}``.
    """
    end = start
    n = len(text)
    while end < n and text[end] not in _BARE_STOP:
        if text[end] == "\\":
            end += 2
        elif text[end] == "{":
            group = _braced_group(text, end)
            if group is None:
                break
            end += len(group) + 2
        else:
            end += 1
    return text[start : min(end, n)].rstrip(_TRAILING_PUNCT)


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed``/``\fbox`` in ``text``, stripped of outer whitespace.

    Args:
        text: a model response (any length).

    Returns:
        The boxed content, or None when the text has no box, when the last box is never
        closed (a truncated response), or when it is empty (``\boxed{}`` is no answer).
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    last = None
    for last in _BOX_RE.finditer(text):  # noqa: B007 - we want the final match
        pass
    if last is None:
        return None
    i = last.end()
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    if i == len(text):
        return None
    content = _braced_group(text, i) if text[i] == "{" else _bare_argument(text, i)
    if content is None:
        return None
    content = content.strip()
    return content or None


def has_boxed(text: str) -> bool:
    """True when :func:`last_boxed` finds an answer in ``text``."""
    return last_boxed(text) is not None
