"""Log-probabilities of sampled tokens and full-vocabulary entropy, in bounded memory.

For each position with logits ``z`` (a row of length ``V``), sampled token ``y`` and sampling
temperature ``τ`` (logits are divided by ``τ`` before the softmax, as the rollout engine does)::

    x = z / τ,   lse = log Σ_j exp(x_j),   log p_j = x_j − lse
    logprob = log p_y                       entropy H = −Σ_j p_j log p_j

The entropy is the per-token quantity of the entropy–performance law (Cui et al. 2025, §2) and
``log p_y`` is what every policy loss consumes. Gradients (w.r.t. ``z``, for upstream gradients
``g_lp`` of the log-prob and ``g_H`` of the entropy of the row)::

    ∂ log p_y / ∂z_j = (1[j = y] − p_j) / τ
    ∂ H / ∂z_j       = −p_j (log p_j + H) / τ
    ⇒ ∂L/∂z_j = (g_lp·1[j = y] − p_j (g_lp + g_H (log p_j + H))) / τ     (one pass per row)

Memory: rows go in chunks through two reused float32 ``[chunk_rows, V]`` buffers, never a
second full ``[tokens × V]`` tensor (the direct computation makes ~3 and autograd keeps 2, ~10 GB
each for 16k tokens at V = 151,936). The autograd Functions save only their inputs and ``lse``,
``H`` per row and recompute each chunk in backward; from hidden states no full logits ever
exist. Details and measurements: ``docs/tokenstats.md``.

Shapes (legend of the package): ``B`` responses, ``T`` tokens, ``V`` vocabulary, ``D`` hidden
size, ``N`` rows when flattened. Inputs may be bf16/fp16/fp32 (computed in float32 per chunk;
outputs float32) or float64 (computed and returned in float64, e.g. for ``gradcheck``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from entropyrl._checks import check_float, check_positive, check_same_dtype

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


class TokenStats(NamedTuple):
    """Per-position statistics, shaped like ``tokens`` (``[B, T]`` or ``[N]``).

    Attributes:
        logprobs: ``log p(y)`` of the given tokens at the given temperature, float32.
        entropy: full-vocabulary entropy ``−Σ p log p``, float32; ``None`` when not asked for.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor | None


def default_chunk_rows(vocab_size: int, device: torch.device | str = "cpu") -> int:
    """Rows per chunk such that one float32 ``[rows, V]`` buffer fits the device's budget.

    ``CPU_CHUNK_BYTES`` (8 MiB: ~65 rows at V = 32,000, ~13 at 151,936) on CPU,
    ``DEVICE_CHUNK_BYTES`` (128 MiB: ~1,048 / ~220 rows) on accelerators.
    """
    budget = CPU_CHUNK_BYTES if torch.device(device).type == "cpu" else DEVICE_CHUNK_BYTES
    return max(1, budget // (4 * vocab_size))


# ----------------------------------------------------------------------------------- checks
def _check_tokens(tokens: Any, rows_shape: torch.Size, ref: torch.Tensor, vocab: int) -> None:
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens: expected a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"tokens: expected an integer tensor of token ids, got {tokens.dtype}")
    if tokens.shape != rows_shape:
        raise ValueError(
            f"tokens: expected shape {list(rows_shape)} (the leading dims of the logits), "
            f"got {list(tokens.shape)}"
        )
    if tokens.device != ref.device:
        raise ValueError(f"tokens: expected device {ref.device}, got {tokens.device}")
    if tokens.numel():
        low, high = (int(v) for v in torch.aminmax(tokens))
        if low < 0 or high >= vocab:
            raise ValueError(f"tokens: expected ids in [0, {vocab}), found ids in [{low}, {high}]")


def _check_common(temperature: float, chunk_rows: int | None) -> None:
    check_positive("temperature", temperature)
    if chunk_rows is not None and (
        not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1
    ):
        raise ValueError(f"chunk_rows: expected None or an integer >= 1, got {chunk_rows!r}")


def _check_rows(name: str, x: Any, last: str) -> None:
    check_float(name, x)
    if x.ndim not in (2, 3) or x.shape[-1] == 0:
        legend = f"[B, T, {last}] or [N, {last}]"
        raise ValueError(f"{name}: expected shape {legend}, got {list(x.shape)}")


