"""Closed-loop entropy control on the testbed: tracking, settling and overshoot over seeds.

Trains the testbed model once per (controller, target, seed) and prints, for each controller
and target, mean ± standard deviation over the seeds of:

- tracking: ``|mean_t(H_t / H*_t) − 1|`` over the second half of the run (for a constant
  target ``|mean H − H*| / H*``);
- ripple: ``mean_t |H_t / H*_t − 1|`` over the second half (what a user sees step by step);
- settling: the first step after which the 5-step trailing mean of ``H_t / H*_t`` stays within
  ±10% to the end of the run (``—`` when it never does);
- overshoot: the largest excursion of that trailing mean past the target, on the far side
  from where the run started, relative to the target (0 when it never crosses);
- final val/acc (sampled at the training temperature, the law's R), the actuator's range over the
  second half and, for the `+assist` controllers, the range of the assist's coefficient α.

Controlled runs use ``control.approach_steps`` from ``--approach`` (one row per value; e.g.
``--approach 0 20`` puts the plain step to the target beside the eased approach); the figures
always compare ``H`` with the target ``H*``, not with the approach's reference.

Then, for the question users ask, the final val/acc of each held level against the fixed
presets (GRPO, Clip-Cov, KL-Cov) at equal steps. Runs are cached in ``--out``: a finished run
is read, not retrained, so a second call prints the table at once.

    python bench/bench_control.py --workers 2                     # the whole grid
    python bench/bench_control.py --controllers clip_cov_ratio/predictive --targets 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Controllers: (preset, overrides). The *_control presets carry the actuator's bounds.
CONTROLLERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "clip_cov_ratio/pi": ("testbed/clip_cov_control", ("control.kind=pi",)),
    "clip_cov_ratio/predictive": ("testbed/clip_cov_control", ("control.kind=predictive",)),
    "kl_cov_ratio/pi": ("testbed/kl_cov_control", ("control.kind=pi",)),
    "kl_cov_ratio/predictive": ("testbed/kl_cov_control", ("control.kind=predictive",)),
    # The Skywork-OR1 rule on the entropy bonus (TRL's controller), from the bonus preset's
    # coefficient, steps of 1e-3, within [1e-4, 5e-2].
    "entropy_coef/skywork": ("testbed/entropy_bonus", (
        "control.kind=skywork", "control.actuator=entropy_coef", "control.delta=1e-3",
        "control.min_value=1e-4", "control.max_value=5e-2")),
    # PI on the other actuators (run at one target by default).
    "kl_cov_coef/pi": ("testbed/kl_cov_control", (
        "control.kind=pi", "control.actuator=kl_cov_coef", "control.min_value=1e-3",
        "control.max_value=10.0")),
    "eps_low/pi": ("testbed/grpo", (
        "control.kind=pi", "control.actuator=eps_low", "control.min_value=0.05",
        "control.max_value=0.4")),
    "entropy_coef/pi": ("testbed/entropy_bonus", (
        "control.kind=pi", "control.actuator=entropy_coef", "control.min_value=1e-4",
        "control.max_value=5e-2")),
}
# The assist (docs/control.md): an entropy bonus or penalty where the actuator is pinned.
ASSIST = ("control.assist=entropy_coef", "control.assist_gain=0.05", "control.assist_limit=0.2")
for _name in ("clip_cov_ratio/pi", "clip_cov_ratio/predictive", "kl_cov_ratio/pi",
              "kl_cov_ratio/predictive"):
    CONTROLLERS[f"{_name}+assist"] = (CONTROLLERS[_name][0], (*CONTROLLERS[_name][1], *ASSIST))
MAIN = ("clip_cov_ratio/pi", "clip_cov_ratio/predictive", "kl_cov_ratio/pi",
        "kl_cov_ratio/predictive", "entropy_coef/skywork")
OTHER = ("kl_cov_coef/pi", "eps_low/pi", "entropy_coef/pi")
REFERENCES = {"grpo (fixed)": "testbed/grpo", "clip_cov (fixed)": "testbed/clip_cov",
              "kl_cov (fixed)": "testbed/kl_cov"}
# Targets: a constant in nats, or the anneal (cosine from 0.2 to 0.05 over the run).
ANNEAL = "cos0.2-0.05"
TARGETS = ("0.05", "0.1", "0.2", ANNEAL)
BAND, WINDOW = 0.10, 5


def target_overrides(target: str) -> list[str]:
    if target == ANNEAL:
        return ["control.target_entropy=0.2", "control.schedule=cosine",
                "control.schedule_end=0.05"]
    return [f"control.target_entropy={float(target)}", "control.schedule=constant"]


def run_one(job: tuple[str, list[str], Path, int]) -> Path:
    """Train one run in a worker process (one torch thread), unless it is already done."""
    preset, overrides, out, steps = job
    if finished(out, steps):
        return out
    import torch

    torch.set_num_threads(1)
    from entropyrl.config import load_config
    from entropyrl.train import train

    train(load_config(preset, overrides), out)
    return out


def finished(out: Path, steps: int) -> bool:
    path = out / "metrics.jsonl"
    if not path.exists():
        return False
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return any(r.get("step") == steps for r in rows)


def read_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    return [r for r in rows if "train/entropy" in r]


def trailing_mean(xs: Sequence[float], window: int) -> list[float]:
    return [statistics.fmean(xs[max(0, i - window + 1): i + 1]) for i in range(len(xs))]


def tracking_figures(h: Sequence[float], target: Sequence[float]) -> dict[str, float]:
    """Tracking, ripple, settling step and overshoot of one run (module docstring).

    Args:
        h: ``[T]`` the rollout entropy of steps 1..T.
        target: ``[T]`` the target of each step.
    """
    ratio = [a / b for a, b in zip(h, target, strict=True)]
    half = ratio[len(ratio) // 2:]
    smooth = trailing_mean(ratio, WINDOW)
    settle = math.nan
    for i in range(len(smooth) - 1, -1, -1):
        if abs(smooth[i] - 1) > BAND:
            settle = i + 2 if i + 1 < len(smooth) else math.nan
            break
    else:
        settle = 1
    from_above = ratio[0] > 1
    crossed = [i for i, r in enumerate(smooth) if (r <= 1) == from_above]
    overshoot = 0.0
    if crossed:
        past = smooth[crossed[0]:]
        overshoot = max((1 - r) if from_above else (r - 1) for r in past)
    return {"tracking": abs(statistics.fmean(half) - 1),
            "ripple": statistics.fmean(abs(r - 1) for r in half),
            "settling": settle, "overshoot": max(overshoot, 0.0)}


def run_figures(out: Path) -> dict[str, float]:
    rows = read_rows(out)
    evals = [r for r in rows if "val/acc" in r]
    figures = {"final_acc": evals[-1]["val/acc"] if evals else math.nan,
               "mean_h_2nd_half": statistics.fmean(r["train/entropy"]
                                                   for r in rows[len(rows) // 2:])}
    if "control/target" in rows[0]:
        figures.update(tracking_figures([r["train/entropy"] for r in rows],
                                        [r["control/target"] for r in rows]))
        u = [r["control/actuator_value"] for r in rows[len(rows) // 2:]]
        figures.update(u_min=min(u), u_max=max(u))
        alpha = [r.get("control/assist_value", 0.0) for r in rows]
        figures.update(alpha_min=min(alpha), alpha_max=max(alpha))
    return figures


def summary(values: Sequence[float], fmt: str) -> str:
    """``mean ± sd`` over the seeds (NaN entries, e.g. never settled, counted apart)."""
    ok = [v for v in values if not math.isnan(v)]
    if not ok:
        return "—"
    text = format(statistics.fmean(ok), fmt)
    if len(ok) > 1:
        text += " ± " + format(statistics.stdev(ok), fmt)
    if len(ok) < len(values):
        text += f" ({len(values) - len(ok)} —)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60, help="steps per run")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS),
                        help=f"constant targets in nats and/or {ANNEAL!r}")
    parser.add_argument("--controllers", nargs="+", default=list(MAIN),
                        choices=list(CONTROLLERS), metavar="ACTUATOR/KIND")
    parser.add_argument("--other-target", default="0.1",
                        help="the target at which the other actuators run ('' to skip them)")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the fixed presets (GRPO, Clip-Cov, KL-Cov)")
    parser.add_argument("--approach", type=int, nargs="+", default=None, metavar="N",
                        help="control.approach_steps of the controlled runs, one row per "
                             "value (default: the config's default)")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_control"))
    args = parser.parse_args(argv)

    from entropyrl.config import ControlConfig, load_config

    approaches = args.approach or [ControlConfig().approach_steps]
    cells: list[tuple[str, str, int]] = [(c, t, a) for c in args.controllers
                                         for t in args.targets for a in approaches]
    if args.other_target:
        cells += [(c, args.other_target, a) for c in OTHER if c not in args.controllers
                  for a in approaches]
    common = [f"steps={args.steps}", f"eval.every={args.steps}", "progress=false",
              f"checkpoint_every={args.steps}"]
    jobs: dict[tuple[str, str, int, int], tuple[str, list[str], Path, int]] = {}
    for name, target, approach in cells:
        preset, overrides = CONTROLLERS[name]
        for seed in args.seeds:
            out = (args.out / name.replace("/", "-") / target / f"approach{approach}"
                   / f"seed{seed}")
            jobs[(name, target, approach, seed)] = (
                preset, [*overrides, *target_overrides(target),
                         f"control.approach_steps={approach}", *common, f"seed={seed}"],
                out, args.steps)
    if not args.no_references:
        for name, preset in REFERENCES.items():
            for seed in args.seeds:
                out = args.out / "fixed" / preset.split("/")[-1] / f"seed{seed}"
                jobs[(name, "", 0, seed)] = (preset, [*common, f"seed={seed}"], out, args.steps)

    for preset, overrides, _, _ in jobs.values():  # a bad override fails here, not in a worker
        load_config(preset, overrides)
    todo = [job for job in jobs.values() if not finished(job[2], args.steps)]
    print(f"{len(jobs)} runs, {len(todo)} to train, {args.workers} at once", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        for i, out in enumerate(pool.map(run_one, todo), start=1):
            print(f"  [{i}/{len(todo)}] {out}", flush=True)

    figures = {key: run_figures(job[2]) for key, job in jobs.items()}
    print(f"\nTracking ({len(args.seeds)} seeds, {args.steps} steps, mean ± sd; second half "
          f"= steps {args.steps // 2 + 1}-{args.steps}; settling: 5-step mean within ±10%)")
    header = (f"{'controller':<27}{'target':<13}{'approach':>9}{'tracking':>15}{'ripple':>15}"
              f"{'settling':>16}{'overshoot':>15}{'val/acc':>15}{'mean H 2nd half':>19}"
              f"{'actuator 2nd half':>21}{'assist':>18}")
    print(header)
    print("-" * len(header))
    for name, target, approach in cells:
        runs = [figures[(name, target, approach, s)] for s in args.seeds]
        u_lo, u_hi = min(r["u_min"] for r in runs), max(r["u_max"] for r in runs)
        a_lo, a_hi = min(r["alpha_min"] for r in runs), max(r["alpha_max"] for r in runs)
        assist = f"{a_lo:.3g}-{a_hi:.3g}" if "+assist" in name else ""
        print(f"{name:<27}{target:<13}{approach:>9}"
              f"{summary([r['tracking'] for r in runs], '.1%'):>15}"
              f"{summary([r['ripple'] for r in runs], '.1%'):>15}"
              f"{summary([r['settling'] for r in runs], '.0f'):>16}"
              f"{summary([r['overshoot'] for r in runs], '.0%'):>15}"
              f"{summary([r['final_acc'] for r in runs], '.3f'):>15}"
              f"{summary([r['mean_h_2nd_half'] for r in runs], '.3f'):>19}"
              f"{f'{u_lo:.3g}-{u_hi:.3g}':>21}{assist:>18}")
    if not args.no_references:
        print("\nFixed presets at equal steps")
        for name in REFERENCES:
            runs = [figures[(name, "", 0, s)] for s in args.seeds]
            print(f"{name:<49}{'':>15}{'':>15}{'':>16}{'':>15}"
                  f"{summary([r['final_acc'] for r in runs], '.3f'):>15}"
                  f"{summary([r['mean_h_2nd_half'] for r in runs], '.3f'):>19}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
