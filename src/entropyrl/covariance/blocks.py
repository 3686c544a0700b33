"""Block-wise helpers of the covariance selection, which work on blocks of ``BLOCK`` tokens.

Whole passes over a mini-batch cost more in memory traffic than in arithmetic on a CPU; these
replace some by passes over one value per block and over the few blocks that matter.

- :func:`padded_to_blocks`: a buffer rounded up to whole blocks;
- :class:`BlockCounts`: where the nonzero entries of 0/1 flags are (the ``j``-th one), from a
  running count over the blocks' counts and one inside the blocks asked about, instead of a
  running count over every entry;
- :func:`largest`: ``torch.topk`` over the blocks with the largest maxima only.

All are exact: ``BlockCounts`` finds the positions a running count over every entry finds, and
``largest`` the same ``k``-th largest value, and the same entries above it, as ``torch.topk``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

BLOCK = 64


def padded_to_blocks(like: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """A new tensor like ``like`` ``[n]`` but ``[n']``, ``n`` rounded up to whole blocks.

    Its ``n' − n`` last entries hold ``fill``; the others are left for the caller to write.
    """
    n = like.numel()
    out = torch.empty(-(-n // BLOCK) * BLOCK, dtype=like.dtype, device=like.device)
    out[n:] = fill
    return out


class BlockCounts(NamedTuple):
    """Where the nonzero entries of 0/1 flags ``[n]`` are, from counts per block of ``BLOCK``.

    Replaces a running count over all ``n`` entries (``n`` int64s written and read back) by
    one over the block counts, then one inside the few blocks asked about.
    """

    blocks: torch.Tensor  # [nb, BLOCK] the flags
    counts: torch.Tensor  # [nb] float64, nonzero entries per block (exact)
    ends: torch.Tensor  # [nb] float64, nonzero entries up to each block's end

    @classmethod
    def of(cls, flags: torch.Tensor) -> BlockCounts:
        """The counts of ``flags`` ``[n]``, ``n`` a multiple of ``BLOCK``."""
        blocks = flags.view(-1, BLOCK)
        counts = blocks.sum(1).double()  # sums of at most BLOCK ones: exact in any float
        return cls(blocks, counts, counts.cumsum(0))

    def total(self) -> int:
        """The number of nonzero entries (reads it on the host)."""
        return int(self.ends[-1]) if len(self.ends) else 0

    def positions(self, ranks: torch.Tensor) -> torch.Tensor:
        """Positions ``[k]`` of the ``ranks``-th nonzero entries (from 1), ``n`` past the last."""
        if len(self.ends) == 0:
            return torch.zeros_like(ranks)
        ranks = ranks.to(self.ends)
        block = torch.searchsorted(self.ends, ranks).clamp_(max=len(self.ends) - 1)  # [k]
        within = (ranks - self.ends[block] + self.counts[block]).to(self.blocks.dtype)
        offset = torch.searchsorted(self.blocks[block].cumsum(1), within[:, None]).squeeze(1)
        return torch.where(ranks <= self.ends[-1], block * BLOCK + offset, self.blocks.numel())


def largest(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest of ``values`` ``[n]`` and their positions, ``[k]`` each, any order.

    ``torch.topk`` over the blocks of ``BLOCK`` entries with the ``k`` largest maxima only
    (``n`` a multiple of ``BLOCK``), instead of over all ``n``: it copies its whole input
    (16 bytes an entry) before selecting. Exact: fewer than ``k`` blocks hold a value above
    the ``k``-th largest value ``v``, so all of them are kept, and the kept blocks hold at
    least ``k`` values ``≥ v``; the ``k``-th largest value and the values above it are thus
    the same. Which of several values equal to ``v`` come back is arbitrary, as with
    ``torch.topk``.
    """
    blocks = values.view(-1, BLOCK)
    if blocks.shape[0] <= 2 * k:  # too few blocks to leave many out
        top = torch.topk(values, k, sorted=False)
        return top.values, top.indices
    kept = torch.topk(blocks.amax(1), k, sorted=False).indices  # [k]
    top = torch.topk(blocks[kept].view(-1), k, sorted=False)
    return top.values, kept[top.indices // BLOCK] * BLOCK + top.indices % BLOCK

