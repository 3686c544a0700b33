"""Per-token policy losses, one registry, and the objective the trainer minimises.

Losses (``LossName``): ``ppo`` (clip / clip-higher / dual-clip), ``pg`` (plain on-policy policy
gradient), ``clip_cov`` and ``kl_cov`` (Cui et al. 2025). Each returns unreduced per-token
values plus diagnostics; :func:`compute_objective` adds the optional entropy bonus and
reference KL and reduces with one of the aggregation modes. Importing this package has no side
effects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import torch

from entropyrl._checks import check_choice, check_positive
from entropyrl.losses.aggregation import (
    AGGREGATION_MODES,
    AggregationMode,
    Denominators,
    aggregate,
    masked_mean,
)
from entropyrl.losses.base import PolicyLoss
from entropyrl.losses.clip_cov import ClipCovConfig, clip_cov_loss
from entropyrl.losses.kl_cov import KLCovConfig, kl_cov_loss
from entropyrl.losses.ppo import PPOClip, pg_loss, ppo_loss
from entropyrl.losses.terms import (
    KL_ESTIMATORS,
    KLEstimator,
    entropy_bonus,
    reference_kl,
    truncated_is_weights,
)

LossName = Literal["ppo", "pg", "clip_cov", "kl_cov"]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)

__all__ = [
    "AGGREGATION_MODES",
    "LOSS_NAMES",
    "POLICY_LOSSES",
    "AggregationMode",
    "ClipCovConfig",
    "Denominators",
    "KLCovConfig",
    "LossConfig",
    "LossName",
    "Objective",
    "PPOClip",
    "PolicyLoss",
    "aggregate",
    "clip_cov_loss",
    "compute_objective",
    "entropy_bonus",
    "kl_cov_loss",
    "pg_loss",
    "ppo_loss",
    "reference_kl",
    "truncated_is_weights",
]


@dataclass(frozen=True)
class LossConfig:
    """Everything that defines the training objective.

    Attributes:
        name: policy loss, one of :data:`LOSS_NAMES`.
        clip: PPO clip of ``ppo`` (ε_low, ε_high — clip-higher uses ε_high = 0.28 — and the
            optional dual clip). Clip-Cov uses ``clip_cov.clip`` instead (ε = 1 by default).
        clip_cov: Clip-Cov hyper-parameters (r = 2e-4, ω = (1, 5)).
        kl_cov: KL-Cov hyper-parameters (k = 2e-3, β = 1).
        aggregation: reduction mode (``token-mean``, the paper's choice).
        entropy_coef: α of the entropy bonus ``−α·H`` (0 disables; needs per-token entropy). A
            negative α penalises entropy instead (entropy minimisation); the entropy
            controller's assist (docs/control.md) sets either sign.
        ref_kl_coef: β of the reference-policy KL (0 disables; needs reference log-probs).
        ref_kl_estimator: ``k1``, ``k2`` or ``k3``.
        tis_cap: truncation ``C`` of the truncated importance-sampling weight
            ``min(π_old/π_sampler, C)`` on each token's policy loss (0 disables; needs an engine
            that reports its sampling log-probs).
    """

    name: LossName = field(default="ppo", metadata={"help": f"policy loss: {list(LOSS_NAMES)}"})
    clip: PPOClip = field(default_factory=PPOClip, metadata={"help": "PPO clip of `ppo`"})
    clip_cov: ClipCovConfig = field(default_factory=ClipCovConfig, metadata={"help": "Clip-Cov"})
    kl_cov: KLCovConfig = field(default_factory=KLCovConfig, metadata={"help": "KL-Cov"})
    aggregation: AggregationMode = field(
        default="token-mean", metadata={"help": f"loss aggregation: {list(AGGREGATION_MODES)}"}
    )
    entropy_coef: float = field(
        default=0.0, metadata={"help": "entropy bonus α (0 = off; negative: entropy penalty)"}
    )
    ref_kl_coef: float = field(default=0.0, metadata={"help": "reference KL β (0 = off)"})
    ref_kl_estimator: KLEstimator = field(
        default="k3", metadata={"help": "reference KL estimator: k1, k2 or k3"}
    )
    tis_cap: float = field(
        default=0.0,
        metadata={"help": "truncated importance sampling: weight each token's policy loss by "
                          "min(pi_trainer/pi_sampler, tis_cap) (0 = off; Yao et al. 2025 use 2; "
                          "needs rollout.engine=vllm)"},
    )

    def __post_init__(self) -> None:
        check_choice("loss.name", self.name, LOSS_NAMES)
        check_choice("loss.aggregation", self.aggregation, AGGREGATION_MODES)
        check_choice("loss.ref_kl_estimator", self.ref_kl_estimator, KL_ESTIMATORS)
        if not math.isfinite(self.entropy_coef):
            raise ValueError(
                f"loss.entropy_coef: expected a finite number, got {self.entropy_coef}"
            )
        check_positive("loss.ref_kl_coef", self.ref_kl_coef, allow_zero=True)
        check_positive("loss.tis_cap", self.tis_cap, allow_zero=True)

    @property
    def selection(self) -> Literal["clip_cov", "kl_cov"] | None:
        """Which covariance selection the loss consumes, if any."""
        if self.name == "clip_cov":
            return "clip_cov"
        if self.name == "kl_cov":
            return "kl_cov"
        return None


# (logprobs, old_logprobs, advantages, mask, selected, config) -> PolicyLoss
PolicyLossFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", LossConfig],
    PolicyLoss,
]

def _given(selected: torch.Tensor | None) -> torch.Tensor:
    """The selection of a loss that needs one (checked by :func:`compute_objective`)."""
    assert selected is not None
    return selected


POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "ppo": lambda lp, old, adv, m, sel, cfg: ppo_loss(lp, old, adv, m, cfg.clip),
    "pg": lambda lp, old, adv, m, sel, cfg: pg_loss(lp, old, adv, m),
    "clip_cov": lambda lp, old, adv, m, sel, cfg: clip_cov_loss(
        lp, old, adv, m, _given(sel), cfg.clip_cov
    ),
    "kl_cov": lambda lp, old, adv, m, sel, cfg: kl_cov_loss(
        lp, old, adv, m, _given(sel), cfg.kl_cov
    ),
}


class Objective(NamedTuple):
    """The scalar to back-propagate and what it is made of.

    Attributes:
        loss: aggregated total loss (scalar, with graph).
        policy: the policy loss part of the result, per token and its diagnostics.
        metrics: detached scalars: ``policy_loss``, ``entropy_bonus``, ``ref_kl`` (when on)
            and the policy loss's diagnostics.
    """

    loss: torch.Tensor
    policy: PolicyLoss
    metrics: dict[str, torch.Tensor]


def compute_objective(
    config: LossConfig,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    selected: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    denominators: Denominators | None = None,
    norm_constant: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> Objective:
    """Total loss of one (micro-)batch: policy loss + optional entropy bonus + reference KL.

    Args:
        config: the objective's definition.
        logprobs: log π_θ ``[B, T]`` (with grad).
        old_logprobs: log π_old ``[B, T]``.
        advantages: per-token advantages ``[B, T]``.
        mask: response mask ``[B, T]``.
        selected: covariance selection of this micro-batch ``[B, T]`` (Clip-Cov / KL-Cov).
        entropy: per-token entropy ``[B, T]`` with grad, required when ``entropy_coef ≠ 0``.
        ref_logprobs: reference-policy log-probs ``[B, T]``, required when ``ref_kl_coef > 0``.
        denominators: mini-batch counts when this is one micro-batch of several, so that the
            accumulated gradient equals the whole mini-batch's (see :func:`aggregate`).
        norm_constant: ``C`` of ``seq-mean-token-sum-norm`` (default: the padded length ``T``;
            Dr. GRPO uses the generation budget).
        is_weights: detached non-negative per-token weights ``[B, T]`` of the policy loss
            (truncated importance sampling, :func:`truncated_is_weights`); the entropy bonus
            and reference KL are not weighted. For PPO-clip this equals scaling each token's
            advantage by its weight, since ``max(−wA·r, −wA·clip(r)) = w·max(−A·r, −A·clip(r))``
            for ``w ≥ 0``.
    """
    if config.selection is not None and selected is None:
        raise ValueError(
            f"selected: required by loss {config.name!r}; compute the mini-batch's selection "
            f"with entropyrl.covariance.select_{config.selection}"
        )
    policy = POLICY_LOSSES[config.name](
        logprobs, old_logprobs, advantages, mask, selected, config
    )
    m = mask.bool()
    per_token = policy.per_token
    if is_weights is not None:
        if is_weights.shape != per_token.shape:
            raise ValueError(f"is_weights: expected shape {list(per_token.shape)}, got "
                             f"{list(is_weights.shape)}")
        per_token = per_token * is_weights.detach()
    metrics = {k: v.detach() for k, v in policy.metrics.items()}

    def reduce(values: torch.Tensor) -> torch.Tensor:
        return aggregate(values, m, config.aggregation, denominators=denominators,
                         norm_constant=norm_constant)

    policy_loss = reduce(per_token)
    metrics["policy_loss"] = policy_loss.detach()
    if config.entropy_coef == 0 and config.ref_kl_coef == 0:
        return Objective(policy_loss, policy, metrics)  # nothing added: the same reduction
    if config.entropy_coef != 0:
        if entropy is None:
            raise ValueError("entropy: required when loss.entropy_coef != 0, got None")
        bonus = entropy_bonus(entropy, config.entropy_coef)
        per_token = per_token + bonus
        metrics["entropy_bonus"] = reduce(bonus).detach()
    if config.ref_kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("ref_logprobs: required when loss.ref_kl_coef > 0, got None")
        kl = reference_kl(logprobs, ref_logprobs, config.ref_kl_estimator)
        per_token = per_token + config.ref_kl_coef * kl
        metrics["ref_kl"] = masked_mean(kl.detach(), m)
    return Objective(reduce(per_token), policy, metrics)
