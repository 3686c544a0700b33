"""The TRL internals the plug-in relies on, checked against the installed TRL.

The plug-in subclasses ``GRPOTrainer`` and overrides or reads private methods and attributes
that TRL may change in any release. :func:`check_trl` compares the installed TRL with the list
below and returns what is missing or changed; the trainer refuses to start when the list is not
empty, and a test fails with the same message, naming the TRL version.
"""

from __future__ import annotations

import inspect
from typing import Any

# The range the plug-in is tested with (pyproject: the `trl` extra).
TESTED_RANGE = ">=1.16,<1.17"

# Methods of GRPOTrainer the plug-in overrides or calls, with the parameters it passes.
METHODS: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_compute_loss": ("self", "model", "inputs"),
    "_prepare_inputs": ("self", "generation_batch"),
    "_get_per_token_logps_and_entropies": (
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size",
        "compute_entropy",
    ),
}

# GRPOConfig fields the plug-in reads (the loss mapping and the checks of unsupported options).
CONFIG_FIELDS: tuple[str, ...] = (
    "loss_type", "epsilon", "epsilon_high", "beta", "temperature", "max_completion_length",
    "num_iterations", "steps_per_generation", "gradient_accumulation_steps", "num_generations",
    "importance_sampling_level", "delta", "top_entropy_quantile", "off_policy_mask_threshold",
    "use_vllm", "vllm_importance_sampling_correction", "entropy_coef", "use_adaptive_entropy",
    "use_bias_correction_kl", "seed", "per_device_train_batch_size",
)

# Attributes set by GRPOTrainer.__init__ that the plug-in reads.
TRAINER_ATTRIBUTES: tuple[str, ...] = (
    "_metrics", "num_iterations", "loss_type", "temperature", "max_completion_length",
    "num_generations", "beta", "accelerator", "_step", "model",
)

# Keys of the dict `_generate_and_score_completions` returns (checked at run time as well).
BATCH_KEYS: tuple[str, ...] = (
    "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages",
    "num_items_in_batch",
)


def trl_version() -> str:
    """The installed TRL's version string."""
    import trl

    return str(trl.__version__)


def check_trl(trainer_cls: Any = None, config_cls: Any = None) -> list[str]:
    """What the installed TRL lacks of the plug-in's needs (empty when all is in place).

    Args:
        trainer_cls: the class to inspect (default: ``trl.GRPOTrainer``).
        config_cls: the config class to inspect (default: ``trl.GRPOConfig``).
    """
    from dataclasses import fields

    if trainer_cls is None or config_cls is None:
        from trl import GRPOConfig, GRPOTrainer

        trainer_cls = trainer_cls or GRPOTrainer
        config_cls = config_cls or GRPOConfig
    problems = []
    for name, wanted in METHODS.items():
        method = getattr(trainer_cls, name, None)
        if not callable(method):
            problems.append(f"GRPOTrainer.{name} is missing")
            continue
        params = tuple(inspect.signature(method).parameters)
        if params[: len(wanted)] != wanted:
            problems.append(f"GRPOTrainer.{name}{wanted} expected, found {params}")
    if getattr(trainer_cls, "loss_is_scaled_for_ga", None) is not True:
        problems.append("GRPOTrainer.loss_is_scaled_for_ga is no longer True (the plug-in's "
                        "loss is normalised for gradient accumulation itself)")
    names = {f.name for f in fields(config_cls)}
    problems += [f"GRPOConfig.{n} is missing" for n in CONFIG_FIELDS if n not in names]
    return problems


def incompatibility_message(problems: list[str], version: str) -> str:
    """One paragraph naming the TRL version, the tested range and what changed."""
    return (
        f"entropyrl.integrations.trl was tested with trl{TESTED_RANGE} and the installed TRL "
        f"{version} changed internals it relies on: {'; '.join(problems)}. Install a tested "
        f"version (pip install 'entropyrl[trl]') or update the plug-in."
    )
