"""Entropy-dynamics diagnostics against numpy/loop references on tiny hand-built tensors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from entropyrl.dynamics import (
    SKEW_FRACTIONS,
    SKEW_KEYS,
    BatchCovariances,
    batch_covariances,
    entropy_change,
    policy_covariance,
    predicted_entropy_change,
    prediction_agreement,
    response_covariance,
    skew_table,
    tabular_entropy_check,
    token_covariance,
)

LP = torch.tensor([[-0.1, -2.0, -0.5, -7.0], [-1.0, -3.0, -0.2, -0.05]])
ADV = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-0.5, -0.5, 2.0, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)


def _np_valid(x, mask):
    return x.double().numpy()[mask.numpy()]


# ---------------------------------------------------------------- token-level covariance


def test_token_covariance_matches_loop_reference():
    lp, adv = _np_valid(LP, MASK), _np_valid(ADV, MASK)
    mu_lp, mu_a = lp.mean(), adv.mean()
    ref = np.zeros(LP.shape)
    for b in range(LP.shape[0]):
        for t in range(LP.shape[1]):
            if MASK[b, t]:
                ref[b, t] = (float(LP[b, t]) - mu_lp) * (float(ADV[b, t]) - mu_a)
    cov = token_covariance(LP, ADV, MASK)
    assert cov.dtype == torch.float32 and cov.shape == LP.shape
    torch.testing.assert_close(cov.double(), torch.from_numpy(ref), rtol=1e-6, atol=1e-7)
    assert cov[0, 3] == 0


def test_token_covariance_ignores_nan_at_padding():
    lp, adv = LP.clone(), ADV.clone()
    lp[0, 3], adv[0, 3] = float("nan"), float("inf")
    torch.testing.assert_close(token_covariance(lp, adv, MASK), token_covariance(LP, ADV, MASK),
                               rtol=0, atol=0)


def test_precomputed_global_means_make_parts_equal_the_whole():
    torch.manual_seed(0)
    lp, adv = -torch.rand(6, 5) * 4, torch.randn(6, 5)
    mask = torch.rand(6, 5) < 0.7
    whole = token_covariance(lp, adv, mask)
    stats = batch_covariances(lp, adv, mask)
    for rows in (slice(0, 2), slice(2, 6)):
        part = token_covariance(lp[rows], adv[rows], mask[rows],
                                mean_logprob=stats.mean_logprob,
                                mean_advantage=torch.tensor(stats.mean_advantage))
        torch.testing.assert_close(part, whole[rows], rtol=1e-6, atol=1e-7)
    # Without the global means a part is centred on its own means: different values.
    assert not torch.allclose(token_covariance(lp[:2], adv[:2], mask[:2]), whole[:2])


# ---------------------------------------------------------------- batch covariances


def test_batch_covariances_match_numpy():
    lp, adv = _np_valid(LP, MASK), _np_valid(ADV, MASK)
    pa = np.exp(lp) * adv
    out = batch_covariances(LP, ADV, MASK)
    assert out.n_tokens == 7
    assert out.cov_npg == pytest.approx(np.mean((lp - lp.mean()) * (adv - adv.mean())), rel=1e-6)
    assert out.cov_pg == pytest.approx(np.mean((lp - lp.mean()) * (pa - pa.mean())), rel=1e-6)
    assert out.mean_logprob == pytest.approx(lp.mean(), rel=1e-6)
    assert out.mean_advantage == pytest.approx(adv.mean(), rel=1e-6)
    assert out.cov_npg == pytest.approx(float(token_covariance(LP, ADV, MASK).double().sum()) / 7,
                                        rel=1e-6)


def test_confident_token_with_positive_advantage_has_positive_covariance():
    # lp = [log .9, log .1], A = [1, −1]: cov_npg = ½·(log .9 − log .1) = ½·log 9 > 0, so the
    # step lowers entropy (ΔH ≈ −η·cov < 0); swapping the advantages flips the sign.
    lp = torch.log(torch.tensor([[0.9, 0.1]]))
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = batch_covariances(lp, torch.tensor([[1.0, -1.0]]), mask)
    assert out.cov_npg == pytest.approx(0.5 * math.log(9), rel=1e-6)
    # cov_pg: π·A = [0.9, −0.1], mean 0.4 → ½·((log .9 − μ)(0.5) + (log .1 − μ)(−0.5)).
    assert out.cov_pg == pytest.approx(0.25 * math.log(9), rel=1e-6)
    flipped = batch_covariances(lp, torch.tensor([[-1.0, 1.0]]), mask)
    assert flipped.cov_npg == pytest.approx(-0.5 * math.log(9), rel=1e-6)


# ---------------------------------------------------------------- skew table


def test_skew_table_matches_sorted_reference():
    torch.manual_seed(1)
    lp, adv = -torch.rand(30, 100) * 5, torch.randn(30, 100)
    mask = torch.rand(30, 100) < 0.9
    table = skew_table(lp, adv, mask)
    assert tuple(table) == SKEW_KEYS == (
        "top0.02pct", "top0.2pct", "top2pct", "top20pct", "top50pct", "all")
    lpv, av = _np_valid(lp, mask), _np_valid(adv, mask)
    cov = np.sort((lpv - lpv.mean()) * (av - av.mean()))[::-1]
    n = cov.size
    for f, key in zip(SKEW_FRACTIONS, SKEW_KEYS, strict=False):
        k = max(1, math.floor(f * n))
        assert table[key] == pytest.approx(cov[:k].mean(), rel=1e-6), key
    assert table["top0.02pct"] == pytest.approx(cov[0], rel=1e-6)  # ⌊2e-4·N⌋ = 0 → 1 token
    assert table["all"] == pytest.approx(batch_covariances(lp, adv, mask).cov_npg, rel=1e-6)
    values = [table[k] for k in SKEW_KEYS]
    assert values == sorted(values, reverse=True)


def test_skew_table_custom_fractions_and_bad_fraction():
    table = skew_table(LP, ADV, MASK, fractions=(0.3, 1.0))
    assert set(table) == {"top30pct", "top100pct", "all"}
    assert table["top100pct"] == pytest.approx(table["all"], rel=1e-9)
    with pytest.raises(ValueError, match="fractions: expected fractions in"):
        skew_table(LP, ADV, MASK, fractions=(2.0,))


# ---------------------------------------------------------------- response-level covariance


@pytest.mark.parametrize("form", ["npg", "pg"])
def test_response_covariance_matches_loop_reference(form):
    torch.manual_seed(2)
    B, T = 11, 6
    lp, adv_seq = -torch.rand(B, T) * 3, torch.randn(B)
    mask = torch.rand(B, T) < 0.7
    mask[4] = False  # a response without valid tokens is left out of its group
    gids = torch.tensor([9, 2, 9, 2, 9, 5, 2, 9, 7, 7, 2])  # group 5 has a single response
    out = response_covariance(lp, adv_seq, mask, gids, form=form)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(gids.tolist()):
        if mask[i].any():
            groups.setdefault(g, []).append(i)
    ref = {}
    for g, rows in groups.items():
        if len(rows) < 2:
            continue
        ell = [float(lp[i][mask[i]].double().mean()) for i in rows]
        a = [float(adv_seq[i]) for i in rows]
        if form == "pg":  # Cov(ℓ, π·A) with π = exp ℓ
            a = [math.exp(e) * x for e, x in zip(ell, a, strict=True)]
        me, ma = sum(ell) / len(rows), sum(a) / len(rows)
        ref[g] = sum((x - me) * (y - ma) for x, y in zip(ell, a, strict=True)) / len(rows)
    assert out.group_ids.tolist() == [2, 5, 7, 9]
    assert out.defined.tolist() == [True, False, True, True]
    for j, g in enumerate(out.group_ids.tolist()):
        assert float(out.per_group[j]) == pytest.approx(ref.get(g, 0.0), rel=1e-6, abs=1e-12)
    assert out.mean == pytest.approx(sum(ref.values()) / len(ref), rel=1e-6)
    # Token advantages broadcast from the sequence advantages give the same result.
    tok = torch.where(mask, adv_seq[:, None].expand(B, T), torch.zeros(()))
    assert response_covariance(lp, tok, mask, gids, form=form).mean == pytest.approx(
        out.mean, rel=1e-9)
    other = "pg" if form == "npg" else "npg"
    assert abs(response_covariance(lp, adv_seq, mask, gids, form=other).mean - out.mean) > 1e-4


# ---------------------------------------------------------------- tabular softmax check


def _np_entropy(z):
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return -(p * np.log(p)).sum(-1), p


def _np_pcov(p, x, y):
    """Cov_{a∼p}(x, y) per row."""
    xc = x - (p * x).sum(-1, keepdims=True)
    yc = y - (p * y).sum(-1, keepdims=True)
    return (p * xc * yc).sum(-1)


def test_tabular_check_matches_numpy_and_error_shrinks_linearly():
    torch.manual_seed(3)
    z, adv = torch.randn(12, 5) * 1.5, torch.randn(12, 5)
    zn, an = z.double().numpy(), adv.double().numpy()
    h0, p = _np_entropy(zn)
    logp = np.log(p)
    errors = {"pg": [], "npg": []}
    for eta in (1e-1, 1e-2, 1e-3):
        check = tabular_entropy_check(z, adv, eta)
        for form, dz, pred in (
            ("pg", eta * p * an, -eta * _np_pcov(p, logp, p * an)),
            ("npg", eta * an, -eta * _np_pcov(p, logp, an)),
        ):
            res = getattr(check, form)
            exact = _np_entropy(zn + dz)[0] - h0
            np.testing.assert_allclose(res.exact.numpy(), exact, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(res.predicted.numpy(), pred, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(res.entropy_before.numpy(), h0, rtol=1e-12)
            rel = np.linalg.norm(exact - pred) / np.linalg.norm(exact)
            assert res.relative_error == pytest.approx(rel, rel=1e-6)
            errors[form].append(res.relative_error)
    for form, errs in errors.items():
        assert errs[0] > errs[1] > errs[2], (form, errs)
        for big, small in itertools.pairwise(errs):
            assert 5 < big / small < 20, (form, errs)  # second-order error / first-order ΔH
        assert errs[2] < 1e-2, (form, errs)


def test_flipping_the_sign_of_the_prediction_fails():
    torch.manual_seed(4)
    z, adv = torch.randn(8, 4), torch.randn(8, 4)
    check = tabular_entropy_check(z, adv, 1e-3)
    for res in (check.pg, check.npg):
        assert res.relative_error < 1e-2
        flipped = float((res.exact + res.predicted).norm() / res.exact.norm())
        assert flipped > 1.5


def test_lemma_holds_for_an_arbitrary_logit_step():
    torch.manual_seed(5)
    z, direction = torch.randn(10, 7), torch.randn(10, 7)
    errs = [entropy_change(z, s * direction).relative_error for s in (1e-1, 1e-2, 1e-3)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-2
    # The prediction is −Cov_π(log π, Δz) computed independently.
    _, p = _np_entropy(z.double().numpy())
    dz = 1e-3 * direction.double()
    pred = -_np_pcov(p, np.log(p), dz.numpy())
    np.testing.assert_allclose(entropy_change(z, dz).predicted.numpy(), pred,
                               rtol=1e-9, atol=1e-15)


def test_npg_rewarding_the_likely_action_lowers_entropy():
    z = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    adv = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # state 0 rewards the likely, 1 the rare
    res = tabular_entropy_check(z, adv, 1e-3).npg
    assert res.exact[0] < 0 < res.exact[1]
    assert res.predicted[0] < 0 < res.predicted[1]
    # Per-state constants in A do not change an NPG step (softmax shift invariance).
    shifted = tabular_entropy_check(z, adv + torch.tensor([[3.0], [-2.0]]), 1e-3).npg
    torch.testing.assert_close(shifted.predicted, res.predicted, rtol=1e-9, atol=1e-15)


def test_policy_covariance_of_a_uniform_policy_is_zero():
    out = policy_covariance(torch.zeros(3, 4), torch.randn(3, 4))
    assert torch.equal(out, torch.zeros(3, dtype=torch.float64))


# ---------------------------------------------------------------- predicted vs measured


def test_predicted_entropy_change_is_minus_eta_cov():
    cov = BatchCovariances(cov_npg=0.2, cov_pg=0.05, mean_logprob=-1.0, mean_advantage=0.0,
                           n_tokens=10)
    assert predicted_entropy_change(cov) == pytest.approx(-0.2)
    assert predicted_entropy_change(cov, form="pg", step_size=0.5) == pytest.approx(-0.025)
    with pytest.raises(ValueError, match="form: expected one of"):
        predicted_entropy_change(cov, form="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step_size: expected a finite number > 0"):
        predicted_entropy_change(cov, step_size=0.0)


def test_prediction_agreement():
    pred = [-0.2, -0.1, -0.4, 0.05, -0.3]
    measured = [0.3 * p for p in pred]
    out = prediction_agreement(measured, pred)
    assert out.correlation == pytest.approx(1.0, rel=1e-12)
    assert out.scale == pytest.approx(0.3, rel=1e-12)
    assert out.sign_agreement == 1.0 and out.n_steps == 5
    flipped = prediction_agreement([-m for m in measured], pred)
    assert flipped.correlation == pytest.approx(-1.0, rel=1e-12)
    assert flipped.sign_agreement == 0.0 and flipped.scale == pytest.approx(-0.3, rel=1e-12)
    assert prediction_agreement([1.0, 1.0], [0.0, 0.0]) == (0.0, 0.0, 0.0, 2)
    with pytest.raises(ValueError, match="measured: expected at least 2 steps"):
        prediction_agreement([0.1], [0.1])
    with pytest.raises(ValueError, match="predicted: expected 3 steps"):
        prediction_agreement([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="measured: expected finite"):
        prediction_agreement([0.1, float("nan")], [0.1, 0.2])


# ---------------------------------------------------------------- all-masked and bad input


def test_all_masked_batch_gives_zeros():
    mask = torch.zeros(2, 4, dtype=torch.bool)
    assert torch.equal(token_covariance(LP, ADV, mask), torch.zeros(2, 4))
    assert batch_covariances(LP, ADV, mask) == (0.0, 0.0, 0.0, 0.0, 0)
    assert skew_table(LP, ADV, mask) == dict.fromkeys(SKEW_KEYS, 0.0)
    resp = response_covariance(LP, ADV, mask, torch.tensor([0, 0]))
    assert resp.mean == 0.0 and not resp.defined.any()


@pytest.mark.parametrize(
    ("lp", "adv", "mask", "match"),
    [
        (LP[0], ADV[0], MASK[0], r"logprobs: expected shape \[B, T\]"),
        (LP, ADV[:, :3], MASK, "advantages: expected the shape of logprobs"),
        (LP, ADV.double(), MASK, "advantages: expected dtype torch.float32"),
        (LP, ADV.long(), MASK, "advantages: expected a floating-point"),
        (LP, ADV, MASK[:, :3], "mask: expected the shape of logprobs"),
        (LP, ADV, MASK.float() * 2, "mask: expected a 0/1"),
        (LP.masked_fill(MASK, float("nan")), ADV, MASK, "logprobs: expected finite"),
        (LP, ADV.masked_fill(MASK, float("inf")), MASK, "advantages: expected finite"),
    ],
)
def test_bad_token_inputs_name_the_argument(lp, adv, mask, match):
    for fn in (token_covariance, batch_covariances, skew_table):
        with pytest.raises(ValueError, match=match):
            fn(lp, adv, mask)


def test_bad_means_group_ids_and_tables():
    with pytest.raises(ValueError, match="mean_logprob: expected a finite number"):
        token_covariance(LP, ADV, MASK, mean_logprob=float("nan"))
    with pytest.raises(ValueError, match="group_ids: expected an integer"):
        response_covariance(LP, ADV, MASK, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"group_ids: expected shape \[B\] with B = 2"):
        response_covariance(LP, ADV, MASK, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"advantages: expected shape \[B\] or \[B, T\]"):
        response_covariance(LP, torch.ones(3), MASK, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"logits: expected shape \[S, A\]"):
        tabular_entropy_check(torch.randn(4), torch.randn(4), 1e-2)
    with pytest.raises(ValueError, match="advantages: expected the shape of logits"):
        tabular_entropy_check(torch.randn(2, 3), torch.randn(2, 4), 1e-2)
    with pytest.raises(ValueError, match="step_size: expected a finite number > 0"):
        tabular_entropy_check(torch.randn(2, 3), torch.randn(2, 3), -1e-2)
    with pytest.raises(ValueError, match="delta_logits: expected finite"):
        entropy_change(torch.randn(2, 3), torch.full((2, 3), float("nan")))
