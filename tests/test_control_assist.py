"""The assist: an entropy coefficient that takes over where the main actuator runs out."""

import itertools
import math
from dataclasses import replace

import pytest
import torch

from entropyrl import control
from entropyrl.config import load_config
from entropyrl.control import AssistGains, Gains, assist_step, start, step
from entropyrl.errors import UserError
from entropyrl.losses import LossConfig, compute_objective

GAINS = AssistGains(gain=0.02, limit=0.05)


def test_the_assist_starts_only_at_the_bound_the_error_pushes_to():
    # Entropy too low (e > 0): nothing until the actuator sits at its raising bound.
    assert assist_step(0.0, 0.5, previous=0.0, pinned=0.0, gains=GAINS) == 0.0
    assert assist_step(0.0, 0.5, previous=0.0, pinned=-1.0, gains=GAINS) == 0.0
    assert assist_step(0.0, 0.5, previous=0.0, pinned=1.0, gains=GAINS) == pytest.approx(0.01)
    # Entropy too high (e < 0): a penalty, only from the lowering bound.
    assert assist_step(0.0, -0.5, previous=0.0, pinned=1.0, gains=GAINS) == 0.0
    assert assist_step(0.0, -0.5, previous=0.0, pinned=-1.0, gains=GAINS) == pytest.approx(
        -0.01)


def test_the_assist_does_not_start_while_the_error_closes_on_its_own():
    # Pinned at the lowering bound, but the entropy falls towards the target fast enough to
    # close the error within HORIZON steps.
    assert assist_step(0.0, -0.5, previous=-0.8, pinned=-1.0, gains=GAINS) == 0.0
    assert assist_step(0.0, -0.5, previous=-0.55, pinned=-1.0, gains=GAINS) == 0.0
    # It creeps (would take more than 10 steps), sticks or drifts away: the assist starts.
    assert assist_step(0.0, -0.5, previous=-0.54, pinned=-1.0, gains=GAINS) == pytest.approx(
        -0.01)
    assert assist_step(0.0, -0.5, previous=-0.5, pinned=-1.0, gains=GAINS) == pytest.approx(
        -0.01)
    assert assist_step(0.0, 0.6, previous=0.5, pinned=1.0, gains=GAINS) == pytest.approx(0.012)
    # Once started it grows while the error does not close in time, and holds while it does.
    assert assist_step(-0.01, -0.49, previous=-0.5, pinned=-1.0, gains=GAINS) == pytest.approx(
        -0.0198)
    assert assist_step(-0.01, -0.4, previous=-0.5, pinned=-1.0, gains=GAINS) == -0.01


def test_the_assist_grows_within_its_limit_holds_while_closing_and_halves_on_the_turn():
    alpha = 0.0
    for _ in range(10):  # a persistent error past the bound: it grows to the limit
        alpha = assist_step(alpha, 0.5, previous=0.5, pinned=1.0, gains=GAINS)
    assert alpha == GAINS.limit
    # Once on it keeps growing whatever the main actuator does ...
    assert assist_step(0.03, 0.5, previous=0.5, pinned=0.0, gains=GAINS) == pytest.approx(0.04)
    # ... unless the error closes fast enough on its own: then it holds.
    assert assist_step(0.03, 0.3, previous=0.5, pinned=1.0, gains=GAINS) == 0.03
    # When the error turns it halves each step, to zero once below g/10; no bonus turns into
    # a penalty.
    alpha = GAINS.limit
    halves = []
    while alpha:
        alpha = assist_step(alpha, -5.0, previous=0.5, pinned=-1.0, gains=GAINS)
        halves.append(alpha)
    assert halves == [0.025, 0.0125, 0.00625, 0.003125, 0.0]
    assert assist_step(0.0, -5.0, previous=-5.0, pinned=0.0, gains=GAINS) == 0.0
    # From zero, a penalty needs the lowering bound; it grows down to −limit.
    alpha = assist_step(0.0, -0.5, previous=-0.5, pinned=-1.0, gains=GAINS)
    assert alpha == pytest.approx(-0.01)
    for _ in range(10):
        alpha = assist_step(alpha, -0.5, previous=-0.5, pinned=0.0, gains=GAINS)
    assert alpha == -GAINS.limit


def test_the_main_controller_reports_when_its_bound_pins_it():
    gains = Gains(kind="pi", kp=1.0, ki=0.3, u_min=1e-3, u_max=0.1)
    state, _ = step(start(1e-2, gains), 0.075, 0.01, gains)  # far above: pushes u below 1e-3
    assert state.value == 1e-3 and state.pinned == -1.0 and state.integral == 0.0
    state, _ = step(start(0.09, gains), 0.075, 0.5, gains)  # below: pushes u above 0.1
    assert state.value == 0.1 and state.pinned == 1.0
    state, _ = step(start(1e-2, gains), 0.075, 0.08, gains)  # within reach
    assert state.pinned == 0.0
    # eps_low raises the entropy as it shrinks: pinned still names the entropy's direction.
    down = Gains(kind="pi", direction=control.DIRECTION["eps_low"], u_min=0.05, u_max=0.4)
    state, _ = step(start(0.06, down), 0.075, 0.5, down)
    assert state.value == 0.05 and state.pinned == 1.0
    sky = Gains(kind="skywork", delta=1e-3, u_min=1e-4, u_max=2.5e-3)
    state, _ = step(start(1e-3, sky), 0.05, 0.1, sky)
    assert state.pinned == 0.0
    state, _ = step(state, 0.05, 0.1, sky)
    assert state.value == 2.5e-3 and state.pinned == 1.0


