"""Math datasets as task rows, and the prompts given to the model.

A task row is a dict with ``prompt`` (the model's input text), ``answer`` (the reference, text),
``data_source`` (for per-source metrics), ``question`` (the raw problem), ``schema`` and ``row``
(its 1-based row number in the source)::

    from entropyrl.data import load_math_dataset
    result = load_math_dataset("aime24.jsonl", template="paper", skip_bad_rows=True)
    result.rows[0]["prompt"], result.skipped

* :mod:`~entropyrl.data.io`: reading ``.jsonl``/``.json``/``.parquet`` files and hub datasets.
* :mod:`~entropyrl.data.schemas`: one adapter per dataset layout, and auto-detection.
* :mod:`~entropyrl.data.prompts`: prompt templates and the tokenizer chat template.
* :mod:`~entropyrl.data.load`: :func:`load_math_dataset`, which ties them together.

docs/data.md lists the fields each schema reads.
"""

from entropyrl.data.load import LoadResult, Row, load_math_dataset, load_math_datasets
from entropyrl.data.prompts import PAPER_INSTRUCTION, TEMPLATES, format_prompt, render_prompt
from entropyrl.data.schemas import SCHEMAS, detect_schema

__all__ = [
    "PAPER_INSTRUCTION",
    "SCHEMAS",
    "TEMPLATES",
    "LoadResult",
    "Row",
    "detect_schema",
    "format_prompt",
    "load_math_dataset",
    "load_math_datasets",
    "render_prompt",
]
