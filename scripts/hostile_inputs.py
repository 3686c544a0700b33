"""Run the hostile-input corpus (tests/hostile_cases.py) against a checkout; count the outcomes.

Each case runs as its own ``python -m entropyrl.cli.main`` process with ``PYTHONPATH`` set to
the checkout's ``src``, so an older version can be measured with the same table:

    .venv/bin/python scripts/hostile_inputs.py                 # this checkout
    .venv/bin/python scripts/hostile_inputs.py --src OTHER/src # another one

Outcomes: ``clear`` (exit 2, the expected message, no traceback, no file changed),
``traceback``, ``silent`` (exit 0), ``other`` (anything else: a wrong message, a changed file,
another exit code). Prints one line per case that is not clear, then the counts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hostile_cases import CASES, TINY, argv, make_scratch, snapshot  # noqa: E402


def build_micro(path: Path) -> None:
    """A micro Qwen2 and the testbed tokenizer, as the test suite builds them."""
    import torch
    from transformers import Qwen2ForCausalLM

    from entropyrl import testbed

    tokenizer = testbed.build_tokenizer()
    torch.manual_seed(0)
    Qwen2ForCausalLM(testbed.micro_config(len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)


def run_case(case: tuple[str, str, str], tmp: Path, micro: Path, run: Path, env: dict[str, str],
             before: dict[Path, bytes] | None) -> tuple[str, str]:
    """(outcome, detail) of one case; ``before``: the scratch files no case may change."""
    if before is None:  # one case at a time: compare with the files just before this case
        before = snapshot(tmp)
    proc = subprocess.run([sys.executable, "-m", "entropyrl.cli.main",
                           *argv(case, tmp, micro, run)], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=600)
    err = proc.stderr
    after = snapshot(tmp)
    changed = [p.name for p, data in before.items() if after.get(p) != data]
    if "Traceback" in err:
        return "traceback", err.strip().splitlines()[-1][:160]
    if proc.returncode == 0:
        return "silent", "exit 0"
    if proc.returncode == 2 and re.search(case[2], err) and not changed:
        return "clear", ""
    return "other", f"exit {proc.returncode}, changed {changed}, {err.strip()[-160:]}"


def main() -> int:
    """Run every case; print what is not clear and the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src",
                        help="the checkout's src directory (default: this one)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="cases run at once (1: each case is also checked for changing "
                             "what an earlier case changed)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "CUDA_VISIBLE_DEVICES": "",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        tmp, micro = Path(scratch) / "cases", Path(scratch) / "micro"
        tmp.mkdir()
        make_scratch(tmp)
        build_micro(micro)
        run = tmp / "run"
        subprocess.run([sys.executable, "-m", "entropyrl.cli.main", "train", "-c",
                        "testbed/grpo", "--out", str(run), *TINY.format(micro=micro).split()],
                       env=env, check=True, capture_output=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            # Cases running side by side may create files; none may change the scratch's own.
            before = snapshot(tmp) if args.jobs > 1 else None
            results = list(pool.map(lambda c: run_case(c, tmp, micro, run, env, before), CASES))
    counts: dict[str, int] = {}
    for case, (outcome, detail) in zip(CASES, results, strict=True):
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != "clear":
            print(f"{case[0]:<28} {outcome:<9} {detail}")
    print(f"{len(CASES)} cases: " + ", ".join(f"{counts.get(k, 0)} {k}"
                                              for k in ("clear", "traceback", "silent", "other")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
