"""The compiled policy (``model.compile``): what is compiled, what is not, and that runs agree.

The default-suite tests need no C++ compiler: ``torch.compile`` is replaced by a recording
identity (the wiring) or given dynamo's ``eager`` backend (dynamo traces the body and replays
the traced graph, no inductor). The real inductor compile is in the ``slow`` tests (it needs a
C++ compiler, ``gcc``, and compiles for ~30-120 s on a 2-core CPU): ``make test-slow``.
"""

import os
from contextlib import contextmanager
from functools import partial

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from spawn_helpers import (
    ROWS,
    fixed_batch,
    free_port,
    join_group,
    two_process_config,
    update_fixed_batch,
    update_rank_slice,
)

from entropyrl.compiled import compile_policy, is_compiled, policy_body
from entropyrl.config import load_config
from entropyrl.errors import UserError
from entropyrl.train import train
from entropyrl.train.metrics import read_metrics
from entropyrl.train.setup import setup
from entropyrl.train.step import rl_step

pytestmark = pytest.mark.usefixtures("varied_reward")


def tiny(model_dir, *extra):
    return load_config("testbed/grpo", [
        f"model.path={model_dir}", "model.device=cpu", "steps=2", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=12", "update.mini_batch_size=8",
        "update.micro_batch_size=4", "eval.every=2", "eval.k=2", "eval.max_new_tokens=12",
        "data.testbed.train_size=64", "data.testbed.val_size=8", "optim.lr=1e-3",
        "optim.eps=1e-4", "checkpoint_every=1", "progress=false", *extra,
    ])


class RecordingCompile:
    """Stands in for ``torch.compile``: returns the function itself, recording every call.

    A call made while the fake ``set_stance("force_eager")`` is active is one that the real
    stance would run eager (generation).
    """

    def __init__(self):
        self.options = []
        self.calls = []  # (grad enabled, inside force_eager) of every call of a compiled fn
        self.eager = False

    def __call__(self, fn, *args, **kwargs):
        self.options.append(kwargs)

        def compiled(*a, **k):
            self.calls.append((torch.is_grad_enabled(), self.eager))
            return fn(*a, **k)

        return compiled

    @contextmanager
    def set_stance(self, stance):
        assert stance == "force_eager"
        self.eager = True
        try:
            yield
        finally:
            self.eager = False


@pytest.fixture
def recorder(monkeypatch):
    rec = RecordingCompile()
    monkeypatch.setattr(torch, "compile", rec)
    monkeypatch.setattr(torch.compiler, "set_stance", rec.set_stance)
    return rec


@pytest.fixture
def eager_backend(monkeypatch):
    """Real dynamo tracing, replayed without inductor (no C++ compiler, seconds not minutes)."""
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="eager"))


def test_compile_config_is_checked():
    assert load_config(None).model.compile is False
    load_config(None, ["model.compile=true", "model.compile_mode=max-autotune-no-cudagraphs"])
    with pytest.raises(UserError, match=r"model\.compile_mode: .* set model\.compile=true"):
        load_config(None, ["model.compile_mode=max-autotune-no-cudagraphs"])
    with pytest.raises(UserError, match=r"model\.compile_mode: expected one of"):
        load_config(None, ["model.compile=true", "model.compile_mode=reduce-overhead"])


def test_compile_wraps_the_forward_of_the_update_and_the_scoring(micro_model_dir, tmp_path,
                                                                 recorder):
    cfg = tiny(micro_model_dir, "model.compile=true", "dynamics.entropy_after_fraction=0.5")
    run = setup(cfg, tmp_path / "run")
    try:
        assert recorder.options == [{"dynamic": True, "mode": None}]
        policy = run.learner.accelerator.unwrap_model(run.learner.model)
        assert is_compiled(policy) and policy_body(policy) is policy.model
        rl_step(run, 1)
    finally:
        run.release()
    training = [grad for grad, eager in recorder.calls if not eager]
    # The update: 16 rows in micro-batches of 4, one forward with gradients each; the scoring
    # (the π_old rows the first update does not fill, the ΔH re-scoring) without.
    assert training.count(True) == 4
    assert training.count(False) >= 2
    # Generation went through the body too, but under force_eager: it runs eager.
    generation = [grad for grad, eager in recorder.calls if eager]
    assert generation and not any(generation)
    # The plain module: no wrapper, no renamed parameters.
    assert not any("_orig_mod" in k for k in policy.state_dict())


def test_without_compile_nothing_is_compiled(micro_model_dir, tmp_path, recorder):
    run = setup(tiny(micro_model_dir), tmp_path / "run")
    try:
        rl_step(run, 1)
        assert not is_compiled(run.learner.model)
    finally:
        run.release()
    assert recorder.options == [] and recorder.calls == []


