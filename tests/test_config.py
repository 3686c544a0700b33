import pytest

from entropyrl.config import TrainConfig, describe_fields, load_config, preset_names
from entropyrl.errors import UserError


def test_every_preset_loads():
    names = preset_names()
    assert {"testbed/grpo", "testbed/clip_higher", "testbed/clip_cov", "testbed/kl_cov"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, TrainConfig)


def test_overrides_reach_nested_fields():
    cfg = load_config("testbed/kl_cov", ["optim.lr=5e-7", "loss.kl_cov.ratio=2e-4", "steps=3"])
    assert cfg.optim.lr == 5e-7
    assert cfg.loss.kl_cov.ratio == 2e-4
    assert cfg.loss.name == "kl_cov"
    assert cfg.steps == 3


def test_defaults_are_not_shared_between_configs():
    a, b = load_config(None), load_config(None)
    a.sinks.append("tensorboard")
    assert b.sinks == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.name=grpo", r"loss\.name: expected one of \['ppo', 'pg', 'clip_cov', 'kl_cov'\]"),
        ("loss.aggregation=sum", r"loss\.aggregation: expected one of"),
        ("loss.kl_cov.ratio=0.2", None),  # a valid fraction
        ("loss.kl_cov.ratio=20", r"loss\.kl_cov\.ratio: expected a fraction in \(0, 1\]"),
        ("loss.clip_cov.ratio=0", r"loss\.clip_cov\.ratio: expected a fraction"),
        ("optim.lr=fast", r"optim\.lr: expected a number, got 'fast'"),
        ("optim.lr=-1", r"optim\.lr: expected a finite number > 0"),
        ("optim.lr=.inf", r"optim\.lr: expected a finite number > 0"),
        ("optim.lr=.nan", r"optim\.lr: expected a finite number > 0"),
        ("optim.lr=3", r"optim\.lr: expected a learning rate <= 1"),
        ("optim.beta2=5", r"optim\.beta2: expected a value in \[0, 1\)"),
        ("optim.beta1=-0.1", r"optim\.beta1: expected a value in \[0, 1\)"),
        ("optim.eps=0", r"optim\.eps: expected a finite number > 0"),
        ("optim.weight_decay=-1", r"optim\.weight_decay: expected a finite number >= 0"),
        ("optim.grad_clip=-1", r"optim\.grad_clip: expected a finite number >= 0"),
        ("optim.warmup_steps=-5", r"optim\.warmup_steps: expected a finite number >= 0"),
        ("checkpoint_every=-1", r"checkpoint_every: expected a finite number >= 0"),
        ("eval.every=-1", r"eval\.every: expected a finite number >= 0"),
        ("steps=[", r"override 'steps=\[': the value '\[' is not valid YAML"),
        ("optim.lr={a", r"override 'optim.lr=\{a': the value"),
        ("steps=2.5", r"steps: expected an integer"),
        ("update.shuffle=maybe", r"update\.shuffle: expected true or false"),
        ("update.mini_batch_size=7", r"update\.mini_batch_size: expected a divisor"),
        ("algorithm.advantage=ppo", r"algorithm\.advantage: expected one of"),
        ("rollout.top_p=1.5", r"rollout\.top_p"),
        ("optim.learning_rate=1", r"unknown config field optim\.learning_rate.*optim\.lr"),
        ("sinks=[nope]", r"sinks: expected items from"),
        ("lr", r"expected key=value"),
    ],
)
def test_invalid_values_name_the_field_and_the_allowed_values(override, message):
    if message is None:
        load_config("testbed/grpo", [override])
        return
    with pytest.raises(UserError, match=message):
        load_config("testbed/grpo", [override])


def test_unknown_preset_lists_the_shipped_ones():
    with pytest.raises(UserError, match="testbed/grpo"):
        load_config("testbed/nope")


def test_every_field_has_help_text():
    rows = describe_fields()
    assert len(rows) > 30
    missing = [name for name, _, text in rows if not text]
    assert missing == []


def test_paper_presets_carry_the_papers_hyperparameters():
    for size, lr, k in (("7b", 5e-7, 2e-3), ("32b", 1e-6, 2e-4)):
        cfg = load_config(f"paper/qwen2.5-{size}-kl-cov")
        assert cfg.loss.name == "kl_cov" and cfg.loss.kl_cov.ratio == k and cfg.loss.kl_cov.beta == 1.0
        assert cfg.optim.lr == lr and cfg.optim.grad_clip == 1.0
        assert (cfg.rollout.n_prompts, cfg.rollout.group_size, cfg.rollout.temperature) == (256, 8, 1.0)
        batch = cfg.rollout.n_prompts * cfg.rollout.group_size
        assert batch // cfg.update.mini_batch_size == 8  # 8 policy updates per rollout step
        assert cfg.rollout.dynamic_sampling and cfg.rollout.max_new_tokens == 8192
        assert cfg.loss.aggregation == "token-mean" and cfg.loss.entropy_coef == 0 == cfg.loss.ref_kl_coef
        cc = load_config(f"paper/qwen2.5-{size}-clip-cov").loss.clip_cov
        assert (cc.ratio, cc.cov_low, cc.cov_high) == (2e-4, 1.0, 5.0)
        assert load_config(f"paper/qwen2.5-{size}-clip-higher").loss.clip.eps_high == 0.28


def test_testbed_task_mix_reaches_the_task_set():
    from entropyrl.tasks import load_tasks
    from entropyrl.testbed.tasks import carry_columns, parse_prompt

    cfg = load_config("testbed/grpo", ["data.testbed.ops=[add]",
                                       "data.testbed.difficulty=[0, 3]",
                                       "data.testbed.train_size=40",
                                       "data.testbed.val_size=8"])
    tasks = load_tasks(cfg.data, cfg.reward)
    assert len(tasks.train) == 40 and len(tasks.val) == 8
    for row in [*tasks.train, *tasks.val]:
        op, a, b = parse_prompt(row["prompt"])
        assert op == "add" and carry_columns(op, a, b) in (0, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.testbed.ops=[div]",
         r"data\.testbed\.ops\[0\]: expected one of \['add', 'sub', 'mul'\]"),
        ("data.testbed.difficulty=[4]",
         r"data\.testbed\.difficulty: expected levels in \[0, 1, 2, 3\]"),
    ],
)
def test_task_checks_name_the_field_and_the_allowed_values(override, message):
    from entropyrl.tasks import check_data

    cfg = load_config("testbed/grpo", [override])  # the config knows no task's choices
    with pytest.raises(UserError, match=message):
        check_data(cfg.data)


def test_config_does_not_import_the_testbed():
    import subprocess
    import sys

    code = ("import sys, entropyrl.config; "
            "print(sorted(m for m in sys.modules if m.startswith('entropyrl.testbed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_config_file_that_is_not_text_is_a_clear_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8 text"):
        load_config(str(path))
