"""The entropy–performance law ``R = −a·exp(H) + b`` as a tool (PAPER.md §1, docs/law.md).

- :mod:`.fit` — least-squares (closed form) and robust fits with intervals and the ceiling;
- :mod:`.forecast` — early forecast from the first part of a run, and forward forecast with a
  band through :mod:`.entropy_model` (the entropy trajectory);
- :mod:`.scaling` — ``a``, ``b`` log-linear in parameter count, extrapolation with intervals;
- :mod:`.align` — pairing evaluations with entropy steps;
- :mod:`.io` — readers for metrics.jsonl, other JSON-lines loggers, CSV and TensorBoard;
- :mod:`.analysis` — all of it for one run, and the JSON shape; :mod:`.plot` — the figure.

Everything works on float64 numpy arrays; bad data raises :class:`LawDataError` (both a
``UserError`` and a ``ValueError``).
"""

from entropyrl.law._data import LawDataError
from entropyrl.law.align import Aligned, Series, align, make_series
from entropyrl.law.analysis import RunAnalysis, analyze_run, run_to_json, scaling_to_json
from entropyrl.law.entropy_model import EntropyDecay, fit_entropy_decay
from entropyrl.law.fit import LawFit, fit_law
from entropyrl.law.forecast import EarlyForecast, ForwardForecast, early_forecast, forward_forecast
from entropyrl.law.io import RunLog, load_run
from entropyrl.law.scaling import LogLinear, ScalingFit, ScalingPrediction, fit_scaling

__all__ = [
    "Aligned",
    "EarlyForecast",
    "EntropyDecay",
    "ForwardForecast",
    "LawDataError",
    "LawFit",
    "LogLinear",
    "RunAnalysis",
    "RunLog",
    "ScalingFit",
    "ScalingPrediction",
    "Series",
    "align",
    "analyze_run",
    "early_forecast",
    "fit_entropy_decay",
    "fit_law",
    "fit_scaling",
    "forward_forecast",
    "load_run",
    "make_series",
    "run_to_json",
    "scaling_to_json",
]
