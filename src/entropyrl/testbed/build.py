"""Reproducible "pre-training" of the testbed base model on noisy arithmetic solutions.

``entropyrl testbed build --out DIR [--seed S]`` (or ``python -m
entropyrl.testbed.build``) trains a fresh tiny Qwen2 by
next-token prediction on the *response* tokens of mixed-quality solutions
(:mod:`entropyrl.testbed.noise`), then saves it in Hugging Face format with its tokenizer and a
``build_info.json`` (recipe, seed, hashes, measured validation accuracy and entropy).

Everything is a function of the seed: seeded initialisation, a seeded data stream generated in
Python, a fixed thread count and ``torch.use_deterministic_algorithms(True)``, so two builds on
the same machine (same torch build and CPU) write byte-identical ``model.safetensors``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, Qwen2ForCausalLM

from entropyrl._checks import check_fraction, check_positive
from entropyrl.testbed.evaluate import evaluate
from entropyrl.testbed.model import base_config
from entropyrl.testbed.noise import NoiseRecipe, noisy_solution
from entropyrl.testbed.tasks import DIFFICULTIES, make_tasks, parse_prompt
from entropyrl.testbed.tokenizer import build_tokenizer

# The shipped writer: the default slips plus a rare, very sloppy comma (docs/testbed.md,
# "Separator forks"). One separator in seven is a comma and nine cells in ten written after
# one slip, so the comma is a style that strongly predicts mistakes: GRPO removes it, and with
# it the entropy it carried, while Clip-Cov keeps it open and learns to write carefully after
# it (docs/losses.md).
SHIPPED_NOISE = NoiseRecipe(p_comma=0.15, p_comma_slip=0.9)


@dataclass(frozen=True)
class BuildConfig:
    """Recipe of the base model (every field is recorded in ``build_info.json``)."""

    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    threads: int = 1
    pool_size: int = 20_000
    difficulty: tuple[int, ...] = DIFFICULTIES
    noise: NoiseRecipe = SHIPPED_NOISE
    # Validation figures recorded for the docs and re-checked by the tests.
    eval_prompts: int = 64
    report_prompts: int = 256
    eval_samples: int = 8
    eval_seed: int = 0
    eval_data_seed: int = 0
    max_new_tokens: int = 40
    # Hidden size over 4 heads: 96 (head size 24) is the shipped model; 128 (head size 32) is a
    # base that vLLM's CPU attention runs.
    hidden: int = 96

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads", "pool_size", "eval_prompts",
                     "report_prompts", "eval_samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.hidden < 8 or self.hidden % 8:
            raise ValueError(f"hidden: expected a multiple of 8 (4 heads of even size), got "
                             f"{self.hidden}")
        check_positive("lr", self.lr)
        check_fraction("min_lr_ratio", self.min_lr_ratio, allow_zero=True)


@dataclass(frozen=True)
class Batch:
    """A training batch: right-padded ids ``[B, T]`` and labels (-100 off the response)."""

    input_ids: torch.Tensor
    labels: torch.Tensor


def make_batch(
    rows: list[dict[str, Any]], tokenizer: Any, noise: NoiseRecipe, rng: random.Random
) -> Batch:
    """Tokenize ``prompt + noisy response + eos`` for each row; loss only on the response."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    seqs: list[tuple[list[int], list[int]]] = []
    for row in rows:
        op, a, b = parse_prompt(row["prompt"])
        prompt = tokenizer.encode(row["prompt"], add_special_tokens=False)
        response = tokenizer.encode(noisy_solution(op, a, b, noise, rng), add_special_tokens=False)
        seqs.append((prompt, [*response, eos]))
    width = max(len(p) + len(r) for p, r in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (p, r) in enumerate(seqs):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
    return Batch(ids, labels)


def response_loss(model: Any, batch: Batch) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens (prompt and padding excluded)."""
    # Right padding only follows the real tokens, so the causal mask alone keeps it from
    # influencing them; no attention mask needed.
    logits = model(input_ids=batch.input_ids).logits[:, :-1]  # [B, T-1, V]
    target = batch.labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
    )


def _lr_factor(step: int, cfg: BuildConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@contextmanager
def deterministic_cpu(threads: int, seed: int) -> Iterator[None]:
    """Fixed thread count, deterministic kernels and a seeded, forked RNG; restored on exit.

    Float reductions can be split differently with another thread count, so the count is part
    of the recipe; the caller's settings and RNG state come back unchanged afterwards.
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def train(cfg: BuildConfig, log_every: int = 0) -> tuple[Any, Any, float]:
    """Train the base model from scratch; returns ``(model, tokenizer, final_loss)``.

    Call inside :func:`deterministic_cpu` for a bit-reproducible result.
    """
    tokenizer = build_tokenizer()
    model = Qwen2ForCausalLM(base_config(len(tokenizer), cfg.hidden))
    model.train()
    pool = make_tasks("train", cfg.pool_size, 10_000 + cfg.seed, difficulty=cfg.difficulty)
    rng = random.Random(f"entropyrl.testbed.build/{cfg.seed}")
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    ema = float("nan")
    for step in range(cfg.steps):
        batch = make_batch([rng.choice(pool) for _ in range(cfg.batch_size)], tokenizer,
                           cfg.noise, rng)
        loss = response_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        ema = value if math.isnan(ema) else 0.98 * ema + 0.02 * value
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{cfg.steps} loss {ema:.4f}", flush=True)
    model.eval()
    return model, tokenizer, ema


def measure(model: Any, tokenizer: Any, cfg: BuildConfig, n_prompts: int) -> dict[str, Any]:
    """Validation figures on the first ``n_prompts`` validation rows of ``eval_data_seed``.

    ``sampled``: T = 1, ``eval_samples`` responses per prompt; ``greedy``: one greedy response.
    """
    rows = make_tasks("val", n_prompts, cfg.eval_data_seed, difficulty=cfg.difficulty)
    common = {"max_new_tokens": cfg.max_new_tokens, "seed": cfg.eval_seed}
    return {
        "sampled": evaluate(model, tokenizer, rows, temperature=1.0,
                            n_samples=cfg.eval_samples, **common),
        "greedy": evaluate(model, tokenizer, rows, temperature=0.0, n_samples=1, **common),
    }


def save(model: Any, tokenizer: Any, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write the checkpoint, tokenizer, generation config and ``build_info.json``.

    Returns:
        ``info`` with the SHA-256 of ``model.safetensors`` added (what was written).
    """
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=40,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    info = {**info, "model_safetensors_sha256": digest}
    with open(out / "build_info.json", "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return info


def build(out: str | Path, cfg: BuildConfig, *, evaluate_model: bool = True,
          log_every: int = 0) -> dict[str, Any]:
    """Train, measure and save the base model to ``out``; returns the ``build_info`` dict."""
    start = time.perf_counter()
    with deterministic_cpu(cfg.threads, cfg.seed):
        model, tokenizer, loss = train(cfg, log_every=log_every)
        train_s = time.perf_counter() - start
        validation = None
        if evaluate_model:  # the small subset is re-checked by the tests; the large one is
            validation = {  # the figure the docs quote
                "subset": measure(model, tokenizer, cfg, cfg.eval_prompts),
                "report": measure(model, tokenizer, cfg, cfg.report_prompts),
            }
    info: dict[str, Any] = {
        "recipe": dataclasses.asdict(cfg),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss_ema": loss,
        "train_wall_s": round(train_s, 1),
        "torch_version": torch.__version__,
    }
    if validation is not None:
        info["validation"] = validation
    return save(model, tokenizer, Path(out), info)


def config_for(seed: int = 0, *, steps: int | None = None,
               noise: dict[str, float] | None = None, hidden: int | None = None) -> BuildConfig:
    """The shipped recipe with the command line's changes (``ValueError`` on a bad value).

    Args:
        seed: build seed.
        steps: training steps, if not the recipe's.
        noise: :class:`NoiseRecipe` fields to change, e.g. ``{"p_borrow": 0.25}``.
        hidden: hidden size, if not the shipped 96 (128: head size 32, for vLLM's CPU build).
    """
    cfg = BuildConfig(seed=seed)
    if noise:
        cfg = dataclasses.replace(cfg, noise=dataclasses.replace(cfg.noise, **noise))
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    if hidden is not None:
        cfg = dataclasses.replace(cfg, hidden=hidden)
    return cfg


def main(argv: list[str] | None = None) -> None:
    """``python -m entropyrl.testbed.build ARGS`` is ``entropyrl testbed build ARGS``."""
    import sys

    from entropyrl.cli.main import main as cli_main

    raise SystemExit(cli_main(["testbed", "build", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    main()
