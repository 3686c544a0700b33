"""Advantage estimators against a plain Python-loop reference, hand values and bad input."""

from __future__ import annotations

import math
import random

import pytest
import torch

from entropyrl.advantages import (
    ADVANTAGE_ESTIMATORS,
    ADVANTAGE_NAMES,
    compute_advantages,
    discounted_returns,
    drgrpo_advantages,
    grpo_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
)

EPS = 1e-6


# ---------------------------------------------------------------- plain reference (loops)


def _groups(gids):
    out: dict[int, list[int]] = {}
    for i, g in enumerate(gids):
        out.setdefault(g, []).append(i)
    return out


def _whiten_scale(values, shift_mean):
    """Mean and divisor over a flat list of valid values; None when all equal."""
    n = len(values)
    if n == 0 or max(values) == min(values):
        return None
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(n - 1, 1))
    return (mean if shift_mean else 0.0), std + EPS


def reference(name, scores, gids, mask, token_rewards=None, gamma=1.0):
    """Token advantages [B][T] computed with loops over groups, rows and positions."""
    s = [float(x) for x in scores]
    g = [int(x) for x in gids]
    m = [[bool(v) for v in row] for row in mask.tolist()]
    B, T = len(m), (len(m[0]) if m else 0)
    seq = [0.0] * B
    for members in _groups(g).values():
        vals = [s[i] for i in members]
        n, mean = len(vals), sum(vals) / len(vals)
        if max(vals) == min(vals):
            continue
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        for i in members:
            if name == "grpo":
                seq[i] = (s[i] - mean) / (std + EPS)
            elif name in ("drgrpo", "reinforce_pp_baseline"):
                seq[i] = s[i] - mean
            elif name == "rloo":
                seq[i] = s[i] - (sum(vals) - s[i]) / (n - 1)
    if name in ("grpo", "drgrpo", "rloo"):
        return [[seq[i] if m[i][t] else 0.0 for t in range(T)] for i in range(B)]
    if name == "reinforce_pp_baseline":
        flat = [seq[i] for i in range(B) for t in range(T) if m[i][t]]
        w = _whiten_scale(flat, shift_mean=False)
        return [[(seq[i] / w[1] if w else 0.0) if m[i][t] else 0.0 for t in range(T)]
                for i in range(B)]
    # reinforce_pp
    tr = token_rewards.tolist() if token_rewards is not None else [[0.0] * T for _ in range(B)]
    returns = [[0.0] * T for _ in range(B)]
    for i in range(B):
        valid = [t for t in range(T) if m[i][t]]
        running = 0.0
        for k, t in enumerate(reversed(valid)):
            r = tr[i][t] + (s[i] if k == 0 else 0.0)
            running = r + gamma * running
            returns[i][t] = running
    flat = [returns[i][t] for i in range(B) for t in range(T) if m[i][t]]
    w = _whiten_scale(flat, shift_mean=True)
    return [[((returns[i][t] - w[0]) / w[1] if w else 0.0) if m[i][t] else 0.0
             for t in range(T)] for i in range(B)]


def _random_case(rng: random.Random, continuous: bool):
    B, T = rng.randint(1, 12), rng.randint(1, 7)
    id_pool = rng.sample([-7, 0, 3, 17, 100, 2, 9], rng.randint(1, 5))
    gids = torch.tensor([rng.choice(id_pool) for _ in range(B)], dtype=torch.int64)
    if continuous:
        scores = torch.tensor([rng.uniform(-2, 2) for _ in range(B)], dtype=torch.float32)
    else:
        scores = torch.tensor([float(rng.random() < 0.5) for _ in range(B)])
    mask = torch.tensor([[rng.random() < 0.7 for _ in range(T)] for _ in range(B)])
    return scores, gids, mask


@pytest.mark.parametrize("name", ADVANTAGE_NAMES)
@pytest.mark.parametrize("continuous", [False, True])
def test_matches_loop_reference_on_random_layouts(name, continuous):
    rng = random.Random(1234)
    torch.manual_seed(0)
    for _ in range(40):
        scores, gids, mask = _random_case(rng, continuous)
        out = compute_advantages(name, scores, gids, mask)
        ref = torch.tensor(reference(name, scores.double(), gids, mask), dtype=torch.float64)
        assert out.token_advantages.dtype == torch.float32
        assert out.token_advantages.shape == mask.shape
        torch.testing.assert_close(out.token_advantages.double(), ref, rtol=1e-5, atol=1e-6)
        assert torch.all(out.token_advantages[~mask] == 0)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_reinforce_pp_with_token_rewards_and_gamma_matches_reference(gamma):
    rng = random.Random(7)
    torch.manual_seed(0)
    for _ in range(30):
        scores, gids, mask = _random_case(rng, continuous=True)
        tr = torch.randn(mask.shape) * 0.1
        tr[~mask] = float("nan")  # values at padding are ignored, even NaN
        out = compute_advantages("reinforce_pp", scores, gids, mask, token_rewards=tr,
                                 gamma=gamma)
        ref = reference("reinforce_pp", scores.double(), gids, mask, tr.double(), gamma)
        torch.testing.assert_close(out.token_advantages.double(),
                                   torch.tensor(ref, dtype=torch.float64), rtol=1e-5, atol=1e-6)
        assert out.seq_advantages is None and out.returns is not None


