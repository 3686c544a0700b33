"""Real-model path, offline: tiny random Qwen2 and Llama checkpoints with a locally built
byte-level tokenizer that has a chat template; train 2 steps and evaluate through the CLI on
fixture files in every dataset schema."""

import json

import pytest
import torch
from test_data import FIXTURES, write_jsonl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from entropyrl.cli.main import main
from entropyrl.train.metrics import read_metrics

CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer():
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["What is 1+1? Please reason step by step, and put your final answer within \\boxed{}.",
              "The answer is \\boxed{2}. Let x = 3/4, then 2x = 1.5", "<|user|> <|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|pad|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHAT
    return fast


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def real_arch_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    tok = build_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if request.param == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def schema_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return [str(write_jsonl(root / f"{name}.jsonl", rows)) for name, rows in sorted(FIXTURES.items())]


def test_train_two_steps_on_every_schema(real_arch_model, schema_files, tmp_path):
    out = tmp_path / "run"
    files = "[" + ",".join(schema_files) + "]"
    code = main([
        "train", "--out", str(out), f"model.path={real_arch_model}", "model.device=cpu",
        "data.task=math", f"data.math.train_files={files}", f"data.math.val_files={files}",
        "data.math.chat_template=true", "steps=2", "rollout.n_prompts=4", "rollout.group_size=2",
        "rollout.max_new_tokens=6", "update.mini_batch_size=4", "update.micro_batch_size=2",
        "eval.every=1", "eval.k=2", "eval.max_new_tokens=6", "reward.workers=1",
        "reward.overlong_buffer=2", "progress=false",
    ])
    assert code == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all("val/acc" in r for r in rows)
    assert (out / "checkpoints" / "step_2" / "config.json").exists()


def test_eval_cli_reports_every_source(real_arch_model, schema_files, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["eval", "--model", str(real_arch_model), "--data", *schema_files, "--n", "2",
                 "--max-new-tokens", "6", "--workers", "1", "--chat-template", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert len(res["sources"]) >= len(FIXTURES)
    for r in res["sources"].values():
        assert 0 <= r["greedy_acc"] <= 1 and 0 <= r["avg_at_k"] <= 1 and 0 <= r["pass_at_k"] <= 1
        assert r["k"] == 2 and r["response_len"] > 0 and r["entropy"] > 0
    assert "greedy" in capsys.readouterr().out


def test_eval_paper_preset_samples_aime_and_is_greedy_elsewhere(real_arch_model, schema_files, tmp_path):
    out = tmp_path / "paper.json"
    files = [f for f in schema_files if f.endswith(("aime.jsonl", "math500.jsonl"))]
    assert main(["eval", "--model", str(real_arch_model), "--data", *files, "--preset", "paper",
                 "--max-new-tokens", "4", "--workers", "1", "--limit", "1", "--json", str(out)]) == 0
    sources = json.loads(out.read_text())["sources"]
    aime = [v for k, v in sources.items() if "aime" in k.lower()]
    other = [v for k, v in sources.items() if "aime" not in k.lower()]
    assert aime and all(v["k"] == 32 and v["greedy_acc"] is None and v["temperature"] == 0.6 for v in aime)
    assert other and all(v["k"] == 0 and v["greedy_acc"] is not None for v in other)


def test_eval_bad_data_file_exits_2(real_arch_model, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": ""}\n')
    assert main(["eval", "--model", str(real_arch_model), "--data", str(bad), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl" in err and "row 2" in err and "answer" in err and "Traceback" not in err


def test_eval_keeps_same_stem_files_apart_and_writes_every_sample(real_arch_model, tmp_path):
    rows = '{"problem": "1+1?", "answer": "2"}\n{"problem": "2+3?", "answer": "5"}\n'
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "test.jsonl").write_text(rows)
    out, samples = tmp_path / "eval.json", tmp_path / "samples.jsonl"
    assert main(["eval", "--model", str(real_arch_model), "--data", str(tmp_path / "a" / "test.jsonl"),
                 str(tmp_path / "b" / "test.jsonl"), "--n", "2", "--max-new-tokens", "4",
                 "--workers", "1", "--json", str(out), "--samples", str(samples)]) == 0
    sources = json.loads(out.read_text())["sources"]
    assert set(sources) == {"a/test", "b/test"}  # not merged into one "test"
    assert all(v["n_prompts"] == 2 for v in sources.values())
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    # per source: 2 greedy + 2 prompts x 2 samples
    assert len(lines) == 2 * (2 + 4)
    assert {ln["kind"] for ln in lines} == {"greedy", "sampled"}
    assert set(lines[0]) == {"source", "kind", "prompt", "answer", "response", "score",
                             "solved"}


def test_hub_ids_name_their_configuration(monkeypatch):
    import types

    from entropyrl.data.io import read_hub
    from entropyrl.data.load import default_source_name

    seen = {}

    def load_dataset(name, config, split=None):
        seen.update(name=name, config=config, split=split)
        return [{"question": "q", "answer": "#### 1"}]

    monkeypatch.setitem(__import__("sys").modules, "datasets",
                        types.SimpleNamespace(load_dataset=load_dataset))
    assert read_hub("openai/gsm8k@main:test") == [{"question": "q", "answer": "#### 1"}]
    assert seen == {"name": "openai/gsm8k", "config": "main", "split": "test"}
    assert default_source_name("openai/gsm8k@main:test") == "gsm8k"
