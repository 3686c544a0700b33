"""A run directory is never damaged: locks, stops that say so, earlier attempts kept, config
changes refused unless asked for."""

import json
import os
import signal

import pytest

from entropyrl.cli.main import main
from entropyrl.config import load_config
from entropyrl.errors import UserError
from entropyrl.train import train
from entropyrl.train.metrics import read_metrics
from entropyrl.train.state import RunLock


def tiny(model_dir, *extra):
    return [f"model.path={model_dir}", "model.device=cpu", "steps=3", "rollout.n_prompts=2",
            "rollout.group_size=2", "rollout.max_new_tokens=6", "update.mini_batch_size=4",
            "update.micro_batch_size=4", "eval.every=0", "data.testbed.train_size=16",
            "data.testbed.val_size=4", "progress=false", *extra]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_says_where_it_stopped_and_exits_128_plus_signal(
        micro_model_dir, tmp_path, monkeypatch, capsys, signum, code):
    import entropyrl.train.loop as loop

    real = loop.rl_step

    def step_then_signal(run, step):
        out = real(run, step)
        if step == 2:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(loop, "rl_step", step_then_signal)
    out = tmp_path / "run"
    args = ["train", "-c", "testbed/grpo", "--out", str(out), *tiny(micro_model_dir)]
    assert main(args) == code
    err = capsys.readouterr().err
    assert f"interrupted by {signal.Signals(signum).name} at step 2 of 3" in err
    assert "Run the same command to resume" in err and "Traceback" not in err
    assert (out / "checkpoints" / "step_2").is_dir()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    monkeypatch.setattr(loop, "rl_step", real)
    assert main(args) == 0  # the same command resumes and finishes
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_the_demo_stops_at_a_signal_instead_of_going_on(micro_model_dir, tmp_path,
                                                        monkeypatch, capsys):
    import entropyrl.train.loop as loop

    real, calls = loop.rl_step, []

    def signal_at_once(run, step):
        calls.append(run.cfg.name)
        out = real(run, step)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "rl_step", signal_at_once)
    args = ["demo", "--jobs", "1", "--out", str(tmp_path / "demo"), *tiny(micro_model_dir)]
    assert main(args) == 143
    assert calls == ["GRPO"]  # no other method started
    assert "interrupted during GRPO" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "report.html").exists()


