import dataclasses
import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from entropyrl import testbed
from entropyrl.testbed.build import BuildConfig, build, make_batch, response_loss
from entropyrl.testbed.noise import NoiseRecipe, noisy_solution
from entropyrl.testbed.tasks import carry_columns, extract_answer, parse_prompt, solve, split_of
from entropyrl.testbed.tokenizer import CHARACTERS

# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_one_token_per_character():
    tok = testbed.build_tokenizer()
    for text in ["4738+2856=14 09 15 07#7594", CHARACTERS, " a  b ", "9*9=81#81"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert tok.decode(ids) == text
    # No special token is added by default (like Qwen2.5): a prompt is exactly its characters.
    assert tok.encode("12+3=") == tok.encode("12+3=", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(tok.encode("1 #")) == ["1", " ", "#"]
    assert tok.decode([*tok.encode("x"), tok.eos_token_id], skip_special_tokens=True) == "x"
    assert tok.encode("~")[0] == tok.unk_token_id


def test_tokenizer_save_load_through_autotokenizer(tmp_path):
    tok = testbed.build_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "97-89=18 00#8"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.decode(loaded.encode(text)) == text
    assert len(loaded) == len(tok)
    assert (loaded.pad_token, loaded.bos_token, loaded.eos_token) == ("<pad>", "<s>", "</s>")
    assert len({loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id}) == 3
    batch = loaded(["1+1=", "12+34="], padding=True)
    assert batch["input_ids"][0][:2] == [loaded.pad_token_id] * 2  # left padding
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1, 1]


# ---------------------------------------------------------------- tasks and checker


def test_make_tasks_deterministic_and_distinct():
    a = testbed.make_tasks("train", 300, seed=3)
    assert a == testbed.make_tasks("train", 300, seed=3)
    assert a != testbed.make_tasks("train", 300, seed=4)
    assert len({r["prompt"] for r in a}) == 300
    assert set(a[0]) >= {"prompt", "answer", "difficulty", "data_source"}
    # A longer draw extends a shorter one (rows are drawn one after the other).
    assert testbed.make_tasks("train", 100, seed=3) == a[:100]


def test_splits_disjoint_and_rows_consistent():
    tok = testbed.build_tokenizer()
    train = testbed.make_tasks("train", 2000, seed=0)
    val = testbed.make_tasks("val", 400, seed=0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    assert all(split_of(r["prompt"]) == "val" for r in val)
    for row in train[:300] + val:
        op, a, b = parse_prompt(row["prompt"])
        assert row["prompt"] == f"{a}{ {'add': '+', 'sub': '-', 'mul': '*'}[op] }{b}="
        assert int(row["answer"]) == {"add": a + b, "sub": a - b, "mul": a * b}[op]
        assert row["data_source"] == f"testbed/{op}"
        assert len(str(a)) == 4
        assert carry_columns(op, a, b) == row["difficulty"]
        assert testbed.score(row["solution"], row["answer"]) == 1.0
        assert len(tok.encode(row["prompt"])) <= 16
        assert len(tok.encode(row["solution"])) + 1 <= 40  # + end token


def test_make_tasks_difficulty_and_errors():
    rows = testbed.make_tasks("val", 50, seed=1, difficulty=2, ops=["mul"])
    assert {r["difficulty"] for r in rows} == {2}
    assert {r["data_source"] for r in rows} == {"testbed/mul"}
    with pytest.raises(ValueError, match="split"):
        testbed.make_tasks("test", 5, seed=0)
    with pytest.raises(ValueError, match="difficulty"):
        testbed.make_tasks("train", 5, seed=0, difficulty=7)
    with pytest.raises(ValueError, match="n:"):  # only ~2300 carry-free products exist
        testbed.make_tasks("train", 3000, seed=0, difficulty=0, ops=["mul"])


def test_solve_hand_worked_examples():
    assert solve("add", 4738, 2856) == "14 09 15 07#7594"
    assert solve("add", 99, 99) == "18 19#198"
    assert solve("sub", 7085, 3325) == "00 06 17 03#3760"
    assert solve("sub", 97, 89) == "18 00#8"
    assert solve("sub", 55, 55) == "00 00#0"
    assert solve("mul", 473, 6) == "18 43 28#2838"
    assert carry_columns("add", 4738, 2856) == 2  # carries into the 3 and the 4
    assert carry_columns("sub", 7085, 3325) == 1
    assert carry_columns("add", 1234, 4321) == 0


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("14 09 15 07#7594", "7594", 1.0),  # correct
        ("14 09 15 07#7595", "7594", 0.0),  # wrong
        ("14 09 15 07#759", "7594", 0.0),  # wrong (truncated number)
        ("14 09 15 07 7594", "7594", 0.0),  # malformed: no marker
        ("", "7594", 0.0),
        ("14 09#", "7594", 0.0),  # marker with nothing after it
        ("#abc", "7594", 0.0),
        ("#7594 and then some", "7594", 1.0),  # trailing text after the number is ignored
        ("#7594#", "7594", 0.0),  # the LAST marker counts, and it has no number
        ("#12#7594", "7594", 1.0),
        ("# 7594", "7594", 1.0),  # spaces after the marker
        ("#07594", "7594", 1.0),  # numeric comparison
        ("#-3", "-3", 1.0),
        ("#3", "-3", 0.0),
    ],
)
def test_score_hand_cases(response, answer, expected):
    assert testbed.score(response, answer) == expected


