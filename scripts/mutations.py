"""Mutations of the loop's wiring, each of which a test must kill (STYLE.md, 16).

Applies one mutation at a time to the source, runs the wiring and trainer tests, restores the
file, and prints which test killed it. Run: .venv/bin/python scripts/mutations.py
"""

import subprocess, sys, pathlib
root = pathlib.Path(__file__).resolve().parents[1]
M = [
 ("sign of dyn/pred_delta_entropy", "src/entropyrl/train/batch_metrics.py", '"dyn/pred_delta_entropy": -cov_npg', '"dyn/pred_delta_entropy": cov_npg'),
 ("sign of dyn/delta_entropy", "src/entropyrl/train/batch_metrics.py", '"dyn/delta_entropy": after - before', '"dyn/delta_entropy": before - after'),
 ("cov_npg swapped for cov_pg", "src/entropyrl/train/batch_metrics.py", 'm["dyn/cov_npg"] = float(cov.cov_npg)', 'm["dyn/cov_npg"] = float(cov.cov_pg)'),
 ("selection scored with old log-probs later", "src/entropyrl/train/update.py", 'current = update.selection_logprobs == "current" and not (epoch == 0 and start == 0)', 'current = False'),
 ("solved with >", "src/entropyrl/train/collect.py", "return scores >= 1.0", "return scores > 1.0"),
 ("overlong penalty sign", "src/entropyrl/train/collect.py", "return scores + torch.tensor(penalties, dtype=scores.dtype)", "return scores - torch.tensor(penalties, dtype=scores.dtype)"),
]
for name, f, old, new in M:
    p = root / f
    s = p.read_text()
    assert s.count(old) == 1, (name, s.count(old))
    p.write_text(s.replace(old, new))
    try:
        r = subprocess.run([str(root/".venv/bin/pytest"), "-q", "-x", "-p", "no:cacheprovider", "tests/test_wiring.py", "tests/test_trainer.py"], cwd=root, capture_output=True, text=True)
        failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")]
        print(f"{name}: {'KILLED by ' + failed[0].split(' - ')[0][7:] if failed else 'SURVIVED'}")
    finally:
        p.write_text(s)
