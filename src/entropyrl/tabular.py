"""Tabular softmax check of the entropy-dynamics formulas (paper §2, Lemma).

For a tabular policy ``π(a|s) ∝ exp(z_{s,a})``, a step ``Δz`` changes each state's entropy by
``ΔH(s) ≈ −Cov_{a∼π}(log π, Δz)`` to first order. :func:`tabular_entropy_check` makes one exact
vanilla-PG step (``Δz = η·π·A``) and one exact natural-PG step (``Δz = η·A``) and compares the
exact change with the prediction; the relative error shrinks linearly with ``η``. Shapes: ``S``
states, ``A`` actions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from entropyrl._checks import (
    check_finite,
    check_float,
    check_ndim,
    check_positive,
    check_same_shape,
)


class EntropyChange(NamedTuple):
    """Exact and first-order entropy change of a tabular softmax policy, per state.

    Attributes:
        entropy_before: ``[S]`` ``H(s) = −Σ_a π log π`` before the step.
        exact: ``[S]`` ``H_after(s) − H_before(s)``.
        predicted: ``[S]`` the first-order prediction ``−Cov_{a∼π}(log π, Δz)``.
        relative_error: ``‖exact − predicted‖₂ / ‖exact‖₂`` over states (0 if both are 0,
            ``inf`` if only ``exact`` is).
    """

    entropy_before: torch.Tensor
    exact: torch.Tensor
    predicted: torch.Tensor
    relative_error: float


def _check_table(name: str, x: torch.Tensor) -> torch.Tensor:
    check_float(name, x)
    check_ndim(name, x, 2, "[S, A]")
    check_finite(name, x)
    return x.detach().to(torch.float64)


def policy_covariance(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``Cov_{a∼π(·|s)}(log π(a|s), values_{s,a})`` per state, ``π = softmax(logits)``.

    Args:
        logits: ``[S, A]`` tabular logits ``z``.
        values: ``[S, A]`` any per-action quantity (``A``, ``π·A``, ``Δz``).

    Returns:
        ``[S]`` float64 covariances under each state's own action distribution.
    """
    z, v = _check_table("logits", logits), _check_table("values", values)
    check_same_shape("logits", z, values=v)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    lp_c = logp - (p * logp).sum(-1, keepdim=True)
    v_c = v - (p * v).sum(-1, keepdim=True)
    return (p * lp_c * v_c).sum(-1)


def _entropy(z: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def entropy_change(logits: torch.Tensor, delta_logits: torch.Tensor) -> EntropyChange:
    """The Lemma: exact ``ΔH`` of ``z → z + Δz`` next to ``−Cov_{a∼π}(log π, Δz)``.

    Args:
        logits: ``[S, A]`` tabular logits ``z``.
        delta_logits: ``[S, A]`` the step ``Δz``.

    Returns:
        ``EntropyChange`` (float64).
    """
    z, dz = _check_table("logits", logits), _check_table("delta_logits", delta_logits)
    check_same_shape("logits", z, delta_logits=dz)
    before = _entropy(z)
    exact = _entropy(z + dz) - before
    predicted = -policy_covariance(z, dz)
    err, norm = float((exact - predicted).norm()), float(exact.norm())
    rel = err / norm if norm > 0 else (0.0 if err == 0 else math.inf)
    return EntropyChange(before, exact, predicted, rel)


class TabularCheck(NamedTuple):
    """One exact vanilla-PG and one exact natural-PG step of a tabular softmax policy.

    Attributes:
        pg: ``Δz = η·π·A``, predicted ``ΔH = −η·Cov(log π, π·A)``.
        npg: ``Δz = η·A``, predicted ``ΔH = −η·Cov(log π, A)``.
    """

    pg: EntropyChange
    npg: EntropyChange


def tabular_entropy_check(
    logits: torch.Tensor, advantages: torch.Tensor, step_size: float
) -> TabularCheck:
    """Check the paper's entropy-dynamics formulas on a tabular softmax policy.

    The prediction error is second order in ``η`` while ``ΔH`` is first order, so
    ``relative_error`` shrinks about linearly with ``step_size``. Example::

        z, adv = torch.randn(8, 5), torch.randn(8, 5)
        check = tabular_entropy_check(z, adv, 1e-3)  # check.npg.relative_error ≈ 1e-3

    Args:
        logits: ``[S, A]`` logits ``z`` (states × actions).
        advantages: ``[S, A]`` advantages ``A(s, a)``, used as given (not centred).
        step_size: ``η > 0``.

    Returns:
        ``TabularCheck`` with the PG and NPG ``EntropyChange``.
    """
    check_positive("step_size", step_size)
    z, adv = _check_table("logits", logits), _check_table("advantages", advantages)
    check_same_shape("logits", z, advantages=adv)
    p = torch.softmax(z, dim=-1)
    return TabularCheck(
        pg=entropy_change(z, step_size * p * adv),
        npg=entropy_change(z, step_size * adv),
    )
