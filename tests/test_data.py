"""Dataset loading: every schema from fixture files, bad rows, hub routing, prompt templates."""

from __future__ import annotations

import json
import sys
import types

import pytest

from entropyrl.data import (
    PAPER_INSTRUCTION,
    SCHEMAS,
    detect_schema,
    format_prompt,
    load_math_dataset,
    load_math_datasets,
    render_prompt,
)
from entropyrl.data.schemas import DAPO_PREFIX, DAPO_SUFFIX
from entropyrl.errors import UserError


def write_jsonl(path, rows, raw_lines=()):
    lines = [json.dumps(r) for r in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Synthetic problems, one small file per schema, in that dataset's layout.
DAPO_ROWS = [
    {
        "data_source": "math_dapo",
        "prompt": [{"role": "user", "content": DAPO_PREFIX + "What is $2+3$?" + DAPO_SUFFIX}],
        "ability": "MATH",
        "reward_model": {"ground_truth": "5", "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": "a1"},
    },
    {
        "data_source": "math_dapo",
        "prompt": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Compute $7 \\cdot 6$."},  # no DAPO wrapper: kept as is
        ],
        "ability": "MATH",
        "reward_model": {"ground_truth": "42", "style": "rule"},
        "extra_info": {"index": "a2"},
    },
]
MATH500_ROWS = [
    {"problem": "Simplify $\\frac{6}{8}$.", "solution": "... $\\boxed{\\frac34}$", "answer": "\\frac{3}{4}",
     "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Solve $x+1=3$.", "solution": "$x=\\boxed{2}$", "answer": "2",
     "subject": "Algebra", "level": 1, "unique_id": "test/algebra/2.json"},
]
AIME_ROWS = [
    {"id": 60, "problem": "Find the remainder when $2^{10}$ is divided by $1000$.", "answer": 24,
     "url": "https://example.invalid/aime"},
    {"id": 61, "problem": "How many positive divisors does $36$ have?", "answer": "9",
     "url": "https://example.invalid/aime"},
]
AIME_CAPITALISED_ROWS = [{"ID": "2024-I-1", "Problem": "What is $10^2$?", "Solution": "100", "Answer": 100}]
AMC_ROWS = [
    {"id": 0, "question": "What is $3 \\times 9$?", "answer": 27.0, "url": "x"},
    {"id": 1, "question": "What is $5/2$?", "answer": 2.5, "url": "x"},
]
GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A farm has 1000 hens and 234 ducks. How many birds?", "answer": "1000+234\n#### 1,234"},
]
MINERVA_ROWS = [
    {"problem": "A wave has frequency $2$ Hz and period $T$. Find $T$ in seconds.",
     "solution": "Since $T=1/f$, $T=\\boxed{0.5}$.", "type": "Physics", "idx": 0},
    {"problem": "Compute $\\sqrt{16}$.", "solution": "It is \\boxed{4}.", "type": "Math", "idx": 1},
]
OLYMPIAD_ROWS = [
    {"id": 1, "question": "Find $a$ such that $2a=1$.", "final_answer": ["$\\frac{1}{2}$"],
     "is_multiple_answer": False, "unit": None, "answer_type": "Numerical"},
    {"id": 2, "question": "Find all real $x$ with $x^2=4$.", "final_answer": ["$2$", "$-2$"],
     "is_multiple_answer": True, "unit": None, "answer_type": "Numerical"},
]
OMNI_ROWS = [
    {"domain": ["Mathematics -> Algebra"], "difficulty": 3.0, "problem": "Find $x$ if $3x=12$.",
     "solution": "x=4", "answer": "4", "source": "some_olympiad"},
]
GENERIC_ROWS = [
    {"prompt": "What is $1+1$?", "answer": "2", "data_source": "toy_add"},
    {"prompt": "What is $2 \\cdot 2$?", "answer": 4},
]

FIXTURES = {
    "dapo": DAPO_ROWS,
    "math500": MATH500_ROWS,
    "aime": AIME_CAPITALISED_ROWS,
    "gsm8k": GSM8K_ROWS,
    "minerva": MINERVA_ROWS,
    "olympiadbench": OLYMPIAD_ROWS,
    "omni_math": OMNI_ROWS,
    "generic": AIME_ROWS,  # plain {problem, answer} rows look generic unless schema= says so
}

