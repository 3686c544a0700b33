"""Cost of scoring the covariance selection with the current policy (``current`` log-probs).

The global selection needs the current log-probs of the whole mini-batch before the first
micro-batch's backward; entropyrl gets them with one no-grad forward over the mini-batch. This
script times, for a small Qwen2 model on CPU, one mini-batch update (forward + backward over its
micro-batches) against that extra no-grad forward, and prints the overhead per update and per
rollout step (the first update of a step reuses the rollout log-probs, so with U updates per
step the extra passes are U − 1).

Run: .venv/bin/python bench/bench_selection_pass.py
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from entropyrl.policy import response_token_stats

ROWS, PROMPT, RESP, MICRO, REPEATS = 32, 32, 224, 8, 5


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=4096, hidden_size=256, intermediate_size=768,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (ROWS, PROMPT + RESP))
    att = torch.ones_like(ids)

    def update() -> None:
        for i in range(0, ROWS, MICRO):
            st = response_token_stats(model, ids[i:i + MICRO], att[i:i + MICRO], PROMPT,
                                      temperature=1.0, with_entropy=False)
            st.logprobs.mean().backward()

    @torch.no_grad()
    def selection_pass() -> None:
        for i in range(0, ROWS, MICRO):
            response_token_stats(model, ids[i:i + MICRO], att[i:i + MICRO], PROMPT,
                                 temperature=1.0, with_entropy=False)

    def median(fn) -> float:
        fn()
        runs = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs)

    t_update, t_sel = median(update), median(selection_pass)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"Qwen2 {n_params:.1f}M params, mini-batch {ROWS} x {PROMPT + RESP} tokens, "
          f"micro-batches of {MICRO}, median of {REPEATS}")
    print(f"{'update (fwd+bwd)':<28}{t_update * 1e3:>10.1f} ms   1.00x")
    print(f"{'selection no-grad forward':<28}{t_sel * 1e3:>10.1f} ms   {t_sel / t_update:.2f}x")
    for updates in (1, 4, 8):
        extra = (updates - 1) * t_sel / (updates * t_update)
        print(f"  overhead per rollout step with {updates} updates/step: +{extra * 100:.0f}% "
              "of update time")


if __name__ == "__main__":
    main()
