"""Tests of the wiring between the library and the loop: each fails when the loop passes the
wrong tensor, sign or mode to a correct library function (STYLE.md, 16)."""

import json
import os
from pathlib import Path

import pytest
import torch

from entropyrl import dynamics
from entropyrl.config import load_config
from entropyrl.distributed import Dist
from entropyrl.rewards.result import full_credit
from entropyrl.rollout import Rollout, SamplingParams
from entropyrl.tasks import PromptSampler
from entropyrl.train import train
from entropyrl.train.batch_metrics import StepBatch, step_metrics
from entropyrl.train.collect import collect
from entropyrl.train.metrics import read_metrics

TRAJECTORY = Path(__file__).parent / "data" / "trajectory.json"
RECORDED_KEYS = ("loss/total", "train/entropy", "dyn/cov_npg", "dyn/delta_entropy")


def tiny(model_dir, *extra):
    return load_config("testbed/kl_cov", [
        f"model.path={model_dir}", "model.device=cpu", "steps=3", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=12", "update.mini_batch_size=8",
        "update.micro_batch_size=4", "update.epochs=2", "loss.kl_cov.ratio=0.05",
        "eval.every=0", "data.testbed.train_size=64", "data.testbed.val_size=8", "optim.lr=1e-3",
        "optim.eps=1e-4", "progress=false",
        # The recorded ΔH is the whole batch's (the sampled estimate: test_step_fusion.py).
        "dynamics.entropy_after_fraction=1", *extra,
    ])


@pytest.fixture(autouse=True)
def varied_reward(monkeypatch):
    """The micro model never solves a task; reward a '1' in the response to get mixed groups."""
    import entropyrl.tasks as tasks

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit([float("1" in t) for t in texts]))

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", load)


# ----------------------------------------------------------------------------- end to end


def test_recorded_trajectory(micro_model_dir, tmp_path):
    """Three KL-Cov steps (two epochs: the selection is re-scored) reproduce recorded values.

    Re-record after an intended change of the maths with ENTROPYRL_RECORD=1.
    """
    rows = read_metrics(train(tiny(micro_model_dir), tmp_path / "run") / "metrics.jsonl")
    got = [{k: r[k] for k in RECORDED_KEYS} for r in rows]
    if os.environ.get("ENTROPYRL_RECORD"):
        TRAJECTORY.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(TRAJECTORY.read_text())
    assert len(got) == len(want) == 3
    for step, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        for key in RECORDED_KEYS:
            assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-8), (step, key)
    assert any(abs(w["dyn/delta_entropy"]) > 1e-4 for w in want)  # the record is not trivial


def test_entropy_change_is_after_minus_before_and_prediction_is_minus_cov(micro_model_dir,
                                                                          tmp_path):
    rows = read_metrics(train(tiny(micro_model_dir, "steps=2"), tmp_path / "run")
                        / "metrics.jsonl")
    for r in rows:
        assert r["dyn/entropy_before"] == r["train/entropy"]
        assert r["dyn/delta_entropy"] == pytest.approx(
            r["dyn/entropy_after"] - r["dyn/entropy_before"], abs=1e-12)
        assert r["dyn/pred_delta_entropy"] == -r["dyn/cov_npg"]
        assert r["dyn/cov_npg"] != r["dyn/cov_pg"]


# ----------------------------------------------------------------------------- selection


def test_selection_scores_the_current_policy_after_the_first_update(micro_model_dir, tmp_path,
                                                                    monkeypatch):
    """Update 0 scores the rollout log-probs; later updates score the parameters of the time."""
    import entropyrl.train.update as update_mod
    import entropyrl.train.update_selection as selection_mod
    from entropyrl.policy import response_token_stats

    seen = []
    real = selection_mod.select_kl_cov
    state = {}

    def spy(parts, config, *, dist=None):
        model = state["model"]
        fresh = [response_token_stats(model, *state["args"](p), temperature=1.0,
                                      with_entropy=False).logprobs for p in state["idx"]]
        seen.append([(p.logprobs.clone(), p.old_logprobs.clone(), f.detach())
                     for p, f in zip(parts, fresh, strict=True)])
        return real(parts, config, dist=dist)

    real_select = selection_mod.select_scored

    def select(learner, batch, parts, *args):
        state["model"] = learner.model
        state["idx"] = parts
        roll = batch.rollout
        state["args"] = lambda idx: (roll.input_ids[idx], roll.attention_mask[idx],
                                     roll.prompt_len)
        return real_select(learner, batch, parts, *args)

    monkeypatch.setattr(selection_mod, "select_kl_cov", spy)
    monkeypatch.setattr(update_mod, "select_scored", select)
    train(tiny(micro_model_dir, "steps=1"), tmp_path / "run")
    assert len(seen) == 4  # 16 rows / 8 per mini-batch x 2 epochs
    for update, parts in enumerate(seen):
        for scored, old, current in parts:
            if update == 0:
                assert torch.equal(scored, old)
            else:
                assert torch.allclose(scored, current, atol=1e-6)
                assert not torch.allclose(scored, old, atol=1e-6)


# ----------------------------------------------------------------------------- metrics


