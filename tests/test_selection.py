import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from entropyrl.covariance import (
    SelectionPart,
    select_clip_cov,
    select_kl_cov,
)
from entropyrl.distributed import Dist
from entropyrl.losses import ClipCovConfig, KLCovConfig, PPOClip


def make_batch(b=16, t=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 6
    lp = old + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, 1, generator=g).expand(b, t) * 2 + 0.1 * torch.randn(b, t, generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return lp, old, adv.contiguous(), mask


def split(batch, n):
    return [SelectionPart(*xs) for xs in zip(*(x.chunk(n) for x in batch), strict=True)]


def reference_cov(lp, adv, mask):
    """Eq. 10 with plain Python loops in float64."""
    vals = [(float(a), float(b)) for a, b, m in zip(lp.flatten(), adv.flatten(), mask.flatten(), strict=True) if m]
    mean_lp = sum(v[0] for v in vals) / len(vals)
    mean_a = sum(v[1] for v in vals) / len(vals)
    cov = {}
    for i, (a, b, m) in enumerate(zip(lp.flatten().tolist(), adv.flatten().tolist(), mask.flatten().tolist(), strict=True)):
        if m:
            cov[i] = (a - mean_lp) * (b - mean_a)
    return cov


def test_kl_cov_matches_python_reference():
    lp, old, adv, mask = make_batch()
    cfg = KLCovConfig(ratio=0.02)
    sel = select_kl_cov([SelectionPart(lp, old, adv, mask)], cfg)
    cov = reference_cov(lp, adv, mask)
    n = len(cov)
    k = max(1, math.floor(0.02 * n))
    top = sorted(cov, key=lambda i: (-cov[i], i))[:k]
    got = sel.masks[0].flatten().nonzero().flatten().tolist()
    assert sorted(top) == got
    assert (sel.n_tokens, sel.n_selected, sel.n_candidates) == (n, k, n)


def test_kl_cov_breaks_ties_by_lower_index():
    lp = torch.tensor([[-1.0, -3.0, -1.0, -3.0, -2.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 0.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    sel = select_kl_cov([SelectionPart(lp, lp, adv, mask)], KLCovConfig(ratio=2 / 5))
    # Means are -2 and 0: tokens 0-3 share the largest covariance (1.0); the first two win.
    assert sel.masks[0].flatten().nonzero().flatten().tolist() == [0, 1]


def test_clip_cov_candidates_match_python_reference():
    lp, old, adv, mask = make_batch(seed=3)
    cfg = ClipCovConfig(ratio=0.5, cov_low=1.0, cov_high=5.0)  # ratio large: select all candidates
    sel = select_clip_cov([SelectionPart(lp, old, adv, mask)], cfg)
    cov = reference_cov(lp, adv, mask)
    r = (lp - old).exp().flatten().tolist()
    a = adv.flatten().tolist()
    cands = []
    for i, c in cov.items():
        clipped = (a[i] > 0 and r[i] > 2.0) or (a[i] < 0 and r[i] < 0.0)
        if 1.0 < c < 5.0 and not clipped:
            cands.append(i)
    assert cands, "test data must produce candidates"
    assert sel.n_candidates == len(cands)
    assert sel.masks[0].flatten().nonzero().flatten().tolist() == cands


def test_clip_cov_excludes_ppo_clipped_tokens():
    lp = torch.tensor([[-0.2, -0.2]])
    old = torch.tensor([[-0.2 - math.log(3.0), -0.2]])  # token 0 has ratio 3 > 1 + eps
    adv = torch.tensor([[3.0, 3.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # cov of both tokens is 0 here (single value per side); use a custom band including 0.
    cfg = ClipCovConfig(ratio=1.0, cov_low=-1.0, cov_high=1.0)
    sel = select_clip_cov([SelectionPart(lp, old, adv, mask)], cfg)
    assert sel.masks[0].tolist() == [[False, True]]


def test_clip_cov_count_is_floor_with_at_least_one():
    lp, old, adv, mask = make_batch()
    n = int(mask.sum())
    sel = select_clip_cov([SelectionPart(lp, old, adv, mask)], ClipCovConfig(ratio=2e-4))
    assert sel.n_selected == 1 == int(sel.masks[0].sum())
    sel = select_clip_cov([SelectionPart(lp, old, adv, mask)], ClipCovConfig(ratio=0.03))
    assert sel.n_selected == min(math.floor(0.03 * n), sel.n_candidates)
    # No candidate in the band: nothing selected.
    sel = select_clip_cov([SelectionPart(lp, old, adv, mask)], ClipCovConfig(cov_low=1e6, cov_high=1e7))
    assert sel.n_selected == 0 and not sel.masks[0].any()


def test_clip_cov_draw_is_uniform_and_seeded():
    lp, old, adv, mask = make_batch()
    cfg = ClipCovConfig(ratio=0.01)
    parts = [SelectionPart(lp, old, adv, mask)]
    a = select_clip_cov(parts, cfg, generator=torch.Generator().manual_seed(5)).masks[0]
    b = select_clip_cov(parts, cfg, generator=torch.Generator().manual_seed(5)).masks[0]
    c = select_clip_cov(parts, cfg, generator=torch.Generator().manual_seed(6)).masks[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Over many draws every candidate is picked about equally often.
    counts = torch.zeros_like(lp)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        counts += select_clip_cov(parts, cfg, generator=g).masks[0]
    cand = select_clip_cov(parts, ClipCovConfig(ratio=1.0)).masks[0]
    freq = counts[cand] / 400
    k, n_cand = a.sum().item(), cand.sum().item()
    assert counts[~cand].sum() == 0
    assert abs(freq.mean().item() - k / n_cand) < 1e-6
    assert freq.std().item() < 0.5 * k / n_cand


@pytest.mark.parametrize("n_parts", [2, 4, 8])
def test_selection_does_not_depend_on_the_micro_batch_split(n_parts):
    batch = make_batch(b=16, t=64, seed=11)
    whole = [SelectionPart(*batch)]
    for select, cfg, kw in (
        (select_kl_cov, KLCovConfig(ratio=0.01), {}),
        (select_clip_cov, ClipCovConfig(ratio=0.01), {"generator": None}),
    ):
        ref = select(whole, cfg, **({k: torch.Generator().manual_seed(1) for k in kw}))
        got = select(split(batch, n_parts), cfg, **({k: torch.Generator().manual_seed(1) for k in kw}))
        assert len(got.masks) == n_parts
        assert torch.equal(torch.cat(got.masks), ref.masks[0])
        assert ref.n_selected > 1
        assert (got.n_tokens, got.n_candidates, got.n_selected) == (ref.n_tokens, ref.n_candidates, ref.n_selected)


def plain_selection(lp, old, adv, mask, cfg, generator=None):
    """Both selections written plainly (boolean indexing, a stable sort) on the whole batch.

    The means are float64 sums of the valid values and cov_i is formed in the input dtype, as
    the paper's reference does; returns the selected flat indices, sorted.
    """
    m = mask.flatten()
    lp_v, adv_v = lp.flatten()[m], adv.flatten()[m]
    n = int(m.sum())
    mu_lp, mu_a = float(lp_v.double().sum()) / n, float(adv_v.double().sum()) / n
    cov = (lp.flatten() - mu_lp) * (adv.flatten() - mu_a)
    valid = m.nonzero().flatten()
    k = max(1, math.floor(cfg.ratio * n))
    if isinstance(cfg, KLCovConfig):
        order = torch.sort(-cov[valid], stable=True).indices  # ties: lower index first
        return valid[order[:k]].sort().values.tolist()
    log_ratio = (lp - old).flatten()
    a = adv.flatten()
    clipped = (a > 0) & (log_ratio > math.log1p(cfg.clip.eps_high))
    if cfg.clip.eps_low < 1:
        clipped |= (a < 0) & (log_ratio < math.log1p(-cfg.clip.eps_low))
    cand = (m & (cov > cfg.cov_low) & (cov < cfg.cov_high) & ~clipped).nonzero().flatten()
    chosen = torch.randperm(len(cand), generator=generator)[: min(k, len(cand))]
    return cand[chosen].sort().values.tolist()


def random_case(seed):
    """A ragged batch; every 5th has quantised values (ties), every 7th NaN in the padding,
    every 3rd a Clip-Cov bound equal to some token's cov_i."""
    g = torch.Generator().manual_seed(seed)
    b, t = (int(x) for x in torch.randint(1, 24, (2,), generator=g) * torch.tensor([1, 3]))
    old = -torch.rand(b, t, generator=g) * 6 * float(torch.rand(1, generator=g))
    lp = old + 0.5 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, 1, generator=g) * 2 + 0.2 * (seed % 2) * torch.randn(b, t, generator=g)
    if seed % 5 == 0:
        lp, adv = (lp * 2).round() / 2, adv.round()
    mask = torch.arange(t)[None, :] < torch.randint(0, t + 1, (b, 1), generator=g)
    mask[0, 0] = True
    if seed % 7 == 0:
        lp = lp.masked_fill(~mask, float("nan"))
    ratio = max(float(torch.rand(1, generator=g)) * 0.3, 1e-4)
    low = float(torch.rand(1, generator=g)) * 2 - 1
    if seed % 3 == 0:  # a bound equal to some token's cov_i (exclusive bounds drop it)
        m = mask.flatten()
        n = int(m.sum())
        cov = ((lp.flatten() - float(lp.flatten()[m].double().sum()) / n)
               * (adv.expand(b, t).flatten() - float(adv.expand(b, t).flatten()[m].double().sum()) / n))
        low = float(cov[m][int(torch.randint(n, (1,), generator=g))])
    eps = (1.0, 0.2)[seed % 2]
    cc = ClipCovConfig(ratio=ratio, cov_low=low, cov_high=low + 3, clip=PPOClip(eps, eps))
    return (lp, old, adv.contiguous(), mask), cc, KLCovConfig(ratio=ratio)


def test_selection_matches_a_plain_reference_on_random_batches():
    # Fast path (one buffer, float 0/1 flags, running counts) against plain_selection, over
    # splits into 1-4 micro-batches.
    for seed in range(300):
        batch, cc, kl = random_case(seed)
        parts = split(batch, min(1 + seed % 4, batch[0].shape[0]))
        got = select_kl_cov(parts, kl)
        flat = torch.cat([m.flatten() for m in got.masks]).nonzero().flatten().tolist()
        assert flat == plain_selection(*batch, kl), seed
        got = select_clip_cov(parts, cc, generator=torch.Generator().manual_seed(seed))
        flat = torch.cat([m.flatten() for m in got.masks]).nonzero().flatten().tolist()
        ref = plain_selection(*batch, cc, torch.Generator().manual_seed(seed))
        assert flat == ref, seed
        assert got.n_selected == len(ref)


def test_kl_cov_top_k_matches_a_plain_reference_with_many_ties():
    # Quantised values: many ties at the threshold, spread over the micro-batches.
    for seed, ratio in enumerate((1e-3, 4e-3, 0.02, 0.05)):
        lp, old, adv, mask = make_batch(b=32, t=256, seed=seed)
        lp = (lp * 2).round() / 2
        adv = adv.round()
        cfg = KLCovConfig(ratio=ratio)
        got = select_kl_cov(split((lp, old, adv, mask), 4), cfg)
        flat = torch.cat([m.flatten() for m in got.masks]).nonzero().flatten().tolist()
        assert flat == plain_selection(lp, old, adv, mask, cfg)


def test_parts_of_different_widths_select_as_their_flat_concatenation():
    a, b = make_batch(b=6, t=40, seed=4), make_batch(b=5, t=23, seed=5)
    flat = tuple(torch.cat([x.flatten(), y.flatten()])[None] for x, y in zip(a, b, strict=True))
    for select, cfg, kw in ((select_kl_cov, KLCovConfig(ratio=0.05), False),
                            (select_clip_cov, ClipCovConfig(ratio=0.05, cov_low=0.5), True)):
        gen = (lambda: {"generator": torch.Generator().manual_seed(2)}) if kw else dict
        got = select([SelectionPart(*a), SelectionPart(*b)], cfg, **gen())
        ref = select([SelectionPart(*flat)], cfg, **gen())
        assert [m.shape for m in got.masks] == [a[0].shape, b[0].shape]
        assert torch.equal(torch.cat([m.flatten() for m in got.masks]), ref.masks[0].flatten())
        assert ref.n_selected > 1


def test_bad_parts_name_the_argument():
    lp, old, adv, mask = make_batch()
    with pytest.raises(ValueError, match="parts"):
        select_kl_cov([])
    with pytest.raises(ValueError, match=r"parts\[1\]\.advantages"):
        select_kl_cov([SelectionPart(lp, old, adv, mask), SelectionPart(lp, old, adv[:, :3], mask)])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, n_parts, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    lp, old, adv, mask = make_batch(b=16, t=64, seed=11)
    rows = slice(rank * 16 // world, (rank + 1) * 16 // world)
    mine = tuple(x[rows] for x in (lp, old, adv, mask))
    ranks = Dist.from_process_group()
    kl = select_kl_cov(split(mine, n_parts), KLCovConfig(ratio=0.01), dist=ranks)
    cc = select_clip_cov(split(mine, n_parts), ClipCovConfig(ratio=0.01),
                         generator=torch.Generator().manual_seed(1), dist=ranks)
    out[rank] = (torch.cat(kl.masks), torch.cat(cc.masks), kl.n_selected, cc.n_selected)
    dist.barrier()
    # Leave without C++ teardown (see test_distributed_update.py); reached only on success.
    os._exit(0)


@pytest.mark.distributed
def test_two_ranks_select_the_same_tokens_as_one_process():
    batch = make_batch(b=16, t=64, seed=11)
    kl_ref = select_kl_cov([SelectionPart(*batch)], KLCovConfig(ratio=0.01))
    cc_ref = select_clip_cov([SelectionPart(*batch)], ClipCovConfig(ratio=0.01),
                             generator=torch.Generator().manual_seed(1))
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), 2, out), nprocs=2, join=True)
        kl = torch.cat([out[0][0], out[1][0]])
        cc = torch.cat([out[0][1], out[1][1]])
        assert out[0][2] == out[1][2] == kl_ref.n_selected
        assert out[0][3] == out[1][3] == cc_ref.n_selected
    assert torch.equal(kl, kl_ref.masks[0])
    assert torch.equal(cc, cc_ref.masks[0])
