"""Walking the rows in chunks: chunk size, the two row sources, and the forward/backward loops.

A *source* yields ``(r0, r1, x)`` for consecutive row ranges, ``x = z/τ`` ``[c, V]`` either
read from logits (:class:`LogitChunks`) or recomputed from hidden states and the LM head
(:class:`HiddenChunks`); :func:`forward_rows` and :func:`backward_rows` run the kernels of
:mod:`.kernels` over a source.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from entropyrl.tokenstats.kernels import (
    chunk_forward,
    chunk_grad,
    compute_dtype,
    make_buffers,
    scaled,
)

# Size of one float32 work buffer [chunk_rows, V] by default; two are live at a time, plus
# (for low-precision hidden states) one chunk of logits in the input dtype. On CPU the work is
# memory-bound and chunks whose two buffers fit the last-level cache run fastest: 4-8 MiB beat
# 16-128 MiB by 1.2-1.7x (2 threads, 32 MiB L3). On a GPU small chunks pay kernel-launch
# overhead: on an H100, 128 MiB is as fast as the unchunked computation, 32 MiB 1.3x slower.
CPU_CHUNK_BYTES = 8 * 2**20
DEVICE_CHUNK_BYTES = 128 * 2**20
# From hidden states every chunk also streams the whole [V, D] weight and, in backward, its
# gradient (a rank-c update of V x D values): below ~256 rows that traffic, not the matmuls,
# dominates (3x slower at 13 rows than at 256 for V = 151,936, D = 896 on CPU).
HIDDEN_MIN_ROWS = 256


def default_chunk_rows(vocab_size: int, device: torch.device | str = "cpu") -> int:
    """Rows per chunk such that one float32 ``[rows, V]`` buffer fits the device's budget.

    ``CPU_CHUNK_BYTES`` (8 MiB: ~65 rows at V = 32,000, ~13 at 151,936) on CPU,
    ``DEVICE_CHUNK_BYTES`` (128 MiB: ~1,048 / ~220 rows) on accelerators.
    """
    budget = CPU_CHUNK_BYTES if torch.device(device).type == "cpu" else DEVICE_CHUNK_BYTES
    return max(1, budget // (4 * vocab_size))


class LogitChunks:
    """Chunks ``x = z/τ`` ``[c, V]`` of the logits' rows, in order, with two work buffers.

    A 3-D tensor that cannot be viewed as ``[B*T, V]`` (``logits[:, :-1]`` of a model output)
    is walked response by response instead of being copied whole.
    """

    def __init__(self, logits: torch.Tensor, tau: float, rows: int) -> None:
        vocab, cdt = logits.shape[-1], compute_dtype(logits.dtype)
        try:
            self.blocks = [logits.view(-1, vocab)]
        except RuntimeError:
            self.blocks = list(logits.unbind(0))
        self.tau, self.rows = tau, rows
        n = logits.numel() // vocab
        self.bufs = make_buffers(max(1, min(rows, n)), vocab, cdt, logits.device)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(r0, r1, x)`` per chunk of rows ``r0:r1``."""
        r0 = 0
        for block in self.blocks:
            for z in block.split(self.rows):
                yield r0, r0 + z.shape[0], scaled(z, self.tau, self.bufs[0], owned=False)
                r0 += z.shape[0]


class HiddenChunks:
    """Chunks ``x = (h Wᵀ + b)/τ`` ``[c, V]`` recomputed from hidden states, with buffers."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 tau: float, rows: int) -> None:  # fmt: skip
        self.hidden, self.weight, self.bias, self.tau = hidden, weight, bias, tau
        vocab, cdt = weight.shape[0], compute_dtype(hidden.dtype)
        self.rows = max(1, min(rows, hidden.shape[0]))
        self.bufs = make_buffers(self.rows, vocab, cdt, hidden.device)
        # Logits come out of the matmul in the input dtype, exactly as the model's LM head
        # would produce them, and are upcast per chunk.
        self.native: torch.Tensor | None = None
        if hidden.dtype != cdt:
            self.native = torch.empty(self.rows, vocab, dtype=hidden.dtype, device=hidden.device)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(r0, r1, x)`` per chunk of rows ``r0:r1``, ``x`` in a work buffer."""
        for r0 in range(0, self.hidden.shape[0], self.rows):
            h = self.hidden[r0 : r0 + self.rows]
            c = h.shape[0]
            dest = self.bufs[0][:c] if self.native is None else self.native[:c]
            if self.bias is None:
                torch.mm(h, self.weight.t(), out=dest)
            else:
                torch.addmm(self.bias, h, self.weight.t(), out=dest)
            yield r0, r0 + c, scaled(dest, self.tau, self.bufs[0], owned=self.native is None)


Chunks = LogitChunks | HiddenChunks


def forward_rows(
    chunks: Chunks, y: torch.Tensor, with_entropy: bool, need_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(log p_y, H, lse)`` ``[N]`` over all chunks (``H``/``lse`` None unless asked)."""
    dtype = chunks.bufs[0].dtype
    outs = [torch.empty(y.shape[0], dtype=dtype, device=y.device) for _ in range(3)]
    for r0, r1, x in chunks:
        values = chunk_forward(x, y[r0:r1], with_entropy, need_lse, chunks.bufs)
        for out, value in zip(outs, values, strict=True):
            if value is not None:
                out[r0:r1] = value
    return outs[0], outs[1] if with_entropy else None, outs[2] if need_lse else None


def backward_rows(
    ctx: Any, chunks: Chunks, y: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor | None,
    g_lp: torch.Tensor | None, g_h: torch.Tensor | None, out_rows: torch.Tensor | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:  # fmt: skip
    """Yield ``(r0, r1, ∂L/∂z)`` per chunk, written into ``out_rows[r0:r1]`` or a buffer."""
    g_lp = torch.zeros_like(lse) if g_lp is None else g_lp
    for r0, r1, x in chunks:
        out = chunks.bufs[0][: r1 - r0] if out_rows is None else out_rows[r0:r1]
        h, gh = (None, None) if g_h is None or entropy is None else (entropy[r0:r1], g_h[r0:r1])
        g = chunk_grad(x, y[r0:r1], lse[r0:r1], h, g_lp[r0:r1], gh, ctx.tau, chunks.bufs, out)
        yield r0, r1, g
