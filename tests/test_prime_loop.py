"""PRIME in the loop: the implicit PRM trains beside the policy, resumes exactly, and its
update is independent of the micro-batch split and of sharding over processes."""

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from spawn_helpers import fixed_batch, free_port
from test_trainer import strip_time, tiny, varied_reward, weights  # noqa: F401 (fixture)

from entropyrl.config import load_config
from entropyrl.distributed import Dist, full_model_state
from entropyrl.prime import implicit_prm_loss
from entropyrl.train import train
from entropyrl.train.metrics import read_metrics
from entropyrl.train.prime import make_prm, update_prm

PRIME = ("algorithm.advantage=prime", "prime.lr=1e-2", "prime.beta=0.5")


def prm_weights(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step_{step}" / "prm" / "model.safetensors"))


def test_a_frozen_prm_gives_the_rloo_run(micro_model_dir, tmp_path):
    # A PRM that never learns equals the reference: every implicit token reward is 0 and
    # PRIME's advantage is RLOO's. Any slip in how the loop builds PRIME's advantages shows.
    common = ("steps=2", "eval.every=0")
    frozen = train(tiny(micro_model_dir, *common, *PRIME, "prime.update=none"), tmp_path / "f")
    rloo = train(tiny(micro_model_dir, *common, "algorithm.advantage=rloo"), tmp_path / "r")
    rows_f, rows_r = read_metrics(frozen / "metrics.jsonl"), read_metrics(rloo / "metrics.jsonl")
    for rf, rr in zip(rows_f, rows_r, strict=True):
        assert rf["prime/token_reward_abs_mean"] == 0.0
        for key, value in rr.items():
            if key.startswith(("train/", "dyn/", "loss/")):
                assert rf[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    a, b = weights(frozen, 2), weights(rloo, 2)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    init = load_file(str(micro_model_dir / "model.safetensors"))
    prm = prm_weights(frozen, 2)
    assert all(torch.equal(prm[k], init[k]) for k in init)


def test_a_learning_prm_moves_and_changes_the_advantages(micro_model_dir, tmp_path):
    out = train(tiny(micro_model_dir, "steps=2", "eval.every=0", *PRIME), tmp_path / "p")
    rloo = train(tiny(micro_model_dir, "steps=2", "eval.every=0", "algorithm.advantage=rloo"),
                 tmp_path / "r")
    rows = read_metrics(out / "metrics.jsonl")
    for r in rows:
        for key in ("prime/loss", "prime/label_acc", "prime/grad_norm", "prime/q_gap"):
            assert math.isfinite(r[key]), key
        assert r["prime/token_reward_abs_mean"] > 0
    # The PRM's first loss is at q = 0 (PRM = reference): log 2 whatever the labels.
    assert rows[0]["prime/loss"] == pytest.approx(math.log(2), rel=1e-6)
    # ...and q = 0 counts as "unsolved": the labels the PRM saw are the batch's solved flags.
    assert 0 < rows[0]["train/acc"] < 1
    assert rows[0]["prime/label_acc"] == pytest.approx(1 - rows[0]["train/acc"], abs=1e-9)
    init = load_file(str(micro_model_dir / "model.safetensors"))
    prm = prm_weights(out, 2)
    assert any(not torch.equal(prm[k], init[k]) for k in init)
    assert rows[0]["dyn/cov_npg"] != pytest.approx(read_metrics(rloo / "metrics.jsonl")[0][
        "dyn/cov_npg"], rel=1e-3)


def test_prime_resume_reproduces_the_uninterrupted_run(micro_model_dir, tmp_path):
    cfg = tiny(micro_model_dir, "steps=4", "checkpoint_every=2", *PRIME)
    full = train(cfg, tmp_path / "full")
    part = train(cfg, tmp_path / "part", stop_after=2)
    train(cfg, tmp_path / "part")
    assert strip_time(read_metrics(part / "metrics.jsonl")) == strip_time(
        read_metrics(full / "metrics.jsonl"))
    for load in (weights, prm_weights):
        a, b = load(full, 4), load(part, 4)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_run_without_a_prm_as_prime_is_a_user_error(micro_model_dir, tmp_path):
    from entropyrl.errors import UserError

    train(tiny(micro_model_dir, "steps=1", "eval.every=0"), tmp_path / "g")
    with pytest.raises(UserError, match="no PRIME reward model"):
        train(tiny(micro_model_dir, "steps=2", "eval.every=0", *PRIME), tmp_path / "g",
              allow_config_change=True)


def _prm_config(model_dir, micro):
    return load_config("testbed/grpo", [
        f"model.path={model_dir}", "model.device=cpu", "rollout.n_prompts=4",
        "rollout.group_size=4", "update.mini_batch_size=16", f"update.micro_batch_size={micro}",
        *PRIME, "optim.eps=1e-4", "optim.grad_clip=0"])


def _labels(batch):
    return (torch.arange(len(batch["rollout"])) % 3 == 0).float()


def _ref_logprobs(batch):
    # Any fixed reference works for the update's algebra; a shifted copy of the PRM's own
    # log-probs makes q non-zero at the start.
    return batch["old"] - 0.1 * batch["rollout"].response_mask


def _update(cfg, batch, rows, accelerator):
    prm = make_prm(cfg, accelerator, None)
    dist = Dist.from_accelerator(accelerator)
    roll = batch["rollout"].select(rows)
    m = update_prm(prm, roll, _ref_logprobs(batch)[rows], _labels(batch)[rows], cfg=cfg,
                   dist=dist, step=1)
    full = full_model_state(accelerator.unwrap_model(prm.model))
    return {k: v.detach().clone() for k, v in full.items()}, m


def _single_accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=True)


def test_prm_update_is_the_cross_entropy_step_whatever_the_micro_split(micro_model_dir):
    batch = fixed_batch(_prm_config(micro_model_dir, 16))
    rows = torch.arange(16)
    p16, m16 = _update(_prm_config(micro_model_dir, 16), batch, rows, _single_accelerator())
    p4, m4 = _update(_prm_config(micro_model_dir, 4), batch, rows, _single_accelerator())
    for k in p16:
        assert torch.allclose(p16[k], p4[k], rtol=1e-5, atol=1e-7), k
    expected = implicit_prm_loss(batch["old"], _ref_logprobs(batch),
                                 batch["rollout"].response_mask, _labels(batch), beta=0.5)
    assert m16["prime/loss"] == pytest.approx(float(expected), rel=1e-5)
    assert m4["prime/loss"] == pytest.approx(m16["prime/loss"], rel=1e-5)
    init = load_file(str(micro_model_dir / "model.safetensors"))
    assert any(not torch.equal(p16[k], init[k]) for k in init)


def _fsdp_worker(rank, world, port, model_dir, batch_path, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import entropyrl.tasks as tasks
    import entropyrl.train.setup as setup_module
    from entropyrl.rewards.result import full_credit
    from entropyrl.train.setup import make_accelerator

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):  # mixed groups, as the fixture gives in-process
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit(
            [float("1" in t) for t in texts]))

    setup_module.load_tasks = load
    cfg = tiny(model_dir, "steps=2", "checkpoint_every=1", "eval.every=0",
               "update.micro_batch_size=4", *PRIME)
    acc = make_accelerator(cfg, cpu_fsdp=True)
    # The sharded PRM's update on each rank's half of a fixed batch.
    batch = torch.load(batch_path, weights_only=False)
    per = 16 // world
    params, metrics = _update(_prm_config(model_dir, 4), batch,
                              torch.arange(rank * per, (rank + 1) * per), acc)
    if rank == 0:
        torch.save({"params": params, "metrics": metrics}, out_dir / "update.pt")
    train(cfg, out_dir / "full", accelerator=acc)
    train(cfg, out_dir / "part", accelerator=acc, stop_after=1)
    train(cfg, out_dir / "part", accelerator=acc)
    acc.wait_for_everyone()
    os._exit(0)


