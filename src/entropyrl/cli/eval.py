"""``entropyrl eval``: score a model on math or code benchmarks, per data source."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

PAPER_SAMPLED = ("aime", "amc")  # avg@32 at temperature 0.6 in the paper; greedy elsewhere


def add_parser(sub: Any) -> None:
    """Register the ``eval`` subcommand."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model on math or code datasets: greedy accuracy, avg@k, pass@k per "
        "source",
        description=(
            "Evaluate a causal LM (hub id, local directory, or 'testbed') on math datasets, or "
            "with --task code on coding problems whose answers run against their tests in a "
            "sandbox (.jsonl/.json/.parquet files or hub ids). Reports per data source: greedy "
            "accuracy, avg@k and unbiased pass@k, mean response length, mean token entropy "
            "and truncated responses. --preset paper uses avg@32 at temperature 0.6 for "
            "AIME/AMC and greedy decoding elsewhere, as the paper reports."
        ),
    )
    p.add_argument("--model", "-m", required=True, help="hub id, local directory or 'testbed'")
    p.add_argument("--data", "-d", nargs="+", required=True, help="dataset files or hub ids")
    p.add_argument("--task", choices=("math", "code"), default="math",
                   help="math: boxed answers checked by math-verify; code: the answer's last "
                        "```python block run against the problem's tests (docs/tasks.md)")
    p.add_argument("--preset", choices=("default", "paper"), default="default",
                   help="default: greedy + avg@n at --temperature for every source")
    p.add_argument("--n", type=int, default=4, help="samples per prompt for avg@k/pass@k")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="response length limit")
    p.add_argument("--schema", help="dataset schema (default: detect from the fields)")
    p.add_argument("--template", help="prompt template: paper, plain, raw (math; default "
                   "paper); code, raw (code; default code); or a '{question}' text")
    p.add_argument("--chat-template", action="store_true",
                   help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed rows")
    p.add_argument("--limit", type=int, default=0, help="at most this many rows per dataset")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "auto"), default="auto")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                   help="sampling engine: hf (Hugging Face generate) or vllm (needs vLLM)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3,
                   help="vllm: share of the device's memory the engine reserves (on vLLM's "
                        "CPU backend: of host memory, counting this whole process)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--workers", type=int, default=2, help="reward worker processes")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds per answer check (code: per test)")
    p.add_argument("--batch-prompts", type=int, default=32, help="prompts per generate call")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--samples", type=Path, metavar="OUT.jsonl",
                   help="write every generated response here, one JSON object per line "
                        "(source, kind, prompt, answer, response, score)")
    p.set_defaults(func=run)


def spec_for(source: str, args: argparse.Namespace) -> Any:
    """The evaluation protocol of one data source under the chosen preset."""
    from entropyrl.evaluation import EvalSpec

    if args.preset == "paper":
        if any(tag in source.lower() for tag in PAPER_SAMPLED):
            return EvalSpec(greedy=False, k=32, temperature=0.6,
                            max_new_tokens=args.max_new_tokens)
        return EvalSpec(greedy=True, k=0, max_new_tokens=args.max_new_tokens)
    return EvalSpec(greedy=True, k=args.n, temperature=args.temperature,
                    max_new_tokens=args.max_new_tokens)


