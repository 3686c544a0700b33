import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from entropyrl.config import load_config
from entropyrl.rewards.result import full_credit
from entropyrl.train import train
from entropyrl.train.metrics import read_metrics

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
TIME_KEYS = ("time/",)


def tiny(model_dir, *extra):
    return load_config(
        "testbed/grpo",
        [
            f"model.path={model_dir}",
            "model.device=cpu",
            "steps=3",
            "rollout.n_prompts=4",
            "rollout.group_size=4",
            "rollout.max_new_tokens=12",
            "update.mini_batch_size=8",
            "update.micro_batch_size=8",
            "eval.every=2",
            "eval.k=2",
            "eval.max_new_tokens=12",
            "data.testbed.train_size=64",
            "data.testbed.val_size=8",
            "optim.lr=1e-3",
            # Some parameters (e.g. the key bias) get a structurally zero gradient; Adam with
            # a tiny epsilon would turn its float noise into full-size steps.
            "optim.eps=1e-4",
            "progress=false",
            *extra,
        ],
    )


@pytest.fixture(autouse=True)
def varied_reward(monkeypatch):
    """A random micro model never solves a task, so every advantage would be zero and every
    update a no-op; this reward (does the response contain a '1'?) gives mixed groups."""
    import entropyrl.tasks as tasks

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit([float("1" in t) for t in texts]))

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", load)


def documented_keys():
    keys = {}
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            keys[cells[0].strip("`")] = cells[1]
    return keys


def weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step_{step}" / "model.safetensors"))


def strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith(TIME_KEYS)} for r in rows]


def test_three_step_run(micro_model_dir, tmp_path):
    out = train(tiny(micro_model_dir, "checkpoint_every=1"), tmp_path / "a")
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(v is None or math.isfinite(v) for v in r.values() if isinstance(v, float))
        assert math.isfinite(r["loss/total"])
    # Parameters moved.
    init = load_file(str(micro_model_dir / "model.safetensors"))
    last = weights(out, 3)
    assert any(not torch.equal(init[k], last[k]) for k in init)
    # Keys: always-present ones emitted every step; nothing undocumented.
    docs = documented_keys()
    always = {k for k, when in docs.items() if when == "always"}
    emitted = set().union(*rows)
    assert always <= set(rows[0]) and always <= set(rows[1])
    assert emitted - set(docs) == set()
    assert {"val/acc", "val/avg_at_k", "val/pass_at_k"} <= set(rows[0])  # step 1 validates
    assert "loss/clipfrac" in emitted and "loss/selected_frac" not in emitted
    assert any(r["train/mixed_group_frac"] > 0 for r in rows)
    # The trajectory itself is recorded in test_wiring.py::test_recorded_trajectory.
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_resume_reproduces_the_uninterrupted_run(micro_model_dir, tmp_path):
    cfg = tiny(micro_model_dir, "steps=4", "checkpoint_every=2", "loss.name=kl_cov",
               "update.mini_batch_size=4", "update.micro_batch_size=4")
    full = train(cfg, tmp_path / "full")
    part = train(cfg, tmp_path / "part", stop_after=2)
    assert [r["step"] for r in read_metrics(part / "metrics.jsonl")] == [1, 2]
    train(cfg, tmp_path / "part")  # same command again: resumes at step 3
    assert strip_time(read_metrics(part / "metrics.jsonl")) == strip_time(
        read_metrics(full / "metrics.jsonl")
    )
    a, b = weights(full, 4), weights(part, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loss", ["ppo", "kl_cov", "clip_cov"])
def test_micro_batch_split_does_not_change_the_update(micro_model_dir, tmp_path, loss):
    common = ["steps=1", "eval.every=0", f"loss.name={loss}", "update.mini_batch_size=8",
              "loss.kl_cov.ratio=0.05", "loss.clip_cov.ratio=0.05", "loss.clip_cov.cov_low=0.0",
              "loss.clip_cov.cov_high=100.0"]
    one = train(tiny(micro_model_dir, *common, "update.micro_batch_size=8"), tmp_path / "m8")
    four = train(tiny(micro_model_dir, *common, "update.micro_batch_size=2"), tmp_path / "m2")
    a, b = weights(one, 1), weights(four, 1)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    ra, rb = read_metrics(one / "metrics.jsonl")[0], read_metrics(four / "metrics.jsonl")[0]
    for key in ("loss/total", "loss/policy_loss", "loss/approx_kl_k3", "optim/grad_norm"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-7), key
    if loss != "ppo":
        assert ra["loss/selected_frac"] == pytest.approx(rb["loss/selected_frac"], rel=1e-6)
        assert ra["loss/selected_frac"] > 0


def test_dynamic_sampling_keeps_mixed_groups_and_a_fixed_batch_size(micro_model_dir, tmp_path):
    out = train(tiny(micro_model_dir, "steps=2", "eval.every=0", "rollout.dynamic_sampling=true",
                     "rollout.max_gen_batches=3"), tmp_path / "ds")
    rows = read_metrics(out / "metrics.jsonl")
    for r in rows:
        assert r["train/n_groups"] == 4  # rollout.n_prompts, whatever the rounds
        assert 1 <= r["train/gen_batches"] <= 3
        if r["train/gen_batches"] < 3:  # filled with mixed groups only: every group has signal
            assert r["train/adv_abs_mean"] > 0


def test_dynamic_sampling_tops_up_when_no_group_is_mixed(micro_model_dir, tmp_path, monkeypatch):
    import entropyrl.tasks as tasks

    real = tasks.load_tasks

    def constant(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit([0.0] * len(texts)))

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", constant)
    out = train(tiny(micro_model_dir, "steps=1", "eval.every=0", "rollout.dynamic_sampling=true",
                     "rollout.max_gen_batches=2"), tmp_path / "flat")
    (row,) = read_metrics(out / "metrics.jsonl")
    assert row["train/gen_batches"] == 2 and row["train/n_groups"] == 4
    assert row["train/mixed_group_frac"] == 0 and row["train/adv_abs_mean"] == 0
