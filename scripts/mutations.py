"""Mutations of the loop's wiring, each of which a test must kill (STYLE.md, 16).

Applies one mutation at a time to the source, runs the wiring and trainer tests, restores the
file, and prints the first test that failed. Run: .venv/bin/python scripts/mutations.py
"""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = "src/entropyrl/train/batch_metrics.py"
COLLECT = "src/entropyrl/train/collect.py"
PENALTY = "scores {} torch.tensor(penalties, dtype=scores.dtype)"
MUTATIONS = [
    ("sign of dyn/pred_delta_entropy", METRICS,
     '"dyn/pred_delta_entropy": -cov_npg', '"dyn/pred_delta_entropy": cov_npg'),
    ("sign of dyn/delta_entropy", METRICS,
     '"dyn/delta_entropy": after - before', '"dyn/delta_entropy": before - after'),
    ("cov_npg swapped for cov_pg", METRICS,
     'm["dyn/cov_npg"] = float(cov.cov_npg)', 'm["dyn/cov_npg"] = float(cov.cov_pg)'),
    ("selection scored with old log-probs at later updates", "src/entropyrl/train/update.py",
     'current = update.selection_logprobs == "current" and not (epoch == 0 and start == 0)',
     "current = False"),
    ("solved with > instead of >=", COLLECT, "return scores >= 1.0", "return scores > 1.0"),
    ("overlong penalty's sign", COLLECT, PENALTY.format("+"), PENALTY.format("-")),
]
TESTS = ["tests/test_wiring.py", "tests/test_trainer.py"]


def main() -> None:
    """Apply, test and restore each mutation in turn."""
    for name, rel, old, new in MUTATIONS:
        path = ROOT / rel
        source = path.read_text()
        if source.count(old) != 1:
            raise SystemExit(f"{name}: the line to mutate is not in {rel} exactly once")
        path.write_text(source.replace(old, new))
        try:
            out = subprocess.run([str(ROOT / ".venv/bin/pytest"), "-q", "-x", "-p",
                                  "no:cacheprovider", *TESTS], cwd=ROOT, capture_output=True,
                                 text=True).stdout
        finally:
            path.write_text(source)
        failed = [line for line in out.splitlines() if line.startswith("FAILED")]
        verdict = "killed by " + failed[0][7:].split(" - ")[0] if failed else "SURVIVED"
        print(f"{name}: {verdict}")


if __name__ == "__main__":
    main()
