"""Fused scoring (the first update's forward provides π_old) and the sampled same-batch ΔH.

A fused step must report what the unfused step reports and move the parameters the same way;
only the number of forwards changes.
"""

import pytest
import torch

from entropyrl.config import load_config
from entropyrl.distributed import Dist
from entropyrl.train.batch_metrics import entropy_metrics
from entropyrl.train.setup import setup
from entropyrl.train.step import entropy_after_rows, rl_step, score

pytestmark = pytest.mark.usefixtures("varied_reward")

PRESETS = {"grpo": "testbed/grpo", "clip_cov": "testbed/clip_cov", "kl_cov": "testbed/kl_cov"}


def config(model_dir, preset, *extra):
    return load_config(PRESETS[preset], [
        f"model.path={model_dir}", "model.device=cpu", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=12", "update.mini_batch_size=16",
        "update.micro_batch_size=16", "data.testbed.train_size=64", "data.testbed.val_size=8",
        "optim.lr=1e-3", "optim.eps=1e-4", "progress=false", "loss.kl_cov.ratio=0.2",
        "loss.clip_cov.ratio=0.2", "loss.clip_cov.cov_low=-10", *extra,
    ])


def steps(cfg, out, n=2):
    run = setup(cfg, out)
    try:
        got = [rl_step(run, s) for s in range(1, n + 1)]
        params = {k: v.detach().clone() for k, v in run.learner.model.state_dict().items()}
        return got, params, run.last_batch
    finally:
        run.release()


def count_scoring_forwards(monkeypatch):
    import entropyrl.train.step as step_mod

    calls = []
    real = step_mod.response_token_stats

    def counted(model, input_ids, *args, **kwargs):
        calls.append(len(input_ids))
        return real(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(step_mod, "response_token_stats", counted)
    return calls


@pytest.mark.parametrize("preset", ["grpo", "clip_cov", "kl_cov"])
@pytest.mark.parametrize("shape", ["one_update", "four_updates"])
def test_fused_step_reports_and_updates_what_the_unfused_step_does(micro_model_dir, tmp_path,
                                                                   preset, shape, monkeypatch):
    extra = [] if shape == "one_update" else ["update.mini_batch_size=4",
                                              "update.micro_batch_size=4"]
    plain, plain_params, plain_batch = steps(
        config(micro_model_dir, preset, "update.fuse_scoring=false", *extra), tmp_path / "a")
    scoring = count_scoring_forwards(monkeypatch)
    fused, fused_params, fused_batch = steps(config(micro_model_dir, preset, *extra),
                                             tmp_path / "b")
    # One update per batch: no separate π_old pass; four: only the first mini-batch's rows
    # are scored by the update. The ΔH sample (4 of 16 rows) is scored in both.
    per_step = [] if shape == "one_update" else [4, 4, 4]
    assert scoring == [*per_step, 4] * 2
    for p, f in zip(plain, fused, strict=True):
        assert set(p) == set(f)
        for key, value in p.items():
            if not key.startswith("time/"):
                assert f[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for key, value in plain_params.items():
        assert torch.allclose(fused_params[key], value, rtol=1e-5, atol=1e-6), key
    assert torch.allclose(fused_batch.logprobs, plain_batch.logprobs, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fused_batch.entropy, plain_batch.entropy, rtol=1e-5, atol=1e-6)
    if preset != "grpo":
        assert any(f["loss/selected_frac"] > 0 for f in fused)
    if shape == "one_update":
        # π_old is the detached current log π: the ratio of the only update is exactly 1.
        for f in fused:
            assert f["loss/ratio_min"] == f["loss/ratio_max"] == 1.0
            assert f["loss/approx_kl_k1"] == 0.0


def test_a_selection_over_several_micro_batches_scores_pi_old_first(micro_model_dir, tmp_path,
                                                                    monkeypatch):
    """Clip-Cov reads the whole mini-batch before its first backward: no fusion possible."""
    scoring = count_scoring_forwards(monkeypatch)
    steps(config(micro_model_dir, "clip_cov", "update.micro_batch_size=8"), tmp_path / "a", 1)
    assert scoring == [8, 8, 4]  # π_old in two micro-batches, then the ΔH sample


def test_sampled_delta_entropy_is_the_paired_difference_on_the_drawn_rows(micro_model_dir,
                                                                          tmp_path, monkeypatch):
    import entropyrl.train.step as step_mod

    seen = []
    real = step_mod.prepare_batch
    monkeypatch.setattr(step_mod, "prepare_batch", lambda run, roll, *a: seen.append(roll)
                        or real(run, roll, *a))
    cfg = config(micro_model_dir, "grpo", "dynamics.entropy_after_fraction=0.5")
    run = setup(cfg, tmp_path / "run")
    try:
        m = rl_step(run, 1)
        rows = entropy_after_rows(16, 4, 0.5, Dist.single(), cfg.seed, 1)
        assert len(rows) == 8
        batch = run.last_batch
        _, after = score(run.learner.model, run, seen[0], rows=rows,
                         with_entropy=True)
        mask = batch.mask[rows]
        want = (entropy_metrics(after, mask, Dist.single())["train/entropy"]
                - entropy_metrics(batch.entropy[rows], mask, Dist.single())["train/entropy"])
        assert m["dyn/delta_entropy"] == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert abs(want) > 1e-5
        assert m["dyn/entropy_after"] == pytest.approx(m["train/entropy"] + want, abs=1e-12)
        # Another sample of the same batch gives another value (it is a sample).
        others = entropy_after_rows(16, 4, 0.5, Dist.single(), cfg.seed, 2)
        assert not torch.equal(others, rows)
    finally:
        run.release()


def test_entropy_after_rows_take_k_per_group_and_match_across_ranks():
    one = entropy_after_rows(32, 8, 0.25, Dist.single(), 0, 5)
    assert len(one) == 8
    assert (torch.bincount(one // 8, minlength=4) == 2).all()
    halves = [entropy_after_rows(16, 8, 0.25, Dist(2, r, "cpu", object()), 0, 5) + 16 * r
              for r in range(2)]
    assert torch.equal(torch.cat(halves), one)
    assert torch.equal(entropy_after_rows(32, 8, 1.0, Dist.single(), 0, 5), torch.arange(32))
    assert len(entropy_after_rows(32, 8, 0.01, Dist.single(), 0, 5)) == 4  # at least 1 a group
