"""The tracking figures of bench/bench_control.py, on hand-made traces."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_control", Path(__file__).resolve().parents[1] / "bench" / "bench_control.py")
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_a_run_on_its_target_tracks_and_settles_at_once():
    f = bench.tracking_figures([0.1] * 20, [0.1] * 20)
    assert f == {"tracking": 0.0, "ripple": 0.0, "settling": 1, "overshoot": 0.0}


def test_tracking_ripple_settling_and_overshoot_of_an_approach_from_above():
    # 0.3 falling below the 0.1 target (0.07 at steps 6-7), back on it from step 9.
    h = [0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.07, 0.09] + [0.1] * 12
    f = bench.tracking_figures(h, [0.1] * 20)
    # The 5-step trailing mean of H/H* is 1.18 at step 7, 0.96 at step 8 (the crossing), 0.86
    # at steps 9-10 (the deepest point past the target), 0.92 at step 11.
    assert f["overshoot"] == pytest.approx(0.14)
    assert f["settling"] == 11
    assert f["tracking"] == pytest.approx(0.0) and f["ripple"] == pytest.approx(0.0)
    g = bench.tracking_figures([0.1] * 10 + [0.12, 0.08] * 5, [0.1] * 20)
    assert g["tracking"] == pytest.approx(0.0, abs=1e-12)  # the mean is on target
    assert g["ripple"] == pytest.approx(0.2)  # each step is 20% off


def test_a_run_that_ends_outside_the_band_never_settles():
    f = bench.tracking_figures([0.2] * 10, [0.1] * 10)
    assert math.isnan(f["settling"]) and f["tracking"] == pytest.approx(1.0)
    assert f["overshoot"] == 0.0  # it never crossed the target


def test_summary_counts_runs_that_never_settled():
    assert bench.summary([1.0, 3.0, math.nan], ".1f") == "2.0 ± 1.4 (1 —)"
    assert bench.summary([math.nan], ".1f") == "—"
