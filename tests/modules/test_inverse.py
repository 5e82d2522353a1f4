"""Inverse: swapped directions and shapes, log-det sign, conditions and flags passed on."""

import math

import pytest
import torch
from torch import nn

from invgraph.errors import InvGraphError
from invgraph.modules import Concat, HaarDownsampling, Inverse, InvertibleModule, Split


class _ConditionalScale(InvertibleModule):
    """z = x * exp(w * c): a learned, conditional block with an input-dependent log-det."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__(dims_in, dims_c)
        self.weight = nn.Parameter(torch.tensor(0.5))

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        (x,), (cond,) = x_or_z, c
        log_scale = self.weight * cond
        z = x * torch.exp(-log_scale if rev else log_scale)
        log_det = log_scale.sum(dim=1) * (-1 if rev else 1)
        return (z,), log_det if jac else None

    def output_dims(self, input_dims):
        return list(input_dims)


def test_swaps_directions_and_shapes(device, dtype):
    haar = HaarDownsampling([(2, 4, 6)], rebalance=0.5)
    inverse = Inverse(haar)
    assert inverse.dims_in == [(8, 2, 3)]
    assert inverse.output_dims([(8, 2, 3)]) == [(2, 4, 6)]
    z = torch.randn(3, 8, 2, 3, device=device, dtype=dtype)
    (x,), log_det = inverse((z,))
    assert torch.equal(x, haar((z,), rev=True)[0][0])
    assert log_det == pytest.approx(-48 * math.log(0.5))
    (back,), log_det = inverse((x,), rev=True)
    assert torch.equal(back, haar((x,))[0][0])
    assert log_det == pytest.approx(48 * math.log(0.5))


def test_passes_conditions_and_jac_and_exposes_parameters(device, dtype):
    block = _ConditionalScale([(3,)], dims_c=[(3,)]).to(device, dtype)
    inverse = Inverse(block)
    assert inverse.dims_c == [(3,)]
    assert list(inverse.parameters()) == [block.weight]
    x, c = (
        torch.randn(4, 3, device=device, dtype=dtype),
        torch.randn(4, 3, device=device, dtype=dtype),
    )
    (z,), log_det = inverse((x,), c=(c,))
    torch.testing.assert_close(z, x * torch.exp(-0.5 * c))
    torch.testing.assert_close(log_det, -0.5 * c.sum(dim=1))
    (back,), log_det = inverse((z,), c=(c,), rev=True, jac=False)
    torch.testing.assert_close(back, x)
    assert log_det is None


def test_inverse_of_a_split_is_a_concat():
    split = Split([(7, 2)], n_sections=3)
    inverse = Inverse(split)
    assert inverse.dims_in == [(3, 2), (2, 2), (2, 2)]
    assert inverse.output_dims(inverse.dims_in) == [(7, 2)]
    pieces = tuple(torch.randn(4, n, 2) for n in (3, 2, 2))
    (joined,), _ = inverse(pieces)
    assert torch.equal(joined, Concat(inverse.dims_in)(pieces)[0][0])


def test_inverse_of_inverse_runs_like_the_block():
    haar = HaarDownsampling([(1, 2, 4)])
    twice = Inverse(Inverse(haar))
    assert twice.dims_in == haar.dims_in
    x = torch.randn(2, 1, 2, 4)
    assert torch.equal(twice((x,))[0][0], haar((x,))[0][0])


def test_rejects_other_shapes_and_non_blocks():
    inverse = Inverse(HaarDownsampling([(2, 4, 6)]))
    with pytest.raises(InvGraphError, match=r"Inverse\(HaarDownsampling\): built for input shapes"):
        inverse.output_dims([(2, 4, 6)])
    with pytest.raises(InvGraphError, match=r"expects a built InvertibleModule, received Linear"):
        Inverse(nn.Linear(2, 2))
