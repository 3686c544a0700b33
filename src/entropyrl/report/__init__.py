"""The report of training runs: summary numbers, figures, ``summary.json`` and ``report.html``.

- :mod:`.load` — read a run's ``metrics.jsonl`` tolerantly (old keys, torn lines, NaN);
- :mod:`.summary` — per-run numbers (entropy, accuracy, the law, covariance, ΔH correlation);
- :mod:`.compare` — a method's accuracy above the baseline's law at its own entropy;
- :mod:`.plots` — the figures, one colour per method; :mod:`.html` — the page;
- :mod:`.writer` — :func:`write_report`; :mod:`.console` — :func:`print_summary`.

Formulas of every number and what each figure shows: docs/report.md.
"""

from entropyrl.report.compare import LawOffset, law_offset
from entropyrl.report.console import print_summary
from entropyrl.report.load import RunData, load_run_data
from entropyrl.report.summary import LawResult, RunSummary, fit_run_law, summarize, summarize_run
from entropyrl.report.writer import write_report

__all__ = [
    "LawOffset",
    "LawResult",
    "RunData",
    "RunSummary",
    "fit_run_law",
    "law_offset",
    "load_run_data",
    "print_summary",
    "summarize",
    "summarize_run",
    "write_report",
]
