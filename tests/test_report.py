"""The report of training runs: summary numbers against numpy, law recovery, files, CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from entropyrl.errors import UserError
from entropyrl.report import (
    fit_run_law,
    law_offset,
    load_run_data,
    print_summary,
    summarize_run,
    write_report,
)
from entropyrl.report.summary import pearson

SKEW = ("dyn/cov_top0.02pct", "dyn/cov_top0.2pct", "dyn/cov_top2pct", "dyn/cov_top20pct",
        "dyn/cov_top50pct", "dyn/cov_all")


def make_rows(*, steps=60, h0=1.2, h_inf=0.05, tau=12.0, a=0.15, b=0.75, noise=0.003,
              eval_every=4, seed=0):
    """Synthetic metrics rows: exponential entropy decay, val/acc on the law plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, steps + 1):
        h = h_inf + (h0 - h_inf) * math.exp(-(s - 1) / tau)
        cov = float(rng.normal(0.02, 0.015))  # positive on most steps, like the paper
        row = {
            "step": s,
            "train/entropy": h,
            "dyn/cov_npg": cov,
            "dyn/cov_pg": float(0.5 * cov + rng.normal(0, 0.003)),
            "dyn/pred_delta_entropy": -cov,
            "dyn/delta_entropy": float(-0.8 * cov + rng.normal(0, 0.004)),
            "time/step_s": float(rng.uniform(0.5, 1.5)),
        }
        for i, key in enumerate(SKEW):
            row[key] = float(5.0 / 3.0**i + rng.normal(0, 0.01))
        if (s - 1) % eval_every == 0 or s == steps:
            row["val/acc"] = float(-a * math.exp(h) + b + rng.normal(0, noise))
            row["time/eval_s"] = 0.25
        rows.append(row)
    return rows


