"""The corpus of hostile inputs: things a user can get wrong, and what the CLI must say.

Each case is ``(id, argv, pattern)``: run ``entropyrl *argv`` in a scratch directory that
``make_scratch`` filled, and expect exit 2, one paragraph on stderr matching ``pattern``, no
traceback, and every file that was there before unchanged. ``{tmp}`` in an argument is the
scratch directory; ``{micro}`` a tiny model directory; ``{run}`` a finished tiny run.

Used by tests/test_hostile_inputs.py (in-process) and scripts/hostile_inputs.py (any
checkout, as subprocesses; it prints the counts clear / traceback / silent). Stdlib only, so
the same table runs against older versions.
"""

from __future__ import annotations

import json
from pathlib import Path

T = "train -c testbed/grpo --out {tmp}/out"
TINY = ("model.path={micro} model.device=cpu steps=1 rollout.n_prompts=2 rollout.group_size=2 "
        "rollout.max_new_tokens=4 update.mini_batch_size=4 update.micro_batch_size=4 "
        "eval.every=0 data.testbed.train_size=8 data.testbed.val_size=4 progress=false")
PY = "data.python.train_files=[{tmp}/prompts.jsonl] data.python.val_files=[{tmp}/prompts.jsonl]"
EVAL = "eval --model {micro} --workers 1 --max-new-tokens 2 --n 1 --data"

