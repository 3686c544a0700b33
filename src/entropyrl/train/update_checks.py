"""The update's bookkeeping on the device: metrics accumulated, non-finite values flagged.

Neither stops the device per micro-batch: values stay tensors and are read once per step
(:meth:`Accumulator.result`, :meth:`Health.check`). ``ENTROPYRL_DEBUG_CHECKS=1`` (or on,
true, yes) makes :meth:`Health.flag` read each flag at once, stopping before the bad update.
"""

from __future__ import annotations

import torch

from entropyrl._checks import debug_checks_forced
from entropyrl.distributed import Dist
from entropyrl.errors import UserError

# How each objective metric combines across micro-batches, ranks and updates.
_SHARES = {"policy_loss", "entropy_bonus", "total"}  # parts of a normalised sum: add up
_MINS = {"ratio_min"}
_MAXS = {"ratio_max"}


class NonFiniteError(UserError):
    """A loss, gradient or weight became NaN/inf; the run stops before anything is saved."""


def debug_checks() -> bool:
    """``ENTROPYRL_DEBUG_CHECKS=1``: read every non-finite flag at once (a host sync each)."""
    return debug_checks_forced()


class Accumulator:
    """Token-weighted means, sums of shares, min/max — kept as device tensors, read once."""

    def __init__(self) -> None:
        self.weighted: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}
        self.shares: dict[str, torch.Tensor] = {}
        self.mins: dict[str, torch.Tensor] = {}
        self.maxs: dict[str, torch.Tensor] = {}

    def add(self, metrics: dict[str, torch.Tensor], n_tokens: int) -> None:
        """Add one micro-batch's metrics (device scalars) over ``n_tokens`` response tokens."""
        for key, value in metrics.items():
            v = value.detach().to(torch.float64)
            if key in _SHARES:
                self.shares[key] = self.shares[key] + v if key in self.shares else v
            elif key in _MINS:
                self.mins[key] = torch.minimum(self.mins[key], v) if key in self.mins else v
            elif key in _MAXS:
                self.maxs[key] = torch.maximum(self.maxs[key], v) if key in self.maxs else v
            else:
                self.weighted[key] = self.weighted.get(key, 0.0) + v * n_tokens
                self.weights[key] = self.weights.get(key, 0.0) + n_tokens

    def result(self, n_updates: int, dist: Dist) -> dict[str, float]:
        """The step's values over all ranks: one read of the device, then the reductions."""
        keys_w, keys_s = sorted(self.weighted), sorted(self.shares)
        keys_min, keys_max = sorted(self.mins), sorted(self.maxs)
        tensors = ([self.weighted[k] for k in keys_w] + [self.shares[k] for k in keys_s]
                   + [self.mins[k] for k in keys_min] + [self.maxs[k] for k in keys_max])
        local = torch.stack(tensors).tolist() if tensors else []  # the step's one read
        n, s = len(keys_w), len(keys_s)
        sums = dist.sum(local[:n] + [self.weights[k] for k in keys_w] + local[n : n + s])
        mins = dist.min(local[n + s : n + s + len(keys_min)])
        maxs = dist.max(local[n + s + len(keys_min) :])
        out = {k: sums[i] / max(sums[n + i], 1.0) for i, k in enumerate(keys_w)}
        out.update({k: sums[2 * n + i] / n_updates for i, k in enumerate(keys_s)})
        out.update(dict(zip(keys_min, mins, strict=True)))
        out.update(dict(zip(keys_max, maxs, strict=True)))
        return out


class Health:
    """Non-finite flags of one step's updates, on the device; :meth:`check` reads them once."""

    def __init__(self, step: int, dist: Dist, debug: bool) -> None:
        self.step, self.dist, self.debug = step, dist, debug
        self.flags: list[tuple[str, int, torch.Tensor]] = []

    def flag(self, kind: str, update: int, bad: torch.Tensor) -> None:
        """Record ``bad`` (a bool tensor); in debug mode stop at once if it is set on any rank."""
        if self.debug:
            if self.dist.max([float(bad)])[0]:
                raise non_finite_error(kind, self.step, update, deferred=False)
        else:
            self.flags.append((kind, update, bad))

    def check(self) -> None:
        """Raise for the first flagged update of the step, on every rank alike."""
        if not self.flags:
            return
        bad = self.dist.max(torch.stack([f for _, _, f in self.flags]).float().tolist())
        for (kind, update, _), b in zip(self.flags, bad, strict=True):
            if b:
                raise non_finite_error(kind, self.step, update, deferred=True)


def non_finite_error(kind: str, step: int, update: int, *, deferred: bool) -> NonFiniteError:
    """The message of a ``loss``, ``grad_norm`` or ``weights`` that became NaN/inf."""
    when = ("the run stopped at the end of the step, before saving" if deferred
            else "the run stopped before this update")
    what, fix = {
        "loss": ("the loss", "Lower optim.lr, keep optim.grad_clip > 0, or check the rewards"),
        "grad_norm": ("the gradient norm", "Lower optim.lr or set optim.grad_clip"),
        "weights": ("the weights", "Lower optim.lr or check optim.eps"),
    }[kind]
    return NonFiniteError(f"{what} became NaN/inf at step {step} (update {update}). {fix}; "
                          f"{when} and the last checkpoint is intact.")


def weights_non_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """A bool tensor: some weight of this rank is NaN/inf (read later, see :class:`Health`)."""
    local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
    return torch.stack([~torch.isfinite(p.detach()).all() for p in local]).any()
