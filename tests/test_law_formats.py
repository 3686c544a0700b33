"""Readers of the logs users have, on small files written here in each framework's format.

verl console log (Ray prefixes, ANSI colours, ``np.float64(…)``, the initial-validation dict,
old and new key names), verl's TensorBoard directory (events written by a tiny TFRecord writer
below, read with and without the ``tensorboard`` package), verl's file logger, W&B chart
exports, ``trainer_state.json``; content detection and its error; key aliases and patterns.
"""

import json
import struct

import numpy as np
import pytest

from entropyrl.cli.main import main
from entropyrl.errors import UserError
from entropyrl.law import analyze_run, load_run

STEPS = np.arange(1, 31)
ENTROPY = 0.2 + 0.5 * np.exp(-(STEPS - 1) / 8)  # actor/entropy at step s: policy before update s
VAL_EVERY = 5


def acc_of_policy(s):
    """Score of the policy after ``s`` updates (law with a = 0.1, b = 0.8; H of that policy)."""
    h = 0.2 + 0.5 * np.exp(-s / 8)  # the entropy that step s + 1 logs
    return 0.8 - 0.1 * np.exp(h)


# ---------------------------------------------------------------- writers of each format


def write_verl_console(path, *, old=False, format_phase=()):
    """A verl stdout log: new style (steps from 1, val-core keys, step:0 initial line) or old.

    Old style: steps from 0, ``actor/entropy_loss``, ``test_score/…`` before training and
    ``val/test_score/…`` after, a Final validation dict. ``format_phase``: policies whose score
    is ~0 (a model still learning the answer format).
    """
    pre = "\x1b[36m(TaskRunner pid=4242)\x1b[0m "
    key = "val/test_score/openai/gsm8k" if old else "val-core/openai/gsm8k/reward/mean@1"
    init_key = "test_score/openai/gsm8k" if old else key
    shift = 1 if old else 0  # old logs number steps from 0

    def acc(p):
        return 0.002 if p in format_phase else acc_of_policy(p)

    lines = ["Warning: something unrelated - with: colons", pre + "<|im_start|>user step:"]
    lines.append(pre + f"\"Initial validation metrics: {{'{init_key}': np.float64({acc(0)})}}\"")
    lines.append(pre + f"step:{0 - shift} - {init_key}:np.float64({acc(0):.6f})")
    for s, h in zip(STEPS, ENTROPY, strict=True):
        parts = [
            f"step:{s - shift}",
            "timing_s/gen:12.5",
            "critic/score/mean:0.41",
            f"actor/entropy{'_loss' if old else ''}:{'np.float64(' + format(h, '.6f') + ')'}",
            "actor/pg_loss:-0.003",
            "response_length/mean:211.0",
        ]
        if s % VAL_EVERY == 0:
            parts.append(f"{key}:{acc(s):.6f}")
        lines.append(pre + " - ".join(parts) + (" [repeated 2x across cluster]" if s == 3 else ""))
        lines.append(pre + "Therefore, the answer is 42.<|im_end|>")
    if old:
        lines.append(pre + f"\"Final validation metrics: {{'{init_key}': {acc(30):.6f}}}\"")
    path.write_text("\n".join(lines) + "\n")
    return path


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, wire, payload):
    key = _varint(number << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    crc ^= 0xFFFFFFFF
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF  # TFRecord's masked CRC


def _record(data):
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _crc32c(length)) + data + struct.pack("<I", _crc32c(data))


def scalar_event(step, tag, value, tensor=False):
    """An ``Event`` protobuf holding one scalar: ``simple_value`` or a TF2 float tensor."""
    if tensor:
        proto = _field(1, 0, _varint(1)) + _field(5, 2, struct.pack("<f", value))
        val = _field(1, 2, tag.encode()) + _field(8, 2, proto)
    else:
        val = _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value))
    return (
        _field(1, 1, struct.pack("<d", 1.7e9 + step))
        + _field(2, 0, _varint(step))
        + _field(5, 2, _field(1, 2, val))
    )


def write_events(path, events):
    """A TensorBoard events file of ``(step, tag, value[, tensor])`` scalars."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = _record(_field(1, 1, struct.pack("<d", 1.7e9)) + _field(3, 2, b"brain.Event:2"))
    path.write_bytes(head + b"".join(_record(scalar_event(*e)) for e in events))
    return path


def verl_events(tensor=False):
    """What verl's tensorboard logger writes: the initial validation at step 0, then steps."""
    key = "val-core/openai/gsm8k/reward/mean@1"
    events = [(0, key, acc_of_policy(0), tensor)]
    for s, h in zip(STEPS, ENTROPY, strict=True):
        events += [
            (int(s), "actor/entropy", float(h), tensor),
            (int(s), "critic/score/mean", 0.4, tensor),
        ]
        if s % VAL_EVERY == 0:
            events.append((int(s), key, acc_of_policy(s), tensor))
    return events


# ---------------------------------------------------------------- verl console


