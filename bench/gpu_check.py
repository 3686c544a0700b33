"""GPU check: GRPO, Clip-Cov and KL-Cov under FSDP2 + bf16 on NCCL, with exact resume.

On one NVIDIA GPU (after ``make .venv/.installed`` where pip gives CUDA torch, or ``pip install
-e .`` in a CUDA torch environment), from the repository root, with no download:

    .venv/bin/python bench/gpu_check.py            # ~5 min; --keep --out DIR keeps the runs
    .venv/bin/python bench/gpu_check.py --smoke    # the same code on CPU: 2 gloo processes

Builds a random Qwen2 of Qwen2.5-0.5B's architecture (494 M parameters, tied embeddings, bf16,
testbed tokenizer; ``--smoke``: the testbed's micro model) and launches itself through torchrun
(1 process; ``--smoke``: 2) with the environment ``accelerate launch --config_file
configs/accelerate/fsdp2.yaml`` sets. Per preset (testbed/grpo, clip_cov, kl_cov) it runs 3 RL
steps uninterrupted, then stopped after step 2 and resumed; asserts the model is sharded
(``FSDP...`` class) on an NCCL group (gloo with ``--smoke``); and checks that both runs give
the same metrics (``time/*`` aside) and step-3 weights: bit-exact, or on GPU within tolerance
(non-deterministic kernels). A random model earns no testbed reward: the check rewards
responses that contain a "1" (mixed groups, non-zero advantages) and adds an entropy bonus.

Prints per method: mean ``time/step_s`` and ``time/tokens_per_s`` (rollout), peak GPU memory,
final ``train/entropy`` and ``loss/total``, the resume check (exact or the differences), PASS or
FAIL; then PASS/FAIL overall, exiting 1 on any failure (2: no GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FSDP_YAML = ROOT / "configs" / "accelerate" / "fsdp2.yaml"
METHODS = ("grpo", "clip_cov", "kl_cov")
STEPS, STOP = 3, 2  # the interrupted run stops after step STOP, then resumes
W_REL_TOL, M_ATOL, M_RTOL = 5e-2, 1e-3, 5e-2  # GPU fallback when bit-exactness fails


def build_model(path: Path, smoke: bool) -> int:
    """Save a random model + the testbed tokenizer in HF format; returns the parameter count."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from entropyrl import testbed

    tok = testbed.build_tokenizer()
    # Qwen2.5-0.5B's architecture with the testbed's special tokens. Tied embeddings as in
    # Qwen2.5-0.5B: FSDP2 shards the shared weight once, in the root module.
    config = testbed.micro_config(len(tok)) if smoke else Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6}, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def fsdp_env() -> dict[str, str]:
    """The ACCELERATE_*/FSDP_* variables ``accelerate launch`` derives from fsdp2.yaml."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    argv = ["--config_file", str(FSDP_YAML), "--num_processes", "1", __file__]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    env = {k: v for k, v in prepare_multi_gpu_env(args).items()
           if k.startswith(("ACCELERATE_", "FSDP_"))}
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2", env
    return {**env, "FSDP_TRANSFORMER_CLS_TO_WRAP": "Qwen2DecoderLayer"}


def overrides(model_dir: str, smoke: bool) -> list[str]:
    return [
        f"model.path={model_dir}", "model.dtype=bfloat16",
        f"model.device={'cpu' if smoke else 'cuda'}", f"steps={STEPS}", "rollout.n_prompts=8",
        "rollout.group_size=4", "rollout.max_new_tokens=64", "update.mini_batch_size=16",
        "update.micro_batch_size=8", "loss.entropy_coef=1e-3", "data.testbed.train_size=256",
        "data.testbed.val_size=8", f"eval.every={STEPS}", "eval.k=2", "eval.max_new_tokens=32",
        # Saves at the stop and at the end only: a save inside the interrupted run that the
        # uninterrupted one lacks must change nothing.
        "checkpoint_every=0", "keep_checkpoints=1", "progress=false",
    ]


def compare(full: Path, part: Path, init_dir: Path, exact_only: bool) -> dict:
    """Resume check: metrics rows (``time/*`` aside) and the final weights of both runs."""
    from safetensors.torch import load_file

    from entropyrl.train.metrics import read_metrics

    (ra, a), (rb, b) = (([{k: v for k, v in r.items() if not k.startswith("time/")}
                          for r in read_metrics(d / "metrics.jsonl")],
                         load_file(str(d / "checkpoints" / f"step_{STEPS}" / "model.safetensors")))
                        for d in (full, part))
    out = {"exact": False, "w_max": 0.0, "w_rel": 0.0, "m_max": 0.0, "m_key": ""}
    if [r.keys() for r in ra] != [r.keys() for r in rb] or set(a) != set(b):
        return {**out, "ok": False, "m_key": "different metric keys or weight names"}
    if ra == rb and all(torch.equal(a[k], b[k]) for k in a):
        return {**out, "ok": True, "exact": True}
    init = load_file(str(init_dir / "model.safetensors"))
    d2 = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a)
    moved = sum(float((a[k].double() - init[k].double()).pow(2).sum()) for k in a if k in init)
    out["w_max"] = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    out["w_rel"] = math.sqrt(d2 / max(moved, 1e-30))  # relative to how far training moved
    close = True
    for x, y in zip(ra, rb, strict=True):  # every metric is a number
        for k, u in x.items():
            d = abs(u - y[k])
            close &= d <= M_ATOL + M_RTOL * max(abs(u), abs(y[k]))
            if d > out["m_max"]:
                out["m_max"], out["m_key"] = d, f"{k}@{x['step']}"
    return {**out, "ok": not exact_only and close and out["w_rel"] <= W_REL_TOL}


def line(r: dict) -> str:
    how = "exact" if r["exact"] else (f"max|dw| {r['w_max']:.2e}, |dw|/|w-w0| {r['w_rel']:.2e}"
                                      f", worst metric {r['m_key']} |d| {r['m_max']:.2e}")
    return (f"{r['method']:9} {r['step_s']:7.2f} {r['tokens_per_s']:8.0f} {r['peak_gib']:8.2f} "
            f"{r['entropy']:8.4f} {r['loss']:9.5f}  {'PASS' if r['ok'] else 'FAIL'} ({how}; "
            f"{r['model']}, {r['backend']})")


def worker(a: argparse.Namespace) -> None:
    """One rank (under torchrun): each method uninterrupted, then stopped and resumed."""
    import torch.distributed as tdist

    import entropyrl.train.loop as loop
    from entropyrl.config import load_config
    from entropyrl.train import train
    from entropyrl.train.metrics import read_metrics
    from entropyrl.train.setup import make_accelerator

    rank, out, cuda = int(os.environ["RANK"]), Path(a.out), not a.smoke
    torch.use_deterministic_algorithms(True, warn_only=True)  # on GPU best effort: see compare
    seen: list[str] = []  # class of each run's trained model
    real_setup = loop.setup

    def spy_setup(*args, **kwargs):
        run = real_setup(*args, **kwargs)
        seen.append(type(run.learner.model).__name__)
        return run

    loop.setup = spy_setup
    # A random model earns no testbed reward, so every advantage would be 0 and Clip-Cov /
    # KL-Cov would select nothing; reward responses containing a "1" for mixed groups.
    import entropyrl.train.setup as setup_mod
    from entropyrl.tasks import TaskSet

    real_tasks = setup_mod.load_tasks

    def varied_tasks(data, reward, tokenizer=None):
        ts = real_tasks(data, reward, tokenizer)
        return TaskSet(ts.train, ts.val, lambda texts, rows: [float("1" in t) for t in texts])

    setup_mod.load_tasks = varied_tasks
    for method in a.methods:
        cfg = load_config(f"testbed/{method}", overrides(a.model_dir, a.smoke))
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for name, stop in (("full", None), ("part", STOP), ("part", None)):
            t = time.perf_counter()
            acc = make_accelerator(cfg, cpu_fsdp=a.smoke)
            train(cfg, out / method / name, accelerator=acc, stop_after=stop)
            acc.wait_for_everyone()
            mp = acc.state.fsdp_plugin.mixed_precision_policy  # bf16 compute, fp32 reduction
            assert seen[-1].startswith("FSDP") and mp.reduce_dtype == torch.float32, (seen, mp)
            del acc
            gc.collect()
            if rank == 0:
                print(f"[gpu_check] {method} {name} (stop_after={stop}): "
                      f"{time.perf_counter() - t:.0f} s", flush=True)
        backend = tdist.get_backend() if tdist.is_initialized() else "no process group"
        assert backend == ("nccl" if cuda else "gloo"), f"process group backend: {backend}"
        if rank == 0:
            res = compare(out / method / "full", out / method / "part", Path(a.model_dir),
                          exact_only=a.smoke)
            rows = read_metrics(out / method / "full" / "metrics.jsonl")
            res.update(
                method=method, model=seen[-1], backend=backend,
                step_s=sum(r["time/step_s"] for r in rows) / len(rows),
                tokens_per_s=sum(r["time/tokens_per_s"] for r in rows) / len(rows),
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
                entropy=rows[-1]["train/entropy"], loss=rows[-1]["loss/total"],
            )
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(res) + "\n")
            print(f"[gpu_check] {line(res)}", flush=True)
            if not a.keep:
                shutil.rmtree(out / method, ignore_errors=True)
        tdist.barrier()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)  # skip gloo's C++ teardown, which can abort after the work is done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, 2 gloo processes, micro model")
    p.add_argument("--out", help="working directory (default: a temporary one, removed)")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--timeout", type=float, default=540, help="seconds for the workers")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
    if not a.smoke and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}); use --smoke on CPU")
        return 2
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("")  # the workers append one line per method
    t0 = time.perf_counter()
    n_params = build_model(out / "model", a.smoke)
    nproc = 2 if a.smoke else 1
    env = {**os.environ, **fsdp_env(), "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
           "OMP_NUM_THREADS": "1" if a.smoke else os.environ.get("OMP_NUM_THREADS", "4")}
    print(f"gpu_check: {'smoke (CPU, gloo)' if a.smoke else torch.cuda.get_device_name(0)}, "
          f"{n_params:,} parameters, {nproc} process(es), model built in "
          f"{time.perf_counter() - t0:.0f} s; torch {torch.__version__}", flush=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", __file__, "--worker", "--out", str(out),
           "--model-dir", str(out / "model"), "--methods", *a.methods,
           *(["--smoke"] if a.smoke else []), *(["--keep"] if a.keep else [])]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    try:
        rc = proc.wait(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        rc = proc.wait()
        print(f"gpu_check: workers timed out after {a.timeout:.0f} s")
    lines = (out / "results.jsonl").read_text().splitlines()
    results = {r["method"]: r for r in map(json.loads, lines)}
    print(f"\n{'method':9} {'step s':>7} {'tok/s':>8} {'peak GiB':>8} {'entropy':>8} "
          f"{'loss':>9}  resume")
    failed = rc != 0
    for m in a.methods:
        r = results.get(m)
        print(line(r) if r else f"{m:9} {'-':>7} {'-':>8} {'-':>8} {'-':>8} {'-':>9}  FAIL (none)")
        failed |= not (r and r["ok"])
    print(f"\ntorchrun exit code {rc}; total {time.perf_counter() - t0:.0f} s: "
          f"{'FAIL' if failed else 'PASS'}")
    if not a.out and not a.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