CASES: list[tuple[str, str, str]] = [
    # ---------------------------------------------------------------- config and overrides
    ("preset-unknown", "train -c nope --out {tmp}/out", r"neither a YAML file nor a shipped"),
    ("config-yaml-syntax", "train -c {tmp}/broken.yaml --out {tmp}/out", r"Fix the YAML"),
    ("config-binary", "train -c {tmp}/binary.yaml --out {tmp}/out", r"not UTF-8 text"),
    ("config-not-mapping", "train -c {tmp}/list.yaml --out {tmp}/out", r"expected a mapping"),
    ("override-no-equals", f"{T} lr", r"expected key=value"),
    ("override-open-list", f"{T} steps=[", r"not valid YAML"),
    ("override-open-map", f"{T} optim.lr={{{{a", r"not valid YAML"),
    ("field-unknown", f"{T} optim.learning_rate=1", r"unknown config field optim\.learning_rate"),
    ("section-not-mapping", f"{T} optim.lr.x=1", r"not a section"),
    ("loss-unknown", f"{T} loss.name=grpo", r"loss\.name: expected one of"),
    ("steps-float", f"{T} steps=2.5", r"steps: expected an integer"),
    ("steps-zero", f"{T} steps=0", r"steps: expected a positive integer"),
    ("lr-negative", f"{T} optim.lr=-1", r"optim\.lr: expected a finite number > 0"),
    ("lr-inf", f"{T} optim.lr=.inf", r"optim\.lr: expected a finite number > 0"),
    ("lr-nan", f"{T} optim.lr=.nan", r"optim\.lr: expected a finite number > 0"),
    ("lr-absurd", f"{T} optim.lr=3", r"optim\.lr: expected a learning rate <= 1"),
    ("lr-text", f"{T} optim.lr=fast", r"optim\.lr: expected a number"),
    ("beta2-out-of-range", f"{T} optim.beta2=5", r"optim\.beta2: expected a value in \[0, 1\)"),
    ("eps-zero", f"{T} optim.eps=0", r"optim\.eps: expected a finite number > 0"),
    ("weight-decay-negative", f"{T} optim.weight_decay=-1", r"optim\.weight_decay"),
    ("grad-clip-negative", f"{T} optim.grad_clip=-1", r"optim\.grad_clip"),
    ("warmup-negative", f"{T} optim.warmup_steps=-5", r"optim\.warmup_steps"),
    ("checkpoint-every-negative", f"{T} checkpoint_every=-1", r"checkpoint_every"),
    ("eval-every-negative", f"{T} eval.every=-1", r"eval\.every"),
    ("mini-batch-not-divisor", f"{T} update.mini_batch_size=7", r"expected a divisor"),
    ("micro-batch-not-divisor", f"{T} update.micro_batch_size=5", r"micro_batch_size"),
    ("top-p-above-1", f"{T} rollout.top_p=1.5", r"rollout\.top_p"),
    ("temperature-zero", f"{T} rollout.temperature=0", r"rollout\.temperature"),
    ("max-batch-tokens-zero", f"{T} rollout.max_batch_tokens=0", r"rollout\.max_batch_tokens"),
    ("gamma-above-1", f"{T} algorithm.gamma=2", r"algorithm\.gamma"),
    ("shuffle-not-bool", f"{T} update.shuffle=maybe", r"update\.shuffle: expected true or false"),
    ("kl-cov-ratio-percent", f"{T} loss.kl_cov.ratio=20", r"kl_cov\.ratio: expected a fraction"),
    ("clip-cov-bounds-swapped", f"{T} loss.clip_cov.cov_low=5 loss.clip_cov.cov_high=1",
     r"cov_low < cov_high"),
    ("sink-unknown", f"{T} sinks=[nope]", r"sinks: expected items from"),
    ("reward-workers-zero", f"{T} reward.workers=0", r"reward\.workers"),
    ("testbed-op-unknown", f"{T} {TINY} data.testbed.ops=[div]",
     r"data\.testbed\.ops\[0\]: expected one of"),
    ("testbed-level-unknown", f"{T} {TINY} data.testbed.difficulty=[7]",
     r"data\.testbed\.difficulty"),
    ("math-without-files", f"{T} data.task=math", r"needs data\.math\.train_files"),
    ("python-task-without-reward", f"{T} data.task=python {PY}", r"reward\.fn: the python task"),
    ("python-task-prompt-column", f"{T}_py {TINY} data.task=python {PY} "
     "reward.fn={tmp}/reward.py:ok data.python.prompt_key=question",
     r"no text in column 'question'"),
    ("reward-fn-no-module", f"{T}_fn1 {TINY} reward.fn=no_such_reward_module:score",
     r"reward\.fn: no module 'no_such_reward_module'"),
    ("reward-fn-no-function", f"{T}_fn2 {TINY} reward.fn={{tmp}}/reward.py:missing",
     r"reward\.py has no function 'missing'"),
    ("reward-fn-raises", f"{T}_fn3 {TINY} reward.fn={{tmp}}/reward.py:boom",
     r"failed on a response: KeyError: 'answer_text'"),
    ("reward-fn-wrong-shape", f"{T}_fn4 {TINY} reward.fn={{tmp}}/reward.py:scalar",
     r"it returned float, not a list"),
    ("cuda-without-gpu", f"{T} {TINY} model.device=cuda", r"no CUDA device"),
    ("out-missing", "train -c testbed/grpo", r"missing --out"),
    ("plan-flag-without-dry-run", f"{T} --world-size 8", r"only applies with --dry-run"),
    ("dry-run-does-not-fit", "train -c paper/qwen2.5-32b-grpo --dry-run --world-size 1 "
     "--device-memory 80GiB --sharding none", r"does not fit in memory"),
    ("dry-run-memory-unparsable", "train -c paper/qwen2.5-7b-grpo --dry-run --world-size 8 "
     "--device-memory lots", r"--device-memory"),
    ("dry-run-world-not-divisor", "train -c paper/qwen2.5-7b-grpo --dry-run --world-size 7 "
     "--device-memory 80GiB", r"divisible by"),
    # ---------------------------------------------------------------- run directories
    ("out-is-a-file", f"train -c testbed/grpo --out {{tmp}}/afile {TINY}", r"a file is in the way"),
    ("out-under-a-file", f"train -c testbed/grpo --out {{tmp}}/afile/run {TINY}",
     r"a file is in the way"),
    ("out-dev-null", f"train -c testbed/grpo --out /dev/null {TINY}", r"a file is in the way"),
    ("resume-other-config", f"train -c testbed/grpo --out {{run}} {TINY} optim.lr=1e-3",
     r"trained with another config"),
    ("model-path-missing", f"train -c testbed/grpo --out {{tmp}}/out {TINY} "
     "model.path={tmp}/no_model", r"cannot load model"),
    # ---------------------------------------------------------------- data (eval)
    ("data-missing", f"{EVAL} {{tmp}}/missing.jsonl", r"data file not found"),
    ("data-suffix", f"{EVAL} {{tmp}}/data.csv", r"unsupported data file type"),
    ("data-not-utf8", f"{EVAL} {{tmp}}/latin1.jsonl", r"not UTF-8 text"),
    ("data-json-syntax", f"{EVAL} {{tmp}}/broken.json", r"not valid JSON"),
    ("data-json-not-list", f"{EVAL} {{tmp}}/object.json", r"expected a JSON list"),
    ("data-parquet-corrupt", f"{EVAL} {{tmp}}/cut.parquet", r"not a readable parquet file"),
    ("data-schema-unknown", f"{EVAL} {{tmp}}/odd.jsonl", r"could not tell the dataset schema"),
    ("data-empty-answer", f"{EVAL} {{tmp}}/empty_answer.jsonl", r"row 2"),
    ("eval-n-zero", "eval --model {micro} --data {tmp}/good.jsonl --n 0",
     r"--n and --max-new-tokens"),
    ("eval-model-missing", "eval --model {tmp}/no_model --data {tmp}/good.jsonl",
     r"cannot (load|read the config of) model"),
    ("eval-samples-unwritable", f"{EVAL} {{tmp}}/good.jsonl --samples {{tmp}}/afile/x.jsonl",
     r"--samples"),
    # ---------------------------------------------------------------- fit
    ("fit-missing", "fit {tmp}/missing.jsonl", r"missing\.jsonl"),
    ("fit-key-unknown", "fit {run} --score-key val/nope", r"val/nope"),
    ("fit-too-few", "fit {tmp}/few.jsonl", r"at least 3"),
    ("fit-binary", "fit {tmp}/binary.jsonl", r"cannot read"),
    ("fit-all-nan", "fit {tmp}/all_nan.jsonl", r"NaN/inf"),
    ("fit-json-unwritable", "fit {tmp}/law.jsonl --json {tmp}/afile/x.json", r"cannot write"),
    # ---------------------------------------------------------------- report
    ("report-no-metrics", "report {tmp} --out {tmp}/rep", r"no metrics\.jsonl"),
    ("report-names-mismatch", "report {run} --names a b --out {tmp}/rep", r"--names has 2"),
    ("report-out-is-a-file", "report {run} --out {tmp}/afile", r"cannot write the report"),
]


