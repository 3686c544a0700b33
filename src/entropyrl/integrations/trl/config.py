"""``EntropyGRPOConfig``: TRL's ``GRPOConfig`` plus the fields of the entropy plug-in.

Units are fractions everywhere (``clip_cov_ratio = 2e-4`` is 0.02% of the tokens), with the
paper's defaults. :func:`loss_config` turns a config into entropyrl's
:class:`~entropyrl.losses.LossConfig`; :data:`AGGREGATION` maps TRL's ``loss_type`` to our
aggregation modes (docs/trl.md explains each line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from entropyrl import control
from entropyrl._checks import check_choice
from entropyrl.config import ControlConfig
from entropyrl.losses import ClipCovConfig, KLCovConfig, LossConfig, PPOClip

ENTROPY_LOSSES = ("none", "clip_cov", "kl_cov")
SELECTION_SCOPES = ("generation_batch", "micro_batch")
PLUGIN_CONTROLLERS = ("none", "pi", "skywork")

# TRL loss_type -> entropyrl aggregation mode (the per-token PPO surrogate is the same for all).
AGGREGATION: dict[str, str] = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dapo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
}


def _f(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class EntropyGRPOConfig(GRPOConfig):
    """``GRPOConfig`` with Clip-Cov / KL-Cov, global token selection, diagnostics and control.

    The policy loss is always entropyrl's: ``entropy_loss="none"`` is the PPO-clip surrogate
    with TRL's ``epsilon``/``epsilon_high`` (the same values as TRL's own GRPO loss).
    """

    entropy_loss: str = _f("none", "per-token loss: none (PPO clip), clip_cov or kl_cov")
    clip_cov_ratio: float = _f(2e-4, "Clip-Cov: fraction r of the tokens detached")
    clip_cov_low: float = _f(1.0, "Clip-Cov: lower covariance bound ω_low")
    clip_cov_high: float = _f(5.0, "Clip-Cov: upper covariance bound ω_high")
    clip_cov_epsilon: float = _f(1.0, "Clip-Cov: the PPO clip ε it keeps (reference: 1)")
    kl_cov_ratio: float = _f(2e-3, "KL-Cov: fraction k of the tokens penalised")
    kl_cov_beta: float = _f(1.0, "KL-Cov: coefficient β of |log π − log π_old|")
    selection_scope: str = _f(
        "generation_batch",
        "tokens Clip-Cov/KL-Cov select among: generation_batch (global over all chunks and "
        "ranks, split-independent) or micro_batch (per chunk and rank, as public code does)",
    )
    entropy_diagnostics: bool = _f(True, "log the dyn/* covariance diagnostics per generation")
    control_kind: str = _f("none", "entropy controller: none, pi or skywork")
    control_actuator: str = _f(
        "clip_cov_ratio",
        "what the controller sets: clip_cov_ratio, kl_cov_coef, kl_cov_ratio, eps_low, "
        "entropy_coef",
    )
    control_target_entropy: float = _f(0.1, "target token-mean entropy H* (nats)")
    control_schedule: str = _f("constant", "target schedule: constant, linear, cosine, "
                               "exponential")
    control_schedule_end: float = _f(0.1, "target at the end of the anneal")
    control_schedule_steps: int = _f(0, "anneal length in generation batches (0 = the run)")
    control_approach_steps: int = _f(
        10, "generation batches over which the controller's reference eases from the first "
        "measured entropy to the target (0 = steer to the target at once)")
    control_kp: float = _f(1.0, "PI proportional gain")
    control_ki: float = _f(0.3, "PI integral gain")
    control_min_value: float = _f(1e-5, "lower bound of the actuator")
    control_max_value: float = _f(1.0, "upper bound of the actuator")
    control_delta: float = _f(1e-3, "skywork: actuator step per generation batch")
    control_assist: str = _f(
        "none", "second actuator while the first is pinned at a bound: none or entropy_coef "
        "(an entropy bonus or penalty added to entropy_coef)")
    control_assist_gain: float = _f(0.0025, "assist: change of its coefficient per unit "
                                    "relative error per generation batch")
    control_assist_limit: float = _f(0.01, "assist: largest |coefficient| it adds (below the "
                                     "bonus at which the entropy explodes)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("entropy_loss", self.entropy_loss, ENTROPY_LOSSES)
        check_choice("selection_scope", self.selection_scope, SELECTION_SCOPES)
        if self.control_kind == "predictive":
            raise ValueError(
                "control_kind: the predictive controller needs the same-batch entropy change, "
                "which the TRL plug-in does not measure; use pi or skywork"
            )
        check_choice("control_kind", self.control_kind, PLUGIN_CONTROLLERS)
        check_choice("control_actuator", self.control_actuator, control.ACTUATORS)
        check_choice("control_schedule", self.control_schedule, control.SCHEDULE_KINDS)
        check_choice("control_assist", self.control_assist, control.ASSISTS)
        control.check_assist(self.control_assist, self.control_actuator,
                             self.control_assist_gain, self.control_assist_limit, "control_")
        check_unsupported(self)
        try:
            loss_config(self)
        except ValueError as err:
            raise ValueError(f"EntropyGRPOConfig: {err}") from None


def check_unsupported(args: Any) -> None:
    """Reject the ``GRPOConfig`` options whose loss the plug-in does not reproduce."""
    check_choice("loss_type", args.loss_type, tuple(AGGREGATION))
    rules = [
        (args.importance_sampling_level != "token", "importance_sampling_level",
         "set it to 'token' (sequence-level ratios are not supported)"),
        (args.delta is not None, "delta", "set it to None (two-sided clipping is not supported)"),
        (args.top_entropy_quantile < 1.0, "top_entropy_quantile", "set it to 1.0"),
        (args.off_policy_mask_threshold is not None, "off_policy_mask_threshold",
         "set it to None"),
        (args.use_adaptive_entropy, "use_adaptive_entropy",
         "use control_kind='skywork' with control_actuator='entropy_coef' instead"),
        (args.beta != 0 and args.use_bias_correction_kl, "use_bias_correction_kl",
         "set it to False"),
        (args.use_vllm and args.vllm_importance_sampling_correction,
         "vllm_importance_sampling_correction", "set it to False"),
    ]
    for bad, name, fix in rules:
        if bad:
            raise ValueError(f"{name}: not supported by EntropyGRPOTrainer; {fix}")


def loss_config(args: Any) -> LossConfig:
    """The entropyrl loss definition for a (validated) ``EntropyGRPOConfig``."""
    eps_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    name = {"none": "ppo", "clip_cov": "clip_cov", "kl_cov": "kl_cov"}[args.entropy_loss]
    eps = args.clip_cov_epsilon
    return LossConfig(
        name=name,  # type: ignore[arg-type]
        clip=PPOClip(eps_low=args.epsilon, eps_high=eps_high),
        clip_cov=ClipCovConfig(ratio=args.clip_cov_ratio, cov_low=args.clip_cov_low,
                               cov_high=args.clip_cov_high,
                               clip=PPOClip(eps_low=eps, eps_high=eps)),
        kl_cov=KLCovConfig(ratio=args.kl_cov_ratio, beta=args.kl_cov_beta),
        aggregation=AGGREGATION[args.loss_type],  # type: ignore[arg-type]
        entropy_coef=args.entropy_coef,
        ref_kl_coef=args.beta,
        ref_kl_estimator="k3",
    )


def control_config(args: Any) -> ControlConfig:
    """The ``control_*`` fields of an ``EntropyGRPOConfig`` as entropyrl's control section."""
    return ControlConfig(
        kind=args.control_kind, actuator=args.control_actuator,
        target_entropy=args.control_target_entropy, schedule=args.control_schedule,
        schedule_end=args.control_schedule_end, schedule_steps=args.control_schedule_steps,
        approach_steps=args.control_approach_steps,
        kp=args.control_kp, ki=args.control_ki, min_value=args.control_min_value,
        max_value=args.control_max_value, delta=args.control_delta,
        assist=args.control_assist, assist_gain=args.control_assist_gain,
        assist_limit=args.control_assist_limit,
    )
