"""The public functions: token statistics from logits or from hidden states, and a reference.

Each has an autograd Function that saves only its inputs and the per-row ``lse`` and ``H`` and
recomputes every chunk in backward (:mod:`.chunking`, :mod:`.kernels`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from entropyrl.tokenstats._validate import check_common, check_head, check_rows, check_tokens
from entropyrl.tokenstats.chunking import (
    HIDDEN_MIN_ROWS,
    HiddenChunks,
    LogitChunks,
    backward_rows,
    default_chunk_rows,
    forward_rows,
)
from entropyrl.tokenstats.kernels import compute_dtype


class TokenStats(NamedTuple):
    """Per-position statistics, shaped like ``tokens`` (``[B, T]`` or ``[N]``).

    Attributes:
        logprobs: ``log p(y)`` of the given tokens at the given temperature, float32.
        entropy: full-vocabulary entropy ``−Σ p log p``, float32; ``None`` when not asked for.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor | None


def _save(ctx: Any, tau: float, rows: int, stats: tuple[Any, ...], *inputs: Any) -> Any:
    """Save the inputs and the per-row ``lse``, ``H``; return the Function's two outputs."""
    logprob, entropy, lse = stats
    ctx.save_for_backward(*inputs, lse, entropy)
    ctx.tau, ctx.rows = tau, rows
    ctx.set_materialize_grads(False)  # an unused output arrives as None: skip its terms
    if entropy is None:
        entropy = logprob.new_empty(0)
        ctx.mark_non_differentiable(entropy)
    return logprob, entropy


class _LogitsStats(torch.autograd.Function):
    """Chunked stats from logits; saves only the inputs and ``lse``, ``H`` per row."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, y: torch.Tensor, tau: float, with_entropy: bool, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stats = forward_rows(LogitChunks(logits, tau, rows), y, with_entropy, True)
        return _save(ctx, tau, rows, stats, logits, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_lp: torch.Tensor | None, g_h: torch.Tensor | None) -> tuple[Any, ...]:
        logits, y, lse, entropy = ctx.saved_tensors
        if g_lp is None and g_h is None:
            return None, None, None, None, None
        # Contiguous even when the logits are a strided view, so rows map onto [N, V].
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad_rows = grad.view(-1, logits.shape[-1])
        chunks = LogitChunks(logits, ctx.tau, ctx.rows)
        direct = grad.dtype == chunks.bufs[0].dtype  # write straight into grad, else cast
        for r0, r1, g in backward_rows(
            ctx, chunks, y, lse, entropy, g_lp, g_h, grad_rows if direct else None
        ):
            if not direct:
                grad_rows[r0:r1].copy_(g)
        return grad, None, None, None, None


def token_stats_from_logits(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_rows: int | None = None,
) -> TokenStats:
    """Log-probs of ``tokens`` and entropy per position from logits, chunked over rows.

    Args:
        logits: ``[B, T, V]`` or ``[N, V]``, bf16/fp16/fp32/fp64 (may require grad; may be a
            strided view such as ``model_logits[:, :-1]``, which is never copied whole).
        tokens: ``[B, T]`` or ``[N]`` integer ids in ``[0, V)``, on the logits' device.
        temperature: ``τ > 0``; the distribution is ``softmax(logits / τ)``.
        with_entropy: also return the entropy (otherwise ``entropy`` is ``None``).
        chunk_rows: rows per chunk; default :func:`default_chunk_rows`.

    Returns:
        ``TokenStats`` of float32 ``[B, T]`` (or ``[N]``) tensors, differentiable w.r.t.
        ``logits`` when it requires grad.

    Raises:
        ValueError: naming the argument, for a bad shape, dtype, device, id or temperature.
    """
    check_rows("logits", logits, "V")
    check_tokens(tokens, logits.shape[:-1], logits, logits.shape[-1])
    check_common(temperature, chunk_rows)
    tau = float(temperature)
    rows = chunk_rows or default_chunk_rows(logits.shape[-1], logits.device)
    y = tokens.reshape(-1).long()
    if torch.is_grad_enabled() and logits.requires_grad:
        logprob, entropy = _LogitsStats.apply(logits, y, tau, with_entropy, rows)
    else:
        logprob, entropy, _ = forward_rows(LogitChunks(logits, tau, rows), y, with_entropy, False)
    return TokenStats(
        logprob.view(tokens.shape), entropy.view(tokens.shape) if with_entropy else None
    )


class _HiddenStats(torch.autograd.Function):
    """Chunked stats from hidden states and the LM head; logits are recomputed in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        y: torch.Tensor,
        tau: float,
        with_entropy: bool,
        rows: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stats = forward_rows(HiddenChunks(hidden, weight, bias, tau, rows), y, with_entropy, True)
        return _save(ctx, tau, rows, stats, hidden, weight, bias, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_lp: torch.Tensor | None, g_h: torch.Tensor | None) -> tuple[Any, ...]:
        hidden, weight, bias, y, lse, entropy = ctx.saved_tensors
        if g_lp is None and g_h is None:
            return None, None, None, None, None, None, None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        chunks = HiddenChunks(hidden, weight, bias, ctx.tau, ctx.rows)
        grad_h = torch.empty_like(hidden) if need_h else None
        # The weight gradient is accumulated chunk by chunk in the weight's dtype (each chunk's
        # product is one matmul with float32 accumulation inside); the bias's in float32.
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = lse.new_zeros(weight.shape[0]) if need_b else None
        for r0, r1, g in backward_rows(ctx, chunks, y, lse, entropy, g_lp, g_h):
            g_mm = g if chunks.native is None else chunks.native[: r1 - r0].copy_(g)
            if grad_h is not None:
                torch.mm(g_mm, weight, out=grad_h[r0:r1])
            if grad_w is not None:
                grad_w.addmm_(g_mm.t(), hidden[r0:r1])
            if grad_b is not None:
                grad_b += g.sum(0)
        return grad_h, grad_w, None if grad_b is None else grad_b.to(bias.dtype), *[None] * 4


