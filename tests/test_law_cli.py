"""`entropyrl fit` end to end: tables, the documented JSON shape, the plot, and user errors."""

import json

import numpy as np
import pytest

from entropyrl.cli.main import main

RUN_KEYS = {"run", "source", "format", "n_points", "alignment", "method", "interval_method",
            "level", "a", "a_ci", "a_se", "b", "b_ci", "b_se", "ceiling", "ceiling_ci",
            "ceiling_se", "r2", "rmse", "forecast", "projection", "framework", "keys",
            "pairing", "from_step", "n_skipped", "early_warning", "backtest", "notes"}
FORECAST_KEYS = {"fit_fraction", "split_step", "n_fit_points", "n_forecast_points", "rmse",
                 "final_error", "forward_rmse", "forward_final_error", "note"}
PROJECTION_KEYS = {"horizon_step", "entropy", "score", "score_ci", "entropy_plateau",
                   "score_plateau", "score_plateau_ci", "note"}


def make_run(path, a=0.15, b=0.75, seed=0, steps=240, every=4):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    with (path / "metrics.jsonl").open("w") as f:
        for s in range(1, steps + 1):
            h = 0.12 + 0.98 * np.exp(-(s - 1) / 60) + 0.005 * rng.standard_normal()
            row = {"step": s, "train/entropy": h}
            if s % every == 0:
                row["val/acc"] = b - a * np.exp(h) + 0.01 * rng.standard_normal()
            f.write(json.dumps(row) + "\n")
    return path


def test_fit_one_run_json_and_plot(tmp_path, capsys):
    run = make_run(tmp_path / "grpo")
    out, png = tmp_path / "out" / "fit.json", tmp_path / "fit.png"
    assert main(["fit", str(run), "--json", str(out), "--plot", str(png), "--horizon", "400"]) == 0
    text = capsys.readouterr().out
    assert "grpo" in text and "ceiling b − a" in text and "early forecast RMSE" in text
    doc = json.loads(out.read_text())
    assert set(doc) == {"runs", "scaling"} and doc["scaling"] is None
    (r,) = doc["runs"]
    assert set(r) == RUN_KEYS
    assert set(r["forecast"]) == FORECAST_KEYS and set(r["projection"]) == PROJECTION_KEYS
    assert r["run"] == "grpo" and r["n_points"] == 60 and r["format"] == "jsonl"
    assert r["a_ci"][0] <= 0.15 <= r["a_ci"][1] and r["b_ci"][0] <= 0.75 <= r["b_ci"][1]
    assert r["ceiling"] == pytest.approx(r["b"] - r["a"])
    assert r["forecast"]["fit_fraction"] == 0.15 and r["forecast"]["rmse"] < 0.05
    assert r["projection"]["horizon_step"] == 400
    lo, hi = r["projection"]["score_plateau_ci"]
    assert lo <= r["projection"]["score_plateau"] <= hi
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_several_sizes_with_scaling_robust_bootstrap(tmp_path):
    runs = [make_run(tmp_path / n, a=a, b=b, seed=i) for i, (n, a, b) in enumerate(
        [("s", 0.19, 0.66), ("m", 0.17, 0.71), ("l", 0.15, 0.76)])]
    out = tmp_path / "fit.json"
    argv = ["fit", *map(str, runs), "--sizes", "0.5B", "1.5B", "7e9", "--extrapolate", "32B",
            "--robust", "--robust-loss", "soft_l1", "--intervals", "bootstrap", "--n-boot", "100", "--fit-fraction", "0.3",
            "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert [r["run"] for r in doc["runs"]] == ["s", "m", "l"]
    assert doc["runs"][0]["method"] == "soft_l1" and doc["runs"][0]["interval_method"] == "bootstrap"
    sc = doc["scaling"]
    assert sc["n_params"] == [0.5e9, 1.5e9, 7e9] and sc["runs"] == ["s", "m", "l"]
    assert set(sc) >= {"a", "b", "ceiling", "extrapolations", "x", "level"}
    (p,) = sc["extrapolations"]
    assert p["n_params"] == 32e9 and p["ceiling_ci"][0] <= p["ceiling"] <= p["ceiling_ci"][1]


def test_csv_run_with_custom_keys(tmp_path):
    lines = ["global_step,actor/entropy,acc"]
    for s in range(1, 61):
        h = 0.2 + np.exp(-s / 20)
        lines.append(f"{s},{h},{0.7 - 0.1 * np.exp(h) + 0.002 * np.sin(s)}")
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines))
    out = tmp_path / "o.json"
    assert main(["fit", str(path), "--entropy-key", "actor/entropy", "--score-key", "acc",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["runs"][0]["a"] == pytest.approx(0.1, abs=0.01)


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("entropyrl fit: error: ") and "Traceback" not in err
    return err


def test_user_errors_exit_2_with_one_message(tmp_path, capsys):
    run = make_run(tmp_path / "r")
    assert "no key 'val/accuracy'" in _error(capsys, ["fit", str(run), "--score-key", "val/accuracy"])
    assert "no such file" in _error(capsys, ["fit", str(tmp_path / "missing")])
    assert "one parameter count per RUN" in _error(capsys, ["fit", str(run), "--sizes", "1B", "2B"])
    assert "needs --sizes" in _error(capsys, ["fit", str(run), "--extrapolate", "1B"])
    few = tmp_path / "few.jsonl"
    few.write_text('{"step": 1, "train/entropy": 1.0, "val/acc": 0.1}\n'
                   '{"step": 2, "train/entropy": 0.9, "val/acc": 0.2}\n')
    assert "at least 3" in _error(capsys, ["fit", str(few)])
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(f'{{"step": {s}, "train/entropy": 0.5, "val/acc": 0.{s}}}\n'
                            for s in range(1, 6)))
    assert "same entropy" in _error(capsys, ["fit", str(flat)])
    nan = tmp_path / "nan.jsonl"
    nan.write_text("".join(f'{{"step": {s}, "train/entropy": {1 - s / 10}, "val/acc": NaN}}\n'
                           for s in range(1, 6)))
    assert "NaN/inf" in _error(capsys, ["fit", str(nan)])
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\x89\xff\x00")
    assert "cannot read" in _error(capsys, ["fit", str(binary)])
    assert "cannot write" in _error(capsys, ["fit", str(run), "--json", str(run / "metrics.jsonl" / "x")])


def test_short_run_skips_the_forecast_with_a_note(tmp_path, capsys):
    path = tmp_path / "short.jsonl"
    path.write_text("".join(f'{{"step": {s}, "train/entropy": {1.2 - 0.1 * s}, '
                            f'"val/acc": {0.1 + 0.05 * s}}}\n' for s in range(1, 6)))
    out = tmp_path / "o.json"
    assert main(["fit", str(path), "--json", str(out)]) == 0
    assert "early forecast skipped" in capsys.readouterr().out
    fc = json.loads(out.read_text())["runs"][0]["forecast"]
    assert fc["rmse"] is None and "raise --fit-fraction" in fc["note"]


@pytest.mark.parametrize("argv", [["--fit-fraction", "15"], ["--sizes", "lots"],
                                  ["--robust-loss", "l2"], ["--level", "95"]])
def test_bad_arguments_are_usage_errors(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", str(tmp_path), *argv])
    assert info.value.code == 2
