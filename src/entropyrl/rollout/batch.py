"""A batch of sampled responses laid out for the update, built from token lists.

A rollout holds ``B`` sequences as ``[prompt (left-padded) | response (right-padded)]`` so
that every response starts at the same column ``P`` (``prompt_len``). The response mask covers
the generated tokens up to and including the first end-of-sequence token. Every engine returns
token lists and builds its batch with :meth:`Rollout.from_token_lists`, so the layout is the
same whatever generated the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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
        sampler_logprobs: ``[B, R]`` log-probs of the sampled tokens as the engine computed
            them while sampling (after temperature), 0 at padding; None when the engine does
            not report them.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    truncated: torch.Tensor
    texts: list[str]
    group_ids: torch.Tensor
    sampler_logprobs: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def from_token_lists(
        cls,
        prompts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        *,
        texts: Sequence[str],
        group_ids: Sequence[int],
        eos_id: int,
        pad_id: int,
        sampler_logprobs: Sequence[Sequence[float]] | None = None,
        device: torch.device | str = "cpu",
    ) -> Rollout:
        """Lay out ``B`` (prompt, response) token lists as one batch.

        Args:
            prompts: ``B`` prompt token lists (a prompt sampled ``n`` times appears ``n`` times).
            responses: ``B`` response token lists; each is cut after its first ``eos_id``
                (inclusive). A response without one is *truncated*.
            texts: ``B`` decoded responses.
            group_ids: ``B`` prompt indices.
            eos_id: end-of-sequence token.
            pad_id: padding token.
            sampler_logprobs: optional ``B`` lists, one value per response token.
            device: where the tensors go.
        """
        b = len(prompts)
        if not (len(responses) == len(texts) == len(group_ids) == b):
            raise ValueError(
                f"from_token_lists: expected {b} responses, texts and group ids, got "
                f"{len(responses)}, {len(texts)} and {len(group_ids)}"
            )
        cut = [_cut_at_eos(list(r), eos_id) for r in responses]
        p = max((len(x) for x in prompts), default=0)
        r = max(1, max((len(x) for x in cut), default=0))
        ids = torch.full((b, p + r), pad_id, dtype=torch.long)
        att = torch.zeros((b, p + r), dtype=torch.long)
        lps = torch.zeros((b, r), dtype=torch.float32) if sampler_logprobs is not None else None
        for i, (prompt, resp) in enumerate(zip(prompts, cut, strict=True)):
            ids[i, p - len(prompt) : p] = torch.tensor(list(prompt), dtype=torch.long)
            att[i, p - len(prompt) : p] = 1
            ids[i, p : p + len(resp)] = torch.tensor(resp, dtype=torch.long)
            att[i, p : p + len(resp)] = 1
            if lps is not None and sampler_logprobs is not None:
                values = list(sampler_logprobs[i])[: len(resp)]
                lps[i, : len(values)] = torch.tensor(values, dtype=torch.float32)
        truncated = torch.tensor([not x or x[-1] != eos_id for x in cut], dtype=torch.bool)
        ids, att = ids.to(device), att.to(device)
        return cls(
            ids, att, p, ids[:, p:], att[:, p:].bool(), truncated.to(device), list(texts),
            torch.tensor(list(group_ids), dtype=torch.long, device=device),
            None if lps is None else lps.to(device),
        )

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
            None if self.sampler_logprobs is None else self.sampler_logprobs[rows],
        )


def _cut_at_eos(tokens: list[int], eos_id: int) -> list[int]:
    """Tokens up to and including the first ``eos_id`` (all of them if there is none)."""
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def concat_rollouts(parts: list[Rollout], pad_token_id: int) -> Rollout:
    """Concatenate rollouts whose prompt and response widths may differ (re-padding both).

    Group ids are renumbered so that groups of different parts stay apart.
    """
    if len(parts) == 1:
        return parts[0]
    p_max = max(r.prompt_len for r in parts)
    r_max = max(int(r.response_ids.shape[1]) for r in parts)
    ids, att, resp, rmask, lps = [], [], [], [], []
    offset = 0
    groups = []
    for r in parts:
        left = p_max - r.prompt_len
        right = r_max - int(r.response_ids.shape[1])
        ids.append(torch.nn.functional.pad(r.input_ids, (left, right), value=pad_token_id))
        att.append(torch.nn.functional.pad(r.attention_mask, (left, right), value=0))
        resp.append(torch.nn.functional.pad(r.response_ids, (0, right), value=pad_token_id))
        rmask.append(torch.nn.functional.pad(r.response_mask, (0, right), value=False))
        if r.sampler_logprobs is not None:
            lps.append(torch.nn.functional.pad(r.sampler_logprobs, (0, right), value=0.0))
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
        torch.cat(lps) if len(lps) == len(parts) else None,
    )