def write_run(path: Path, rows, *, tail: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (path / "metrics.jsonl").write_text(text)
    return path


@pytest.fixture
def three_runs(tmp_path):
    runs = {
        "GRPO": write_run(tmp_path / "grpo", make_rows(seed=1)),
        "Clip-Cov": write_run(tmp_path / "clip_cov", make_rows(h_inf=0.4, tau=20, seed=2)),
        "KL-Cov": write_run(tmp_path / "kl_cov", make_rows(h_inf=0.6, tau=25, a=0.12, seed=3)),
    }
    return runs


def column(rows, key):
    return np.array([r[key] for r in rows if key in r], dtype=np.float64)


def test_summary_matches_numpy(tmp_path):
    rows = make_rows(seed=4)
    s = summarize_run(write_run(tmp_path / "run", rows))
    h = column(rows, "train/entropy")
    v = column(rows, "val/acc")
    cov = column(rows, "dyn/cov_npg")
    dh = column(rows, "dyn/delta_entropy")
    assert s.n_steps == 60 and s.last_step == 60
    assert s.initial_entropy == pytest.approx(h[0], rel=1e-12)
    assert s.final_entropy == pytest.approx(h[-6:].mean(), rel=1e-12)  # last 10% of 60 steps
    assert s.final_entropy_steps == 6
    assert s.final_val_acc == pytest.approx(v[-1], rel=1e-12)
    assert s.best_val_acc == pytest.approx(v.max(), rel=1e-12)
    assert s.n_val == len(v) == 16
    assert s.pos_cov_frac == pytest.approx(float((cov > 0).mean()), rel=1e-12)
    assert 0.5 < s.pos_cov_frac < 1.0  # the fixture has some negative steps
    assert s.corr_dh_pred == pytest.approx(np.corrcoef(dh, -cov)[0, 1], rel=1e-9)
    cov_pg = column(rows, "dyn/cov_pg")
    assert s.corr_dh_cov_pg == pytest.approx(np.corrcoef(dh, -cov_pg)[0, 1], rel=1e-9)
    # ΔH falls when the covariance rises: the correlation with the *prediction* is positive.
    assert s.corr_dh_pred > 0.5
    assert s.wall_time_s == pytest.approx(column(rows, "time/step_s").sum(), rel=1e-12)
    assert s.eval_time_s == pytest.approx(0.25 * 16)
    assert s.skew_all["top 0.02%"] == pytest.approx(column(rows, SKEW[0]).mean(), rel=1e-12)
    assert s.skew_early["all"] == pytest.approx(column(rows, SKEW[-1])[:10].mean(), rel=1e-12)
    assert list(s.skew_all) == ["top 0.02%", "top 0.2%", "top 2%", "top 20%", "top 50%", "all"]
    assert s.na == {}


def test_law_recovers_generating_parameters(tmp_path):
    s = summarize_run(write_run(tmp_path / "run", make_rows(a=0.15, b=0.75, noise=0.002, seed=5)))
    assert s.a == pytest.approx(0.15, abs=0.01)
    assert s.b == pytest.approx(0.75, abs=0.01)
    assert s.ceiling == pytest.approx(0.60, abs=0.01)
    assert s.ceiling == pytest.approx(s.b - s.a, rel=1e-12)
    assert s.r2 > 0.98
    assert s.law_points == 16
    assert s.forecast_rmse is not None and s.forecast_rmse < 0.02


def test_law_matches_closed_form_fit(tmp_path):
    """The report's a, b equal numpy's least-squares line of val/acc on exp(H) (slope = −a)."""
    rows = make_rows(noise=0.02, seed=6)
    s = summarize_run(write_run(tmp_path / "run", rows))
    pairs = [(r["train/entropy"], r["val/acc"]) for r in rows if "val/acc" in r]
    x = np.exp([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    slope, intercept = np.polyfit(x, y, 1)
    assert s.a == pytest.approx(-slope, rel=1e-9)
    assert s.b == pytest.approx(intercept, rel=1e-9)
    assert s.a > 0  # accuracy rises as entropy falls


def test_write_report_files_and_fields(three_runs, tmp_path):
    out = tmp_path / "report"
    summary = write_report(three_runs, out)
    for name in ("summary.json", "report.html", "entropy.png", "val_acc.png", "law_fit.png",
                 "covariance.png", "skew.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["methods"].keys() == {"GRPO", "Clip-Cov", "KL-Cov"}
    assert on_disk["baseline"] == "GRPO"
    fields = {"initial_entropy", "final_entropy", "final_val_acc", "best_val_acc", "a", "b",
              "r2", "ceiling", "pos_cov_frac", "corr_dh_pred", "corr_dh_cov_pg",
              "forecast_rmse", "wall_time_s", "n_steps", "na", "notes", "skew_early",
              "skew_all"}
    for m in on_disk["methods"].values():
        assert fields <= m.keys()
    assert on_disk == json.loads(json.dumps(summary))
    comp = on_disk["comparison"]["KL-Cov"]
    ratio = on_disk["methods"]["KL-Cov"]["final_entropy"] / on_disk["methods"]["GRPO"]["final_entropy"]
    assert comp["final_entropy_vs_baseline"] == pytest.approx(ratio)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "KL-Cov" in html and "ceiling" in html
    assert len(set(on_disk["colors"].values())) == 3


def test_law_offset_against_numpy(three_runs, tmp_path):
    """Late validations' mean distance above GRPO's least-squares law, recomputed by hand."""
    summary = write_report(three_runs, tmp_path / "report")

    def pairs(name):
        rows = [json.loads(line) for line in (three_runs[name] / "metrics.jsonl").open()]
        val = [r for r in rows if "val/acc" in r]
        return (np.array([r["step"] for r in val], dtype=float),
                np.array([r["train/entropy"] for r in val]), np.array([r["val/acc"] for r in val]))

    _, h0, r0 = pairs("GRPO")
    slope, intercept = np.polyfit(np.exp(h0), r0, 1)  # R = intercept + slope·exp(H)
    for name in ("Clip-Cov", "KL-Cov"):
        steps, h, r = pairs(name)
        use = (steps >= steps.min() + 0.5 * np.ptp(steps)) & (h >= h0.min()) & (h <= h0.max())
        expected = np.mean(r[use] - (intercept + slope * np.exp(h[use])))
        comp = summary["comparison"][name]
        assert comp["law_offset_vs_baseline"] == pytest.approx(expected, abs=1e-12)
        assert comp["law_offset_points"] == int(use.sum()) > 3
    # Clip-Cov's rows follow GRPO's law (a = 0.15): no offset beyond noise. KL-Cov's follow
    # a = 0.12, above GRPO's curve by 0.03·exp(H) at every H.
    assert abs(summary["comparison"]["Clip-Cov"]["law_offset_vs_baseline"]) < 0.005
    assert summary["comparison"]["KL-Cov"]["law_offset_vs_baseline"] > 0.04
    assert any("points above GRPO's law" in f for f in summary["findings"])


def test_law_offset_reasons(tmp_path):
    """No baseline law, or no late validation inside the baseline's entropy range: n/a, why."""
    base = load_run_data(write_run(tmp_path / "base", make_rows(h0=0.5, h_inf=0.2, seed=1)))
    high = load_run_data(write_run(tmp_path / "high", make_rows(h0=1.2, h_inf=0.9, seed=2)))
    out = law_offset(fit_run_law(base), fit_run_law(high))
    assert out.offset.value is None and out.n_points == 0
    assert "not extrapolated" in out.offset.reason
    rows = [{"step": s, "train/entropy": 1.0 / s} for s in range(1, 9)]  # never validated
    bare = load_run_data(write_run(tmp_path / "bare", rows))
    out = law_offset(fit_run_law(bare), fit_run_law(high))
    assert out.offset.value is None and "no law fit" in out.offset.reason
    assert law_offset(fit_run_law(high), fit_run_law(high)).offset.value == pytest.approx(
        0.0, abs=0.01)


def test_missing_keys_nan_and_no_validation(tmp_path):
    """An old file (no dyn/*, no timings), NaN values, a torn last line, no val/acc."""
    rows = [{"step": s, "train/entropy": 1.0 / s} for s in range(1, 21)]
    rows[3]["train/entropy"] = None  # the sink writes NaN as null
    text = "".join(json.dumps(r) + "\n" for r in rows)
    text += '{"step": 8, "train/entropy": NaN}\n'  # a re-logged step with a bare NaN
    text += '{"step": 21, "train/ent'  # being written
    run = tmp_path / "old"
    run.mkdir()
    (run / "metrics.jsonl").write_text(text)
    s = summarize_run(run)
    assert s.n_steps == 20
    assert s.initial_entropy == 1.0
    assert s.a is None and "validation" in s.na["a"]
    assert s.final_val_acc is None and s.pos_cov_frac is None and s.corr_dh_pred is None
    assert s.wall_time_s is None and "time/step_s" in s.na["wall_time_s"]
    assert any("incomplete last line" in n for n in s.notes)
    assert any("non-finite" in n for n in s.notes)
    out = tmp_path / "out"
    summary = write_report({"old": run}, out)
    assert summary["methods"]["old"]["a"] is None
    assert "n/a" in (out / "report.html").read_text()


def test_too_few_validation_points_and_in_progress(tmp_path):
    rows = make_rows(steps=6, eval_every=4)  # validations at steps 1, 5, 6 → then cut to 2
    rows = rows[:5]
    run = write_run(tmp_path / "short", rows)
    (run / "config.yaml").write_text("steps: 200\n")
    s = summarize_run(run)
    assert s.n_val == 2 and s.a is None and "at least 3" in s.na["a"]
    assert s.in_progress is True and "5 of 200" in s.notes[0]
    assert s.final_val_acc is not None  # what can be computed still is


def test_empty_metrics_file(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    summary = write_report({"fresh": run}, tmp_path / "out")
    m = summary["methods"]["fresh"]
    assert m["n_steps"] == 0 and m["initial_entropy"] is None


def test_pearson_reference_and_degenerate():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, y).value == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert pearson(x, -x).value == pytest.approx(-1.0)
    assert pearson(x[:2], y[:2]).value is None
    assert "constant" in (pearson(np.ones(5), y[:5]).reason or "")


def test_print_summary_renders(three_runs, tmp_path):
    from rich.console import Console

    summary = write_report(three_runs, tmp_path / "out")
    console = Console(record=True, width=200)
    print_summary(summary, console=console)
    text = console.export_text()
    assert "GRPO" in text and "KL-Cov" in text and "ceiling" in text
    assert "note —" not in text


def test_print_summary_shows_notes(tmp_path):
    from rich.console import Console

    steep = write_run(tmp_path / "steep", make_rows(h0=0.35, h_inf=0.1, a=2.0, b=3.1))
    summary = write_report({"Steep": steep}, tmp_path / "out")
    console = Console(record=True, width=400)
    print_summary(summary, console=console)
    assert "note — Steep: the law's ceiling b − a = " in console.export_text()


def _parse(argv):
    from entropyrl.cli import report

    parser = argparse.ArgumentParser(prog="entropyrl")
    report.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_report(three_runs, tmp_path, capsys):
    out = tmp_path / "cli"
    args = _parse(["report", *map(str, three_runs.values()), "--out", str(out),
                   "--names", *three_runs.keys()])
    assert args.func(args) == 0
    assert (out / "report.html").is_file()
    assert json.loads((out / "summary.json").read_text())["methods"].keys() == three_runs.keys()
    assert "report.html" in capsys.readouterr().out


def test_cli_missing_metrics_is_user_error(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    args = _parse(["report", str(empty), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match=r"no metrics\.jsonl"):
        args.func(args)
    # Through the real entry point: one paragraph on stderr, exit status 2.
    from entropyrl.cli import main as cli_main

    if "report" not in cli_main.SUBCOMMANDS:
        monkeypatch.setattr(cli_main, "SUBCOMMANDS", (*cli_main.SUBCOMMANDS, "report"))
    assert cli_main.main(["report", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no metrics.jsonl" in err and "Traceback" not in err


def test_cli_names_count_mismatch(three_runs, tmp_path):
    args = _parse(["report", *map(str, three_runs.values()), "--out", str(tmp_path / "o"),
                   "--names", "only-one"])
    with pytest.raises(UserError, match="--names"):
        args.func(args)


def test_load_keeps_last_of_relogged_step(tmp_path):
    rows = [{"step": 1, "train/entropy": 1.0}, {"step": 2, "train/entropy": 0.9},
            {"step": 2, "train/entropy": 0.8}]
    data = load_run_data(write_run(tmp_path / "r", rows))
    np.testing.assert_array_equal(data.steps, [1.0, 2.0])
    np.testing.assert_array_equal(data.columns["train/entropy"], [1.0, 0.8])


def test_documented_fields_equal_summary_fields():
    """docs/report.md's table is the contract of summary.json's per-method fields."""
    import dataclasses
    import re

    from entropyrl.report import RunSummary

    doc = (Path(__file__).parents[1] / "docs" / "report.md").read_text()
    documented = set()
    for line in doc.splitlines():
        m = re.match(r"^\| (`[^|]+`) \|", line)
        if m:
            documented |= set(re.findall(r"`([a-z0-9_]+)`", m.group(1)))
    assert documented == {f.name for f in dataclasses.fields(RunSummary)}


def test_moving_average_matches_loop():
    from entropyrl.report.plots import moving_average

    x = np.random.default_rng(0).normal(size=23)
    ref = np.array([x[max(0, i - 3):i + 1].mean() for i in range(len(x))])
    np.testing.assert_allclose(moving_average(x, 4), ref, rtol=1e-12)
    np.testing.assert_array_equal(moving_average(x, 1), x)


def test_method_colors_fixed_and_distinct():
    from entropyrl.report.plots import KNOWN_COLORS, method_colors

    a = method_colors(["GRPO", "KL-Cov", "mine", "other"])
    b = method_colors(["kl_cov", "grpo"])
    assert a["GRPO"] == b["grpo"] == KNOWN_COLORS["grpo"]
    assert a["KL-Cov"] == b["kl_cov"] == KNOWN_COLORS["klcov"]
    assert len(set(a.values())) == 4


def test_nan_rows_are_skipped_in_statistics(tmp_path):
    rows = make_rows(seed=7)
    for i in (3, 10, 11):
        rows[i]["dyn/cov_npg"] = None
        rows[i]["dyn/pred_delta_entropy"] = None
    rows[0]["val/acc"] = None  # a failed evaluation
    s = summarize_run(write_run(tmp_path / "run", rows))
    cov = np.array([np.nan if r["dyn/cov_npg"] is None else r["dyn/cov_npg"] for r in rows])
    ok = np.isfinite(cov)
    assert s.cov_steps == 57
    assert s.pos_cov_frac == pytest.approx(float((cov[ok] > 0).mean()), rel=1e-12)
    dh = column(rows, "dyn/delta_entropy")
    assert s.corr_dh_pred == pytest.approx(np.corrcoef(dh[ok], -cov[ok])[0, 1], rel=1e-9)
    assert s.n_val == 15 and s.law_points == 15
    assert any("val/acc: 1 non-finite" in n for n in s.notes)


def test_law_warnings_flag_a_run_the_law_does_not_describe(three_runs, tmp_path):
    # Runs generated on the law, ceilings 60-63%: no warning.
    for run in three_runs.values():
        assert not any("law" in n for n in summarize_run(run).notes)
    # Entropy held flat while accuracy climbs (entropy kept where the reward ignores it).
    rng = np.random.default_rng(4)
    rows = []
    for s in range(1, 61):
        row = {"step": s, "train/entropy": float(0.15 + rng.normal(0, 0.01))}
        if (s - 1) % 4 == 0 or s == 60:
            row["val/acc"] = float(min(0.2 + 0.012 * s, 0.95))
        rows.append(row)
    flat = summarize_run(write_run(tmp_path / "flat", rows))
    assert flat.r2 is not None and flat.r2 < 0.5
    assert [n for n in flat.notes if "law" in n] == [
        f"the law fits this run poorly (R² {flat.r2:.2f} < 0.5): its accuracy does not follow "
        "its entropy as R = −a·exp(H) + b says, so a, b and the ceiling are not a forecast"]
    # On the law, but with b − a = 110%: the fit is good and its ceiling impossible.
    steep = summarize_run(write_run(tmp_path / "steep", make_rows(h0=0.35, h_inf=0.1, a=2.0,
                                                                   b=3.1)))
    assert steep.r2 is not None and steep.r2 > 0.9
    assert steep.ceiling == pytest.approx(1.1, abs=0.03)
    assert [n for n in steep.notes if "law" in n] == [
        f"the law's ceiling b − a = {steep.ceiling:.1%} is above 100%: the fitted curve does "
        "not bound this run's accuracy"]


@pytest.mark.parametrize("problem", ["file_in_the_way", "disk_full"])
def test_report_that_cannot_be_written_is_a_clear_error(three_runs, tmp_path, monkeypatch,
                                                        problem):
    import errno

    from entropyrl.cli.main import main

    out = tmp_path / "out"
    if problem == "file_in_the_way":
        out.write_text("keep me\n")
    else:
        def full(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Path, "write_text", full)
    before = {p: p.read_bytes() for run in three_runs.values() for p in Path(run).rglob("*")
              if p.is_file()}
    assert main(["report", *map(str, three_runs.values()), "--out", str(out)]) == 2
    if problem == "file_in_the_way":
        assert out.read_text() == "keep me\n"
    assert all(p.read_bytes() == b for p, b in before.items())  # the runs were only read


def test_a_controlled_run_draws_its_target_in_the_entropy_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from entropyrl.report.plots import _entropy_figure

    rows = make_rows(steps=12)
    for r in rows:
        r["control/target"] = 0.1
    runs = [load_run_data(write_run(tmp_path / "ctl", rows), "Clip-Cov control"),
            load_run_data(write_run(tmp_path / "grpo", make_rows(steps=12)), "GRPO")]
    fig = _entropy_figure(plt, runs, {"Clip-Cov control": "#cc79a7", "GRPO": "#4d4d4d"})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"Clip-Cov control", "Clip-Cov control: target H*", "GRPO"}
    target = lines["Clip-Cov control: target H*"]
    assert target.get_linestyle() == "--" and list(target.get_ydata()) == [0.1] * 12
    plt.close(fig)
