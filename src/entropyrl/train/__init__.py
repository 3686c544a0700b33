"""The training loop, in small pieces.

- :mod:`.loop`: :func:`train`, steps, validation cadence, checkpoints, signals, progress;
- :mod:`.step`: :func:`~entropyrl.train.step.rl_step`, one RL step in one screen;
- :mod:`.collect`: sampling through an engine, rewards, dynamic sampling;
- :mod:`.update`: optimizer updates on a batch with the global covariance selection;
- :mod:`.setup`: accelerator, precision, model, engine, data, resume;
- :mod:`.state`: checkpoints; :mod:`.metrics`: ``metrics.jsonl`` and its reader;
- :mod:`.batch_metrics`: the step's ``train/*`` and ``dyn/*`` over all ranks.
"""

from typing import Any

__all__ = ["train"]


def __getattr__(name: str) -> Any:
    # Lazy, so that readers of metrics.jsonl (report, law) import train.metrics without the
    # loop, torch and transformers.
    if name == "train":
        from entropyrl.train.loop import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
