"""The law fit: closed form against a reference, coverage of the intervals, robust fits, errors."""

import numpy as np
import pytest

from entropyrl.errors import UserError
from entropyrl.law import LawDataError, fit_law
from entropyrl.law.fit import _psi

A, B, SIGMA = 0.15, 0.75, 0.01


def synth(seed, n=40, a=A, b=B, sigma=SIGMA, outliers=0):
    rng = np.random.default_rng(seed)
    h = np.sort(rng.uniform(0.05, 1.2, n))[::-1]
    r = b - a * np.exp(h) + sigma * rng.standard_normal(n)
    if outliers:
        r[rng.choice(n, outliers, replace=False)] -= 0.2  # failed evaluations
    return h, r


def reference_ols(h, r):
    """Normal equations of R = −a·x + b on the design [−x, 1], solved by lstsq, with textbook cov."""
    x = np.exp(h)
    design = np.column_stack([-x, np.ones_like(x)])
    theta, rss, *_ = np.linalg.lstsq(design, r, rcond=None)
    s2 = float(rss[0]) / (len(r) - 2)
    return theta, s2 * np.linalg.inv(design.T @ design)


def test_closed_form_matches_reference_regression():
    h, r = synth(0)
    fit = fit_law(h, r)
    theta, cov = reference_ols(h, r)
    np.testing.assert_allclose([fit.a, fit.b], theta, rtol=1e-10)
    np.testing.assert_allclose(fit.cov, cov, rtol=1e-8)
    # t quantile for 38 dof, two-sided 95% (tabulated 2.0244).
    assert fit.a_ci[1] - fit.a == pytest.approx(2.024394164 * np.sqrt(cov[0, 0]), rel=1e-6)
    resid = r - (theta[1] - theta[0] * np.exp(h))
    assert fit.rmse == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-10)
    assert fit.r2 == pytest.approx(1 - resid @ resid / ((r - r.mean()) ** 2).sum(), rel=1e-10)
    assert fit.n_points == 40 and fit.method == "ols" and fit.interval_method == "analytic"


def test_exact_data_recovers_parameters_and_sign():
    h = np.linspace(0.1, 1.0, 7)
    fit = fit_law(h, B - A * np.exp(h))
    assert fit.a == pytest.approx(A, rel=1e-12) and fit.b == pytest.approx(B, rel=1e-12)
    assert fit.ceiling == pytest.approx(B - A, rel=1e-12)
    # Score rising with entropy must give a negative a (sign is not absorbed anywhere).
    flipped = fit_law(h, B + A * np.exp(h))
    assert flipped.a == pytest.approx(-A, rel=1e-12)


