"""The per-micro-batch loss path reads nothing on the host unless value checks are on.

A host read (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``, ``.tolist()``) waits for every
queued kernel on an accelerator. Two ways to see them without a GPU:

- count the calls to those methods of ``torch.Tensor`` on the CPU, with the value checks off
  (``ENTROPYRL_DEBUG_CHECKS=0``, what the default does on an accelerator);
- run on the ``meta`` device, where every host read raises: the default mode must pass there.

Data-dependent shapes (boolean indexing, ``nonzero``) also wait on a GPU; on ``meta`` they
fail as well, so the second test covers them.
"""

import pytest
import torch

from entropyrl._checks import DEBUG_CHECKS_ENV, value_checks_enabled
from entropyrl.covariance import SelectionPart, select_clip_cov, select_kl_cov
from entropyrl.losses import (
    AGGREGATION_MODES,
    ClipCovConfig,
    Denominators,
    KLCovConfig,
    LossConfig,
    compute_objective,
    ppo_loss,
)

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def host_reads(monkeypatch):
    """A list that records the name of every host read of a tensor while the test runs."""
    calls: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def make_micro_batch(device="cpu", b=6, t=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 4
    lp = old + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, 1, generator=g).expand(b, t).contiguous()
    mask = torch.arange(t)[None, :] < torch.randint(1, t + 1, (b, 1), generator=g)
    return tuple(x.to(device) for x in (lp, old, adv, mask))


def objectives(lp, old, adv, mask, selected):
    """Every loss, aggregation mode and denominator choice, each with its backward pass."""
    for name in ("ppo", "pg", "clip_cov", "kl_cov"):
        for mode in AGGREGATION_MODES:
            for den in (None, Denominators(int(mask.numel()), mask.shape[0])):
                leaf = lp.detach().clone().requires_grad_(True)
                obj = compute_objective(LossConfig(name=name, aggregation=mode), leaf, old, adv,
                                        mask, selected=selected, denominators=den)
                obj.loss.backward()
                yield name, obj, leaf


def test_no_host_read_per_micro_batch_with_checks_off(monkeypatch, host_reads):
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "0")
    lp, old, adv, mask = make_micro_batch()
    selected = torch.zeros_like(mask)
    selected[0, 0] = True
    host_reads.clear()
    names = {name for name, *_ in objectives(lp, old, adv, mask, selected)}
    assert names == {"ppo", "pg", "clip_cov", "kl_cov"}
    assert host_reads == []


def test_checks_on_read_the_host_and_the_counter_sees_it(monkeypatch, host_reads):
    # The same computation with the checks on: the counter must see their reads (else the
    # test above could pass with a counter that counts nothing).
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "1")
    lp, old, adv, mask = make_micro_batch()
    selected = torch.zeros_like(mask)
    host_reads.clear()
    for _ in objectives(lp, old, adv, mask, selected):
        pass
    assert len(host_reads) > 0


def test_default_mode_runs_on_a_device_without_host_reads(monkeypatch):
    # On "meta" every host read and every data-dependent shape raises, as a stand-in for an
    # accelerator: the default ("auto") must skip the value checks there.
    monkeypatch.delenv(DEBUG_CHECKS_ENV, raising=False)
    lp, old, adv, mask = make_micro_batch("meta")
    selected = torch.zeros_like(mask)
    assert not value_checks_enabled(lp)
    for name, obj, leaf in objectives(lp, old, adv, mask, selected):
        assert obj.loss.device.type == "meta", name
        assert leaf.grad is not None and leaf.grad.shape == lp.shape
    with pytest.raises(RuntimeError):
        bool(lp.sum())  # what a check would have done


@pytest.mark.parametrize("mode", ["1", "on", "true"])
def test_debug_switch_catches_a_nan(monkeypatch, mode):
    lp, old, adv, mask = make_micro_batch()
    adv = adv.clone()
    adv[0, 0] = float("nan")
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "0")
    res = ppo_loss(lp, old, adv, mask)  # unchecked: the NaN reaches the loss
    assert torch.isnan(res.per_token[0, 0])
    monkeypatch.setenv(DEBUG_CHECKS_ENV, mode)
    with pytest.raises(ValueError, match="advantages: expected finite values"):
        ppo_loss(lp, old, adv, mask)
    with pytest.raises(ValueError, match="advantages: expected finite values"):
        compute_objective(LossConfig(name="kl_cov"), lp, old, adv, mask,
                          selected=torch.zeros_like(mask))


def test_debug_switch_checks_the_selection_subset(monkeypatch):
    lp, old, adv, mask = make_micro_batch()
    outside = ~mask
    assert outside.any()
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "1")
    with pytest.raises(ValueError, match="selected: expected a subset"):
        compute_objective(LossConfig(name="clip_cov"), lp, old, adv, mask, selected=outside)
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "0")
    # Unchecked, a selection outside the mask still cannot let padding into the loss.
    obj = compute_objective(LossConfig(name="clip_cov"), lp, old, adv, mask, selected=outside)
    ref = compute_objective(LossConfig(name="clip_cov"), lp, old, adv, mask,
                            selected=torch.zeros_like(mask))
    assert torch.equal(obj.loss, ref.loss)


def test_switch_values(monkeypatch):
    cpu, meta = torch.zeros(1), torch.zeros(1, device="meta")
    monkeypatch.delenv(DEBUG_CHECKS_ENV, raising=False)
    assert value_checks_enabled(cpu) and not value_checks_enabled(meta)
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "auto")
    assert value_checks_enabled(cpu) and not value_checks_enabled(meta)
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "1")
    assert value_checks_enabled(cpu) and value_checks_enabled(meta)
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "off")
    assert not value_checks_enabled(cpu) and not value_checks_enabled(meta)
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "sometimes")
    with pytest.raises(ValueError, match=f"{DEBUG_CHECKS_ENV}: expected 1"):
        value_checks_enabled(cpu)


def test_selection_reads_the_host_once_per_mini_batch(monkeypatch, host_reads):
    # The selection runs once per optimizer mini-batch, not per micro-batch; it needs N (and
    # Clip-Cov the number of candidates) on the host to size its draw / top-k.
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "0")
    parts = [SelectionPart(*make_micro_batch(seed=s)) for s in range(3)]
    host_reads.clear()
    kl = select_kl_cov(parts, KLCovConfig(ratio=0.05))
    assert host_reads == ["tolist"]
    host_reads.clear()
    cc = select_clip_cov(parts, ClipCovConfig(ratio=0.05, cov_low=0.1))
    assert host_reads == ["tolist", "__int__"]
    assert kl.n_selected > 0 and cc.n_selected > 0


def test_selection_rejects_nan_with_checks_off(monkeypatch):
    # The global sums the selection reads anyway double as its finite check.
    monkeypatch.setenv(DEBUG_CHECKS_ENV, "0")
    lp, old, adv, mask = make_micro_batch()
    lp = lp.clone()
    lp[0, 0] = float("nan")
    nan_at_padding = make_micro_batch(seed=1)[0].masked_fill(~mask, float("nan"))
    for select in (select_kl_cov, select_clip_cov):
        with pytest.raises(ValueError, match=r"parts\.logprobs: expected finite"):
            select([SelectionPart(lp, old, adv, mask)])
        select([SelectionPart(nan_at_padding, old, adv, mask)])  # allowed
