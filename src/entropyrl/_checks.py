"""Input checks shared by the tensor maths: one place for the wording of ``ValueError`` s.

Every public function of the maths modules validates its tensors at the boundary with these
helpers, so a wrong shape, a dtype/device mismatch, a NaN or an out-of-range ratio fails with a
message that names the argument and what was expected.

Shape, dtype and device checks read only metadata and always run. Checks of *values* (finite,
0/1 masks, subsets) must read a tensor's contents on the host, which on an accelerator waits
for every queued kernel: a few such reads per micro-batch stall the GPU. Whether they run is
decided by :func:`value_checks_enabled`, from the environment variable ``ENTROPYRL_DEBUG_CHECKS``:

- unset or ``auto`` (the default): on tensors that live on the CPU, where reading a value
  costs no stall; skipped on accelerators;
- ``1`` (``on``, ``true``): always (debugging a NaN on a GPU);
- ``0`` (``off``, ``false``): never.

Skipping them keeps the safety net of training: a NaN at a valid position (or an infinite
advantage) reaches the loss, and the trainer stops on a non-finite loss before the optimizer
step.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

DEBUG_CHECKS_ENV = "ENTROPYRL_DEBUG_CHECKS"
_ALWAYS = ("1", "on", "true", "yes")
_NEVER = ("0", "off", "false", "no")


def debug_checks_forced() -> bool:
    """``ENTROPYRL_DEBUG_CHECKS`` asks for every check, everywhere (1, true, ...)."""
    return os.environ.get(DEBUG_CHECKS_ENV, "").strip().lower() in _ALWAYS


def value_checks_enabled(x: torch.Tensor) -> bool:
    """Whether value checks on ``x`` run (``ENTROPYRL_DEBUG_CHECKS``; module docstring).

    Raises:
        ValueError: the environment variable holds something else than auto, 1 or 0.
    """
    mode = os.environ.get(DEBUG_CHECKS_ENV, "").strip().lower()
    if mode in ("", "auto"):
        return x.device.type == "cpu"
    if mode in _ALWAYS:
        return True
    if mode in _NEVER:
        return False
    raise ValueError(
        f"{DEBUG_CHECKS_ENV}: expected 1 (check tensor values everywhere), 0 (never) or auto "
        f"(unset: only tensors on the CPU), got {mode!r}"
    )


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
    """Require finite values (at the positions where ``mask`` is true, if given).

    Always checks: callers on a hot path ask :func:`value_checks_enabled` first.
    """
    values = x.detach()
    # Fast path: one reduction of the unmasked values; a finite sum means no NaN/inf anywhere.
    # Only when it is not (NaN at padding, an overflow of large finite values, or a real NaN)
    # do we mask and look element by element.
    if math.isfinite(float(values.sum())):
        return
    if mask is not None:
        values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=x.device))
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{name}: expected finite values, found {bad} NaN/inf entries")


def check_all_finite(tensors: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> None:
    """:func:`check_finite` on several tensors with one host read when all are finite.

    The first tensor (in ``tensors``' order) with a NaN/inf at a valid position is named.
    """
    sums = [x.detach().sum() for x in tensors.values()]
    total = sums[0]
    for part in sums[1:]:
        total = total + part
    if math.isfinite(float(total)):
        return
    for name, x in tensors.items():
        check_finite(name, x, mask)


def as_bool_mask(name: str, mask: torch.Tensor, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """Validate a response mask against ``like`` and return it as a bool tensor.

    Accepts bool, integer 0/1 or float 0/1 masks. Checking the 0/1 values reads the mask on
    the host; the trainer passes bool masks, which need no check.
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