def make_scratch(tmp: Path) -> None:
    """The files the cases refer to (``{micro}`` and ``{run}`` are made by the caller)."""
    (tmp / "broken.yaml").write_text("steps: [1, 2\n")
    (tmp / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "afile").write_text("keep me\n")
    good = '{"problem": "1+1?", "answer": "2"}\n{"problem": "2+3?", "answer": "5"}\n'
    (tmp / "good.jsonl").write_text(good)
    (tmp / "data.csv").write_text("problem,answer\n1+1?,2\n")
    (tmp / "latin1.jsonl").write_bytes('{"problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
    (tmp / "broken.json").write_text('[{"problem": "1+1?", "answer": "2"},')
    (tmp / "object.json").write_text('{"rows": []}')
    (tmp / "cut.parquet").write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    (tmp / "odd.jsonl").write_text('{"text": "hi", "label": 1}\n')
    (tmp / "empty_answer.jsonl").write_text(
        '{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": ""}\n')
    (tmp / "few.jsonl").write_text("".join(
        json.dumps({"step": s, "train/entropy": 1 - s / 10, "val/acc": s / 10}) + "\n"
        for s in (1, 2)))
    (tmp / "binary.jsonl").write_bytes(b"\x89\xff\x00")
    (tmp / "all_nan.jsonl").write_text("".join(
        f'{{"step": {s}, "train/entropy": {1 - s / 10}, "val/acc": NaN}}\n' for s in range(1, 6)))
    (tmp / "prompts.jsonl").write_text('{"prompt": "1+1=", "target": "2"}\n')
    (tmp / "reward.py").write_text(
        "def ok(completions, **columns):\n    return [0.0] * len(completions)\n"
        "def boom(completions, **columns):\n    return [columns['answer_text'][0]]\n"
        "def scalar(completions, **columns):\n    return 1.0\n")
    (tmp / "law.jsonl").write_text("".join(
        json.dumps({"step": s, "train/entropy": 1 - s / 20, "val/acc": s / 25}) + "\n"
        for s in range(1, 21)))


def argv(case: tuple[str, str, str], tmp: Path, micro: Path, run: Path) -> list[str]:
    """The case's command line with its placeholders filled."""
    line = case[1].format(tmp=tmp, micro=micro, run=run)
    return line.split()


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file below ``root`` and its bytes (a run's ``.lock`` is not data)."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
