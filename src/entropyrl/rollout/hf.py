"""The Hugging Face ``generate`` engine, in chunks bounded by a token budget.

One ``generate`` call holds a KV cache for ``rows × (prompt + max_new_tokens)`` tokens; at 7B
and 8k-token responses 256 rows need ~120 GB. The engine cuts the ``B = P·n`` rows into chunks
of at most ``max_batch_tokens`` such tokens (at least one row each) and generates them one
after the other, so memory is bounded by the budget whatever the batch. When everything fits
in one chunk the call is the same as a single unchunked ``generate``.

The engine samples from the policy module it is given (the trainer's own parameters, shared,
so :meth:`HFEngine.sync_weights` has nothing to copy) or, under sharding, from a full copy
that :meth:`HFEngine.sync_weights` refreshes from the trainer's gathered state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from transformers import GenerationConfig

from entropyrl.compiled import eager
from entropyrl.rollout.batch import Rollout
from entropyrl.rollout.engine import SamplingParams


def plan_chunks(prompt_lens: list[int], max_new_tokens: int, max_batch_tokens: int) -> list[
    tuple[int, int]
]:
    """Consecutive row ranges ``[start, end)`` whose padded size fits the token budget.

    A chunk's size is ``rows × (longest prompt in the chunk + max_new_tokens)``; rows are
    taken in order while it stays within ``max_batch_tokens`` (a single row always forms a
    chunk, even if it is larger).
    """
    chunks: list[tuple[int, int]] = []
    start, longest = 0, 0
    for i, n in enumerate(prompt_lens):
        wider = max(longest, n)
        if i > start and (i - start + 1) * (wider + max_new_tokens) > max_batch_tokens:
            chunks.append((start, i))
            start, wider = i, n
        longest = wider
    if start < len(prompt_lens):
        chunks.append((start, len(prompt_lens)))
    return chunks


class HFEngine:
    """Rollouts with ``model.generate`` (left padding, KV cache), chunked by a token budget.

    Args:
        model: a causal LM (Hugging Face ``PreTrainedModel``), unwrapped.
        tokenizer: its tokenizer (pad and eos set).
        max_batch_tokens: the budget of one ``generate`` call, in sequence tokens.
        gather: when the engine holds its own copy of the weights, the function that yields
            the trainer's full parameters ``(name, tensor)`` (collectives under sharding);
            None when ``model`` is the trained module itself.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_tokens: int = 65536,
                 gather: Callable[[Any], Iterable[tuple[str, torch.Tensor]]] | None = None):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens: expected >= 1, got {max_batch_tokens}")
        self.model = model
        self._gather = gather
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.n_chunks = 0  # generate calls made by the last generate()

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        """``n`` responses per prompt (rows ``i·n … i·n + n − 1`` answer prompt ``i``)."""
        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        encoded = tok(prompts, add_special_tokens=False)["input_ids"]
        rows = [ids for ids in encoded for _ in range(n)]
        device = next(self.model.parameters()).device
        responses: list[list[int]] = []
        chunks = plan_chunks([len(r) for r in rows], sampling.max_new_tokens,
                             self.max_batch_tokens)
        was_training = self.model.training
        self.model.eval()
        try:
            # A compiled policy (model.compile) samples eager: see entropyrl/compiled.py.
            with eager(self.model):
                for start, end in chunks:
                    responses += self._generate_rows(rows[start:end], sampling, eos, pad,
                                                     device)
        finally:
            self.model.train(was_training)
        self.n_chunks = len(chunks)
        cut = [r[: r.index(eos) + 1] if eos in r else r for r in responses]
        texts = tok.batch_decode([[t for t in r if t != eos] for r in cut],
                                 skip_special_tokens=True)
        groups = [i // n for i in range(len(rows))]
        return Rollout.from_token_lists(rows, cut, texts=texts, group_ids=groups, eos_id=eos,
                                        pad_id=pad, device=device)

    def _generate_rows(self, rows: list[list[int]], sampling: SamplingParams, eos: int,
                       pad: int, device: torch.device) -> list[list[int]]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        att = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            att[i, width - len(r) :] = 1
        greedy = sampling.greedy
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else 0,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        out = self.model.generate(input_ids=ids.to(device), attention_mask=att.to(device),
                                  generation_config=config)
        return out[:, width:].tolist()

    @torch.no_grad()
    def sync_weights(self, model: Any) -> None:
        """Copy ``model``'s parameters into the engine's copy (nothing to do when shared).

        Parameters arrive one at a time from ``gather`` and are cast into place, so the
        refresh needs one full parameter of extra memory, not a full state dict.
        """
        if self._gather is None:
            return
        own = dict(self.model.named_parameters())
        for name, full in self._gather(model):
            own[name].copy_(full)

    def close(self) -> None:
        """Drop the reference to the model."""
        self.model = None
