"""The TRL plug-in: internals check, config mapping, loss equivalence, short runs."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset

from entropyrl import testbed
from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.integrations.trl import (
    AGGREGATION,
    CONTROL_KEYS,
    DIAGNOSTIC_KEYS,
    SELECTION_KEYS,
    EntropyGRPOConfig,
    EntropyGRPOTrainer,
    LawForecastCallback,
    check_trl,
    loss_config,
)
from entropyrl.integrations.trl.compat import incompatibility_message, trl_version
from entropyrl.losses import Denominators, compute_objective
from entropyrl.policy import response_token_stats
from entropyrl.train.update import derive_seed

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """TRL's trainers configure accelerate's per-process state (bf16 by default on the CPU);
    reset it after each test so later tests' accelerators start from their own settings."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def test_trl_internals_the_plugin_relies_on_are_present():
    problems = check_trl()
    assert not problems, incompatibility_message(problems, trl_version())


def test_a_changed_internal_is_reported_with_the_trl_version():
    from trl import GRPOConfig, GRPOTrainer

    class Changed(GRPOTrainer):
        def _compute_loss(self, model, batch, extra):  # renamed and extra parameter
            raise NotImplementedError

    problems = check_trl(Changed, GRPOConfig)
    assert any("_compute_loss" in p for p in problems)
    message = incompatibility_message(problems, trl_version())
    assert trl_version() in message and ">=1.16,<1.17" in message


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
                max_completion_length=32, report_to=[], use_cpu=True, seed=0, logging_steps=1,
                save_strategy="no", learning_rate=1e-5)
    base.update(kw)
    return EntropyGRPOConfig(**base)


def test_config_maps_to_our_loss(tmp_path):
    args = _args(tmp_path, entropy_loss="clip_cov", clip_cov_ratio=1e-3, loss_type="dapo",
                 epsilon=0.2, epsilon_high=0.28, beta=0.01,
                 use_bias_correction_kl=False)
    cfg = loss_config(args)
    assert cfg.name == "clip_cov" and cfg.clip_cov.ratio == 1e-3
    assert (cfg.clip.eps_low, cfg.clip.eps_high) == (0.2, 0.28)
    assert (cfg.clip_cov.clip.eps_low, cfg.clip_cov.clip.eps_high) == (1.0, 1.0)
    assert cfg.aggregation == "token-mean" and cfg.ref_kl_coef == 0.01
    assert AGGREGATION == {"grpo": "seq-mean-token-mean", "bnpo": "token-mean",
                           "dapo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm"}
    assert loss_config(_args(tmp_path)).name == "ppo"


@pytest.mark.parametrize(("kw", "field"), [
    ({"loss_type": "cispo"}, "loss_type"),
    ({"entropy_loss": "clip-cov"}, "entropy_loss"),
    ({"use_adaptive_entropy": True}, "use_adaptive_entropy"),
    ({"importance_sampling_level": "sequence"}, "importance_sampling_level"),
    ({"control_kind": "predictive"}, "control_kind"),
    ({"control_assist": "kl_cov_coef"}, "control_assist"),
    ({"control_actuator": "entropy_coef", "control_assist": "entropy_coef"}, "control_assist"),
    ({"control_assist": "entropy_coef", "control_assist_limit": 0.0}, "control_assist_gain"),
    ({"clip_cov_ratio": 2.0}, "clip_cov.ratio"),
    ({"selection_scope": "rank"}, "selection_scope"),
])
def test_unsupported_or_bad_options_name_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        _args(tmp_path, **kw)


def _reward(completions, answer, **kw):
    return [testbed.score(c, a) for c, a in zip(completions, answer, strict=True)]


def _dataset(n):
    rows = testbed.make_tasks("train", n, 0)
    return Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])


def _fixed_batch(tok, model, n_rows=8, t=12, seed=0):
    """Equal-length prompts (no padding), random completions of varying length, π_old ≠ π."""
    g = torch.Generator().manual_seed(seed)
    prompts = ["1234+5678=", "4321+8765=", "2222+3333=", "9876-1234=",
               "5555+4444=", "1111+2222=", "3141+5926=", "2718-1828="][:n_rows]
    enc = tok(prompts, return_tensors="pt", padding=True)
    assert bool(enc["attention_mask"].all())
    completion_ids = torch.randint(5, len(tok), (n_rows, t), generator=g)
    lengths = torch.tensor([t, t - 3, 5, t, 7, t - 1, 2, t])[:n_rows]
    completion_mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    advantages = torch.randn(n_rows, generator=g)
    input_ids = torch.cat([enc["input_ids"], completion_ids], 1)
    with torch.no_grad():
        lp = response_token_stats(model, input_ids, torch.ones_like(input_ids),
                                  enc["input_ids"].shape[1], temperature=1.0,
                                  with_entropy=False).logprobs
    old = lp + 0.3 * torch.randn(lp.shape, generator=g)  # ratios away from 1, some clipped
    return {"prompt_ids": enc["input_ids"], "prompt_mask": enc["attention_mask"],
            "completion_ids": completion_ids, "completion_mask": completion_mask,
            "advantages": advantages, "num_items_in_batch": completion_mask.sum(),
            "old_per_token_logps": old}


