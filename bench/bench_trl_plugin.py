"""Step time of TRL's GRPOTrainer with the entropyrl plug-in against plain TRL, same work.

Both runs use the testbed model, the same prompts, seed and batch shape; they alternate
(plain, plug-in, plain, ...) so machine load hits both alike. The plug-in runs Clip-Cov with
the diagnostics on (its most expensive setting: one extra no-grad forward per generation
batch, the selection and the dyn/* statistics). Reported: seconds per optimizer step
(``train_runtime / max_steps``, generation included), median over repeats, and the ratio.

    python bench/bench_trl_plugin.py [--steps 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from entropyrl import testbed
from entropyrl.integrations.trl import EntropyGRPOConfig, EntropyGRPOTrainer


def _reward(completions, answer, **kwargs):
    return [testbed.score(c, a) for c, a in zip(completions, answer, strict=True)]


def run(plugin: bool, steps: int, out: str) -> float:
    rows = testbed.make_tasks("train", 256, 0)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    model, tok = testbed.load_base()
    common = dict(output_dir=out, max_steps=steps, learning_rate=1e-5, use_cpu=True,
                  report_to=[], per_device_train_batch_size=16, gradient_accumulation_steps=2,
                  num_generations=8, max_completion_length=48, temperature=1.0, seed=0,
                  logging_steps=steps, save_strategy="no", loss_type="dapo",
                  disable_tqdm=True)
    if plugin:
        args = EntropyGRPOConfig(**common, entropy_loss="clip_cov", clip_cov_ratio=0.01,
                                 clip_cov_low=0.0, clip_cov_high=100.0)
        trainer = EntropyGRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                                     args=args, train_dataset=dataset)
    else:
        trainer = GRPOTrainer(model=model, processing_class=tok, reward_funcs=_reward,
                              args=GRPOConfig(**common), train_dataset=dataset)
    result = trainer.train()
    return float(result.metrics["train_runtime"]) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(a.repeats):
            for plugin in (False, True):
                times[plugin].append(run(plugin, a.steps, out))
    plain, plug = statistics.median(times[False]), statistics.median(times[True])
    print(f"TRL plain      {plain * 1000:8.1f} ms/step  {[round(t * 1000) for t in times[False]]}")
    print(f"TRL + plug-in  {plug * 1000:8.1f} ms/step  {[round(t * 1000) for t in times[True]]}")
    print(f"ratio {plug / plain:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
