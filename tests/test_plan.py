import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from entropyrl import plan
from entropyrl.cli.main import main
from entropyrl.config import load_config
from entropyrl.errors import UserError
from entropyrl.models import resolve_model_path
from entropyrl.plan_fix import refusal

GIB = 2**30
QWEN7B = plan.KNOWN_SHAPES["Qwen/Qwen2.5-7B"]
QWEN32B = plan.KNOWN_SHAPES["Qwen/Qwen2.5-32B"]
# A tiny shape whose numbers are easy to follow by hand.
TINY = plan.ModelShape(layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16,
                       vocab=10, tied=False, qkv_bias=True, dtype="bfloat16")


def _cfg(*overrides):
    base = ["rollout.n_prompts=4", "rollout.group_size=2", "update.mini_batch_size=8",
            "update.micro_batch_size=2", "rollout.max_new_tokens=15", "eval.every=0"]
    return load_config(None, [*base, *overrides])


# ----------------------------------------------------------------------------- parameters


def test_param_count_equals_the_shipped_testbed_model():
    from entropyrl.testbed import load_base

    shape, source = plan.load_shape(resolve_model_path("testbed"))
    model, _ = load_base()
    assert source.endswith("config.json")
    assert plan.param_count(shape) == sum(p.numel() for p in model.parameters()) == 338_400
    assert shape.tied and shape.qkv_bias and shape.dtype == "float32"


@pytest.mark.parametrize(("model_id", "published"), [
    ("Qwen/Qwen2.5-0.5B", 0.494e9), ("Qwen/Qwen2.5-1.5B", 1.54e9), ("Qwen/Qwen2.5-3B", 3.09e9),
    ("Qwen/Qwen2.5-7B", 7.62e9), ("Qwen/Qwen2.5-Math-7B", 7.62e9),
    ("Qwen/Qwen2.5-14B", 14.77e9), ("Qwen/Qwen2.5-32B", 32.76e9), ("Qwen/Qwen2.5-72B", 72.71e9),
])
def test_param_count_matches_published_totals(model_id, published):
    assert plan.param_count(plan.KNOWN_SHAPES[model_id]) == pytest.approx(published, rel=0.01)


def test_param_count_exact_for_7b_and_32b():
    # Hand sum: embeddings + LM head 2·V·h, per layer q/k/v/o with q/k/v biases, MLP 3·h·i, norms.
    assert plan.param_count(QWEN7B) == 7_615_616_512
    assert plan.param_count(QWEN32B) == 32_763_876_352


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "llama", "mistral"])
def test_param_count_equals_transformers_on_the_meta_device(kind):
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = {"head_dim": 12} if kind == "qwen3" else {}
    config = AutoConfig.for_model(kind, hidden_size=64, intermediate_size=160,
                                  num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=300,
                                  tie_word_embeddings=kind == "qwen3", **extra)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shape = plan.shape_from_config(config.to_dict())
    assert plan.param_count(shape) == sum(p.numel() for p in model.parameters())


def test_shape_from_config_reads_the_published_7b_config():
    config = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
              "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
              "vocab_size": 152064, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    assert plan.shape_from_config(config) == QWEN7B


def test_shape_from_config_refuses_other_architectures():
    with pytest.raises(UserError, match="model_type 'mixtral'"):
        plan.shape_from_config({"model_type": "mixtral"})
    with pytest.raises(UserError, match="hidden_size"):
        plan.shape_from_config({"model_type": "llama"})


def test_load_shape_offline_failure_is_a_user_error(monkeypatch):
    from transformers import AutoConfig

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(AutoConfig, "from_pretrained", offline)
    with pytest.raises(UserError, match=r"could not get the architecture.*local directory"):
        plan.load_shape("someone/unknown-7b")


# ----------------------------------------------------------------------------- the plan


def test_kv_cache_of_one_chunk_by_hand():
    # prompt 10 + max_new 15 = 25 tokens a row; 100 // 25 = 4 rows;
    # per token 2 (K, V) x 2 layers x 1 kv head x 4 head_dim x 2 bytes (bf16) = 32 bytes.
    bf16 = ("model.dtype=bfloat16", "model.master_weights=false")
    p = plan.memory_plan(TINY, _cfg("rollout.max_batch_tokens=100", *bf16), 1, False, 10)
    assert (p.gen_rows, p.gen_seq) == (4, 25)
    assert plan.kv_bytes_per_token(TINY, 2) == 32
    assert p.kv_cache == 4 * 25 * 32
    # a budget below one row still generates one row
    one_row = _cfg("rollout.max_batch_tokens=7", *bf16)
    assert plan.memory_plan(TINY, one_row, 1, False, 10).kv_cache == 25 * 32
    # float32 doubles it
    assert plan.memory_plan(TINY, _cfg("rollout.max_batch_tokens=100"), 1, False, 10).kv_cache == 6400


