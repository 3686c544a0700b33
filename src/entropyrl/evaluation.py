"""Validation: greedy accuracy, avg@k and unbiased pass@k on held-out prompts.

- greedy accuracy: one greedy response per prompt, mean reward (the ``R`` of the law);
- avg@k: ``k`` samples per prompt at the evaluation temperature, mean reward over all;
- pass@k: the unbiased estimator ``1 − C(n − c, k) / C(n, k)`` per prompt (``n`` samples,
  ``c`` correct; Chen et al. 2021), averaged over prompts; with ``n = k`` it is the fraction
  of prompts with at least one correct sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from entropyrl.policy import response_token_stats
from entropyrl.rollout import generate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (``k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: expected 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def validate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    score: Callable[[str, dict[str, Any]], float],
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    batch_prompts: int = 64,
) -> dict[str, float]:
    """Greedy accuracy, avg@k, pass@k, mean entropy and length of the sampled responses."""
    greedy_hits, sample_hits, passes = 0.0, 0.0, 0.0
    ent_sum, tok_sum, len_sum, n_samples = 0.0, 0.0, 0.0, 0
    for start in range(0, len(rows), batch_prompts):
        chunk = list(rows[start : start + batch_prompts])
        prompts = [r["prompt"] for r in chunk]
        g = generate(model, tokenizer, prompts, n=1, temperature=1.0,
                     max_new_tokens=max_new_tokens, greedy=True)
        greedy_hits += sum(score(t, r) for t, r in zip(g.texts, chunk, strict=True))
        s = generate(model, tokenizer, prompts, n=k, temperature=temperature,
                     max_new_tokens=max_new_tokens)
        rewards = [score(t, chunk[i // k]) for i, t in enumerate(s.texts)]
        sample_hits += sum(rewards)
        for i in range(len(chunk)):
            c = sum(1 for x in rewards[i * k : (i + 1) * k] if x >= 1.0)
            passes += pass_at_k(k, c, k)
        stats = response_token_stats(model, s.input_ids, s.attention_mask, s.prompt_len,
                                     temperature=temperature, with_entropy=True)
        assert stats.entropy is not None
        m = s.response_mask
        ent_sum += float(stats.entropy[m].sum())
        tok_sum += float(m.sum())
        len_sum += float(m.sum())
        n_samples += len(s)
    n = max(len(rows), 1)
    return {
        "val/acc": greedy_hits / n,
        "val/avg_at_k": sample_hits / max(n_samples, 1),
        "val/pass_at_k": passes / n,
        "val/entropy": ent_sum / max(tok_sum, 1),
        "val/response_len": len_sum / max(n_samples, 1),
    }