# ---------------------------------------------------------------- hand-computed values


def test_grpo_hand_values_unbiased_std():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    out = grpo_advantages(scores, torch.zeros(4, dtype=torch.int64), torch.ones(4, 2))
    # mean 0.5, unbiased std sqrt(4·0.25/3) = 0.57735 → ±0.5/0.57735 = ±0.866025.
    a = 0.5 / (math.sqrt(1 / 3) + EPS)
    torch.testing.assert_close(out.seq_advantages, torch.tensor([a, -a, -a, a]), rtol=1e-6, atol=0)
    torch.testing.assert_close(out.token_advantages[:, 1], out.seq_advantages, rtol=0, atol=0)


def test_drgrpo_and_rloo_hand_values_with_unsorted_ids():
    scores = torch.tensor([1.0, 5.0, 0.0, 2.0, 0.0])
    gids = torch.tensor([40, 7, 40, 7, 40])
    mask = torch.ones(5, 1)
    dr = drgrpo_advantages(scores, gids, mask).seq_advantages
    torch.testing.assert_close(dr, torch.tensor([2 / 3, 1.5, -1 / 3, -1.5, -1 / 3]),
                               rtol=1e-6, atol=0)
    rl = rloo_advantages(scores, gids, mask).seq_advantages
    # group 40: 1 − (0+0)/2 = 1, 0 − (1+0)/2 = −0.5; group 7: 5 − 2 = 3, 2 − 5 = −3.
    torch.testing.assert_close(rl, torch.tensor([1.0, 3.0, -0.5, -3.0, -0.5]), rtol=1e-6, atol=0)


def test_reinforce_pp_returns_skip_masked_positions():
    mask = torch.tensor([[1, 0, 1, 1, 0]])
    out = reinforce_pp_advantages(torch.tensor([1.0]), torch.tensor([0]), mask, gamma=0.5)
    assert out.returns is not None
    torch.testing.assert_close(out.returns, torch.tensor([[0.25, 0.0, 0.5, 1.0, 0.0]]),
                               rtol=0, atol=0)
    # Whitening subtracts the mean: the valid advantages sum to 0 and have unbiased std ≈ 1.
    valid = out.token_advantages[mask.bool()].double()
    assert abs(float(valid.sum())) < 1e-6
    assert abs(float(valid.std()) - 1.0) < 1e-5


def test_discounted_returns_gamma_one_fast_path_equals_loop():
    torch.manual_seed(0)
    r = torch.randn(3, 6, dtype=torch.float64)
    mask = torch.rand(3, 6) < 0.6
    fast = discounted_returns(r, mask, 1.0)
    loop = discounted_returns(r, mask, 1.0 - 1e-15)  # takes the time loop
    torch.testing.assert_close(fast, loop, rtol=1e-12, atol=1e-12)


def test_reinforce_pp_baseline_does_not_shift_mean():
    # Group 0 all equal (zero), group 1 mixed; lengths differ so a batch shift would be ≠ 0.
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0])
    gids = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 0, 0]])
    out = reinforce_pp_baseline_advantages(scores, gids, mask)
    assert torch.equal(out.token_advantages[:2], torch.zeros(2, 3))
    vals = [0.0] * 4 + [0.5] * 3 + [-0.5]
    mean = sum(vals) / 8
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / 7)
    torch.testing.assert_close(out.seq_advantages, torch.tensor(
        [0.0, 0.0, 0.5 / (std + EPS), -0.5 / (std + EPS)]), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- zero, never NaN


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo", "reinforce_pp_baseline"])
def test_equal_reward_groups_are_exactly_zero(name):
    # 0.1 three times: the float mean is 0.10000000000000002, not 0.1, so a std-based test
    # would leave ±1e-17/ε-sized values; the estimators must return exact zeros.
    assert sum([0.1, 0.1, 0.1]) / 3 != 0.1
    scores = torch.tensor([0.1, 0.1, 0.1, 0.7, 1.0, 0.0], dtype=torch.float64)
    gids = torch.tensor([5, 5, 5, 8, 9, 9])  # group 8 has a single response
    mask = torch.ones(6, 4)
    out = compute_advantages(name, scores, gids, mask)
    assert torch.equal(out.token_advantages[:4], torch.zeros(4, 4))
    assert torch.isfinite(out.token_advantages).all()
    assert out.token_advantages[4, 0] > 0 > out.token_advantages[5, 0]


@pytest.mark.parametrize("name", ADVANTAGE_NAMES)
def test_all_equal_batch_whitens_to_zero_without_nan(name):
    for value in (0.0, 1.0, 0.3):
        scores = torch.full((6,), value)
        out = compute_advantages(name, scores, torch.tensor([0, 0, 1, 1, 1, 2]), torch.ones(6, 3))
        assert torch.equal(out.token_advantages, torch.zeros(6, 3)), (name, value)


@pytest.mark.parametrize("name", ADVANTAGE_NAMES)
def test_all_masked_batch_gives_zeros(name):
    out = compute_advantages(name, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]),
                             torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(out.token_advantages, torch.zeros(2, 3))