def test_parse_prompt():
    assert parse_prompt("473*6=") == ("mul", 473, 6)
    assert parse_prompt("7085-3325=") == ("sub", 7085, 3325)
    with pytest.raises(ValueError, match="prompt"):
        parse_prompt("12/3=")


def test_score_rejects_bad_reference_and_extracts():
    with pytest.raises(ValueError, match="answer"):
        testbed.score("#1", "one")
    assert extract_answer("11 02#21 ") == "21"
    assert extract_answer("no marker") is None


# ---------------------------------------------------------------- noisy solutions


def test_noisy_solution_slips_and_determinism():
    clean = NoiseRecipe(0.0, 0.0, 0.0)
    rng = random.Random(0)
    assert noisy_solution("add", 4738, 2856, clean, rng) == solve("add", 4738, 2856)
    # Every carry forgotten: 8+6=14; 3+5(+0)=08; 7+8=15; 4+2(+0)=06 → 6584.
    forget = NoiseRecipe(p_carry=1.0, p_digit=0.0, p_copy=0.0)
    assert noisy_solution("add", 4738, 2856, forget, rng) == "14 08 15 06#6584"
    assert noisy_solution("mul", 473, 6, forget, rng) == "18 42 24#2428"
    texts = [noisy_solution("mul", 9473, 7, NoiseRecipe(), random.Random(5)) for _ in range(2)]
    assert texts[0] == texts[1]
    rng = random.Random(1)
    many = [noisy_solution("add", 4738, 2856, NoiseRecipe(), rng) for _ in range(400)]
    wrong = sum(testbed.score(t, "7594") == 0 for t in many) / len(many)
    assert 0.2 < wrong < 0.8  # mixed quality: neither all right nor all wrong
    with pytest.raises(ValueError, match="p_carry"):
        NoiseRecipe(p_carry=1.5)


def test_borrow_rate_applies_to_subtraction_only():
    # 7085-3325: 5-5=0; 8-2=6; 0-3 borrows (17); 7-3-1=3 → 3760. Borrow forgotten: 7-3=4.
    sloppy = NoiseRecipe(p_carry=0.0, p_digit=0.0, p_copy=0.0, p_borrow=1.0)
    assert noisy_solution("sub", 7085, 3325, sloppy, random.Random(0)) == "00 06 17 04#4760"
    assert noisy_solution("add", 4738, 2856, sloppy, random.Random(0)) == solve("add", 4738, 2856)
    same = NoiseRecipe(p_borrow=None)
    assert same.forget_rate("sub") == same.forget_rate("add") == same.p_carry
    # Unset, it is the carry rate: the same draws as an explicit 0.25.
    rng_a, rng_b = random.Random(3), random.Random(3)
    assert [noisy_solution("sub", 7085, 3325, same, rng_a) for _ in range(50)] == [
        noisy_solution("sub", 7085, 3325, NoiseRecipe(p_borrow=0.25), rng_b) for _ in range(50)]
    with pytest.raises(ValueError, match="p_borrow"):
        NoiseRecipe(p_borrow=-0.1)