def test_verl_console_new_style(tmp_path):
    run = load_run(write_verl_console(tmp_path / "train.log"))
    assert run.format == "verl-console" and run.framework == "verl"
    assert run.entropy_columns == ("actor/entropy",)
    assert run.score_columns == ("val-core/openai/gsm8k/reward/mean@1",)
    np.testing.assert_array_equal(run.entropy.steps, STEPS)
    np.testing.assert_allclose(run.entropy.values, ENTROPY, atol=1e-6)
    np.testing.assert_array_equal(run.score.steps, [0, 5, 10, 15, 20, 25, 30])
    np.testing.assert_allclose(run.score.values[0], acc_of_policy(0), atol=1e-6)
    assert any("verl default" in n for n in run.notes)


def test_verl_console_old_style_merges_the_two_score_names(tmp_path):
    run = load_run(write_verl_console(tmp_path / "old.log", old=True))
    assert run.entropy_columns == ("actor/entropy_loss",)
    assert run.score_columns == ("val/test_score/openai/gsm8k", "test_score/openai/gsm8k")
    np.testing.assert_array_equal(run.entropy.steps, STEPS - 1)  # steps from 0
    # Initial validation at −1 (before step 0, the first update); its step:0 echo is not
    # read as a second evaluation; the Final dict repeats the last step's and is not added.
    np.testing.assert_array_equal(run.score.steps, [-1, 4, 9, 14, 19, 24, 29])
    assert any(
        "merged 2 keys" in n and "test_score/openai/gsm8k (1 value, step -1)" in n
        for n in run.notes
    )
    assert any("initial validation" in n and "step -1" in n for n in run.notes)


@pytest.mark.parametrize("old", [False, True])
def test_pairing_policy_pairs_each_score_with_the_entropy_of_the_evaluated_policy(tmp_path, old):
    run = load_run(write_verl_console(tmp_path / "r.log", old=old))
    policy = analyze_run(run)  # verl's default
    assert policy.pairing == "policy" and "s + 1" in policy.pairing_note
    assert policy.aligned.n_dropped == 1  # the last evaluation: no later entropy logged
    assert policy.aligned.steps[0] == (-1 if old else 0)  # the base model's score is kept
    # Exact law: pairing by policy recovers a = 0.1, b = 0.8 (to the log's 6 digits).
    assert policy.fit.a == pytest.approx(0.1, abs=2e-4)
    assert policy.fit.b == pytest.approx(0.8, abs=2e-4)
    same = analyze_run(run, pair="same-step")
    assert same.aligned.n_dropped == 1 and same.aligned.steps[0] == (4 if old else 5)
    assert abs(same.fit.a - 0.1) > 1e-3  # off by one update


def test_format_learning_phase_warns_and_from_step_skips_it(tmp_path):
    run = load_run(write_verl_console(tmp_path / "r.log", format_phase=(0, 5)))
    r = analyze_run(run)
    assert r.early_break is not None and r.early_break.n_points == 2
    assert "--from-step 10" in r.early_warning
    auto = analyze_run(run, from_step="auto")
    assert auto.from_step == 10 and auto.n_skipped == 2 and auto.early_warning is None
    assert auto.fit.a == pytest.approx(0.1, abs=2e-4)
    manual = analyze_run(run, from_step=10)
    assert manual.fit.a == auto.fit.a


