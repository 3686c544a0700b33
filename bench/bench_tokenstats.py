"""Peak extra memory and time: chunked token statistics vs the naive computation, on CPU.

Cases: float32 logits of [8 x 2048] tokens at vocab 32,000 and 151,936 (Qwen2.5), temperature
1, log-probs + entropy, forward only (no grad) and forward+backward (the gradient of a random
weighted sum of log-probs and entropy). Naive = ``naive_token_stats`` (``log_softmax``, gather,
``-(p * logp).sum(-1)``); chunked = ``token_stats_from_logits`` with its default chunk size.
Rows marked ``hidden`` start from final hidden states [N, 896] and an LM-head weight [V, 896]
(Qwen2.5-0.5B's sizes): naive = ``hidden @ weight.T`` then ``naive_token_stats``, chunked =
``token_stats_from_hidden``, gradients w.r.t. hidden and weight; by default only [1 x 2048]
tokens, as on 2 CPU threads the matmuls take ~7 s per 1,000 tokens (``--cases 4`` adds
[8 x 2048]). The naive path at 151,936 needs ~10 GB of logits plus several times that in
temporaries, so a reduced [1 x 2048] case at 151,936 is always run too, and a case whose
estimated need exceeds 80% of the memory available now is skipped (and listed under the table).

Memory method: each (case, method) runs in a fresh subprocess with 2 threads. The child
allocates its inputs in place (``torch.empty(...).normal_()``: no transient copy), reads its
resident set size from /proc/self/statm as the baseline, runs the computation ``repeats`` times
and reports ``ru_maxrss`` (peak RSS over the child's life, from ``resource.getrusage``) minus
that baseline. Imports and input creation peak below the baseline, so the difference is the
peak memory the computation adds on top of its inputs; freed memory reused by later repeats
does not raise the peak. Gradients are included: from logits, the gradient of the logits
(``N x V`` float32, the same for both methods and needed by any caller) puts a floor of ~0.2
under the ratio, so the table also shows the chunked peak without it (``chunk-grad``). Time:
the median wall time of the repeats, in the same child.

Run: .venv/bin/python bench/bench_tokenstats.py            (3-8 minutes; ~23 GiB RAM)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GIB = 2**30
HIDDEN = 896  # D of Qwen2.5-0.5B, whose vocabulary is 151,936
METHODS = ("naive", "chunked")
# (source, tokens, rows = B x T flattened, vocab)
CASES = [
    ("logits", "8x2048", 8 * 2048, 32_000),
    ("logits", "8x2048", 8 * 2048, 151_936),
    ("logits", "1x2048", 2048, 151_936),
    ("hidden", "1x2048", 2048, 151_936),
    ("hidden", "8x2048", 8 * 2048, 151_936),  # not by default: ~6 min, naive needs ~70 GiB
]
DEFAULT_CASES = "0,1,2,3"
# Peak extra memory in units of N x V float32, a little above what was measured (naive from
# logits: 2.95 forward, 4.9 with backward); from hidden states the naive path also builds the
# logits (+1). Used only to skip cases that would not fit.
NEED = {
    ("naive", "fwd"): 3.2,
    ("naive", "fwd+bwd"): 5.2,
    ("chunked", "fwd"): 0.1,
    ("chunked", "fwd+bwd"): 1.1,
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def child(source: str, rows: int, vocab: int, method: str, mode: str, repeats: int) -> None:
    import torch

    from entropyrl.tokenstats import (
        naive_token_stats,
        token_stats_from_hidden,
        token_stats_from_logits,
    )

    torch.set_num_threads(2)
    torch.manual_seed(0)
    tokens = torch.randint(0, vocab, (rows,))
    w_lp, w_h = torch.randn(rows), torch.randn(rows)
    if source == "logits":
        inputs = [torch.empty(rows, vocab).normal_(0.0, 2.0)]
        fn = naive_token_stats if method == "naive" else token_stats_from_logits
    else:  # logits ~ N(0, 2^2) as above, from hidden ~ N(0, 1) and the head weight
        inputs = [torch.empty(rows, HIDDEN).normal_(), torch.empty(vocab, HIDDEN).normal_()]
        inputs[1].mul_(2.0 / HIDDEN**0.5)
        if method == "naive":
            fn = lambda h, w, y: naive_token_stats(h @ w.T, y)  # noqa: E731
        else:
            fn = token_stats_from_hidden
    base = rss_bytes()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if mode == "fwd":
            with torch.no_grad():
                stats = fn(*inputs, tokens)
        else:
            leaves = [x.requires_grad_(True) for x in inputs]
            stats = fn(*leaves, tokens)
            loss = (stats.logprobs * w_lp).sum() + (stats.entropy * w_h).sum()
            grads = torch.autograd.grad(loss, leaves)
            del grads, loss
        times.append(time.perf_counter() - t0)
        del stats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"peak_extra": peak - base, "time": statistics.median(times)}))


def measure(source: str, rows: int, vocab: int, method: str, mode: str, repeats: int):
    """``{"peak_extra": bytes, "time": s}`` from a fresh child, or why it was not run."""
    units = NEED[(method, mode)] + (1 if source == "logits" or method == "naive" else 0)
    need = units * rows * vocab * 4 + 2 * (rows + vocab) * HIDDEN * 4
    if need > 0.8 * available_bytes():
        return f"skipped: needs ~{need / GIB:.0f} GiB, {available_bytes() / GIB:.0f} available"
    args = [source, rows, vocab, method, mode, repeats]
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return f"failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def cell(result, key: str, width: int, scale: float = 1.0, minus: float = 0.0) -> str:
    if not isinstance(result, dict):
        return f"{'-':>{width}}"
    return f"{(result[key] - minus) / scale:{width}.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median)")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="indices into CASES, e.g. 0,4")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        source, rows, vocab, method, mode, repeats = args.child
        child(source, int(rows), int(vocab), method, mode, int(repeats))
        return
    print(f"peak extra memory (GiB) and median time (s), CPU, 2 threads, {args.repeats} runs")
    head = (
        f"{'input':>6} {'tokens':>7} {'vocab':>7} {'pass':>7} | {'naive GiB':>9} "
        f"{'chunk GiB':>9} {'ratio':>6} {'chunk-grad':>10} | {'naive s':>7} {'chunk s':>7} "
        f"{'ratio':>6}"
    )
    print(head + "\n" + "-" * len(head))
    notes = []
    picked = [CASES[int(i)] for i in args.cases.split(",")]
    for source, label, rows, vocab in picked:
        for mode in ("fwd", "fwd+bwd"):
            res = {m: measure(source, rows, vocab, m, mode, args.repeats) for m in METHODS}
            n, c = res["naive"], res["chunked"]
            both = isinstance(n, dict) and isinstance(c, dict)
            ratio = {
                k: f"{c[k] / n[k]:6.3f}" if both else f"{'-':>6}" for k in ("peak_extra", "time")
            }
            grad = rows * vocab * 4 if mode == "fwd+bwd" and source == "logits" else 0
            print(
                f"{source:>6} {label:>7} {vocab:>7} {mode:>7} | "
                f"{cell(n, 'peak_extra', 9, GIB)} {cell(c, 'peak_extra', 9, GIB)} "
                f"{ratio['peak_extra']} {cell(c, 'peak_extra', 10, GIB, grad)} | "
                f"{cell(n, 'time', 7)} {cell(c, 'time', 7)} {ratio['time']}",
                flush=True,
            )
            notes += [f"{source} {label} V={vocab} {mode} {m}: {r}" for m, r in res.items()
                      if isinstance(r, str)]  # fmt: skip
    print(f"\nhidden: from hidden states [N, {HIDDEN}] and a head weight [V, {HIDDEN}].")
    print("chunk-grad: chunked peak minus the logits' gradient (N x V float32, which any method")
    print("  must return) for fwd+bwd from logits; from hidden states there is no such tensor.")
    print("ratio: chunked / naive (lower is better).")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