EXPECTED = {
    "dapo": [("What is $2+3$?", "5", "math_dapo"), ("Compute $7 \\cdot 6$.", "42", "math_dapo")],
    "math500": [("Simplify $\\frac{6}{8}$.", "\\frac{3}{4}", None), ("Solve $x+1=3$.", "2", None)],
    "aime": [("What is $10^2$?", "100", None)],
    "gsm8k": [(GSM8K_ROWS[0]["question"], "7", None), (GSM8K_ROWS[1]["question"], "1234", None)],
    "minerva": [(MINERVA_ROWS[0]["problem"], "0.5", None), ("Compute $\\sqrt{16}$.", "4", None)],
    "olympiadbench": [("Find $a$ such that $2a=1$.", "\\frac{1}{2}", None),
                      ("Find all real $x$ with $x^2=4$.", "2, -2", None)],
    "omni_math": [("Find $x$ if $3x=12$.", "4", None)],
    "generic": [(AIME_ROWS[0]["problem"], "24", None), (AIME_ROWS[1]["problem"], "9", None)],
}


@pytest.mark.parametrize("schema", sorted(FIXTURES))
def test_each_schema_is_detected_and_adapted(tmp_path, schema):
    path = write_jsonl(tmp_path / f"{schema}_fixture.jsonl", FIXTURES[schema])
    result = load_math_dataset(path)
    assert result.schema == schema
    assert result.skipped == 0
    got = [(r["question"], r["answer"], r["data_source"]) for r in result.rows]
    want = [(q, a, src or f"{schema}_fixture") for q, a, src in EXPECTED[schema]]
    assert got == want
    for i, row in enumerate(result.rows):
        assert row["prompt"] == format_prompt(row["question"], "paper")
        assert row["schema"] == schema
        assert row["row"] == i + 1


def test_explicit_schema_override_and_amc_numbers(tmp_path):
    path = write_jsonl(tmp_path / "aime24.jsonl", AIME_ROWS)
    assert load_math_dataset(path, schema="aime").schema == "aime"
    amc = write_jsonl(tmp_path / "amc23.jsonl", AMC_ROWS)
    result = load_math_dataset(amc, schema="amc")
    assert [r["answer"] for r in result.rows] == ["27", "2.5"]  # 27.0 loses its ".0"
    assert {r["data_source"] for r in result.rows} == {"amc23"}
    with pytest.raises(UserError, match="unknown dataset schema 'aime2024'"):
        load_math_dataset(path, schema="aime2024")


def test_row_data_source_wins_over_default(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", GENERIC_ROWS)
    rows = load_math_dataset(path, data_source="fallback").rows
    assert [r["data_source"] for r in rows] == ["toy_add", "fallback"]
    assert [r["answer"] for r in rows] == ["2", "4"]


def test_json_list_and_data_wrapper(tmp_path):
    a = tmp_path / "list.json"
    a.write_text(json.dumps(MATH500_ROWS), encoding="utf-8")
    b = tmp_path / "wrapped.json"
    b.write_text(json.dumps({"data": MATH500_ROWS}), encoding="utf-8")
    ra, rb = load_math_datasets([a, b])
    assert [r["answer"] for r in ra.rows] == [r["answer"] for r in rb.rows] == ["\\frac{3}{4}", "2"]
    c = tmp_path / "scalar.json"
    c.write_text("3", encoding="utf-8")
    with pytest.raises(UserError, match="expected a JSON list"):
        load_math_dataset(c)
    d = tmp_path / "broken.json"
    d.write_text("[{", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_math_dataset(d)


def test_parquet_dapo(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "dapo-math-17k.parquet"
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS), path)
    result = load_math_dataset(path)
    assert result.schema == "dapo"
    assert [(r["question"], r["answer"]) for r in result.rows] == [
        (q, a) for q, a, _ in EXPECTED["dapo"]
    ]


def test_parquet_without_reader_is_a_clear_error(tmp_path, monkeypatch):
    import entropyrl.data.io as io

    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")

    def no_module(name):
        raise ImportError(name)

    monkeypatch.setattr(io.importlib, "import_module", no_module)
    with pytest.raises(UserError, match="pip install pyarrow"):
        load_math_dataset(path)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_math_dataset(tmp_path / "missing.jsonl")
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"unsupported data file type '\.csv'"):
        load_math_dataset(csv)
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"text": "hi", "label": 1}])
    with pytest.raises(UserError, match=r"could not tell the dataset schema from the fields \['label', 'text'\]"):
        load_math_dataset(odd)


