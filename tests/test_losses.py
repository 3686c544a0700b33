import math

import pytest
import torch

from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.losses import (
    ClipCovConfig,
    KLCovConfig,
    LossConfig,
    PPOClip,
    clip_cov_loss,
    compute_objective,
    kl_cov_loss,
    pg_loss,
    ppo_loss,
    reference_kl,
)

# One row per case: (log-ratio, advantage). eps_low = 0.2, eps_high = 0.28.
#   0: A>0, r=1.5  -> clipped high, loss -A*1.28, no gradient
#   1: A<0, r=0.5  -> clipped low,  loss -A*0.8,  no gradient
#   2: A>0, r=1.1  -> unclipped,    loss -A*r
#   3: A<0, r=1.1  -> unclipped (pessimistic side), loss -A*r
#   4: A>0, r=0.5  -> unclipped (below, A>0 keeps the unclipped term), loss -A*r
#   5: masked
LOG_R = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1), math.log(1.1), math.log(0.5), 3.0]])
ADV = torch.tensor([[2.0, -1.0, 0.5, -0.7, 1.5, 9.0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.bool)
OLD = torch.full((1, 6), -1.3)


def reference_ppo(log_r, adv, mask, eps_low, eps_high, dual=None):
    out = []
    for lr, a, m in zip(log_r.flatten().tolist(), adv.flatten().tolist(), mask.flatten().tolist(), strict=True):
        r = math.exp(lr)
        val = max(-a * r, -a * min(max(r, 1 - eps_low), 1 + eps_high))
        if dual is not None and a < 0:
            val = min(val, -a * dual)
        out.append(val if m else 0.0)
    return torch.tensor(out).view_as(log_r)


def make_logprobs(log_r=LOG_R):
    return (OLD + log_r).clone().requires_grad_(True)


def test_ppo_matches_reference_and_gradients():
    lp = make_logprobs()
    res = ppo_loss(lp, OLD, ADV, MASK, PPOClip(eps_low=0.2, eps_high=0.28))
    ref = reference_ppo(LOG_R, ADV, MASK, 0.2, 0.28)
    assert torch.allclose(res.per_token, ref, rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(res.per_token.sum(), lp)
    ratio = LOG_R.exp()
    # d(-A r)/d log pi = -A r where unclipped; zero where clipped or masked.
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]]) * (-ADV * ratio)
    assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-7)
    assert res.n_tokens == 5
    assert res.metrics["clipfrac_high"].item() == pytest.approx(1 / 5)
    assert res.metrics["clipfrac_low"].item() == pytest.approx(1 / 5)
    assert res.metrics["clipfrac"].item() == pytest.approx(2 / 5)


def test_ppo_kl_and_ratio_diagnostics():
    lp = make_logprobs()
    res = ppo_loss(lp, OLD, ADV, MASK)
    lr = LOG_R[MASK]
    r = lr.exp()
    assert res.metrics["approx_kl_k1"].item() == pytest.approx((-lr).mean().item(), rel=1e-5)
    assert res.metrics["approx_kl_k3"].item() == pytest.approx(((r - 1) - lr).mean().item(), rel=1e-5)
    assert res.metrics["ratio_max"].item() == pytest.approx(1.5, rel=1e-6)
    assert res.metrics["ratio_min"].item() == pytest.approx(0.5, rel=1e-6)
    assert res.metrics["ratio_mean"].item() == pytest.approx(r.mean().item(), rel=1e-6)


def test_symmetric_clip_differs_from_clip_higher():
    lp = make_logprobs()
    sym = ppo_loss(lp, OLD, ADV, MASK, PPOClip(0.2, 0.2)).per_token
    assert sym[0, 0].item() == pytest.approx(-2.0 * 1.2, rel=1e-6)
    high = ppo_loss(lp, OLD, ADV, MASK, PPOClip(0.2, 0.28)).per_token
    assert high[0, 0].item() == pytest.approx(-2.0 * 1.28, rel=1e-6)


