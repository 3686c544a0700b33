"""Where a testbed checkpoint's token entropy sits: the separator forks or the rest.

A base model built with ``entropyrl testbed build --p-comma P`` writes each separator between
scratchpad cells as a space or a comma, a choice the checker ignores (docs/testbed.md,
"Separator forks"). This samples responses on validation prompts and splits the token entropy
(the law's H, the token mean over responses) between the separator slots (positions where a
space or a comma was sampled inside the scratchpad) and every other response token, and prints
the share of commas among the separators and the sampled accuracy, overall and split
between the responses that hold a comma and those that hold none. Give several checkpoints to
compare them, e.g. the base model against the last checkpoints of a GRPO and a Clip-Cov run.

Run: .venv/bin/python bench/bench_separator_entropy.py [--model DIR ...] [--prompts 128]
     (default: the shipped base model)
"""

from __future__ import annotations

import argparse

import torch

from entropyrl import testbed
from entropyrl.testbed.evaluate import sample_responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=[None],
                        help="testbed checkpoints (default: the shipped base model)")
    parser.add_argument("--prompts", type=int, default=128, help="validation prompts")
    parser.add_argument("--samples", type=int, default=4, help="responses per prompt")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = parser.parse_args()
    rows = testbed.make_tasks("val", args.prompts, 0, ops=("add", "sub"))
    header = (f"{'checkpoint':<44} {'H all':>7} {'H sep':>7} {'H rest':>7} "
              f"{'sep share':>9} {'commas':>7} {'acc':>6} {'acc ,':>6} {'acc no ,':>8}")
    print(header)
    for path in args.model:
        model, tok = testbed.load_base(path)
        torch.manual_seed(args.seed)
        roll, ent = sample_responses(model, tok, [r["prompt"] for r in rows], args.samples,
                                     1.0, 32)
        mask = roll.response_mask.bool()
        resp = roll.input_ids[:, roll.prompt_len:]
        space, comma = tok.convert_tokens_to_ids(" "), tok.convert_tokens_to_ids(",")
        is_comma = mask & (resp == comma)
        sep = is_comma | (mask & (resp == space))
        commas = float(is_comma[sep].float().mean()) if sep.any() else 0.0
        correct = [testbed.score(text, rows[i // args.samples]["answer"])
                   for i, text in enumerate(roll.texts)]
        # Accuracy of the responses that hold a comma and of those that hold none.
        has_comma = is_comma.any(dim=1).tolist()
        by_comma = [[c for c, h in zip(correct, has_comma, strict=True) if h == want]
                    for want in (True, False)]
        acc_comma, acc_plain = (f"{sum(v) / len(v):.3f}" if v else "-" for v in by_comma)
        print(f"{path or 'shipped base':<44} {float(ent[mask].mean()):>7.4f} "
              f"{float(ent[sep].mean()) if sep.any() else 0.0:>7.4f} "
              f"{float(ent[mask & ~sep].mean()):>7.4f} "
              f"{float(ent[sep].sum() / ent[mask].sum()):>9.2f} {commas:>7.2f} "
              f"{sum(correct) / len(correct):>6.3f} {acc_comma:>6} {acc_plain:>8}")


if __name__ == "__main__":
    main()
