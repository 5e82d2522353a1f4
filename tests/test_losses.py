"""Tests of invgraph.losses: the MMD estimators against a direct double loop, and padding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from invgraph.errors import InvGraphError
from invgraph.losses import mmd, remove_padding, zero_padding

WIDTHS = (0.05, 0.2, 0.9)
KERNELS = ["inverse_multiquadric", "gaussian"]


def _kernel(a: torch.Tensor, b: torch.Tensor, name: str) -> float:
    d2 = float(((a - b) ** 2).sum())
    if name == "inverse_multiquadric":
        return sum(h**2 / (h**2 + d2) for h in WIDTHS)
    return sum(math.exp(-d2 / (2 * h**2)) for h in WIDTHS)


def _loop_mmd(x: torch.Tensor, y: torch.Tensor, name: str, estimator: str) -> float:
    """MMD² written pair by pair, straight from the definition."""

    def within(s: torch.Tensor) -> float:
        pairs = [
            _kernel(s[i], s[j], name)
            for i in range(len(s))
            for j in range(len(s))
            if estimator == "biased" or i != j
        ]
        return sum(pairs) / len(pairs)

    across = sum(_kernel(a, b, name) for a in x for b in y) / (len(x) * len(y))
    return within(x) + within(y) - 2 * across


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_double_loop(kernel, estimator):
    torch.manual_seed(0)
    x = 0.3 * torch.randn(5, 3, dtype=torch.float64)
    y = 0.3 * torch.randn(4, 3, dtype=torch.float64) + 0.1
    expected = _loop_mmd(x, y, kernel, estimator)
    got = mmd(x, y, kernel=kernel, widths=WIDTHS, estimator=estimator)
    assert got.dtype == torch.float64 and got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_callable_kernel_matches_named_kernel():
    torch.manual_seed(1)
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)

    def imq(d2: torch.Tensor) -> torch.Tensor:
        return sum(1 / (1 + d2 / h**2) for h in WIDTHS)

    torch.testing.assert_close(mmd(x, y, kernel=imq), mmd(x, y))


def test_widths_divide_the_squared_distance():
    # One width h, two points at distance r: the IMQ kernel between them is 1 / (1 + r²/h²).
    x = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([[3.0, 4.0]], dtype=torch.float64)  # r = 5
    got = mmd(x, y, widths=(2.0,), estimator="biased")  # k(x,x) + k(y,y) - 2 k(x,y)
    assert got.item() == pytest.approx(2 - 2 / (1 + 25 / 4))


@pytest.mark.parametrize("kernel", KERNELS)
def test_unbiased_estimator_averages_to_zero_on_equal_distributions(kernel):
    # 2000 draws of n = m = 8: the standard error of the mean is ~0.0025 (measured for
    # both kernels), so 0.015 is ~6 standard errors; the biased mean is ~0.66.
    torch.manual_seed(2)
    draws = torch.randn(2000, 2, 8, 2, dtype=torch.float64)
    unbiased = torch.stack([mmd(x, y, kernel=kernel) for x, y in draws])
    biased = torch.stack([mmd(x, y, kernel=kernel, estimator="biased") for x, y in draws])
    assert unbiased.mean().abs() < 0.015
    assert (unbiased < 0).any()  # a true U-statistic dips below zero
    assert biased.mean() > 0.5 and (biased > 0).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_biased_mmd_of_a_sample_with_itself_is_exactly_zero(kernel):
    x = torch.randn(10, 3)
    assert mmd(x, x, kernel=kernel, estimator="biased").item() == 0.0
    # The unbiased estimator of the same set is not zero: it drops the diagonal of k(x, x)
    # but keeps it in k(x, y).
    assert mmd(x, x, kernel=kernel).item() < 0.0


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_grows_with_a_mean_shift(kernel, estimator):
    torch.manual_seed(3)
    x, y = 0.5 * torch.randn(64, 2), 0.5 * torch.randn(64, 2)
    values = [mmd(x, y + shift, kernel=kernel, estimator=estimator) for shift in (0, 0.3, 1, 3)]
    assert all(a < b for a, b in itertools.pairwise(values)), values


def test_gradients_reach_both_samples_and_are_finite():
    torch.manual_seed(4)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    mmd(torch.cat([x, x[:1]]), y).backward()  # a repeated row: distance 0, still finite
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    x2, y2 = x.detach().requires_grad_(), y.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: mmd(a, b, kernel="gaussian"), (x2, y2))


def test_device_and_dtype(device, dtype):
    x = torch.randn(5, 2, device=device, dtype=dtype)
    out = mmd(x, x + 1)
    assert out.device == x.device and out.dtype == dtype


def test_meta_device():
    out = mmd(torch.empty(5, 4, device="meta"), torch.empty(3, 4, device="meta"))
    assert out.device.type == "meta" and out.shape == ()


def test_compiles_without_graph_breaks():
    torch._dynamo.reset()
    compiled = torch.compile(mmd, fullgraph=True, backend="eager")
    x, y = torch.randn(5, 2), torch.randn(6, 2)
    torch.testing.assert_close(compiled(x, y), mmd(x, y))


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "kwargs", "match"),
    [
        ((5, 3), (5, 4), {}, r"\(5, 3\) and \(5, 4\)"),
        ((5, 3, 1), (5, 3), {}, r"\(n, d\)"),
        ((1, 3), (5, 3), {}, "at least 2"),
        ((5, 3), (1, 3), {}, "at least 2"),
        ((0, 3), (5, 3), {"estimator": "biased"}, "at least 1"),
        ((5, 3), (5, 3), {"estimator": "V"}, "estimator"),
        ((5, 3), (5, 3), {"kernel": "laplace"}, "kernel"),
        ((5, 3), (5, 3), {"widths": ()}, "widths"),
        ((5, 3), (5, 3), {"widths": (0.5, 0.0)}, "widths"),
    ],
)
def test_errors(x_shape, y_shape, kwargs, match):
    with pytest.raises(InvGraphError, match=match):
        mmd(torch.randn(x_shape), torch.randn(y_shape), **kwargs)


def test_one_sample_each_is_enough_for_the_biased_estimator():
    assert mmd(torch.zeros(1, 2), torch.ones(1, 2), estimator="biased") > 0


def test_zero_padding_round_trip_and_errors():
    x = torch.randn(3, 2, requires_grad=True)
    padded = zero_padding(x, 5)
    assert padded.shape == (3, 5) and (padded[:, 2:] == 0).all()
    torch.testing.assert_close(remove_padding(padded, 2), x)
    padded.sum().backward()
    assert (x.grad == 1).all()
    assert zero_padding(x, 2).shape == (3, 2)
    with pytest.raises(InvGraphError, match=r"d <= 1"):
        zero_padding(x, 1)
    with pytest.raises(InvGraphError, match=r"D >= 3"):
        remove_padding(x, 3)
