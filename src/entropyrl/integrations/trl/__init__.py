"""The TRL plug-in: entropyrl's losses, selection, diagnostics and control in GRPOTrainer.

Clip-Cov / KL-Cov with a global token selection, the ``dyn/*`` diagnostics, entropy control
and an on-the-fly law forecast for ``trl.GRPOTrainer`` (docs/trl.md).

Install with ``pip install 'entropyrl[trl]'`` (tested range: ``compat.TESTED_RANGE``).

- :class:`EntropyGRPOConfig` — ``GRPOConfig`` plus the plug-in's fields;
- :class:`EntropyGRPOTrainer` — ``GRPOTrainer`` whose loss is entropyrl's;
- :class:`LawForecastCallback` — fits ``R = −a·exp(H) + b`` from the logs, reports the ceiling;
- :func:`check_trl` — what the installed TRL lacks of the internals the plug-in uses.
"""

from __future__ import annotations

try:
    import trl  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "entropyrl.integrations.trl needs TRL: pip install 'entropyrl[trl]'"
    ) from err

from entropyrl.integrations.trl.callback import LawForecastCallback
from entropyrl.integrations.trl.compat import TESTED_RANGE, check_trl
from entropyrl.integrations.trl.config import AGGREGATION, EntropyGRPOConfig, loss_config
from entropyrl.integrations.trl.trainer import (
    CONTROL_KEYS,
    DIAGNOSTIC_KEYS,
    SELECTION_KEYS,
    EntropyGRPOTrainer,
)

__all__ = [
    "AGGREGATION",
    "CONTROL_KEYS",
    "DIAGNOSTIC_KEYS",
    "SELECTION_KEYS",
    "TESTED_RANGE",
    "EntropyGRPOConfig",
    "EntropyGRPOTrainer",
    "LawForecastCallback",
    "check_trl",
    "loss_config",
]