def _check_head(hidden: Any, weight: Any, bias: Any) -> None:
    _check_rows("hidden", hidden, "D")
    check_float("weight", weight)
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] == 0:
        raise ValueError(
            f"weight: expected shape [V, D] with D = {hidden.shape[-1]} (the hidden size), "
            f"got {list(weight.shape)}"
        )
    if bias is not None:
        check_float("bias", bias)
        if bias.shape != weight.shape[:1]:
            expected = list(weight.shape[:1])
            raise ValueError(f"bias: expected shape [V] = {expected}, got {list(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name}: expected device {hidden.device}, got {t.device}")
    check_same_dtype("hidden", hidden, weight=weight, bias=bias)


# ------------------------------------------------------------------------------ chunk maths
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # float32, or float64 for float64 input


def _buffers(rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    return [torch.empty(rows, vocab, dtype=dtype, device=device) for _ in range(2)]


def _scaled(z: torch.Tensor, tau: float, buf: torch.Tensor, owned: bool) -> torch.Tensor:
    """``z / τ`` in ``buf``'s dtype; ``z`` itself when nothing changes and ``z`` is read-only."""
    if z.dtype == buf.dtype and tau == 1.0:
        return z
    if owned:  # z is a work buffer of the compute dtype: scale in place
        return z.div_(tau)
    x = buf[: z.shape[0]]
    x.copy_(z)  # upcast first so the division happens in float32, not in bf16
    return x.div_(tau) if tau != 1.0 else x


def _chunk_forward(
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


def _chunk_grad(
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


# -------------------------------------------------------------- chunk loops, both sources
class _LogitChunks:
    """Chunks ``x = z/τ`` ``[c, V]`` of the logits' rows, in order, with two work buffers.

    A 3-D tensor that cannot be viewed as ``[B*T, V]`` (``logits[:, :-1]`` of a model output)
    is walked response by response instead of being copied whole.
    """

    def __init__(self, logits: torch.Tensor, tau: float, rows: int) -> None:
        vocab, cdt = logits.shape[-1], _compute_dtype(logits.dtype)
        try:
            self.blocks = [logits.view(-1, vocab)]
        except RuntimeError:
            self.blocks = list(logits.unbind(0))
        self.tau, self.rows = tau, rows
        n = logits.numel() // vocab
        self.bufs = _buffers(max(1, min(rows, n)), vocab, cdt, logits.device)

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield ``(r0, r1, x)`` per chunk of rows ``r0:r1``."""
        r0 = 0
        for block in self.blocks:
            for z in block.split(self.rows):
                yield r0, r0 + z.shape[0], _scaled(z, self.tau, self.bufs[0], owned=False)
                r0 += z.shape[0]


class _HiddenChunks:
    """Chunks ``x = (h Wᵀ + b)/τ`` ``[c, V]`` recomputed from hidden states, with buffers."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 tau: float, rows: int) -> None:  # fmt: skip
        self.hidden, self.weight, self.bias, self.tau = hidden, weight, bias, tau
        vocab, cdt = weight.shape[0], _compute_dtype(hidden.dtype)
        self.rows = max(1, min(rows, hidden.shape[0]))
        self.bufs = _buffers(self.rows, vocab, cdt, hidden.device)
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
            yield r0, r0 + c, _scaled(dest, self.tau, self.bufs[0], owned=self.native is None)


_Chunks = _LogitChunks | _HiddenChunks


def _forward(
    chunks: _Chunks, y: torch.Tensor, with_entropy: bool, need_lse: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(log p_y, H, lse)`` ``[N]`` over all chunks (``H``/``lse`` None unless asked)."""
    dtype = chunks.bufs[0].dtype
    outs = [torch.empty(y.shape[0], dtype=dtype, device=y.device) for _ in range(3)]
    for r0, r1, x in chunks:
        values = _chunk_forward(x, y[r0:r1], with_entropy, need_lse, chunks.bufs)
        for out, value in zip(outs, values, strict=True):
            if value is not None:
                out[r0:r1] = value
    return outs[0], outs[1] if with_entropy else None, outs[2] if need_lse else None


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


def _grads(
    ctx: Any, chunks: _Chunks, y: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor | None,
    g_lp: torch.Tensor | None, g_h: torch.Tensor | None, out_rows: torch.Tensor | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:  # fmt: skip
    """Yield ``(r0, r1, ∂L/∂z)`` per chunk, written into ``out_rows[r0:r1]`` or a buffer."""
    g_lp = torch.zeros_like(lse) if g_lp is None else g_lp
    for r0, r1, x in chunks:
        out = chunks.bufs[0][: r1 - r0] if out_rows is None else out_rows[r0:r1]
        h, gh = (None, None) if g_h is None or entropy is None else (entropy[r0:r1], g_h[r0:r1])
        g = _chunk_grad(x, y[r0:r1], lse[r0:r1], h, g_lp[r0:r1], gh, ctx.tau, chunks.bufs, out)
        yield r0, r1, g


class _LogitsStats(torch.autograd.Function):
    """Chunked stats from logits; saves only the inputs and ``lse``, ``H`` per row."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, y: torch.Tensor, tau: float, with_entropy: bool, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stats = _forward(_LogitChunks(logits, tau, rows), y, with_entropy, True)
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
        chunks = _LogitChunks(logits, ctx.tau, ctx.rows)
        direct = grad.dtype == chunks.bufs[0].dtype  # write straight into grad, else cast
        for r0, r1, g in _grads(
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
    _check_rows("logits", logits, "V")
    _check_tokens(tokens, logits.shape[:-1], logits, logits.shape[-1])
    _check_common(temperature, chunk_rows)
    tau = float(temperature)
    rows = chunk_rows or default_chunk_rows(logits.shape[-1], logits.device)
    y = tokens.reshape(-1).long()
    if torch.is_grad_enabled() and logits.requires_grad:
        logprob, entropy = _LogitsStats.apply(logits, y, tau, with_entropy, rows)
    else:
        logprob, entropy, _ = _forward(_LogitChunks(logits, tau, rows), y, with_entropy, False)
    return TokenStats(
        logprob.view(tokens.shape), entropy.view(tokens.shape) if with_entropy else None
    )


# ----------------------------------------------------------------------------- from hidden
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
        stats = _forward(_HiddenChunks(hidden, weight, bias, tau, rows), y, with_entropy, True)
        return _save(ctx, tau, rows, stats, hidden, weight, bias, y)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_lp: torch.Tensor | None, g_h: torch.Tensor | None) -> tuple[Any, ...]:
        hidden, weight, bias, y, lse, entropy = ctx.saved_tensors
        if g_lp is None and g_h is None:
            return None, None, None, None, None, None, None
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        chunks = _HiddenChunks(hidden, weight, bias, ctx.tau, ctx.rows)
        grad_h = torch.empty_like(hidden) if need_h else None
        # The weight gradient is accumulated chunk by chunk in the weight's dtype (each chunk's
        # product is one matmul with float32 accumulation inside); the bias's in float32.
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = lse.new_zeros(weight.shape[0]) if need_b else None
        for r0, r1, g in _grads(ctx, chunks, y, lse, entropy, g_lp, g_h):
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
    _check_head(hidden, weight, bias)
    vocab = weight.shape[0]
    _check_tokens(tokens, hidden.shape[:-1], hidden, vocab)
    _check_common(temperature, chunk_rows)
    tau = float(temperature)
    rows = chunk_rows or max(default_chunk_rows(vocab, hidden.device), HIDDEN_MIN_ROWS)
    y = tokens.reshape(-1).long()
    h2 = hidden.reshape(-1, hidden.shape[-1])  # [N, D]: small next to [N, V], a copy is cheap
    needs_grad = any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if torch.is_grad_enabled() and needs_grad:
        logprob, entropy = _HiddenStats.apply(h2, weight, bias, y, tau, with_entropy, rows)
    else:
        chunks = _HiddenChunks(h2, weight, bias, tau, rows)
        logprob, entropy, _ = _forward(chunks, y, with_entropy, False)
    return TokenStats(
        logprob.view(tokens.shape), entropy.view(tokens.shape) if with_entropy else None
    )


# ------------------------------------------------------------------------------- reference
def naive_token_stats(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> TokenStats:
    """Plain reference: ``log_softmax(logits/τ)`` gathered at ``tokens``; ``−(p·log p).sum(-1)``.

    Builds full ``[..., V]`` tensors (and autograd keeps them); for tests and benchmarks.
    Shapes and dtypes as :func:`token_stats_from_logits`.
    """
    _check_rows("logits", logits, "V")
    _check_tokens(tokens, logits.shape[:-1], logits, logits.shape[-1])
    _check_common(temperature, None)
    logp = torch.log_softmax(logits.to(_compute_dtype(logits.dtype)) / temperature, dim=-1)
    logprob = logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return TokenStats(logprob, -(logp.exp() * logp).sum(-1))
