import pytest
import torch

from entropyrl.losses import AGGREGATION_MODES, Denominators, aggregate

VALUES = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", (1 + 2 + 3 + 10 + 20) / 5),
        ("seq-mean-token-mean", ((1 + 2 + 3) / 3 + (10 + 20) / 2) / 2),
        ("seq-mean-token-sum", ((1 + 2 + 3) + (10 + 20)) / 2),
        ("seq-mean-token-sum-norm", (1 + 2 + 3 + 10 + 20) / (2 * 4)),
    ],
)
def test_modes_match_hand_formulas(mode, expected):
    out = aggregate(VALUES, MASK, mode)
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_norm_constant_sets_the_divisor():
    out = aggregate(VALUES, MASK, "seq-mean-token-sum-norm", norm_constant=100)
    assert out.item() == pytest.approx(36 / 200, rel=1e-6)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
@pytest.mark.parametrize("n_parts", [2, 3, 6])
def test_split_with_global_denominators_sums_to_whole(mode, n_parts):
    torch.manual_seed(0)
    values = torch.randn(6, 7)
    mask = torch.rand(6, 7) > 0.3
    mask[2] = False
    whole = aggregate(values, mask, mode)
    denominators = Denominators.of(mask)
    parts = zip(values.chunk(n_parts), mask.chunk(n_parts), strict=True)
    total = sum(aggregate(v, m, mode, denominators=denominators) for v, m in parts)
    assert torch.allclose(total, whole, rtol=1e-6, atol=1e-7)
    parts_den = sum((Denominators.of(m) for m in mask.chunk(n_parts)), Denominators(0, 0))
    assert parts_den == denominators


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_all_masked_gives_zero_loss_with_gradient_path(mode):
    values = torch.randn(3, 4, requires_grad=True)
    out = aggregate(values, torch.zeros(3, 4, dtype=torch.bool), mode)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(values.grad, torch.zeros(3, 4))


def test_nan_at_padding_does_not_leak():
    values = VALUES.clone()
    values[0, 3] = float("nan")
    values[1, 2] = float("inf")
    assert torch.isfinite(aggregate(values, MASK, "token-mean"))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="mode"):
        aggregate(VALUES, MASK, "token-sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask"):
        aggregate(VALUES, MASK[:, :3], "token-mean")
    with pytest.raises(ValueError, match="values"):
        aggregate(VALUES[0], MASK[0], "token-mean")
    with pytest.raises(ValueError, match="mask"):
        aggregate(VALUES, MASK.float() * 2, "token-mean")
