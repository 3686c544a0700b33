"""Collectives over the ranks of a run: the only module that imports ``torch.distributed``.

Under NCCL every tensor handed to a collective must live on the rank's GPU, under gloo on the
CPU. :class:`Dist` knows the group's device and moves every tensor there (:meth:`Dist.put`)
before the backend sees it, then hands results back on the caller's device or as Python
numbers. Callers build their tensors wherever they like; they never call a backend directly.

With one process (``Dist.single()``) every method is the identity and nothing is copied, so
the maths modules (selection, batch metrics) run unchanged without a process group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch


class Backend(Protocol):
    """The collectives the trainer needs (``torch.distributed`` or a test double)."""

    def all_reduce(self, t: torch.Tensor, op: str) -> None:
        """In place over ranks; ``op`` is ``sum``, ``min`` or ``max``."""

    def all_gather(self, out: list[torch.Tensor], t: torch.Tensor) -> None:
        """``out[r]`` ← rank ``r``'s ``t`` (same shape on every rank)."""

    def barrier(self) -> None:
        """Wait for every rank."""


class _TorchBackend:
    """``torch.distributed`` on one process group."""

    def __init__(self, group: Any):
        import torch.distributed as dist

        self._dist = dist
        self._group = group
        self._ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}

    def all_reduce(self, t: torch.Tensor, op: str) -> None:
        self._dist.all_reduce(t, op=self._ops[op], group=self._group)

    def all_gather(self, out: list[torch.Tensor], t: torch.Tensor) -> None:
        self._dist.all_gather(out, t, group=self._group)

    def barrier(self) -> None:
        self._dist.barrier(group=self._group)