@pytest.mark.parametrize("entropy_loss", ["none", "clip_cov", "kl_cov"])
@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_plugin_loss_and_gradients_equal_our_loss_path(tmp_path, micro_model_dir, entropy_loss,
                                                      loss_type):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    args = _args(tmp_path, entropy_loss=entropy_loss, loss_type=loss_type, epsilon=0.2,
                 clip_cov_ratio=0.05, clip_cov_low=-1e3, clip_cov_high=1e3, clip_cov_epsilon=0.3,
                 kl_cov_ratio=0.05, kl_cov_beta=0.7, entropy_diagnostics=False,
                 bf16=False)  # TRL defaults to bf16 autocast; compare in fp32
    trainer = EntropyGRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                                 args=args, train_dataset=_dataset(8))
    model = trainer.model
    model.train()
    batch = _fixed_batch(tok, model)
    trainer._prepare_generation_batch(batch)
    model.zero_grad()
    trainer._compute_loss(model, batch).backward()
    plugin_grads = [p.grad.clone() for p in model.parameters()]
    plugin_per_token = trainer.last_objective.policy.per_token.detach()

    # Our own loss path, as entropyrl.train.update calls it.
    cfg = loss_config(args)
    mask = batch["completion_mask"].bool()
    adv = batch["advantages"][:, None].expand(mask.shape).contiguous()
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    plen = batch["prompt_ids"].shape[1]
    selected = None
    if cfg.selection is not None:
        # At generation time the parameters are those that scored π_old, so the selection
        # scores π_old, as update.py does for the first mini-batch of a step.
        old = batch["old_per_token_logps"]
        part = SelectionPart(old, old, adv, mask)
        if cfg.selection == "clip_cov":
            gen = torch.Generator().manual_seed(derive_seed(0, 0, 0))
            selected = select_clip_cov([part], cfg.clip_cov, generator=gen).masks[0]
        else:
            selected = select_kl_cov([part], cfg.kl_cov).masks[0]
        assert int(selected.sum()) == max(1, math.floor(0.05 * int(mask.sum())))
        assert torch.equal(selected, batch["entropyrl_selected"])
    model.zero_grad()
    stats = response_token_stats(model, input_ids, attn, plen, temperature=1.0, with_entropy=False)
    obj = compute_objective(cfg, stats.logprobs.float(), batch["old_per_token_logps"], adv, mask,
                            selected=selected, denominators=Denominators.of(mask),
                            norm_constant=32.0)
    obj.loss.backward()
    # Tolerance: fp32; the two forwards (TRL's fused head, ours from hidden states) differ
    # only in summation order (log-probs measured ≤ 5e-7 apart).
    torch.testing.assert_close(plugin_per_token, obj.policy.per_token.detach(),
                               rtol=1e-5, atol=1e-6)
    for ours, theirs in zip((p.grad for p in model.parameters()), plugin_grads, strict=True):
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def _train(tmp_path, steps, **kw):
    model, tok = testbed.load_base()
    args = _args(tmp_path, max_steps=steps, gradient_accumulation_steps=2, temperature=1.0, **kw)
    callback = LawForecastCallback(min_points=3, write_jsonl=False)
    trainer = EntropyGRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                                 args=args, train_dataset=_dataset(64), callbacks=[callback])
    trainer.train()
    return trainer, [h for h in trainer.state.log_history if "loss" in h], callback


def test_clip_cov_run_logs_diagnostics_and_detaches_r_n_tokens(tmp_path):
    ratio = 0.01
    _, logs, callback = _train(tmp_path, 5, entropy_loss="clip_cov", clip_cov_ratio=ratio,
                                     clip_cov_low=0.0, clip_cov_high=100.0)
    assert len(logs) == 5
    for h in logs:
        assert set(DIAGNOSTIC_KEYS) | set(SELECTION_KEYS) <= set(h)
        assert all(math.isfinite(h[k]) for k in DIAGNOSTIC_KEYS)
        n = h["dyn/n_tokens"]
        assert h["dyn/n_selected"] == max(1, math.floor(ratio * n))  # enough candidates here
        # loss/selected_frac: TRL's logger averages the chunks' fractions (not token-weighted).
        assert h["loss/selected_frac"] == pytest.approx(h["dyn/n_selected"] / n, rel=0.1)
        assert h["dyn/cov_all"] == pytest.approx(h["dyn/cov_npg"], rel=1e-9, abs=1e-12)
    assert callback.forecasts and math.isfinite(callback.forecasts[-1]["ceiling"])


