"""Early forecast, entropy-decay model and forward forecast on synthetic runs."""

import math

import numpy as np
import pytest

from entropyrl.law import (
    LawDataError,
    early_forecast,
    fit_entropy_decay,
    fit_law,
    forward_forecast,
)
from entropyrl.law.forecast import split_step

A, B, SIGMA = 0.15, 0.75, 0.01
H_INF, H0, TAU = 0.1, 1.1, 100.0


def entropy_at(t):
    return H_INF + (H0 - H_INF) * np.exp(-(t - 1) / TAU)


def run(seed, every=2, n=400, h_noise=0.0):
    rng = np.random.default_rng(seed)
    t = np.arange(every, n + 1, every, dtype=float)
    h = entropy_at(t) + h_noise * rng.standard_normal(len(t))
    r = B - A * np.exp(h) + SIGMA * rng.standard_normal(len(t))
    return t, h, r


def test_early_forecast_rmse_is_noise_plus_parameter_uncertainty():
    rmse, theory = [], []
    for seed in range(100):
        t, h, r = run(seed)
        e = early_forecast(t, h, r)
        later = t > e.split_step
        assert e.fit.n_points == int((~later).sum()) == 30
        rmse.append(e.rmse)
        theory.append(SIGMA**2 + np.mean(e.fit.predict_se(h[later]) ** 2))
    rmse = np.array(rmse)
    # Close to the noise level (the paper: RMSE ~1% with accuracy noise of that order) …
    assert 0.95 < rmse.mean() / SIGMA < 1.4
    # … and exactly what noise + the fitted curve's own uncertainty predict.
    assert np.mean(rmse**2) / np.mean(theory) == pytest.approx(1.0, abs=0.15)


def test_early_forecast_fields_match_a_manual_computation():
    t, h, r = run(0, every=4, n=240)
    e = early_forecast(t[::-1], h[::-1], r[::-1], fit_fraction=0.2)  # order does not matter
    cut = 4 + 0.2 * (240 - 4)
    assert e.split_step == pytest.approx(cut) == split_step(t, 0.2)
    win = t <= cut
    ref = fit_law(h[win], r[win])
    assert e.fit.a == pytest.approx(ref.a, rel=1e-12)
    pred = ref.b - ref.a * np.exp(h[~win])
    np.testing.assert_allclose(e.predicted, pred, rtol=1e-12)
    np.testing.assert_array_equal(e.steps, t[~win])
    assert e.rmse == pytest.approx(np.sqrt(np.mean((pred - r[~win]) ** 2)), rel=1e-12)
    assert e.final_error == pytest.approx(pred[-1] - r[~win][-1], rel=1e-12)  # signed: pred − obs


def test_early_forecast_errors():
    t, h, r = run(0, every=40, n=400)  # 10 evaluations: 15% of the steps holds only 1
    with pytest.raises(LawDataError, match="raise --fit-fraction"):
        early_forecast(t, h, r)
    with pytest.raises(LawDataError, match="no evaluation after"):
        early_forecast(t, h, r, fit_fraction=1.0)
    with pytest.raises(ValueError, match="fraction"):
        early_forecast(t, h, r, fit_fraction=15)


def test_entropy_decay_recovers_exact_trajectory():
    t = np.arange(1, 301, dtype=float)
    d = fit_entropy_decay(t, entropy_at(t))
    assert d.h_inf == pytest.approx(H_INF, rel=1e-4)
    assert d.h0 == pytest.approx(H0, rel=1e-5)
    assert d.tau == pytest.approx(TAU, rel=1e-4)
    np.testing.assert_allclose(d.predict(t), entropy_at(t), atol=1e-5)
    assert d.predict(math.inf) == pytest.approx(d.h_inf)
    assert d.grid_weight.sum() == pytest.approx(1.0)


def test_entropy_decay_band_covers_the_truth_far_ahead():
    """From 40 noisy early steps, the 95% band at step 240 holds the true entropy."""
    hits = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        t = np.arange(1, 41, dtype=float)
        d = fit_entropy_decay(t, entropy_at(t) + 0.01 * rng.standard_normal(40))
        h_inf, h0, tau = d.sample(2000, np.random.default_rng(seed))
        far = h_inf + (h0 - h_inf) * np.exp(-(240 - d.t0) / tau)
        lo, hi = np.quantile(far, [0.025, 0.975])
        hits += lo <= entropy_at(240.0) <= hi
    assert hits / 60 >= 0.85


def test_entropy_decay_pins_plateau_at_zero_and_errors():
    t = np.arange(1, 51, dtype=float)
    d = fit_entropy_decay(t, 1.0 - 0.01 * t)  # linear fall: the plateau would be negative
    assert d.h_inf >= 0.0
    with pytest.raises(LawDataError, match="at least 4"):
        fit_entropy_decay([1, 2, 3], [1.0, 0.9, 0.8])
    with pytest.raises(LawDataError, match="one step"):
        fit_entropy_decay([5, 5, 5, 5], [1.0, 0.9, 0.8, 0.7])
    with pytest.raises(LawDataError, match="NaN/inf"):
        fit_entropy_decay([1, 2, 3, 4], [1.0, float("nan"), 0.8, 0.7])


def test_forward_forecast_band_holds_later_evaluations():
    inside, total = 0, 0
    for seed in range(20):
        t, h, r = run(seed, h_noise=0.005)
        e = early_forecast(t, h, r)
        steps = np.arange(1, 401, dtype=float)
        window = steps <= e.split_step
        rng = np.random.default_rng(100 + seed)
        logged_h = entropy_at(steps[window]) + 0.005 * rng.standard_normal(int(window.sum()))
        decay = fit_entropy_decay(steps[window], logged_h)
        f = forward_forecast(e.fit, decay, e.steps, seed=seed)
        inside += int(((f.low <= e.observed) & (e.observed <= f.high)).sum())
        total += len(e.steps)
        assert (f.low <= f.score).all() and (f.score <= f.high).all()
        assert (f.entropy_low <= f.entropy + 1e-12).all()
    assert inside / total >= 0.85


def test_forward_forecast_point_and_plateau():
    t = np.arange(1, 301, dtype=float)
    decay = fit_entropy_decay(t, entropy_at(t))
    h = np.linspace(0.1, 1.1, 20)
    law = fit_law(h, B - A * np.exp(h) + 0.001 * np.sin(7 * h))
    f = forward_forecast(law, decay, [100.0, 500.0, math.inf], seed=0, noise=False)
    np.testing.assert_allclose(f.entropy, decay.predict([100.0, 500.0, math.inf]))
    np.testing.assert_allclose(f.score, law.predict(f.entropy), rtol=1e-12)
    assert f.score[-1] == pytest.approx(law.b - law.a * np.exp(decay.h_inf))
    again = forward_forecast(law, decay, [100.0, 500.0, math.inf], seed=0, noise=False)
    np.testing.assert_array_equal(f.low, again.low)  # seeded
    noisy = forward_forecast(law, decay, [500.0], seed=0)
    assert noisy.high[0] - noisy.low[0] > f.high[1] - f.low[1]  # adds the residual noise
