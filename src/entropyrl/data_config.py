"""The ``data`` section of the training config: which task, and each task's own settings.

Each task registered in :mod:`entropyrl.tasks` has its section here (``data.<task>``); the
config knows no task's choices (the tasks check them, see :func:`entropyrl.tasks.check_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from entropyrl.typed_config import field_with_help as _f


@dataclass
class TestbedData:
    """The embedded synthetic testbed (docs/testbed.md)."""

    train_size: int = _f(4000, "training prompts generated from the seed")
    val_size: int = _f(128, "held-out validation prompts")
    seed: int = _f(0, "seed of the task generator (independent of the training seed)")
    ops: list[str] = _f([], "operations drawn uniformly (empty = all: add, sub, mul)")
    difficulty: list[int] = _f(
        [], "carry levels (columns with a carry, 0-3) drawn uniformly (empty = all)"
    )


@dataclass
class TestbedCodeData(TestbedData):
    """The testbed's arithmetic, the answer run as Python in the sandbox (docs/tasks.md)."""

    timeout_s: float = _f(1.0, "wall-clock limit per answer in seconds")
    memory_mb: int = _f(256, "address-space limit of an answer's process in MiB")
    sandbox_batch: int = _f(
        32, "answers evaluated one after the other in one sandbox (1 = each in its own sandbox: "
        "full isolation, one sandbox start per answer)"
    )
    unsafe_rlimits_only: bool = _f(
        False, "run the answers WITHOUT the sandbox (resource limits only), with a warning on "
        "every batch"
    )


@dataclass
class MathData:
    """Math datasets with boxed answers, checked by math-verify (docs/data.md)."""

    train_files: list[str] = _f([], "training sets (.jsonl/.json/.parquet or hub ids)")
    val_files: list[str] = _f([], "validation sets; val/acc is over all of them")
    schema: str | None = _f(None, "dataset schema (null = detect from the fields)")
    template: str = _f("paper", "prompt template: paper, plain, raw or a '{question}' text")
    chat_template: bool = _f(False, "wrap prompts in the tokenizer's chat template")
    skip_bad_rows: bool = _f(False, "skip malformed rows (reported) instead of failing")
    max_val_rows: int = _f(0, "use at most this many validation rows (0 = all)")


@dataclass
class CodeData:
    """Coding problems checked by running the answer against tests in a sandbox (docs/tasks.md)."""

    train_files: list[str] = _f([], "training sets (.jsonl/.json/.parquet or hub ids)")
    val_files: list[str] = _f([], "validation sets")
    schema: str | None = _f(None, "kodcode, taco (APPS/TACO/Eurus-2) or generic; null = detect")
    template: str = _f("code", "prompt template: code (asks for a ```python block), raw, or a "
                       "'{question}' text")
    chat_template: bool = _f(False, "wrap prompts in the tokenizer's chat template")
    max_val_rows: int = _f(0, "use at most this many validation rows (0 = all)")
    max_tests: int = _f(0, "run at most this many tests per problem (0 = all)")
    partial_credit: bool = _f(False, "score = share of tests passed (false: 1 only if all pass)")
    timeout_s: float = _f(2.0, "wall-clock limit per test in seconds")
    memory_mb: int = _f(512, "address-space limit of the program in MiB")
    unsafe_rlimits_only: bool = _f(
        False, "run programs WITHOUT the sandbox (resource limits only; they can read your "
        "files and use the network), with a warning on every batch"
    )


@dataclass
class PythonData:
    """Your own task: prompts from files, scored by ``reward.fn`` (docs/tasks.md)."""

    train_files: list[str] = _f([], "training sets (.jsonl/.json/.parquet or hub ids)")
    val_files: list[str] = _f([], "validation sets")
    prompt_key: str = _f("prompt", "the column holding the prompt text")
    chat_template: bool = _f(False, "wrap prompts in the tokenizer's chat template")
    max_val_rows: int = _f(0, "use at most this many validation rows (0 = all)")


@dataclass
class DataConfig:
    """Where prompts come from: the task, and its own section."""

    task: Literal["testbed", "testbed_code", "math", "code", "python"] = _f(
        "testbed", "task: the embedded synthetic testbed, the testbed with answers run as "
        "Python (testbed_code), math datasets, code problems, or python (your own prompts and "
        "reward.fn); its settings are in data.<task>"
    )
    testbed: TestbedData = _f(TestbedData(), "the testbed task")
    testbed_code: TestbedCodeData = _f(TestbedCodeData(), "the testbed task, answers run as Python")
    math: MathData = _f(MathData(), "the math task")
    code: CodeData = _f(CodeData(), "the code task")
    python: PythonData = _f(PythonData(), "your own task")
