"""Shared pieces of the multi-process tests: a free port and one fixed update batch."""

import socket

import torch

from entropyrl.rollout import HFEngine, SamplingParams

PROMPTS = ["12+34=", "5*6=", "99-9=", "7+8="]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fixed_batch(cfg, n=4):
    """A 16-row rollout of the config's model with its log-probs, entropies and advantages."""
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.policy import response_token_stats

    model, tok = load_model_and_tokenizer(cfg.model)
    torch.manual_seed(0)
    roll = HFEngine(model, tok).generate(PROMPTS, n, SamplingParams(max_new_tokens=10))
    st = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                              temperature=1.0, with_entropy=True)
    adv = (torch.randn(len(roll), 1) * roll.response_mask).contiguous()
    return {"rollout": roll, "old": st.logprobs.detach(), "entropy": st.entropy.detach(),
            "adv": adv}
