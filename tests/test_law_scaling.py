"""Cross-size scaling: log-linear fits of a, b and the ceiling, prediction intervals."""

import numpy as np
import pytest

from entropyrl.law import LawDataError, fit_scaling

SIZES = np.array([0.494e9, 1.3e9, 2.8e9, 6.5e9, 31e9])


def lines(n):
    x = np.log10(n)
    return 1.2 - 0.12 * x, -0.4 + 0.13 * x  # a falls, b rises with size


def test_exact_log_linear_data_is_recovered():
    a, b = lines(SIZES)
    s = fit_scaling(SIZES, a, b)
    assert s.a.slope == pytest.approx(-0.12, rel=1e-10) and s.a.intercept == pytest.approx(1.2)
    assert s.b.slope == pytest.approx(0.13, rel=1e-10)
    p = s.extrapolate(72e9)
    a72, b72 = lines(72e9)
    assert p.a == pytest.approx(a72) and p.b == pytest.approx(b72)
    assert p.ceiling == pytest.approx(b72 - a72)
    assert p.ceiling_ci[0] == pytest.approx(p.ceiling, abs=1e-9)  # no scatter, no width


def test_intervals_match_textbook_prediction_interval():
    rng = np.random.default_rng(0)
    a, b = lines(SIZES)
    a = a + 0.01 * rng.standard_normal(5)
    b = b + 0.01 * rng.standard_normal(5)
    s = fit_scaling(SIZES, a, b)
    x, xs = np.log10(SIZES), np.log10(72e9)
    design = np.column_stack([np.ones(5), x])
    for line, y in ((s.a, a), (s.b, b), (s.ceiling, b - a)):
        coef, rss, *_ = np.linalg.lstsq(design, y, rcond=None)
        s2 = float(rss[0]) / 3
        se_pred = np.sqrt(s2 * (1 + np.array([1, xs]) @ np.linalg.inv(design.T @ design) @ [1, xs]))
        lo, hi = line.interval(72e9)
        assert hi - (coef[0] + coef[1] * xs) == pytest.approx(3.182446305 * se_pred, rel=1e-6)
        assert (coef[0] + coef[1] * xs) - lo == pytest.approx(3.182446305 * se_pred, rel=1e-6)
        assert line.predict(72e9) == pytest.approx(coef[0] + coef[1] * xs, rel=1e-10)
        se_slope = np.sqrt(s2 / ((x - x.mean()) ** 2).sum())
        assert line.slope_ci[1] - line.slope == pytest.approx(3.182446305 * se_slope, rel=1e-6)
    # The ceiling line is exactly the b line minus the a line.
    assert s.ceiling.predict(72e9) == pytest.approx(s.b.predict(72e9) - s.a.predict(72e9))


def test_prediction_intervals_cover_a_new_size():
    hits = np.zeros(3)
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a, b = lines(SIZES)
        s = fit_scaling(SIZES, a + 0.01 * rng.standard_normal(5), b + 0.01 * rng.standard_normal(5))
        a_new, b_new = np.array(lines(72e9)) + 0.01 * rng.standard_normal(2)
        p = s.extrapolate(72e9)
        hits += [p.a_ci[0] <= a_new <= p.a_ci[1], p.b_ci[0] <= b_new <= p.b_ci[1],
                 p.ceiling_ci[0] <= b_new - a_new <= p.ceiling_ci[1]]
    assert (hits / 200 >= 0.9).all(), hits / 200


@pytest.mark.parametrize(
    ("n", "match"),
    [([1e9, 2e9], "at least 3"), ([1e9, 1e9, 1e9], "same size"), ([1e9, -2e9, 3e9], "positive"),
     ([1e9, float("nan"), 3e9], "NaN/inf")],
)
def test_bad_sizes(n, match):
    with pytest.raises(LawDataError, match=match):
        fit_scaling(n, np.ones(len(n)), np.ones(len(n)) * 2)


def test_extrapolate_rejects_bad_size():
    a, b = lines(SIZES)
    with pytest.raises(LawDataError, match="positive"):
        fit_scaling(SIZES, a, b).extrapolate(0.0)
