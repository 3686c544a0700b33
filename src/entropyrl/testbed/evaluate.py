"""Sampled evaluation of a model on testbed rows: accuracy, response length, token entropy.

Used by the build script (to record the base model's figures), the tests and the docs. It
generates with the trainer's own engine (:class:`entropyrl.rollout.HFEngine`: Hugging Face
``generate``, left padding, KV cache, ancestral sampling at ``temperature`` with top-k and
top-p off) and measures the entropy of the distribution each token was drawn from with
:func:`entropyrl.policy.response_token_stats` (greedy: the model's T = 1 distribution).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from entropyrl.policy import response_token_stats
from entropyrl.rollout import HFEngine, Rollout, SamplingParams
from entropyrl.testbed.tasks import score


@torch.no_grad()
def sample_responses(
    model: Any, tokenizer: Any, prompts: list[str], n: int, temperature: float, max_new: int
) -> tuple[Rollout, torch.Tensor]:
    """``n`` responses per prompt and the entropy ``[B, R]`` (nats) of each token's distribution.

    Rows ``i·n … i·n + n − 1`` answer prompt ``i``; temperature 0 is greedy (entropy of the
    T = 1 distribution). Draws from the global torch RNG.
    """
    greedy = temperature == 0
    t = 1.0 if greedy else temperature
    sampling = SamplingParams(max_new_tokens=max_new, temperature=t, greedy=greedy)
    roll = HFEngine(model, tokenizer).generate(prompts, n, sampling)
    st = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                              temperature=t, with_entropy=True)
    assert st.entropy is not None
    return roll, st.entropy


def evaluate(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    temperature: float = 1.0,
    n_samples: int = 1,
    max_new_tokens: int = 40,
    seed: int = 0,
    prompts_per_batch: int = 64,
) -> dict[str, Any]:
    """Sample ``n_samples`` responses per row and score them.

    Sampling uses its own forked RNG seeded with ``seed`` (the caller's RNG is untouched), so
    the result is a deterministic function of the model, the rows and the arguments.

    Args:
        model: a causal LM (e.g. from :func:`load_base`).
        tokenizer: its tokenizer (pad and eos set).
        rows: task rows with ``prompt``, ``answer`` and ``difficulty``.
        temperature: sampling temperature; 0 = greedy.
        n_samples: responses per prompt (``G``).
        max_new_tokens: response length limit.
        seed: sampling seed.
        prompts_per_batch: prompts per ``generate`` call (part of the result's determinism).

    Returns:
        ``accuracy`` (mean reward), ``accuracy_by_difficulty``, ``mean_response_length``
        (tokens, end token included), ``entropy`` (token-mean over all response tokens, the
        law's H), ``entropy_response_mean`` (mean over tokens of a response, then over
        responses), ``mixed_group_fraction`` (prompts whose rewards are not all equal),
        ``truncated_fraction``, ``n_prompts``, ``n_samples``, ``temperature``.
    """
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0 (0 = greedy), got {temperature}")
    if n_samples < 1 or max_new_tokens < 1 or prompts_per_batch < 1:
        raise ValueError("n_samples, max_new_tokens, prompts_per_batch: expected >= 1")
    was_training = model.training
    model.eval()
    rewards: list[list[float]] = []
    tok_sum = tok_count = seq_mean_sum = 0.0
    n_truncated = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(rows), prompts_per_batch):
            chunk = rows[start : start + prompts_per_batch]
            roll, entropy = sample_responses(model, tokenizer, [r["prompt"] for r in chunk],
                                             n_samples, temperature, max_new_tokens)
            mask = roll.response_mask
            lengths = mask.sum(1)
            tok_sum += float((entropy * mask).sum())
            tok_count += float(lengths.sum())
            seq_mean_sum += float(((entropy * mask).sum(1) / lengths.clamp(min=1)).sum())
            n_truncated += int(roll.truncated.sum())
            for i, row in enumerate(chunk):
                group = roll.texts[i * n_samples : (i + 1) * n_samples]
                rewards.append([score(t, str(row["answer"])) for t in group])
    model.train(was_training)
    return _summary(rows, rewards, tok_sum, tok_count, seq_mean_sum, n_truncated, temperature)


def _summary(
    rows: Sequence[dict[str, Any]],
    rewards: list[list[float]],
    tok_sum: float,
    tok_count: float,
    seq_mean_sum: float,
    n_truncated: int,
    temperature: float,
) -> dict[str, Any]:
    n_resp = sum(len(g) for g in rewards)
    by_level: dict[int, list[float]] = defaultdict(list)
    for row, group in zip(rows, rewards, strict=True):
        by_level[int(row["difficulty"])].extend(group)
    return {
        "accuracy": sum(map(sum, rewards)) / max(n_resp, 1),
        "accuracy_by_difficulty": {
            str(k): sum(v) / len(v) for k, v in sorted(by_level.items())
        },
        "mean_response_length": tok_count / max(n_resp, 1),
        "entropy": tok_sum / max(tok_count, 1.0),
        "entropy_response_mean": seq_mean_sum / max(n_resp, 1),
        "mixed_group_fraction": sum(len(set(g)) > 1 for g in rewards) / max(len(rewards), 1),
        "truncated_fraction": n_truncated / max(n_resp, 1),
        "n_prompts": len(rewards),
        "n_samples": n_resp // max(len(rewards), 1),
        "temperature": temperature,
    }