def test_a_second_run_on_the_same_directory_is_refused_with_the_holders_pid(micro_model_dir,
                                                                            tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = RunLock(out)
    try:
        with pytest.raises(UserError, match=f"in use by another entropyrl run \\(PID {os.getpid()}"):
            train(load_config("testbed/grpo", tiny(micro_model_dir)), out)
    finally:
        holder.release()
    assert not (out / "metrics.jsonl").exists()
    train(load_config("testbed/grpo", tiny(micro_model_dir)), out)  # free again


def test_an_earlier_attempt_without_a_checkpoint_is_moved_aside_not_deleted(micro_model_dir,
                                                                            tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "train/entropy": 9.9}\n')
    (out / "config.yaml").write_text("name: earlier\n")
    train(load_config("testbed/grpo", tiny(micro_model_dir, "steps=1")), out)
    aside = out / "earlier_attempt_1"
    assert (aside / "metrics.jsonl").read_text() == '{"step": 1, "train/entropy": 9.9}\n'
    assert (aside / "config.yaml").read_text() == "name: earlier\n"
    assert "moved to" in capsys.readouterr().err
    assert read_metrics(out / "metrics.jsonl")[0]["train/entropy"] != 9.9


def test_resuming_with_another_config_is_refused_unless_allowed_and_then_recorded(
        micro_model_dir, tmp_path):
    out = tmp_path / "run"
    train(load_config("testbed/grpo", tiny(micro_model_dir, "steps=1")), out)
    before = (out / "metrics.jsonl").read_text()
    changed = load_config("testbed/grpo", tiny(micro_model_dir, "steps=2", "optim.lr=1e-3"))
    with pytest.raises(UserError, match=r"optim\.lr: 0\.0002 -> 0\.001.*steps: 1 -> 2"):
        train(changed, out)
    assert (out / "metrics.jsonl").read_text() == before  # nothing touched
    train(changed, out, allow_config_change=True)
    (row,) = [json.loads(line) for line in (out / "config_changes.jsonl").read_text().splitlines()]
    assert row["from_checkpoint"] == "step_1"
    assert {c["key"] for c in row["changes"]} == {"optim.lr", "steps"}
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("where", ["file", "under_file", "dev_null", "read_only"])
def test_an_unusable_out_directory_is_a_clear_error(micro_model_dir, tmp_path, capsys,
                                                    monkeypatch, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me\n")
    out = {"file": blocker, "under_file": blocker / "run", "dev_null": "/dev/null",
           "read_only": tmp_path / "ro"}[where]
    if where == "read_only":  # the tests run as root, which permission bits do not stop
        def read_only(run_dir):
            raise PermissionError(13, "Permission denied", str(run_dir / ".lock"))

        monkeypatch.setattr("entropyrl.train.setup.RunLock", read_only)
    args = ["train", "-c", "testbed/grpo", "--out", str(out), *tiny(micro_model_dir)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err
    assert blocker.read_text() == "keep me\n"


def test_without_a_terminal_progress_is_printed_as_plain_lines(micro_model_dir, tmp_path,
                                                                capsys):
    cfg = load_config("testbed/grpo", tiny(micro_model_dir, "progress=true", "eval.every=2",
                                           "eval.k=1", "eval.max_new_tokens=4"))
    train(cfg, tmp_path / "run")  # pytest's captured stdout is not a terminal
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("[GRPO] step")]
    assert [ln.split()[2] for ln in lines] == ["1/3", "3/3"]  # first, validated and last
    assert all("H=" in ln and "val=" in ln and "ETA" in ln for ln in lines)
    assert "Loading weights" not in captured.err  # no transformers bars at load and save


def test_tensorboard_gets_the_metrics_and_the_config(micro_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config("testbed/grpo", tiny(micro_model_dir, "steps=2", "sinks=[tensorboard]"))
    out = train(cfg, tmp_path / "run")
    acc = EventAccumulator(str(out / "tensorboard" / cfg.name)).Reload()
    logged = [e.value for e in acc.Scalars("train/entropy")]
    want = [r["train/entropy"] for r in read_metrics(out / "metrics.jsonl")]
    assert logged == pytest.approx(want, rel=1e-6)
    assert list((out / "tensorboard" / cfg.name).glob("*/events.out.tfevents.*"))  # hparams


def test_a_tracker_that_cannot_start_is_a_clear_error_before_the_first_step(
        micro_model_dir, tmp_path, monkeypatch, capsys):
    from accelerate.tracking import TensorBoardTracker

    def broken(self):
        raise RuntimeError("tracking server unreachable")

    monkeypatch.setattr(TensorBoardTracker, "start", broken)
    out = tmp_path / "run"
    args = ["train", "-c", "testbed/grpo", "--out", str(out),
            *tiny(micro_model_dir, "sinks=[tensorboard]")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "metric sink 'tensorboard' could not start" in err and "unreachable" in err
    assert not (out / "metrics.jsonl").exists()


def test_non_finite_weights_stop_the_run_with_exit_2_and_keep_the_last_checkpoint(
        micro_model_dir, tmp_path, monkeypatch, capsys):
    import entropyrl.train.update as update_mod

    out = tmp_path / "run"
    args = ["train", "-c", "testbed/grpo", "--out", str(out),
            *tiny(micro_model_dir, "checkpoint_every=1")]
    real_step = update_mod.clip_and_step

    def poison_at_step_2(learner, grad_clip, step, update, dist):
        if step == 2:  # what an absurd learning rate or a bad kernel would do
            for group in learner.optimizer.param_groups:
                group["lr"] = float("inf")
        return real_step(learner, grad_clip, step, update, dist)

    monkeypatch.setattr(update_mod, "clip_and_step", poison_at_step_2)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "weights became NaN/inf" in err and "step 2" in err and "Traceback" not in err
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step_1"]


@pytest.mark.parametrize("debug", [False, True])
def test_a_non_finite_loss_stops_the_run_with_exit_2_and_keeps_the_last_checkpoint(
        micro_model_dir, tmp_path, monkeypatch, capsys, debug):
    """The flags are read once per step (or at once with ENTROPYRL_DEBUG_CHECKS=1): either way
    the bad step's weights are never saved and the message names the step and what broke."""
    import entropyrl.train.update as update_mod

    monkeypatch.setenv("ENTROPYRL_DEBUG_CHECKS", "1" if debug else "0")
    out = tmp_path / "run"
    args = ["train", "-c", "testbed/grpo", "--out", str(out),
            *tiny(micro_model_dir, "checkpoint_every=1", "update.mini_batch_size=2",
                  "update.micro_batch_size=2")]
    real, calls = update_mod.compute_objective, []

    def nan_in_step_2(*a, **k):
        obj = real(*a, **k)
        calls.append(1)
        if len(calls) == 3:  # step 2's first micro-batch (two updates per step)
            return obj._replace(loss=obj.loss * float("nan"))
        return obj

    monkeypatch.setattr(update_mod, "compute_objective", nan_in_step_2)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the loss became NaN/inf at step 2 (update 0)" in err and "Traceback" not in err
    when = "before this update" if debug else "at the end of the step, before saving"
    assert when in err
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step_1"]


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_says_how_much_is_needed(
        micro_model_dir, tmp_path, monkeypatch, capsys):
    import errno

    import entropyrl.train.state as state_mod
    from entropyrl.train.state import load_trainer_state

    out = tmp_path / "run"
    args = ["train", "-c", "testbed/grpo", "--out", str(out),
            *tiny(micro_model_dir, "checkpoint_every=1")]
    real_save = state_mod.torch.save
    calls = []

    def full_at_second(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(state_mod.torch, "save", full_at_second)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot write the checkpoint of step 2" in err and "No space left" in err
    assert "GiB are free" in err and "step_1) is intact" in err and "Traceback" not in err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_1"]  # no temp left
    assert load_trainer_state(out / "checkpoints" / "step_1")["step"] == 1


def test_a_field_added_after_a_checkpoint_reads_as_its_default():
    from entropyrl.train.state import config_changes

    defaults = {"model": {"path": "testbed", "compile": False}, "steps": 100}
    old = {"model": {"path": "x"}, "steps": 2}  # written before model.compile existed
    same = {"model": {"path": "x", "compile": False}, "steps": 2}
    assert config_changes(old, same, defaults=defaults) == []
    on = {"model": {"path": "x", "compile": True}, "steps": 2}
    assert config_changes(old, on, defaults=defaults) == [("model.compile", False, True)]
    assert config_changes(old, same) == [("model.compile", None, False)]  # no defaults given


def test_a_checkpoint_from_before_a_new_field_resumes(micro_model_dir, tmp_path):
    import yaml

    out = tmp_path / "run"
    cfg = load_config("testbed/grpo", tiny(micro_model_dir, "steps=2", "checkpoint_every=1"))
    train(cfg, out, stop_after=1)
    saved = out / "checkpoints" / "step_1" / "run_config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["model"]["compile"], old["model"]["compile_mode"]  # as an older version wrote it
    saved.write_text(yaml.safe_dump(old))
    train(cfg, out)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
