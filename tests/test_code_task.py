"""The code task: dataset layouts to tests, code extraction, and answers run in the sandbox."""

from __future__ import annotations

import json

import pytest

from entropyrl.config import load_config
from entropyrl.data.code import CODE_SCHEMAS, detect_code_schema, extract_code
from entropyrl.errors import UserError
from entropyrl.tasks import load_tasks
from entropyrl.tasks.code import score_code

KODCODE = {
    "question": "Write a function square(x) that returns x squared.",
    "test_code": "from solution import square\n\ndef test_small():\n    assert square(3) == 9\n"
                 "\ndef test_negative():\n    assert square(-2) == 4\n",
}
APPS_STDIN = {
    "question": "Read n and print 2n.",
    "input_output": json.dumps({"inputs": ["3\n", "10\n"], "outputs": ["6\n", "20\n"]}),
}
APPS_CALL = {
    "question": "Return the two numbers swapped.",
    "starter_code": "class Solution:\n    def swap(self, a, b):\n",
    "input_output": json.dumps({"fn_name": "swap", "inputs": [[1, 2], [5, 7]],
                                "outputs": [[[2, 1]], [[7, 5]]]}),
}
EURUS = {
    "data_source": "taco",
    "prompt": [{"role": "system", "content": "sys"},
               {"role": "user", "content": "Print the sum of two integers on one line."}],
    "ability": "code",
    "reward_model": {"style": "rule", "ground_truth": json.dumps(
        {"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})},
}
GENERIC = {"prompt": "Define f(x) = x + 1.", "tests": [{"call": "f(1)", "output": "2"}]}


def fenced(code):
    return f"Here it is.\n```python\n{code}\n```\nDone."


@pytest.mark.parametrize(("row", "schema"), [(KODCODE, "kodcode"), (APPS_STDIN, "taco"),
                                             (APPS_CALL, "taco"), (EURUS, "taco"),
                                             (GENERIC, "generic")])
def test_layouts_are_detected(row, schema):
    assert detect_code_schema(row) == schema


def test_layouts_become_tests():
    k = CODE_SCHEMAS["kodcode"](KODCODE)
    assert k["tests"] == [{"call": "test_small()", "output": "None"},
                          {"call": "test_negative()", "output": "None"}]
    assert "from solution import" not in k["prelude"] and "def test_small" in k["prelude"]
    s = CODE_SCHEMAS["taco"](APPS_STDIN)
    assert s["tests"] == [{"input": "3\n", "output": "6\n"}, {"input": "10\n", "output": "20\n"}]
    c = CODE_SCHEMAS["taco"](APPS_CALL)
    assert c["tests"][0] == {"call": "__entropyrl_call('swap', [1, 2])", "output": "[2, 1]"}
    assert c["question"].endswith("def swap(self, a, b):\n")  # the starter code is shown
    e = CODE_SCHEMAS["taco"](EURUS)
    assert e["question"] == "Print the sum of two integers on one line."  # the user message
    assert e["tests"][1] == {"input": "5 5\n", "output": "10\n"}


def test_code_is_the_last_fenced_block():
    assert extract_code("```python\na = 1\n```\ntext\n```py\nb = 2\n```") == "b = 2\n"
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    assert extract_code("no code at all") is None


def _rows(row, schema):
    a = CODE_SCHEMAS[schema](row)
    return {"prompt": "p", "tests": a["tests"], "prelude": a["prelude"], "data_source": "x"}


def test_answers_run_against_their_tests(tmp_path):
    cfg = load_config("testbed/grpo", [])
    section = cfg.data.code
    cases = [
        (_rows(KODCODE, "kodcode"), fenced("def square(x):\n    return x * x"), True),
        (_rows(KODCODE, "kodcode"), fenced("def square(x):\n    return x * 2"), False),
        (_rows(APPS_STDIN, "taco"), fenced("print(2 * int(input()))"), True),
        (_rows(APPS_CALL, "taco"),
         fenced("class Solution:\n    def swap(self, a, b):\n        return b, a"), True),
        (_rows(EURUS, "taco"), fenced("a, b = map(int, input().split())\nprint(a + b)"), True),
        (_rows(EURUS, "taco"), fenced("print(3)"), False),
        (_rows(GENERIC, "generic"), fenced("def f(x):\n    return x + 1"), True),
        (_rows(GENERIC, "generic"), "def f(x): return x + 1  (no fence)", False),
    ]
    got = score_code([c[1] for c in cases], [c[0] for c in cases], section, workers=2)
    assert [r.solved for r in got] == [c[2] for c in cases]
    assert [r.score for r in got] == [float(c[2]) for c in cases]
    assert got[-1].info == {"status": "no_code", "passed": 0, "total": 1, "passed_frac": 0.0}
    assert got[5].info == {"status": "wrong", "passed": 1, "total": 2,  # 3 is right once
                           "passed_frac": 0.5}
    # With partial credit the score is the share of tests passed; solved still needs all.
    section.partial_credit = True
    (half,) = score_code([cases[5][1]], [cases[5][0]], section, workers=1)
    assert half.score == 0.5 and not half.solved


def test_the_code_task_loads_files_and_renders_prompts(tmp_path):
    train = tmp_path / "kod.jsonl"
    train.write_text(json.dumps(KODCODE) + "\n")
    val = tmp_path / "apps.jsonl"
    val.write_text(json.dumps(APPS_STDIN) + "\n" + json.dumps(EURUS) + "\n")
    cfg = load_config("testbed/grpo", ["data.task=code", f"data.code.train_files=[{train}]",
                                       f"data.code.val_files=[{val}]"])
    tasks = load_tasks(cfg.data, cfg.reward)
    assert len(tasks.train) == 1 and len(tasks.val) == 2
    assert tasks.train[0]["prompt"].startswith("Write a function square(x)")
    assert "single ```python code block" in tasks.train[0]["prompt"]
    assert [r["data_source"] for r in tasks.val] == ["apps", "taco"]
    assert tasks.score(fenced("def square(x):\n    return x ** 2"), tasks.train[0]).solved


def test_code_task_errors_name_the_fix(tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"text": "hi"}\n')
    cfg = load_config("testbed/grpo", ["data.task=code", f"data.code.train_files=[{odd}]",
                                       f"data.code.val_files=[{odd}]"])
    with pytest.raises(UserError, match=r"cannot tell the code dataset's layout.*data\.code"
                                         r"\.schema"):
        load_tasks(cfg.data, cfg.reward)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "test_code": "x = 1\n"}) + "\n")
    cfg = load_config("testbed/grpo", ["data.task=code", f"data.code.train_files=[{bad}]",
                                       f"data.code.val_files=[{bad}]"])
    with pytest.raises(UserError, match=r"bad\.jsonl: row 1: .*defines no test_\* function"):
        load_tasks(cfg.data, cfg.reward)
    with pytest.raises(UserError, match=r"data\.code\.schema: expected one of"):
        load_tasks(load_config("testbed/grpo", [
            "data.task=code", f"data.code.train_files=[{bad}]", f"data.code.val_files=[{bad}]",
            "data.code.schema=leetcode"]).data, cfg.reward)


