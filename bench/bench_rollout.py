"""Rollout throughput: the HF engine against the vLLM engine on the same prompts and weights.

A head-size-32 micro Qwen2 (the size vLLM's CPU attention runs; random weights, so responses
mostly run to the length limit) samples the testbed's batch shape — 32 prompts × 8 responses,
up to 32 new tokens, temperature 1 — with each engine in turn, interleaved over rounds so that
load on a shared machine hits both alike. Reported: response tokens per second (median over
rounds, after one warm-up round each), and the vLLM engine's weight-sync time.

Both engines run in one process; vLLM's CPU backend binds this process's OpenMP threads, which
the HF engine then shares. The point of the CPU figures is that the engine works, not speed:
for a model this small, per-step overheads dominate either engine.

Run: .venv-vllm/bin/python bench/bench_rollout.py [--rounds 3] [--prompts 32] [--n 8]
     [--tokens 32] [--memory 0.1]
Without vLLM installed it measures the HF engine only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def build_model(directory: str) -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

    from entropyrl import testbed

    tokenizer = testbed.build_tokenizer()
    torch.manual_seed(0)
    Qwen2ForCausalLM(testbed.vllm_micro_config(len(tokenizer))).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tok = AutoTokenizer.from_pretrained(directory)
    tok.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(directory).eval(), tok


def timed(engine: object, prompts: list[str], n: int, sampling: object) -> tuple[float, int]:
    t = time.perf_counter()
    roll = engine.generate(prompts, n, sampling)  # type: ignore[attr-defined]
    return time.perf_counter() - t, int(roll.response_mask.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--memory", type=float, default=0.1, help="vLLM gpu_memory_utilization")
    args = p.parse_args()

    from entropyrl.rollout import HFEngine, SamplingParams
    from entropyrl.rollout.vllm import VLLMEngine, vllm_available
    from entropyrl.testbed import make_tasks

    prompts = [str(r["prompt"]) for r in make_tasks("train", args.prompts, seed=0)]
    sampling = SamplingParams(max_new_tokens=args.tokens, temperature=1.0)
    with tempfile.TemporaryDirectory() as directory:
        model, tok = build_model(directory)
        engines: dict[str, object] = {"hf": HFEngine(model, tok)}
        if vllm_available():
            t = time.perf_counter()
            engines["vllm"] = VLLMEngine(model, tok, gpu_memory_utilization=args.memory,
                                         dtype="float32", enforce_eager=True)
            print(f"vllm engine start-up: {time.perf_counter() - t:.1f} s")
        else:
            print("vLLM is not installed here: measuring the HF engine only")
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, engine in engines.items():
                torch.manual_seed(r)
                seconds, tokens = timed(engine, prompts, args.n, sampling)
                if r:
                    rates[name].append(tokens / seconds)
                print(f"round {r} {name:5s} {tokens:6d} tokens in {seconds:6.2f} s")
        if "vllm" in engines:
            t = time.perf_counter()
            engines["vllm"].sync_weights(model)  # type: ignore[attr-defined]
            print(f"vllm weight sync: {1e3 * (time.perf_counter() - t):.1f} ms")
            engines["vllm"].close()  # type: ignore[attr-defined]
    print(f"\n{args.prompts} prompts x {args.n}, <= {args.tokens} new tokens, "
          f"{torch.get_num_threads()} torch threads")
    for name, values in rates.items():
        print(f"{name:5s} median {statistics.median(values):9.0f} tokens/s "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
