"""Rollouts: the batch layout, the engine protocol and the engines.

- :class:`Rollout` (built by :meth:`Rollout.from_token_lists`) and :func:`concat_rollouts`;
- :class:`RolloutEngine` and :class:`SamplingParams`, the seam every sampler implements;
- :class:`HFEngine`: Hugging Face ``generate`` in chunks bounded by a token budget.
"""

from entropyrl.rollout.batch import Rollout, concat_rollouts
from entropyrl.rollout.engine import RolloutEngine, SamplingParams
from entropyrl.rollout.hf import HFEngine, plan_chunks

__all__ = ["HFEngine", "Rollout", "RolloutEngine", "SamplingParams", "concat_rollouts",
           "plan_chunks"]
