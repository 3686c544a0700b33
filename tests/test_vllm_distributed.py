"""The vLLM engine under a two-process launch on the CPU: FSDP2 over gloo, one engine per rank.

Each rank drives its own in-process ``vllm.LLM`` with vLLM's ``external_launcher`` executor
(what :class:`~entropyrl.rollout.vllm.VLLMEngine` passes when accelerate has several
processes); the trainer's policy is sharded by FSDP2 (forced on CPU, as in test_fsdp.py), the
weight sync gathers the full parameters from the shards, and validation scores entropies on the
sharded policy over uneven slices of the validation rows.

Marked ``vllm`` and ``distributed``: run by ``make test-vllm``.
"""

import os
import time

import pytest
import torch
import torch.multiprocessing as mp
from spawn_helpers import free_port

from entropyrl.rollout.vllm import vllm_available

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.distributed,
    pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (make test-vllm)"),
]

MEMORY = 0.1  # of host memory per process on vLLM's CPU backend (it counts the whole process)
DEADLINE_S = 600  # crossed collectives hang rather than fail
VAL_ROWS, VAL_K = 5, 32  # slices of 3 and 2 prompts: 96 and 64 sampled rows, 2 and 1 forwards


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    """A random head-size-32 micro Qwen2 with peaked next-token distributions (as in
    test_vllm_engine.py)."""
    from transformers import Qwen2ForCausalLM

    from entropyrl import testbed

    path = tmp_path_factory.mktemp("vllm_micro")
    tokenizer = testbed.build_tokenizer()
    config = testbed.vllm_micro_config(len(tokenizer))
    config.initializer_range = 0.2
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _config(model_dir):
    from entropyrl.config import load_config

    return load_config("testbed/grpo", [
        f"model.path={model_dir}", "model.device=cpu", "steps=3", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=12", "update.mini_batch_size=8",
        "update.micro_batch_size=4", "eval.every=1", f"eval.k={VAL_K}",
        "eval.max_new_tokens=12", "data.testbed.train_size=64",
        f"data.testbed.val_size={VAL_ROWS}", "optim.lr=3e-3", "optim.eps=1e-4",
        "checkpoint_every=1", "keep_checkpoints=3", "progress=false", "rollout.engine=vllm",
        f"rollout.gpu_memory_utilization={MEMORY}", "rollout.max_model_len=128",
    ])


def _score(texts, rows):
    """A random model never solves a task; '1 in the response' gives mixed groups."""
    from entropyrl.rewards.result import full_credit

    return full_credit([float("1" in t) for t in texts])


def _varied_tasks():
    import entropyrl.tasks as tasks

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, _score)

    return load


