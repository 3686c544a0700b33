"""Whether the first evaluations break the law (the format-learning phase).

RL from an instruct or base model often starts by learning the answer *format* the reward
parser wants: the score jumps from near 0 while the entropy barely moves. The law does not
describe that phase, and a few such points pull a least-squares fit far off (e.g. on a verl
PPO log of a 0.5B model, pairing the base model's score with its entropy moves ``a`` from 0.1
to 1.1 and R² from 0.73 to 0.41).

Check: a robust (soft-L1) fit on the evaluations after the first third (the reference: the
law where it holds), residual scale ``σ̂ = 1.4826·MAD`` of its residuals; the *leading*
evaluations (from the first, consecutively) whose score lies more than ``z·σ̂`` (default 3)
*below* the law break it — below, because a model that has not yet learnt the format scores
less than its entropy implies. Reported as a warning naming ``--from-step``;
``--from-step auto`` skips them.

Shapes: ``P`` aligned points in step order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entropyrl.law._data import LawDataError
from entropyrl.law.fit import MAD_TO_SIGMA, fit_law

Z_BREAK = 3.0


@dataclass(frozen=True)
class EarlyBreak:
    """Leading evaluations that sit far off the law."""

    n_points: int  # how many leading evaluations break the law
    last_step: float  # the last of them
    next_step: float  # the first evaluation after them: a --from-step that skips them
    max_z: float  # largest −residual/σ̂ among them (how far below the law)


def early_break(
    steps: np.ndarray, entropy: np.ndarray, score: np.ndarray, z: float = Z_BREAK
) -> EarlyBreak | None:
    """The leading evaluations with residual ``< −z·σ̂`` (module docstring), or ``None``."""
    order = np.argsort(steps, kind="stable")
    s, h, y = steps[order], entropy[order], score[order]
    if len(s) < 6:
        return None
    ref = slice(len(s) // 3, None)  # a few leading outliers cannot pull this fit
    try:
        fit = fit_law(h[ref], y[ref], method="soft_l1")
    except LawDataError:
        return None
    resid = y - fit.predict(h)
    r_ref = resid[ref]
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(r_ref - np.median(r_ref))))
    sigma = max(sigma, 1e-6 * max(float(np.ptp(y)), 1e-3))  # exact data: MAD = 0
    zs = -resid / sigma  # positive: below the law
    n = int(np.argmin(zs > z)) if not (zs > z).all() else len(zs)
    if n == 0 or n > len(s) // 2:  # none, or most of the run: not an early phase
        return None
    return EarlyBreak(n, float(s[n - 1]), float(s[n]), float(zs[:n].max()))