def test_kv_cache_uses_the_longer_of_rollout_and_eval_lengths():
    cfg = _cfg("rollout.max_batch_tokens=1000", "eval.every=5", "eval.max_new_tokens=40")
    p = plan.memory_plan(TINY, cfg, 1, False, 10)
    assert (p.gen_rows, p.gen_seq) == (20, 50)


def test_weights_grads_and_optimizer_bytes_by_dtype():
    n = plan.param_count(TINY)
    master = plan.memory_plan(TINY, _cfg("model.dtype=bfloat16"), 1, False, 10)
    assert (master.weights, master.grads, master.optimizer) == (4 * n, 4 * n, 8 * n)
    assert master.autocast_weights == 2 * n  # bf16 copies of the fp32 master weights
    plain = plan.memory_plan(TINY, _cfg("model.dtype=bfloat16", "model.master_weights=false"),
                             1, False, 10)
    assert (plain.weights, plain.optimizer, plain.autocast_weights) == (2 * n, 4 * n, 0)
    fp32 = plan.memory_plan(TINY, _cfg("model.dtype=float32"), 1, False, 10)
    assert (fp32.weights, fp32.autocast_weights, fp32.reference) == (4 * n, 0, 0)
    auto = plan.memory_plan(TINY, _cfg("model.dtype=auto"), 1, False, 10)  # checkpoint: bf16
    assert auto.compute_dtype == "bfloat16" and auto.state_dtype == "float32"


def test_fsdp_divides_the_sharded_parts_by_the_world_size():
    cfg = _cfg("model.dtype=bfloat16", "loss.ref_kl_coef=0.01")
    one = plan.memory_plan(TINY, cfg, 1, False, 10)
    ddp = plan.memory_plan(TINY, cfg, 4, False, 10)
    fsdp = plan.memory_plan(TINY, cfg, 4, True, 10)
    for part in ("weights", "grads", "optimizer", "reference"):
        assert getattr(fsdp, part) == math.ceil(getattr(one, part) / 4), part
        assert getattr(ddp, part) == getattr(one, part), part
    n = plan.param_count(TINY)
    assert one.reference == 2 * n  # frozen, in the compute dtype
    # DDP keeps a flat copy of the gradients; FSDP gathers a full bf16 copy for generate,
    # refreshed one full fp32 parameter at a time (the largest: the embedding).
    assert (one.ddp_buckets, ddp.ddp_buckets, fsdp.ddp_buckets) == (0, ddp.grads, 0)
    assert (ddp.generate_weights, fsdp.generate_weights) == (0, 2 * n)
    assert (ddp.sync_state, fsdp.sync_state) == (0, 4 * TINY.vocab * TINY.hidden)
    assert (ddp.autocast_weights, fsdp.autocast_weights) == (2 * n, 0)
    per_unit = plan.root_param_count(TINY) + 2 * plan.layer_param_count(TINY)
    assert fsdp.fsdp_units == 2 * 2 * per_unit and ddp.fsdp_units == 0
    # activations are per process, not sharded
    assert fsdp.activations == one.activations == ddp.activations
    # unsharded, generate runs on the fp32 module itself: fp32 KV cache; FSDP's copy is bf16
    assert (one.engine_dtype, fsdp.engine_dtype) == ("float32", "bfloat16")
    assert one.kv_cache == 2 * fsdp.kv_cache


def test_wrapped_models_score_through_full_logits():
    cfg = _cfg("model.dtype=bfloat16")
    tokens = 2 * 25
    one = plan.memory_plan(TINY, cfg, 1, False, 10)
    assert not one.full_logits and one.logits == min(tokens, 4096) * TINY.vocab * 4
    for world, sharded in ((4, False), (4, True), (1, True)):
        p = plan.memory_plan(TINY, cfg, world, sharded, 10)
        assert p.full_logits and p.logits == 2 * tokens * TINY.vocab * 2


