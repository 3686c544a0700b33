"""Per-token log-probabilities and entropies of the responses of a rollout under a model.

The model sees ``[prompt | response]``; the logits at column ``j`` predict the token at
``j + 1``, so the response tokens ``P … P+R−1`` are scored by the outputs at ``P−1 … P+R−2``.
Position ids follow the attention mask (left padding), as in generation, so training-time
log-probs equal sampling-time ones.
"""

from __future__ import annotations

from typing import Any

import torch

from entropyrl.tokenstats import TokenStats, token_stats_from_hidden, token_stats_from_logits


def response_token_stats(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: int,
    *,
    temperature: float,
    with_entropy: bool,
    use_hidden: bool | None = None,
) -> TokenStats:
    """Log-probs ``[B, R]`` of the response tokens (and entropies ``[B, R]`` if asked).

    Args:
        model: a causal LM (possibly wrapped by DDP).
        input_ids: ``[B, P + R]``.
        attention_mask: ``[B, P + R]``.
        prompt_len: ``P``.
        temperature: logits are divided by it (the sampling temperature).
        with_entropy: also compute the full-vocabulary entropy per position.
        use_hidden: compute from the final hidden states and the LM-head weight in chunks
            (never materialising ``[B, R, V]`` logits); default: when the model exposes a
            decoder and a bias-free LM head.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    targets = input_ids[:, prompt_len:]
    inner = getattr(model, "module", model)  # unwrap DDP for attribute access only
    head = inner.get_output_embeddings()
    decoder = getattr(inner, "model", None)
    if use_hidden is None:
        use_hidden = (
            decoder is not None
            and isinstance(head, torch.nn.Linear)
            and head.bias is None
            and getattr(inner.config, "final_logit_softcapping", None) is None
            # A sharded (FSDP2) head holds a DTensor shard: only the model's own forward
            # gathers it, so sharded models take the logits path.
            and type(head.weight).__name__ != "DTensor"
        )
    if use_hidden and model is inner and decoder is not None:
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        hidden = out.last_hidden_state[:, prompt_len - 1 : -1]
        return token_stats_from_hidden(
            hidden, head.weight, targets, temperature=temperature, with_entropy=with_entropy
        )
    # Through the (possibly DDP-wrapped) model's own forward so gradient sync hooks run.
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).logits[:, prompt_len - 1 : -1]
    return token_stats_from_logits(
        logits, targets, temperature=temperature, with_entropy=with_entropy
    )
