"""The cross-field rules of :class:`~entropyrl.config.TrainConfig`, checked when it is built.

A single field's type (a ``Literal``, a number, a nested section) is checked by the loader;
what depends on several fields, or on a range, is checked here. Every rule raises a
``ValueError`` naming the dotted field, which the loader reports as a user error.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from entropyrl.control.assist import check_assist

if TYPE_CHECKING:
    from entropyrl.config import TrainConfig


def validate(cfg: TrainConfig) -> None:
    """Cross-field rules that a single field's type cannot express."""
    positive = {
        "steps": cfg.steps,
        "rollout.n_prompts": cfg.rollout.n_prompts,
        "rollout.group_size": cfg.rollout.group_size,
        "rollout.max_new_tokens": cfg.rollout.max_new_tokens,
        "rollout.max_gen_batches": cfg.rollout.max_gen_batches,
        "update.mini_batch_size": cfg.update.mini_batch_size,
        "update.micro_batch_size": cfg.update.micro_batch_size,
        "update.epochs": cfg.update.epochs,
        "data.testbed.train_size": cfg.data.testbed.train_size,
        "data.testbed.val_size": cfg.data.testbed.val_size,
        "eval.k": cfg.eval.k,
        "keep_checkpoints": cfg.keep_checkpoints,
        "rollout.max_batch_tokens": cfg.rollout.max_batch_tokens,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name}: expected a positive integer, got {value}")
    for name, number in {
        "rollout.temperature": cfg.rollout.temperature,
        "eval.temperature": cfg.eval.temperature,
        "optim.lr": cfg.optim.lr,
        "optim.eps": cfg.optim.eps,
    }.items():
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(f"{name}: expected a finite number > 0, got {number}")
    if cfg.optim.lr > 1:
        raise ValueError(f"optim.lr: expected a learning rate <= 1, got {cfg.optim.lr}")
    for name, beta in {"optim.beta1": cfg.optim.beta1, "optim.beta2": cfg.optim.beta2}.items():
        if not 0 <= beta < 1:
            raise ValueError(f"{name}: expected a value in [0, 1), got {beta}")
    non_negative: dict[str, float] = {
        "optim.weight_decay": cfg.optim.weight_decay,
        "optim.grad_clip": cfg.optim.grad_clip,
        "optim.warmup_steps": cfg.optim.warmup_steps,
        "checkpoint_every": cfg.checkpoint_every,
        "eval.every": cfg.eval.every,
        "eval.entropy_samples": cfg.eval.entropy_samples,
        "reward.overlong_buffer": cfg.reward.overlong_buffer,
    }
    for name, amount in non_negative.items():
        if not (amount >= 0 and math.isfinite(amount)):
            raise ValueError(f"{name}: expected a finite number >= 0 (0 = off), got {amount}")
    if not 0 < cfg.rollout.gpu_memory_utilization <= 1:
        raise ValueError(f"rollout.gpu_memory_utilization: expected a value in (0, 1], got "
                         f"{cfg.rollout.gpu_memory_utilization}")
    if cfg.rollout.max_model_len < 0:
        raise ValueError(f"rollout.max_model_len: expected >= 0 (0 = the model's limit), got "
                         f"{cfg.rollout.max_model_len}")
    if cfg.loss.tis_cap > 0 and cfg.rollout.engine != "vllm":
        raise ValueError("loss.tis_cap: truncated importance sampling needs the sampler's "
                         "log-probs, which only rollout.engine=vllm reports; set "
                         "rollout.engine=vllm or loss.tis_cap=0")
    if not 0 < cfg.dynamics.entropy_after_fraction <= 1:
        raise ValueError(f"dynamics.entropy_after_fraction: expected a value in (0, 1], got "
                         f"{cfg.dynamics.entropy_after_fraction}")
    if not 0 < cfg.rollout.top_p <= 1:
        raise ValueError(f"rollout.top_p: expected a value in (0, 1], got {cfg.rollout.top_p}")
    if not (cfg.prime.beta > 0 and 0 < cfg.prime.lr <= 1):
        raise ValueError(f"prime.beta: expected beta > 0 and 0 < lr <= 1, got beta "
                         f"{cfg.prime.beta} and lr {cfg.prime.lr}")
    if not 0 <= cfg.algorithm.gamma <= 1:
        raise ValueError(f"algorithm.gamma: expected a value in [0, 1], got {cfg.algorithm.gamma}")
    batch = cfg.rollout.n_prompts * cfg.rollout.group_size
    if batch % cfg.update.mini_batch_size:
        raise ValueError(
            f"update.mini_batch_size: expected a divisor of the rollout batch "
            f"(rollout.n_prompts x rollout.group_size = {batch}), got {cfg.update.mini_batch_size}"
        )
    if cfg.update.mini_batch_size % cfg.update.micro_batch_size:
        raise ValueError(
            f"update.micro_batch_size: expected a divisor of update.mini_batch_size "
            f"({cfg.update.mini_batch_size}), got {cfg.update.micro_batch_size}"
        )
    for task in ("math", "code", "python"):
        section = getattr(cfg.data, task)
        if cfg.data.task == task and not (section.train_files and section.val_files):
            raise ValueError(
                f"data.{task}.train_files: the {task} task needs data.{task}.train_files and "
                f"data.{task}.val_files (local .jsonl/.json/.parquet files or hub ids)"
            )
    if cfg.data.task == "python" and not cfg.reward.fn:
        raise ValueError(
            "reward.fn: the python task is scored by your function: set reward.fn="
            "my_module:my_reward (or path/to/file.py:my_reward); see docs/tasks.md"
        )
    if cfg.reward.workers <= 0 or not cfg.reward.timeout_s > 0:
        raise ValueError("reward.workers: expected workers >= 1 and timeout_s > 0")
    c = cfg.control
    if c.kind != "none":
        if not (c.target_entropy > 0 and c.schedule_end > 0):
            raise ValueError("control.target_entropy: expected targets > 0 nats")
        if not 0 < c.min_value < c.max_value:
            raise ValueError(f"control.min_value: expected 0 < min_value < max_value, got "
                             f"{c.min_value} and {c.max_value}")
        if c.schedule_steps < 0 or c.kp < 0 or c.ki < 0 or c.delta <= 0:
            raise ValueError("control.kp: expected kp, ki >= 0, delta > 0, schedule_steps >= 0")
        if c.approach_steps < 0:
            raise ValueError(f"control.approach_steps: expected >= 0, got {c.approach_steps}")
        check_assist(c.assist, c.actuator, c.assist_gain, c.assist_limit, "control.")
        needs = {"clip_cov_ratio": "clip_cov", "kl_cov_coef": "kl_cov", "kl_cov_ratio": "kl_cov",
                 "eps_low": "ppo"}.get(c.actuator)
        if c.kind == "predictive" and c.actuator not in ("clip_cov_ratio", "kl_cov_ratio"):
            raise ValueError(f"control.actuator: the predictive controller sets a selected "
                             f"fraction (clip_cov_ratio or kl_cov_ratio), got {c.actuator!r}; "
                             f"use control.kind=pi for it")
        if needs is not None and cfg.loss.name != needs:
            raise ValueError(f"control.actuator: {c.actuator} acts on loss.name={needs}, but the "
                             f"loss is {cfg.loss.name!r}")
    if cfg.model.compile_mode != "default" and not cfg.model.compile:
        raise ValueError(f"model.compile_mode: {cfg.model.compile_mode!r} applies only to a "
                         "compiled policy; set model.compile=true too, or drop compile_mode")
    for sink in cfg.sinks:
        if sink not in ("tensorboard", "wandb", "mlflow"):
            raise ValueError(
                f"sinks: expected items from ['tensorboard', 'wandb', 'mlflow'], got {sink!r}"
            )
