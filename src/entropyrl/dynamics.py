"""Entropy-dynamics diagnostics: why entropy moves, measured on a batch (paper §2, Eq. 10).

For a softmax policy, one step that changes the logits by ``Δz`` changes the entropy of a state
to first order by (the paper's Lemma)::

    ΔH(s) ≈ −Cov_{a∼π(·|s)}( log π(a|s), Δz_{s,a} )

so a vanilla policy-gradient step (``Δz = η·π·A``) gives ``ΔH ≈ −η·Cov(log π, π·A)`` and a
natural policy-gradient step (``Δz = η·A``) gives ``ΔH ≈ −η·Cov(log π, A)``. On a batch of
sampled response tokens the expectation under π becomes an average over the ``N`` valid tokens:

- ``token_covariance``: ``cov_i = (log π_i − mean_j log π_j)(A_i − mean_j A_j)`` (Eq. 10);
- ``batch_covariances``: ``cov_npg = mean_i cov_i`` and ``cov_pg = Cov(log π, π·A)``;
- ``skew_table``: mean ``cov_i`` over the top 0.02 / 0.2 / 2 / 20 / 50 % of tokens and all;
- ``response_covariance``: per prompt group, the covariance across its responses of the
  length-normalised log-prob ``ℓ`` and the sequence advantage, ``Cov(ℓ, A)`` (the natural-PG
  form at response level) or ``Cov(ℓ, π·A)`` with ``π = exp ℓ`` (the vanilla-PG form);
- ``tabular_entropy_check`` / ``entropy_change``: the exact entropy change of a tabular softmax
  step next to the first-order prediction, to check the theory and its sign;
- ``predicted_entropy_change`` / ``prediction_agreement``: how a trainer compares the measured
  same-batch ``ΔH`` with the prediction.

Sums are taken in float64. All-masked input is not an error: every statistic is ``0`` with
``n_tokens = 0`` (there is nothing to learn from, so nothing moves). Formulas: docs/dynamics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from entropyrl._checks import (
    as_bool_mask,
    check_finite,
    check_float,
    check_ndim,
    check_positive,
    check_same_dtype,
    check_same_shape,
)
from entropyrl.covariance.cov import centred_product

# The tabular check lives in its own module; re-exported here as part of the dynamics API.
from entropyrl.tabular import (
    EntropyChange,
    TabularCheck,
    entropy_change,
    policy_covariance,
    tabular_entropy_check,
)

__all__ = [
    "SKEW_FRACTIONS",
    "SKEW_KEYS",
    "BatchCovariances",
    "EntropyChange",
    "PredictionAgreement",
    "ResponseCovariance",
    "TabularCheck",
    "batch_covariances",
    "entropy_change",
    "policy_covariance",
    "predicted_entropy_change",
    "prediction_agreement",
    "response_covariance",
    "skew_key",
    "skew_table",
    "tabular_entropy_check",
    "token_covariance",
]

SKEW_FRACTIONS: tuple[float, ...] = (2e-4, 2e-3, 2e-2, 0.2, 0.5)


def skew_key(fraction: float) -> str:
    """Metric name of a top fraction: ``2e-4 → "top0.02pct"``, ``0.5 → "top50pct"``."""
    return f"top{fraction * 100:.6g}pct"


SKEW_KEYS: tuple[str, ...] = (*(skew_key(f) for f in SKEW_FRACTIONS), "all")


def _check_tokens(
    logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Validate ``[B, T]`` log-probs, advantages and mask; return the mask as bool."""
    check_float("logprobs", logprobs)
    check_ndim("logprobs", logprobs, 2, "[B, T]")
    check_float("advantages", advantages)
    check_same_shape("logprobs", logprobs, advantages=advantages)
    check_same_dtype("logprobs", logprobs, advantages=advantages)
    m = as_bool_mask("mask", mask, logprobs, "logprobs")
    check_finite("logprobs", logprobs, m)
    check_finite("advantages", advantages, m)
    return m


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 with zeros at masked positions (detached: these are diagnostics)."""
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    return torch.where(mask, x.detach().to(torch.float64), zero)


def _given_mean(name: str, value: float | torch.Tensor | None) -> float | None:
    """A caller-supplied global mean (e.g. over all micro-batches and ranks), checked finite."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    return v


