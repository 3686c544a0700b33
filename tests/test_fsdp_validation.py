"""Validation on a sharded policy (the vLLM engine under FSDP holds no full copy to score on).

A sharded forward gathers parameters from every rank, so ranks with fewer validation rows must
still run as many forwards as the busiest rank, or the ranks' collectives cross and the run
hangs.
"""

import os
import time

import pytest
import torch
import torch.multiprocessing as mp
from spawn_helpers import free_port

from entropyrl.config import load_config
from entropyrl.evaluation import EvalSpec, evaluate_source, planned_forwards
from entropyrl.rewards.result import RewardResult

PROMPTS = [{"prompt": p} for p in ("12+34=", "5*6=", "99-9=", "7+8=", "3*3=")]


def _score(texts, rows):
    return [RewardResult(float(len(t) % 2), len(t) % 2 == 1) for t in texts]


GREEDY = EvalSpec(k=0, max_new_tokens=6)


def _evaluate(model_dir, model, dist=None, sharded=False, spec=GREEDY):
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.rollout import HFEngine

    cfg = load_config("testbed/grpo", [f"model.path={model_dir}", "model.device=cpu"])
    sampler, tok = load_model_and_tokenizer(cfg.model)
    torch.manual_seed(0)
    # One prompt per engine call: the ranks' slices (3 and 2 prompts) make 3 and 2 forwards.
    # Greedy responses, so that one process and two sample the same ones.
    return evaluate_source(HFEngine(sampler, tok), model if model is not None else sampler,
                           PROMPTS, _score, spec, batch_prompts=1, dist=dist, sharded=sharded)


def _worker(rank, world, port, model_dir, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from entropyrl.distributed import Dist
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.train.setup import make_accelerator

    cfg = load_config("testbed/grpo", [f"model.path={model_dir}", "model.device=cpu"])
    acc = make_accelerator(cfg, cpu_fsdp=True)
    model, _ = load_model_and_tokenizer(cfg.model)
    model = acc.prepare(model)
    got = _evaluate(model_dir, model, Dist.from_accelerator(acc), sharded=True)
    if rank == 0:
        torch.save({"result": got.to_dict(), "cls": type(model).__name__}, out_dir / "val.pt")
    acc.wait_for_everyone()
    os._exit(0)  # skip gloo's teardown (see test_distributed_update.py)


def test_the_plan_counts_the_forwards_evaluation_runs(micro_model_dir):
    from entropyrl.models import load_model_and_tokenizer

    cfg = load_config("testbed/grpo", [f"model.path={micro_model_dir}", "model.device=cpu"])
    model, _ = load_model_and_tokenizer(cfg.model)
    calls = []
    model.model.register_forward_hook(lambda *_: calls.append(1))  # the decoder runs once each
    for spec in (EvalSpec(k=0, max_new_tokens=4), EvalSpec(k=3, max_new_tokens=4),
                 EvalSpec(k=3, entropy_samples=1, max_new_tokens=4)):
        calls.clear()
        _evaluate(micro_model_dir, model, spec=spec)
        assert len(calls) == planned_forwards(len(PROMPTS), spec, 1) > 0, spec
    assert planned_forwards(200, EvalSpec(k=2), 64) == 2 + 2 + 2 + 1
    assert planned_forwards(0, EvalSpec(k=2), 64) == 0


@pytest.mark.distributed
def test_uneven_slices_on_a_sharded_policy_validate_as_one_process(micro_model_dir, tmp_path):
    single = _evaluate(micro_model_dir, None)
    ctx = mp.spawn(_worker, args=(2, free_port(), str(micro_model_dir), tmp_path), nprocs=2,
                   join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # crossed collectives hang rather than fail
            for p in ctx.processes:
                p.kill()
            pytest.fail("validation on the sharded policy hung")
    two = torch.load(tmp_path / "val.pt")
    assert two["cls"].startswith("FSDP")
    want = single.to_dict()
    assert want["entropy"] > 0 and want["n_prompts"] == 5
    for key, value in two["result"].items():
        assert value == (None if want[key] is None else pytest.approx(want[key], rel=1e-5)), key