def run(args: argparse.Namespace) -> int:
    """Load model and data, evaluate each source, print a table, write JSON."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from entropyrl.config import ModelConfig
    from entropyrl.errors import UserError
    from entropyrl.evaluation import evaluate_source
    from entropyrl.models import load_model_and_tokenizer
    from entropyrl.rewards.result import RewardResult
    from entropyrl.rollout import HFEngine

    if args.n < 1 or args.temperature <= 0 or args.max_new_tokens < 1:
        raise UserError("--n and --max-new-tokens must be >= 1 and --temperature > 0.")
    model, tokenizer = load_model_and_tokenizer(
        ModelConfig(path=args.model, dtype=args.dtype, device=args.device)
    )
    model.eval()
    engine = HFEngine(model, tokenizer) if args.engine == "hf" else vllm_engine(args, model,
                                                                               tokenizer)
    load_task = _code_task if args.task == "code" else _math_task
    by_source, skipped, score, close = load_task(args, tokenizer)
    console = Console(stderr=True)
    results: dict[str, Any] = {}
    samples = None
    if args.samples is not None:
        try:
            samples = args.samples.open("w", encoding="utf-8")
        except OSError as err:
            raise UserError(f"--samples {args.samples}: cannot write ({err.strerror}); choose "
                            "a writable file path.") from None
    with contextlib.ExitStack() as stack:
        stack.callback(close)
        if samples is not None:
            stack.enter_context(samples)
        with Progress(console=console, transient=True) as progress:
            for source, rows in by_source.items():
                task = progress.add_task(source, total=len(rows))

                def advance(n: int, task: Any = task) -> None:
                    progress.advance(task, n)

                def keep(kind: str, rs: list[dict[str, Any]], texts: list[str],
                         scores: list[RewardResult], source: str = source) -> None:
                    if samples is not None:
                        for r, t, v in zip(rs, texts, scores, strict=True):
                            samples.write(json.dumps({
                                "source": source, "kind": kind, "prompt": r["prompt"],
                                "answer": str(r.get("answer", "")), "response": t,
                                "score": v.score,
                                "solved": v.solved,
                            }) + "\n")

                results[source] = evaluate_source(
                    engine, model, rows, score, spec_for(source, args),
                    batch_prompts=args.batch_prompts, on_batch=advance, on_samples=keep,
                )
    table = Table(title=f"{args.model} ({args.preset} preset)")
    for col in ("source", "prompts", "greedy", "avg@k", "pass@k", "k", "len", "entropy", "trunc"):
        # Long source names wrap instead of being cut.
        table.add_column(col, justify="left" if col == "source" else "right",
                         overflow="fold" if col == "source" else "ellipsis")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    for source, r in results.items():
        table.add_row(source, str(r.n_prompts), pct(r.greedy_acc), pct(r.avg_at_k),
                      pct(r.pass_at_k), str(r.k or "-"), f"{r.response_len:.0f}",
                      f"{r.entropy:.3f}", str(r.truncated))
    Console().print(table)
    if skipped:
        console.print(f"skipped {skipped} malformed rows")
    if args.json:
        payload = {"model": args.model, "preset": args.preset, "skipped_rows": skipped,
                   "sources": {k: v.to_dict() for k, v in results.items()}}
        args.json.write_text(json.dumps(payload, indent=2))
        console.print(f"wrote {args.json}")
    if args.samples is not None:
        console.print(f"wrote every response to {args.samples}")
    engine.close()
    return 0


def _math_task(args: argparse.Namespace, tokenizer: Any) -> tuple[
        dict[str, list[dict[str, Any]]], int, Any, Any]:
    """Rows by source, the rows skipped, the scorer (a math-verify pool) and its closer."""
    from entropyrl.data import load_math_datasets
    from entropyrl.rewards import MathScorer
    from entropyrl.rewards.result import RewardResult, full_credit

    sets = load_math_datasets(
        args.data, schema=args.schema, template=args.template or "paper",
        tokenizer=tokenizer if args.chat_template else None,
        skip_bad_rows=args.skip_bad_rows, limit=args.limit or None,
    )
    by_source: dict[str, list[dict[str, Any]]] = {}
    for s in sets:
        for row in s.rows:
            by_source.setdefault(str(row["data_source"]), []).append(row)
    scorer = MathScorer(workers=args.workers, timeout=args.timeout)

    def score(texts: list[str], rows: list[dict[str, Any]]) -> list[RewardResult]:
        return full_credit(scorer.score_batch(texts, [str(r["answer"]) for r in rows]))

    return by_source, sum(s.skipped for s in sets), score, scorer.close


def _code_task(args: argparse.Namespace, tokenizer: Any) -> tuple[
        dict[str, list[dict[str, Any]]], int, Any, Any]:
    """Rows by source (``data_source`` of the rows, else the file) and the sandbox scorer."""
    from entropyrl.data_config import CodeData
    from entropyrl.rewards.result import RewardResult
    from entropyrl.tasks.code import check, read_rows, score_code

    section = CodeData(train_files=list(args.data), val_files=list(args.data),
                       schema=args.schema, template=args.template or "code",
                       chat_template=args.chat_template, timeout_s=args.timeout)
    check(section)
    by_source: dict[str, list[dict[str, Any]]] = {}
    for source in args.data:
        rows = read_rows([source], section, tokenizer)[: args.limit or None]
        for row in rows:
            by_source.setdefault(str(row["data_source"]), []).append(row)

    def score(texts: list[str], rows: list[dict[str, Any]]) -> list[RewardResult]:
        return score_code(texts, rows, section, args.workers)

    return by_source, 0, score, lambda: None


def vllm_engine(args: argparse.Namespace, model: Any, tokenizer: Any) -> Any:
    """A vLLM engine that loads ``--model`` and samples like the HF engine (docs/vllm.md)."""
    import torch

    from entropyrl.config import ModelConfig
    from entropyrl.errors import UserError
    from entropyrl.models import resolve_dtype, resolve_model_path
    from entropyrl.rollout.vllm import VLLMEngine, vllm_available

    if not vllm_available():
        raise UserError("--engine vllm: vLLM is not installed in this environment. Install "
                        "it (pip install vllm) or use --engine hf.")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise UserError("--gpu-memory-utilization: expected a value in (0, 1].")
    dtype = resolve_dtype(ModelConfig(path=args.model, dtype=args.dtype))
    device = next(model.parameters()).device
    return VLLMEngine(model, tokenizer, source=resolve_model_path(args.model),
                      gpu_memory_utilization=args.gpu_memory_utilization,
                      dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
                      device=device, enforce_eager=device.type == "cpu")
