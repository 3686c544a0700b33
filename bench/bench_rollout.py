"""Rollout throughput: the HF engine against the vLLM engine on the same prompts and weights.

A head-size-32 micro Qwen2 (the size vLLM's CPU attention runs; random weights, so responses
mostly run to the length limit) samples the testbed's batch shape — 32 prompts × 8 responses,
up to 32 new tokens, temperature 1 — with each engine in turn, interleaved over rounds so that
load on a shared machine hits both alike. Reported: response tokens per second (median over
rounds, after one warm-up round each), and the vLLM engine's weight-sync time.

Each engine runs in its own process (spawned, driven round by round from here): vLLM's CPU
backend binds its process's OpenMP threads, and HF ``generate`` in a process that holds a vLLM
engine ran up to 30x slower than alone. The point of the CPU figures is that the engine works,
not speed: for a model this small, per-step overheads dominate either engine.

Run: .venv-vllm/bin/python bench/bench_rollout.py [--rounds 3] [--prompts 32] [--n 8]
     [--tokens 32] [--threads 1] [--memory 0.1]
Without vLLM installed it measures the HF engine only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

import torch


def build_model(directory: str) -> None:
    """A random head-size-32 micro Qwen2 and the testbed tokenizer, saved to ``directory``."""
    from transformers import Qwen2ForCausalLM

    from entropyrl import testbed

    tokenizer = testbed.build_tokenizer()
    torch.manual_seed(0)
    Qwen2ForCausalLM(testbed.vllm_micro_config(len(tokenizer))).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def serve(name: str, directory: str, args: argparse.Namespace, conn: Connection) -> None:
    """One engine in this process: answer each round's seed with (seconds, tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from entropyrl.rollout import HFEngine, SamplingParams
    from entropyrl.rollout.vllm import VLLMEngine
    from entropyrl.testbed import make_tasks

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(directory)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    t = time.perf_counter()
    engine: Any
    if name == "vllm":
        engine = VLLMEngine(model, tok, gpu_memory_utilization=args.memory, dtype="float32",
                            enforce_eager=True)
    else:
        engine = HFEngine(model, tok)
    conn.send(time.perf_counter() - t)
    prompts = [str(r["prompt"]) for r in make_tasks("train", args.prompts, seed=0)]
    sampling = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    while (seed := conn.recv()) is not None:
        torch.manual_seed(seed)
        t = time.perf_counter()
        roll = engine.generate(prompts, args.n, sampling)
        conn.send((time.perf_counter() - t, int(roll.response_mask.sum())))
    if name == "vllm":
        t = time.perf_counter()
        engine.sync_weights(model)
        conn.send(time.perf_counter() - t)
    engine.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each engine")
    p.add_argument("--memory", type=float, default=0.1, help="vLLM gpu_memory_utilization")
    args = p.parse_args()

    from entropyrl.rollout.vllm import vllm_available

    names = ["hf", "vllm"] if vllm_available() else ["hf"]
    if len(names) == 1:
        print("vLLM is not installed here: measuring the HF engine only")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as directory:
        build_model(directory)
        conns, procs = {}, []
        for name in names:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(name, directory, args, theirs))
            proc.start()
            conns[name], procs = mine, [*procs, proc]
            print(f"{name:5s} engine start-up: {conns[name].recv():.1f} s")
        rates: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds + 1):  # round 0 warms up
            for name in names:
                conns[name].send(r)
                seconds, tokens = conns[name].recv()
                if r:
                    rates[name].append(tokens / seconds)
                print(f"round {r} {name:5s} {tokens:6d} tokens in {seconds:6.2f} s")
        for name in names:
            conns[name].send(None)
        if "vllm" in conns:
            print(f"vllm  weight sync: {1e3 * conns['vllm'].recv():.1f} ms")
        for proc in procs:
            proc.join()
    print(f"\n{args.prompts} prompts x {args.n}, <= {args.tokens} new tokens, "
          f"{args.threads} torch thread(s) per engine")
    for name, values in rates.items():
        print(f"{name:5s} median {statistics.median(values):9.0f} tokens/s "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
