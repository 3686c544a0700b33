"""Synthetic verifiable arithmetic tasks with a column scratchpad, and their checker.

Format (one token per character)::

    prompt:    "4738+2856="                       (a, operator, b, "=")
    response:  "14 09 15 07#7594"                 (scratchpad, "#", final answer)

The scratchpad has one two-character cell per column, least significant column first: the
carry (or borrow) going out of the column, then the digit written in it. For ``4738+2856``:
8+6 = 14 → "14"; 3+5+1 = 9 → "09"; 7+8 = 15 → "15"; 4+2+1 = 7 → "07". The final answer after
``#`` is the last carry (if not 0) followed by the digits read in reverse, without leading
zeros. Subtraction cells hold (borrow, digit); multiplication by one digit (``473*6=``) holds
(carry, digit) of ``digit·6 + carry``.

Operations: ``add`` and ``sub`` of two 4-digit numbers (``a ≥ b`` for ``sub``) and ``mul`` of
a 4-digit number by a digit in 2–9. A fixed width keeps every operand digit at a fixed distance
from the cell that uses it, which a tiny model learns quickly; the difficulty is the number of
columns that receive a carry (or borrow), 0–3: each is a chance to slip (forget it), so harder
items have more ways to go wrong. Prompts are at most 10 characters, clean responses at most 17.

Train and validation prompts never overlap: a prompt belongs to the validation split iff the
CRC-32 of its text is 0 mod 8, whatever the seed or the number of rows drawn.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from itertools import zip_longest
from typing import Literal

from entropyrl._checks import check_choice

Op = Literal["add", "sub", "mul"]
OPS: tuple[Op, ...] = ("add", "sub", "mul")
SYMBOL: dict[str, str] = {"add": "+", "sub": "-", "mul": "*"}
WIDTH = 4  # digits of a (and of b for add/sub)
DIFFICULTIES = (0, 1, 2, 3)  # number of columns with an incoming carry/borrow
DEFAULT_DIFFICULTY = DIFFICULTIES
ANSWER_MARKER = "#"
SPLITS = ("train", "val")
_VAL_BUCKETS = 8  # 1 prompt in 8 is a validation prompt
_ANSWER_RE = re.compile(r"\s*(-?\d+)")


def split_of(prompt: str) -> str:
    """``"val"`` or ``"train"``: a fixed function of the prompt text (so splits are disjoint)."""
    return "val" if zlib.crc32(prompt.encode()) % _VAL_BUCKETS == 0 else "train"


def prompt_text(op: Op, a: int, b: int) -> str:
    """The prompt of ``a op b``, e.g. ``"4738+2856="``."""
    return f"{a}{SYMBOL[op]}{b}="


def parse_prompt(prompt: str) -> tuple[Op, int, int]:
    """Recover ``(op, a, b)`` from a prompt such as ``"473*6="``."""
    body = prompt.removesuffix("=")
    for op in OPS:
        a, sep, b = body.partition(SYMBOL[op])
        if sep and a.isdigit() and b.isdigit():
            return op, int(a), int(b)
    raise ValueError(f"prompt: expected '<a><op><b>=' with op in + - *, got {prompt!r}")


def column_step(op: Op, x: int, y: int, carry: int) -> tuple[int, int]:
    """One scratchpad cell: ``(carry_out, digit)`` of column digits ``x``, ``y`` and ``carry``.

    For ``mul`` ``y`` is the one-digit multiplier; for ``sub`` ``carry`` is the borrow.
    """
    if op == "add":
        s = x + y + carry
        return s // 10, s % 10
    if op == "sub":
        s = x - y - carry
        return (1, s + 10) if s < 0 else (0, s)
    s = x * y + carry
    return s // 10, s % 10


def answer_from_cells(cells: Sequence[tuple[int, int]]) -> str:
    """The final answer written from scratchpad cells (least significant first)."""
    digits = "".join(str(d) for _, d in reversed(cells))
    last_carry = cells[-1][0] if cells else 0
    text = (str(last_carry) if last_carry else "") + digits
    return text.lstrip("0") or "0"


def render(cells: Sequence[tuple[int, int]], answer: str,
           separators: Sequence[str] | None = None) -> str:
    """Response text: the cells, the marker, the answer.

    ``separators`` (one fewer than the cells) go between the cells; default: spaces.
    """
    texts = [f"{c}{d}" for c, d in cells]
    if separators is None:
        separators = [" "] * max(len(texts) - 1, 0)
    if len(separators) != max(len(texts) - 1, 0):
        raise ValueError(f"{len(texts)} cells need {len(texts) - 1} separators, "
                         f"got {len(separators)}")
    joined = "".join(t + s for t, s in zip_longest(texts, separators, fillvalue=""))
    return joined + ANSWER_MARKER + answer


def operand_digits(op: Op, a: int, b: int) -> list[tuple[int, int]]:
    """Column digit pairs ``(x_i, y_i)``, least significant first (``y_i = b`` for ``mul``)."""
    xs = [int(ch) for ch in reversed(str(a))]
    if op == "mul":
        return [(x, b) for x in xs]
    ys = [int(ch) for ch in reversed(str(b).rjust(len(str(a)), "0"))]
    return list(zip(xs, ys, strict=True))


def solve(op: Op, a: int, b: int) -> str:
    """The clean (correct) response for ``a op b``."""
    cells: list[tuple[int, int]] = []
    carry = 0
    for x, y in operand_digits(op, a, b):
        carry, digit = column_step(op, x, y, carry)
        cells.append((carry, digit))
    return render(cells, answer_from_cells(cells))


def carry_columns(op: Op, a: int, b: int) -> int:
    """Difficulty: how many columns receive a nonzero carry/borrow in the clean solution."""
    count = carry = 0
    for x, y in operand_digits(op, a, b):
        count += carry != 0
        carry, _ = column_step(op, x, y, carry)
    return count


def _draw_operands(rng: random.Random, op: Op) -> tuple[int, int]:
    lo, hi = 10 ** (WIDTH - 1), 10**WIDTH - 1
    a = rng.randint(lo, hi)
    if op == "mul":
        return a, rng.randint(2, 9)
    b = rng.randint(lo, hi)
    if op == "sub" and b > a:
        a, b = b, a
    return a, b


def make_row(op: Op, a: int, b: int, difficulty: int) -> dict[str, object]:
    """One task row (``prompt``, ``answer``, ``difficulty``, ``data_source``, ``solution``)."""
    value = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    return {
        "prompt": prompt_text(op, a, b),
        "answer": str(value),
        "difficulty": difficulty,
        "data_source": f"testbed/{op}",
        "solution": solve(op, a, b),
    }


def make_tasks(
    split: str,
    n: int,
    seed: int,
    difficulty: int | Sequence[int] | None = None,
    ops: Sequence[Op] = OPS,
) -> list[dict[str, object]]:
    """``n`` distinct task rows of one split, drawn deterministically from ``seed``.

    Args:
        split: ``"train"`` or ``"val"`` (disjoint by construction, see :func:`split_of`).
        n: number of rows.
        seed: generator seed; the same ``(split, n, seed, difficulty, ops)`` gives the same rows.
        difficulty: a level in 0–3 (carry columns), a sequence of levels drawn uniformly, or
            ``None`` for the default mix :data:`DEFAULT_DIFFICULTY`.
        ops: operations drawn uniformly.

    Returns:
        Rows with ``prompt``, ``answer`` (integer as text), ``difficulty``, ``data_source``
        (``testbed/add|sub|mul``) and ``solution`` (the clean reference response).

    Raises:
        ValueError: on an unknown split, level or operation, or when the requested levels do
            not hold ``n`` distinct prompts of the split.
    """
    check_choice("split", split, SPLITS)
    if n < 0:
        raise ValueError(f"n: expected a number of rows >= 0, got {n}")
    levels = list(DEFAULT_DIFFICULTY if difficulty is None else
                  [difficulty] if isinstance(difficulty, int) else difficulty)
    if not levels or any(level not in DIFFICULTIES for level in levels):
        raise ValueError(f"difficulty: expected levels in {list(DIFFICULTIES)}, got {difficulty!r}")
    if not ops:
        raise ValueError("ops: expected at least one of ['add', 'sub', 'mul']")
    for op in ops:
        check_choice("ops", op, OPS)
    # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
    rng = random.Random(f"entropyrl.testbed/{split}/{seed}")
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    misses = 0  # consecutive draws rejected as duplicate or other-split
    while len(rows) < n:
        if misses > 10_000:
            raise ValueError(
                f"n: levels {levels} with ops {list(ops)} hold fewer than {n} distinct "
                f"{split} prompts; ask for fewer rows or more levels"
            )
        level, op = rng.choice(levels), rng.choice(list(ops))
        a, b = _draw_operands(rng, op)
        while carry_columns(op, a, b) != level:  # rejection: ~30 draws at worst (mul, 0)
            a, b = _draw_operands(rng, op)
        prompt = prompt_text(op, a, b)
        if prompt in seen or split_of(prompt) != split:
            misses += 1
            continue
        misses = 0
        seen.add(prompt)
        rows.append(make_row(op, a, b, level))
    return rows


def extract_answer(response: str) -> str | None:
    """The integer right after the last ``#`` (spaces allowed before it), or ``None``."""
    pos = response.rfind(ANSWER_MARKER)
    if pos < 0:
        return None
    match = _ANSWER_RE.match(response, pos + 1)
    return match.group(1) if match else None


def score(response: str, answer: str) -> float:
    """1.0 if the response's final answer equals ``answer`` as an integer, else 0.0.

    The final answer is the integer right after the last ``#``; text after that integer is
    ignored, a response with no ``#`` or no integer after the last one scores 0.

    Args:
        response: the generated text (end-of-sequence token removed).
        answer: the reference, an integer as text (e.g. ``"7594"``).
    """
    got = extract_answer(response)
    if got is None:
        return 0.0
    try:
        return 1.0 if int(got) == int(answer) else 0.0
    except ValueError:
        raise ValueError(f"answer: expected an integer as text, got {answer!r}") from None
