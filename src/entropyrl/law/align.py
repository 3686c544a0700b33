"""Pair each evaluation score with a policy entropy: at the same step, or of the same policy.

Entropy ``H`` is logged every rollout step; the score ``R`` only at evaluation steps (every k
steps, sometimes also at other steps, e.g. before training). With a *lag* ``ℓ`` (0: pair by
step number; 1: verl's and TRL's logs, where the policy evaluated at step ``s`` is the one
whose entropy is logged at ``s + 1``, see :mod:`.frameworks`), the rule for an evaluation
logged at step ``s`` and its entropy step ``t = s + ℓ``:

1. entropy logged at ``t`` → use it (*exact*);
2. otherwise, entropy logged before and after ``t`` → linear interpolation between the
   nearest logged steps ``t0 < t < t1`` (*interpolated*);
3. otherwise (``t`` before the first or after the last entropy step) → the evaluation is
   *dropped*, and counted: the law is never extrapolated in entropy to make a point.

Shapes: ``S`` logged steps of one key, ``P`` aligned points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from entropyrl.law._data import LawDataError


@dataclass(frozen=True, eq=False)
class Series:
    """One logged metric: values at strictly increasing steps."""

    key: str
    steps: np.ndarray  # [S] float64, strictly increasing
    values: np.ndarray  # [S] float64, finite

    def __len__(self) -> int:
        return len(self.steps)


def make_series(key: str, steps: Any, values: Any, *, source: str = "",
                drop_nonfinite: bool = False, notes: list[str] | None = None) -> Series:
    """Build a :class:`Series` from unsorted ``(step, value)`` pairs.

    Steps are sorted; a step logged twice (e.g. a resumed run that re-logged it) keeps the
    value that came last. NaN/inf values raise ``LawDataError`` naming the key and the steps,
    unless ``drop_nonfinite``: then they are dropped and counted in ``notes`` (exports of
    W&B and other trackers often hold NaN or empty cells); a key with no finite value at all
    is still an error.
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    where = f" in {source}" if source else ""
    if s.shape != v.shape or s.ndim != 1:
        raise LawDataError(f"{key}{where}: steps and values must be 1-D of equal length")
    if not np.isfinite(s).all():
        raise LawDataError(f"{key}{where}: a step number is NaN/inf")
    bad = ~np.isfinite(v)
    if bad.any() and drop_nonfinite and not bad.all():
        shown = ", ".join(f"{x:g}" for x in s[bad][:5]) + (", ..." if bad.sum() > 5 else "")
        if notes is not None:
            notes.append(f"{key}{where}: dropped {int(bad.sum())} NaN/inf value(s) (at step "
                         f"{shown}); pass --strict to refuse them")
        s, v = s[~bad], v[~bad]
    elif bad.any():
        shown = ", ".join(f"{x:g}" for x in s[bad][:5])
        raise LawDataError(
            f"{key}{where}: {int(bad.sum())} NaN/inf value(s) (at step {shown}); a diverged "
            "or failed evaluation cannot be fitted: remove those rows or repair the log"
        )
    # Stable sort, then keep the last occurrence of each step.
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    last = np.append(s[1:] != s[:-1], True)[: len(s)]
    return Series(key=key, steps=s[last], values=v[last])


@dataclass(frozen=True, eq=False)
class Aligned:
    """Evaluation scores paired with entropies by the rule of this module."""

    steps: np.ndarray  # [P] evaluation steps kept
    entropy: np.ndarray  # [P] entropy at those steps (exact or interpolated)
    score: np.ndarray  # [P] score at those steps
    n_exact: int
    n_interpolated: int
    dropped_steps: np.ndarray  # evaluation steps outside the logged entropy range
    lag: float = 0.0  # entropy step − evaluation step of each pair

    @property
    def n_dropped(self) -> int:
        """Evaluations that could not be paired with an entropy."""
        return len(self.dropped_steps)


def align(entropy: Series, score: Series, *, lag: float = 0.0) -> Aligned:
    """Pair every score with the entropy at its step + ``lag`` (exact, interpolated, dropped).

    Args:
        entropy: the entropy series, ``S_H`` steps.
        score: the score series, ``S_R`` steps.
        lag: steps from an evaluation to the entropy it pairs with (module docstring).

    Returns:
        The ``P ≤ S_R`` aligned points and the counts of each case.
    """
    hs, hv = entropy.steps - lag, entropy.values
    if len(hs) == 0:
        raise LawDataError(f"{entropy.key}: no entropy values logged")
    rs, rv = score.steps, score.values
    pos = np.searchsorted(hs, rs)
    exact = (pos < len(hs)) & (hs[np.minimum(pos, len(hs) - 1)] == rs)
    inside = (rs > hs[0]) & (rs < hs[-1])
    keep = exact | inside
    h = np.interp(rs[keep], hs, hv)  # equals hv exactly at logged steps
    return Aligned(
        steps=rs[keep], entropy=h, score=rv[keep], n_exact=int(exact.sum()),
        n_interpolated=int((inside & ~exact).sum()), dropped_steps=rs[~keep], lag=float(lag),
    )
