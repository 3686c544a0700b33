"""The embedded testbed: a tiny Qwen2 base model, a character tokenizer and arithmetic tasks.

Everything the trainer and the demo need to run the paper's experiment offline on a CPU:

- :func:`load_base` — the shipped base checkpoint (Hugging Face format, ``BASE_DIR``);
- :func:`make_tasks` / :func:`score` — seeded verifiable tasks and their checker;
- :func:`build_tokenizer` / :func:`micro_config` (:func:`vllm_micro_config`: head size 32,
  which vLLM's CPU attention runs) — pieces to build a fresh micro model in tests;
- :func:`evaluate` — sampled accuracy, token entropy and mixed-group fraction of a model;
- ``python -m entropyrl.testbed.build`` — the reproducible "pre-training" of the base model.
"""

from __future__ import annotations

from entropyrl.testbed.evaluate import evaluate
from entropyrl.testbed.model import (
    BASE_DIR,
    base_config,
    load_base,
    micro_config,
    read_build_info,
    vllm_micro_config,
)
from entropyrl.testbed.noise import NoiseRecipe, noisy_solution
from entropyrl.testbed.tasks import extract_answer, make_tasks, parse_prompt, score, solve, split_of
from entropyrl.testbed.tokenizer import build_tokenizer

__all__ = [
    "BASE_DIR",
    "NoiseRecipe",
    "base_config",
    "build_tokenizer",
    "evaluate",
    "extract_answer",
    "load_base",
    "make_tasks",
    "micro_config",
    "noisy_solution",
    "parse_prompt",
    "read_build_info",
    "score",
    "solve",
    "split_of",
    "vllm_micro_config",
]