# --------------------------------------------------------------------------------------------
# Bad rows: file, 1-based row number and field in the message; or skipped and counted
# --------------------------------------------------------------------------------------------

BAD_ROWS = [
    ({"problem": "What is $1+1$?"}, "answer", "missing"),  # no answer (generic: detection from row 1)
    ({"problem": "What is $1+1$?", "answer": "  "}, "answer", "empty"),
    ({"problem": "What is $1+1$?", "answer": ["2"]}, "answer", "got list"),
    ({"problem": 12, "answer": "2"}, "problem", "expected text, got int"),
    ({"problem": "What is $1+1$?", "answer": True}, "answer", "got bool"),
    ({"problem": "What is $1/0$?", "answer": float("nan")}, "answer", "not a finite number"),
]


@pytest.mark.parametrize(("bad", "field", "problem"), BAD_ROWS)
def test_bad_row_names_file_row_and_field(tmp_path, bad, field, problem):
    good = {"problem": "What is $2+2$?", "answer": "4"}
    path = tmp_path / "set.jsonl"
    lines = [json.dumps(good), json.dumps(good), json.dumps(bad, allow_nan=True), json.dumps(good)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_math_dataset(path)
    message = str(err.value)
    assert str(path) in message
    assert "row 3" in message
    assert f"field '{field}'" in message
    assert problem in message
    assert "skip_bad_rows=True" in message
    result = load_math_dataset(path, skip_bad_rows=True)
    assert result.skipped == 1
    assert [r["row"] for r in result.rows] == [1, 2, 4]
    assert len(result.problems) == 1 and "row 3" in result.problems[0]


def test_bad_rows_per_schema(tmp_path):
    cases = {
        "dapo": {**DAPO_ROWS[0], "reward_model": {"style": "rule"}},
        "gsm8k": {"question": "q?", "answer": "no final marker"},
        "minerva": {"problem": "q?", "solution": "no box here"},
        "olympiadbench": {"question": "q?", "final_answer": []},
    }
    fields = {"dapo": "reward_model.ground_truth", "gsm8k": "answer", "minerva": "solution",
              "olympiadbench": "final_answer"}
    for schema, bad in cases.items():
        path = write_jsonl(tmp_path / f"bad_{schema}.jsonl", [FIXTURES[schema][0], bad])
        with pytest.raises(UserError, match=rf"row 2: field '{fields[schema]}'"):
            load_math_dataset(path, schema=schema)
        assert load_math_dataset(path, schema=schema, skip_bad_rows=True).skipped == 1


def test_invalid_json_line_and_blank_lines(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_text(
        json.dumps(GENERIC_ROWS[0]) + "\n\n{not json\n" + json.dumps(GENERIC_ROWS[1]) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError, match=r"row 3: field '<json>': invalid JSON"):
        load_math_dataset(path)
    result = load_math_dataset(path, skip_bad_rows=True)
    assert (result.skipped, [r["row"] for r in result.rows]) == (1, [1, 4])  # line numbers


def test_all_rows_bad_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "allbad.jsonl", [{"problem": "q", "answer": ""}] * 3)
    with pytest.raises(UserError, match="no usable rows"):
        load_math_dataset(path, skip_bad_rows=True)
    many = write_jsonl(tmp_path / "many.jsonl", GSM8K_ROWS * 5)
    assert len(load_math_dataset(many, limit=3).rows) == 3
    with pytest.raises(ValueError, match="limit"):
        load_math_dataset(many, limit=0)


def test_detect_schema_rules():
    assert detect_schema(DAPO_ROWS[0]) == "dapo"
    assert detect_schema(MATH500_ROWS[0]) == "math500"
    assert detect_schema(OMNI_ROWS[0]) == "omni_math"
    assert detect_schema({"problem": "p", "answer": "1"}) == "generic"
    assert detect_schema({"question": "p", "answer": "1"}) == "generic"
    assert detect_schema({"question": "p", "answer": "x\n#### 1"}) == "gsm8k"
    assert detect_schema({"text": "p"}) is None
    assert detect_schema(["not", "a", "dict"]) is None
    assert set(SCHEMAS) >= {"dapo", "math500", "aime", "amc", "gsm8k", "minerva",
                            "olympiadbench", "omni_math", "generic"}


def test_loaded_answers_are_scored_by_the_reward(tmp_path):
    pytest.importorskip("math_verify")
    from entropyrl.rewards import score_response

    path = write_jsonl(tmp_path / "olympiad.jsonl", OLYMPIAD_ROWS)
    rows = load_math_dataset(path).rows
    assert score_response("so $a = \\boxed{0.5}$", rows[0]["answer"]) == 1.0
    assert score_response("\\boxed{-2, 2}", rows[1]["answer"]) == 1.0
    assert score_response("\\boxed{2}", rows[1]["answer"]) == 0.0


# --------------------------------------------------------------------------------------------
# Hugging Face ids go to datasets.load_dataset (faked: tests never touch the network)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_datasets(monkeypatch):
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if split is None:
            return {"train": MATH500_ROWS[:1], "test": MATH500_ROWS}
        return list(MATH500_ROWS)

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_id_routes_to_load_dataset(fake_datasets):
    result = load_math_dataset("HuggingFaceH4/MATH-500", split="test")
    assert fake_datasets == [("HuggingFaceH4/MATH-500", None, "test")]
    assert result.schema == "math500"
    assert [r["data_source"] for r in result.rows] == ["MATH-500", "MATH-500"]
    load_math_dataset("HuggingFaceH4/MATH-500:test", config="default")
    assert fake_datasets[-1] == ("HuggingFaceH4/MATH-500", "default", "test")
    # no split named: the 'test' split of the returned dict is chosen
    assert len(load_math_dataset("org/some-set").rows) == 2


def test_hub_failure_is_a_user_error(monkeypatch):
    def load_dataset(name, config=None, split=None):
        raise ConnectionError("offline")

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(UserError, match=r"Could not load the Hugging Face dataset 'org/x'.*offline"):
        load_math_dataset("org/x")


# --------------------------------------------------------------------------------------------
# Prompt templates
# --------------------------------------------------------------------------------------------


def test_templates_keep_latex_braces():
    q = "Let $f(x)=\\frac{1}{x}$ and $S=\\{1,2\\}$. Find $f(2)$."
    paper = format_prompt(q, "paper")
    assert paper == q + "\n" + PAPER_INSTRUCTION
    assert "\\boxed{}" in paper
    plain = format_prompt(q, "plain")
    assert plain.startswith("Question: " + q) and plain.endswith("Answer:") and "\\boxed{}" in plain
    assert format_prompt(q, "raw") == q
    assert format_prompt(q, "Problem: {question}\nSolution:") == f"Problem: {q}\nSolution:"
    with pytest.raises(UserError, match="prompt template"):
        format_prompt(q, "fancy")


class FakeChatTokenizer:
    chat_template = "{% for m in messages %}...{% endfor %}"

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        self.calls.append((messages, tokenize, add_generation_prompt))
        body = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        return body + "<assistant>"


class FakeBaseTokenizer:
    chat_template = None


def test_chat_template_and_fallback(tmp_path):
    tok = FakeChatTokenizer()
    text = render_prompt("What is $1+1$?", "paper", tok, system="Be brief.")
    assert tok.calls == [
        (
            [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "What is $1+1$?\n" + PAPER_INSTRUCTION}],
            False,
            True,
        )
    ]
    assert text.startswith("<system>Be brief.</system><user>What is $1+1$?") and text.endswith("<assistant>")
    # a tokenizer without a chat template falls back to the plain template
    assert render_prompt("What is $1+1$?", "paper", FakeBaseTokenizer()) == format_prompt(
        "What is $1+1$?", "plain"
    )
    assert render_prompt("q", "raw") == "q"
    # the loader uses the same path
    path = write_jsonl(tmp_path / "g.jsonl", GENERIC_ROWS)
    rows = load_math_dataset(path, tokenizer=FakeChatTokenizer()).rows
    assert rows[0]["prompt"].startswith("<user>What is $1+1$?")
    assert rows[0]["question"] == "What is $1+1$?"


@pytest.mark.parametrize("name", ["latin1.jsonl", "latin1.json"])
def test_data_that_is_not_utf8_is_a_clear_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes('{"problem": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_math_dataset(path)


def test_a_corrupt_parquet_file_is_a_clear_error(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "cut.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    with pytest.raises(UserError, match="not a readable parquet file"):
        load_math_dataset(path)
