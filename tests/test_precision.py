"""bf16 compute keeps fp32 master weights: small updates are not rounded away."""

from safetensors.torch import load_file

from entropyrl.config import load_config
from entropyrl.rewards.result import full_credit
from entropyrl.train import train


def _changed(model_dir, out, *extra):
    cfg = load_config("testbed/grpo", [
        f"model.path={model_dir}", "model.device=cpu", "steps=1", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "update.mini_batch_size=16",
        "update.micro_batch_size=16", "eval.every=0", "data.testbed.train_size=32", "data.testbed.val_size=4",
        "optim.lr=1e-7", "progress=false", *extra,
    ])
    train(cfg, out)
    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(out / "checkpoints" / "step_1" / "model.safetensors"))
    # Compare in the dtype the run holds its weights in (bf16 when stepped directly).
    return {k: before[k].to(after[k].dtype) != after[k] for k in before}


def _reward_length(monkeypatch):
    import entropyrl.tasks as tasks

    real = tasks.load_tasks

    def load(data, reward, tokenizer=None):
        ts = real(data, reward, tokenizer)
        return tasks.TaskSet(ts.train, ts.val, lambda texts, rows: full_credit([len(t) / 10 for t in texts]))

    monkeypatch.setattr("entropyrl.train.setup.load_tasks", load)


def test_bf16_master_weights_keep_the_fp32_updates(micro_model_dir, tmp_path, monkeypatch):
    _reward_length(monkeypatch)
    fp32 = _changed(micro_model_dir, tmp_path / "fp32", "model.dtype=float32")
    master = _changed(micro_model_dir, tmp_path / "bf16", "model.dtype=bfloat16")
    direct = _changed(micro_model_dir, tmp_path / "bf16_direct", "model.dtype=bfloat16",
                      "model.master_weights=false")
    n_fp32 = sum(int(m.sum()) for m in fp32.values())
    assert n_fp32 > 0.5 * sum(m.numel() for m in fp32.values())

    def kept(run):
        return sum(int((run[k] & fp32[k]).sum()) for k in fp32) / n_fp32

    print(f"kept by bf16 + fp32 master: {kept(master):.4f}, by bf16 weights: {kept(direct):.4f}")
    assert kept(master) >= 0.99
    assert kept(direct) < 0.5  # bf16 weights stepped directly lose most of the update