def _worker(rank, world, port, model_dir, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import entropyrl.train.setup as setup
    from entropyrl.train import train

    setup.load_tasks = _varied_tasks()
    cfg = _config(model_dir)
    acc = setup.make_accelerator(cfg, cpu_fsdp=True)
    seen = {"greedy": []}
    real = setup.make_engine

    def make_engine(cfg, learner, tokenizer, *, source=None):
        """The run's engine; records the classes and this rank's greedy validation texts."""
        seen["policy"] = type(learner.model).__name__
        engine = real(cfg, learner, tokenizer, source=source)
        seen["engine"] = type(engine).__name__
        generate = engine.generate

        def recorded(prompts, n, sampling):
            roll = generate(prompts, n, sampling)
            if sampling.greedy:
                seen["greedy"].append(roll.texts)
            return roll

        engine.generate = recorded
        return engine

    setup.make_engine = make_engine
    train(cfg, out_dir / "run", accelerator=acc)
    torch.save(seen, out_dir / f"rank{rank}.pt")
    acc.wait_for_everyone()
    os._exit(0)  # skip gloo's teardown (see test_distributed_update.py)


def _spawn(world, model_dir, out_dir):
    ctx = mp.spawn(_worker, args=(world, free_port(), str(model_dir), out_dir), nprocs=world,
                   join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {world}-process vLLM run did not finish in {DEADLINE_S} s")


def _greedy(model_dir, cfg):
    """The HF engine's greedy responses to the validation prompts with a checkpoint's weights."""
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.rollout import HFEngine, SamplingParams
    from entropyrl.tasks import load_tasks

    model, tok = load_model_and_tokenizer(cfg.model, override_path=model_dir)
    val = load_tasks(cfg.data, cfg.reward, tok).val
    assert len(val) == VAL_ROWS
    return HFEngine(model, tok).generate([r["prompt"] for r in val], 1,
                                         SamplingParams(max_new_tokens=12, greedy=True)).texts


def test_two_processes_fsdp_with_one_vllm_engine_per_rank(vllm_model_dir, tmp_path,
                                                           monkeypatch):
    from entropyrl.evaluation import EvalSpec, planned_forwards
    from entropyrl.train import train
    from entropyrl.train.metrics import read_metrics

    spec = EvalSpec(k=VAL_K, max_new_tokens=12)  # the ranks' slices need 2 and 1 forwards
    assert planned_forwards(3, spec, 64) == 2 and planned_forwards(2, spec, 64) == 1
    cfg = _config(vllm_model_dir)

    t = time.perf_counter()
    _spawn(2, vllm_model_dir, tmp_path)
    print(f"\ntwo-process run: {time.perf_counter() - t:.1f} s")
    seen = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for s in seen:
        assert s["policy"].startswith("FSDP"), s  # the policy really was sharded
        assert s["engine"] == "VLLMEngine", s
        assert len(s["greedy"]) == 3  # one greedy validation batch per step
    two = read_metrics(tmp_path / "run" / "metrics.jsonl")

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", _varied_tasks())
    t = time.perf_counter()
    one = read_metrics(train(cfg, tmp_path / "one") / "metrics.jsonl")
    print(f"one-process run: {time.perf_counter() - t:.1f} s")
    for name, rows in (("two processes", two), ("one process", one)):
        print(name, [(r["rollout/logprob_gap_mean"], r["rollout/logprob_gap_max"], r["val/greedy_acc"])
                     for r in rows])
        assert [r["step"] for r in rows] == [1, 2, 3]
        for r in rows:
            # Each step's rollout is scored against the weights the engines sampled with: on
            # both ranks (the max is over all ranks' tokens) the engine holds the synced,
            # gathered weights.
            assert r["rollout/logprob_gap_max"] < 1e-4, (name, r)
            assert r["rollout/logprob_gap_mean"] < 1e-5, (name, r)
            assert r["val/entropy"] > 0 and r["val/response_len"] > 0, (name, r)
    # The ranks' greedy validation responses (rank 0: rows 0-2, rank 1: rows 3-4) are the HF
    # engine's on the weights of that step, token for token: the base model at step 1, the
    # synced, gathered weights of the checkpoints of steps 1 and 2 at steps 2 and 3.
    ckpt = tmp_path / "run" / "checkpoints"
    sources = [vllm_model_dir, ckpt / "step_1", ckpt / "step_2"]
    for step, source in enumerate(sources, start=1):
        texts = seen[0]["greedy"][step - 1] + seen[1]["greedy"][step - 1]
        assert [len(s["greedy"][step - 1]) for s in seen] == [3, 2]
        assert texts == _greedy(source, cfg), step
        # The combined greedy accuracy counts both ranks' rows.
        assert two[step - 1]["val/greedy_acc"] == pytest.approx(
            sum(float("1" in t) for t in texts) / VAL_ROWS)
    # One process validates the same weights at step 1 (the samples differ from there on).
    assert one[0]["val/greedy_acc"] == two[0]["val/greedy_acc"]
    # The updates moved the weights (a stale engine would show in the gap: test_vllm_engine.py).
    from safetensors.torch import load_file

    a = load_file(str(vllm_model_dir / "model.safetensors"))
    b = load_file(str(ckpt / "step_2" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-3