def test_row_without_valid_token_still_counts_in_its_group():
    scores = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1, 1], [0, 0]])
    out = grpo_advantages(scores, torch.tensor([3, 3]), mask)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    torch.testing.assert_close(out.seq_advantages, torch.tensor([a, -a]), rtol=1e-6, atol=0)
    assert torch.equal(out.token_advantages[1], torch.zeros(2))


# ---------------------------------------------------------------- structure and invariances


def test_registry_is_keyed_by_the_literal_names():
    assert tuple(ADVANTAGE_ESTIMATORS) == ADVANTAGE_NAMES


@pytest.mark.parametrize("name", ADVANTAGE_NAMES)
def test_row_permutation_and_id_relabelling_invariance(name):
    torch.manual_seed(3)
    scores = torch.randn(10)
    gids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 3])
    mask = torch.rand(10, 5) < 0.8
    base = compute_advantages(name, scores, gids, mask).token_advantages
    perm = torch.randperm(10)
    relabel = torch.tensor([90, -4, 12, 6])[gids]
    out = compute_advantages(name, scores[perm], relabel[perm], mask[perm]).token_advantages
    torch.testing.assert_close(out, base[perm], rtol=1e-6, atol=1e-7)


def test_bool_int_and_float_masks_agree():
    scores, gids = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 0])
    m = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    a = grpo_advantages(scores, gids, m.bool()).token_advantages
    assert torch.equal(a, grpo_advantages(scores, gids, m).token_advantages)
    assert torch.equal(a, grpo_advantages(scores, gids, m.float()).token_advantages)


# ---------------------------------------------------------------- bad input


def _ok():
    return torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.ones(2, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": torch.ones(2, 1)}, r"scores: expected shape \[B\]"),
        ({"scores": torch.tensor([1, 0])}, "scores: expected a floating-point"),
        ({"scores": torch.tensor([1.0, float("nan")])}, "scores: expected finite"),
        ({"group_ids": torch.tensor([0.0, 0.0])}, "group_ids: expected an integer"),
        ({"group_ids": torch.tensor([True, False])}, "group_ids: expected an integer"),
        ({"group_ids": torch.tensor([0, 0, 1])}, "group_ids: expected the shape of scores"),
        ({"response_mask": torch.ones(3, 3)}, r"response_mask: expected shape \[B, T\] with B = 2"),
        ({"response_mask": torch.ones(2)}, r"response_mask: expected shape \[B, T\]"),
        ({"response_mask": torch.full((2, 3), 2.0)}, "response_mask: expected a 0/1"),
    ],
)
@pytest.mark.parametrize("name", ADVANTAGE_NAMES)
def test_bad_inputs_name_the_argument(name, kwargs, match):
    scores, gids, mask = _ok()
    args = {"scores": scores, "group_ids": gids, "response_mask": mask, **kwargs}
    with pytest.raises(ValueError, match=match):
        compute_advantages(name, args["scores"], args["group_ids"], args["response_mask"])


def test_bad_options_name_the_argument():
    scores, gids, mask = _ok()
    with pytest.raises(ValueError, match="name: expected one of"):
        compute_advantages("ppo", scores, gids, mask)
    with pytest.raises(ValueError, match="gamma: expected a fraction"):
        compute_advantages("grpo", scores, gids, mask, gamma=1.5)
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        compute_advantages("reinforce_pp", scores, gids, mask, eps=0.0)
    with pytest.raises(ValueError, match="token_rewards: only 'reinforce_pp'"):
        compute_advantages("grpo", scores, gids, mask, token_rewards=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="token_rewards: expected the shape of response_mask"):
        compute_advantages("reinforce_pp", scores, gids, mask, token_rewards=torch.zeros(2, 4))
    bad = torch.zeros(2, 3)
    bad[0, 1] = float("inf")
    with pytest.raises(ValueError, match="token_rewards: expected finite"):
        compute_advantages("reinforce_pp", scores, gids, mask, token_rewards=bad)
