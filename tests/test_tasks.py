"""Tasks as a registry, reward results, and the user's own reward function (reward.fn)."""

from __future__ import annotations

import json
import typing

import pytest

from entropyrl.config import DataConfig, load_config
from entropyrl.errors import UserError
from entropyrl.rewards.result import RewardResult, full_credit, to_result
from entropyrl.rewards.user import UserScorer, load_reward_fn
from entropyrl.tasks import TASKS, load_tasks

REWARD = '''
import time

def digits(completions, prompts, target, kind, **columns):
    """Partial credit: the share of the target's digits right, in place; solved when exact."""
    out = []
    for text, want, k in zip(completions, target, kind):
        got = text.rpartition("#")[2].strip()
        right = sum(a == b for a, b in zip(got.rjust(len(want)), want))
        out.append({"score": right / len(want), "solved": got == want, "source": k})
    return out

def echo_columns(completions, prompts, **columns):
    return [float(len(columns) * 10 + len(prompts))]

def boom(completions, **columns):
    raise ValueError("no reward for you")

def two(completions, **columns):
    return [1.0, 0.0]

def text(completions, **columns):
    return ["1.0"]

def slow(completions, **columns):
    if completions[0] == "slow":
        time.sleep(30)
    return [1.0]
'''


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(REWARD)
    return path


def test_the_registry_matches_the_config_choices():
    choices = typing.get_args(typing.get_type_hints(DataConfig)["task"])
    assert set(choices) == set(TASKS)
    for name in TASKS:  # every task has its own config section
        assert hasattr(DataConfig(), name)


def test_reward_values_become_results():
    assert to_result(1) == RewardResult(1.0, True)
    assert to_result(0.5) == RewardResult(0.5, False)
    assert to_result(0.5, solved_at=0.5).solved
    assert to_result(True) == RewardResult(1.0, True)
    got = to_result({"score": 0.25, "solved": True, "tests": 3})
    assert got == RewardResult(0.25, True, {"tests": 3})
    assert full_credit([1.0, 0.0]) == [RewardResult(1.0, True), RewardResult(0.0, False)]
    for bad in ("1.0", None, float("nan"), {"solved": True}, [1.0]):
        with pytest.raises(TypeError):
            to_result(bad)


def test_reward_fn_names_a_module_or_a_file(reward_file, monkeypatch):
    assert load_reward_fn(f"{reward_file}:digits").__name__ == "digits"
    monkeypatch.chdir(reward_file.parent)
    monkeypatch.syspath_prepend(str(reward_file.parent))
    assert load_reward_fn("my_reward:two").__name__ == "two"
    for spec, message in [
        ("nocolon", r"expected 'module:function'"),
        ("no_such_module_here:f", r"no module 'no_such_module_here'"),
        ("my_reward:missing", r"my_reward has no function 'missing'"),
        ("my_reward:time", r"it is a module"),
        (f"{reward_file.parent}/absent.py:f", r"no file"),
    ]:
        with pytest.raises(UserError, match=message):
            load_reward_fn(spec)


def test_the_user_reward_is_scored_in_workers_with_columns(reward_file):
    scorer = UserScorer(f"{reward_file}:digits", workers=1, timeout=20.0)
    try:
        rows = [{"prompt": "12+30=", "target": "42", "kind": "add"}] * 3
        got = scorer.score_batch(["#42", "#41", "garbage"], rows)
    finally:
        scorer.close()
    assert [r.score for r in got] == [1.0, 0.5, 0.0]
    assert [r.solved for r in got] == [True, False, False]
    assert got[0].info == {"source": "add"}


def test_every_column_but_the_prompt_reaches_the_function(reward_file):
    scorer = UserScorer(f"{reward_file}:echo_columns", workers=1, timeout=20.0)
    try:
        (got,) = scorer.score_batch(["x"], [{"prompt": "p", "a": 1, "b": 2, "c": 3}])
    finally:
        scorer.close()
    assert got.score == 31.0  # three columns, one prompt


@pytest.mark.parametrize(("fn", "message"), [
    ("boom", r"ValueError: no reward for you \(at .*my_reward\.py:\d+ in boom\)"),
    ("two", r"it returned 2 values for 1 completion\. It is called as f\(completions="),
    ("text", r"it returned a bad value: expected a finite number as the score, got '1\.0'"),
])
def test_a_failing_reward_is_a_clear_error(reward_file, fn, message):
    scorer = UserScorer(f"{reward_file}:{fn}", workers=1, timeout=20.0)
    try:
        with pytest.raises(UserError, match=r"reward\.fn \(.*\) failed on a response: " + message):
            scorer.score_batch(["x"], [{"prompt": "p"}])
    finally:
        scorer.close()