def strip_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_compiled_run_matches_eager_and_resumes_exactly(micro_model_dir, tmp_path,
                                                        eager_backend):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = train(tiny(micro_model_dir), tmp_path / "eager")
    cfg = tiny(micro_model_dir, "model.compile=true")
    full = train(cfg, tmp_path / "full")
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really traced the body
    part = train(cfg, tmp_path / "part", stop_after=1)
    train(cfg, tmp_path / "part")
    rows = strip_time(read_metrics(full / "metrics.jsonl"))
    assert strip_time(read_metrics(part / "metrics.jsonl")) == rows
    ref = strip_time(read_metrics(eager / "metrics.jsonl"))
    assert [set(r) for r in rows] == [set(r) for r in ref]
    for got, want in zip(rows, ref, strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    saved = load_file(str(full / "checkpoints" / "step_2" / "model.safetensors"))
    resumed = load_file(str(part / "checkpoints" / "step_2" / "model.safetensors"))
    base = load_file(str(micro_model_dir / "model.safetensors"))
    assert set(saved) == set(base) == set(resumed)  # no "_orig_mod." in a checkpoint
    assert all(torch.equal(saved[k], resumed[k]) for k in saved)


# ----------------------------------------------------------------- the real compile (inductor)


@pytest.mark.slow
def test_inductor_run_matches_eager_without_recompiling(micro_model_dir, tmp_path):
    """Needs a C++ compiler (inductor's CPU backend); fails, not skips, without one."""
    from torch._dynamo.utils import counters

    eager = train(tiny(micro_model_dir, "steps=3"), tmp_path / "eager")
    torch._dynamo.reset()
    counters.clear()
    cfg = tiny(micro_model_dir, "steps=3", "model.compile=true")
    run = setup(cfg, tmp_path / "probe")
    try:
        rl_step(run, 1)  # compiles: the update's graph and the scoring's
        graphs = counters["stats"]["unique_graphs"]
        rl_step(run, 2)  # other response lengths: no new graph
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        run.release()
    out = train(cfg, tmp_path / "compiled")
    for got, want in zip(strip_time(read_metrics(out / "metrics.jsonl")),
                         strip_time(read_metrics(eager / "metrics.jsonl")), strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
    saved = load_file(str(out / "checkpoints" / "step_3" / "model.safetensors"))
    assert set(saved) == set(load_file(str(micro_model_dir / "model.safetensors")))


def _two_process_config(model_dir, *extra):
    # PPO: KL-Cov's |log π − log π_old| has a kink at the first update, where eager and
    # compiled log-probs (~1e-6 apart) would take opposite subgradients.
    return two_process_config("testbed/grpo", model_dir, *extra)


def _worker(rank, world, port, model_dir, batch_path, out_dir, sharded):
    join_group(rank, world, port)
    from entropyrl.train.setup import make_accelerator

    cfg = _two_process_config(model_dir)
    acc = make_accelerator(cfg, cpu_fsdp=sharded)
    real_prepare = acc.prepare

    def prepare_and_compile(*objs):
        out = real_prepare(*objs)
        compile_policy(out[0])  # what setup does after prepare
        return out

    acc.prepare = prepare_and_compile
    update_rank_slice(cfg, batch_path, rank, world, acc, out_dir)
    acc.wait_for_everyone()
    os._exit(0)  # skip gloo's teardown (see test_distributed_update.py)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("wrapper", ["FSDP", "DistributedDataParallel"])
def test_compiled_update_of_two_processes_matches_one_eager_process(micro_model_dir, tmp_path,
                                                                    wrapper):
    from accelerate import Accelerator

    cfg = _two_process_config(micro_model_dir)
    batch = fixed_batch(cfg)
    torch.save(batch, tmp_path / "batch.pt")
    single, single_metrics, _ = update_fixed_batch(cfg, batch, torch.arange(ROWS),
                                                   Accelerator(cpu=True))
    mp.spawn(_worker, args=(2, free_port(), str(micro_model_dir), str(tmp_path / "batch.pt"),
                            tmp_path, wrapper == "FSDP"), nprocs=2, join=True)
    two = torch.load(tmp_path / "update.pt", weights_only=False)
    assert two["cls"].startswith(wrapper)
    for k, v in single.items():
        assert torch.allclose(v, two["params"][k], rtol=1e-3, atol=2e-4), k
    for key in ("loss/total", "optim/grad_norm"):
        assert two["metrics"][key] == pytest.approx(single_metrics[key], rel=1e-3), key
