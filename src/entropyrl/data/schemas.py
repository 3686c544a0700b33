"""Schema adapters: turn a raw dataset record into ``(question, answer, data_source)``.

Each adapter reads only the fields listed in its ``reads`` text (also in docs/data.md). The
question is the raw problem text (no instruction); the answer is a non-empty string (integer
answers such as AIME's become ``"204"``, AMC's ``27.0`` becomes ``"27"``). A record's own
``data_source`` field, when present, wins over the default source name.

A record that does not fit raises :class:`BadRow` naming the field, which the loader turns into
a :class:`~entropyrl.errors.UserError` with the file and row number (or skips).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from entropyrl.rewards.boxed import last_boxed

# DAPO-Math-17k wraps every problem in an instruction to end with "Answer: ..."; we strip it so
# that the question is the bare problem and the prompt template decides the instruction (the
# paper's reward reads a \boxed{} answer).
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be "
    "of the form Answer: $Answer (without quotes) where $Answer is the answer to the problem."
    "\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


class BadRow(Exception):
    """A record that does not fit its schema: which field, and what is wrong with it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field '{field}': {problem}")
        self.field = field
        self.problem = problem


class Adapted(NamedTuple):
    """A record read through a schema."""

    question: str
    answer: str
    data_source: str | None
    """The record's own ``data_source``, if it has one."""


@dataclass(frozen=True)
class Schema:
    """One dataset layout."""

    name: str
    reads: str
    """The fields read, for documentation and error messages."""
    adapt: Callable[[Mapping[str, Any]], Adapted]


def _missing(keys: tuple[str, ...]) -> BadRow:
    also = f" (also looked for {', '.join(keys[1:])})" if len(keys) > 1 else ""
    return BadRow(keys[0], "missing" + also)


def _text(row: Mapping[str, Any], *keys: str) -> str:
    """The first of ``keys`` present in ``row``, which must be non-empty text."""
    key = next((k for k in keys if k in row), None)
    if key is None:
        raise _missing(keys)
    value = row[key]
    if not isinstance(value, str):
        raise BadRow(key, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(key, "empty")
    return value.strip()


def _answer_value(value: Any, field: str) -> str:
    """An answer as text: non-empty str, or a finite int/float (integral floats lose the .0)."""
    if isinstance(value, bool) or value is None:
        raise BadRow(field, f"expected text or a number, got {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRow(field, f"not a finite number: {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if not isinstance(value, str):
        raise BadRow(field, f"expected text or a number, got {type(value).__name__}")
    if not value.strip():
        raise BadRow(field, "empty")
    return value.strip()


def _answer(row: Mapping[str, Any], *keys: str) -> str:
    key = next((k for k in keys if k in row), None)
    if key is None:
        raise _missing(keys)
    return _answer_value(row[key], key)


def _source(row: Mapping[str, Any]) -> str | None:
    value = row.get("data_source")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _dapo(row: Mapping[str, Any]) -> Adapted:
    messages = row.get("prompt")
    if messages is None:
        raise BadRow("prompt", "missing")
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        kind = type(messages).__name__
        raise BadRow("prompt", f"expected a chat list of {{role, content}}, got {kind}")
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise BadRow("prompt", "no message with role 'user'")
    content = users[-1].get("content")
    if not isinstance(content, str) or not content.strip():
        raise BadRow("prompt", "the user message has no text content")
    question = content.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX).strip()
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, Mapping):
        raise BadRow("reward_model", "missing, or not an object with 'ground_truth'")
    if "ground_truth" not in reward_model:
        raise BadRow("reward_model.ground_truth", "missing")
    answer = _answer_value(reward_model["ground_truth"], "reward_model.ground_truth")
    return Adapted(question, answer, _source(row))


def _problem_answer(row: Mapping[str, Any]) -> Adapted:
    # MATH-500, AIME, AMC, OMNI-MATH and the generic form share one layout; the Maxwell-Jia
    # AIME_2024 mirror capitalises its fields.
    question = _text(row, "problem", "question", "prompt", "Problem")
    return Adapted(question, _answer(row, "answer", "Answer"), _source(row))


def _gsm8k(row: Mapping[str, Any]) -> Adapted:
    question = _text(row, "question")
    solution = _text(row, "answer")
    if "####" not in solution:
        raise BadRow("answer", "no final answer after '####'")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")  # "1,234" -> "1234"
    if not final:
        raise BadRow("answer", "empty final answer after '####'")
    return Adapted(question, final, _source(row))


def _minerva(row: Mapping[str, Any]) -> Adapted:
    question = _text(row, "problem", "question")
    if "answer" in row:  # mirrors that store the final answer
        return Adapted(question, _answer(row, "answer"), _source(row))
    solution = _text(row, "solution")
    boxed = last_boxed(solution)
    if boxed is None:
        raise BadRow("solution", "no \\boxed{} final answer in the solution")
    return Adapted(question, boxed, _source(row))


def _olympiadbench(row: Mapping[str, Any]) -> Adapted:
    question = _text(row, "question")
    if "final_answer" not in row:
        raise BadRow("final_answer", "missing")
    value = row["final_answer"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        raise BadRow("final_answer", "expected a non-empty list of answers")
    parts = [_answer_value(v, "final_answer").strip("$").strip() for v in value]
    if not all(parts):
        raise BadRow("final_answer", "empty")
    # several answers (multi-answer problems) are compared as one comma-separated list
    return Adapted(question, ", ".join(parts), _source(row))


SCHEMAS: dict[str, Schema] = {
    s.name: s
    for s in [
        Schema(
            "dapo",
            "prompt (chat list; last 'user' content, DAPO instruction removed), "
            "reward_model.ground_truth, data_source",
            _dapo,
        ),
        Schema("math500", "problem, answer", _problem_answer),
        Schema(
            "aime", "problem | question | Problem, answer | Answer (text or int)", _problem_answer
        ),
        Schema("amc", "problem | question, answer (text, int or float)", _problem_answer),
        Schema("gsm8k", "question, answer (the final answer after '####', commas removed)", _gsm8k),
        Schema(
            "minerva",
            "problem | question, answer if present, else the last \\boxed{} of solution",
            _minerva,
        ),
        Schema(
            "olympiadbench",
            "question, final_answer (list; '$' stripped; joined by ', ')",
            _olympiadbench,
        ),
        Schema("omni_math", "problem, answer", _problem_answer),
        Schema(
            "generic",
            "prompt | question | problem, answer, data_source (optional)",
            _problem_answer,
        ),
    ]
}


def detect_schema(row: Any) -> str | None:
    """The schema a record's fields point to (rules in docs/data.md), or None."""
    if not isinstance(row, Mapping):
        return None
    keys = set(row)
    if {"reward_model", "prompt"} <= keys:
        return "dapo"
    if "final_answer" in keys and "question" in keys:
        return "olympiadbench"
    if "question" in keys and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return "gsm8k"
    if {"problem", "answer", "domain", "difficulty"} <= keys:
        return "omni_math"
    if {"problem", "answer"} <= keys and keys & {"unique_id", "subject", "level"}:
        return "math500"
    if "solution" in keys and "answer" not in keys and keys & {"problem", "question"}:
        return "minerva"
    if {"Problem", "Answer"} <= keys:
        return "aime"
    if "answer" in keys and keys & {"prompt", "question", "problem"}:
        return "generic"
    return None
