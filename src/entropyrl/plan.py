"""Per-device memory plan of a training run, computed from the architecture without any weights.

``entropyrl train --dry-run`` uses it to tell, before any download, whether a run fits (and,
when it does not, :mod:`entropyrl.plan_fix` finds the changes that would make it fit). All
sizes are bytes per device (per process); everything is an *estimate* (docs/plan.md lists the
formulas and assumptions). Legend: ``P`` parameters, ``L`` layers, ``h`` hidden size, ``i``
MLP intermediate size, ``V`` vocabulary, ``c`` bytes of the compute dtype, ``s`` bytes of the
stored (master) weights, ``W`` processes the state is sharded over (1 without FSDP).

The phases of a step never overlap; the plan's peak is the largest (:data:`PHASES`):

- **rollout**: model state + the engine's weights + the KV cache of one generation chunk;
- **sync** (FSDP only): model state + the engine's copy + one gathered full parameter;
- **update**: model state + activations and logits of one micro-batch.

With ``rollout.engine: vllm`` the engine's weights and KV cache are the memory vLLM reserves,
``rollout.gpu_memory_utilization`` of the device, held in every phase unless
``rollout.vllm_sleep`` releases it during the update; it must hold at least the engine's
weights and the KV cache of one sequence.
"""

from __future__ import annotations

import dataclasses
import math
import re

from entropyrl.config import TrainConfig
from entropyrl.errors import UserError
from entropyrl.model_shape import (  # re-exported: the plan's inputs
    ITEMSIZE,
    KNOWN_SHAPES,
    ModelShape,
    kv_bytes_per_token,
    layer_activation_bytes,
    layer_param_count,
    load_shape,
    param_count,
    root_param_count,
    shape_from_config,
)