def test_activations_by_hand_with_and_without_checkpointing():
    c, h, i, L = 2, TINY.hidden, TINY.intermediate, TINY.layers
    layer = c * (8 * h + 4 * i) + 8 * h
    assert plan.layer_activation_bytes(TINY, c) == layer
    tokens = 2 * (10 + 15)  # micro_batch_size x (prompt + max_new_tokens)
    head = 4 * h + 2 * c * h
    full = plan.memory_plan(TINY, _cfg("model.dtype=bfloat16"), 1, False, 10)
    ckpt = plan.memory_plan(TINY, _cfg("model.dtype=bfloat16", "model.gradient_checkpointing=true"),
                            1, False, 10)
    assert full.activations == tokens * (L * layer + head)
    assert ckpt.activations == tokens * (L * c * h + layer + head)


def test_phases_hold_their_own_parts_and_the_total_has_the_margin():
    def plan_of(*overrides):
        return plan.memory_plan(QWEN7B, load_config("paper/qwen2.5-7b-grpo", overrides), 8,
                                True, 512)

    base, micro, kv = plan_of(), plan_of("update.micro_batch_size=1"), plan_of(
        "rollout.max_batch_tokens=8704")
    assert micro.phase("rollout") == base.phase("rollout")
    assert micro.phase("update") < base.phase("update")
    assert kv.phase("update") == base.phase("update")
    assert kv.phase("rollout") < base.phase("rollout")
    assert kv.phase("sync") == micro.phase("sync") == base.phase("sync")
    state = base.weights + base.grads + base.optimizer
    assert base.phase("rollout") == (state + base.generate_weights + base.kv_cache
                                     + base.generate_work)
    assert base.phase("sync") == state + base.generate_weights + base.sync_state
    assert base.phase("update") == state + base.fsdp_units + base.activations + base.logits
    assert base.peak_phase == "update"
    assert base.total == math.ceil(base.phase("update") * 1.1) + 2 * GIB


def test_format_plan_says_estimate_and_verdict():
    p = plan.memory_plan(QWEN7B, load_config("paper/qwen2.5-7b-kl-cov"), 8, True, 512)
    text = plan.format_plan(p, 80 * GIB)
    assert "estimate" in text and "fits" in text and "full weights for generate" in text
    assert "KV cache (7 rows x 8704 tokens, bf16)" in text
    assert "DOES NOT FIT" in plan.format_plan(p, 20 * GIB)


@pytest.mark.parametrize(("text", "nbytes"), [
    ("80GiB", 80 * GIB), ("80GB", 80 * 10**9), ("141 GiB", 141 * GIB), ("80", 80 * GIB),
    ("0.5 tib", 2**39), ("512MiB", 2**29),
])
def test_parse_memory(text, nbytes):
    assert plan.parse_memory(text) == nbytes


@pytest.mark.parametrize("text", ["80x", "GiB", "-1GiB", "0", ""])
def test_parse_memory_rejects(text):
    with pytest.raises(UserError, match="--device-memory"):
        plan.parse_memory(text)


def test_refusal_names_the_fix():
    cfg = load_config("paper/qwen2.5-7b-kl-cov")
    no_ckpt = load_config("paper/qwen2.5-7b-kl-cov", ["model.gradient_checkpointing=false"])
    assert "turn on model.gradient_checkpointing" in refusal(QWEN7B, no_ckpt, 8, True, 512,
                                                             80 * GIB)
    assert "Fix: use FSDP (accelerate launch --config_file configs/accelerate/fsdp2.yaml" in (
        refusal(QWEN7B, cfg, 8, False, 512, 80 * GIB))
    assert "Fix: raise the number of processes to 4 with FSDP." in refusal(
        QWEN7B, cfg, 1, False, 512, 80 * GIB)
    # generation holds the 61 GiB bf16 copy whatever the world: 32 x 80 GiB needs 128
    # processes, smaller rollout chunks and micro-batches
    message = refusal(QWEN32B, load_config("paper/qwen2.5-32b-kl-cov"), 32, True, 512,
                      80 * GIB)
    assert "(rollout phase: full weights for generate (bf16, gathered) 61.03 GiB" in message
    assert "raise the number of processes to 128" in message
    copy_bound = refusal(QWEN32B, load_config("paper/qwen2.5-32b-kl-cov"), 32, True, 512,
                         60 * GIB)
    assert "holds a full copy of the weights" in copy_bound
    assert "use devices with more memory" in copy_bound
    small = plan.KNOWN_SHAPES["Qwen/Qwen2.5-1.5B"]
    assert "Fix: lower update.micro_batch_size to 2; or raise the number of processes to 2" in (
        refusal(small, cfg, 1, False, 512, 40 * GIB))
    fixed = load_config("paper/qwen2.5-7b-kl-cov", ["update.micro_batch_size=2"])
    assert plan.memory_plan(small, fixed, 1, False, 512).total <= 40 * GIB
    assert plan.memory_plan(small, cfg, 1, False, 512).total > 40 * GIB
    kv = load_config("paper/qwen2.5-7b-kl-cov", ["rollout.max_batch_tokens=1000000"])
    assert plan.memory_plan(QWEN7B, kv, 8, True, 512).total > 80 * GIB
    message = refusal(QWEN7B, kv, 8, True, 512, 80 * GIB)
    tokens = int(re.search(r"Fix: lower rollout.max_batch_tokens to (\d+) \(", message)[1])
    assert tokens % 8704 == 0  # whole rows of prompt + max_new_tokens
    for value, fits in ((tokens, True), (tokens + 8704, False)):  # the largest that fits
        fixed = load_config("paper/qwen2.5-7b-kl-cov", [f"rollout.max_batch_tokens={value}"])
        assert (plan.memory_plan(QWEN7B, fixed, 8, True, 512).total <= 80 * GIB) == fits


