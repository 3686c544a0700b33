"""Which tokens carry a batch's entropy drop, and does the covariance selection find them?

Clip-Cov and KL-Cov pick tokens by the *batch*-centred score of Eq. 10,
``cov_i = (log π_i − mean log π)(A_i − mean A)``. The Lemma's entropy change is centred per
*state*: a natural-gradient step that moves only the sampled token's logit by ``η·A_i/π_i``
(the one-sample estimate of ``Δz = η·A``) changes the entropy at that state by
``ΔH(s_i) ≈ −η·A_i·(log π_i + H(s_i))``. So ``e_i = A_i·(log π_i + H(s_i))`` is token ``i``'s
own first-order share of ``−ΔH/η``.

For one GRPO batch sampled from a testbed checkpoint (default: the shipped base model) this
prints the share of ``Σ e_i`` held by the top fractions of tokens ranked by ``cov_i`` (what
KL-Cov's top-k penalises; Clip-Cov's band is a subset of ``cov_i > ω_low``), and the share
held by tokens of correct (A > 0) and wrong (A < 0) responses, with the mean ``|A|`` of each
set (KL-Cov's penalty can only hold a selected token still if ``β ≥ |A|·r``), and how many of
the batch's sampled separator commas (the style fork of docs/testbed.md) each top set holds.

Run: .venv/bin/python bench/bench_cov_attribution.py [--model DIR] [--prompts 256]
     [--config testbed/grpo]
     (DIR: a testbed checkpoint, e.g. runs/grpo/checkpoints/step_100)
"""

from __future__ import annotations

import argparse

import torch

from entropyrl import testbed
from entropyrl.advantages import grpo_advantages
from entropyrl.config import load_config
from entropyrl.dynamics import token_covariance
from entropyrl.policy import response_token_stats
from entropyrl.rollout import HFEngine, SamplingParams
from entropyrl.tasks import load_tasks

FRACTIONS = (0.002, 0.02, 0.05, 0.1, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="testbed checkpoint (default: shipped base)")
    parser.add_argument("--prompts", type=int, default=256, help="training prompts sampled")
    parser.add_argument("--config", default="testbed/grpo",
                        help="preset giving the task mix, group size, temperature and length")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args()
    cfg = load_config(args.config)
    tasks = load_tasks(cfg.data, cfg.reward)
    rows = tasks.train[: args.prompts]
    g, temperature = cfg.rollout.group_size, cfg.rollout.temperature
    torch.manual_seed(args.seed)
    model, tok = testbed.load_base(args.model)
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=temperature)
    roll = HFEngine(model, tok).generate([r["prompt"] for r in rows], g, sampling)
    scores = torch.tensor(tasks.score_batch(roll.texts, [rows[i // g] for i in range(len(roll))]))
    with torch.no_grad():
        st = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                                  temperature=temperature, with_entropy=True)
    assert st.entropy is not None
    m = roll.response_mask
    adv = grpo_advantages(scores, roll.group_ids, m).token_advantages
    cov = token_covariance(st.logprobs.double(), adv.double(), m)[m]
    lp, ent, a = st.logprobs[m].double(), st.entropy[m].double(), adv[m].double()
    response_ids = roll.input_ids[:, roll.prompt_len:][m]
    commas = response_ids == tok.convert_tokens_to_ids(",")
    effect = a * (lp + ent)
    total = effect.sum()
    print(f"model: {args.model or 'shipped base'}; {len(rows)} prompts x {g}, "
          f"{len(lp)} response tokens; accuracy {scores.mean():.3f}, "
          f"token entropy {ent.mean():.4f}")
    print(f"sum cov_i (batch-centred) {cov.sum():.1f}; sum e_i (state-centred) {total:.1f}")
    order = torch.argsort(cov, descending=True)
    print(f"{'tokens':<34}{'share of tokens':>16}{'share of sum e_i':>18}{'mean |A|':>10}"
          f"{'commas':>12}")
    for frac in FRACTIONS:
        top = order[: max(1, int(frac * len(cov)))]
        share = float(effect[top].sum() / total)
        mean_abs = float(a[top].abs().mean())
        held = f"{int(commas[top].sum())}/{int(commas.sum())}"
        print(f"{f'top {frac:.1%} by cov_i':<34}{frac:>16.3f}{share:>18.2f}{mean_abs:>10.2f}"
              f"{held:>12}")
    for label, sel in (("correct responses (A > 0)", a > 0), ("wrong responses (A < 0)", a < 0),
                       ("cov_i < 0", cov < 0)):
        print(f"{label:<34}{float(sel.double().mean()):>16.3f}"
              f"{float(effect[sel].sum() / total):>18.2f}{float(a[sel].abs().mean()):>10.2f}")


if __name__ == "__main__":
    main()
