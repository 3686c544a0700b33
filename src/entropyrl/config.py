"""One typed configuration for training, loaded from YAML presets with ``key=value`` overrides.

Every field carries its help text in ``metadata["help"]``; ``entropyrl train --help-config``
prints them. Loading checks every value against its declared type (``Literal`` choices,
numbers, booleans, nested sections) and reports the full dotted field name and the allowed
values on error, as a :class:`~entropyrl.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from entropyrl.advantages import ADVANTAGE_NAMES, AdvantageName
from entropyrl.config_rules import validate
from entropyrl.data_config import DataConfig
from entropyrl.errors import UserError
from entropyrl.losses import LossConfig
from entropyrl.typed_config import field_with_help, from_dict

_f = field_with_help


@dataclass
class ModelConfig:
    """Which model to train and how to hold it."""

    path: str = _f("testbed", "hub id or local directory; 'testbed' = the shipped base model")
    dtype: Literal["float32", "bfloat16", "auto"] = _f(
        "float32", "compute dtype (auto = the checkpoint's own torch_dtype)"
    )
    master_weights: bool = _f(
        True,
        "with a bfloat16 dtype: hold fp32 master weights and fp32 optimizer state and compute "
        "under bf16 autocast (false: step the bf16 weights directly; small updates round away)",
    )
    device: Literal["cpu", "cuda", "auto"] = _f("auto", "device; auto = cuda if available")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass")
    compile: bool = _f(
        False,
        "torch.compile the policy's decoder body (dynamic shapes) for the update and the "
        "scoring forwards; generation stays eager. Pays on long runs only: the first step "
        "compiles (~110 s on the CPU testbed, ~20 s with inductor's cache warm), then the "
        "update and scoring take ~0.85x as long: ~1,100 testbed steps to break even "
        "(docs/scale.md)",
    )
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = _f(
        "default",
        "torch.compile mode with model.compile (the CUDA-graph modes are not offered: "
        "ragged batches would record a graph per shape)",
    )


@dataclass
class RewardConfig:
    """How responses are scored (the task's own verifier, or your function)."""

    fn: str = _f(
        "", "your reward, 'module:function' or 'path/to/file.py:function', called as "
        "f(completions, prompts, **columns) -> list[float] (TRL's signature); replaces the "
        "task's verifier"
    )
    solved_at: float = _f(
        1.0, "a response counts as solved (train/acc, val/acc) when its score is at least "
        "this, unless the reward returns 'solved' itself"
    )
    workers: int = _f(2, "reward worker processes (math verifier, reward.fn)")
    timeout_s: float = _f(5.0, "hard time limit per response; a timeout scores 0")
    overlong_buffer: int = _f(0, "DAPO overlong penalty buffer in tokens (0 = off)")
    overlong_factor: float = _f(1.0, "DAPO overlong penalty factor")


@dataclass
class RolloutConfig:
    """Sampling of responses."""

    n_prompts: int = _f(32, "prompts per rollout step")
    group_size: int = _f(8, "responses sampled per prompt (G)")
    temperature: float = _f(1.0, "sampling temperature (also used for log-probs and entropy)")
    top_p: float = _f(1.0, "nucleus sampling threshold")
    max_new_tokens: int = _f(48, "maximum response length in tokens")
    dynamic_sampling: bool = _f(
        False, "drop prompt groups whose rewards are all equal and refill (DAPO)"
    )
    max_gen_batches: int = _f(4, "generation rounds allowed per step with dynamic sampling")
    engine: Literal["hf", "vllm"] = _f(
        "hf",
        "rollout engine: hf (Hugging Face generate) or vllm (a vllm.LLM colocated in the "
        "training process, synced after every step; pip install vllm)",
    )
    gpu_memory_utilization: float = _f(
        0.3,
        "vllm: share of the device's memory the engine reserves for weights and KV cache (on "
        "vLLM's CPU backend: of host memory, counting the whole training process; 0.1 is "
        "enough for the testbed)",
    )
    max_model_len: int = _f(
        0, "vllm: longest prompt + response the engine serves (0 = the model's own limit)"
    )
    vllm_sleep: bool = _f(
        False,
        "vllm: free the KV cache and offload the weights to host memory between rollouts, "
        "giving that memory to the update (vLLM sleep mode; GPU only, ignored on CPU)",
    )
    max_batch_tokens: int = _f(
        65536,
        "generate in chunks of at most this many sequence tokens (rows x (prompt + "
        "max_new_tokens)); bounds the KV cache of one generate call",
    )


@dataclass
class AlgorithmConfig:
    """Advantage estimation."""

    advantage: Literal[AdvantageName, "prime"] = _f(
        "grpo",
        f"advantage estimator: one of {list(ADVANTAGE_NAMES)}, or 'prime' (implicit process "
        "rewards of a trained PRM plus outcome rewards, leave-one-out baselines; see prime.*)",
    )
    gamma: float = _f(1.0, "discount of REINFORCE++ and PRIME returns")


@dataclass
class PrimeConfig:
    """PRIME's implicit process reward model (used when ``algorithm.advantage = prime``)."""

    beta: float = _f(0.05, "scale β of the implicit reward β·log(π_prm/π_ref)")
    lr: float = _f(1e-6, "learning rate of the PRM (AdamW, betas and eps of optim.*)")
    update: Literal["before", "after", "none"] = _f(
        "before",
        "when the PRM learns from a step's outcome labels: 'before' its rewards are computed "
        "(PRIME's default), 'after', or 'none' (a frozen PRM)",
    )


@dataclass
class UpdateConfig:
    """How a rollout batch is turned into optimizer updates."""

    mini_batch_size: int = _f(64, "responses per optimizer update (updates/step = batch/this)")
    micro_batch_size: int = _f(64, "responses per forward/backward (gradient accumulation)")
    epochs: int = _f(1, "passes over the rollout batch")
    shuffle: bool = _f(True, "shuffle responses before cutting mini-batches")
    selection_logprobs: Literal["current", "old"] = _f(
        "current",
        "log-probs scored by Clip-Cov/KL-Cov: 'current' = no-grad forward with the current "
        "parameters before each mini-batch (the paper's definition); 'old' = rollout-time "
        "log-probs (free, equal at the first update)",
    )
    fuse_scoring: bool = _f(
        True,
        "take log π_old and the rollout entropy of the first mini-batch's rows from the first "
        "update's own forward, and a one-micro-batch mini-batch's Clip-Cov/KL-Cov selection "
        "from its forward, instead of separate no-grad passes (same values, fewer forwards; "
        "with one update per batch no scoring pass is left)",
    )


@dataclass
class OptimConfig:
    """AdamW with a constant (optionally warmed-up) learning rate."""

    lr: float = _f(1e-4, "learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.999, "AdamW beta2")
    eps: float = _f(1e-8, "AdamW epsilon")
    grad_clip: float = _f(1.0, "max gradient norm (0 disables clipping)")
    warmup_steps: int = _f(0, "linear warm-up in optimizer updates")


@dataclass
class EvalConfig:
    """Validation on the held-out prompts."""

    every: int = _f(5, "validate every this many steps (0 disables; also at the first and last)")
    acc: Literal["greedy", "sampled"] = _f(
        "greedy",
        "what val/acc (the law's R) reports: greedy accuracy, or avg@k at eval.temperature",
    )
    k: int = _f(4, "samples per prompt for avg@k and pass@k")
    temperature: float = _f(0.6, "temperature of the avg@k samples")
    max_new_tokens: int = _f(48, "maximum response length")
    entropy_samples: int = _f(
        1,
        "samples per prompt whose token entropies val/entropy scores (a forward over the "
        "responses; 0 = all k): 1 costs 1/k of scoring all and estimates the same mean",
    )


@dataclass
class DynamicsConfig:
    """Entropy-dynamics diagnostics (docs/dynamics.md)."""

    entropy_after_fraction: float = _f(
        0.25,
        "share of each prompt group's responses re-scored after the update to measure the "
        "same-batch ΔH (dyn/delta_entropy): round(fraction x group_size), at least 1, drawn "
        "at random each step; 1 = the whole batch (docs/dynamics.md: the estimator's spread)",
    )


@dataclass
class ControlConfig:
    """Closed-loop entropy control (off unless ``kind`` is set); docs/control.md."""

    kind: Literal["none", "pi", "predictive", "skywork"] = _f(
        "none", "controller: none (off), pi (proportional-integral, log space), predictive "
        "(from the step's token covariances, clip_cov_ratio or kl_cov_ratio) or skywork"
    )
    actuator: Literal["clip_cov_ratio", "kl_cov_coef", "kl_cov_ratio", "eps_low",
                      "entropy_coef"] = _f("clip_cov_ratio", "what the controller sets")
    target_entropy: float = _f(0.1, "target token-mean entropy H* in nats (schedule start)")
    schedule: Literal["constant", "linear", "cosine", "exponential"] = _f(
        "constant", "target over the run: constant, or an anneal to schedule_end"
    )
    schedule_end: float = _f(0.1, "target at the end of the anneal")
    schedule_steps: int = _f(0, "anneal length in steps (0 = the whole run)")
    approach_steps: int = _f(
        10, "steps over which the controller's reference eases from the first measured "
        "entropy to the target (0 = steer to the target from step 1)"
    )
    kp: float = _f(1.0, "PI proportional gain (log-space per unit relative error)")
    ki: float = _f(0.3, "PI integral gain")
    min_value: float = _f(1e-5, "lower bound of the actuator")
    max_value: float = _f(1.0, "upper bound of the actuator")
    delta: float = _f(1e-3, "skywork: step of the actuator per rollout step")
    assist: Literal["none", "entropy_coef"] = _f(
        "none", "second actuator for what the first cannot reach: entropy_coef adds an "
        "entropy bonus (or penalty) while the actuator sits at a bound (docs/control.md)"
    )
    assist_gain: float = _f(0.0025, "assist: change of the entropy coefficient per unit "
                            "relative error per step (the most it grows in one step)")
    assist_limit: float = _f(
        0.01, "assist: largest |entropy coefficient| it adds; keep it below the bonus at which "
        "the entropy explodes (paper, 7B: 0.01; testbed: ~0.2)"
    )


@dataclass
class TrainConfig:
    """A training run."""

    name: str = _f("run", "run name, shown in logs and reports")
    seed: int = _f(0, "training seed (sampling, shuffling, selection)")
    steps: int = _f(100, "rollout steps")
    model: ModelConfig = _f(ModelConfig(), "model")
    data: DataConfig = _f(DataConfig(), "data")
    rollout: RolloutConfig = _f(RolloutConfig(), "sampling")
    reward: RewardConfig = _f(RewardConfig(), "reward")
    algorithm: AlgorithmConfig = _f(AlgorithmConfig(), "advantages")
    loss: LossConfig = _f(LossConfig(), "policy loss, entropy bonus, reference KL")
    update: UpdateConfig = _f(UpdateConfig(), "mini/micro-batching")
    optim: OptimConfig = _f(OptimConfig(), "optimizer")
    eval: EvalConfig = _f(EvalConfig(), "validation")
    dynamics: DynamicsConfig = _f(DynamicsConfig(), "entropy-dynamics diagnostics")
    control: ControlConfig = _f(ControlConfig(), "closed-loop entropy control")
    prime: PrimeConfig = _f(PrimeConfig(), "PRIME's implicit process reward model")
    checkpoint_every: int = _f(0, "save a checkpoint every this many steps (0 = only at the end)")
    keep_checkpoints: int = _f(2, "checkpoints kept on disk (older ones are deleted)")
    sinks: list[str] = _f([], "extra metric sinks: tensorboard, wandb, mlflow")
    progress: bool = _f(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


# ----------------------------------------------------------------------------- loading

PRESET_DIR = Path(__file__).parent / "configs"


def preset_names() -> list[str]:
    """Names of the shipped presets, e.g. ``testbed/grpo``."""
    files = PRESET_DIR.rglob("*.yaml")
    return sorted(str(p.relative_to(PRESET_DIR).with_suffix("")) for p in files)


def resolve_preset(name_or_path: str) -> Path:
    """A shipped preset name (``testbed/kl_cov``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise UserError(
        f"config {name_or_path!r} is neither a YAML file nor a shipped preset. "
        f"Shipped presets: {', '.join(preset_names())}."
    )


def load_config(preset: str | None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Build a :class:`TrainConfig` from a preset (or defaults) and ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if preset is not None:
        path = resolve_preset(preset)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"cannot read config {path}: it is not UTF-8 text. Pass a YAML "
                            "file (or a shipped preset name, see --list-presets).") from None
        except (OSError, yaml.YAMLError) as err:
            raise UserError(f"cannot read config {path}: {err}. Fix the YAML syntax.") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"config {path}: expected a mapping of fields at the top level")
        data = loaded or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise UserError(
                f"override {item!r}: the value {raw!r} is not valid YAML. Quote text, close "
                "brackets: e.g. data.testbed.ops=[add,sub] or name='my run'."
            ) from None
        _set_dotted(data, key.strip(), value)
    return from_dict(TrainConfig, data)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML/JSON dumps and checkpoints)."""
    return dataclasses.asdict(cfg)


def describe_fields(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) of every leaf field, for ``--help-config``."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()  # type: ignore[operator]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp, prefix + f.name + "."))  # type: ignore[arg-type]
        else:
            rows.append((prefix + f.name, repr(default), f.metadata.get("help", "")))
    return rows
