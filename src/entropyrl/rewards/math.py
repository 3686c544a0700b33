r"""Math answer equivalence through ``math-verify``, with a small documented pre-normalisation.

:func:`score_response` is the paper's reward (PAPER.md §4): 1.0 when the last ``\boxed{}``
answer of a response is mathematically equivalent to the reference, else 0.0.

These functions run in the calling process with **no timeout**: sympy can spend unbounded time
(or memory) on a hostile answer such as ``9^{9^{9^{9^{9}}}}``, inside C code that no signal can
interrupt. Score untrusted model output through :class:`entropyrl.rewards.MathScorer`, which
runs this code in worker processes and kills a worker that passes its deadline. For the same
reason math-verify's own ``signal.alarm`` timeouts are switched off here: they only work in the
main thread and cannot stop C code; the process-level deadline replaces them.

Pre-normalisation applied to both answers before math-verify (each fixes a disagreement with a
careful human grader found by the answer table in ``tests/test_rewards_math.py``):

* surrounding ``$...$``, ``\(...\)`` or ``\[...\]`` are removed;
* the Unicode degree sign ``°`` becomes ``^\circ`` (math-verify only reads the LaTeX form);
* a thin space between digit groups (``1\,000``) is removed, like ``1{,}000`` already is;
* a plain number in e-notation (``1.5e3``, ``1.2E-4``) becomes ``1.5\times10^{3}``;
  math-verify reads the ``e`` as Euler's number;
* percent: math-verify accepts ``50\%`` for ``50`` but not ``12.5\%`` for ``12.5`` (its rule is
  for integers only), so when either side carries a percent sign the comparison is retried with
  the sign removed from both.

Options passed to ``verify``: ``allow_set_relation_comp=True`` so that ``x \le 3`` matches the
interval ``(-\infty, 3]`` whichever side is the reference (by default math-verify accepts it only
when the reference is the inequality); everything else is math-verify's default (strict
variables, 6-digit float rounding).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from entropyrl.errors import UserError
from entropyrl.rewards.boxed import last_boxed

_E_NOTATION = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))[eE]([+-]?\d+)$")
_THIN_SPACE_DIGITS = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"\\?%|\\text\{\s*percent\s*\}|\bpercent\b")
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))

_math_verify: Any = None


def _load_math_verify() -> Any:
    """Import math-verify once (lazily: workers and users without the extra stay light)."""
    global _math_verify
    if _math_verify is None:
        try:
            mv = importlib.import_module("math_verify")
        except ImportError as e:
            raise UserError(
                "The math reward needs the math-verify package, which is not installed. "
                "Install it with `pip install 'entropyrl[math]'` (or `pip install math-verify`)."
            ) from e
        # We disable math-verify's signal timeouts (see the module docstring); it would log a
        # warning about that on first use, which is noise here since the pool enforces one.
        for name in ("math_verify.parser", "math_verify.grader"):
            module = importlib.import_module(name)
            if hasattr(module, "TIMEOUT_WARNING_SHOWN"):
                setattr(module, "TIMEOUT_WARNING_SHOWN", True)  # noqa: B010
        _math_verify = mv
    return _math_verify


def normalize_answer(text: str) -> str:
    """Apply the documented pre-normalisation to one answer string (see the module docstring)."""
    s = text.strip()
    for left, right in _MATH_DELIMS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)].strip()
            break
    s = s.replace("°", "^\\circ")
    s = _THIN_SPACE_DIGITS.sub("", s)
    m = _E_NOTATION.match(s)
    if m:
        s = f"{m.group(1)}\\times10^{{{int(m.group(2))}}}"
    return s


def _parse(answer: str) -> list[Any]:
    mv = _load_math_verify()
    # Wrapping in \boxed{} makes a bare reference such as "3/4" or "\frac{3}{4}" parse, and
    # applies math-verify's answer normalisation (units, \text{}, \left/\right) to both sides.
    return list(
        mv.parse(
            "\\boxed{" + answer + "}",
            extraction_config=[mv.LatexExtractionConfig(), mv.ExprExtractionConfig()],
            parsing_timeout=None,
        )
    )


def _verify(gold: str, pred: str) -> bool:
    mv = _load_math_verify()
    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(
        mv.verify(gold_parsed, pred_parsed, allow_set_relation_comp=True, timeout_seconds=None)
    )


def answers_match(pred: str, gold: str) -> bool:
    r"""Whether answer ``pred`` is equivalent to the reference ``gold`` (no timeout: see above).

    Args:
        pred: the extracted answer (e.g. the content of the last box), LaTeX or plain.
        gold: the reference answer, LaTeX or plain (``"3/4"``, ``"\frac{3}{4}"``, ``"42"``).

    Returns:
        True when math-verify finds them equivalent after the pre-normalisation.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        raise ValueError(
            f"pred, gold: expected str, got {type(pred).__name__} and {type(gold).__name__}"
        )
    # A reference stored with its box ("\boxed{5}") is compared by its content.
    gold = last_boxed(gold) or gold
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return False
    if _verify(g, p):
        return True
    if _PERCENT.search(p) or _PERCENT.search(g):
        p2, g2 = _PERCENT.sub("", p).strip(), _PERCENT.sub("", g).strip()
        return bool(p2 and g2) and _verify(g2, p2)
    return False


def score_response(response: str, answer: str) -> float:
    """The paper's reward: 1.0 if the last boxed answer of ``response`` matches ``answer``.

    No timeout here; this is the function :class:`~entropyrl.rewards.MathScorer` runs in its
    worker processes. A response with no (or an unclosed) box scores 0.0.
    """
    pred = last_boxed(response)
    if pred is None:
        return 0.0
    return 1.0 if answers_match(pred, answer) else 0.0