def test_cli_reads_a_raw_verl_console_log(tmp_path, capsys):
    log = write_verl_console(tmp_path / "verl_stdout.log", format_phase=(0,))
    out = tmp_path / "fit.json"
    assert main(["fit", str(log), "--json", str(out), "--fit-fraction", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "pairing policy" in text and "warning: the first 1 evaluation" in text
    (r,) = json.loads(out.read_text())["runs"]
    assert r["format"] == "verl-console" and r["framework"] == "verl"
    assert r["pairing"]["mode"] == "policy" and r["pairing"]["lag"] == 1
    assert r["keys"]["entropy"] == ["actor/entropy"] and r["early_warning"]


# ---------------------------------------------------------------- TensorBoard


def _no_tensorboard(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def _check_verl_tb(run):
    assert run.format == "tensorboard" and run.framework == "verl"
    np.testing.assert_array_equal(run.entropy.steps, STEPS)
    np.testing.assert_allclose(run.entropy.values, ENTROPY, rtol=1e-6)
    np.testing.assert_array_equal(run.score.steps, [0, 5, 10, 15, 20, 25, 30])


@pytest.mark.parametrize("builtin", [True, False])
def test_verl_tensorboard_directory(tmp_path, monkeypatch, builtin):
    if builtin:
        _no_tensorboard(monkeypatch)
    else:
        pytest.importorskip("tensorboard")
    write_events(
        tmp_path / "tensorboard_log" / "gsm8k" / "qwen" / "events.out.tfevents.1.h", verl_events()
    )
    run = load_run(tmp_path / "tensorboard_log")  # the one run directory below is found
    _check_verl_tb(run)
    r = analyze_run(run)
    assert r.pairing == "policy" and r.fit.a == pytest.approx(0.1, abs=1e-4)


def test_builtin_reader_tensor_summaries_and_torn_last_record(tmp_path, monkeypatch):
    _no_tensorboard(monkeypatch)
    path = write_events(tmp_path / "events.out.tfevents.2.h", verl_events(tensor=True))
    path.write_bytes(path.read_bytes() + b"\x10\x00\x00")  # a record still being written
    _check_verl_tb(load_run(path))


def test_cli_reads_a_verl_tensorboard_directory(tmp_path):
    write_events(tmp_path / "exp" / "events.out.tfevents.1.h", verl_events())
    out = tmp_path / "o.json"
    assert main(["fit", str(tmp_path / "exp"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["runs"][0]["format"] == "tensorboard"


# ---------------------------------------------------------------- other formats


def test_verl_file_logger_is_recognised_as_verl(tmp_path):
    rows = [
        {"step": int(s), "data": {"actor/entropy": float(h), "critic/score/mean": 0.4}}
        for s, h in zip(STEPS, ENTROPY, strict=True)
    ]
    rows.insert(0, {"step": 0, "data": {"val-core/openai/gsm8k/reward/mean@1": 0.3}})
    for s in (5, 10):
        rows[s]["data"]["val-core/openai/gsm8k/reward/mean@1"] = 0.5
    path = tmp_path / "verl.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(path)
    assert run.format == "verl-jsonl" and run.framework == "verl"
    assert run.entropy_columns == ("data/actor/entropy",)
    np.testing.assert_array_equal(run.score.steps, [0, 5, 10])


def test_wandb_chart_export_drops_min_max_columns_with_a_note(tmp_path):
    lines = [
        '"Step","grpo-7b - actor/entropy","grpo-7b - actor/entropy__MIN",'
        '"grpo-7b - actor/entropy__MAX","grpo-7b - val-core/gsm8k/reward/mean@1"'
    ]
    for s, h in zip(STEPS, ENTROPY, strict=True):
        acc = f"{acc_of_policy(s):.5f}" if s % VAL_EVERY == 0 else ""
        lines.append(f"{s},{h:.6f},{h - 0.1:.6f},{h + 0.1:.6f},{acc}")
    path = tmp_path / "wandb_export.csv"
    path.write_text("\n".join(lines) + "\n")
    run = load_run(path)
    assert run.framework == "verl" and run.entropy_columns == ("grpo-7b - actor/entropy",)
    np.testing.assert_allclose(run.entropy.values, ENTROPY, atol=1e-6)
    assert any("min/max envelope" in n for n in run.notes)


def test_trainer_state_json_from_a_checkpoint_directory(tmp_path):
    history = []
    for s, h in zip(STEPS, ENTROPY, strict=True):
        history.append({"step": int(s), "epoch": s / 30, "loss": 0.01, "entropy": float(h)})
        if s % VAL_EVERY == 0:
            history.append({"step": int(s), "eval_reward": acc_of_policy(s), "eval_loss": 0.1})
    for n, cut in ((10, 20), (30, len(history))):
        ckpt = tmp_path / "out" / f"checkpoint-{n}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(
            json.dumps({"global_step": n, "log_history": history[:cut]}, indent=2)
        )
    run = load_run(tmp_path / "out")
    assert run.format == "trainer-state" and run.framework == "trl" and run.name == "out"
    assert run.score.steps[-1] == 30  # the newest checkpoint's history
    assert analyze_run(run).pairing == "policy"


def test_unrecognised_text_names_the_formats(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("this run went well\nentropy fell to 0.1\n")
    with pytest.raises(
        UserError,
        match=r"not a log format .*verl console log.*starts with "
        r"'this run went well'",
    ):
        load_run(path)
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a log format" in err and "Traceback" not in err


# ---------------------------------------------------------------- aliases and patterns


def test_score_key_aliases_and_patterns_merge_with_a_note(tmp_path):
    path = write_verl_console(tmp_path / "old.log", old=True)
    by_names = load_run(path, score_key=["val/test_score/openai/gsm8k", "test_score/openai/gsm8k"])
    by_pattern = load_run(path, score_key="*test_score/openai/gsm8k")
    np.testing.assert_array_equal(by_names.score.steps, by_pattern.score.steps)
    assert by_names.score.steps[0] == -1
    one = load_run(path, score_key="val/test_score/openai/gsm8k")
    assert one.score.steps[0] == 4  # one name: the pre-training score is not in it
    with pytest.raises(UserError, match="no key 'val/nope'"):
        load_run(path, score_key=["val/test_score/openai/gsm8k", "val/nope"])


def test_cli_repeated_score_key(tmp_path):
    path = write_verl_console(tmp_path / "old.log", old=True)
    out = tmp_path / "o.json"
    assert (
        main(
            [
                "fit",
                str(path),
                "--score-key",
                "val/test_score/openai/gsm8k",
                "--score-key",
                "test_score/openai/gsm8k",
                "--pair",
                "same-step",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())["runs"][0]
    assert r["keys"]["score"] == ["val/test_score/openai/gsm8k", "test_score/openai/gsm8k"]
    assert r["pairing"]["mode"] == "same-step" and r["alignment"]["dropped"] == 1