def test_comma_forks_are_a_style_the_checker_ignores():
    clean = dict(p_carry=0.0, p_digit=0.0, p_copy=0.0, p_borrow=None)
    every = NoiseRecipe(**clean, p_comma=1.0)
    text = noisy_solution("add", 4738, 2856, every, random.Random(0))
    assert text == "14,09,15,07#7594" and testbed.score(text, "7594") == 1.0
    # A sloppier path: every cell after a comma slips, the first cell never does.
    sloppy = NoiseRecipe(**clean, p_comma=1.0, p_comma_slip=1.0)
    cells = noisy_solution("add", 4738, 2856, sloppy, random.Random(0)).split("#")[0].split(",")
    assert cells[0] == "14" and all(c != r for c, r in zip(cells[1:], ["09", "15", "07"], strict=True))
    assert NoiseRecipe(p_comma_slip=0.5).comma_slip_rate() == 0.5
    assert NoiseRecipe().comma_slip_rate() == NoiseRecipe().p_digit
    # Without forks no separator is drawn: the stream is the one of the default recipe.
    half = NoiseRecipe(p_comma=0.5)
    rng_a, rng_b = random.Random(4), random.Random(4)
    plain = [noisy_solution("sub", 9362, 4978, NoiseRecipe(), rng_a) for _ in range(20)]
    assert all("," not in t for t in plain)
    forked = [noisy_solution("sub", 9362, 4978, half, rng_b) for _ in range(200)]
    share = sum(t.split("#")[0].count(",") for t in forked) / (3 * len(forked))
    assert 0.4 < share < 0.6
    with pytest.raises(ValueError, match="p_comma"):
        NoiseRecipe(p_comma=2.0)
    with pytest.raises(ValueError, match="separators"):
        testbed.tasks.render([(1, 4), (0, 9)], "94", [",", ","])


