"""The rational-quadratic spline function, the spline couplings, and HINT (hint.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from registry import ConvSubnet, DenseSubnet
from torch import nn

import invgraph as ig
from invgraph.modules import HINTCouplingBlock
from invgraph.modules.clamping import atan_clamp
from invgraph.modules.splines import (
    ElementwiseRationalQuadraticSpline,
    RationalQuadraticSpline,
    _knots,
    rational_quadratic_spline,
)
from invgraph.testing import check_block

BINS = 6


def draw(shape, scale, bins=BINS, seed=0, dtype=torch.float64, device="cpu"):
    """Unnormalised spline parameters ``shape + (3 * bins - 1,)``, normal times ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    theta = scale * torch.randn(*shape, 3 * bins - 1, generator=generator, dtype=torch.float64)
    return theta.to(device, dtype)


def spline(x, theta, bound=3.0, rev=False, bins=BINS):
    widths, heights, derivatives = theta.split([bins, bins, bins - 1], dim=-1)
    return rational_quadratic_spline(x, widths, heights, derivatives, bound, rev)


def perturbed(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(scale * noise.to(parameter.dtype))
    return module


class ZeroSubnet(nn.Linear):
    """A linear subnet that starts at zero: the coupling starts as the identity."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


# --- the spline function -------------------------------------------------------------------


def test_knots_span_the_box_exactly_and_keep_the_minimum_bin_size(device, dtype):
    unnormalised = 30 * torch.randn(50, 8, dtype=dtype, device=device)  # extreme softmax
    knots, sizes = _knots(unnormalised, 2.5, 0.01)
    assert knots.shape == (50, 9) and sizes.shape == (50, 8)
    assert (knots[:, 0] == -2.5).all() and (knots[:, -1] == 2.5).all()
    rounding = 64 * torch.finfo(dtype).eps  # of the cumulative sums, about 2.5 in size
    assert (sizes >= 0.01 - rounding).all() and (knots.diff(dim=-1) > 0).all()
    torch.testing.assert_close(sizes.sum(-1), torch.full_like(sizes[:, 0], 5.0))


def test_monotonic_with_identity_tails(device, dtype):
    x = torch.linspace(-5, 5, 4001, dtype=dtype, device=device).expand(8, -1)
    theta = draw((8, 1), scale=3.0, dtype=dtype, device=device).expand(-1, 4001, -1)
    y, log_derivative = spline(x, theta)
    assert (y.diff(dim=-1) > 0).all() if dtype == torch.float64 else (y.diff(dim=-1) >= 0).all()
    outside = x.abs() > 3.0
    assert torch.equal(y[outside], x[outside])  # exactly the identity
    assert (log_derivative[outside] == 0).all()
    assert not torch.allclose(y[~outside], x[~outside], atol=0.1)  # a real spline inside
    edges = torch.tensor([-3.0, 3.0], dtype=dtype, device=device).expand(8, -1)
    y_edges, log_derivative_edges = spline(edges, theta[:, :2])
    torch.testing.assert_close(y_edges, edges)
    torch.testing.assert_close(log_derivative_edges, torch.zeros_like(edges))  # C^1 tails


def test_passes_through_the_knots_with_their_derivatives():
    theta = draw((20,), scale=2.0)
    widths, heights, derivatives = theta.split([BINS, BINS, BINS - 1], dim=-1)
    knots_x, _ = _knots(widths, 3.0, 1e-3)
    knots_y, _ = _knots(heights, 3.0, 1e-3)
    inner = 1e-3 + F.softplus(derivatives + math.log(math.expm1(1 - 1e-3)))
    d = torch.cat([torch.ones(20, 1), inner, torch.ones(20, 1)], dim=-1).double()
    at_knots = theta.unsqueeze(1).expand(-1, BINS + 1, -1)
    y, log_derivative = spline(knots_x, at_knots)
    torch.testing.assert_close(y, knots_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_derivative.exp(), d, rtol=1e-10, atol=0)


def test_inverse_of_forward_is_exact(device, dtype):
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    generator = torch.Generator().manual_seed(1)
    x = (8 * torch.rand(64, 40, generator=generator) - 4).to(device, dtype)
    theta = draw((64, 40), scale=0.5, dtype=dtype, device=device)  # slopes e^-4.6 .. e^2.4
    y, log_derivative = spline(x, theta)
    x_back, log_derivative_back = spline(y, theta, rev=True)
    torch.testing.assert_close(x_back, x, rtol=0, atol=tol)
    torch.testing.assert_close(log_derivative_back, -log_derivative, rtol=0, atol=tol)


def test_inverse_is_backward_stable_for_steep_parameters(device, dtype):
    """Slopes down to e^-20: g(g^-1(y)) = y to a few ulps, and x = g^-1(g(x)) to a few ulps
    of y divided by g'(x), the conditioning of the inverse (no worse)."""
    generator = torch.Generator().manual_seed(2)
    x = (6 * torch.rand(20000, generator=generator) - 3).to(device, dtype)
    theta = draw((20000,), scale=8.0, seed=2, bins=10, dtype=dtype, device=device)
    y, log_derivative = spline(x, theta, bins=10)
    x_back, _ = spline(y, theta, rev=True, bins=10)
    y_again, _ = spline(x_back, theta, bins=10)
    ulps_of_y = torch.finfo(dtype).eps * (y.abs() + 3.0)
    assert ((y_again - y).abs() <= 64 * ulps_of_y).all()
    assert ((x_back - x).abs() <= 64 * ulps_of_y / log_derivative.exp()).all()


@pytest.mark.parametrize("rev", [False, True], ids=["forward", "inverse"])
def test_log_derivative_matches_autograd(rev):
    generator = torch.Generator().manual_seed(3)
    x = (8 * torch.rand(500, generator=generator, dtype=torch.float64) - 4).requires_grad_()
    theta = draw((500,), scale=2.0, seed=3)
    y, log_derivative = spline(x, theta, rev=rev)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative, derivative.log(), rtol=0, atol=1e-10)


