import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from entropyrl.tokenstats import (
    TokenStats,
    default_chunk_rows,
    naive_token_stats,
    token_stats_from_hidden,
    token_stats_from_logits,
)

F32 = {"rtol": 1e-5, "atol": 1e-6}
F64 = {"rtol": 1e-10, "atol": 1e-12}


def make_logits(shape, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def make_tokens(shape, vocab, seed=1):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def weighted_grads(stats, inputs, seed=2):
    """Gradient of sum(w1 * logprobs) + sum(w2 * entropy), random weights of either sign."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(stats.logprobs.shape, generator=g, dtype=torch.float64)
    w2 = torch.randn(stats.logprobs.shape, generator=g, dtype=torch.float64)
    dtype = stats.logprobs.dtype
    loss = (stats.logprobs * w1.to(dtype)).sum() + (stats.entropy * w2.to(dtype)).sum()
    return torch.autograd.grad(loss, inputs)


# ---------------------------------------------------------------------- hand-built values
def test_hand_computed_two_token_distribution():
    # logits [0, ln 3] -> p = [1/4, 3/4]; the same at τ = 2 from logits [0, 2 ln 3].
    expected_h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    for logits, tau in (
        (torch.tensor([[0.0, math.log(3.0)]]), 1.0),
        (torch.tensor([[0.0, 2 * math.log(3.0)]]), 2.0),
    ):
        s = token_stats_from_logits(logits, torch.tensor([1]), temperature=tau)
        torch.testing.assert_close(s.logprobs, torch.tensor([math.log(0.75)]), **F32)
        torch.testing.assert_close(s.entropy, torch.tensor([expected_h]), **F32)
        s0 = token_stats_from_logits(logits, torch.tensor([0]), temperature=tau)
        torch.testing.assert_close(s0.logprobs, torch.tensor([math.log(0.25)]), **F32)


def test_uniform_logits_give_log_v_entropy_and_minus_log_v_logprob():
    logits = torch.full((2, 3, 7), 1.234)
    s = token_stats_from_logits(logits, torch.zeros(2, 3, dtype=torch.long), chunk_rows=4)
    torch.testing.assert_close(s.entropy, torch.full((2, 3), math.log(7.0)), **F32)
    torch.testing.assert_close(s.logprobs, torch.full((2, 3), -math.log(7.0)), **F32)


def test_gradient_matches_closed_form():
    # ∂log p_y/∂z = (onehot_y − p)/τ ; ∂H/∂z = −p (log p + H)/τ, on one hand-checkable row.
    tau = 1.7
    z = torch.tensor([[0.3, -1.2, 2.0, 0.0, 0.9]], requires_grad=True)
    y = torch.tensor([2])
    s = token_stats_from_logits(z, y, temperature=tau, chunk_rows=1)
    (g_lp,) = torch.autograd.grad(s.logprobs.sum(), z, retain_graph=True)
    (g_h,) = torch.autograd.grad(s.entropy.sum(), z)
    logp = torch.log_softmax(z.detach() / tau, -1)
    p, h = logp.exp(), -(logp.exp() * logp).sum()
    onehot = torch.nn.functional.one_hot(y, 5).float()
    torch.testing.assert_close(g_lp, (onehot - p) / tau, **F32)
    torch.testing.assert_close(g_h, -p * (logp + h) / tau, **F32)


# ---------------------------------------------------------------- equivalence with naive
SHAPES = [(1, 1, 7), (2, 5, 11), (3, 1, 13), (4, 9, 31)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("chunk_rows", [1, 3, 8, None])
@pytest.mark.parametrize("tau", [0.5, 1.0, 1.7])
def test_logits_match_naive_fp32(shape, chunk_rows, tau):
    logits = make_logits(shape).requires_grad_(True)
    tokens = make_tokens(shape[:-1], shape[-1])
    s = token_stats_from_logits(logits, tokens, temperature=tau, chunk_rows=chunk_rows)
    ref_logits = logits.detach().clone().requires_grad_(True)
    r = naive_token_stats(ref_logits, tokens, tau)
    assert s.logprobs.dtype == torch.float32 and s.logprobs.shape == shape[:-1]
    torch.testing.assert_close(s.logprobs, r.logprobs, **F32)
    torch.testing.assert_close(s.entropy, r.entropy, **F32)
    (g,) = weighted_grads(s, logits)
    (g_ref,) = weighted_grads(r, ref_logits)
    torch.testing.assert_close(g, g_ref, **F32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tau", [0.5, 1.7])
def test_low_precision_logits_computed_in_fp32(dtype, tau):
    logits = make_logits((3, 5, 17), dtype).requires_grad_(True)
    tokens = make_tokens((3, 5), 17)
    s = token_stats_from_logits(logits, tokens, temperature=tau, chunk_rows=4)
    up = logits.detach().float().requires_grad_(True)  # the same values, upcast
    r = naive_token_stats(up, tokens, tau)
    assert s.logprobs.dtype == torch.float32 and s.entropy.dtype == torch.float32
    torch.testing.assert_close(s.logprobs, r.logprobs, **F32)
    torch.testing.assert_close(s.entropy, r.entropy, **F32)
    (g,) = weighted_grads(s, logits)
    (g_ref,) = weighted_grads(r, up)
    assert g.dtype == dtype
    # The gradient is computed in fp32 and rounded once to the logits' dtype.
    torch.testing.assert_close(g.float(), g_ref.to(dtype).float(), rtol=2**-7, atol=1e-6)


def test_flat_rows_and_batched_agree():
    logits, tokens = make_logits((3, 4, 9)), make_tokens((3, 4), 9)
    flat = token_stats_from_logits(logits.view(12, 9), tokens.view(12), chunk_rows=5)
    batched = token_stats_from_logits(logits, tokens, chunk_rows=5)
    assert flat.logprobs.shape == (12,)
    torch.testing.assert_close(flat.logprobs.view(3, 4), batched.logprobs, rtol=0, atol=0)
    torch.testing.assert_close(flat.entropy.view(3, 4), batched.entropy, rtol=0, atol=0)


def test_strided_view_of_model_logits():
    # logits[:, :-1] of a model output cannot be flattened without a copy: per-row blocks.
    full = make_logits((3, 6, 10)).requires_grad_(True)
    tokens = make_tokens((3, 5), 10)
    s = token_stats_from_logits(full[:, :-1], tokens, chunk_rows=2, temperature=0.5)
    ref_full = full.detach().clone().requires_grad_(True)
    r = naive_token_stats(ref_full[:, :-1], tokens, 0.5)
    torch.testing.assert_close(s.logprobs, r.logprobs, **F32)
    torch.testing.assert_close(s.entropy, r.entropy, **F32)
    torch.testing.assert_close(weighted_grads(s, full)[0], weighted_grads(r, ref_full)[0], **F32)


def test_partial_use_logprobs_only_entropy_only_and_no_entropy():
    logits = make_logits((2, 3, 8)).requires_grad_(True)
    tokens = make_tokens((2, 3), 8)
    ref = logits.detach().clone().requires_grad_(True)
    r = naive_token_stats(ref, tokens, 1.3)
    s = token_stats_from_logits(logits, tokens, temperature=1.3, chunk_rows=2)
    for pick in (lambda t: t.logprobs, lambda t: t.entropy):
        (g,) = torch.autograd.grad((pick(s) ** 2).sum(), logits, retain_graph=True)
        (g_ref,) = torch.autograd.grad((pick(r) ** 2).sum(), ref, retain_graph=True)
        torch.testing.assert_close(g, g_ref, **F32)
    s2 = token_stats_from_logits(logits, tokens, temperature=1.3, with_entropy=False)
    assert s2.entropy is None
    (g,) = torch.autograd.grad(s2.logprobs.sum(), logits)
    (g_ref,) = torch.autograd.grad(r.logprobs.sum(), ref)
    torch.testing.assert_close(g, g_ref, **F32)


def test_no_grad_path_equals_grad_path():
    logits, tokens = make_logits((2, 7, 12)), make_tokens((2, 7), 12)
    plain = token_stats_from_logits(logits, tokens, chunk_rows=3, temperature=0.7)
    tracked = token_stats_from_logits(
        logits.requires_grad_(True), tokens, chunk_rows=3, temperature=0.7
    )
    assert tracked.logprobs.requires_grad and not plain.logprobs.requires_grad
    torch.testing.assert_close(plain.logprobs, tracked.logprobs.detach(), rtol=0, atol=0)
    torch.testing.assert_close(plain.entropy, tracked.entropy.detach(), rtol=0, atol=0)


def test_extreme_logits_stay_exact():
    # A very unlikely token (logit −1e4 next to +50): log p_y = x_y − lse must not lose lse.
    logits = torch.tensor([[50.0, -1.0e4, 0.0, 10.0]], requires_grad=True)
    tokens = torch.tensor([1])
    s = token_stats_from_logits(logits, tokens)
    ref = naive_token_stats(logits.detach().double(), tokens)
    torch.testing.assert_close(s.logprobs.double(), ref.logprobs, rtol=1e-6, atol=0)
    torch.testing.assert_close(s.entropy.double(), ref.entropy, rtol=1e-4, atol=1e-7)
    (g,) = weighted_grads(s, logits)
    assert torch.isfinite(g).all()


def test_empty_rows():
    s = token_stats_from_logits(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert s.logprobs.shape == (0,) and s.entropy.shape == (0,)
    h = token_stats_from_hidden(
        torch.zeros(2, 0, 3), torch.zeros(5, 3), torch.zeros(2, 0, dtype=torch.long)
    )
    assert h.logprobs.shape == (2, 0)


def test_default_chunk_rows_respects_budget():
    for vocab in (7, 32_000, 151_936, 10**9):
        for device, budget in (("cpu", 8 * 2**20), ("cuda", 128 * 2**20)):
            rows = default_chunk_rows(vocab, device)
            assert rows >= 1
            assert rows == 1 or (rows * vocab * 4 <= budget < (rows + 1) * vocab * 4)
    assert default_chunk_rows(32_000) == 65 and default_chunk_rows(151_936, "cuda") == 220


def test_gradcheck_float64_logits():
    logits = make_logits((2, 3, 5), torch.float64, scale=1.0).requires_grad_(True)
    tokens = make_tokens((2, 3), 5)

    def fn(z):
        s = token_stats_from_logits(z, tokens, temperature=0.8, chunk_rows=4)
        return s.logprobs, s.entropy

    assert torch.autograd.gradcheck(fn, (logits,))


# ------------------------------------------------------------------------- hidden states
def make_head(n_shape, d, v, dtype=torch.float32, bias=True):
    hidden = make_logits((*n_shape, d), dtype, scale=1.0, seed=3).requires_grad_(True)
    weight = make_logits((v, d), dtype, scale=0.7, seed=4).requires_grad_(True)
    b = make_logits((v,), dtype, scale=0.5, seed=5).requires_grad_(True) if bias else None
    return hidden, weight, b


def clone_leaves(*ts):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in ts]


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (13,)])
@pytest.mark.parametrize("chunk_rows", [1, 4, None])
@pytest.mark.parametrize("tau", [0.5, 1.7])
@pytest.mark.parametrize("with_bias", [True, False])
def test_hidden_matches_naive_fp32(shape, chunk_rows, tau, with_bias):
    hidden, weight, bias = make_head(shape, 6, 19, bias=with_bias)
    tokens = make_tokens(shape, 19)
    s = token_stats_from_hidden(
        hidden, weight, tokens, bias=bias, temperature=tau, chunk_rows=chunk_rows
    )
    rh, rw, rb = clone_leaves(hidden, weight, bias)
    logits = rh @ rw.T + (rb if rb is not None else 0.0)
    r = naive_token_stats(logits, tokens, tau)
    assert s.logprobs.shape == shape
    torch.testing.assert_close(s.logprobs, r.logprobs, **F32)
    torch.testing.assert_close(s.entropy, r.entropy, **F32)
    leaves = [t for t in (hidden, weight, bias) if t is not None]
    ref_leaves = [t for t in (rh, rw, rb) if t is not None]
    for g, g_ref in zip(weighted_grads(s, leaves), weighted_grads(r, ref_leaves), strict=True):
        torch.testing.assert_close(g, g_ref, **F32)


def test_hidden_frozen_head_and_non_contiguous_hidden():
    hidden, weight, bias = make_head((3, 5), 4, 11)
    weight.requires_grad_(False)
    tokens = make_tokens((3, 4), 11)
    s = token_stats_from_hidden(hidden[:, :-1], weight, tokens, bias=bias, chunk_rows=3)
    rh, rb = clone_leaves(hidden, bias)
    r = naive_token_stats(rh[:, :-1] @ weight.T + rb, tokens)
    for g, g_ref in zip(
        weighted_grads(s, [hidden, bias]), weighted_grads(r, [rh, rb]), strict=True
    ):
        torch.testing.assert_close(g, g_ref, **F32)


def test_hidden_bf16_against_fp32_on_same_values():
    hidden, weight, bias = make_head((2, 6), 8, 23, dtype=torch.bfloat16)
    tokens = make_tokens((2, 6), 23)
    s = token_stats_from_hidden(hidden, weight, tokens, bias=bias, chunk_rows=5, temperature=0.7)
    rh, rw, rb = (t.detach().float().requires_grad_(True) for t in (hidden, weight, bias))
    r = naive_token_stats(rh @ rw.T + rb, tokens, 0.7)
    # Logits are produced in bf16 (as the LM head would): tolerance of one bf16 rounding.
    torch.testing.assert_close(s.logprobs, r.logprobs, rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(s.entropy, r.entropy, rtol=2e-2, atol=5e-2)
    grads = weighted_grads(s, [hidden, weight, bias])
    for g, g_ref in zip(grads, weighted_grads(r, [rh, rw, rb]), strict=True):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), g_ref, rtol=5e-2, atol=5e-2)


def test_gradcheck_float64_hidden():
    hidden, weight, bias = make_head((2, 3), 3, 5, dtype=torch.float64)

    def fn(h, w, b):
        s = token_stats_from_hidden(
            h, w, make_tokens((2, 3), 5), bias=b, temperature=1.3, chunk_rows=4
        )
        return s.logprobs, s.entropy

    assert torch.autograd.gradcheck(fn, (hidden, weight, bias))


# --------------------------------------------------------------------------- bad inputs
def test_bad_logits_inputs():
    logits, tokens = make_logits((2, 3, 5)), make_tokens((2, 3), 5)
    cases = [
        (dict(logits=torch.zeros(2, 3, 5, dtype=torch.long)), "logits"),
        (dict(logits=torch.zeros(5)), "logits"),
        (dict(logits=torch.zeros(1, 2, 3, 5)), "logits"),
        (dict(logits=[[0.0]]), "logits"),
        (dict(tokens=tokens[:, :2]), "tokens"),
        (dict(tokens=tokens.view(6)), "tokens"),
        (dict(tokens=tokens.float()), "tokens"),
        (dict(tokens=tokens.bool()), "tokens"),
        (dict(tokens=torch.full((2, 3), 5)), "tokens"),
        (dict(tokens=torch.full((2, 3), -1)), "tokens"),
        (dict(tokens=torch.zeros(2, 3, dtype=torch.long, device="meta")), "tokens"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(chunk_rows=0), "chunk_rows"),
        (dict(chunk_rows=2.5), "chunk_rows"),
    ]
    for override, name in cases:
        kwargs = dict(logits=logits, tokens=tokens) | override
        with pytest.raises(ValueError, match=f"^{name}:"):
            token_stats_from_logits(kwargs.pop("logits"), kwargs.pop("tokens"), **kwargs)
    with pytest.raises(ValueError, match=r"^temperature:"):
        naive_token_stats(logits, tokens, 0.0)


def test_bad_hidden_inputs():
    hidden, weight, bias = (t.detach() for t in make_head((2, 3), 4, 7))
    tokens = make_tokens((2, 3), 7)
    cases = [
        (dict(hidden=hidden.long()), "hidden"),
        (dict(hidden=hidden[0, 0]), "hidden"),
        (dict(weight=weight[:, :3]), "weight"),
        (dict(weight=weight[0]), "weight"),
        (dict(weight=weight.double()), "weight"),
        (dict(weight=torch.zeros(7, 4, device="meta")), "weight"),
        (dict(bias=bias[:5]), "bias"),
        (dict(bias=bias.half()), "bias"),
        (dict(tokens=torch.full((2, 3), 7)), "tokens"),
        (dict(tokens=tokens[0]), "tokens"),
        (dict(temperature=0), "temperature"),
    ]
    for override, name in cases:
        kwargs = dict(hidden=hidden, weight=weight, tokens=tokens, bias=bias) | override
        args = (kwargs.pop("hidden"), kwargs.pop("weight"), kwargs.pop("tokens"))
        with pytest.raises(ValueError, match=f"^{name}:"):
            token_stats_from_hidden(*args, **kwargs)


# ------------------------------------------------------------------------ memory bounds
def saved_numels(fn):
    """Storage bytes of every tensor autograd saves for backward while ``fn`` runs."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


class NewAllocations(TorchDispatchMode):
    """Bytes of every tensor an op allocates (outputs not sharing storage with an input)."""

    def __init__(self):
        super().__init__()
        self.nbytes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.nbytes.append(t.untyped_storage().nbytes())
        return out


N_ROWS, VOCAB, CHUNK = 64, 1000, 4
FULL, CHUNK_BYTES = N_ROWS * VOCAB * 4, CHUNK * VOCAB * 4


def run_logits(fn):
    logits = make_logits((N_ROWS, VOCAB)).requires_grad_(True)
    tokens = make_tokens((N_ROWS,), VOCAB)
    stats, saved = saved_numels(lambda: fn(logits, tokens))
    big = [t for t in saved if t.numel() > N_ROWS and t.data_ptr() != logits.data_ptr()]
    mode = NewAllocations()
    with mode:
        weighted_grads(stats, logits)
    # The gradient of the logits itself ([N, V], needed by any method) is one allocation.
    return big, sorted(mode.nbytes, reverse=True)


def test_logits_backward_holds_at_most_a_chunk():
    big, allocs = run_logits(lambda z, y: token_stats_from_logits(z, y, chunk_rows=CHUNK))
    assert big == []  # only the logits (an input) and per-row values are saved
    assert allocs[0] == FULL and allocs[1] <= CHUNK_BYTES  # the grad, then chunk buffers
    # The check is meaningful: a plain implementation saves and allocates full-size tensors.
    big, allocs = run_logits(lambda z, y: naive_token_stats(z, y))
    assert sum(t.numel() for t in big) >= 2 * N_ROWS * VOCAB
    assert sum(a >= FULL for a in allocs) >= 3


def test_hidden_saves_no_logits_and_allocates_chunks_only():
    hidden, weight, bias = make_head((N_ROWS,), 8, VOCAB)
    tokens = make_tokens((N_ROWS,), VOCAB)
    stats, saved = saved_numels(
        lambda: token_stats_from_hidden(hidden, weight, tokens, bias=bias, chunk_rows=CHUNK)
    )
    assert max(t.numel() for t in saved) == weight.numel()  # inputs and per-row values
    mode = NewAllocations()
    with mode:
        weighted_grads(stats, [hidden, weight, bias])
    assert max(mode.nbytes) <= max(CHUNK_BYTES, weight.numel() * 4)


def test_result_is_named_tuple():
    s = token_stats_from_logits(make_logits((1, 2, 3)), make_tokens((1, 2), 3))
    assert isinstance(s, TokenStats) and s._fields == ("logprobs", "entropy")
