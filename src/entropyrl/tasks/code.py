"""Code problems as a task: the answer's last ```python block runs against the problem's tests.

Rows come from :mod:`entropyrl.data.code` (KodCode, APPS/TACO/Eurus-2, generic). Every answer
runs in the bubblewrap sandbox of :mod:`entropyrl.rewards.code`, ``reward.workers`` at a time.
The score is 1 when every test passes (or, with ``data.code.partial_credit``, the share that
pass); solved means every test passed. An answer without a fenced code block scores 0. Each
result's info holds the sandbox's ``status`` (``no_code`` without a code block), ``passed``,
``total`` and ``passed_frac`` (logged as ``reward/*``, docs/metrics.md).
"""

from __future__ import annotations

from typing import Any

from entropyrl.config import RewardConfig
from entropyrl.data.code import CODE_SCHEMAS, detect_code_schema, extract_code
from entropyrl.data.load import distinct_source_names, read_records
from entropyrl.data.prompts import render_prompt
from entropyrl.data.schemas import BadRow
from entropyrl.data_config import CodeData
from entropyrl.errors import UserError
from entropyrl.rewards.result import RewardResult
from entropyrl.tasks.base import Row, TaskSet

CODE_TEMPLATE = ("{question}\n\nWrite a complete Python 3 program that solves the task. Put it "
                 "in a single ```python code block.")


def check(section: CodeData) -> None:
    """Known schema, positive limits, and a sandbox unless the unsafe mode is asked for."""
    if section.schema is not None and section.schema not in CODE_SCHEMAS:
        raise UserError(f"data.code.schema: expected one of {list(CODE_SCHEMAS)} or null, got "
                        f"{section.schema!r}")
    if not (section.timeout_s > 0 and section.memory_mb > 0 and section.max_tests >= 0):
        raise UserError("data.code.timeout_s: expected timeout_s > 0, memory_mb > 0 and "
                        "max_tests >= 0")
    if not section.unsafe_rlimits_only:
        from entropyrl.rewards.code import get_sandbox

        get_sandbox()  # a UserError naming the install command when there is no sandbox


def read_rows(sources: list[str], section: CodeData, tokenizer: Any = None) -> list[Row]:
    """Prompt rows with their tests, from every source.

    Raises:
        UserError: an unknown layout, or a bad row (file, row and field named).
    """
    template = CODE_TEMPLATE if section.template == "code" else section.template
    rows: list[Row] = []
    for source, name in zip(sources, distinct_source_names(list(sources)), strict=True):
        records = read_records(source)
        first = next((r.data for r in records if isinstance(r.data, dict)), None)
        schema = section.schema or (detect_code_schema(first) if first else None)
        if schema is None:
            fields = sorted(first) if first else []
            raise UserError(f"{source}: cannot tell the code dataset's layout from its fields "
                            f"{fields}; set data.code.schema to one of {list(CODE_SCHEMAS)} "
                            "(docs/tasks.md lists the fields each reads)")
        for rec in records:
            if not isinstance(rec.data, dict):
                raise UserError(f"{source}: row {rec.number}: "
                                f"{rec.error or 'expected a JSON object'}; fix the row")
            try:
                adapted = CODE_SCHEMAS[schema](rec.data)
            except BadRow as e:
                raise UserError(f"{source}: row {rec.number}: {e} (schema {schema!r}); fix or "
                                "remove the row") from None
            tests = adapted["tests"][: section.max_tests or None]
            source_name = rec.data.get("data_source")
            rows.append({
                "prompt": render_prompt(adapted["question"], template,
                                        tokenizer if section.chat_template else None,
                                        fallback=template),
                "tests": tests,
                "prelude": adapted["prelude"],
                "data_source": source_name if isinstance(source_name, str) else name,
            })
    if not rows:
        raise UserError(f"{', '.join(sources)}: no rows")
    return rows


def score_code(texts: list[str], rows: list[Row], section: CodeData,
               workers: int) -> list[RewardResult]:
    """Run each answer's code against its row's tests; one result per answer."""
    from entropyrl.rewards.code import run_many

    results: list[RewardResult | None] = [None] * len(texts)
    programs, tests, where = [], [], []
    for i, (text, row) in enumerate(zip(texts, rows, strict=True)):
        code = extract_code(text)
        if code is None:
            results[i] = RewardResult(0.0, False, {"status": "no_code", "passed": 0,
                                                   "total": len(row["tests"]),
                                                   "passed_frac": 0.0})
            continue
        programs.append(code + "\n" + row["prelude"])
        tests.append(row["tests"])
        where.append(i)
    runs = run_many(programs, tests, workers=workers, timeout_s=section.timeout_s,
                    memory_mb=section.memory_mb,
                    unsafe_rlimits_only=section.unsafe_rlimits_only) if programs else []
    for i, r in zip(where, runs, strict=True):
        solved = r.total > 0 and r.passed == r.total
        score = r.fraction if section.partial_credit else float(solved)
        results[i] = RewardResult(score, solved, {"status": r.status, "passed": r.passed,
                                                  "total": r.total, "passed_frac": r.fraction})
    return [r for r in results if r is not None]


def load(section: CodeData, reward: RewardConfig, tokenizer: Any = None) -> TaskSet:
    """Rows from ``data.code.train_files``/``val_files``, scored by running the answers."""
    train = read_rows(section.train_files, section, tokenizer)
    val = read_rows(section.val_files, section, tokenizer)
    if section.max_val_rows:
        val = val[: section.max_val_rows]

    def score(texts: list[str], rows: list[Row]) -> list[RewardResult]:
        return score_code(texts, rows, section, reward.workers)

    return TaskSet(train, val, score)
