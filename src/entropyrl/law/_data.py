"""Input checks of the law tool: one error type and one wording for bad data.

Argument checks (``check_choice``, ``check_fraction``) word their ``ValueError`` like
``entropyrl._checks``, which is not imported here because it imports torch: the law tool
reads logs and fits two numbers, and ``entropyrl fit`` should start in well under a second.

Bad data here is something the user can fix (too few evaluations, a constant entropy, a NaN in
a log), so the error is a :class:`~entropyrl.errors.UserError` (the CLI prints it and exits
with status 2) and also a ``ValueError`` (what the maths modules raise for bad arguments), so
library callers can catch either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from entropyrl.errors import UserError


class LawDataError(UserError, ValueError):
    """Data that cannot support the requested fit; the message names the problem and the fix."""


def as_points(name: str, values: Any) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array of finite numbers, or raise ``LawDataError``.

    Accepts lists, numpy arrays and torch tensors (anything ``np.asarray`` converts).
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise LawDataError(
            f"{name}: expected numbers, got {type(values).__name__} ({err})"
        ) from None
    if arr.ndim != 1:
        raise LawDataError(f"{name}: expected a 1-D sequence [P], got shape {list(arr.shape)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.flatnonzero(bad)[:5].tolist()
        raise LawDataError(
            f"{name}: {int(bad.sum())} NaN/inf value(s) (first at index {where}); remove or "
            "repair those rows before fitting"
        )
    return arr


def check_same_length(**arrays: np.ndarray) -> int:
    """Require every array to have the same length; return it."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise LawDataError(f"expected arrays of the same length, got {lengths}")
    return next(iter(lengths.values()))


def check_enough(what: str, n: int, needed: int, fix: str) -> None:
    """Require at least ``needed`` usable points."""
    if n < needed:
        raise LawDataError(f"{what}: {n} usable point(s), at least {needed} needed; {fix}")


def check_level(level: float) -> None:
    """Require a confidence level strictly between 0 and 1."""
    if not (isinstance(level, int | float) and 0 < level < 1):
        raise ValueError(f"level: expected a confidence level in (0, 1), e.g. 0.95, got {level!r}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_fraction(name: str, value: float) -> None:
    """Require ``value`` in (0, 1] (a fraction, not a percent)."""
    ok = isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1
    if not ok:
        raise ValueError(f"{name}: expected a fraction in (0, 1] (not a percent), got {value!r}")


def t_quantile(level: float, dof: int) -> float:
    """Two-sided Student-t quantile: ``P(|T| <= q) = level`` with ``dof`` degrees of freedom."""
    from scipy.special import stdtrit  # lighter to import than scipy.stats

    return float(stdtrit(dof, 0.5 + level / 2.0))
