"""Code datasets: from a dataset row to a question and the tests its answer must pass.

Three layouts, detected from the fields (or named with ``data.code.schema``):

* ``kodcode`` (KodCode): ``question`` and pytest-style ``test_code`` (or ``test``) that imports
  the solution (``from solution import f``) and defines ``test_*`` functions. The tests become
  call tests ``test_x()`` expected to return ``None``, run after the answer with the import
  lines removed, so a failing ``assert`` fails its test.
* ``taco`` (APPS, TACO and PRIME's Eurus-2-RL-Data code rows): ``input_output`` or
  ``reward_model.ground_truth``, a JSON text ``{"inputs": [...], "outputs": [...]}`` with an
  optional ``fn_name``. Without ``fn_name``: stdin/stdout tests. With it: call tests of
  ``fn_name(*inputs[i])`` (or ``Solution().fn_name``, LeetCode style), a tuple result read as
  a list, the expected value ``outputs[i]`` (its single element when ``outputs[i]`` is a
  one-element list, as these datasets wrap return values).
* ``generic``: ``prompt`` (or ``question``) and ``tests``, already in
  :func:`entropyrl.rewards.code.run_tests`' format.

Each row becomes ``{"question", "tests", "data_source", "prelude"}``; ``prelude`` is code run
after the answer (the test functions or the call helper).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from entropyrl.data.schemas import BadRow

CALL_HELPER = "__entropyrl_call"
_HELPER_SOURCE = f'''
def {CALL_HELPER}(name, args):
    fn = Solution().__getattribute__(name) if "Solution" in globals() else globals()[name]
    result = fn(*args)
    return list(result) if isinstance(result, tuple) else result
'''
_IMPORT_SOLUTION = re.compile(r"^\s*(from\s+solution\s+import\s+.*|import\s+solution\b.*)$", re.M)


def _text(row: Mapping[str, Any], *keys: str) -> str:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return v
        if isinstance(v, list) and v and all(isinstance(m, Mapping) for m in v):
            # a chat prompt: the last user message
            users = [m.get("content") for m in v if m.get("role") == "user"]
            if users and isinstance(users[-1], str):
                return users[-1]
    raise BadRow(keys[0], f"no text in {' or '.join(repr(k) for k in keys)}")


def kodcode(row: Mapping[str, Any]) -> dict[str, Any]:
    """A KodCode row: pytest-style tests as call tests returning ``None``."""
    question = _text(row, "question", "prompt")
    code = _text(row, "test_code", "test")
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise BadRow("test_code", f"not valid Python ({e.msg}, line {e.lineno})") from None
    names = [n.name for n in tree.body
             if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    if not names:
        raise BadRow("test_code", "defines no test_* function")
    tests = [{"call": f"{name}()", "output": "None"} for name in names]
    return {"question": question, "tests": tests, "prelude": _IMPORT_SOLUTION.sub("", code)}


def _ground_truth(row: Mapping[str, Any]) -> Any:
    raw = row.get("input_output")
    if raw is None and isinstance(row.get("reward_model"), Mapping):
        raw = row["reward_model"].get("ground_truth")
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadRow("input_output", f"not JSON ({e.msg})") from None
    if raw is None:
        raise BadRow("input_output", "missing (nor reward_model.ground_truth)")
    return raw


def taco(row: Mapping[str, Any]) -> dict[str, Any]:
    """An APPS / TACO / Eurus-2 code row: stdin/stdout tests, or call tests with ``fn_name``."""
    question = _text(row, "question", "prompt", "problem")
    truth = _ground_truth(row)
    if not isinstance(truth, Mapping):
        raise BadRow("input_output", "expected an object with 'inputs' and 'outputs'")
    inputs, outputs = truth.get("inputs"), truth.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
        raise BadRow("input_output", "expected non-empty lists 'inputs' and 'outputs'")
    if len(inputs) != len(outputs):
        raise BadRow("input_output", f"{len(inputs)} inputs but {len(outputs)} outputs")
    fn = truth.get("fn_name")
    tests: list[dict[str, str]] = []
    for x, y in zip(inputs, outputs, strict=True):
        if fn:
            args = x if isinstance(x, list) else [x]
            want = y[0] if isinstance(y, list) and len(y) == 1 else y
            tests.append({"call": f"{CALL_HELPER}({fn!r}, {args!r})", "output": repr(want)})
        else:
            stdin = "\n".join(map(str, x)) if isinstance(x, list) else str(x)
            stdout = "\n".join(map(str, y)) if isinstance(y, list) else str(y)
            tests.append({"input": stdin, "output": stdout})
    if fn:
        starter = row.get("starter_code")
        if isinstance(starter, str) and starter.strip():
            question += "\n\n" + starter
    return {"question": question, "tests": tests, "prelude": _HELPER_SOURCE if fn else ""}


def generic(row: Mapping[str, Any]) -> dict[str, Any]:
    """``prompt``/``question`` and ``tests`` in :func:`run_tests`' format."""
    question = _text(row, "prompt", "question")
    tests = row.get("tests")
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as e:
            raise BadRow("tests", f"not JSON ({e.msg})") from None
    if not isinstance(tests, list) or not tests or not all(
            isinstance(t, Mapping) and "output" in t and ("input" in t or "call" in t)
            for t in tests):
        raise BadRow("tests", "expected a list of {'input', 'output'} or {'call', 'output'}")
    return {"question": question, "tests": [dict(t) for t in tests], "prelude": ""}


CODE_SCHEMAS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "kodcode": kodcode,
    "taco": taco,
    "generic": generic,
}


def detect_code_schema(row: Mapping[str, Any]) -> str | None:
    """The layout a row's fields point to, or None."""
    if "test_code" in row or ("test" in row and "question" in row):
        return "kodcode"
    if "input_output" in row or isinstance(row.get("reward_model"), Mapping):
        return "taco"
    if "tests" in row:
        return "generic"
    return None


FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(response: str) -> str | None:
    """The last fenced code block of a response (```` ```python ```` or plain), or None."""
    blocks = FENCE.findall(response)
    return blocks[-1] if blocks else None
