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

The package, in reading order: :mod:`.kernels` (one chunk's maths), :mod:`.chunking` (chunk
size, the logits and hidden-state row sources, the loops over chunks), :mod:`.stats` (the
autograd Functions and the public functions), ``_validate`` (argument checks).
"""

from entropyrl.tokenstats.chunking import (
    CPU_CHUNK_BYTES,
    DEVICE_CHUNK_BYTES,
    HIDDEN_MIN_ROWS,
    default_chunk_rows,
)
from entropyrl.tokenstats.stats import (
    TokenStats,
    naive_token_stats,
    token_stats_from_hidden,
    token_stats_from_logits,
)

__all__ = [
    "CPU_CHUNK_BYTES",
    "DEVICE_CHUNK_BYTES",
    "HIDDEN_MIN_ROWS",
    "TokenStats",
    "default_chunk_rows",
    "naive_token_stats",
    "token_stats_from_hidden",
    "token_stats_from_logits",
]
