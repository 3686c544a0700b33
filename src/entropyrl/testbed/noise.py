"""Mixed-quality solutions: the noisy "pre-training corpus" of the testbed base model.

A real base model has seen correct and sloppy solutions alike, so it puts most of its
probability on the right step but keeps some on typical slips, and where its sources were
mostly wrong it has learnt the wrong habit. RL with a verifiable reward then has something to
learn: where the right path is already likely, the slips are sampled mistakes it can learn to
avoid (sharpening, which lowers entropy — the paper's setting, §2); where the habit is wrong,
the right step is the rarer sample it has to find and reinforce.

Slips, each drawn independently (the rest of the solution is then computed consistently from
the slipped cell, as a person who slipped would):

- ``p_carry``: a column with an incoming carry ignores it (the classic forgotten carry).
- ``p_borrow``: the same for the borrows of subtraction (``None``: ``p_carry``). The default
  0.7 is above one half: the writer forgets more borrows than it keeps, so a model fitted to
  it answers subtractions with borrows wrongly even when greedy — a misconception RL has to
  overcome, not only slips to sharpen away.
- ``p_digit``: a cell's digit is replaced by a different random digit (carry kept).
- ``p_copy``: one digit of the final answer is miscopied from the scratchpad.

Style forks (off in this class's defaults; the shipped build recipe turns on a rare, very
sloppy comma, ``build.SHIPPED_NOISE``; see docs/testbed.md, "Separator forks"): with
``p_comma`` the separator after a cell is written ``,`` instead of a space, a choice the
checker ignores. ``p_comma_slip`` (``None``: ``p_digit``) is the digit-slip rate of the cell
that follows a comma: equal to ``p_digit`` the fork is benign; above it the comma is the
sloppier path, as a writer's style can go with care or haste.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from entropyrl._checks import check_fraction
from entropyrl.testbed.tasks import Op, answer_from_cells, column_step, operand_digits, render


@dataclass(frozen=True)
class NoiseRecipe:
    """Slip probabilities of the noisy solution writer (see the module docstring)."""

    p_carry: float = 0.25
    p_digit: float = 0.06
    p_copy: float = 0.03
    p_borrow: float | None = 0.7
    p_comma: float = 0.0
    p_comma_slip: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None or name not in ("p_borrow", "p_comma_slip"):
                check_fraction(name, value, allow_zero=True)

    def forget_rate(self, op: Op) -> float:
        """Probability that a column of ``op`` ignores its incoming carry or borrow."""
        return self.p_borrow if op == "sub" and self.p_borrow is not None else self.p_carry

    def comma_slip_rate(self) -> float:
        """Digit-slip probability of a cell written after a ``,`` separator."""
        return self.p_digit if self.p_comma_slip is None else self.p_comma_slip


def noisy_solution(op: Op, a: int, b: int, recipe: NoiseRecipe, rng: random.Random) -> str:
    """A response to ``a op b`` written with random slips (clean when all rates are 0).

    The random draws happen in a fixed order per column, so a seeded ``rng`` gives the same
    text every time; with ``p_comma = 0`` no separator is drawn, so the stream is that of a
    recipe without forks.
    """
    cells: list[tuple[int, int]] = []
    separators: list[str] = []
    carry = 0
    forget = recipe.forget_rate(op)
    p_digit = recipe.p_digit
    columns = operand_digits(op, a, b)
    for k, (x, y) in enumerate(columns):
        if carry and rng.random() < forget:
            carry = 0
        carry, digit = column_step(op, x, y, carry)
        if rng.random() < p_digit:
            digit = (digit + rng.randint(1, 9)) % 10
        cells.append((carry, digit))
        if k < len(columns) - 1:
            comma = recipe.p_comma > 0 and rng.random() < recipe.p_comma
            separators.append("," if comma else " ")
            p_digit = recipe.comma_slip_rate() if comma else recipe.p_digit
    answer = answer_from_cells(cells)
    if rng.random() < recipe.p_copy:
        i = rng.randrange(len(answer))
        wrong = str((int(answer[i]) + rng.randint(1, 9)) % 10)
        answer = (answer[:i] + wrong + answer[i + 1 :]).lstrip("0") or "0"
    return render(cells, answer, separators)