def plant(h, u, alpha, *, rate=0.5):
    """An entropy that relaxes to a level the actuator moves only within [0.05, 0.10] nats
    (u in [1e-3, 0.1]), and the entropy coefficient moves by 2 nats per unit."""
    level = 0.05 + 0.025 * (math.log10(u) + 3) + 2.0 * alpha
    return max(h + rate * (level - h), 1e-4)


@pytest.mark.parametrize("target", [0.03, 0.15])
def test_the_assist_reaches_targets_beyond_the_actuators_range(target):
    gains = Gains(kind="pi", kp=1.0, ki=0.3, u_min=1e-3, u_max=0.1)

    def run(assisted):
        state, h, trace = start(1e-2, gains), 0.075, []
        for _ in range(80):
            previous = state.error
            state, u = step(state, h, target, gains)
            alpha = assist_step(state.assist, state.error, previous, state.pinned, GAINS)
            state = replace(state, assist=alpha)
            h = plant(h, u, alpha if assisted else 0.0)
            trace.append(h)
        return sum(trace[40:]) / 40, state

    alone, _ = run(False)
    helped, state = run(True)
    assert abs(alone - target) / target > 0.3  # out of the actuator's reach
    assert abs(helped - target) / target < 0.1
    assert math.copysign(1, state.assist) == math.copysign(1, target - 0.075)


def test_a_negative_entropy_coefficient_penalises_entropy():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(2, 5, generator=g)
    adv = torch.randn(2, 5, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    entropy = torch.rand(2, 5, generator=g).requires_grad_(True)
    grads = []
    for coef in (0.01, -0.01):
        obj = compute_objective(LossConfig(entropy_coef=coef), lp, lp, adv, mask,
                                entropy=entropy)
        grads.append(torch.autograd.grad(obj.loss, entropy)[0])
        assert obj.metrics["entropy_bonus"] == pytest.approx(-coef * entropy.mean().item())
    torch.testing.assert_close(grads[1], -grads[0])
    assert bool((grads[1] > 0).all())  # minimising the loss lowers the entropy
    with pytest.raises(ValueError, match="entropy_coef"):
        LossConfig(entropy_coef=math.inf)


def test_config_checks_the_assist():
    with pytest.raises(UserError, match=r"control\.assist"):
        load_config("testbed/entropy_bonus", ["control.kind=pi", "control.actuator=entropy_coef",
                                              "control.assist=entropy_coef"])
    with pytest.raises(UserError, match=r"control\.assist_gain"):
        load_config("testbed/kl_cov", ["control.kind=pi", "control.actuator=kl_cov_ratio",
                                       "control.assist=entropy_coef", "control.assist_limit=0"])


# ----------------------------------------------------------------------------- in the loop


def _cfg(model_dir, target, bounds, *extra):
    return load_config("testbed/kl_cov", [
        f"model.path={model_dir}", "model.device=cpu", "steps=4", "rollout.n_prompts=4",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "update.mini_batch_size=8",
        "update.micro_batch_size=8", "eval.every=0", "data.testbed.train_size=32",
        "data.testbed.val_size=4", "optim.lr=1e-3", "optim.eps=1e-4", "progress=false",
        "checkpoint_every=2", "control.kind=pi", "control.actuator=kl_cov_ratio",
        f"control.target_entropy={target}", f"control.min_value={bounds[0]}",
        f"control.max_value={bounds[1]}", "control.approach_steps=0",
        "control.assist=entropy_coef", "control.assist_gain=0.02", "control.assist_limit=0.05",
        *extra,
    ])


def test_the_assist_reaches_the_loss_and_resumes_exactly(micro_model_dir, tmp_path):
    from entropyrl.train import train
    from entropyrl.train.metrics import read_metrics

    # Target far above the entropy and k capped just above its start: k saturates at once.
    cfg = _cfg(micro_model_dir, 10.0, (1e-3, 0.31))
    full = read_metrics(train(cfg, tmp_path / "full") / "metrics.jsonl")
    assert full[0]["control/assist_value"] == 0.0 and "loss/entropy_bonus" not in full[0]
    alpha = 0.0
    for r, nxt in itertools.pairwise(full):
        assert r["control/actuator_value"] <= 0.31
        alpha = min(alpha + 0.02 * min(r["control/error"], 1.0), 0.05)
        assert nxt["control/assist_value"] == pytest.approx(alpha, rel=1e-12)
        # The step trained with the bonus: −α times (about) the batch's entropy.
        bonus = nxt["loss/entropy_bonus"]
        assert bonus == pytest.approx(-alpha * nxt["train/entropy"], rel=0.3)
    part = tmp_path / "part"
    train(cfg, part, stop_after=2)
    resumed = read_metrics(train(cfg, part) / "metrics.jsonl")
    strip = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if not k.startswith("time/")} for r in full]


def test_the_assist_penalises_entropy_below_the_actuators_floor(micro_model_dir, tmp_path):
    from entropyrl.train import train
    from entropyrl.train.metrics import read_metrics

    # Target far below the entropy and k floored just below its start.
    cfg = _cfg(micro_model_dir, 0.01, (0.29, 0.9), "steps=3")
    rows = read_metrics(train(cfg, tmp_path / "run") / "metrics.jsonl")
    assert [r["control/actuator_value"] for r in rows[1:]] == [0.29, 0.29]
    assert rows[1]["control/assist_value"] == pytest.approx(-0.02, rel=1e-12)  # e ≤ −1: −g
    assert rows[2]["control/assist_value"] == pytest.approx(-0.04, rel=1e-12)
    assert rows[2]["loss/entropy_bonus"] > 0  # a penalty raises the loss