def test_kl_cov_penalty_is_zero_at_the_first_iteration_only(tmp_path):
    # steps_per_generation = GA = 2: each optimizer step is one pass over the generation batch.
    _, logs, _ = _train(tmp_path, 4, entropy_loss="kl_cov", kl_cov_ratio=0.02,
                              num_iterations=2, entropy_diagnostics=False)
    penalties = [h["loss/kl_penalty"] for h in logs]
    assert penalties[0] == 0.0 and penalties[2] == 0.0
    assert penalties[1] > 0.0 and penalties[3] > 0.0


def test_controller_moves_the_clip_cov_ratio(tmp_path):
    _, logs, _ = _train(tmp_path, 3, entropy_loss="clip_cov", clip_cov_ratio=5e-3,
                              clip_cov_low=0.0, clip_cov_high=100.0, control_kind="pi",
                              control_target_entropy=5.0, control_approach_steps=0,
                              entropy_diagnostics=False)
    values = [h["control/actuator_value"] for h in logs]
    assert set(CONTROL_KEYS) <= set(logs[0])
    # Entropy far below the target: the ratio must rise, and with it the detached count.
    assert values[0] == pytest.approx(5e-3) and values[1] > values[0] and values[2] > values[1]
    assert logs[2]["dyn/n_selected"] > logs[0]["dyn/n_selected"]


def test_the_assist_adds_an_entropy_bonus_once_the_ratio_is_pinned(tmp_path):
    _, logs, _ = _train(tmp_path, 3, entropy_loss="clip_cov", clip_cov_ratio=5e-3,
                        clip_cov_low=0.0, clip_cov_high=100.0, control_kind="pi",
                        control_target_entropy=5.0, control_approach_steps=0,
                        control_max_value=5e-3, control_assist="entropy_coef",
                        control_assist_gain=0.02, control_assist_limit=0.05,
                        entropy_diagnostics=False)
    # The ratio starts at its bound and the entropy is far below the target: the bonus grows
    # by g·e per generation batch, and the loss carries it.
    assert [h["control/actuator_value"] for h in logs] == [5e-3] * 3
    alphas = [h["control/assist_value"] for h in logs]
    assert alphas[0] == 0.0 and "loss/entropy_bonus" not in logs[0]
    assert alphas[1] == pytest.approx(0.02 * logs[0]["control/error"], rel=1e-9)
    assert alphas[2] > alphas[1] > 0
    assert logs[2]["loss/entropy_bonus"] < 0


def test_the_docs_example_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "trl.md").read_text()
    example = doc.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", example, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # the example writes its output_dir here
    scope: dict = {"__name__": "docs_example"}
    exec(compile(code, "docs/trl.md", "exec"), scope)
    trainer, law = scope["trainer"], scope["law"]
    assert trainer.state.global_step == 5
    assert any("dyn/n_selected" in h for h in trainer.state.log_history)
    assert law.forecasts and "ceiling" in law.forecasts[-1]


def _two_rank_worker(rank, world, port, out_dir, result_dir):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    model, tok = testbed.load_base()
    args = _args(out_dir, max_steps=2, gradient_accumulation_steps=2, temperature=1.0,
                 entropy_loss="clip_cov", clip_cov_ratio=0.01, clip_cov_low=0.0,
                 clip_cov_high=100.0)
    trainer = EntropyGRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                                 args=args, train_dataset=_dataset(64))
    seen = []
    real = trainer._prepare_generation_batch

    def spy(batch):
        real(batch)
        seen.append((int(batch["entropyrl_selected"].sum()), int(_valid_tokens(batch))))

    trainer._prepare_generation_batch = spy
    trainer.train()
    logs = [h for h in trainer.state.log_history if "dyn/n_selected" in h]
    torch.save({"seen": seen, "world": trainer.accelerator.num_processes, "logs": logs},
               result_dir / f"rank{rank}.pt")
    os._exit(0)


def _valid_tokens(batch):
    from entropyrl.integrations.trl.trainer import _valid

    return _valid(batch).sum()


@pytest.mark.distributed
def test_two_ranks_select_over_the_global_generation_batch(tmp_path):
    import torch.multiprocessing as mp
    from spawn_helpers import free_port

    mp.spawn(_two_rank_worker, args=(2, free_port(), tmp_path, tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert len(r0["seen"]) == len(r1["seen"]) == len(r0["logs"]) == 2  # a batch per step
    for (sel0, tok0), (sel1, tok1), log in zip(r0["seen"], r1["seen"], r0["logs"], strict=True):
        # One selection over both ranks' tokens: r·N of the global count, split by rank.
        assert sel0 + sel1 == max(1, math.floor(0.01 * (tok0 + tok1)))
        assert log["dyn/n_tokens"] == tok0 + tok1
        assert log["dyn/n_selected"] == sel0 + sel1