def test_a_reward_past_its_deadline_scores_zero(reward_file):
    scorer = UserScorer(f"{reward_file}:slow", workers=1, timeout=1.0)
    try:
        got = scorer.score_batch(["slow", "fast"], [{"prompt": "p"}] * 2)
    finally:
        scorer.close()
    assert [(r.score, r.solved) for r in got] == [(0.0, False), (1.0, True)]
    assert scorer.pool.stats.timeouts == 1


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _toy_files(tmp_path):
    rows = [{"question": f"{a}+{b}=", "target": str(a + b), "kind": "add"}
            for a in range(10, 14) for b in range(20, 24)]
    return (_write_rows(tmp_path / "train.jsonl", rows),
            _write_rows(tmp_path / "val.jsonl", rows[:4]))


def test_the_python_task_reads_prompts_and_columns(tmp_path, reward_file):
    train, val = _toy_files(tmp_path)
    cfg = load_config("testbed/grpo", [
        "data.task=python", f"data.python.train_files=[{train}]",
        f"data.python.val_files=[{val}]", "data.python.prompt_key=question",
        f"reward.fn={reward_file}:digits", "reward.workers=1"])
    tasks = load_tasks(cfg.data, cfg.reward)
    try:
        assert len(tasks.train) == 16 and len(tasks.val) == 4
        row = tasks.train[0]
        assert row == {"prompt": "10+20=", "target": "30", "kind": "add",
                       "data_source": "train"}
        assert tasks.score("#30", row) == RewardResult(1.0, True, {"source": "add"})
    finally:
        tasks.close()


def test_python_task_errors_name_the_fix(tmp_path, reward_file):
    train, val = _toy_files(tmp_path)
    base = ["data.task=python", f"data.python.train_files=[{train}]",
            f"data.python.val_files=[{val}]"]
    with pytest.raises(UserError, match=r"reward\.fn: the python task is scored by your"):
        load_config("testbed/grpo", base)
    with pytest.raises(UserError, match=r"data\.python\.train_files: the python task needs"):
        load_config("testbed/grpo", ["data.task=python", f"reward.fn={reward_file}:digits"])
    cfg = load_config("testbed/grpo", [*base, f"reward.fn={reward_file}:digits"])
    with pytest.raises(UserError, match=r"no text in column 'prompt'.*data\.python\.prompt_key"):
        load_tasks(cfg.data, cfg.reward)


def test_reward_fn_replaces_a_builtin_task_reward(reward_file):
    cfg = load_config("testbed/grpo", ["data.testbed.train_size=8", "data.testbed.val_size=4",
                                       f"reward.fn={reward_file}:echo_columns",
                                       "reward.workers=1"])
    tasks = load_tasks(cfg.data, cfg.reward)
    try:
        row = tasks.train[0]
        got = tasks.score("anything", row)
    finally:
        tasks.close()
    # The testbed row's columns (answer, difficulty, data_source, solution) reach the function.
    assert got.score == 41.0


def test_training_on_a_user_task_uses_the_results(tmp_path, reward_file, micro_model_dir):
    from entropyrl.train import train
    from entropyrl.train.metrics import read_metrics

    train_file, val_file = _toy_files(tmp_path)
    cfg = load_config("testbed/grpo", [
        f"model.path={micro_model_dir}", "model.device=cpu", "steps=2", "rollout.n_prompts=4",
        "rollout.group_size=2", "rollout.max_new_tokens=4", "update.mini_batch_size=8",
        "update.micro_batch_size=8", "eval.every=1", "eval.k=1", "progress=false",
        "data.task=python", f"data.python.train_files=[{train_file}]",
        f"data.python.val_files=[{val_file}]", "data.python.prompt_key=question",
        f"reward.fn={reward_file}:digits", "reward.workers=1"])
    rows = read_metrics(train(cfg, tmp_path / "run") / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # The micro model writes no exact answer: partial credit moves the reward, not accuracy.
        assert r["train/acc"] == 0.0 and r["val/acc"] == 0.0
        assert 0.0 <= r["train/reward_mean"] < 1.0
