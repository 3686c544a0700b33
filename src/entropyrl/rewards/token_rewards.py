"""Dense rewards from a reward function, placed on the tokens the policy sampled.

A reward function sees a response as text, not as the policy's tokens. It gives dense
rewards as ``(char_index, value)`` pairs on that text (``RewardResult.token_rewards``): the
value is credited to the response token that produced the character at ``char_index``. Python
indexing applies (``-1`` is the last character) and ``char_index == len(text)`` means the
response's last token (its end-of-sequence token when it has one), so a reward "at the end"
is always placeable, even on an empty response. Several pairs on one token add up.

The character → token map decodes prefixes of the response's tokens exactly as the rollout
engines decode the full response (end token dropped, special tokens skipped), with a binary
search over the prefix length: ``O(log T)`` decodes per pair, whatever the tokenizer (byte
level BPE included, where one character may span several tokens: the pair goes to the token
that completes it).

Shapes: ``B`` responses, ``R`` response positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# One response's dense rewards: (character index in the response text, reward).
TokenRewards = Sequence[tuple[int, float]]


def token_of_char(ids: Sequence[int], char_index: int, decode: Callable[[list[int]], str],
                  text: str) -> int:
    """The index in ``ids`` of the token that completes character ``char_index`` of ``text``.

    Args:
        ids: the response's tokens without its end token; ``decode(ids) == text``.
        char_index: in ``[0, len(text))``.
        decode: token ids → text, as the engine decodes responses.
        text: the response's text.

    Returns:
        The smallest ``k`` such that ``decode(ids[:k + 1])`` starts with
        ``text[:char_index + 1]`` (a prefix that ends inside a multi-byte character decodes
        to a replacement character, which does not match).
    """
    want = text[: char_index + 1]
    lo, hi = 0, len(ids) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if decode(list(ids[: mid + 1])).startswith(want):
            hi = mid
        else:
            lo = mid + 1
    return lo


def place_token_rewards(
    per_response: Sequence[TokenRewards | None],
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    texts: Sequence[str],
    *,
    eos_id: int,
    decode: Callable[[list[int]], str],
) -> torch.Tensor | None:
    """The ``[B, R]`` float32 token rewards of a batch, or None when no response has any.

    Args:
        per_response: ``B`` lists of ``(char_index, reward)`` pairs (None or empty: none).
        response_ids: ``[B, R]`` sampled tokens.
        response_mask: ``[B, R]`` bool, each response's tokens (end token included).
        texts: ``B`` decoded responses (the texts the reward function scored).
        eos_id: the end-of-sequence token, which is not part of the text.
        decode: token ids → text, as the engine decodes responses.

    Raises:
        ValueError: a character index outside ``[-len(text), len(text)]``, or a text that
            is not the decoding of its tokens.
    """
    if not any(per_response):
        return None
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    ids_rows = response_ids.cpu().tolist()
    lengths = response_mask.sum(dim=1).cpu().tolist()
    for i, pairs in enumerate(per_response):
        if not pairs:
            continue
        n = int(lengths[i])
        tokens = ids_rows[i][:n]
        body = tokens[:-1] if tokens and tokens[-1] == eos_id else tokens
        text = texts[i]
        if body and decode(list(body)) != text:
            raise ValueError(f"response {i}: its text is not the decoding of its tokens")
        for char_index, value in pairs:
            c = char_index + len(text) if char_index < 0 else char_index
            if not 0 <= c <= len(text):
                raise ValueError(f"token_rewards: character index {char_index} is outside the "
                                 f"{len(text)}-character response (use 0..{len(text)}, or a "
                                 "negative index from the end)")
            if n == 0:
                continue  # an empty response has no token to credit (it has no text either)
            at = n - 1 if c == len(text) else token_of_char(body, c, decode, text)
            out[i, at] += value
    return out.to(response_mask.device)
