"""Every case of the hostile-input corpus (tests/hostile_cases.py) ends in a clear error:
exit 2, one paragraph naming the problem, no traceback, nothing already there changed."""

import re

import pytest
from hostile_cases import CASES, TINY, argv, make_scratch, snapshot

from entropyrl.cli.main import main


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, micro_model_dir):
    tmp = tmp_path_factory.mktemp("hostile")
    make_scratch(tmp)
    run = tmp / "run"
    args = ["train", "-c", "testbed/grpo", "--out", str(run), *TINY.format(micro=micro_model_dir).split()]
    assert main(args) == 0
    return tmp, micro_model_dir, run


def test_the_corpus_is_large_and_its_ids_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_a_clear_error(case, scratch, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on any machine
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tmp, micro, run = scratch
    before = snapshot(tmp)
    code = main(argv(case, tmp, micro, run))
    err = capsys.readouterr().err
    assert code == 2, f"exit {code}; stderr: {err[-500:]}"
    assert "Traceback" not in err
    assert re.search(case[2], err), err
    after = snapshot(tmp)
    changed = [str(p) for p, data in before.items() if after.get(p) != data]
    assert not changed, changed


def test_docs_list_every_case():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    missing = [c[0] for c in CASES if f"| `{c[0]}` |" not in doc]
    assert not missing, missing
