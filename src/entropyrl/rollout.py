"""Generation of responses with Hugging Face ``generate`` and the tensors the update needs.

A rollout batch holds ``B = P·G`` sequences laid out as ``[prompt (left-padded) | response
(right-padded)]`` so that every response starts at the same column ``prompt_len``. The response
mask covers the generated tokens up to and including the first end-of-sequence token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase


@dataclass
class Rollout:
    """Sampled sequences of one batch.

    Attributes:
        input_ids: prompt + response tokens ``[B, P + R]``.
        attention_mask: 1 on real tokens ``[B, P + R]`` (left padding of prompts, right
            padding of responses after their end-of-sequence token).
        prompt_len: ``P``, the column where responses start.
        response_ids: ``[B, R]`` (``input_ids[:, P:]``).
        response_mask: ``[B, R]`` bool, the tokens that count in losses and statistics.
        truncated: ``[B]`` bool, responses that hit the length limit without an end token.
        texts: decoded responses (end token and padding removed).
        group_ids: ``[B]`` int64, index of the prompt each response answers.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    truncated: torch.Tensor
    texts: list[str]
    group_ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: torch.Tensor) -> Rollout:
        """The sub-batch of the given row indices (same columns)."""
        idx = rows.tolist()
        return Rollout(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.prompt_len,
            self.response_ids[rows],
            self.response_mask[rows],
            self.truncated[rows],
            [self.texts[i] for i in idx],
            self.group_ids[rows],
        )


def concat_rollouts(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """Concatenate rollouts whose prompt and response widths may differ (re-padding both)."""
    if len(parts) == 1:
        return parts[0]
    p_max = max(r.prompt_len for r in parts)
    r_max = max(int(r.response_ids.shape[1]) for r in parts)
    ids, att, resp, rmask = [], [], [], []
    offset = 0
    groups = []
    for r in parts:
        left = p_max - r.prompt_len
        right = r_max - int(r.response_ids.shape[1])
        ids.append(torch.nn.functional.pad(r.input_ids, (left, right), value=pad_token_id))
        att.append(torch.nn.functional.pad(r.attention_mask, (left, right), value=0))
        resp.append(torch.nn.functional.pad(r.response_ids, (0, right), value=pad_token_id))
        rmask.append(torch.nn.functional.pad(r.response_mask, (0, right), value=False))
        groups.append(r.group_ids + offset)
        offset += int(r.group_ids.max()) + 1 if len(r) else 0
    return Rollout(
        torch.cat(ids),
        torch.cat(att),
        p_max,
        torch.cat(resp),
        torch.cat(rmask),
        torch.cat([r.truncated for r in parts]),
        [t for r in parts for t in r.texts],
        torch.cat(groups),
    )


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    n: int,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int,
    greedy: bool = False,
) -> Rollout:
    """Sample ``n`` responses for each prompt (grouped: rows ``i·n … i·n + n − 1``).

    Sampling is plain ancestral sampling at ``temperature`` (top-k off, no repetition
    penalty), so the log-probabilities and entropies computed later at the same temperature
    describe exactly the distribution that produced the tokens.
    """
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    input_ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
    attention = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    gen_cfg = GenerationConfig(
        do_sample=not greedy,
        temperature=temperature if not greedy else None,
        top_p=top_p if not greedy else None,
        top_k=0 if not greedy else None,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    was_training = model.training
    model.eval()
    out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen_cfg)
    model.train(was_training)
    prompt_len = input_ids.shape[1]
    response = out[:, prompt_len:]
    if response.shape[1] == 0:
        response = torch.full((out.shape[0], 1), pad, dtype=out.dtype, device=out.device)
    is_eos = response == eos
    # Valid up to and including the first end token; everything after is padding.
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    response_mask = ~after_eos
    truncated = ~is_eos.any(dim=1)
    response = response.masked_fill(~response_mask, pad)
    texts = tokenizer.batch_decode(
        [row[m & (row != eos)] for row, m in zip(response, response_mask, strict=True)],
        skip_special_tokens=True,
    )
    full = torch.cat([input_ids, response], dim=1)
    full_mask = torch.cat([attention, response_mask.long()], dim=1)
    groups = torch.arange(len(prompts), device=device).repeat_interleave(n)
    return Rollout(full, full_mask, prompt_len, response, response_mask, truncated, texts, groups)
