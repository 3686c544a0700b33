"""Where a method sits relative to the baseline's entropy–performance law.

The law ``R = −a·exp(H) + b`` ties accuracy to entropy along one curve per model and data
(PAPER.md §1). A method that keeps more entropy than the baseline can therefore end with lower
accuracy and still be exactly on the baseline's curve: it traded accuracy for entropy at the
baseline's rate. Whether an entropy-control method *helps* is whether its points lie above
that curve. The offset measures it::

    offset = mean_j [ R_j − (b₀ − a₀·exp(H_j)) ]

over the method's validations ``j`` in the second half of its validated step range (the first
half is shared warm-up: every method starts from the same base model) whose entropy lies
inside the baseline's fitted range ``[min H₀, max H₀]`` (the baseline's law is never
extrapolated). ``a₀, b₀``: the baseline's least-squares law. Accuracy as a fraction, so 0.02
is 2 points above the curve.

Shapes: ``P`` aligned validation points of a run.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from entropyrl.report.summary import LawResult, Stat

LATE_FRACTION = 0.5  # the offset averages validations after this share of the step range


class LawOffset(NamedTuple):
    """A run's mean accuracy above the baseline's law, and how many validations it averages."""

    offset: Stat
    n_points: int


def law_offset(base: LawResult, run: LawResult, *,
               late_fraction: float = LATE_FRACTION) -> LawOffset:
    """Mean of ``R − R̂₀(H)`` over ``run``'s late validations inside the baseline's range.

    Args:
        base: the baseline's law (``fit`` and its ``[P₀]`` fitted entropies).
        run: the compared run's aligned ``[P]`` steps, entropies and scores.
        late_fraction: validations with step ``≥ s_first + late_fraction·(s_last − s_first)``
            are averaged.

    Returns:
        The offset (``None`` with the reason when the baseline has no law or no validation
        qualifies) and the number of validations averaged.
    """
    if base.fit is None:
        return LawOffset(Stat(None, f"the baseline has no law fit ({base.reason})"), 0)
    if not len(run.steps):
        return LawOffset(Stat(None, run.reason or "no validation points"), 0)
    cut = run.steps.min() + late_fraction * np.ptp(run.steps)
    late = run.steps >= cut
    inside = (run.entropy >= base.entropy.min()) & (run.entropy <= base.entropy.max())
    use = late & inside
    n = int(use.sum())
    if n == 0:
        return LawOffset(Stat(None, (
            f"none of the {int(late.sum())} validation(s) after step {cut:g} has an entropy "
            f"inside the baseline's fitted range [{base.entropy.min():.3g}, "
            f"{base.entropy.max():.3g}] nats; the baseline's law is not extrapolated")), 0)
    predicted = base.fit.b - base.fit.a * np.exp(run.entropy[use])
    return LawOffset(Stat(float(np.mean(run.score[use] - predicted))), n)
