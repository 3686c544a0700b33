"""What would make a memory plan fit: the search behind the dry-run's refusal.

When a plan (:func:`entropyrl.plan.memory_plan`) does not fit the device, :func:`refusal` says
what does not fit and proposes the smallest changes that only affect memory: vLLM's share of
the device, the generation chunk, the micro-batch, vLLM's sleep mode, gradient checkpointing,
FSDP and the number of processes (docs/plan.md, "When it does not fit").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from entropyrl.config import TrainConfig
from entropyrl.model_shape import ModelShape
from entropyrl.plan import (
    PHASES,
    MemoryPlan,
    _labels,
    _top_parts,
    _with_margin,
    format_bytes,
    memory_plan,
)

FSDP_CONFIG = "configs/accelerate/fsdp2.yaml"


def _fits(nbytes: int, device: int) -> bool:
    return _with_margin(nbytes) <= device


def _shrink(shape: ModelShape, cfg: TrainConfig, world: int, sharded: bool, prompt: int,
            device: int) -> list[str] | None:  # fmt: skip
    """The memory-only changes (fewest first) that make the plan fit, or None if none does.

    vLLM: set ``rollout.gpu_memory_utilization`` to the largest value (in hundredths) that
    fits and still holds the engine's minimum, if the configured one does not. Rollout (HF):
    lower ``rollout.max_batch_tokens`` a row at a time. Update: at each micro-batch size from
    the current one down (valid for ``world``), first as configured, then with vLLM's sleep
    mode, then with gradient checkpointing on.
    """
    if cfg.rollout.n_prompts % world:
        return None
    plan, changes = memory_plan(shape, cfg, world, sharded, prompt, device), []
    plan_utilization = cfg.rollout.gpu_memory_utilization
    if plan.vllm_need and not (plan.engine_fits and plan.total <= device):
        # The largest share that fits as configured; else the largest that fits the rollout,
        # leaving the update to the changes below.
        found: tuple[TrainConfig, MemoryPlan] | None = None
        for phases in (tuple(PHASES), ("rollout", "sync")):
            for hundredths in range(99, 0, -1):
                trial = _replace(cfg, "rollout", gpu_memory_utilization=hundredths / 100)
                if trial is None:
                    continue
                got = memory_plan(shape, trial, world, sharded, prompt, device)
                if got.engine_fits and all(_fits(got.phase(ph), device) for ph in phases):
                    found = trial, got
                    break
            if found is not None:
                break
        if found is None:
            return None
        cfg, plan = found
        if cfg.rollout.gpu_memory_utilization != plan_utilization:
            changes.append(f"set rollout.gpu_memory_utilization to "
                           f"{cfg.rollout.gpu_memory_utilization:g}")
    if not _fits(plan.phase("sync"), device):  # no knob but the world size shrinks it
        return None
    if not _fits(plan.phase("rollout"), device):
        for rows in range(plan.gen_rows - 1, 0, -1):
            trial = _replace(cfg, "rollout", max_batch_tokens=rows * plan.gen_seq)
            rollout = trial and memory_plan(shape, trial, world, sharded, prompt,
                                            device).phase("rollout")
            if rollout and _fits(rollout, device):
                changes.append(f"lower rollout.max_batch_tokens to {rows * plan.gen_seq} "
                               f"({rows} row(s) of {plan.gen_seq} tokens)")  # fmt: skip
                break
        else:
            return None
    micro, ckpt, sleep = (cfg.update.micro_batch_size, cfg.model.gradient_checkpointing,
                          cfg.rollout.vllm_sleep)
    sleeps = dict.fromkeys((sleep, bool(plan.vllm_need)))
    for m in range(micro, 0, -1):
        for on in dict.fromkeys((ckpt, True)):
            for asleep in sleeps:
                trial = _replace(cfg, "update", micro_batch_size=m)
                trial = trial and _replace(trial, "model", gradient_checkpointing=on)
                trial = trial and _replace(trial, "rollout", vllm_sleep=asleep)
                if (trial is None or cfg.update.mini_batch_size % (world * m)
                        or not _fits(memory_plan(shape, trial, world, sharded, prompt,
                                                 device).phase("update"), device)):
                    continue
                changes += ["turn on rollout.vllm_sleep"] if asleep != sleep else []
                changes += ["turn on model.gradient_checkpointing"] if on != ckpt else []
                return changes + ([f"lower update.micro_batch_size to {m}"] if m < micro else [])
    return None


def _replace(cfg: TrainConfig, section: str, **values: Any) -> TrainConfig | None:
    """``cfg`` with ``section.field = value`` changed, or None if that config is invalid."""
    try:
        new = dataclasses.replace(getattr(cfg, section), **values)
        return dataclasses.replace(cfg, **{section: new})
    except ValueError:
        return None


def refusal(shape: ModelShape, cfg: TrainConfig, world: int, sharded: bool, prompt_tokens: int,
            device_bytes: int) -> str:  # fmt: skip
    """One paragraph: what does not fit, and the smallest memory-only changes that would fit."""
    plan = memory_plan(shape, cfg, world, sharded, prompt_tokens, device_bytes)
    labels = _labels(plan)
    parts = ", ".join(f"{labels[n]} {format_bytes(getattr(plan, n))}" for n in _top_parts(plan))
    if plan.total > device_bytes:
        text = (f"the run does not fit in memory: the plan needs {format_bytes(plan.total)} per "
                f"device ({plan.peak_phase} phase: {parts}) but the device has "
                f"{format_bytes(device_bytes)}.")  # fmt: skip
    else:
        text = (f"vLLM cannot start: rollout.gpu_memory_utilization="
                f"{plan.vllm_utilization:g} reserves {format_bytes(plan.vllm_pool)}, less than "
                f"its weights and one sequence's KV cache ({format_bytes(plan.vllm_need)}).")
    fsdp = (f"use FSDP (accelerate launch --config_file {FSDP_CONFIG} --num_processes {world} "
            "...; plan it with --sharding fsdp)")  # fmt: skip
    fixes = []
    same = _shrink(shape, cfg, world, sharded, prompt_tokens, device_bytes)
    if same is None and not sharded:
        same = _shrink(shape, cfg, world, True, prompt_tokens, device_bytes)
        same = None if same is None else [fsdp, *same]
    if same is not None:
        fixes.append(" and ".join(same) or "none needed, the plan fits")
    if plan.vllm_need and not cfg.rollout.vllm_sleep and "turn on rollout.vllm_sleep" not in (
            same or []):
        # Sleep mode keeps the engine's share for the rollout and frees it for the update.
        asleep = _replace(cfg, "rollout", vllm_sleep=True)
        alt = None if asleep is None else _shrink(shape, asleep, world, sharded,
                                                  prompt_tokens, device_bytes)
        if alt is not None:
            fixes.append(" and ".join(["turn on rollout.vllm_sleep", *alt]))
    if same is None or any("micro_batch" in c for c in same):  # more processes keep the batch
        for more in range(world + 1, 1025):
            found = _shrink(shape, cfg, more, True, prompt_tokens, device_bytes)
            if found is not None:
                with_fsdp = "" if sharded else " with FSDP"
                fixes.append(" and ".join([f"raise the number of processes to {more}{with_fsdp}",
                                           *found]))  # fmt: skip
                break
    if fixes:
        return f"{text} Fix: {'; or '.join(fixes)}."
    why = "" if plan.peak_phase not in ("rollout", "sync") or not plan.generate_weights else (
        " (under FSDP the HF engine holds a full copy of the weights on every device, "
        "whatever the number of processes)")
    return (f"{text} No change of processes (up to 1024), FSDP, update.micro_batch_size, "
            f"rollout.max_batch_tokens or gradient checkpointing makes it fit{why}: use devices "
            "with more memory (plan for them with --device-memory) or a smaller model.")