def token_stats_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_rows: int | None = None,
) -> TokenStats:
    """Log-probs and entropy from final hidden states and the LM head, never building logits.

    Equivalent to ``token_stats_from_logits(hidden @ weight.T + bias, tokens, ...)`` (the
    logits of each chunk are computed in the inputs' dtype, then upcast), with gradients
    w.r.t. ``hidden``, ``weight`` and ``bias`` for those that require grad.

    Args:
        hidden: ``[B, T, D]`` or ``[N, D]`` final hidden states (after the last norm).
        weight: ``[V, D]`` LM-head weight, same dtype and device as ``hidden``.
        tokens: ``[B, T]`` or ``[N]`` integer ids in ``[0, V)``.
        bias: optional ``[V]`` LM-head bias.
        temperature: ``τ > 0``; the distribution is ``softmax(logits / τ)``.
        with_entropy: also return the entropy (otherwise ``entropy`` is ``None``).
        chunk_rows: rows per chunk; default :func:`default_chunk_rows`, at least
            ``HIDDEN_MIN_ROWS`` (256).

    Returns:
        ``TokenStats`` of float32 ``[B, T]`` (or ``[N]``) tensors.

    Raises:
        ValueError: naming the argument, for a bad shape, dtype, device, id or temperature.
    """
    check_head(hidden, weight, bias)
    vocab = weight.shape[0]
    check_tokens(tokens, hidden.shape[:-1], hidden, vocab)
    check_common(temperature, chunk_rows)
    tau = float(temperature)
    rows = chunk_rows or max(default_chunk_rows(vocab, hidden.device), HIDDEN_MIN_ROWS)
    y = tokens.reshape(-1).long()
    h2 = hidden.reshape(-1, hidden.shape[-1])  # [N, D]: small next to [N, V], a copy is cheap
    needs_grad = any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if torch.is_grad_enabled() and needs_grad:
        logprob, entropy = _HiddenStats.apply(h2, weight, bias, y, tau, with_entropy, rows)
    else:
        chunks = HiddenChunks(h2, weight, bias, tau, rows)
        logprob, entropy, _ = forward_rows(chunks, y, with_entropy, False)
    return TokenStats(
        logprob.view(tokens.shape), entropy.view(tokens.shape) if with_entropy else None
    )


def naive_token_stats(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> TokenStats:
    """Plain reference: ``log_softmax(logits/τ)`` gathered at ``tokens``; ``−(p·log p).sum(-1)``.

    Builds full ``[..., V]`` tensors (and autograd keeps them); for tests and benchmarks.
    Shapes and dtypes as :func:`token_stats_from_logits`.
    """
    check_rows("logits", logits, "V")
    check_tokens(tokens, logits.shape[:-1], logits, logits.shape[-1])
    check_common(temperature, None)
    logp = torch.log_softmax(logits.to(compute_dtype(logits.dtype)) / temperature, dim=-1)
    logprob = logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return TokenStats(logprob, -(logp.exp() * logp).sum(-1))
