"""Shared pieces of the multi-process tests: a free port, one fixed update batch, a rank's setup."""

import os
import socket

import torch

from entropyrl.rollout import HFEngine, SamplingParams

PROMPTS = ["12+34=", "5*6=", "99-9=", "7+8="]
ROWS = 16  # rows of fixed_batch: 4 prompts x 4 samples


def two_process_config(preset, model_dir, *extra):
    """``preset`` on the micro model, sized for the two-process update tests (16 rows, 4 parts)."""
    from entropyrl.config import load_config

    return load_config(preset, [
        f"model.path={model_dir}", "model.device=cpu", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=10", "update.mini_batch_size=16",
        "update.micro_batch_size=4", "update.epochs=2", "update.shuffle=false",
        "optim.lr=1e-2", "optim.eps=1e-4", "eval.every=0", "data.testbed.train_size=64",
        "data.testbed.val_size=8", "progress=false", *extra,
    ])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fixed_batch(cfg, n=4):
    """A 16-row rollout of the config's model with its log-probs, entropies and advantages."""
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.policy import response_token_stats

    model, tok = load_model_and_tokenizer(cfg.model)
    torch.manual_seed(0)
    roll = HFEngine(model, tok).generate(PROMPTS, n, SamplingParams(max_new_tokens=10))
    st = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                              temperature=1.0, with_entropy=True)
    adv = (torch.randn(len(roll), 1) * roll.response_mask).contiguous()
    return {"rollout": roll, "old": st.logprobs.detach(), "entropy": st.entropy.detach(),
            "adv": adv}


def update_fixed_batch(cfg, batch, rows, accelerator):
    """One step's updates on ``batch[rows]``: (full parameters, loss metrics, model class)."""
    from entropyrl.distributed import Dist, full_model_state
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.train.update import Learner, UpdateBatch, update_on_batch

    model, _ = load_model_and_tokenizer(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    model, opt = accelerator.prepare(model, opt)
    learner = Learner(model, opt, sched, accelerator)
    roll, old, adv = batch["rollout"].select(rows), batch["old"][rows], batch["adv"][rows]
    metrics = update_on_batch(learner, UpdateBatch(roll, old, adv), loss=cfg.loss,
                              update=cfg.update, dist=Dist.from_accelerator(accelerator),
                              temperature=cfg.rollout.temperature,
                              grad_clip=cfg.optim.grad_clip, seed=cfg.seed, step=1)
    full = full_model_state(accelerator.unwrap_model(model))
    params = {k: v.detach().clone() for k, v in full.items()}
    return params, metrics, type(model).__name__


def join_group(rank, world, port):
    """Make this spawned process rank ``rank`` of ``world`` on 127.0.0.1:``port``, one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)


def update_rank_slice(cfg, batch_path, rank, world, accelerator, out_dir):
    """This rank's equal share of the saved fixed batch, updated together with the other ranks.

    Rank 0 saves what :func:`update_fixed_batch` returns to ``out_dir / "update.pt"`` as
    ``{"params", "metrics", "cls"}``.
    """
    batch = torch.load(batch_path, weights_only=False)
    per = ROWS // world
    rows = torch.arange(rank * per, (rank + 1) * per)
    params, metrics, cls = update_fixed_batch(cfg, batch, rows, accelerator)
    if rank == 0:
        torch.save({"params": params, "metrics": metrics, "cls": cls}, out_dir / "update.pt")
