"""`entropyrl demo --jobs N`: methods trained side by side in worker processes."""

import json
import multiprocessing
import os

import demo_helpers
import pytest

from entropyrl.cli import demo
from entropyrl.cli.board import _Tail
from entropyrl.cli.main import main
from entropyrl.cli.parallel import plan_workers
from entropyrl.train.metrics import read_metrics

NAMES = [name for name, _ in demo.METHODS]
DIRS = [preset.split("/")[-1] for _, preset in demo.METHODS]


def tiny(model_dir, *extra):
    return [f"model.path={model_dir}", "model.device=cpu", "steps=2", "rollout.n_prompts=2",
            "rollout.group_size=2", "rollout.max_new_tokens=6", "update.mini_batch_size=4",
            "update.micro_batch_size=4", "eval.every=0", "data.testbed.train_size=16",
            "data.testbed.val_size=4", *extra]


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may run on ``n`` cores (what the default --jobs and threads use)."""
    def set_cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    return set_cores


def assert_no_worker_left(calls):
    assert multiprocessing.active_children() == []
    for pid in {c["pid"] for c in calls} - {os.getpid()}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(("requested", "n_cores", "expected"), [
    (None, 2, (2, 1)), (None, 16, (5, 3)), (None, 1, (1, 1)), (3, 16, (3, 5)), (8, 2, (5, 1)),
    (1, 16, (1, 16)),
])
def test_workers_default_to_one_per_core_at_most_one_per_method_sharing_the_cores(
        requested, n_cores, expected):
    assert plan_workers(requested, n_cores, 5) == expected


def test_jobs_2_trains_each_method_once_in_a_worker_and_writes_the_report(
        micro_model_dir, tmp_path, monkeypatch, capsys, cores):
    cores(6)  # --jobs 2 on 6 cores: 3 torch threads per worker, not the parent's 1
    monkeypatch.setattr(demo, "train_method", demo_helpers.record_and_train)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--jobs", "2", "--out", str(out),
                 *tiny(micro_model_dir)]) == 0
    calls = demo_helpers.calls(out)
    assert sorted(c["name"] for c in calls) == sorted(NAMES)  # each method exactly once
    assert {c["name"]: c["out"] for c in calls} == {
        name: str(out / d) for name, d in zip(NAMES, DIRS, strict=True)}
    pids = {c["pid"] for c in calls}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers, none of it in this process
    assert {c["threads"] for c in calls} == {3}
    for d in DIRS:
        assert [r["step"] for r in read_metrics(out / d / "metrics.jsonl")] == [1, 2]
        assert "[" in (out / d / "train.log").read_text()  # the run's own lines went there
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == NAMES  # the report in METHODS order
    assert (out / "report.html").is_file()
    stdout = capsys.readouterr().out
    assert "5 methods, 2 at a time, 3 torch threads each" in stdout
    for name in NAMES:
        assert f"[{name}] done in " in stdout
    assert stdout.count("(3 threads): entropy ") == 5
    assert_no_worker_left(calls)


def test_a_method_trains_the_same_in_a_worker_as_in_the_serial_demo(micro_model_dir, tmp_path,
                                                                     monkeypatch, cores):
    # Same thread count both ways: this process runs 1 (conftest), each of 2 workers on 2
    # cores runs 1. Wall times aside, every metric of every step must be bit-identical.
    cores(2)
    monkeypatch.setattr(demo, "train_method", demo_helpers.record_and_train)
    rows = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        assert main(["demo", "--jobs", jobs, "--out", str(out), *tiny(micro_model_dir)]) == 0
        pids = {c["pid"] for c in demo_helpers.calls(out)}
        assert (pids == {os.getpid()}) == (jobs == "1")
        rows[jobs] = {d: [{k: v for k, v in r.items() if not k.startswith("time/")}
                          for r in read_metrics(out / d / "metrics.jsonl")] for d in DIRS}
    assert rows["1"] == rows["2"]
    assert len({json.dumps(rows["1"][d]) for d in DIRS}) > 1  # the methods do differ


@pytest.mark.parametrize(("helper", "message", "traceback"), [
    (demo_helpers.fail_with_a_user_error,
     "Clip-higher failed: data.file: no such file; give an existing one", False),
    (demo_helpers.fail_with_a_bug, "Clip-higher failed: RuntimeError: boom", True),
])
def test_a_failing_method_stops_the_demo_naming_it_with_exit_code_2(
        micro_model_dir, tmp_path, monkeypatch, capsys, cores, helper, message, traceback):
    cores(2)
    monkeypatch.setattr(demo, "train_method", helper)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *tiny(micro_model_dir)]) == 2
    err = capsys.readouterr().err
    assert f"entropyrl demo: error: {message} (its output: {out / 'clip_higher'}" in err
    assert ("Traceback" in err) == traceback
    calls = demo_helpers.calls(out)
    assert sorted(c["name"] for c in calls) == ["Clip-higher", "GRPO"]  # no other started
    # GRPO, still training, was stopped as a signal stops a run: at a step's end, checkpointed.
    steps = [r["step"] for r in read_metrics(out / "grpo" / "metrics.jsonl")]
    assert 1 <= len(steps) < demo_helpers.LONG
    assert (out / "grpo" / "checkpoints" / f"step_{steps[-1]}").is_dir()
    assert not (out / "report.html").exists()
    assert_no_worker_left(calls)


def test_a_signal_to_the_demo_stops_every_worker_at_a_checkpoint_with_exit_130(
        micro_model_dir, tmp_path, monkeypatch, capsys, cores):
    cores(2)
    monkeypatch.setattr(demo, "train_method", demo_helpers.interrupt_the_demo)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *tiny(micro_model_dir)]) == 130
    err = capsys.readouterr().err
    assert "entropyrl demo: interrupted during GRPO (interrupted by SIGINT at step" in err
    assert " and Clip-higher (interrupted by SIGINT at step " in err
    assert "The demo does not resume" in err and "Traceback" not in err
    calls = demo_helpers.calls(out)
    assert sorted(c["name"] for c in calls) == ["Clip-higher", "GRPO"]
    for d in ("grpo", "clip_higher"):
        steps = [r["step"] for r in read_metrics(out / d / "metrics.jsonl")]
        assert (out / d / "checkpoints" / f"step_{steps[-1]}").is_dir()
    assert not (out / "report.html").exists()
    assert_no_worker_left(calls)


def test_the_board_reads_only_whole_rows_of_a_run_being_written(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = _Tail(path)
    tail.read()  # no file yet
    assert tail.step == 0
    path.write_text('{"step": 1, "train/entropy": 0.3, "train/acc": 0.2}\n{"step": 2, "tr')
    tail.read()
    assert (tail.step, tail.first_entropy, tail.entropy) == (1, 0.3, 0.3)
    with path.open("a") as f:
        f.write('ain/entropy": 0.1, "train/acc": 0.5, "val/acc": 0.6}\n')
    tail.read()
    assert (tail.step, tail.first_entropy, tail.entropy, tail.acc, tail.val) == (
        2, 0.3, 0.1, 0.5, 0.6)