def test_check_world_repeats_the_trainers_rules():
    cfg = load_config("paper/qwen2.5-7b-grpo")
    plan.check_world(cfg, 64)
    with pytest.raises(UserError, match="n_prompts"):
        plan.check_world(cfg, 3)
    with pytest.raises(UserError, match="mini_batch_size"):
        plan.check_world(cfg, 128)  # 256 % (128 x 4)


# ----------------------------------------------------------------------------- the CLI


def _no_loading(monkeypatch):
    import transformers

    import entropyrl.tasks

    def refuse(*args, **kwargs):
        raise AssertionError("the dry-run must not load weights, tokenizers or data")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer,
                transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", refuse)
    monkeypatch.setattr(entropyrl.tasks, "load_tasks", refuse)


def test_dry_run_on_a_paper_preset_plans_without_loading(monkeypatch, capsys):
    _no_loading(monkeypatch)
    assert main(["train", "--config", "paper/qwen2.5-7b-kl-cov", "--dry-run", "--world-size",
                 "8", "--device-memory", "80GiB", "--sharding", "fsdp"]) == 0
    out = capsys.readouterr().out
    assert "name: KL-Cov Qwen2.5-7B" in out and "max_batch_tokens: 65536" in out
    assert "# world size: 8 process(es), sharding: fsdp" in out
    assert "7.62 B parameters, FSDP over 8" in out and "fits" in out


