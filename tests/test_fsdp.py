"""FSDP2 over two CPU processes (gloo): the update equals one process; save and resume are exact.

accelerate picks its FSDP path only for GPU devices, so these tests force it on CPU processes
(``make_accelerator(cfg, cpu_fsdp=True)``); everything after that is the code a GPU run takes.
"""

import os

import pytest
import torch
import torch.multiprocessing as mp
from spawn_helpers import (
    ROWS,
    fixed_batch,
    free_port,
    join_group,
    two_process_config,
    update_fixed_batch,
    update_rank_slice,
)

from entropyrl.config import load_config


def _config(model_dir, *extra):
    return two_process_config("testbed/kl_cov", model_dir, "loss.kl_cov.ratio=0.05", *extra)


def _worker(rank, world, port, model_dir, batch_path, out_dir):
    join_group(rank, world, port)
    from entropyrl.train import train
    from entropyrl.train.setup import make_accelerator

    cfg = _config(model_dir)
    acc = make_accelerator(cfg, cpu_fsdp=True)
    update_rank_slice(cfg, batch_path, rank, world, acc, out_dir)
    # Whole runs: uninterrupted, and stopped after step 1 then resumed.
    run_cfg = _config(model_dir, "steps=2", "update.mini_batch_size=8",
                      "update.micro_batch_size=4", "checkpoint_every=1", "eval.every=2",
                      "data.testbed.val_size=7", "loss.ref_kl_coef=0.01")
    train(run_cfg, out_dir / "full", accelerator=acc)
    train(run_cfg, out_dir / "part", accelerator=acc, stop_after=1)
    train(run_cfg, out_dir / "part", accelerator=acc)
    from entropyrl.train.setup import setup

    run = setup(run_cfg, out_dir / "probe", acc)
    if rank == 0:
        torch.save({"policy": type(run.learner.model).__name__,
                    "reference": type(run.ref_model).__name__}, out_dir / "classes.pt")
    acc.wait_for_everyone()
    os._exit(0)  # skip gloo's teardown (see test_distributed_update.py)


@pytest.mark.distributed
def test_fsdp_two_processes_match_one_and_resume_exactly(micro_model_dir, tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.train.metrics import read_metrics

    cfg = _config(micro_model_dir)
    batch = fixed_batch(cfg)
    torch.save(batch, tmp_path / "batch.pt")
    single, single_metrics, _ = update_fixed_batch(cfg, batch, torch.arange(ROWS), Accelerator(cpu=True))

    mp.spawn(_worker, args=(2, free_port(), str(micro_model_dir), str(tmp_path / "batch.pt"),
                            tmp_path), nprocs=2, join=True)
    two = torch.load(tmp_path / "update.pt", weights_only=False)
    assert two["cls"].startswith("FSDP")  # the model really was sharded
    classes = torch.load(tmp_path / "classes.pt")
    assert classes["policy"].startswith("FSDP") and classes["reference"].startswith("FSDP")
    for k, v in single.items():
        assert torch.allclose(v, two["params"][k], rtol=1e-5, atol=2e-6), k
    for key in ("loss/total", "loss/selected_frac", "optim/grad_norm"):
        assert two["metrics"][key] == pytest.approx(single_metrics[key], rel=1e-4, abs=1e-7), key
    assert single_metrics["loss/selected_frac"] > 0

    # Sharded save (full HF checkpoint + gathered optimizer state) and resume: exact.
    full, part = tmp_path / "full", tmp_path / "part"
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")}  # noqa: E731
                          for r in rows]
    rows = read_metrics(full / "metrics.jsonl")
    assert strip(read_metrics(part / "metrics.jsonl")) == strip(rows)
    assert "val/acc" in rows[0] and "val/acc" in rows[1]  # validated on both ranks' slices
    a = load_file(str(full / "checkpoints" / "step_2" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "step_2" / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(str(micro_model_dir / "model.safetensors"))
    assert set(a) == set(base)  # a tied weight is written once, as save_pretrained does
    step2 = full / "checkpoints" / "step_2"
    reloaded, _ = load_model_and_tokenizer(load_config(None, [f"model.path={step2}"]).model)
    assert all(torch.equal(v, a[k]) for k, v in reloaded.state_dict().items() if k in a)