GIB = 2**30
MARGIN = 0.10  # relative margin on the estimate
OVERHEAD = 2 * GIB  # CUDA context, NCCL buffers, allocator fragmentation
LOGIT_CHUNK_TOKENS = 4096  # rows of one fp32 [rows, V] logits chunk of the log-prob path


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of each part, and what they were computed for (see :data:`PHASES`).

    Model state: ``weights``, ``grads`` (still allocated from the last update while the next
    rollout runs), ``optimizer`` (``P·s/W``, ``P·s/W``, ``2·P·s/W``), ``reference`` (``P·c/W``),
    ``ddp_buckets`` (DDP's flat copy of the gradients, ``P·s``). Rollout: ``generate_weights``
    (under FSDP the HF engine's full copy, ``P·c``), ``kv_cache``, ``generate_work``. Sync:
    ``sync_state`` (the one full parameter at a time that refreshes that copy: the
    largest, the ``V·h`` embedding, in ``s``). Update: ``autocast_weights`` (the ``c``
    casts of fp32 master weights that autocast saves for backward, unsharded),
    ``fsdp_units`` (unsharded parameters and gradients of the root and two layers),
    ``activations``, ``logits``. vLLM: ``vllm_pool`` (rollout and sync: what the engine
    reserves), ``vllm_update`` (the same during the update, 0 with sleep mode), and
    ``vllm_need`` (not a part: the engine's weights + one sequence's KV cache, which the pool
    must hold).
    """

    weights: int
    grads: int
    optimizer: int
    reference: int
    ddp_buckets: int
    generate_weights: int
    kv_cache: int
    generate_work: int
    sync_state: int
    autocast_weights: int
    fsdp_units: int
    activations: int
    logits: int
    vllm_pool: int
    vllm_update: int
    params: int
    world: int
    sharded: bool
    compute_dtype: str
    state_dtype: str
    engine_dtype: str  # what generate runs in: the FSDP copy's dtype, or the module's own
    checkpointing: bool
    full_logits: bool  # a wrapped model (DDP, FSDP) scores through its forward: [B, T, V]
    micro_tokens: int  # rows x (prompt + max_new_tokens) of one micro-batch
    gen_rows: int  # rows of one generation chunk
    gen_seq: int  # prompt + max_new_tokens of a generated row
    vocab: int
    vllm_need: int = 0
    vllm_utilization: float = 0.0

    @property
    def engine_fits(self) -> bool:
        """Whether vLLM's pool holds its weights and one sequence (always, with HF)."""
        return self.vllm_pool >= self.vllm_need

    def phase(self, name: str) -> int:
        """Sum of the parts live in phase ``name`` (a key of :data:`PHASES`)."""
        return sum(getattr(self, part) for part in PHASES[name])

    @property
    def peak_phase(self) -> str:
        """The phase that needs the most memory."""
        return max(PHASES, key=self.phase)

    @property
    def total(self) -> int:
        """The largest phase with the margin and the framework overhead: ``max·1.1 + 2 GiB``."""
        return _with_margin(self.phase(self.peak_phase))


_STATE = ("weights", "grads", "optimizer", "reference", "ddp_buckets")
# The phases of a step never overlap; the plan's peak is the largest.
PHASES: dict[str, tuple[str, ...]] = {
    "rollout": (*_STATE, "generate_weights", "kv_cache", "generate_work", "vllm_pool"),
    "sync": (*_STATE, "generate_weights", "sync_state", "vllm_pool"),
    "update": (*_STATE, "autocast_weights", "fsdp_units", "activations", "logits",
               "vllm_update"),
}


def _with_margin(nbytes: int) -> int:
    return math.ceil(nbytes * (1 + MARGIN)) + OVERHEAD


def memory_plan(
    shape: ModelShape, cfg: TrainConfig, world: int, sharded: bool, prompt_tokens: int,
    device_bytes: int = 0,
) -> MemoryPlan:
    """Per-device memory of ``cfg`` on ``world`` processes (FSDP full sharding if ``sharded``).

    The compute dtype ``c`` is ``model.dtype`` (``auto``: the checkpoint's). With a 16-bit
    compute dtype and ``model.master_weights`` the weights, gradients and AdamW state are fp32
    (``s = 4``), else ``s = c``. A micro-batch has ``update.micro_batch_size`` rows of
    ``T = prompt_tokens + rollout.max_new_tokens`` tokens; its activations are, per token,
    ``L·c·h + layer`` with gradient checkpointing (one saved hidden state per layer, one layer
    recomputed) or ``L·layer`` without (``layer`` = :func:`layer_activation_bytes`), plus the
    final norm and the hidden-state gradient (``4h + 2·c·h``). Logits: a wrapped model (DDP or
    FSDP) is scored through its own forward, so ``[B, T, V]`` logits and then their gradient
    (``2·B·T·V·c``) exist; one process unsharded computes them from hidden states in chunks
    (one fp32 chunk of ``min(B·T, 4096)`` rows counted). A generation chunk has
    ``max(1, ⌊rollout.max_batch_tokens / T_gen⌋)`` rows of ``T_gen = prompt_tokens +
    max(rollout.max_new_tokens, eval.max_new_tokens)`` tokens (:func:`kv_bytes_per_token`
    each, in the engine's dtype), plus the prefill of one layer and fp32 sampling buffers.
    With ``rollout.engine: vllm`` those three are replaced by vLLM's reservation,
    ``gpu_memory_utilization·device_bytes`` (so ``device_bytes`` is required), whose
    minimum is the engine's weights (``P·c``) and the KV cache of one ``T_gen`` sequence.
    """
    if world < 1 or prompt_tokens < 1:
        raise ValueError(f"expected world, prompt_tokens >= 1, got {world}, {prompt_tokens}")
    vllm = cfg.rollout.engine == "vllm"
    if vllm and device_bytes <= 0:
        raise ValueError("memory_plan: rollout.engine=vllm reserves a share of the device: "
                         "pass device_bytes")
    compute = shape.dtype if cfg.model.dtype == "auto" else cfg.model.dtype
    c = ITEMSIZE[compute]
    master = c == 2 and cfg.model.master_weights
    s = 4 if master else c
    e = c if sharded else s  # unsharded, generate runs on the module's own weights
    shards = world if sharded else 1
    p, h, v = param_count(shape), shape.hidden, shape.vocab
    grads = math.ceil(p * s / shards)
    layer = layer_activation_bytes(shape, c)
    ckpt = cfg.model.gradient_checkpointing
    micro_tokens = cfg.update.micro_batch_size * (prompt_tokens + cfg.rollout.max_new_tokens)
    per_token = shape.layers * c * h + layer if ckpt else shape.layers * layer
    per_token += 4 * h + 2 * c * h
    full_logits = sharded or world > 1
    new = max(cfg.rollout.max_new_tokens, cfg.eval.max_new_tokens if cfg.eval.every else 0)
    gen_seq = prompt_tokens + new
    rows = max(1, cfg.rollout.max_batch_tokens // gen_seq)
    hf = not vllm
    pool = math.floor(cfg.rollout.gpu_memory_utilization * device_bytes) if vllm else 0
    return MemoryPlan(
        weights=grads,
        grads=grads,
        optimizer=2 * grads,
        reference=math.ceil(p * c / shards) if cfg.loss.ref_kl_coef > 0 else 0,
        ddp_buckets=grads if world > 1 and not sharded else 0,
        generate_weights=p * c if sharded and hf else 0,
        kv_cache=rows * gen_seq * kv_bytes_per_token(shape, e) if hf else 0,
        # prefill of one layer (no grad: freed layer by layer) + fp32 logits, probs, sort
        generate_work=rows * prompt_tokens * layer_activation_bytes(shape, e) + rows * v * 16
        if hf else 0,
        # distributed.full_parameters: one gathered parameter at a time; the embedding is
        # the largest
        sync_state=v * h * s if sharded else 0,
        autocast_weights=p * c if master and not sharded else 0,
        fsdp_units=2 * c * (root_param_count(shape) + 2 * layer_param_count(shape))
        if sharded else 0,
        activations=micro_tokens * per_token,
        logits=2 * micro_tokens * v * c if full_logits
        else min(micro_tokens, LOGIT_CHUNK_TOKENS) * v * 4,
        vllm_pool=pool,
        vllm_update=0 if cfg.rollout.vllm_sleep else pool,
        params=p, world=world, sharded=sharded, compute_dtype=compute,
        state_dtype="float32" if s == 4 else compute, engine_dtype="float32" if e == 4 else compute,
        checkpointing=ckpt, full_logits=full_logits, micro_tokens=micro_tokens, gen_rows=rows,
        gen_seq=gen_seq, vocab=v,
        vllm_need=p * c + gen_seq * kv_bytes_per_token(shape, c) if vllm else 0,
        vllm_utilization=cfg.rollout.gpu_memory_utilization if vllm else 0.0,
    )  # fmt: skip


# ----------------------------------------------------------------------------- output


def format_bytes(nbytes: int) -> str:
    """``12.34 GiB`` (or MiB / KiB below a GiB / MiB)."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


def _labels(plan: MemoryPlan) -> dict[str, str]:
    s, c, e = (_short(d) for d in (plan.state_dtype, plan.compute_dtype, plan.engine_dtype))
    part = f", 1/{plan.world}" if plan.sharded else ""
    ckpt = "checkpointed" if plan.checkpointing else "no checkpointing"
    logits = (f"logits + their gradient ({plan.micro_tokens} x {plan.vocab}, {c})"
              if plan.full_logits else
              f"logits chunk ({min(plan.micro_tokens, LOGIT_CHUNK_TOKENS)} x {plan.vocab}, fp32)")
    return {
        "weights": f"weights ({s}{part})",
        "grads": f"gradients ({s}{part})",
        "optimizer": f"AdamW state (2 x {s}{part})",
        "reference": f"reference model ({c}{part})",
        "ddp_buckets": f"DDP gradient buckets ({s})",
        "generate_weights": f"full weights for generate ({c}, gathered)",
        "kv_cache": f"KV cache ({plan.gen_rows} rows x {plan.gen_seq} tokens, {e})",
        "generate_work": "generate working set",
        "sync_state": f"largest full parameter for the sync ({s})",
        "autocast_weights": f"autocast weight copies ({c})",
        "fsdp_units": f"FSDP unsharded units ({c} params + grads)",
        "activations": f"activations ({plan.micro_tokens} tokens, {ckpt})",
        "logits": logits,
        "vllm_pool": f"vLLM's reservation ({plan.vllm_utilization:g} of the device)",
        "vllm_update": "vLLM's reservation, kept during the update (no vllm_sleep)",
    }  # fmt: skip


def _top_parts(plan: MemoryPlan, n: int = 3) -> list[str]:
    """The ``n`` biggest nonzero parts of the peak phase."""
    parts = sorted(PHASES[plan.peak_phase], key=lambda part: -getattr(plan, part))
    return [part for part in parts[:n] if getattr(plan, part)]


def format_plan(plan: MemoryPlan, device_bytes: int) -> str:
    """The plan as an aligned text table: one row per part, a column per phase, the verdict."""
    labels = _labels(plan)
    phases = [name for name in PHASES if name != "sync" or plan.sync_state]
    names = [n for n in dict.fromkeys(n for ph in phases for n in PHASES[ph]) if getattr(plan, n)]
    rows = [[labels[n], *(format_bytes(getattr(plan, n)) if n in PHASES[ph] else "-"
                          for ph in phases)] for n in names]  # fmt: skip
    rows.append(["sum", *(format_bytes(plan.phase(ph)) for ph in phases)])
    width = max(len(r[0]) for r in rows)
    count = f"{plan.params / 1e9:.2f} B" if plan.params >= 1e8 else f"{plan.params / 1e6:.2f} M"
    shard = f"FSDP over {plan.world}" if plan.sharded else f"not sharded, {plan.world} process(es)"
    lines = [
        f"Memory plan per device (an estimate, see docs/plan.md): {count} parameters, "
        f"{shard}, compute {plan.compute_dtype}, weights {plan.state_dtype}",
        f"{'part':<{width}}" + "".join(f"  {ph:>10}" for ph in phases),
    ]
    lines += [f"{r[0]:<{width}}" + "".join(f"  {x:>10}" for x in r[1:]) for r in rows]
    verdict = "fits" if plan.total <= device_bytes and plan.engine_fits else "DOES NOT FIT"
    if plan.vllm_need:
        lines.append(f"vLLM needs {format_bytes(plan.vllm_need)} of its reservation for its "
                     f"weights ({_short(plan.compute_dtype)}) and one sequence's KV cache: "
                     + ("held" if plan.engine_fits else "NOT HELD"))
    lines.append(
        f"total = largest phase ({plan.peak_phase}) x {1 + MARGIN:g} + {OVERHEAD // GIB} GiB "
        f"overhead: {format_bytes(plan.total)} of {format_bytes(device_bytes)} per device: "
        f"{verdict} (headroom {format_bytes(max(device_bytes - plan.total, 0))})"
    )
    return "\n".join(lines)


def plan_summary(plan: MemoryPlan, device_bytes: int) -> str:
    """One line: total vs device, the peak phase and its three biggest parts."""
    labels = _labels(plan)
    parts = ", ".join(f"{labels[n].split(' (')[0]} {getattr(plan, n) / GIB:.1f}"
                      for n in _top_parts(plan))  # fmt: skip
    return (f"{plan.total / GIB:.1f} of {device_bytes / GIB:.0f} GiB per device "
            f"(peak: {plan.peak_phase}; {parts} GiB)")  # fmt: skip


def _short(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)


# ----------------------------------------------------------------------------- checks


def check_world(cfg: TrainConfig, world: int) -> None:
    """The batch sizes must split evenly over the ranks (the trainer's rule, and the plan's)."""
    if cfg.rollout.n_prompts % world:
        raise UserError(f"rollout.n_prompts ({cfg.rollout.n_prompts}) must be divisible by "
                        f"the number of processes ({world}).")  # fmt: skip
    if cfg.update.mini_batch_size % (world * cfg.update.micro_batch_size):
        raise UserError(
            f"update.mini_batch_size ({cfg.update.mini_batch_size}) must be divisible by "
            f"processes x update.micro_batch_size ({world} x {cfg.update.micro_batch_size})."
        )


# ----------------------------------------------------------------------------- inputs


def parse_memory(text: str) -> int:
    """Bytes of a size like ``80GiB``, ``80GB``, ``141 GiB`` or ``80`` (GiB)."""
    units = {"": GIB, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20,
             "gb": 10**9, "gib": GIB, "tb": 10**12, "tib": 2**40}  # fmt: skip
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match[2].lower() not in units or float(match[1]) <= 0:
        raise UserError(f"--device-memory: expected a size like 80GiB, 80GB or '141 GiB' (a bare "
                        f"number is GiB), got {text!r}.")  # fmt: skip
    return int(float(match[1]) * units[match[2].lower()])


__all__ = [
    "KNOWN_SHAPES",
    "MemoryPlan",
    "ModelShape",
    "check_world",
    "format_plan",
    "kv_bytes_per_token",
    "layer_activation_bytes",
    "layer_param_count",
    "load_shape",
    "memory_plan",
    "param_count",
    "parse_memory",
    "plan_summary",
    "root_param_count",
    "shape_from_config",
]