def test_zero_parameters_and_one_bin_are_the_identity():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    for bins, theta in [(BINS, torch.zeros(101, 3 * BINS - 1)), (1, draw((101,), 5.0, bins=1))]:
        for rev in (False, True):
            y, log_derivative = spline(x, theta.double(), rev=rev, bins=bins)
            torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
            torch.testing.assert_close(log_derivative, torch.zeros_like(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [50.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_extreme_parameters_stay_finite_with_finite_gradients(scale, dtype):
    generator = torch.Generator().manual_seed(4)
    n = 5000
    signs = torch.randint(-1, 2, (n, 3 * BINS - 1), generator=generator)  # -1, 0, +1
    theta = (scale * signs).to(dtype).requires_grad_()
    x = (8 * torch.rand(n, generator=generator) - 4).to(dtype).requires_grad_()
    for rev in (False, True):
        y, log_derivative = spline(x, theta, rev=rev)
        assert y.isfinite().all() and log_derivative.isfinite().all()
        assert y.abs().max() <= 4.0
        x_grad, theta_grad = torch.autograd.grad((y + log_derivative).sum(), (x, theta))
        assert x_grad.isfinite().all() and theta_grad.isfinite().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_absurd_parameters_still_give_finite_values(dtype):
    theta = torch.tensor([-1e30, 0.0, 1e30], dtype=dtype)[torch.randint(0, 3, (2000, 17))]
    x = 8 * torch.rand(2000, dtype=dtype) - 4
    for rev in (False, True):
        y, log_derivative = spline(x, theta, rev=rev)
        assert y.isfinite().all() and log_derivative.isfinite().all()


# --- the blocks ------------------------------------------------------------------------------

CASES = {
    "rqs-vector": lambda: RationalQuadraticSpline([(6,)], subnet_constructor=DenseSubnet),
    "rqs-vector-cond-tails": lambda: RationalQuadraticSpline(
        [(7,)], [(3,)], DenseSubnet, bins=5, bound=1.0
    ),
    "rqs-split-len": lambda: RationalQuadraticSpline([(6,)], None, DenseSubnet, split_len=2),
    "rqs-image": lambda: RationalQuadraticSpline([(2, 4, 4)], None, ConvSubnet, bins=4),
    "rqs-image-vector-cond": lambda: RationalQuadraticSpline(
        [(2, 4, 4)], [(3,)], ConvSubnet, bins=4, bound=1.5
    ),
    "rqs-image-spatial-cond": lambda: RationalQuadraticSpline([(2, 4, 4)], [(1, 4, 4)], ConvSubnet),
    "elementwise-vector": lambda: ElementwiseRationalQuadraticSpline([(6,)], bound=1.0),
    "elementwise-image": lambda: ElementwiseRationalQuadraticSpline([(2, 4, 4)], bins=4),
    "elementwise-vector-cond": lambda: ElementwiseRationalQuadraticSpline(
        [(6,)], [(3,)], DenseSubnet
    ),
    "elementwise-image-vector-cond": lambda: ElementwiseRationalQuadraticSpline(
        [(2, 4, 4)], [(3,)], ConvSubnet, bins=4, bound=1.0
    ),
    "hint-vector": lambda: HINTCouplingBlock([(8,)], subnet_constructor=DenseSubnet),
    "hint-odd-cond": lambda: HINTCouplingBlock([(7,)], [(3,)], DenseSubnet, clamp=1.5),
    "hint-max-splits": lambda: HINTCouplingBlock([(8,)], None, DenseSubnet, max_splits=1),
    "hint-image-vector-cond": lambda: HINTCouplingBlock(
        [(4, 4, 4)], [(3,)], ConvSubnet, clamp_activation="TANH"
    ),
}


@pytest.mark.parametrize("factory", CASES.values(), ids=CASES.keys())
def test_properties(factory, device):
    # perturb 0.3: far from the identity, while the splines' inverses stay well enough
    # conditioned for the 1e-10 round trip in float64 (steeper: see the conditioning test)
    torch.manual_seed(0)
    check_block(factory(), perturb=0.3, device=device).assert_ok()


def test_zero_subnets_give_the_identity():
    block = RationalQuadraticSpline([(6,)], [(2,)], subnet_constructor=ZeroSubnet)
    x, c = 2 * torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    (z,), log_det = block.double()((x,), c=(c,))
    torch.testing.assert_close(z, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_det, torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)


def test_coupling_transforms_both_halves_with_freia_masters_subnet_names():
    torch.manual_seed(0)
    block = perturbed(RationalQuadraticSpline([(5,)], subnet_constructor=DenseSubnet, bins=4))
    assert {key.split(".")[0] for key in block.state_dict()} == {"subnet1", "subnet2"}
    assert block.subnet1[-1].out_features == 2 * 11  # x_1: 2 channels, 3 * 4 - 1 each
    assert block.subnet2[-1].out_features == 3 * 11
    x = torch.rand(4, 5) - 0.5
    (z,), _ = block((x,))
    assert ((z - x).abs() > 1e-4).all()  # both halves move (two-sided, as FrEIA master)


def test_elementwise_spline_is_diagonal_per_element_and_identity_in_the_tails():
    block = perturbed(ElementwiseRationalQuadraticSpline([(2, 3)], bound=1.0)).double()
    assert set(block.state_dict()) == {"spline_parameters"}
    assert block.spline_parameters.shape == (2 * 29, 3)
    x = torch.full((1, 2, 3), 0.3, dtype=torch.float64)
    jacobian = torch.func.jacrev(lambda v: block((v,))[0][0])(x).reshape(6, 6)
    assert torch.equal(jacobian, torch.diag(jacobian.diagonal()))
    assert jacobian.diagonal().unique().numel() == 6  # each element has its own spline
    outside = torch.tensor([[[1.5, -2.0, 7.0], [-1.01, 3.0, 1.2]]], dtype=torch.float64)
    (z,), log_det = block((outside,))
    assert torch.equal(z, outside) and log_det.abs().max() == 0


def test_conditional_elementwise_spline_depends_on_the_conditions_only():
    torch.manual_seed(0)
    block = perturbed(ElementwiseRationalQuadraticSpline([(3,)], [(2,)], DenseSubnet))
    assert {key.split(".")[0] for key in block.state_dict()} == {"subnet"}
    x = torch.rand(1, 3).expand(2, -1)
    (z,), _ = block((x,), c=(torch.tensor([[0.0, 1.0], [1.0, 0.0]]),))
    assert not torch.allclose(z[0], z[1])
    with pytest.raises(ig.InvGraphError, match="needs subnet_constructor"):
        ElementwiseRationalQuadraticSpline([(3,)], [(2,)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bins": 0}, "bins >= 1 and bound > 0"),
        ({"bound": 0.0}, "bins >= 1 and bound > 0"),
        ({"bins": 10, "bound": 1.0, "min_bin_sizes": (0.2, 0.01)}, "leave room for 10 bins"),
        ({"min_bin_sizes": (1e-3, 0.0)}, "must be > 0"),
        ({"min_derivative": 1.0}, r"min_derivative=1.0 must be in \(0, 1\)"),
    ],
)
def test_spline_errors(kwargs, message):
    with pytest.raises(ig.InvGraphError, match=f"RationalQuadraticSpline: .*{message}"):
        RationalQuadraticSpline([(4,)], subnet_constructor=DenseSubnet, **kwargs)
    with pytest.raises(ig.InvGraphError, match="needs subnet_constructor"):
        RationalQuadraticSpline([(4,)])


# --- HINT ------------------------------------------------------------------------------------


def test_hint_recursion_tree():
    block = HINTCouplingBlock([(7,)], subnet_constructor=DenseSubnet)
    assert (block.upper.dims_in, block.lower.dims_in) == ([(3,)], [(4,)])
    assert block.upper.upper is None  # 3 < 2 * min_split_size: a leaf
    assert block.lower.upper.dims_in == [(2,)] and block.lower.upper.upper is None
    assert HINTCouplingBlock([(8,)], None, DenseSubnet, max_splits=1).upper.upper is None
    assert HINTCouplingBlock([(8,)], None, DenseSubnet, min_split_size=3).upper.upper is None
    assert HINTCouplingBlock([(3,)], None, DenseSubnet).upper is None


def test_hint_follows_its_definition():
    """y = [u_1, u_2 exp(s(u_1, c)) + t(u_1, c)], u_i = H_i(x_i; c); log-det sums the levels."""
    torch.manual_seed(0)
    block = perturbed(HINTCouplingBlock([(6,)], [(2,)], DenseSubnet, clamp=1.5)).double()
    x, c = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    (u1,), log_det_1 = block.upper((x[:, :3],), c=(c,))
    (u2,), log_det_2 = block.lower((x[:, 3:],), c=(c,))
    log_scale = 1.5 * atan_clamp(block.s(torch.cat([u1, c], dim=1)))
    y2 = u2 * torch.exp(log_scale) + block.t(torch.cat([u1, c], dim=1))
    (z,), log_det = block((x,), c=(c,))
    torch.testing.assert_close(z, torch.cat([u1, y2], dim=1))
    torch.testing.assert_close(log_det, log_det_1 + log_det_2 + log_scale.sum(dim=1))
    (x_back,), log_det_back = block((z,), c=(c,), rev=True)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, -log_det)


def test_hint_jacobian_is_dense_lower_triangular():
    torch.manual_seed(0)
    block = perturbed(HINTCouplingBlock([(8,)], subnet_constructor=DenseSubnet)).double()
    x = torch.randn(1, 8, dtype=torch.float64)
    jacobian = torch.func.jacrev(lambda v: block((v,))[0][0])(x).reshape(8, 8)
    assert torch.equal(jacobian.triu(1), torch.zeros(8, 8, dtype=torch.float64))
    below = torch.ones(8, 8, dtype=torch.bool).tril()
    assert (jacobian[below].abs() > 1e-6).all()  # every output depends on all earlier inputs


def test_hint_passes_the_conditions_to_every_level():
    torch.manual_seed(0)
    block = perturbed(HINTCouplingBlock([(8,)], [(2,)], DenseSubnet))
    x = torch.randn(1, 8).expand(2, -1)
    (z,), _ = block((x,), c=(torch.tensor([[0.0, 1.0], [1.0, 0.0]]),))
    assert torch.equal(z[0, 0], x[0, 0])  # the leftmost leaf keeps its first channel
    assert ((z[0, 1:] - z[1, 1:]).abs() > 1e-5).all()  # everything else sees c, at all depths


def test_hint_errors():
    with pytest.raises(ig.InvGraphError, match=r"HINTCouplingBlock: input shape \(1,\) has 1 ch"):
        HINTCouplingBlock([(1,)], subnet_constructor=DenseSubnet)
    with pytest.raises(ig.InvGraphError, match="min_split_size=1"):
        HINTCouplingBlock([(8,)], subnet_constructor=DenseSubnet, min_split_size=1)
    with pytest.raises(ig.InvGraphError, match="needs subnet_constructor"):
        HINTCouplingBlock([(8,)])


# --- all of them -----------------------------------------------------------------------------


def test_compile_without_graph_breaks():
    torch._dynamo.reset()
    torch.manual_seed(0)
    blocks = [
        perturbed(RationalQuadraticSpline([(6,)], [(2,)], DenseSubnet, bound=1.0)),
        perturbed(ElementwiseRationalQuadraticSpline([(6,)], bound=1.0)),
        perturbed(HINTCouplingBlock([(6,)], [(2,)], DenseSubnet)),
    ]
    x, c = 2 * torch.randn(3, 6), (torch.randn(3, 2),)
    for block in blocks:
        conditions = c if block.dims_c else ()
        compiled = torch.compile(block, fullgraph=True, backend="eager")
        (z,), log_det = compiled((x,), conditions)
        (z_eager,), log_det_eager = block((x,), conditions)
        torch.testing.assert_close(z, z_eager)
        torch.testing.assert_close(log_det, log_det_eager)
        (x_back,), _ = compiled((z,), conditions, rev=True)
        torch.testing.assert_close(x_back, x, atol=1e-4, rtol=1e-4)
