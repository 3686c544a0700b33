"""PRIME's implicit process rewards, PRM loss and advantages against loop references."""

from __future__ import annotations

import math

import pytest
import torch

from entropyrl.prime import implicit_prm_loss, implicit_process_rewards, prime_advantages


def _batch(seed, b=9, t=7):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, t, generator=g) > 0.25
    mask[0] = False  # a response with no token
    rewards = torch.randn(b, t, generator=g, dtype=torch.float64)
    scores = (torch.rand(b, generator=g) > 0.5).double()
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 3])[:b]  # sizes 3, 4, 1, 1
    return rewards, scores, groups, mask


def _reference(rewards, scores, groups, mask, gamma):
    """The paper's A_t^i, written with loops."""
    b, t = rewards.shape
    means = []
    for i in range(b):
        toks = [float(rewards[i, s]) for s in range(t) if mask[i, s]]
        means.append(sum(toks) / len(toks) if toks else 0.0)
    out = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        others = [j for j in range(b) if groups[j] == groups[i] and j != i]
        base_p = sum(means[j] for j in others) / len(others) if others else means[i]
        base_o = sum(float(scores[j]) for j in others) / len(others) if others else float(
            scores[i])
        valid = [s for s in range(t) if mask[i, s]]
        for k, s in enumerate(valid):
            ret = sum(gamma ** (n - k) * (float(rewards[i, valid[n]]) - base_p)
                      for n in range(k, len(valid)))
            out[i, s] = ret + float(scores[i]) - base_o
    return out


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("seed", range(20))
def test_advantages_match_the_papers_equation(seed, gamma):
    rewards, scores, groups, mask = _batch(seed)
    got = prime_advantages(rewards, scores, groups, mask, gamma=gamma)
    want = _reference(rewards, scores, groups, mask, gamma)
    torch.testing.assert_close(got.token_advantages.double(), want, atol=1e-5, rtol=1e-5)
    assert got.token_advantages.dtype == torch.float32 and got.seq_advantages is None
    assert (got.token_advantages[~mask] == 0).all()


def test_a_lone_response_and_equal_rewards_get_no_advantage():
    mask = torch.ones(3, 4, dtype=torch.bool)
    rewards = torch.full((3, 4), 0.2, dtype=torch.float64)
    scores = torch.tensor([1.0, 1.0, 0.0])
    adv = prime_advantages(rewards, scores, torch.tensor([0, 0, 1]), mask).token_advantages
    assert (adv == 0).all()  # a group with equal rewards, and a group of one


def test_process_rewards_and_prm_loss():
    g = torch.Generator().manual_seed(0)
    prm = torch.randn(4, 5, generator=g, requires_grad=True)
    ref = torch.randn(4, 5, generator=g)
    mask = torch.rand(4, 5, generator=g) > 0.3
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    r = implicit_process_rewards(prm, ref, mask, beta=0.05)
    assert torch.equal(r[~mask], torch.zeros_like(r[~mask]))
    torch.testing.assert_close(r[mask], 0.05 * (prm - ref)[mask])
    loss = implicit_prm_loss(prm, ref, mask, labels, beta=0.05)
    q = (0.05 * ((prm.detach() - ref) * mask).sum(1)).tolist()
    want = -sum(lab * math.log(1 / (1 + math.exp(-x))) + (1 - lab) * math.log(
        1 - 1 / (1 + math.exp(-x))) for lab, x in zip(labels.tolist(), q, strict=True)) / 4
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    # The gradient pushes a correct response's log-probs up and a wrong one's down.
    assert (prm.grad[0][mask[0]] < 0).all() and (prm.grad[1][mask[1]] > 0).all()
    with pytest.raises(ValueError, match="beta"):
        implicit_process_rewards(prm, ref, mask, beta=0.0)