@pytest.mark.distributed
def test_prime_under_fsdp_updates_as_one_process_and_resumes_exactly(micro_model_dir, tmp_path):
    batch = fixed_batch(_prm_config(micro_model_dir, 4))
    torch.save(batch, tmp_path / "batch.pt")
    mp.spawn(_fsdp_worker, args=(2, free_port(), micro_model_dir, tmp_path / "batch.pt",
                                 tmp_path), nprocs=2, join=True)
    # Two sharded processes take the PRM step one process takes on the whole batch.
    two = torch.load(tmp_path / "update.pt", weights_only=False)
    one_params, one_metrics = _update(_prm_config(micro_model_dir, 4), batch, torch.arange(16),
                                      _single_accelerator())
    for k in one_params:
        assert torch.allclose(one_params[k], two["params"][k], rtol=1e-5, atol=2e-6), k
    for key in ("prime/loss", "prime/label_acc", "prime/grad_norm"):
        assert two["metrics"][key] == pytest.approx(one_metrics[key], rel=1e-5), key
    # Whole runs: the gathered PRM is saved, and a resumed run repeats the uninterrupted one.
    full, part = tmp_path / "full", tmp_path / "part"
    rows = read_metrics(full / "metrics.jsonl")
    assert strip_time(read_metrics(part / "metrics.jsonl")) == strip_time(rows)
    assert all(r["prime/token_reward_abs_mean"] > 0 for r in rows[1:])
    base = load_file(str(micro_model_dir / "model.safetensors"))
    a, b = prm_weights(full, 2), prm_weights(part, 2)
    assert set(a) == set(base)  # the gathered PRM, saved like the policy
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], base[k]) for k in base)
