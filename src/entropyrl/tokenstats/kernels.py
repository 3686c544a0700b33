"""The maths of one chunk of rows: log-probs, entropy, ``lse`` and the logits gradient.

Each function works on ``x = z/τ`` ``[c, V]`` (a chunk of ``c`` rows of scaled logits) and
writes its ``[c, V]`` intermediates into two caller-owned work buffers, so no other ``[c, V]``
tensor is allocated. Formulas: the package docstring of :mod:`entropyrl.tokenstats`.
"""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype chunks are computed in: float32, or float64 for float64 input."""
    return torch.promote_types(dtype, torch.float32)


def make_buffers(
    rows: int, vocab: int, dtype: torch.dtype, device: torch.device
) -> list[torch.Tensor]:
    """The two reused ``[rows, V]`` work buffers."""
    return [torch.empty(rows, vocab, dtype=dtype, device=device) for _ in range(2)]


def scaled(z: torch.Tensor, tau: float, buf: torch.Tensor, owned: bool) -> torch.Tensor:
    """``z / τ`` in ``buf``'s dtype; ``z`` itself when nothing changes and ``z`` is read-only."""
    if z.dtype == buf.dtype and tau == 1.0:
        return z
    if owned:  # z is a work buffer of the compute dtype: scale in place
        return z.div_(tau)
    x = buf[: z.shape[0]]
    x.copy_(z)  # upcast first so the division happens in float32, not in bf16
    return x.div_(tau) if tau != 1.0 else x


def chunk_forward(
    x: torch.Tensor, y: torch.Tensor, with_entropy: bool, need_lse: bool, bufs: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(log p_y, H, lse)`` of the rows of ``x = z/τ`` ``[c, V]``.

    ``bufs[1]`` receives ``log p``; ``bufs[0]`` (which may hold ``x``) then receives ``p``.
    """
    c = x.shape[0]
    lse = None
    if need_lse:
        # lse = x_m − log p_m at the row's argmax m, where log p_m ∈ [−log V, 0]: as exact as
        # x_m itself, unlike x_y − log p_y for a very unlikely token y.
        x_max, arg = x.max(dim=-1, keepdim=True)
    logp = torch.log_softmax(x, dim=-1, out=bufs[1][:c])
    if need_lse:
        lse = (x_max - logp.gather(1, arg)).squeeze(1)
    logprob = logp.gather(1, y.unsqueeze(1)).squeeze(1)
    entropy = None
    if with_entropy:
        p = torch.exp(logp, out=bufs[0][:c])
        # p·log p in place of p: no [c, V] temporary, and a plain float32 product (a matmul
        # here would silently run in TF32 on GPUs where the user enabled it).
        entropy = -torch.mul(p, logp, out=p).sum(-1)
    return logprob, entropy, lse


def chunk_grad(
    x: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor | None,
    g_lp: torch.Tensor, g_h: torch.Tensor | None, tau: float, bufs: list[torch.Tensor],
    out: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Write ``∂L/∂z`` of the chunk (module docstring formula) into ``out`` ``[c, V]``.

    ``g_lp`` is zeros when the log-probs are unused; ``g_h`` is None when the entropy is.
    """
    c = x.shape[0]
    logp = torch.sub(x, lse.unsqueeze(1), out=bufs[1][:c])
    p = torch.exp(logp, out=bufs[0][:c])
    if g_h is None or entropy is None:
        torch.mul(p, (-g_lp / tau).unsqueeze(1), out=out)
    else:
        # t = −(g_lp + g_H (log p + H))/τ in place of log p, then ∂L/∂z = p·t + one-hot term.
        a = (-(g_lp + g_h * entropy) / tau).unsqueeze(1)
        torch.mul(p, torch.addcmul(a, logp, (-g_h / tau).unsqueeze(1), out=logp), out=out)
    return out.scatter_add_(1, y.unsqueeze(1), (g_lp / tau).unsqueeze(1).to(out.dtype))
