"""The testbed code task: the answer after the last '#' runs as Python in the real sandbox."""

import pytest
from test_trainer import documented_keys

from entropyrl.config import load_config
from entropyrl.errors import UserError
from entropyrl.tasks import load_tasks
from entropyrl.tasks.testbed_code import answer_expression, score_expressions
from entropyrl.train import train
from entropyrl.train.metrics import read_metrics

ROW = {"prompt": "4738+2856=", "answer": "7594"}
# Hand-written responses: (response, solved, status).
CASES = [
    ("14 09 15 07#7594", True, "ok"),
    ("14 09 15 07#7595", False, "wrong"),
    ("#(7000+594)", True, "ok"),  # any expression of the right value
    ("#7594.0", False, "wrong"),  # a float is not the integer
    ("#07594", False, "crash"),  # leading zeros: a SyntaxError when evaluated
    ("# 7594", False, "crash"),  # an indented expression does not parse either
    ("#7594 done", False, "crash"),
    ("#1//0", False, "crash"),  # raises
    ("14 09 15 07", False, "no_code"),  # no '#'
    ("14 09 15 07#", False, "no_code"),  # nothing after it
    ("#7594#", False, "no_code"),  # the last '#' counts
]
# Kills the sandbox's driver: exec("import os;os.kill(os.getppid(),9)") in the vocabulary
# the testbed tokenizer can write (no quotes or underscores).
KILLER = "#exec(" + "+".join(f"chr({ord(c)})" for c in "import os;os.kill(os.getppid(),9)") + ")"


def section(*extra):
    return load_config("testbed/code_grpo", list(extra)).data.testbed_code


def test_the_expression_is_the_text_after_the_last_hash():
    assert answer_expression("14 09#7594") == "7594"
    assert answer_expression("1#2#3 ") == "3 "
    assert answer_expression("7594") is None and answer_expression("12#  ") is None


@pytest.mark.parametrize("batch", [1, 4])
def test_responses_run_as_python_in_the_sandbox(batch):
    texts = [c[0] for c in CASES]
    s = section(f"data.testbed_code.sandbox_batch={batch}")
    got = score_expressions(texts, [ROW] * len(texts), s, workers=2)
    assert [(r.solved, r.info["status"]) for r in got] == [(c[1], c[2]) for c in CASES]
    assert [r.score for r in got] == [float(c[1]) for c in CASES]


def test_an_answer_that_ends_its_sandbox_fails_only_itself():
    texts = ["#7594", KILLER, "#7594", "#7595", "#7594"]
    got = score_expressions(texts, [ROW] * 5, section("data.testbed_code.sandbox_batch=8"), 1)
    assert [r.info["status"] for r in got] == ["ok", "crash", "ok", "wrong", "ok"]


def test_a_runaway_answer_times_out():
    s = section("data.testbed_code.timeout_s=0.5")
    (r,) = score_expressions(["#9**9**9**9"], [ROW], s, workers=1)
    assert r.info["status"] == "timeout" and not r.solved


def test_the_task_loads_testbed_rows_and_scores_through_the_sandbox():
    cfg = load_config("testbed/code_grpo", ["data.testbed_code.train_size=16",
                                            "data.testbed_code.val_size=8"])
    tasks = load_tasks(cfg.data, cfg.reward)
    assert len(tasks.train) == 16 and len(tasks.val) == 8
    assert {r["data_source"] for r in tasks.train} <= {"testbed_code/add", "testbed_code/sub"}
    assert not {r["prompt"] for r in tasks.train} & {r["prompt"] for r in tasks.val}
    row = tasks.val[0]
    assert tasks.score(row["solution"], row).solved  # the clean reference solution
    assert not tasks.score(row["solution"] + "1", row).solved


def test_bad_sections_name_the_field():
    cfg = load_config("testbed/code_grpo", ["data.testbed_code.ops=[add, pow]"])
    with pytest.raises(UserError, match=r"data\.testbed_code\.ops\[1\]"):
        load_tasks(cfg.data, cfg.reward)
    cfg = load_config("testbed/code_grpo", ["data.testbed_code.sandbox_batch=0"])
    with pytest.raises(UserError, match="sandbox_batch >= 1"):
        load_tasks(cfg.data, cfg.reward)


def test_two_steps_of_the_preset_run_the_code_reward(tmp_path, monkeypatch):
    import entropyrl.rewards.code as code

    calls = []
    real = code.run_many

    def spy(programs, tests, **kw):
        calls.append(sum(len(t) for t in tests))
        return real(programs, tests, **kw)

    monkeypatch.setattr(code, "run_many", spy)
    cfg = load_config("testbed/code_grpo", [
        "steps=2", "rollout.n_prompts=4", "rollout.group_size=4", "update.mini_batch_size=16",
        "update.micro_batch_size=16", "eval.every=0", "eval.k=1", "data.testbed_code.val_size=4",
        "data.testbed_code.train_size=32", "progress=false"])
    rows = read_metrics(train(cfg, tmp_path / "run") / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert set().union(*rows) - set(documented_keys()) == set()  # docs/metrics.md lists them
    for r in rows:
        status = {k: v for k, v in r.items() if k.startswith("reward/status/")}
        assert status and sum(status.values()) == pytest.approx(1.0)
        # Solved means the sandbox said ok: the reward's verdict reached the update batch.
        assert r["train/acc"] == pytest.approx(status.get("reward/status/ok", 0.0))
        assert r["time/reward_s"] > 0
    # Every expression of the 16 training responses per step ran (val: 4 greedy + 4 sampled
    # at steps 1 and 2); a response without '#' would not, and the base model always writes one.
    assert sum(calls) >= 2 * 16
