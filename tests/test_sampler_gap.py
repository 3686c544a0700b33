"""The sampler/trainer log-prob gap and truncated importance sampling, without vLLM.

The maths against hand-computed values, and the wiring through the loop with an engine that
reports known sampler log-probs (the trainer's own, shifted by a constant).
"""

import math

import pytest
import torch

from entropyrl.config import load_config
from entropyrl.distributed import Dist
from entropyrl.errors import UserError
from entropyrl.losses import LossConfig, PPOClip, compute_objective, truncated_is_weights
from entropyrl.policy import response_token_stats
from entropyrl.rewards.result import full_credit
from entropyrl.rollout import HFEngine
from entropyrl.train import train
from entropyrl.train.batch_metrics import logprob_gap_metrics, tis_metrics
from entropyrl.train.metrics import read_metrics


def test_truncated_is_weights_by_hand():
    lp = torch.log(torch.tensor([[0.5, 0.2, 0.3]], requires_grad=True))
    sampler = torch.log(torch.tensor([[0.25, 0.4, 0.3]]))
    w = truncated_is_weights(lp, sampler, cap=1.5)
    assert torch.allclose(w, torch.tensor([[1.5, 0.5, 1.0]]), rtol=1e-6)
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(lp, sampler, cap=0.0)
    with pytest.raises(ValueError, match="sampler_logprobs"):
        truncated_is_weights(lp, sampler[:, :2], cap=2.0)


@pytest.mark.parametrize("name", ["ppo", "pg"])
def test_is_weights_equal_scaling_the_advantages(name):
    """``w · loss(A)`` and ``loss(w · A)`` agree in value and gradient for w >= 0 (PPO-clip
    included: ratios far outside the clip range on both sides)."""
    torch.manual_seed(0)
    old = torch.randn(3, 5) - 2
    lp = (old + torch.randn(3, 5) * 0.5).requires_grad_(True)
    adv = torch.randn(3, 5)
    mask = torch.rand(3, 5) > 0.2
    w = torch.rand(3, 5) * 2
    cfg = LossConfig(name=name, clip=PPOClip(0.2, 0.28))
    a = compute_objective(cfg, lp, old, adv, mask, is_weights=w)
    (ga,) = torch.autograd.grad(a.loss, lp)
    b = compute_objective(cfg, lp, old, adv * w, mask)
    (gb,) = torch.autograd.grad(b.loss, lp)
    assert torch.allclose(a.loss, b.loss, rtol=1e-6) and torch.allclose(ga, gb, rtol=1e-5)
    unweighted = compute_objective(cfg, lp, old, adv, mask)
    assert not torch.allclose(a.loss, unweighted.loss)
    with pytest.raises(ValueError, match="is_weights"):
        compute_objective(cfg, lp, old, adv, mask, is_weights=w[:, :2])


def test_gap_and_tis_metrics_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -3.0, 0.0]])
    sampler = torch.tensor([[-1.5, -2.0, 0.0], [-0.5, -1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    m = logprob_gap_metrics(lp, sampler, mask, Dist.single())
    assert m["rollout/logprob_gap_mean"] == pytest.approx((0.5 + 0 + 0 + 2.0) / 4)
    assert m["rollout/logprob_gap_max"] == pytest.approx(2.0)  # the masked 9 is not counted
    w = truncated_is_weights(lp, sampler, cap=1.5)
    t = tis_metrics(lp, sampler, w, 1.5, mask, Dist.single())
    expected = (1.5 + 1.0 + 1.0 + math.exp(-2.0)) / 4  # e^0.5 > 1.5 is cut to 1.5
    assert t["rollout/tis_weight_mean"] == pytest.approx(expected)
    assert t["rollout/tis_capped_frac"] == pytest.approx(0.25)


def test_config_checks():
    with pytest.raises(UserError, match=r"loss\.tis_cap.*rollout\.engine=vllm"):
        load_config("testbed/grpo", ["loss.tis_cap=2.0"])
    cfg = load_config("testbed/grpo", ["loss.tis_cap=2.0", "rollout.engine=vllm"])
    assert cfg.loss.tis_cap == 2.0 and cfg.rollout.engine == "vllm"
    with pytest.raises(UserError, match="gpu_memory_utilization"):
        load_config("testbed/grpo", ["rollout.gpu_memory_utilization=1.5"])
    with pytest.raises(UserError, match="max_model_len"):
        load_config("testbed/grpo", ["rollout.max_model_len=-1"])


# ----------------------------------------------------------------------------- wiring

SHIFT = math.log(4.0)  # sampler log-probs = trainer's − log 4: every ratio is 4


class ShiftedSamplerEngine(HFEngine):
    """The HF engine, reporting the trainer's log-probs minus ``SHIFT`` as the sampler's."""

    def __init__(self, model, tokenizer, temperature):
        super().__init__(model, tokenizer)
        self.temperature = temperature

    def generate(self, prompts, n, sampling):
        roll = super().generate(prompts, n, sampling)
        with torch.no_grad():
            lp = response_token_stats(self.model, roll.input_ids, roll.attention_mask,
                                      roll.prompt_len, temperature=self.temperature,
                                      with_entropy=False).logprobs
        roll.sampler_logprobs = torch.where(roll.response_mask, lp - SHIFT, 0.0)
        return roll


@pytest.fixture
def shifted_engine(monkeypatch):
    import entropyrl.tasks as tasks

    def make(cfg, learner, tokenizer, source=None):
        policy = learner.accelerator.unwrap_model(learner.model)
        return ShiftedSamplerEngine(policy, tokenizer, cfg.rollout.temperature)

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):  # mixed groups for a random micro model
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit([float("1" in t) for t in texts]))

    monkeypatch.setattr("entropyrl.train.setup.make_engine", make)
    monkeypatch.setattr("entropyrl.train.setup.load_tasks", load)


def one_step(model_dir, out, *extra):
    cfg = load_config("testbed/grpo", [
        f"model.path={model_dir}", "model.device=cpu", "steps=1", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "update.mini_batch_size=16",
        "update.micro_batch_size=16", "eval.every=0", "data.testbed.train_size=32", "data.testbed.val_size=8",
        "progress=false", "rollout.engine=vllm", *extra])
    return read_metrics(train(cfg, out) / "metrics.jsonl")[0]


def test_the_gap_and_the_weights_reach_the_metrics_and_the_loss(micro_model_dir, tmp_path,
                                                                  shifted_engine):
    plain = one_step(micro_model_dir, tmp_path / "plain")
    assert plain["rollout/logprob_gap_mean"] == pytest.approx(SHIFT, rel=1e-5)
    assert plain["rollout/logprob_gap_max"] == pytest.approx(SHIFT, rel=1e-5)
    assert "rollout/tis_weight_mean" not in plain
    tis = one_step(micro_model_dir, tmp_path / "tis", "loss.tis_cap=2.0")
    assert tis["rollout/tis_weight_mean"] == pytest.approx(2.0)  # min(4, 2)
    assert tis["rollout/tis_capped_frac"] == 1.0
    # Same samples (same seeds); the first update's policy loss is the weighted one: 2×.
    assert tis["train/entropy"] == plain["train/entropy"]
    assert tis["loss/policy_loss"] == pytest.approx(2 * plain["loss/policy_loss"], rel=1e-5)
