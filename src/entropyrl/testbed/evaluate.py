"""Sampled evaluation of a model on testbed rows: accuracy, response length, token entropy.

Used by the build script (to record the base model's figures), the tests and the docs. The
trainer has its own rollout code; this is the plain reference: Hugging Face ``generate`` with
left padding, KV cache, ancestral sampling at ``temperature`` (top-k and top-p off), and the
entropy of the very distribution each token was drawn from (the processed ``scores``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from transformers import GenerationConfig

from entropyrl.testbed.tasks import score


class _Samples(NamedTuple):
    """Responses of one ``generate`` call (``B = P·n`` rows)."""

    texts: list[str]  # [B] decoded, end token removed
    response_ids: torch.Tensor  # [B, R] generated tokens (padding after the end token)
    mask: torch.Tensor  # [B, R] bool, response tokens incl. the first end token
    entropy: torch.Tensor  # [B, R] token entropy of the sampling distribution (nats)
    truncated: torch.Tensor  # [B] bool, no end token within the limit


def _response_mask(response: torch.Tensor, eos: int) -> torch.Tensor:
    """``[B, R]`` bool: generated tokens up to and including the first end token."""
    is_eos = response == eos
    return (is_eos.cumsum(dim=1) - is_eos.long()) == 0


@torch.no_grad()
def _generate_chunk(
    model: Any, tokenizer: Any, prompts: list[str], n: int, temperature: float, max_new: int
) -> _Samples:
    """Sample ``n`` responses to each prompt (rows ``i·n … i·n + n − 1`` answer prompt ``i``)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
    att = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
    greedy = temperature == 0
    cfg = GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else temperature,
        top_k=None if greedy else 0,
        top_p=None if greedy else 1.0,
        max_new_tokens=max_new,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        output_scores=True,
        return_dict_in_generate=True,
    )
    out = model.generate(input_ids=ids, attention_mask=att, generation_config=cfg)
    response = out.sequences[:, ids.shape[1] :]
    # scores[t] are the logits after temperature scaling: the distribution token t came from
    # (greedy: the model's own T = 1 distribution). Entropy H = -sum_v p_v log p_v.
    logits = torch.stack(out.scores, dim=1).float()  # [B, R, V]
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).nan_to_num().sum(-1)  # [B, R]; 0·log 0 = 0
    mask = _response_mask(response, tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(
        [row[m & (row != tokenizer.eos_token_id)] for row, m in zip(response, mask, strict=True)],
        skip_special_tokens=True,
    )
    truncated = ~(response == tokenizer.eos_token_id).any(dim=1)
    return _Samples(texts, response, mask, entropy, truncated)


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
            s = _generate_chunk(
                model, tokenizer, [r["prompt"] for r in chunk], n_samples, temperature,
                max_new_tokens,
            )
            lengths = s.mask.sum(1)
            tok_sum += float((s.entropy * s.mask).sum())
            tok_count += float(lengths.sum())
            seq_mean_sum += float(((s.entropy * s.mask).sum(1) / lengths.clamp(min=1)).sum())
            n_truncated += int(s.truncated.sum())
            for i, row in enumerate(chunk):
                group = s.texts[i * n_samples : (i + 1) * n_samples]
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
