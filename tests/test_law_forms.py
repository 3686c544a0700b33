"""Forecast forms in progress (sigmoid, power law) and the back-test of every form."""

import json

import numpy as np
import pytest

from entropyrl.cli.main import main
from entropyrl.law import LawDataError
from entropyrl.law.backtest import misfit_scale, progress_forms_backtest
from entropyrl.law.forms import fit_progress

C = np.arange(0, 241, 8, dtype=float)


def sigmoid(c, r0=0.1, a=0.7, c_mid=40.0, b=1.5):
    with np.errstate(divide="ignore"):
        return r0 + (a - r0) / (1 + (c_mid / c) ** b)


def power(c, r0=0.1, a=0.7, c0=20.0, alpha=0.8):
    return a - (a - r0) * (1 + c / c0) ** -alpha


@pytest.mark.parametrize(
    ("form", "curve", "theta"), [("sigmoid", sigmoid, (40.0, 1.5)), ("power", power, (20.0, 0.8))]
)
def test_progress_forms_recover_their_parameters(form, curve, theta):
    fit = fit_progress(form, C, curve(C))
    assert fit.r0 == pytest.approx(0.1, abs=1e-4) and fit.asymptote == pytest.approx(0.7, abs=1e-4)
    np.testing.assert_allclose(fit.theta, theta, rtol=1e-3)
    np.testing.assert_allclose(fit.predict(C), curve(C), atol=1e-5)
    assert fit.bounded  # fractions: A and the band stay in [0, 1]


def test_too_few_points_and_one_step_are_errors():
    with pytest.raises(LawDataError, match="at least 5 needed"):
        fit_progress("sigmoid", C[:4], sigmoid(C[:4]))
    with pytest.raises(LawDataError, match="same step"):
        fit_progress("power", np.full(6, 8.0), np.linspace(0.1, 0.2, 6))
    with pytest.raises(ValueError, match="form"):
        fit_progress("cubic", C, sigmoid(C))


@pytest.mark.parametrize(("form", "curve"), [("sigmoid", sigmoid), ("power", power)])
def test_forecast_bands_cover_noisy_runs_of_their_own_form(form, curve):
    """Fit on the first 40% of 31 evaluations, forecast the rest: 95% bands hold ≥ 85%."""
    inside, total = 0, 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = np.clip(curve(C) + 0.01 * rng.standard_normal(len(C)), 0, 1)
        split = 0.4 * C[-1]
        (bt,) = progress_forms_backtest(C, C, y, split, C[C > split], 0.95, seed, (form,))
        inside += round(bt.coverage * len(bt.steps))
        total += len(bt.steps)
        assert abs(bt.bias) < 0.05
    assert inside / total >= 0.85


def test_misfit_scale_widens_bands_for_runs_of_one_sign():
    rng = np.random.default_rng(0)
    assert misfit_scale(rng.standard_normal(40), 2) < 1.3  # white noise: about 1
    trend = np.sin(np.linspace(0, np.pi, 40))  # a shape the form missed
    assert misfit_scale(trend, 2) == pytest.approx(3.0)
    assert misfit_scale(np.zeros(10), 2) == 1.0


def _run(path, steps=240, every=4, seed=0):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    with (path / "metrics.jsonl").open("w") as f:
        for s in range(1, steps + 1):
            h = 0.12 + 0.98 * np.exp(-(s - 1) / 60) + 0.005 * rng.standard_normal()
            row = {"step": s, "train/entropy": h}
            if s % every == 0:
                row["val/acc"] = 0.75 - 0.15 * np.exp(h) + 0.01 * rng.standard_normal()
            f.write(json.dumps(row) + "\n")
    return path


def test_cli_backtest_reports_every_form(tmp_path, capsys):
    out = tmp_path / "o.json"
    assert (
        main(
            [
                "fit",
                str(_run(tmp_path / "r")),
                "--backtest",
                "--json",
                str(out),
                "--plot",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "back-test" in text and "band coverage" in text
    bt = json.loads(out.read_text())["runs"][0]["backtest"]
    assert [b["form"] for b in bt] == ["law", "law+entropy", "sigmoid", "power"]
    assert set(bt[0]) == {
        "form",
        "formula",
        "n_fit",
        "n_forecast",
        "rmse",
        "final_error",
        "bias",
        "coverage",
        "level",
        "note",
    }
    assert bt[0]["rmse"] < 0.04 and bt[0]["n_forecast"] == 51
    for b in bt:
        assert b["note"] is None and 0 <= b["coverage"] <= 1


def test_law_bands_are_calibrated_on_runs_that_follow_the_law():
    """Over 12 synthetic runs the law's 95% bands hold 90–99% of the later evaluations."""
    from pathlib import Path

    from entropyrl.law import analyze_run, make_series
    from entropyrl.law.io import RunLog

    hits = {"law": [], "law+entropy": []}
    s = np.arange(1, 241.0)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        h = 0.12 + 0.98 * np.exp(-(s - 1) / 60) + 0.005 * rng.standard_normal(len(s))
        r = 0.75 - 0.15 * np.exp(h[3::4]) + 0.01 * rng.standard_normal(60)
        run = RunLog(
            "x",
            Path("x"),
            "jsonl",
            make_series("h", s, h),
            make_series("r", s[3::4], r),
            framework="entropyrl",
        )
        for b in analyze_run(run, backtest=True).backtest:
            if b.form in hits:
                hits[b.form].append(b.coverage)
    assert 0.9 <= np.mean(hits["law"]) <= 0.995
    assert np.mean(hits["law+entropy"]) >= 0.8


def test_backtest_of_a_short_run_skips_with_notes(tmp_path):
    out = tmp_path / "o.json"
    assert (
        main(
            ["fit", str(_run(tmp_path / "r", steps=40, every=10)), "--backtest", "--json", str(out)]
        )
        == 0
    )
    bt = json.loads(out.read_text())["runs"][0]["backtest"]
    assert all(b["rmse"] is None and b["note"] for b in bt)


def test_plot_without_forecast_puts_the_note_below_and_lists_only_drawn_entries(
    tmp_path, monkeypatch
):
    import matplotlib.pyplot as plt

    from entropyrl.law import analyze_run, load_run
    from entropyrl.law.plot import plot_analyses

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    short = analyze_run(load_run(_run(tmp_path / "short", steps=40, every=10)), backtest=True)
    full = analyze_run(load_run(_run(tmp_path / "full")), backtest=True, from_step=20)
    plot_analyses([short, full], tmp_path / "p.png")
    (fig,) = figures
    axes = fig.axes
    assert axes[2].get_title() == "no early forecast (reason below)"
    below = [t.get_text() for t in axes[2].texts]
    assert len(below) == 1 and "early forecast skipped" in below[0]
    assert max(len(line) for line in below[0].splitlines()) <= 70
    for ax in axes:
        legend = ax.get_legend()
        for handle in legend.legend_handles if legend else []:
            if hasattr(handle, "get_offsets"):
                assert len(handle.get_offsets()) > 0
    labels = [t.get_text() for t in axes[5].get_legend().get_texts()]
    assert any(lab.startswith("skipped (before step 20)") for lab in labels)
    assert any(lab.startswith("sigmoid in progress") for lab in labels)
    assert not any(
        "evaluations in the early-fit window" in t.get_text()
        for t in axes[0].get_legend().get_texts()
    )  # no window points: no entry