def test_ceiling_variance_is_delta_method_and_prediction_at_zero_entropy():
    h, r = synth(1)
    fit = fit_law(h, r)
    var = fit.cov[0, 0] + fit.cov[1, 1] - 2 * fit.cov[0, 1]
    assert fit.ceiling_se == pytest.approx(np.sqrt(var), rel=1e-12)
    # b − a is the law at H = 0, so its standard error is the curve's there.
    assert fit.predict_se(0.0) == pytest.approx(fit.ceiling_se, rel=1e-10)
    assert fit.predict(0.0) == pytest.approx(fit.ceiling, rel=1e-12)
    # And the classical formula σ²(1/n + (1 − x̄)²/Sxx).
    x = np.exp(h)
    s2 = ((r - fit.predict(h)) ** 2).sum() / (len(h) - 2)
    ref = s2 * (1 / len(x) + (1 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    assert fit.ceiling_se**2 == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("method", ["ols", "soft_l1", "huber"])
def test_analytic_intervals_cover_at_nominal_rate(method):
    seeds = 200 if method == "ols" else 100
    hits = np.zeros(3)
    for seed in range(seeds):
        fit = fit_law(*synth(seed), method=method)
        hits += [fit.a_ci[0] <= A <= fit.a_ci[1], fit.b_ci[0] <= B <= fit.b_ci[1],
                 fit.ceiling_ci[0] <= B - A <= fit.ceiling_ci[1]]
    coverage = hits / seeds
    assert (coverage >= 0.90).all(), coverage
    if method == "ols":  # t intervals are exact for Gaussian noise: not vacuously wide either
        assert (coverage <= 0.99).all(), coverage


@pytest.mark.parametrize("method", ["soft_l1", "huber"])
def test_robust_intervals_on_clean_data_are_close_to_least_squares(method):
    ratios = [fit_law(*synth(s), method=method).a_se / fit_law(*synth(s)).a_se for s in range(20)]
    assert 0.9 < np.mean(ratios) < 1.25  # the price of robustness is small on Gaussian data


def test_bootstrap_intervals_cover_and_are_seeded():
    hits = np.zeros(3)
    seeds = 60
    for seed in range(seeds):
        fit = fit_law(*synth(seed), intervals="bootstrap", n_boot=400, seed=seed)
        hits += [fit.a_ci[0] <= A <= fit.a_ci[1], fit.b_ci[0] <= B <= fit.b_ci[1],
                 fit.ceiling_ci[0] <= B - A <= fit.ceiling_ci[1]]
    assert (hits / seeds >= 0.88).all(), hits / seeds
    h, r = synth(3)
    one = fit_law(h, r, intervals="bootstrap", n_boot=200, seed=7)
    two = fit_law(h, r, intervals="bootstrap", n_boot=200, seed=7)
    other = fit_law(h, r, intervals="bootstrap", n_boot=200, seed=8)
    assert one.a_ci == two.a_ci and one.a_ci != other.a_ci
    assert one.n_boot == 200 and one.interval_method == "bootstrap"
    # Same point estimate as the analytic fit; similar width.
    analytic = fit_law(h, r)
    assert one.a == analytic.a
    assert 0.6 < (one.a_ci[1] - one.a_ci[0]) / (analytic.a_ci[1] - analytic.a_ci[0]) < 1.6


@pytest.mark.parametrize("method", ["soft_l1", "huber"])
def test_robust_fit_solves_its_estimating_equations(method):
    h, r = synth(4, outliers=4)
    fit = fit_law(h, r, method=method)
    x = np.exp(h)
    psi, _ = _psi(r - fit.predict(h), method, fit.f_scale)
    # Stationarity of Σ ρ: Σ ψ(r_i)·∂r_i/∂(a, b) = 0, with ∂r/∂a = x, ∂r/∂b = −1.
    grad = np.array([psi @ x, -psi.sum()])
    assert np.abs(grad).max() < 1e-9 * len(h)


def test_robust_fit_resists_outliers_where_least_squares_does_not():
    h, r = synth(5, n=60, outliers=6)
    ols = fit_law(h, r)
    robust = fit_law(h, r, method="soft_l1")
    assert abs(robust.a - A) < abs(ols.a - A) / 3
    assert robust.a_ci[1] - robust.a_ci[0] < (ols.a_ci[1] - ols.a_ci[0]) / 3
    assert robust.a_ci[0] <= A <= robust.a_ci[1] and robust.b_ci[0] <= B <= robust.b_ci[1]
    assert robust.f_scale == pytest.approx(1.345 * robust.sigma, rel=0.5)


def test_robust_bootstrap_runs():
    h, r = synth(6, n=30, outliers=2)
    fit = fit_law(h, r, method="huber", intervals="bootstrap", n_boot=60, seed=0)
    assert fit.a_ci[0] <= fit.a <= fit.a_ci[1] and fit.n_boot == 60


@pytest.mark.parametrize(
    ("h", "r", "match"),
    [
        ([0.1, 0.2], [0.5, 0.4], "at least 3"),
        ([0.3, 0.3, 0.3, 0.3], [0.5, 0.4, 0.45, 0.41], "same entropy"),
        ([0.1, float("nan"), 0.3], [0.5, 0.4, 0.3], "NaN/inf"),
        ([0.1, 0.2, 0.3], [0.5, float("inf"), 0.3], "NaN/inf"),
        ([0.1, 0.2, 0.3], [0.5, 0.4], "same length"),
        ([[0.1, 0.2, 0.3]], [[0.5, 0.4, 0.3]], "1-D"),
        ([900.0, 901.0, 902.0], [0.5, 0.4, 0.3], "overflows"),
    ],
)
def test_degenerate_data_raise_clear_errors(h, r, match):
    with pytest.raises(LawDataError, match=match) as info:
        fit_law(h, r)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_bad_options_raise_value_error():
    h, r = synth(0)
    with pytest.raises(ValueError, match="method"):
        fit_law(h, r, method="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        fit_law(h, r, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        fit_law(h, r, intervals="bootstrap", n_boot=10)


def test_constant_scores_fit_flat_law_with_undefined_r2():
    h = np.linspace(0.1, 1.0, 5)
    fit = fit_law(h, np.full(5, 0.4))
    assert fit.a == pytest.approx(0.0, abs=1e-12) and fit.b == pytest.approx(0.4)
    assert np.isnan(fit.r2)
