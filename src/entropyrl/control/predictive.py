"""The predictive controller: pick the actuator value from the step's token covariances.

The paper's first-order law (Cui et al. 2025, Eq. 10) says an update moves the entropy by
``ΔH ≈ −η·Cov(log π, A)``, a mean of per-token terms ``cov_i`` over the ``N`` response tokens.
Clip-Cov detaches some tokens and KL-Cov penalises some: their terms leave the sum. So the
step's covariances predict what each actuator value would do:

    C(u) = (Σ_i cov_i − Σ_{i ∈ S(u)} cov_i) / N,        ΔH(u) ≈ −η̂·C(u)

with ``S(u)`` the tokens the method would select at ``u`` (:func:`removal_profile`). The
plant is fitted online as ``ΔH_t = η̂·x_t + β̂`` with ``x_t = −C_t(u_t)`` (the covariance left
at the value in force) and ``y_t = ΔH_t`` the measured same-batch entropy change: weighted
least squares with forgetting factor ``ρ`` (sums ``S ← ρ·S + new``)::

    η̂ = (S_1·S_xy − S_x·S_y) / (S_1·S_xx − S_x²),   β̂ = (S_y − η̂·S_x) / S_1

The offset ``β̂`` holds the part of the change no selection removes (second-order terms, the
PPO clip, the tokens' drift between mini-batches); while the ``x`` seen so far barely vary, the
fit falls back to the line through the origin (``β̂ = 0``, ``η̂ = S_xy/S_xx``).

After step ``t`` (entropy ``H_t`` before its update, ``H_t + ΔH_t`` after) the controller wants
the next update to land on the target, ``ΔH* = H*(t+2) − (H_t + ΔH_t)`` (``H_t + ΔH_t`` is
the entropy step ``t + 1`` samples with, and its update lands on what step ``t + 2``
measures), and chooses ``u_pred``
with ``C(u_pred) = −(ΔH* − β̂)/η̂`` (the closest value on the profile's grid). A PI term on
the relative error corrects what the first-order model misses:

    u_{t+1} = clip( u_pred · exp( d·(k_p·e_t + k_i·I_t) ), u_min, u_max )

with the same conditional-integration anti-windup as :func:`entropyrl.control.step`. Until
``η̂`` is known and positive the controller acts as the PI controller around its start value.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import torch

from entropyrl.control.controller import ControllerState, Gains, pi_output

PREDICTIVE_ACTUATORS = ("clip_cov_ratio", "kl_cov_ratio")
FORGETTING = 0.9


class CovProfile(NamedTuple):
    """``C(u)`` on a grid of actuator values: the mean ``cov_i`` left after the selection.

    Attributes:
        values: ascending actuator values ``u`` (fractions of the ``N`` tokens).
        left: ``C(u)`` at each value, in the units of ``Cov(log π, A)``.
    """

    values: tuple[float, ...]
    left: tuple[float, ...]

    def at(self, u: float) -> float:
        """``C(u)``, linear in ``log u`` between grid points, constant beyond the ends."""
        v = self.values
        if u <= v[0]:
            return self.left[0]
        if u >= v[-1]:
            return self.left[-1]
        j = next(i for i in range(1, len(v)) if v[i] >= u)
        w = (math.log(u) - math.log(v[j - 1])) / (math.log(v[j]) - math.log(v[j - 1]))
        return self.left[j - 1] + w * (self.left[j] - self.left[j - 1])

    def closest(self, wanted: float) -> float:
        """The grid value whose ``C(u)`` is closest to ``wanted`` (the smallest on ties)."""
        gaps = [abs(c - wanted) for c in self.left]
        return self.values[gaps.index(min(gaps))]


def grid(u_min: float, u_max: float, points: int = 96) -> tuple[float, ...]:
    """``points`` log-spaced values from ``u_min`` to ``u_max``."""
    if not 0 < u_min < u_max:
        raise ValueError(f"expected 0 < u_min < u_max, got {u_min}, {u_max}")
    step = (math.log(u_max) - math.log(u_min)) / (points - 1)
    return tuple(math.exp(math.log(u_min) + i * step) for i in range(points))


def removal_profile(cov: torch.Tensor, actuator: str, values: tuple[float, ...], *,
                    cov_low: float = -math.inf, cov_high: float = math.inf) -> CovProfile:
    """``C(u)`` of a batch for Clip-Cov's ``r`` or KL-Cov's ``k``.

    Args:
        cov: ``[N]`` ``cov_i`` of the batch's valid tokens (paper Eq. 10).
        actuator: ``clip_cov_ratio`` (Clip-Cov draws ``max(1, ⌊rN⌋)`` tokens uniformly from
            those with ``cov_low < cov_i < cov_high``: the expected removed sum is that
            fraction of the candidates' sum) or ``kl_cov_ratio`` (KL-Cov penalises the top
            ``max(1, ⌊kN⌋)`` tokens by ``cov_i``; the model counts them as removed).
        values: the grid of actuator values.
        cov_low: Clip-Cov's lower band edge ``ω_low``.
        cov_high: Clip-Cov's upper band edge ``ω_high``.

    Returns:
        The profile on ``values``.
    """
    c = cov.detach().double().reshape(-1)
    n = c.numel()
    if n == 0:
        return CovProfile(values, tuple(0.0 for _ in values))
    total = float(c.sum())

    def count(u: float) -> int:
        return max(1, math.floor(u * n))

    if actuator == "clip_cov_ratio":
        band = c[(c > cov_low) & (c < cov_high)]
        n_band, band_sum = band.numel(), float(band.sum())
        left = [(total - (min(count(u), n_band) / n_band * band_sum if n_band else 0.0)) / n
                for u in values]
    elif actuator == "kl_cov_ratio":
        top = torch.cumsum(torch.sort(c, descending=True).values, 0)
        left = [(total - float(top[min(count(u), n) - 1])) / n for u in values]
    else:
        raise ValueError(f"predictive control: expected an actuator in "
                         f"{list(PREDICTIVE_ACTUATORS)}, got {actuator!r}")
    return CovProfile(values, tuple(left))


class PlantReading(NamedTuple):
    """What one step tells the predictive controller besides ``H``.

    Attributes:
        delta_h: ``ΔH_t``, the same-batch entropy change of the step's updates.
        profile: ``C(u)`` of the step's batch.
    """

    delta_h: float
    profile: CovProfile


def predictive_step(state: ControllerState, measured: float, target: float, gains: Gains,
                    reading: PlantReading, aim: float | None = None
                    ) -> tuple[ControllerState, float]:
    """One measurement in, the next actuator value out (module docstring).

    Args:
        state: the controller's state (``value`` is the actuator value the step used).
        measured: ``H_t``, the step's rollout entropy before its updates.
        target: ``H*(t)``, what ``H_t`` should have been (the PI term's error).
        gains: the controller's constants (``kp``, ``ki`` of the correcting PI term).
        reading: the step's same-batch ``ΔH`` and covariance profile.
        aim: where the model steers: ``H*(t + 2)``, the target of the entropy measured after
            the next step's updates (``H_t + ΔH_t`` is step ``t + 1``'s). Default ``target``;
            the two differ only on a schedule.

    Returns:
        The new state (with ``gain`` = ``η̂``, ``offset`` = ``β̂`` and ``predicted`` =
        ``−η̂·C(u_{t+1}) + β̂``) and the actuator value for the next step.
    """
    aim = target if aim is None else aim
    if not (math.isfinite(measured) and math.isfinite(target) and target > 0
            and math.isfinite(aim) and aim > 0):
        raise ValueError(f"expected a finite entropy and targets > 0, got {measured}, "
                         f"{target}, {aim}")
    e = (target - measured) / target
    s1, sx, sy, sxx, sxy = state.s1, state.sx, state.sy, state.sxx, state.sxy
    x, y = -reading.profile.at(state.value), reading.delta_h
    if math.isfinite(x) and math.isfinite(y):
        f = FORGETTING
        s1, sx, sy, sxx, sxy = f * s1 + 1, f * sx + x, f * sy + y, f * sxx + x * x, f * sxy + x * y
    eta, offset = fit_plant(s1, sx, sy, sxx, sxy)
    if eta > 0:
        wanted = aim - (measured + (y if math.isfinite(y) else 0.0))
        anchor = reading.profile.closest(-(wanted - offset) / eta)
    else:
        anchor = state.base
    u, integral, pinned = pi_output(anchor, e, state.integral, gains)
    predicted = -eta * reading.profile.at(u) + offset if eta > 0 else 0.0
    new = replace(state, value=u, integral=integral, error=e, steps=state.steps + 1, s1=s1,
                  sx=sx, sy=sy, sxx=sxx, sxy=sxy, gain=eta, offset=offset, predicted=predicted,
                  pinned=pinned)
    return new, u


def fit_plant(s1: float, sx: float, sy: float, sxx: float, sxy: float) -> tuple[float, float]:
    """``(η̂, β̂)`` of ``y = η·x + β`` from the weighted sums (module docstring).

    The line through the origin when the ``x`` barely vary (``S_1·S_xx − S_x²`` below 1% of
    ``S_1·S_xx``); ``(0, 0)`` before any data.
    """
    if sxx <= 0 or s1 <= 0:
        return 0.0, 0.0
    det = s1 * sxx - sx * sx
    if det <= 0.01 * s1 * sxx:
        return sxy / sxx, 0.0
    eta = (s1 * sxy - sx * sy) / det
    return eta, (sy - eta * sx) / s1
