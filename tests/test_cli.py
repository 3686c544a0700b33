import subprocess
import sys

import pytest

from entropyrl import __version__
from entropyrl.cli.main import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("train", "demo", "fit"):
        assert command in out


def test_train_bad_config_exits_2_with_one_paragraph(capsys, tmp_path):
    assert main(["train", "--config", "testbed/grpo", "--out", str(tmp_path), "loss.name=grpo"]) == 2
    err = capsys.readouterr().err
    assert "loss.name" in err and "expected one of" in err and "Traceback" not in err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_train_missing_out_and_unknown_preset(capsys):
    assert main(["train", "--config", "testbed/grpo"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", "--config", "nope", "--out", "x"]) == 2
    assert "Shipped presets" in capsys.readouterr().err


def test_help_config_lists_fields(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "loss.kl_cov.ratio" in out and "optim.lr" in out


@pytest.mark.parametrize("module", ["entropyrl.cli.main", "entropyrl"])
def test_console_script_runs_without_traceback(tmp_path, module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "train", "--config", "testbed/grpo",
         "--out", str(tmp_path), "optim.lr=fast"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert "optim.lr: expected a number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_without_the_gpu_a_preset_needs_exits_2_before_any_download(capsys, tmp_path,
                                                                        monkeypatch):
    import torch
    import transformers

    def no_download(*args, **kwargs):
        raise AssertionError("a model was loaded before the device check")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_download)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_download)
    out = tmp_path / "run"
    assert main(["train", "--config", "paper/qwen2.5-7b-grpo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--dry-run" in err and "Traceback" not in err
    assert not out.exists()
