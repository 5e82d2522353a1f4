"""BoundedSupport (bounded.py) and the circular spline coupling (splines.py).

BoundedSupport: samples never leave the support, whatever the latent; log-dets against
autograd in both directions; a flow trained on a box keeps its samples in the box.
CircularRationalQuadraticSpline: a bijection of the circle, periodic and C^1 at the seam,
with the exact log-det.
"""

from __future__ import annotations

import math

import pytest
import torch
from registry import ConvSubnet, DenseSubnet
from torch import nn

import invgraph as ig
from invgraph.modules import BoundedSupport, CircularRationalQuadraticSpline
from invgraph.modules.splines import rational_quadratic_spline

INF = math.inf
EXTREMES = [1e3, 100.0, 40.0, 37.0, 17.5, 17.0, 16.0, 1.0, 1e-3, 0.0]


def extreme_latents(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``(batch, n)`` latents: the extremes of both signs, the largest floats, wide noise."""
    big = torch.finfo(dtype).max
    values = torch.tensor([*EXTREMES, *(-v for v in EXTREMES), big, -big], dtype=dtype)
    noise = 30 * torch.randn(64, n, generator=torch.Generator().manual_seed(0)).to(dtype)
    return torch.cat([values[:, None].expand(-1, n), noise])


# (low, high) per element: boxes (wide, narrow, far from 0), half-lines both ways, identity.
LOW = [0.0, -1.0, 1e3, 0.1, -3.0, -INF, 2.0, -INF]
HIGH = [1.0, 1.0, 1e3 + 1e-2, 0.7, INF, 5.0, INF, INF]


def mixed_block(dtype: torch.dtype = torch.float64) -> BoundedSupport:
    return BoundedSupport([(len(LOW),)], low=LOW, high=HIGH).to(dtype)


def inside(block: BoundedSupport, x: torch.Tensor) -> torch.Tensor:
    return (x >= block.low) & (x <= block.high)


# --- never leaking ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_never_leave_the_support(dtype):
    block = mixed_block(dtype)
    z = extreme_latents(len(LOW), dtype)
    with torch.no_grad():
        (x,), log_det = block((z,), rev=True)
    assert x.dtype == dtype and x.isfinite().all()
    assert inside(block, x).all()
    # no log(sigmoid) underflow: z = -1e3 gives -1e3 (the largest floats overflow the sum)
    assert log_det[: 2 * len(EXTREMES)].isfinite().all() and log_det[-64:].isfinite().all()
    # the extremes reach the bounds at worst, never beyond: the box (0, 1) at z = -+1e3
    assert x[0, 0] == 1.0 and x[len(EXTREMES), 0] == 0.0


def test_the_naive_scaled_sigmoid_leaks_and_the_block_does_not():
    """``low + (high - low) * sigmoid(z)`` passes ``high`` by rounding in float32 (measured:
    5703 of these 65536 samples); the block, evaluated from the nearer bound, never does."""
    generator = torch.Generator().manual_seed(1)
    low = -5 + 4.9 * torch.rand(2048, generator=generator)
    high = 0.1 + 5 * torch.rand(2048, generator=generator)
    sign = torch.tensor([1.0, -1.0]).repeat(16)[:, None]
    z = (14 + 8 * torch.rand(32, 2048, generator=generator)) * sign
    naive = low + (high - low) * torch.sigmoid(z)
    assert ((naive > high) | (naive < low)).sum() > 1000
    block = BoundedSupport([(2048,)], low=low, high=high)
    with torch.no_grad():
        (x,), _ = block((z,), rev=True)
    assert inside(block, x).all()
    assert (x == high).sum() > 1000  # on the bound, as documented, but never beyond


def test_half_lines_stay_on_their_side_for_huge_latents():
    block = BoundedSupport([(2,)], low=[5.0, -INF], high=[INF, -5.0])
    z = torch.tensor([[-1e3, 1e3], [-1e30, 1e30], [1e3, -1e3], [1e30, -1e30], [-104.0, 104.0]])
    with torch.no_grad():
        (x,), log_det = block((z,), rev=True)
    assert (x[:, 0] >= 5.0).all() and (x[:, 1] <= -5.0).all()
    assert x[0].tolist() == [5.0, -5.0] and x[2].tolist() == [1005.0, -1005.0]
    assert log_det.isfinite().all()
    torch.testing.assert_close(log_det[0], torch.tensor(-2e3))  # logsigmoid(-1e3) twice


def test_a_sample_on_a_bound_maps_to_infinity_as_documented():
    block = BoundedSupport([(2,)], low=0.0, high=1.0)
    (x,), inverse_log_det = block((torch.tensor([[40.0, -200.0]]),), rev=True)
    assert x.tolist() == [[1.0, 0.0]] and inverse_log_det.isfinite().all()  # float32
    (z,), log_det = block((x,))
    assert z.tolist() == [[INF, -INF]] and log_det.item() == INF
    (z,), _ = block((torch.tensor([[1.5, -0.5]]),))  # outside: NaN, not checked
    assert z.isnan().all()


# --- log-dets --------------------------------------------------------------------------------


def autograd_log_det(block: nn.Module, v: torch.Tensor, rev: bool) -> torch.Tensor:
    """``log|det J|`` per sample from ``torch.func.jacrev`` and ``slogdet``."""

    def one(sample: torch.Tensor) -> torch.Tensor:
        (out,), _ = block((sample[None],), rev=rev)
        return out[0].flatten()

    jacobians = torch.stack(
        [torch.func.jacrev(one)(sample).reshape(v[0].numel(), -1) for sample in v]
    )
    return torch.linalg.slogdet(jacobians)[1]


def test_log_det_matches_autograd_in_both_directions():
    block = mixed_block()
    # z = 20: deep in the tails, yet no element on its bound (the narrow box at 1e3 is
    # 1e-2 * e^-20 = 2e-11 from it); on a bound the guard's clamp decides the autograd
    # reference, and torch versions differ there (2.14 gave log 2 less at equality)
    z = torch.cat(
        [torch.randn(6, len(LOW), dtype=torch.float64) * 3, torch.full((1, len(LOW)), 20.0)]
    )
    (x,), inverse_log_det = block((z,), rev=True)
    torch.testing.assert_close(
        inverse_log_det, autograd_log_det(block, z, rev=True), rtol=1e-10, atol=1e-10
    )
    x = x[:6]  # z = 20: the narrow box's value is within 1e-2 relative rounding of its bound
    (z_back,), log_det = block((x,))
    torch.testing.assert_close(
        log_det, autograd_log_det(block, x, rev=False), rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(log_det, -inverse_log_det[:6], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(z_back, z[:6], rtol=1e-8, atol=1e-8)


def test_log_det_is_exact_where_the_slope_underflows():
    """At z = -+1e3 the slope underflows to 0 (autograd: log 0); the log-det is still
    log w - 1e3 per box, log sigmoid(-+1e3) per half-line."""
    block = BoundedSupport([(3,)], low=[0.0, 2.0, -INF], high=[4.0, INF, 0.0]).double()
    z = torch.tensor([[1e3, -1e3, 1e3], [-1e3, 1e3, -1e3]], dtype=torch.float64)
    (_,), log_det = block((z,), rev=True)
    expected = torch.tensor(
        [math.log(4.0) - 1e3 - 1e3 - 1e3, math.log(4.0) - 1e3], dtype=torch.float64
    )
    torch.testing.assert_close(log_det, expected)


def test_image_shaped_bounds_broadcast_and_round_trip():
    low = torch.tensor([0.0, -INF]).reshape(2, 1, 1)
    block = BoundedSupport([(2, 3, 3)], low=low, high=torch.tensor([1.0, 2.0, INF])).double()
    assert block.low.shape == block.high.shape == (2, 3, 3)
    z = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    (x,), inverse_log_det = block((z,), rev=True)
    (z_back,), log_det = block((x,))
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(log_det, -inverse_log_det)
    assert torch.equal(x[:, 1, :, 2], z[:, 1, :, 2])  # both infinite: the identity


def test_bounds_are_saved_and_moved_with_the_block():
    block = BoundedSupport([(2,)], low=[0.0, 1.0], high=[1.0, 3.0])
    assert set(block.state_dict()) == {"low", "high"}
    assert block.double().low.dtype == torch.float64
    other = BoundedSupport([(2,)]).double()
    other.load_state_dict(block.state_dict())
    assert other.high.tolist() == [1.0, 3.0]


# --- a flow on a box -------------------------------------------------------------------------


def test_a_flow_trained_on_a_box_samples_inside_it():
    torch.manual_seed(0)
    low, high = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 2.0])
    inn = ig.SequenceINN(2)
    inn.append(BoundedSupport, low=low, high=high)
    for k in range(2):
        inn.append(ig.RationalQuadraticSpline, subnet_constructor=DenseSubnet, bins=6, bound=5.0)
        inn.append(ig.PermuteRandom, seed=k)
    optimiser = torch.optim.Adam(inn.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        x = low + (high - low) * torch.rand(256, 2)
        z, log_det = inn(x)
        nll = (0.5 * z.square().sum(1) + math.log(2 * math.pi) - log_det).mean()
        losses.append(nll.item())
        optimiser.zero_grad()
        nll.backward()
        optimiser.step()
    # the uniform density on the box has NLL log 3 = 1.10; measured: 5.6 -> 1.5
    assert sum(losses[-20:]) / 20 < losses[0] - 2, (losses[0], losses[-20:])
    with torch.no_grad():
        z = torch.cat([torch.randn(20000, 2), 50 * torch.randn(1000, 2)])
        x, log_det = inn(z, rev=True)
    assert ((x >= low) & (x <= high)).all() and log_det.isfinite().all()
    centre = x[:20000].mean(0)  # the samples fill the box: centred as the uniform
    torch.testing.assert_close(centre, (low + high) / 2, rtol=0, atol=0.1)


# --- argument errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"low": [0.0, 2.0, 0.0], "high": 1.0},
            r"needs low < high.*index \(1,\) low=2.0 >= high=1.0",
        ),
        ({"low": 1.0, "high": 1.0}, r"needs low < high.*low=1.0 >= high=1.0 \(3 of 3"),
        ({"low": INF, "high": INF}, r"needs low < high.*low=inf >= high=inf"),
        ({"low": [0.0, 1.0], "high": 3.0}, r"low of shape \(2,\) does not broadcast.*\(3,\)"),
        ({"low": 0.0, "high": torch.ones(1, 3)}, r"high of shape \(1, 3\) does not broadcast"),
        ({"low": math.nan, "high": 1.0}, r"low contains NaN"),
    ],
)
def test_invalid_bounds_are_refused_with_the_values(kwargs, message):
    with pytest.raises(ig.InvGraphError, match="BoundedSupport: " + message):
        BoundedSupport([(3,)], **kwargs)


def test_conditions_are_refused():
    with pytest.raises(ig.InvGraphError, match="BoundedSupport: takes no conditions"):
        BoundedSupport([(3,)], [(2,)])


# --- circular spline -------------------------------------------------------------------------


def circular(bound=math.pi, rotation=True, dims=(4,), seed=0) -> CircularRationalQuadraticSpline:
    """A circular coupling far from the identity (its subnetworks' weights perturbed)."""
    torch.manual_seed(seed)
    block = CircularRationalQuadraticSpline(
        [dims], subnet_constructor=DenseSubnet, bins=5, bound=bound, rotation=rotation
    )
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return block.double()


def angles(n: int, dims: int, bound: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return ((2 * torch.rand(n, dims, generator=generator) - 1) * bound).double()


@pytest.mark.parametrize("rotation", [True, False])
@pytest.mark.parametrize("bound", [math.pi, 0.5])
def test_circular_round_trip_and_outputs_on_the_circle(rotation, bound):
    block = circular(bound, rotation)
    x = angles(500, 4, bound)
    (y,), log_det = block((x,))
    assert (y.abs() <= bound).all()
    assert not torch.allclose(y, x, atol=0.05)  # a real map
    (x_back,), inverse_log_det = block((y,), rev=True)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e-10)


def test_circular_inputs_are_wrapped_to_one_period():
    block = circular()
    x = angles(50, 4, math.pi)
    (y,), log_det = block((x,))
    turns = torch.randint(-3, 4, x.shape, generator=torch.Generator().manual_seed(0))
    (y_turned,), log_det_turned = block((x + 2 * math.pi * turns.double(),))
    torch.testing.assert_close(y_turned, y)
    torch.testing.assert_close(log_det_turned, log_det)


def seam_distance(a: torch.Tensor, b: torch.Tensor, bound: float) -> torch.Tensor:
    """The distance of angles on the circle of period ``2 * bound``."""
    d = torch.remainder(a - b, 2 * bound)
    return torch.minimum(d, 2 * bound - d)


@pytest.mark.parametrize("element", [0, 1, 3])
def test_circular_map_is_periodic_and_c1_across_the_seam(element):
    """Moving one angle through -B = B: the outputs (all of them, the other half's
    parameters depend on it) agree modulo the period, and so does the log-det (the
    derivative is continuous: d_0 = d_K)."""
    bound = math.pi
    block = circular(bound)
    x = angles(20, 4, bound).repeat(2, 1)
    eps = 1e-9
    x[:20, element], x[20:, element] = -bound + eps, bound - eps
    (y,), log_det = block((x,))
    assert (seam_distance(y[:20], y[20:], bound) < 1e-6).all()
    torch.testing.assert_close(log_det[:20], log_det[20:], rtol=0, atol=1e-6)  # O(eps)
    x[:20, element], x[20:, element] = -bound, bound
    (y,), log_det = block((x,))
    assert (seam_distance(y[:20], y[20:], bound) < 1e-12).all()
    torch.testing.assert_close(log_det[:20], log_det[20:], rtol=0, atol=1e-12)


def test_circular_spline_has_equal_learned_derivatives_at_both_ends():
    generator = torch.Generator().manual_seed(0)
    theta = 2 * torch.randn(30, 3 * 4, generator=generator, dtype=torch.float64)
    widths, heights, inner, ends = theta.split([4, 4, 3, 1], dim=-1)
    edges = torch.tensor([-2.0, 2.0], dtype=torch.float64).expand(30, -1)
    y, log_derivative = rational_quadratic_spline(
        edges,
        widths[:, None].expand(-1, 2, -1),
        heights[:, None].expand(-1, 2, -1),
        inner[:, None].expand(-1, 2, -1),
        2.0,
        boundary_derivatives=ends[:, None].expand(-1, 2, -1),
    )
    torch.testing.assert_close(y, edges)
    torch.testing.assert_close(log_derivative[:, 0], log_derivative[:, 1])
    assert log_derivative.abs().max() > 0.5  # learned, not 1


def test_circular_log_det_matches_autograd_in_both_directions():
    block = CircularRationalQuadraticSpline([(2, 2, 2)], [(3,)], ConvSubnet, bins=4)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.add_(
                0.5 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1))
            )
    block = block.double()
    x = angles(5, 8, math.pi).reshape(5, 2, 2, 2)
    c = torch.randn(5, 3, dtype=torch.float64)

    def jac_log_det(v, rev):
        def one(sample, condition):
            (out,), _ = block((sample[None],), (condition[None],), rev=rev)
            return out.flatten()

        jacobians = torch.stack([torch.func.jacrev(one)(s, k).reshape(8, 8) for s, k in zip(v, c)])
        return torch.linalg.slogdet(jacobians)[1]

    (y,), log_det = block((x,), (c,))
    torch.testing.assert_close(log_det, jac_log_det(x, False), rtol=1e-10, atol=1e-10)
    (_,), inverse_log_det = block((y,), (c,), rev=True)
    torch.testing.assert_close(inverse_log_det, jac_log_det(y, True), rtol=1e-10, atol=1e-10)


def test_circular_starts_as_the_identity_with_zero_subnetworks():
    class Zero(nn.Linear):
        def __init__(self, c_in, c_out):
            super().__init__(c_in, c_out)
            nn.init.zeros_(self.weight)
            nn.init.zeros_(self.bias)

    block = CircularRationalQuadraticSpline([(4,)], subnet_constructor=Zero).double()
    x = angles(10, 4, math.pi)
    (y,), log_det = block((x,))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_det, torch.zeros(10, dtype=torch.float64))


def test_float64_samples_respect_bounds_given_as_python_floats():
    # 0.3 rounded to float32 is 0.30000001: bounds kept in float32 let float64 samples past it
    box = BoundedSupport([(1,)], low=0.1, high=0.3).double()
    z = torch.tensor([[40.0], [1e3], [-1e3], [-40.0]], dtype=torch.float64)
    (x,), _ = box((z,), rev=True)
    assert torch.all(x <= 0.3) and torch.all(x >= 0.1), x.flatten().tolist()
