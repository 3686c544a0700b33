"""``LawForecastCallback``: fit the entropy–performance law on the fly from TRL's logs.

Each time the trainer logs, the callback pairs the latest entropy it has seen (``entropy_key``,
default ``train/entropy``: the generation batch's token-mean entropy that
:class:`~entropyrl.integrations.trl.EntropyGRPOTrainer` logs) with a score (``score_key``,
default ``reward``: TRL's mean training reward; use ``eval_reward`` or an accuracy when an
evaluation set is logged). Once ``min_points`` pairs with distinct entropies exist it fits
``R = −a·exp(H) + b`` (:func:`entropyrl.law.fit_law`) and reports the forecast ceiling
``b − a`` (the score the law predicts at zero entropy) with its interval, in the log record
(``law/*`` keys) and in :attr:`LawForecastCallback.forecasts`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeGuard

from transformers import TrainerCallback

from entropyrl.law import LawDataError, fit_law


class LawForecastCallback(TrainerCallback):
    """Fits the law on the fly and reports the ceiling.

    Args:
        entropy_key: log key of the entropy ``H`` (nats).
        score_key: log key of the score ``R``.
        fallback_entropy_key: used when ``entropy_key`` is never logged (TRL's ``entropy``,
            the mean over training chunks of the current policy's entropy).
        min_points: pairs needed before the first fit (at least 3).
        write_jsonl: also append each forecast to ``<output_dir>/law_forecast.jsonl``.

    Attributes:
        forecasts: one dict per fit: ``step``, ``n_points``, ``a``, ``b``, ``ceiling``,
            ``ceiling_low``, ``ceiling_high``, ``r2``.
        points: the ``(step, H, R)`` pairs used.
    """

    def __init__(self, entropy_key: str = "train/entropy", score_key: str = "reward", *,
                 fallback_entropy_key: str = "entropy", min_points: int = 5,
                 write_jsonl: bool = True):
        if min_points < 3:
            raise ValueError(f"min_points: expected >= 3 (the law has 2 parameters), got "
                             f"{min_points}")
        self.entropy_key = entropy_key
        self.score_key = score_key
        self.fallback_entropy_key = fallback_entropy_key
        self.min_points = min_points
        self.write_jsonl = write_jsonl
        self.points: list[tuple[int, float, float]] = []
        self.forecasts: list[dict[str, float]] = []
        self._entropy: float | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        """Pair the log's score with the latest entropy; refit and report."""
        if not logs:
            return
        h = logs.get(self.entropy_key, logs.get(self.fallback_entropy_key))
        if _finite(h):
            self._entropy = float(h)
        r = logs.get(self.score_key)
        if not _finite(r) or self._entropy is None:
            return
        self.points.append((int(state.global_step), self._entropy, float(r)))
        if len(self.points) < self.min_points:
            return
        try:
            fit = fit_law([p[1] for p in self.points], [p[2] for p in self.points])
        except LawDataError:
            return  # e.g. all entropies equal so far: nothing to separate a from b yet
        forecast = {"step": float(state.global_step), "n_points": float(fit.n_points),
                    "a": fit.a, "b": fit.b, "ceiling": fit.ceiling,
                    "ceiling_low": fit.ceiling_ci[0], "ceiling_high": fit.ceiling_ci[1],
                    "r2": fit.r2}
        self.forecasts.append(forecast)
        logs.update({f"law/{k}": v for k, v in forecast.items() if k != "step"})
        if self.write_jsonl and getattr(state, "is_world_process_zero", True) and args:
            out = Path(args.output_dir) / "law_forecast.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(forecast) + "\n")


def _finite(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and math.isfinite(x)