def test_dry_run_reads_world_size_and_sharding_from_the_launcher(monkeypatch, capsys):
    _no_loading(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert main(["train", "-c", "paper/qwen2.5-7b-grpo", "--dry-run", "--device-memory",
                 "80"]) == 0
    assert "FSDP over 8" in capsys.readouterr().out


def test_dry_run_on_the_testbed_plans_for_this_machine(monkeypatch, capsys):
    _no_loading(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", "testbed/grpo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0.34 M parameters" in out and "host memory" in out and "fits" in out


def test_dry_run_needs_device_memory_for_cuda_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--config", "testbed/grpo", "--dry-run", "model.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device-memory" in err and "Traceback" not in err


def test_dry_run_bad_world_and_planning_flags_without_dry_run(capsys):
    assert main(["train", "-c", "paper/qwen2.5-7b-grpo", "--dry-run", "--world-size", "3",
                 "--device-memory", "80GiB"]) == 2
    assert "divisible by the number of processes (3)" in capsys.readouterr().err
    assert main(["train", "-c", "testbed/grpo", "--world-size", "8", "--out", "x"]) == 2
    assert "--world-size only applies with --dry-run" in capsys.readouterr().err


def test_impossible_plan_exits_2_with_the_fix_and_no_traceback():
    script = Path(sys.executable).with_name("entropyrl")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "entropyrl.cli.main"]
    proc = subprocess.run(
        [*command, "train", "--config", "paper/qwen2.5-7b-kl-cov", "--dry-run",
         "--world-size", "1", "--device-memory", "80GiB", "--sharding", "none"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 2
    assert "DOES NOT FIT" in proc.stdout
    assert "does not fit in memory" in proc.stderr and "Fix:" in proc.stderr
    assert "raise the number of processes" in proc.stderr and "with FSDP" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_dry_run_refuses_exactly_when_the_total_exceeds_the_device(monkeypatch, capsys):
    _no_loading(monkeypatch)
    total = plan.memory_plan(QWEN7B, load_config("paper/qwen2.5-7b-grpo"), 8, True, 512).total
    args = ["train", "-c", "paper/qwen2.5-7b-grpo", "--dry-run", "--world-size", "8",
            "--sharding", "fsdp", "--device-memory"]
    assert main([*args, f"{total}B"]) == 0
    assert main([*args, f"{total - 1}B"]) == 2
    assert "raise the number of processes to 16." in capsys.readouterr().err


def _vllm(*overrides):
    return load_config("paper/qwen2.5-7b-kl-cov", ["rollout.engine=vllm", *overrides])


def test_vllm_reserves_its_share_of_the_device_in_place_of_the_hf_engine():
    device = 80 * GIB
    p = plan.memory_plan(QWEN7B, _vllm("rollout.gpu_memory_utilization=0.4"), 8, True, 512,
                         device)
    assert p.generate_weights == p.kv_cache == p.generate_work == 0
    assert p.vllm_pool == p.vllm_update == math.floor(0.4 * device)
    state = p.weights + p.grads + p.optimizer + p.reference
    assert p.phase("rollout") == state + p.vllm_pool
    assert p.phase("sync") == state + p.vllm_pool + p.sync_state
    assert p.phase("update") == state + p.fsdp_units + p.activations + p.logits + p.vllm_pool
    # The engine's minimum: its bf16 weights and one prompt + response of KV cache.
    seq = 512 + 8192
    assert p.vllm_need == plan.param_count(QWEN7B) * 2 + seq * plan.kv_bytes_per_token(QWEN7B, 2)
    asleep = plan.memory_plan(QWEN7B, _vllm("rollout.gpu_memory_utilization=0.4",
                                            "rollout.vllm_sleep=true"), 8, True, 512, device)
    assert asleep.vllm_update == 0 and asleep.phase("rollout") == p.phase("rollout")
    text = plan.format_plan(p, device)
    assert "vLLM's reservation (0.4 of the device)" in text and ": held" in text
    with pytest.raises(ValueError, match="pass device_bytes"):
        plan.memory_plan(QWEN7B, _vllm(), 8, True, 512)


def test_vllm_refusals_name_the_utilization_or_sleep_that_fits():
    device = 80 * GIB
    small = _vllm("rollout.gpu_memory_utilization=0.1")  # 8 GiB < 15 GiB of bf16 weights
    p = plan.memory_plan(QWEN7B, small, 8, True, 512, device)
    assert p.total <= device and not p.engine_fits
    assert "NOT HELD" in plan.format_plan(p, device)
    message = refusal(QWEN7B, small, 8, True, 512, device)
    assert message.startswith("vLLM cannot start: rollout.gpu_memory_utilization=0.1 reserves")
    u = float(re.search(r"Fix: set rollout\.gpu_memory_utilization to ([0-9.]+)", message)[1])
    fixed = plan.memory_plan(QWEN7B, _vllm(f"rollout.gpu_memory_utilization={u}"), 8, True,
                             512, device)
    assert fixed.engine_fits and fixed.total <= device
    more = plan.memory_plan(QWEN7B, _vllm(f"rollout.gpu_memory_utilization={u + 0.01}"), 8,
                            True, 512, device)
    assert more.total > device  # the largest value that fits
    # Or sleep mode, which frees the share during the update, with the largest share then.
    assert message.endswith("; or turn on rollout.vllm_sleep and set "
                            "rollout.gpu_memory_utilization to 0.68."), message
    # A pool that crowds out the update: a smaller share, or sleep mode, which gives the
    # share back during the update.
    big = _vllm("rollout.gpu_memory_utilization=0.45")
    assert plan.memory_plan(QWEN7B, big, 8, True, 512, device).total > device
    message = refusal(QWEN7B, big, 8, True, 512, device)
    assert f"Fix: set rollout.gpu_memory_utilization to {u:g}; or turn on rollout.vllm_sleep." \
        in message, message
    asleep = _vllm("rollout.gpu_memory_utilization=0.45", "rollout.vllm_sleep=true")
    assert plan.memory_plan(QWEN7B, asleep, 8, True, 512, device).total <= device


def test_dry_run_plans_the_vllm_engine(monkeypatch, capsys):
    _no_loading(monkeypatch)
    args = ["train", "-c", "paper/qwen2.5-7b-grpo", "--dry-run", "--world-size", "8",
            "--sharding", "fsdp", "--device-memory", "80GiB", "rollout.engine=vllm"]
    assert main([*args, "rollout.gpu_memory_utilization=0.2"]) == 0
    assert "vLLM's reservation (0.2 of the device)" in capsys.readouterr().out
    assert main([*args, "rollout.gpu_memory_utilization=0.05"]) == 2
    assert "vLLM cannot start" in capsys.readouterr().err
