"""The demo's claims over several seeds: mean and spread of what `entropyrl demo` shows.

For each seed, trains every demo method (GRPO, clip-higher, Clip-Cov, KL-Cov) from the shipped
testbed base model with the demo's presets, then summarises each run with the report code and
prints, per method, mean ± standard deviation over seeds of:

- initial and final train entropy and their ratio (claim 1: GRPO final ≤ 30% of initial);
- first and final validation accuracy (the law's R; sampled at T = 1 in the testbed presets),
  and the mean of the last three validations, sampled and greedy (less noisy than the last);
- the law's R² on the run and the first-15% forecast RMSE (claim 2: R² ≥ 0.9 for GRPO);
- final entropy relative to GRPO's for the same seed (claim 3: Clip-Cov/KL-Cov well above),
  and the late validations' mean accuracy above GRPO's law at their own entropy (does the
  entropy a method keeps buy accuracy, or cost it at the law's rate?);
- fraction of steps with positive Cov(log π, A) and the correlation across steps of the
  measured same-batch ΔH with the prediction −Cov (claim 4).

Run: .venv/bin/python bench/bench_demo_seeds.py [--seeds 0 1 2] [--out runs/bench_demo]
     [--methods GRPO Clip-Cov] [key=value ...]   (overrides applied to every run, e.g.
     steps=300; GRPO, the baseline of the ratios and offsets, is always trained)

A run directory that already holds metrics and checkpoints is summarised, not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from entropyrl.cli.demo import METHODS
from entropyrl.config import load_config
from entropyrl.report import fit_run_law, law_offset, load_run_data, summarize
from entropyrl.train import train
from entropyrl.train.metrics import read_metrics

FIELDS = (
    ("initial_entropy", "H initial"),
    ("final_entropy", "H final"),
    ("entropy_ratio", "H final/initial"),
    ("first_val_acc", "val acc first"),
    ("final_val_acc", "val acc final"),
    ("best_val_acc", "val acc best"),
    ("val_acc_last3", "val acc last 3"),
    ("greedy_acc_last3", "greedy last 3"),
    ("r2", "law R2"),
    ("ceiling", "law ceiling b-a"),
    ("forecast_rmse", "forecast RMSE"),
    ("pos_cov_frac", "steps cov>0"),
    ("corr_dh_pred", "corr(dH, -cov)"),
    ("wall_time_s", "wall s"),
)


def late_accuracy(metrics_path: Path, n: int = 3) -> dict[str, float | None]:
    """Mean sampled (``val/acc``) and greedy accuracy of the last ``n`` validations."""
    vals = [r for r in read_metrics(metrics_path) if "val/acc" in r][-n:]
    if not vals:
        return {"val_acc_last3": None, "greedy_acc_last3": None}
    return {"val_acc_last3": statistics.mean(r["val/acc"] for r in vals),
            "greedy_acc_last3": statistics.mean(r.get("val/greedy_acc", float("nan"))
                                                for r in vals)}


def fmt(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_demo"))
    names = [name for name, _ in METHODS]
    parser.add_argument("--methods", nargs="+", default=names, metavar="METHOD",
                        help=f"demo methods to run, of {names} (GRPO is always included)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    # `--methods A B key=value` hands the overrides to --methods: move them back.
    args.overrides += [m for m in args.methods if "=" in m]
    args.methods = [m for m in args.methods if "=" not in m]
    unknown = sorted(set(args.methods) - set(names))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {names}")
    methods = [(n, p) for n, p in METHODS if n in args.methods or n == "GRPO"]
    results: dict[str, list[dict]] = {name: [] for name, _ in methods}
    offsets: dict[str, list[float | None]] = {name: [] for name, _ in methods}
    t0 = time.perf_counter()
    for seed in args.seeds:
        laws = {}
        for name, preset in methods:
            out = args.out / f"seed{seed}" / preset.split("/")[-1]
            cfg = load_config(preset, [*args.overrides, f"seed={seed}", f"name={name}",
                                       "progress=false"])
            if not (out / "metrics.jsonl").exists() or not (out / "checkpoints").exists():
                train(cfg, out)
            data = load_run_data(out, name)
            laws[name] = fit_run_law(data)
            results[name].append({**summarize(data, law=laws[name]).to_dict(),
                                  **late_accuracy(out / "metrics.jsonl")})
            print(f"seed {seed} {name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
        for name, _ in methods:
            offset = law_offset(laws["GRPO"], laws[name]).offset.value
            offsets[name].append(offset)
            results[name][-1]["law_offset_vs_grpo"] = offset
    grpo_final = [r["final_entropy"] for r in results["GRPO"]]
    print(f"\n{len(args.seeds)} seeds {args.seeds}; mean ± std over seeds")

    def row(label: str, cells: list[str]) -> None:
        print(f"{label:<18}" + "".join(f"{cell:>20}" for cell in cells))

    row("", [n for n, _ in methods])
    for key, label in FIELDS:
        row(label, [fmt([r[key] for r in results[n]]) for n, _ in methods])
    ratios = {
        n: [r["final_entropy"] / g if r["final_entropy"] and g else None
            for r, g in zip(results[n], grpo_final, strict=True)]
        for n, _ in methods
    }
    row("H final / GRPO", [fmt(ratios[n]) for n, _ in methods])
    row("above GRPO law", [fmt(offsets[n]) for n, _ in methods])
    (args.out / "bench_demo_seeds.json").write_text(json.dumps(results, indent=1))
    print(f"\nper-run summaries: {args.out / 'bench_demo_seeds.json'}")


if __name__ == "__main__":
    main()
