"""Readers: our metrics.jsonl, verl's file logger, CSV/TSV (W&B exports), TensorBoard; errors."""

import json

import numpy as np
import pytest

from entropyrl.errors import UserError
from entropyrl.law import load_run

STEPS = np.arange(1, 21)
ENTROPY = 1.0 - 0.03 * STEPS
EVAL = STEPS[STEPS % 4 == 0]
ACC = 0.2 + 0.01 * EVAL


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def own_rows():
    rows = []
    for s, h in zip(STEPS, ENTROPY, strict=True):
        row = {"step": int(s), "train/entropy": float(h), "loss/total": 0.1}
        if s % 4 == 0:
            row["val/acc"] = 0.2 + 0.01 * float(s)
        rows.append(row)
    return rows


def check(run, entropy_steps=STEPS, entropy=ENTROPY):
    np.testing.assert_array_equal(run.entropy.steps, entropy_steps)
    np.testing.assert_allclose(run.entropy.values, entropy, rtol=1e-6)
    np.testing.assert_array_equal(run.score.steps, EVAL)
    np.testing.assert_allclose(run.score.values, ACC, rtol=1e-6)


def test_own_metrics_jsonl_from_run_directory(tmp_path):
    run_dir = tmp_path / "grpo-7b"
    run_dir.mkdir()
    write_jsonl(run_dir / "metrics.jsonl", own_rows())
    run = load_run(run_dir)
    check(run)
    assert run.name == "grpo-7b" and run.format == "jsonl" and run.notes == ()
    assert load_run(run_dir / "metrics.jsonl").name == "grpo-7b"


def test_verl_file_logger_nested_data(tmp_path):
    rows = []
    for s, h in zip(STEPS, ENTROPY, strict=True):
        data = {"actor/entropy": float(h), "timing_s/gen": 1.5}
        if s % 4 == 0:
            data["val-core/math/acc/mean@1"] = 0.2 + 0.01 * float(s)
        rows.append({"step": int(s), "elapsed_seconds": 3.0, "data": data})
    path = write_jsonl(tmp_path / "verl_run.jsonl", rows)
    run = load_run(path, entropy_key="actor/entropy", score_key="val-core/math/acc/mean@1")
    check(run)
    assert run.name == "verl_run"
    # The flattened full name works too.
    check(load_run(path, entropy_key="data/actor/entropy", score_key="val-core/math/acc/mean@1"))


def test_wandb_history_csv_with_blank_cells_and_underscore_step(tmp_path):
    lines = ["_step,train/entropy,val/acc,_runtime"]
    for s, h in zip(STEPS, ENTROPY, strict=True):
        acc = f"{0.2 + 0.01 * s:.6f}" if s % 4 == 0 else ""
        lines.append(f"{s},{h:.6f},{acc},12.5")
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n")
    run = load_run(path)
    check(run)
    assert run.format == "csv"


def test_wandb_chart_export_columns_and_tsv(tmp_path):
    lines = ["Step\tmy-run - train/entropy\tmy-run - train/entropy__MIN\tmy-run - val/acc"]
    for s, h in zip(STEPS, ENTROPY, strict=True):
        acc = f"{0.2 + 0.01 * s:.6f}" if s % 4 == 0 else ""
        lines.append(f"{s}\t{h:.6f}\t{h - 0.1:.6f}\t{acc}")
    path = tmp_path / "export.tsv"
    path.write_text("\n".join(lines) + "\n")
    check(load_run(path))


@pytest.mark.parametrize("new_style", [False, True])
def test_tensorboard_events(tmp_path, new_style):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    log_dir = tmp_path / "run" / "tensorboard"
    writer = SummaryWriter(log_dir=str(log_dir))
    for s, h in zip(STEPS, ENTROPY, strict=True):
        writer.add_scalar("train/entropy", float(h), int(s), new_style=new_style)
        if s % 4 == 0:
            writer.add_scalar("val/acc", 0.2 + 0.01 * float(s), int(s), new_style=new_style)
    writer.close()
    run = load_run(tmp_path / "run")  # found below the run directory
    check(run)
    assert run.format == "tensorboard" and run.name == "run"
    with pytest.raises(UserError, match=r"no key 'val/accuracy'.*val/acc"):
        load_run(log_dir, score_key="val/accuracy")


def test_missing_key_lists_the_keys_in_the_file(tmp_path):
    path = write_jsonl(tmp_path / "metrics.jsonl", own_rows())
    with pytest.raises(UserError) as info:
        load_run(path, score_key="val/accuracy")
    msg = str(info.value)
    assert "no key 'val/accuracy'" in msg and "--score-key" in msg
    assert "Did you mean 'val/acc'" in msg
    assert "loss/total, train/entropy, val/acc" in msg
    with pytest.raises(UserError, match="--step-key"):
        load_run(path, step_key="iteration")


def test_ambiguous_suffix_asks_for_the_full_name(tmp_path):
    rows = [{"step": s, "a/train/entropy": 1.0, "b/train/entropy": 2.0, "val/acc": 0.1} for s in (1, 2)]
    with pytest.raises(UserError, match="matches several columns"):
        load_run(write_jsonl(tmp_path / "x.jsonl", rows))


def test_truncated_last_line_is_skipped_with_a_note(tmp_path):
    path = write_jsonl(tmp_path / "metrics.jsonl", own_rows())
    with path.open("a") as f:
        f.write('{"step": 21, "train/entr')
    run = load_run(path)
    check(run)
    assert len(run.notes) == 1 and "incomplete last line (21)" in run.notes[0]


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    rows = [json.dumps(r) for r in own_rows()]
    rows[3] = rows[3][:-5]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"metrics\.jsonl:4: not valid JSON"):
        load_run(path)


def test_non_numeric_and_nan_values(tmp_path):
    rows = own_rows()
    rows[3]["val/acc"] = "n/a"
    with pytest.raises(UserError, match=r":4: val/acc = 'n/a' is not a number"):
        load_run(write_jsonl(tmp_path / "a.jsonl", rows))
    rows[3]["val/acc"] = float("nan")  # json.dumps writes NaN
    with pytest.raises(UserError, match=r"val/acc in .*NaN/inf value\(s\) \(at step 4\)"):
        load_run(write_jsonl(tmp_path / "b.jsonl", rows), strict=True)
    run = load_run(tmp_path / "b.jsonl")  # by default dropped, with a note naming the step
    assert list(run.score.steps) == [8, 12, 16, 20]  # the evaluation at step 4 is gone
    assert any("dropped 1 NaN/inf value(s) (at step 4)" in n for n in run.notes)
    path = tmp_path / "c.csv"
    path.write_text("step,train/entropy,val/acc\n1,0.5,0.1\n2,inf,0.2\n")
    with pytest.raises(UserError, match=r"train/entropy in .*c\.csv: 1 NaN/inf"):
        load_run(path, strict=True)


def test_unreadable_and_missing_paths(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        load_run(tmp_path / "nope")
    binary = tmp_path / "metrics.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(UserError, match="cannot read"):
        load_run(binary)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(UserError, match=r"no metrics\.jsonl, trainer_state\.json or TensorBoard"):
        load_run(empty_dir)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty file"):
        load_run(tmp_path / "empty.csv")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UserError, match="expected a JSON object"):
        load_run(tmp_path / "list.jsonl")


def test_several_tensorboard_directories_are_ambiguous(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "events.out.tfevents.1.host").write_bytes(b"")
    with pytest.raises(UserError, match="events in 2 directories"):
        load_run(tmp_path)