def test_step_metrics_report_the_natural_pg_covariance():
    torch.manual_seed(0)
    lp = -torch.rand(6, 5) * 3
    adv = torch.randn(6, 5)
    mask = torch.rand(6, 5) > 0.2
    batch = StepBatch(mask, lp, torch.rand(6, 5), adv, torch.rand(6), torch.rand(6) > 0.5,
                      torch.zeros(6, dtype=torch.bool), torch.arange(6) // 3)
    m = step_metrics(batch, Dist.single())
    cov = dynamics.batch_covariances(lp, adv, mask)
    assert m["dyn/cov_npg"] == pytest.approx(cov.cov_npg, rel=1e-12)
    assert m["dyn/cov_pg"] == pytest.approx(cov.cov_pg, rel=1e-12)
    assert abs(cov.cov_npg - cov.cov_pg) > 1e-3


class FixedEngine:
    """Returns the same responses for every call: prompt i → ``responses[i % len]``."""

    def __init__(self, responses, eos=2, pad=0):
        self.responses, self.eos, self.pad = responses, eos, pad

    def generate(self, prompts, n, sampling):
        rows = [[5, 6] for _ in prompts for _ in range(n)]
        resp = [self.responses[i % len(self.responses)] for i in range(len(rows))]
        texts = [" ".join(map(str, r)) for r in resp]
        return Rollout.from_token_lists(rows, resp, texts=texts,
                                        group_ids=[i // n for i in range(len(rows))],
                                        eos_id=self.eos, pad_id=self.pad)

    def sync_weights(self, model):
        pass

    def close(self):
        pass


def _collect(scores, responses, **reward):
    cfg = load_config("testbed/grpo", ["rollout.n_prompts=2", "rollout.group_size=2",
                                       "update.mini_batch_size=4", "update.micro_batch_size=4",
                                       "rollout.max_new_tokens=4",
                                       *(f"reward.{k}={v}" for k, v in reward.items())])
    rows = [{"prompt": "p"}] * 4
    return collect(FixedEngine(responses), rows, PromptSampler(4, 0),
                   lambda texts, rws: full_credit(scores[: len(texts)]), rollout=cfg.rollout,
                   reward=cfg.reward, dist=Dist.single(), pad_token_id=0)


def test_solved_means_full_credit_and_shaping_does_not_change_it():
    got = _collect([1.0, 0.5, 0.0, 1.0], [[7, 2], [7, 7, 7, 7]])
    assert got.solved.tolist() == [True, False, False, True]
    assert got.rewards.tolist() == [1.0, 0.5, 0.0, 1.0]


def test_overlong_penalty_lowers_the_reward_of_long_responses():
    # Lengths 2 and 4 with max 4 and a buffer of 2: the 4-token responses are penalised.
    got = _collect([1.0, 1.0, 1.0, 1.0], [[7, 2], [7, 7, 7, 7]], overlong_buffer=2,
                   overlong_factor=1.0)
    assert got.rewards[0] == 1.0 and got.rewards[1] < 1.0 and got.rewards[3] < 1.0
    assert got.solved.all()  # accuracy counts verified answers, before shaping


def test_sampling_params_reach_the_engine():
    seen = []

    class Spy(FixedEngine):
        def generate(self, prompts, n, sampling):
            seen.append((n, sampling))
            return super().generate(prompts, n, sampling)

    cfg = load_config("testbed/grpo", ["rollout.n_prompts=2", "rollout.group_size=3",
                                       "update.mini_batch_size=6", "update.micro_batch_size=6",
                                       "rollout.max_new_tokens=5", "rollout.temperature=0.7",
                                       "rollout.top_p=0.9"])
    collect(Spy([[7, 2]]), [{"prompt": "p"}] * 4, PromptSampler(4, 0),
            lambda texts, rows: full_credit([0.0] * len(texts)), rollout=cfg.rollout, reward=cfg.reward,
            dist=Dist.single(), pad_token_id=0)
    assert seen == [(3, SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9))]


def test_generation_is_chunked_within_the_token_budget(micro_model_dir):
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.rollout import HFEngine, plan_chunks

    assert plan_chunks([3, 3, 5, 2], 4, 16) == [(0, 2), (2, 3), (3, 4)]
    assert plan_chunks([30], 4, 16) == [(0, 1)]  # a row larger than the budget goes alone
    cfg = load_config(None, [f"model.path={micro_model_dir}", "model.device=cpu"])
    model, tok = load_model_and_tokenizer(cfg.model)
    prompts, sampling = ["12+34=", "5*6=", "7+8="], SamplingParams(max_new_tokens=6)
    sizes = []
    real = model.generate

    def spy(**kw):
        sizes.append(kw["input_ids"].shape[0] * (kw["input_ids"].shape[1] + 6))
        return real(**kw)

    model.generate = spy
    torch.manual_seed(0)
    whole = HFEngine(model, tok).generate(prompts, 4, sampling)
    assert len(sizes) == 1
    budget = 2 * (max(sizes) // 12 + 1)  # about two rows per call
    sizes.clear()
    torch.manual_seed(0)
    chunked = HFEngine(model, tok, max_batch_tokens=budget).generate(prompts, 4, sampling)
    assert len(sizes) > 3 and max(sizes) <= budget
    assert len(chunked) == len(whole) == 12 and chunked.group_ids.tolist() == whole.group_ids.tolist()
    # Greedy responses do not depend on the chunking.
    greedy = SamplingParams(max_new_tokens=6, greedy=True)
    a = HFEngine(model, tok).generate(prompts, 2, greedy)
    b = HFEngine(model, tok, max_batch_tokens=budget).generate(prompts, 2, greedy)
    assert a.texts == b.texts and torch.equal(a.response_mask, b.response_mask)