def test_dual_clip_bounds_negative_advantage_tokens():
    log_r = torch.tensor([[math.log(5.0), math.log(5.0), math.log(2.0)]])
    adv = torch.tensor([[-1.0, 1.0, -1.0]])
    old = torch.zeros(1, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    lp = (old + log_r).requires_grad_(True)
    res = ppo_loss(lp, old, adv, mask, PPOClip(0.2, 0.2, dual_clip=3.0))
    ref = reference_ppo(log_r, adv, mask, 0.2, 0.2, dual=3.0)
    assert torch.allclose(res.per_token, ref, rtol=1e-6)
    assert res.per_token[0, 0].item() == pytest.approx(3.0)
    assert res.metrics["dual_clipfrac"].item() == pytest.approx(1 / 3)
    (grad,) = torch.autograd.grad(res.per_token.sum(), lp)
    assert grad[0, 0].item() == 0.0


def test_pg_gradient_is_minus_advantage():
    lp = make_logprobs()
    res = pg_loss(lp, OLD, ADV, MASK)
    assert torch.allclose(res.per_token, torch.where(MASK, -ADV * lp.detach(), 0.0))
    (grad,) = torch.autograd.grad(res.per_token.sum(), lp)
    assert torch.allclose(grad, torch.where(MASK, -ADV, 0.0))


def test_clip_cov_given_selection_detaches_exactly_those_tokens():
    lp = make_logprobs()
    selected = torch.tensor([[False, False, True, False, False, False]])
    cfg = ClipCovConfig(ratio=0.2)  # PPO clip inside is eps = 1: ratios in [0, 2] unclipped
    res = clip_cov_loss(lp, OLD, ADV, MASK, selected, cfg)
    ref = reference_ppo(LOG_R, ADV, MASK, 1.0, 1.0)
    ref[0, 2] = 0.0
    assert torch.allclose(res.per_token, ref, rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(res.per_token.sum(), lp)
    expected = torch.where(MASK & ~selected, -ADV * LOG_R.exp(), 0.0)
    assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-7)
    assert res.metrics["selected_frac"].item() == pytest.approx(1 / 5)
    # The detached token still counts in the token-mean denominator.
    obj = compute_objective(LossConfig(name="clip_cov", clip_cov=cfg), lp, OLD, ADV, MASK, selected=selected)
    assert obj.loss.item() == pytest.approx(ref.sum().item() / 5, rel=1e-6)


def test_kl_cov_penalises_selected_tokens_only():
    lp = make_logprobs()
    selected = torch.tensor([[True, False, False, True, False, False]])
    cfg = KLCovConfig(ratio=0.4, beta=1.0)
    res = kl_cov_loss(lp, OLD, ADV, MASK, selected, cfg)
    r = LOG_R.exp()
    ref = torch.where(MASK, -ADV * r, 0.0) + torch.where(selected, LOG_R.abs(), 0.0)
    assert torch.allclose(res.per_token, ref, rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(res.per_token.sum(), lp)
    expected = torch.where(MASK, -ADV * r, 0.0) + torch.where(selected, LOG_R.sign(), 0.0)
    assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-7)
    assert res.metrics["kl_penalty"].item() == pytest.approx(LOG_R[selected].abs().sum().item() / 5, rel=1e-6)


def test_kl_cov_on_policy_is_plain_policy_gradient():
    torch.manual_seed(0)
    old = -torch.rand(4, 9) * 3
    adv = torch.randn(4, 9)
    mask = torch.rand(4, 9) > 0.2
    lp = old.clone().requires_grad_(True)
    cfg = KLCovConfig(ratio=0.1)
    selected = select_kl_cov([SelectionPart(lp.detach(), old, adv, mask)], cfg).masks[0]
    res = kl_cov_loss(lp, old, adv, mask, selected, cfg)
    (grad,) = torch.autograd.grad(res.per_token.sum(), lp)
    # |log pi - log pi_old| = 0 on-policy: subgradient of |x| at 0 is 0 in torch.
    assert torch.allclose(grad, torch.where(mask, -adv, 0.0))


def test_selection_is_required_and_its_fraction_reported():
    torch.manual_seed(1)
    old = -torch.rand(8, 64) * 6
    adv = torch.randn(8, 64) * 2
    mask = torch.ones(8, 64, dtype=torch.bool)
    lp = old.clone().requires_grad_(True)
    part = [SelectionPart(lp.detach(), old, adv, mask)]
    kl_cfg, cc_cfg = KLCovConfig(ratio=0.01), ClipCovConfig(ratio=0.01)
    kl = kl_cov_loss(lp, old, adv, mask, select_kl_cov(part, kl_cfg).masks[0], kl_cfg)
    assert kl.metrics["selected_frac"].item() == pytest.approx(5 / 512)
    cc = clip_cov_loss(lp, old, adv, mask, select_clip_cov(part, cc_cfg).masks[0], cc_cfg)
    assert cc.metrics["selected_frac"].item() == pytest.approx(5 / 512)
    for name in ("clip_cov", "kl_cov"):
        with pytest.raises(ValueError, match=f"select_{name}"):
            compute_objective(LossConfig(name=name), lp, old, adv, mask)


@pytest.mark.parametrize(
    ("estimator", "formula"),
    [
        ("k1", lambda lp, ref: lp - ref),
        ("k2", lambda lp, ref: 0.5 * (lp - ref) ** 2),
        ("k3", lambda lp, ref: torch.exp(ref - lp) - (ref - lp) - 1),
    ],
)
def test_reference_kl_estimators(estimator, formula):
    lp = torch.tensor([[-1.0, -2.0, -0.1]])
    ref = torch.tensor([[-1.5, -1.0, -0.1]])
    assert torch.allclose(reference_kl(lp, ref, estimator), formula(lp, ref), rtol=1e-6, atol=1e-7)


def test_objective_adds_entropy_bonus_and_reference_kl():
    lp = make_logprobs()
    entropy = torch.rand(1, 6, requires_grad=True)
    ref_lp = OLD - 0.3
    cfg = LossConfig(name="ppo", entropy_coef=0.01, ref_kl_coef=0.1, ref_kl_estimator="k1")
    obj = compute_objective(cfg, lp, OLD, ADV, MASK, entropy=entropy, ref_logprobs=ref_lp)
    ppo = reference_ppo(LOG_R, ADV, MASK, 0.2, 0.2)
    kl = (lp.detach() - ref_lp)
    expected = (ppo - 0.01 * entropy.detach() + 0.1 * kl)[MASK].mean()
    assert obj.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert obj.metrics["entropy_bonus"].item() == pytest.approx(-0.01 * entropy.detach()[MASK].mean().item(), rel=1e-6)
    assert obj.metrics["ref_kl"].item() == pytest.approx(kl[MASK].mean().item(), rel=1e-6)
    (g_ent,) = torch.autograd.grad(obj.loss, entropy)
    assert torch.allclose(g_ent, torch.where(MASK, -0.01 / 5, 0.0))


def test_objective_requires_inputs_of_enabled_terms():
    lp = make_logprobs()
    with pytest.raises(ValueError, match="entropy"):
        compute_objective(LossConfig(entropy_coef=0.01), lp, OLD, ADV, MASK)
    with pytest.raises(ValueError, match="ref_logprobs"):
        compute_objective(LossConfig(ref_kl_coef=0.01), lp, OLD, ADV, MASK)


def test_all_masked_batch_has_zero_loss():
    lp = make_logprobs()
    none = torch.zeros_like(MASK)
    for name in ("ppo", "pg", "clip_cov", "kl_cov"):
        selected = torch.zeros_like(none, dtype=torch.bool)
        obj = compute_objective(LossConfig(name=name), lp, OLD, ADV, none, selected=selected)
        assert obj.loss.item() == 0.0
        assert all(torch.isfinite(v) for v in obj.metrics.values())


def test_bad_inputs_name_the_argument():
    lp = make_logprobs()
    with pytest.raises(ValueError, match="old_logprobs"):
        ppo_loss(lp, OLD[:, :3], ADV, MASK)
    with pytest.raises(ValueError, match="advantages"):
        ppo_loss(lp, OLD, ADV.double(), MASK)
    nan_adv = ADV.clone()
    nan_adv[0, 1] = float("nan")
    with pytest.raises(ValueError, match="advantages"):
        ppo_loss(lp, OLD, nan_adv, MASK)
    nan_adv[0, 1] = 0.0
    nan_adv[0, 5] = float("nan")  # NaN at a masked position is allowed
    ppo_loss(lp, OLD, nan_adv, MASK)
    with pytest.raises(ValueError, match="logprobs"):
        ppo_loss(lp[0], OLD[0], ADV[0], MASK[0])
    with pytest.raises(ValueError, match="mask"):
        ppo_loss(lp, OLD, ADV, MASK.float() * 0.5)
    with pytest.raises(ValueError, match="selected"):
        clip_cov_loss(lp, OLD, ADV, MASK, torch.ones_like(MASK))
    with pytest.raises(ValueError, match="selected"):
        kl_cov_loss(lp, OLD, ADV, MASK, torch.zeros(1, 6))


@pytest.mark.parametrize("ratio", [0.0, -1e-3, 1.5, 20.0, float("nan")])
def test_selection_ratios_must_be_fractions(ratio):
    with pytest.raises(ValueError, match=r"clip_cov.ratio.*fraction"):
        ClipCovConfig(ratio=ratio)
    with pytest.raises(ValueError, match=r"kl_cov.ratio.*fraction"):
        KLCovConfig(ratio=ratio)


def test_config_validation():
    with pytest.raises(ValueError, match=r"loss\.name"):
        LossConfig(name="grpo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dual_clip"):
        PPOClip(dual_clip=0.5)
    with pytest.raises(ValueError, match="cov_low"):
        ClipCovConfig(cov_low=5.0, cov_high=1.0)
    with pytest.raises(ValueError, match="beta"):
        KLCovConfig(beta=-1.0)