def test_eval_reports_code_pass_at_k_per_source(tmp_path, micro_model_dir):
    from entropyrl.cli.main import main

    data = tmp_path / "mixed.jsonl"
    data.write_text(json.dumps({**APPS_STDIN, "data_source": "apps"}) + "\n"
                    + json.dumps(EURUS) + "\n" + json.dumps({**EURUS, "data_source": "taco"})
                    + "\n")
    out = tmp_path / "eval.json"
    samples = tmp_path / "samples.jsonl"
    assert main(["eval", "--model", str(micro_model_dir), "--task", "code", "--data", str(data),
                 "--n", "2", "--max-new-tokens", "4", "--device", "cpu", "--workers", "1",
                 "--json", str(out), "--samples", str(samples)]) == 0
    sources = json.loads(out.read_text())["sources"]
    assert {k: v["n_prompts"] for k, v in sources.items()} == {"apps": 1, "taco": 2}
    for v in sources.values():  # a random micro model writes no code block
        assert v["pass_at_k"] == 0.0 and v["greedy_acc"] == 0.0 and v["k"] == 2
    lines = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(lines) == 3 * (1 + 2) and not any(x["solved"] for x in lines)


def test_the_train_flag_turns_on_the_unsafe_mode(tmp_path, monkeypatch):
    import entropyrl.train
    from entropyrl.cli.main import main

    seen = []
    monkeypatch.setattr(entropyrl.train, "train", lambda cfg, out, **kw: seen.append(cfg))
    assert main(["train", "-c", "testbed/grpo", "--out", str(tmp_path / "o")]) == 0
    assert main(["train", "-c", "testbed/grpo", "--out", str(tmp_path / "o"),
                 "--unsafe-rlimits-only"]) == 0
    assert [c.data.code.unsafe_rlimits_only for c in seen] == [False, True]
    assert [c.data.testbed_code.unsafe_rlimits_only for c in seen] == [False, True]
