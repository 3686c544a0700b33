"""Back-test every forecast form of `entropyrl fit` on held-out runs: error and band coverage.

For each log given on the command line (any format `entropyrl fit` reads, e.g. verl console
logs) and each setting (pairing × format-learning skip), every form is fitted on the first
15% of the run and forecasts the later evaluations. Printed per run and pooled over runs:
forecast RMSE, final-step error, bias (mean predicted − observed; > 0 over-predicts), the
coverage of the 95% band (fraction of later evaluations inside it) and its mean width.
`--synthetic N` adds N runs that follow the law exactly plus noise (a calibration check).

Logs are read at bench time from the paths given; none is shipped with the project.

Run: PYTHONPATH=src .venv/bin/python bench/bench_law_backtest.py LOG [LOG ...] [--synthetic 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from entropyrl.law import analyze_run, load_run, make_series
from entropyrl.law.backtest import ALL_FORMS
from entropyrl.law.io import RunLog


def synthetic(seed: int) -> RunLog:
    """240 steps, an evaluation every 4: law a = 0.15, b = 0.75, score noise 0.01."""
    rng = np.random.default_rng(seed)
    s = np.arange(1, 241.0)
    h = 0.12 + 0.98 * np.exp(-(s - 1) / 60) + 0.005 * rng.standard_normal(len(s))
    r = 0.75 - 0.15 * np.exp(h[3::4]) + 0.01 * rng.standard_normal(60)
    return RunLog(
        f"synthetic-{seed}",
        Path("synthetic"),
        "jsonl",
        make_series("h", s, h),
        make_series("r", s[3::4], r),
        framework="entropyrl",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logs", nargs="*", type=Path)
    p.add_argument("--synthetic", type=int, default=0, metavar="N")
    p.add_argument("--fit-fraction", type=float, default=0.15)
    args = p.parse_args()
    runs = [load_run(path) for path in args.logs]
    settings = [(pair, start) for pair in ("policy", "same-step") for start in (None, "auto")]
    groups: list[tuple[str, list[RunLog], list[tuple[str | None, str | None]]]] = []
    if runs:
        groups.append(("logs", runs, settings))
    if args.synthetic:
        groups.append(("synthetic", [synthetic(i) for i in range(args.synthetic)], [(None, None)]))
    for label, group, group_settings in groups:
        for pair, start in group_settings:
            pooled: dict[str, list[tuple[float, float, float, int, int, float]]] = {}
            print(f"\n== {label}: pairing {pair or 'default'}, from-step {start or 'none'}")
            for run in group:
                r = analyze_run(
                    run, pair=pair, from_step=start, backtest=True, fit_fraction=args.fit_fraction
                )
                skip = f", from step {r.from_step:g}" if r.from_step is not None else ""
                if label == "logs":
                    print(
                        f"  {run.name} ({r.fit.n_points} points{skip}; all-data fit "
                        f"a = {r.fit.a:.3f}, b = {r.fit.b:.3f}, R² = {r.fit.r2:.3f})"
                    )
                for b in r.backtest:
                    if not b.ok:
                        if label == "logs":
                            print(f"    {b.form:12s} skipped")
                        continue
                    inside = round(b.coverage * len(b.steps))
                    pooled.setdefault(b.form, []).append(
                        (b.rmse, b.final_error, b.bias, inside, len(b.steps), b.width)
                    )
                    if label == "logs":
                        print(
                            f"    {b.form:12s} RMSE {b.rmse:.4f}  final {b.final_error:+.4f}"
                            f"  bias {b.bias:+.4f}  coverage {b.coverage:5.1%} of "
                            f"{len(b.steps):2d}  width {b.width:.3f}"
                        )
            print(f"  pooled over {len(group)} run(s):")
            for form in ALL_FORMS:
                v = pooled.get(form)
                if not v:
                    continue
                a = np.array(v)
                over = int((a[:, 1] > 0).sum())
                print(
                    f"    {form:12s} mean RMSE {a[:, 0].mean():.4f}  mean |final| "
                    f"{np.abs(a[:, 1]).mean():.4f}  over-predicts {over}/{len(a)}  "
                    f"coverage {a[:, 3].sum() / a[:, 4].sum():5.1%} of {int(a[:, 4].sum())}"
                    f"  width {a[:, 5].mean():.3f}"
                )


if __name__ == "__main__":
    main()