def test_build_command_rejects_bad_rates(capsys, tmp_path):
    from entropyrl.cli.main import main

    assert main(["testbed", "build", "--out", str(tmp_path / "m"), "--p-comma", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "p_comma" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- model, build, evaluate


def test_configs_are_qwen2_of_the_right_size():
    v = len(testbed.build_tokenizer())
    n_base = sum(p.numel() for p in Qwen2ForCausalLM(testbed.base_config(v)).parameters())
    n_micro = sum(p.numel() for p in Qwen2ForCausalLM(testbed.micro_config(v)).parameters())
    assert 300_000 <= n_base <= 5_000_000
    assert n_micro < 50_000


def test_make_batch_masks_prompt_and_padding():
    tok = testbed.build_tokenizer()
    rows = [{"prompt": "12+34="}, {"prompt": "4738+2856="}]
    batch = make_batch(rows, tok, NoiseRecipe(0, 0, 0), random.Random(0))
    assert tok.decode(batch.input_ids[0][:13]) == "12+34=06 04#46"[:13]
    labels0 = batch.labels[0][batch.labels[0] != -100].tolist()
    assert tok.decode(labels0[:-1]) == "06 04#46" and labels0[-1] == tok.eos_token_id
    assert (batch.labels[0][:6] == -100).all()
    assert (batch.input_ids[0][15:] == tok.pad_token_id).all()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(testbed.micro_config(len(tok)))
    loss = response_loss(model, batch)
    # Reference: per-token cross-entropy averaged over the labelled positions only.
    logits = model(input_ids=batch.input_ids).logits
    ref = []
    for i in range(2):
        for t in range(1, batch.input_ids.shape[1]):
            if batch.labels[i, t] != -100:
                ref.append(-torch.log_softmax(logits[i, t - 1], -1)[batch.labels[i, t]])
    torch.testing.assert_close(loss, torch.stack(ref).mean(), rtol=1e-5, atol=1e-6)


MINI = BuildConfig(steps=3, batch_size=8, pool_size=64, threads=1, warmup_steps=2,
                   eval_prompts=4, eval_samples=2)


def test_mini_build_is_bit_reproducible(tmp_path):
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    info1 = build(tmp_path / "a", MINI, evaluate_model=False)
    info2 = build(tmp_path / "b", MINI, evaluate_model=False)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors").read_bytes()
    assert info1["model_safetensors_sha256"] == info2["model_safetensors_sha256"]
    other = build(tmp_path / "c", dataclasses.replace(MINI, seed=1), evaluate_model=False)
    assert other["model_safetensors_sha256"] != info1["model_safetensors_sha256"]
    # The build leaves the caller's thread count and RNG as they were.
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert model.config.model_type == "qwen2"
    saved = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert saved["recipe"]["seed"] == 0 and saved["recipe"]["steps"] == 3


def test_head_size_32_build_for_vllm(tmp_path):
    build(tmp_path / "m", dataclasses.replace(MINI, hidden=128), evaluate_model=False)
    config = AutoModelForCausalLM.from_pretrained(tmp_path / "m").config
    assert config.hidden_size // config.num_attention_heads == 32
    assert json.loads((tmp_path / "m" / "build_info.json").read_text())["recipe"]["hidden"] == 128


def test_build_config_rejects_bad_values():
    with pytest.raises(ValueError, match="hidden"):
        BuildConfig(hidden=100)
    with pytest.raises(ValueError, match="steps"):
        BuildConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        BuildConfig(lr=-1.0)


def test_evaluate_micro_model_keys_and_determinism(micro_model_dir):
    model, tok = testbed.load_base(micro_model_dir)
    rows = testbed.make_tasks("val", 3, seed=0)
    state = torch.get_rng_state()
    r1 = testbed.evaluate(model, tok, rows, temperature=1.0, n_samples=2, max_new_tokens=6, seed=3)
    r2 = testbed.evaluate(model, tok, rows, temperature=1.0, n_samples=2, max_new_tokens=6, seed=3)
    assert r1 == r2
    assert torch.equal(torch.get_rng_state(), state)
    assert r1["n_prompts"] == 3 and r1["n_samples"] == 2
    assert 0.0 <= r1["accuracy"] <= 1.0
    assert 1.0 <= r1["mean_response_length"] <= 6.0
    # An untrained model is close to uniform over the vocabulary: entropy near log V.
    assert 0.5 * torch.log(torch.tensor(len(tok))) < r1["entropy"] <= torch.log(torch.tensor(len(tok))) + 1e-4
    greedy = testbed.evaluate(model, tok, rows, temperature=0.0, max_new_tokens=6)
    assert greedy["n_samples"] == 1 and greedy["mixed_group_fraction"] == 0.0


# ---------------------------------------------------------------- the shipped checkpoint


def test_shipped_checkpoint_loads_and_is_small():
    assert (testbed.BASE_DIR / "model.safetensors").stat().st_size <= 10 * 1024 * 1024
    model = AutoModelForCausalLM.from_pretrained(testbed.BASE_DIR)
    tok = AutoTokenizer.from_pretrained(testbed.BASE_DIR)
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tok)
    info = testbed.read_build_info()
    assert sum(p.numel() for p in model.parameters()) == info["n_parameters"]


def test_shipped_checkpoint_reaches_documented_accuracy():
    info = testbed.read_build_info()
    recipe, recorded = info["recipe"], info["validation"]["subset"]
    model, tok = testbed.load_base()
    rows = testbed.make_tasks("val", recipe["eval_prompts"], recipe["eval_data_seed"],
                              difficulty=recipe["difficulty"])
    common = {"max_new_tokens": recipe["max_new_tokens"], "seed": recipe["eval_seed"]}
    sampled = testbed.evaluate(model, tok, rows, temperature=1.0,
                               n_samples=recipe["eval_samples"], **common)
    greedy = testbed.evaluate(model, tok, rows, temperature=0.0, n_samples=1, **common)
    # Same rows, same seed: only float differences (thread count) can flip a rare sample.
    assert sampled["accuracy"] == pytest.approx(recorded["sampled"]["accuracy"], abs=0.02)
    assert sampled["entropy"] == pytest.approx(recorded["sampled"]["entropy"], rel=0.05)
    assert sampled["mixed_group_fraction"] == pytest.approx(
        recorded["sampled"]["mixed_group_fraction"], abs=0.04)
    assert greedy["accuracy"] == pytest.approx(recorded["greedy"]["accuracy"], abs=0.02)
    assert 0.2 <= sampled["accuracy"] <= 0.6  # a partially competent base model


def test_evaluation_entropy_matches_a_plain_forward_pass(micro_model_dir):
    from entropyrl.testbed.evaluate import sample_responses

    model, tok = testbed.load_base(micro_model_dir)
    prompts = ["12+34=", "4738+2856=", "9*7="]  # different lengths: left padding
    temperature = 0.7
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        roll, entropy = sample_responses(model, tok, prompts, 2, temperature, 5)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].repeat_interleave(2, 0)
    att = enc["attention_mask"].repeat_interleave(2, 0)
    resp, mask = roll.response_ids, roll.response_mask
    assert roll.texts == [tok.decode(r[m & (r != tok.eos_token_id)], skip_special_tokens=True)
                          for r, m in zip(resp, mask, strict=True)]
    assert torch.equal(roll.truncated, ~(resp == tok.eos_token_id).any(1))
    full = torch.cat([ids, resp], 1)
    full_att = torch.cat([att, mask.long()], 1)
    pos = (full_att.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_att, position_ids=pos).logits
    logits = logits[:, ids.shape[1] - 1 : -1] / temperature
    p = torch.softmax(logits, -1)
    ref = -(p * torch.log(p)).sum(-1)
    torch.testing.assert_close(entropy[mask], ref[mask], rtol=1e-4, atol=1e-5)
    assert mask.sum(1).min() >= 1
