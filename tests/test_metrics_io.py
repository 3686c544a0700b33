"""The one metrics.jsonl parser: torn last lines, bad lines, resume truncation."""

import pytest

from entropyrl.errors import UserError
from entropyrl.train.metrics import parse_json_lines, read_metrics, truncate_metrics


def test_parse_json_lines_separates_a_torn_last_line_from_bad_ones():
    parsed = parse_json_lines('{"step": 1}\nnot json\n\n{"step": 2, "x": NaN}\n{"step": 3, "x"')
    assert [n for n, _ in parsed.rows] == [1, 4]
    assert [n for n, _ in parsed.bad] == [2]
    assert parsed.torn_last == 5


def test_read_metrics_skips_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "trai')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    path.write_text('{"step": 1}\n{oops\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(path)


def test_truncate_keeps_the_steps_covered_by_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "tor')
    truncate_metrics(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
