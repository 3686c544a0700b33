"""Figure for docs/trl.md: TRL plain GRPO next to TRL + plug-in (Clip-Cov), same seed.

    python bench/fig_trl_plugin.py [--steps 60] [--out docs/figures/trl_plugin.png]

The demo's setting (``testbed/grpo`` and ``testbed/clip_cov``): the testbed model, addition and
subtraction prompts, one generation batch of 32 prompts × 8 completions per optimizer step,
lr 2e-4 (``--lr``), temperature 1, ≤ 32 new tokens; Clip-Cov with the preset's r = 0.03 and
band (0.5, 1e3). Plots the generation batch's token-mean entropy (TRL's ``entropy``) and the
mean reward per step.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from entropyrl import testbed
from entropyrl.integrations.trl import EntropyGRPOConfig, EntropyGRPOTrainer


def _reward(completions, answer, **kwargs):
    return [testbed.score(c, a) for c, a in zip(completions, answer, strict=True)]


def run(plugin: bool, steps: int, out: str, lr: float) -> list[dict]:
    rows = testbed.make_tasks("train", 4000, 0, ops=("add", "sub"))
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    model, tok = testbed.load_base()
    common = dict(output_dir=out, max_steps=steps, learning_rate=lr, use_cpu=True, bf16=False,
                  report_to=[], per_device_train_batch_size=128, gradient_accumulation_steps=2,
                  num_generations=8, max_completion_length=32, temperature=1.0, seed=0,
                  logging_steps=1, save_strategy="no", loss_type="dapo", disable_tqdm=True,
                  lr_scheduler_type="constant")
    if plugin:
        args = EntropyGRPOConfig(**common, entropy_loss="clip_cov", clip_cov_ratio=0.03,
                                 clip_cov_low=0.5, clip_cov_high=1000.0)
        trainer = EntropyGRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                                     args=args, train_dataset=dataset)
    else:
        trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                              args=GRPOConfig(**common), train_dataset=dataset)
    trainer.train()
    return [h for h in trainer.state.log_history if "reward" in h]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--out", default="docs/figures/trl_plugin.png")
    a = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        logs = {"TRL GRPO": run(False, a.steps, out, a.lr),
                "TRL + plug-in, Clip-Cov": run(True, a.steps, out, a.lr)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, hist in logs.items():
        steps = [h["step"] for h in hist]
        axes[0].plot(steps, [h["entropy"] for h in hist], label=name)
        axes[1].plot(steps, [h["reward"] for h in hist], label=name)
    axes[0].set(xlabel="optimizer step", ylabel="token-mean entropy (nats)")
    axes[1].set(xlabel="optimizer step", ylabel="mean reward (train batch)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    summary = {k: {"entropy_last10": sum(h["entropy"] for h in v[-10:]) / 10,
                   "reward_last10": sum(h["reward"] for h in v[-10:]) / 10}
               for k, v in logs.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
