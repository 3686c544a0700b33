"""Pairing evaluations with entropy steps: same step, interpolation, drop."""

import numpy as np
import pytest

from entropyrl.law import LawDataError, align, make_series


def test_exact_interpolated_and_dropped():
    h = make_series("train/entropy", [1, 2, 3, 4, 6, 8], [1.0, 0.9, 0.8, 0.7, 0.5, 0.3])
    r = make_series("val/acc", [0, 2, 5, 7, 8, 9], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    al = align(h, r)
    np.testing.assert_array_equal(al.steps, [2, 5, 7, 8])
    np.testing.assert_allclose(al.entropy, [0.9, 0.6, 0.4, 0.3], rtol=1e-12)
    np.testing.assert_array_equal(al.score, [0.2, 0.3, 0.4, 0.5])
    assert (al.n_exact, al.n_interpolated, al.n_dropped) == (2, 2, 2)
    np.testing.assert_array_equal(al.dropped_steps, [0, 9])


def test_same_step_value_is_taken_exactly():
    vals = np.array([0.123456789012345, 0.3, 0.7])
    al = align(make_series("h", [1, 2, 3], vals), make_series("r", [2], [0.5]))
    assert al.entropy[0] == vals[1]


def test_make_series_sorts_and_keeps_last_duplicate():
    s = make_series("k", [3, 1, 2, 2], [30.0, 10.0, 20.0, 21.0])  # step 2 re-logged on resume
    np.testing.assert_array_equal(s.steps, [1, 2, 3])
    np.testing.assert_array_equal(s.values, [10.0, 21.0, 30.0])


def test_nan_values_are_an_error_naming_the_step():
    with pytest.raises(LawDataError, match=r"val/acc in run\.jsonl: 1 NaN/inf value\(s\) \(at step 8\)"):
        make_series("val/acc", [4, 8], [0.5, float("nan")], source="run.jsonl")


def test_empty_entropy_is_an_error():
    with pytest.raises(LawDataError, match="no entropy"):
        align(make_series("h", [], []), make_series("r", [1], [0.5]))
