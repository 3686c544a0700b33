"""The seam between the trainer and whatever samples responses: the ``RolloutEngine`` protocol.

The trainer, validation, ``entropyrl eval`` and the testbed's evaluation all sample through an
engine. An engine turns prompts into a :class:`~entropyrl.rollout.batch.Rollout`, learns the
trainer's new weights through :meth:`RolloutEngine.sync_weights` after each step's updates, and
releases what it holds on :meth:`RolloutEngine.close`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from entropyrl.rollout.batch import Rollout


@dataclass(frozen=True)
class SamplingParams:
    """How responses are sampled; the same semantics in every engine.

    Plain ancestral sampling at ``temperature`` with nucleus ``top_p`` (top-k off, no
    repetition penalty), stopping at the tokenizer's end-of-sequence token or after
    ``max_new_tokens``; ``greedy`` takes the arg-max instead. The trainer scores log-probs and
    entropies at the same temperature, so they describe the distribution that drew the tokens.

    Attributes:
        max_new_tokens: response length limit.
        temperature: logits are divided by it (ignored when greedy).
        top_p: nucleus threshold in (0, 1] (ignored when greedy).
        greedy: arg-max decoding.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected >= 1, got {self.max_new_tokens}")
        if not self.greedy and not self.temperature > 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: expected a value in (0, 1], got {self.top_p}")


class RolloutEngine(Protocol):
    """Something that samples responses from the current policy."""

    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> Rollout:
        """``n`` responses per prompt, grouped: rows ``i·n … i·n + n − 1`` answer prompt ``i``."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from ``model``'s current parameters."""
        ...

    def close(self) -> None:
        """Release the engine's memory and workers."""
        ...