def token_covariance(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    mean_logprob: float | torch.Tensor | None = None,
    mean_advantage: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token centered cross-product (Eq. 10): ``cov_i = (log π_i − μ_lp)(A_i − μ_A)``.

    ``μ_lp`` and ``μ_A`` are the means over the ``N`` valid tokens of this batch, unless given:
    a caller that splits a mini-batch over micro-batches or ranks passes the global means so
    every part is scored against the same centre.

    Args:
        logprobs: ``[B, T]`` log π of the sampled tokens.
        advantages: ``[B, T]`` per-token advantages (same dtype).
        mask: ``[B, T]`` bool or 0/1, the valid response tokens.
        mean_logprob: optional precomputed ``μ_lp``.
        mean_advantage: optional precomputed ``μ_A``.

    Returns:
        ``[B, T]`` ``cov_i`` in the dtype of ``logprobs``, zero at masked positions.
    """
    m = _check_tokens(logprobs, advantages, mask)
    mu_lp = _given_mean("mean_logprob", mean_logprob)
    mu_a = _given_mean("mean_advantage", mean_advantage)
    return centred_product(logprobs, advantages, m, mu_lp, mu_a,
                           dtype=torch.float64).to(logprobs.dtype)


class BatchCovariances(NamedTuple):
    """Batch covariances that drive the entropy change (means over the ``N`` valid tokens).

    Attributes:
        cov_npg: ``Cov(log π, A) = mean_i cov_i``; natural PG: ``ΔH ≈ −η·cov_npg``.
        cov_pg: ``Cov(log π, π·A)`` with ``π = exp(log π)``; vanilla PG: ``ΔH ≈ −η·cov_pg``.
        mean_logprob: ``μ_lp``, mean log π.
        mean_advantage: ``μ_A``, mean advantage.
        n_tokens: ``N``.
    """

    cov_npg: float
    cov_pg: float
    mean_logprob: float
    mean_advantage: float
    n_tokens: int


def batch_covariances(
    logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> BatchCovariances:
    """``Cov(log π, A)`` and ``Cov(log π, π·A)`` over the valid tokens (population, ``1/N``).

    Args:
        logprobs: ``[B, T]`` log π of the sampled tokens.
        advantages: ``[B, T]`` per-token advantages (same dtype).
        mask: ``[B, T]`` bool or 0/1.

    Returns:
        ``BatchCovariances``; all zeros with ``n_tokens = 0`` when nothing is valid.
    """
    m = _check_tokens(logprobs, advantages, mask)
    n = int(m.sum())
    lp, adv = _masked(logprobs, m), _masked(advantages, m)
    pa = torch.where(m, lp.exp() * adv, lp.new_zeros(()))  # π·A per token
    denom = max(n, 1)
    mu_lp, mu_a, mu_pa = lp.sum() / denom, adv.sum() / denom, pa.sum() / denom
    lp_c = torch.where(m, lp - mu_lp, lp.new_zeros(()))
    cov_npg = centred_product(lp, adv, m, mu_lp, mu_a, dtype=torch.float64).sum() / denom
    cov_pg = (lp_c * (pa - mu_pa)).sum() / denom
    return BatchCovariances(float(cov_npg), float(cov_pg), float(mu_lp), float(mu_a), n)


def skew_table(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    fractions: Sequence[float] = SKEW_FRACTIONS,
) -> dict[str, float]:
    """Mean ``cov_i`` over the top fraction of tokens by ``cov_i``, for each fraction, and all.

    The top ``f`` holds ``k = max(1, ⌊f·N⌋)`` tokens (the count rule of the covariance
    selection); ties do not matter since only the mean of the ``k`` largest values is kept.
    The paper reports (Qwen2.5-7B, step 1) 5.654, 3.112, 1.385, 0.351, 0.152 and 0.003.

    Args:
        logprobs: ``[B, T]`` log π of the sampled tokens.
        advantages: ``[B, T]`` per-token advantages (same dtype).
        mask: ``[B, T]`` bool or 0/1.
        fractions: top fractions in ``(0, 1]`` (not percents).

    Returns:
        ``{skew_key(f): mean, ..., "all": mean_i cov_i}`` (``SKEW_KEYS`` with the defaults);
        all zeros when nothing is valid.
    """
    for f in fractions:
        if not (isinstance(f, int | float) and 0 < f <= 1):
            raise ValueError(f"fractions: expected fractions in (0, 1] (not percents), got {f!r}")
    m = _check_tokens(logprobs, advantages, mask)
    n = int(m.sum())
    if n == 0:
        return {**{skew_key(f): 0.0 for f in fractions}, "all": 0.0}
    # Cumulative sums of the values sorted high to low: the mean of the top k is csum[k-1]/k.
    cov = centred_product(logprobs, advantages, m, dtype=torch.float64)
    csum = cov[m].sort(descending=True).values.cumsum(0)
    out = {}
    for f in fractions:
        k = max(1, math.floor(f * n))
        out[skew_key(f)] = float(csum[k - 1]) / k
    out["all"] = float(csum[-1]) / n
    return out


class ResponseCovariance(NamedTuple):
    """Response-level covariance per prompt group (``Cov(ℓ, A)``, or ``Cov(ℓ, π·A)``).

    Attributes:
        mean: mean of ``per_group`` over the groups where it is defined; 0 if none is.
        per_group: ``[n_groups]`` ``Cov_g = (1/n_g) Σ_{i∈g} (ℓ_i − mean_g ℓ)(y_i − mean_g y)``
            over the group's responses with a valid token, with ``y = A`` (``form="npg"``) or
            ``y = exp(ℓ)·A`` (``form="pg"``); 0 where undefined.
        group_ids: ``[n_groups]`` the sorted distinct ids ``per_group`` refers to.
        defined: ``[n_groups]`` bool, groups with at least two responses with a valid token.
        seq_logprob: ``[B]`` ``ℓ_i``, mean token log π over the response's valid tokens (0
            for a response without one, which is left out of its group).
        seq_advantage: ``[B]`` the response's advantage (0 without a valid token).
    """

    mean: float
    per_group: torch.Tensor
    group_ids: torch.Tensor
    defined: torch.Tensor
    seq_logprob: torch.Tensor
    seq_advantage: torch.Tensor


def _check_group_ids(group_ids: torch.Tensor, logprobs: torch.Tensor) -> None:
    if not isinstance(group_ids, torch.Tensor):
        raise ValueError(f"group_ids: expected a torch.Tensor, got {type(group_ids).__name__}")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids: expected an integer tensor (int64), got {group_ids.dtype}")
    if group_ids.shape != logprobs.shape[:1]:
        raise ValueError(f"group_ids: expected shape [B] with B = {logprobs.shape[0]}, "
                         f"got {list(group_ids.shape)}")
    if group_ids.device != logprobs.device:
        raise ValueError(f"group_ids: expected device {logprobs.device} (the device of "
                         f"logprobs), got {group_ids.device}")


def response_covariance(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    form: Literal["npg", "pg"] = "npg",
) -> ResponseCovariance:
    """Covariance of length-normalised log-prob and sequence advantage within each group.

    ``form="npg"`` pairs ``ℓ`` with ``A`` (a natural-PG step, Eq. 10 at response level);
    ``form="pg"`` with ``π·A``, ``π = exp ℓ`` (a vanilla-PG step, the paper's
    ``Cov(log π, π·A)`` at response level).

    Args:
        logprobs: ``[B, T]`` log π of the sampled tokens.
        advantages: ``[B]`` sequence advantages, or ``[B, T]`` token advantages whose mean over
            the valid tokens is taken (the sequence advantage for the outcome estimators,
            which broadcast one value over the response).
        mask: ``[B, T]`` bool or 0/1.
        group_ids: ``[B]`` integer prompt id of each response.
        form: ``npg`` or ``pg`` (see above).

    Returns:
        ``ResponseCovariance`` (float64 tensors).
    """
    if form not in ("npg", "pg"):
        raise ValueError(f"form: expected 'npg' or 'pg', got {form!r}")
    check_float("logprobs", logprobs)
    check_ndim("logprobs", logprobs, 2, "[B, T]")
    check_float("advantages", advantages)
    if advantages.ndim == 1:
        if advantages.shape[0] != logprobs.shape[0]:
            raise ValueError(f"advantages: expected shape [B] or [B, T] with B = "
                             f"{logprobs.shape[0]}, got {list(advantages.shape)}")
        advantages = advantages[:, None].expand(logprobs.shape)
    m = _check_tokens(logprobs, advantages, mask)
    _check_group_ids(group_ids, logprobs)
    lengths = m.sum(-1).to(torch.float64).clamp(min=1)
    seq_lp = _masked(logprobs, m).sum(-1) / lengths
    seq_adv = _masked(advantages, m).sum(-1) / lengths
    keep = m.any(-1).to(torch.float64)
    uniq, member = torch.unique(group_ids, return_inverse=True)
    zeros = seq_lp.new_zeros(uniq.numel())
    count = zeros.index_add(0, member, keep)
    mu_lp = zeros.index_add(0, member, keep * seq_lp) / count.clamp(min=1)
    y = seq_adv if form == "npg" else seq_lp.exp() * seq_adv
    mu_y = zeros.index_add(0, member, keep * y) / count.clamp(min=1)
    cross = keep * (seq_lp - mu_lp[member]) * (y - mu_y[member])
    defined = count >= 2
    per_group = torch.where(defined, zeros.index_add(0, member, cross) / count.clamp(min=1),
                            zeros)
    mean = float(per_group[defined].mean()) if bool(defined.any()) else 0.0
    return ResponseCovariance(mean, per_group, uniq, defined, seq_lp, seq_adv)


def predicted_entropy_change(
    covariances: BatchCovariances,
    *,
    form: Literal["npg", "pg"] = "npg",
    step_size: float = 1.0,
) -> float:
    """First-order entropy change of one step on this batch: ``−η·cov_npg`` or ``−η·cov_pg``.

    With Adam the effective step size in logit space is unknown (and differs per token), so
    within one step only the *sign* is predicted; the magnitude is compared across steps:
    log this value (``η = 1``) next to the measured same-batch ``ΔH`` (entropy of the batch
    after the update minus before) and read ``prediction_agreement`` of the two series.

    Args:
        covariances: the step's ``batch_covariances`` (before the update).
        form: ``"npg"`` (``Cov(log π, A)``, the paper's default reading) or ``"pg"``.
        step_size: ``η > 0``.

    Returns:
        The predicted ``ΔH``.
    """
    check_positive("step_size", step_size)
    if form not in ("npg", "pg"):
        raise ValueError(f"form: expected one of ['npg', 'pg'], got {form!r}")
    cov = covariances.cov_npg if form == "npg" else covariances.cov_pg
    return -step_size * cov


class PredictionAgreement(NamedTuple):
    """Agreement across steps of measured and predicted entropy changes.

    Attributes:
        correlation: Pearson correlation; 0 when either series is constant.
        sign_agreement: fraction of steps where both have the same sign (zeros agree only
            with zeros).
        scale: least-squares ``c`` in ``measured ≈ c·predicted`` (the effective step size when
            ``predicted`` used ``η = 1``); 0 when ``predicted`` is all zero.
        n_steps: number of steps compared.
    """

    correlation: float
    sign_agreement: float
    scale: float
    n_steps: int


def prediction_agreement(
    measured: Sequence[float] | torch.Tensor, predicted: Sequence[float] | torch.Tensor
) -> PredictionAgreement:
    """Compare per-step measured ``ΔH`` with ``predicted_entropy_change`` over a run.

    Args:
        measured: ``[S]`` measured same-batch entropy changes, one per step.
        predicted: ``[S]`` predictions for the same steps.

    Returns:
        ``PredictionAgreement``.
    """
    m = torch.as_tensor(measured, dtype=torch.float64).reshape(-1)
    p = torch.as_tensor(predicted, dtype=torch.float64).reshape(-1)
    if m.numel() < 2:
        raise ValueError(f"measured: expected at least 2 steps, got {m.numel()}")
    if p.shape != m.shape:
        raise ValueError(f"predicted: expected {m.numel()} steps (as measured), got {p.numel()}")
    check_finite("measured", m)
    check_finite("predicted", p)
    mc, pc = m - m.mean(), p - p.mean()
    denom = float(mc.norm() * pc.norm())
    corr = float((mc * pc).sum()) / denom if denom > 0 else 0.0
    signs = float((torch.sign(m) == torch.sign(p)).to(torch.float64).mean())
    pp = float((p * p).sum())
    scale = float((m * p).sum()) / pp if pp > 0 else 0.0
    return PredictionAgreement(corr, signs, scale, m.numel())