class Dist:
    """The ranks of a run and the device their collectives use.

    Attributes:
        world: number of ranks.
        rank: this rank, ``0 … world − 1``.
        device: where collective tensors must live (the rank's GPU under NCCL, CPU under gloo).
    """

    def __init__(self, world: int, rank: int, device: torch.device | str, backend: Backend | None):
        if world > 1 and backend is None:
            raise ValueError(f"backend: required with world = {world} > 1")
        self.world = world
        self.rank = rank
        self.device = torch.device(device)
        self._backend = backend

    @classmethod
    def single(cls) -> Dist:
        """One process: every collective is the identity."""
        return cls(1, 0, "cpu", None)

    @classmethod
    def from_process_group(cls, group: Any = None, device: torch.device | str | None = None
                           ) -> Dist:
        """The ranks of an initialised ``torch.distributed`` group (default: the world).

        ``device`` defaults to the current CUDA device under NCCL and the CPU otherwise.
        """
        import torch.distributed as dist

        group = group if group is not None else dist.group.WORLD
        if device is None:
            # A mixed group reports "cuda:nccl,cpu:gloo"; NCCL is then the collectives' backend.
            nccl = "nccl" in str(dist.get_backend(group))
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        return cls(world, rank, device, _TorchBackend(group))

    @classmethod
    def from_accelerator(cls, accelerator: Any) -> Dist:
        """The accelerator's ranks; collectives on the default group's device."""
        if accelerator.num_processes == 1:
            return cls.single()
        return cls.from_process_group()

    @property
    def is_main(self) -> bool:
        """Rank 0."""
        return self.rank == 0

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """A contiguous copy of ``t`` on the collective device (the only way into a backend)."""
        return t.detach().to(self.device, copy=True).contiguous()

    # ------------------------------------------------------------------ reductions

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Element-wise ``sum``/``min``/``max`` of ``t`` over ranks, on ``t``'s device."""
        if self.world == 1:
            return t
        assert self._backend is not None
        y = self.put(t)
        self._backend.all_reduce(y, op)
        return y.to(t.device)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise float64 sum of numbers over ranks."""
        if self.world == 1:
            return [float(v) for v in values]
        return self.all_reduce(torch.tensor(values, dtype=torch.float64)).tolist()

    def min(self, values: Sequence[float]) -> list[float]:
        """Element-wise minimum over ranks."""
        if self.world == 1:
            return [float(v) for v in values]
        return self.all_reduce(torch.tensor(values, dtype=torch.float64), "min").tolist()

    def max(self, values: Sequence[float]) -> list[float]:
        """Element-wise maximum over ranks."""
        if self.world == 1:
            return [float(v) for v in values]
        return self.all_reduce(torch.tensor(values, dtype=torch.float64), "max").tolist()

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            assert self._backend is not None
            self._backend.barrier()

    # ------------------------------------------------------------------ gathers

    def _gather_same(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``t`` (same shape everywhere), back on ``t``'s device."""
        assert self._backend is not None
        send = self.put(t)
        out = [torch.empty_like(send) for _ in range(self.world)]
        self._backend.all_gather(out, send)
        return [o.to(t.device) for o in out]

    def counts(self, n_local: int) -> tuple[int, int]:
        """(items on lower ranks, total over ranks) of a per-rank count."""
        if self.world == 1:
            return 0, n_local
        totals = [int(c) for c in torch.cat(self._gather_same(torch.tensor([n_local])))]
        return sum(totals[: self.rank]), sum(totals)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of every rank in rank order: ``[B_r, ...]`` → ``[Σ_r B_r, ...]``.

        Trailing dimensions may differ between ranks (e.g. response widths); they are padded
        with zeros to the widest rank. Bool tensors come back as bool.
        """
        if self.world == 1:
            return t
        shapes = self._gather_same(torch.tensor(t.shape, dtype=torch.long))
        widest = torch.stack(shapes).max(dim=0).values
        send = t.to(torch.uint8) if t.dtype == torch.bool else t
        pad: list[int] = []
        for dim in reversed(range(t.dim())):
            pad += [0, int(widest[dim]) - t.shape[dim]]
        send = torch.nn.functional.pad(send, pad)
        parts = self._gather_same(send)
        out = torch.cat([p[: int(s[0])] for p, s in zip(parts, shapes, strict=True)])
        return out.bool() if t.dtype == torch.bool else out

    def merge_top_k(self, values: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
        """Global top-``k`` by value (descending), ties by the lower index, from each rank's own.

        Args:
            values: ``[n]`` this rank's candidates (at most ``k``).
            indices: ``[n]`` their global indices (unique over ranks).
            k: how many to keep over all ranks.

        Returns:
            The ``k`` (or fewer, if fewer exist) global indices, ascending, on ``indices``'
            device.
        """
        if self.world == 1:
            order = indices.argsort(stable=True)
            order = order[values[order].argsort(descending=True, stable=True)]
            return indices[order[:k]].sort().values
        pad = k - int(values.numel())
        vals = torch.cat([values.double(), values.new_full((pad,), float("-inf"),
                                                           dtype=torch.float64)])
        idxs = torch.cat([indices, indices.new_full((pad,), torch.iinfo(torch.long).max)])
        pool_v = torch.cat(self._gather_same(vals))
        pool_i = torch.cat(self._gather_same(idxs))
        order = pool_i.argsort(stable=True)
        order = order[pool_v[order].argsort(descending=True, stable=True)]
        top = pool_i[order[:k]]
        return top[top != torch.iinfo(torch.long).max].sort().values


# ---------------------------------------------------------------------- sharded state


def _is_sharded(model: Any) -> bool:
    """Some parameter of ``model`` is a DTensor shard (FSDP2)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def full_model_state(model: Any) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on every rank; a collective when ``model`` is sharded."""
    if not _is_sharded(model):
        return dict(model.state_dict())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def full_parameters(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full tensor)`` one parameter at a time (a collective per sharded parameter).

    Every rank must consume the whole iterator in the same order. Peak extra memory is one
    full parameter, where a full state dict would hold the whole model at once.
    """
    for name, p in model.named_parameters():
        full = p.full_tensor() if type(p).__name__ == "DTensor" else p
        yield name, full.detach()


def optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state to checkpoint: full on rank 0 under sharding (a collective)."""
    if not _is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: Any, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Restore :func:`optimizer_state`'s result (every rank passes the same full state)."""
    if not _is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def bf16_fp32_reduce_policy() -> Any:
    """FSDP2 mixed precision: bf16 compute copies of fp32 sharded masters, fp32 reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
