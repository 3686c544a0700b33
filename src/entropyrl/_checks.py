"""Input checks shared by the tensor maths: one place for the wording of ``ValueError`` s.

Every public function of the maths modules validates its tensors at the boundary with these
helpers, so a wrong shape, a dtype/device mismatch, a NaN or an out-of-range ratio fails with a
message that names the argument and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def check_float(name: str, x: torch.Tensor) -> None:
    """Require a floating-point tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_ndim(name: str, x: torch.Tensor, ndim: int, legend: str) -> None:
    """Require ``x.ndim == ndim``; ``legend`` spells the expected shape, e.g. ``"[B, T]"``."""
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected shape {legend}, got {list(x.shape)}")


def check_same_shape(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Require every tensor in ``others`` to have the shape and device of ``ref``."""
    for name, x in others.items():
        if x is None:
            continue
        if x.shape != ref.shape:
            raise ValueError(
                f"{name}: expected the shape of {ref_name} {list(ref.shape)}, got {list(x.shape)}"
            )
        if x.device != ref.device:
            raise ValueError(
                f"{name}: expected device {ref.device} (the device of {ref_name}), got {x.device}"
            )


def check_same_dtype(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Require every floating tensor in ``others`` to share the dtype of ``ref``."""
    for name, x in others.items():
        if x is not None and x.dtype != ref.dtype:
            raise ValueError(
                f"{name}: expected dtype {ref.dtype} (the dtype of {ref_name}), got {x.dtype}"
            )


def check_finite(name: str, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Require finite values (at the positions where ``mask`` is true, if given)."""
    values = x.detach()
    if mask is not None:
        values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=x.device))
    # Fast path: one reduction; a NaN/inf anywhere makes the sum non-finite. Only when it is
    # (possibly an overflow of large finite values) do we look element by element.
    if bool(torch.isfinite(values.sum())):
        return
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")


def as_bool_mask(name: str, mask: torch.Tensor, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Validate a response mask against ``like`` and return it as a bool tensor.

    Accepts bool, integer 0/1 or float 0/1 masks.
    """
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(mask).__name__}")
    check_same_shape(like_name, like, **{name: mask})
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name}: expected a 0/1 or bool mask, found other values")
    return mask.bool()


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Require ``value`` in (0, 1] (or [0, 1] with ``allow_zero``); ratios are fractions."""
    low_ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and math.isfinite(value) and low_ok and value <= 1):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(
            f"{name}: expected a fraction in {interval} (not a percent), got {value!r}"
        )


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Require a finite positive (or non-negative) number."""
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
