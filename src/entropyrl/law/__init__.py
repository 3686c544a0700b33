"""The entropy–performance law ``R = −a·exp(H) + b`` as a tool (PAPER.md §1, docs/law.md).

- :mod:`.fit` — least-squares (closed form) and robust fits with intervals and the ceiling;
- :mod:`.forecast` — early forecast from the first part of a run, and forward forecast with a
  band through :mod:`.entropy_model` (the entropy trajectory);
- :mod:`.scaling` — ``a``, ``b`` log-linear in parameter count, extrapolation with intervals;
- :mod:`.align` — pairing evaluations with entropy steps (same step, or by policy: a lag);
- :mod:`.frameworks` — what a log's framework means (default keys, pairing, progress origin);
- :mod:`.io` — load a run: the format recognised from the content, keys by :mod:`.keys`
  (names, aliases, patterns, merged); readers :mod:`.read_json` (JSON lines,
  trainer_state.json), :mod:`.read_console` (verl stdout), :mod:`.read_csv` (W&B exports),
  :mod:`.read_tensorboard`;
- :mod:`.early_check` — do the first evaluations break the law (format learning)?
- :mod:`.forms` — sigmoid and power-law forecasts in training progress;
  :mod:`.backtest` — every form fitted on the early window, scored with band coverage;
- :mod:`.analysis` — all of it for one run, and the JSON shape; :mod:`.plot` — the figure.

Everything works on float64 numpy arrays; bad data raises :class:`LawDataError` (both a
``UserError`` and a ``ValueError``).
"""

from entropyrl.law._data import LawDataError
from entropyrl.law.align import Aligned, Series, align, make_series
from entropyrl.law.analysis import RunAnalysis, analyze_run, run_to_json, scaling_to_json
from entropyrl.law.backtest import FormBacktest
from entropyrl.law.early_check import EarlyBreak, early_break
from entropyrl.law.entropy_model import EntropyDecay, fit_entropy_decay
from entropyrl.law.fit import LawFit, fit_law
from entropyrl.law.forecast import EarlyForecast, ForwardForecast, early_forecast, forward_forecast
from entropyrl.law.forms import ProgressFit, fit_progress
from entropyrl.law.io import RunLog, load_run, read_log
from entropyrl.law.scaling import LogLinear, ScalingFit, ScalingPrediction, fit_scaling

__all__ = [
    "Aligned",
    "EarlyBreak",
    "EarlyForecast",
    "EntropyDecay",
    "FormBacktest",
    "ForwardForecast",
    "LawDataError",
    "LawFit",
    "LogLinear",
    "ProgressFit",
    "RunAnalysis",
    "RunLog",
    "ScalingFit",
    "ScalingPrediction",
    "Series",
    "align",
    "analyze_run",
    "early_break",
    "early_forecast",
    "fit_entropy_decay",
    "fit_law",
    "fit_progress",
    "fit_scaling",
    "forward_forecast",
    "load_run",
    "make_series",
    "read_log",
    "run_to_json",
    "scaling_to_json",
]
