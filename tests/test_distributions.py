"""Densities of invertible networks: FlowDensity, StandardNormal, PushForward, PullBack."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import invgraph as ig
from invgraph.distributions import (
    FlowDensity,
    PullBackDistribution,
    PushForwardDistribution,
    StandardNormalDistribution,
    standard_normal_log_prob,
)


def subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


def perturbed(module: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    """Move weights away from the identity init, so that log-dets are not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return module


def two_in_two_out() -> ig.GraphINN:
    """Inputs a (2,), b (4,); condition y (3,); outputs z0 (2,), z1 (4,)."""
    a, b, y = ig.InputNode(2, name="a"), ig.InputNode(4, name="b"), ig.ConditionNode(3, name="y")
    concat = ig.Node([a, b], ig.Concat, name="concat")
    args = {"subnet_constructor": subnet}
    c1 = ig.Node(concat, ig.GLOWCouplingBlock, args, conditions=y, name="c1")
    perm = ig.Node(c1, ig.PermuteRandom, {"seed": 0}, name="perm")
    c2 = ig.Node(perm, ig.GLOWCouplingBlock, args, conditions=y, name="c2")
    split = ig.Node(c2, ig.Split, {"section_sizes": [2, 4]}, name="split")
    outs = [ig.OutputNode(split.out0, name="z0"), ig.OutputNode(split.out1, name="z1")]
    inn = ig.GraphINN([a, b, y, concat, c1, perm, c2, split, *outs])
    return perturbed(inn.double(), 0.3)


def flow_2d(conditional: bool = False) -> ig.SequenceINN:
    """A perturbed 2-D flow; clamp=0.3 bounds its scales, so its mass stays in a box."""
    inn = ig.SequenceINN(2)
    args = {"subnet_constructor": subnet, "clamp": 0.3}
    for k in range(3):
        if conditional:
            inn.append(ig.GLOWCouplingBlock, cond=0, cond_shape=(1,), **args)
        else:
            inn.append(ig.GLOWCouplingBlock, **args)
        inn.append(ig.PermuteRandom, seed=k)
    return perturbed(inn.double(), 0.4, seed=1)


def batch(seed: int = 0, n: int = 5) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    a, b, y = (torch.randn(n, d, generator=generator, dtype=torch.float64) for d in (2, 4, 3))
    return (a, b), y


def normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """The reference: torch's own standard normal, summed over the features of ``(B, d)``."""
    return Normal(0.0, 1.0).log_prob(z).sum(1)


# ---------------------------------------------------------------------- log_prob
def test_log_prob_is_base_plus_exact_log_det_on_a_conditional_two_output_graph():
    inn = two_in_two_out()
    density = FlowDensity(inn)
    (a, b), y = batch()
    log_prob = density.log_prob((a, b), y)

    # By hand: latents from the graph, log-det from the autograd Jacobian.
    (z0, z1), _ = inn((a, b), y)
    base_terms = normal_log_prob(z0) + normal_log_prob(z1)
    for i in range(a.shape[0]):

        def f(x, i=i):
            (u0, u1), _ = inn((x[None, :2], x[None, 2:]), y[i : i + 1], jac=False)
            return torch.cat([u0, u1], 1)[0]

        jacobian = torch.autograd.functional.jacobian(f, torch.cat([a[i], b[i]]))
        log_det = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(log_prob[i], base_terms[i] + log_det)
    assert log_prob.shape == (5,)
    assert density.log_prob((a, b), y).std() > 0  # the graph is not volume preserving


def test_custom_base_per_output():
    inn = two_in_two_out()
    loc, scale = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([0.5, 2.0])
    custom = Independent(Normal(loc, scale.double()), 1)
    density = FlowDensity(inn, base=[custom, StandardNormalDistribution(4, dtype=torch.float64)])
    (a, b), y = batch()
    (z0, z1), log_det = inn((a, b), y)
    expected = custom.log_prob(z0) + normal_log_prob(z1) + log_det
    torch.testing.assert_close(density.log_prob((a, b), y), expected)
    torch.manual_seed(0)
    assert density.sample(7, y[0])[0].shape == (7, 2)


def test_base_count_and_event_shape_are_checked():
    inn = two_in_two_out()
    with pytest.raises(ig.InvGraphError, match="2 output"):
        FlowDensity(inn, base=[StandardNormalDistribution(2)])
    per_entry = Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    density = FlowDensity(inn, base=[per_entry, StandardNormalDistribution(4)])
    (a, b), y = batch()
    with pytest.raises(ig.InvGraphError, match="Independent"):
        density.log_prob((a, b), y)


@pytest.mark.parametrize("conditional", [False, True])
def test_log_prob_integrates_to_one_on_a_2d_grid(conditional):
    inn = flow_2d(conditional)
    density = FlowDensity(inn).double()
    half, steps = 10.0, 600
    axis = torch.linspace(-half, half, steps, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    c = torch.full((grid.shape[0], 1), 0.7, dtype=torch.float64) if conditional else None
    with torch.no_grad():
        p = density.log_prob(grid, c).exp().reshape(steps, steps)
    cell = (axis[1] - axis[0]) ** 2
    assert abs(float(p.sum() * cell) - 1.0) < 1e-3  # measured: < 1e-6
    # Almost no mass on the border of the box, and far from a standard normal: the test
    # would notice a missing log-det.
    assert float(p[0].sum() + p[-1].sum() + p[:, 0].sum() + p[:, -1].sum()) * cell < 1e-4
    normal = normal_log_prob(grid).exp().reshape(steps, steps)
    assert float((p - normal).abs().sum() * cell) > 0.1


# ---------------------------------------------------------------------- sampling
def test_sample_shapes_devices_and_condition_broadcast(device):
    density = FlowDensity(two_in_two_out()).to(device)
    y = torch.randn(6, 3, dtype=torch.float64, device=device)
    for c in (y, y[0], y[:1]):
        a, b = density.sample(6, c)
        assert a.shape == (6, 2) and b.shape == (6, 4)
        assert a.device == b.device == y.device and a.dtype == torch.float64
    with pytest.raises(ig.InvGraphError, match="condition 0"):
        density.sample(6, y[:4])
    single = FlowDensity(flow_2d()).to(device=device, dtype=torch.float32)
    x = single.sample(4)
    assert x.shape == (4, 2) and x.dtype == torch.float32 and x.device.type == device.type


def test_temperature_scales_latents_and_zero_gives_the_mode():
    inn = two_in_two_out()
    density = FlowDensity(inn)
    y = torch.randn(3, dtype=torch.float64)
    mode = density.sample(4, y, temperature=0.0)
    zeros = (torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64))
    expected, _ = inn(zeros, y.expand(4, 3), rev=True)
    for got, want in zip(mode, expected):
        torch.testing.assert_close(got, want)

    torch.manual_seed(3)
    hot = density.sample(4, y)
    torch.manual_seed(3)
    cold = density.sample(4, y, temperature=0.5)
    z_hot, _ = inn(hot, y.expand(4, 3))
    z_cold, _ = inn(cold, y.expand(4, 3))
    for zh, zc in zip(z_hot, z_cold):
        torch.testing.assert_close(zc, 0.5 * zh)


def test_samples_invert_to_base_draws():
    inn = flow_2d()
    density = FlowDensity(inn)
    torch.manual_seed(0)
    with torch.no_grad():
        x = density.sample(1000)
        z, _ = inn(x)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    assert float((x.std(0) - 1).abs().max()) > 0.05  # data space is not the latent space


# ---------------------------------------------------------------------- nll, bpd
def test_nll_bits_per_dim_and_gradients():
    inn = two_in_two_out()
    density = FlowDensity(inn)
    (a, b), y = batch()
    nll = density.nll((a, b), y)
    torch.testing.assert_close(nll, -density.log_prob((a, b), y).mean())
    torch.testing.assert_close(density.bits_per_dim((a, b), y), nll / (6 * math.log(2)))
    torch.testing.assert_close(
        density.bits_per_dim((a, b), y, n_bins=256), nll / (6 * math.log(2)) + 8
    )
    nll.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in inn.parameters())


# ---------------------------------------------------------------------- devices, saving
def test_meta_device():
    density = FlowDensity(two_in_two_out()).to("meta")
    a, b, y = (torch.empty(5, d, device="meta", dtype=torch.float64) for d in (2, 4, 3))
    log_prob = density.log_prob((a, b), y)
    assert log_prob.shape == (5,) and log_prob.device.type == "meta"
    samples = density.sample(5, y[0], temperature=0.7)
    assert [s.shape for s in samples] == [(5, 2), (5, 4)]
    assert all(s.device.type == "meta" for s in samples)


def test_state_dict_is_the_networks_and_save_load_round_trips():
    inn = two_in_two_out()
    density = FlowDensity(inn)
    assert list(density.state_dict()) == [f"inn.{key}" for key in inn.state_dict()]
    buffer = io.BytesIO()
    torch.save(density, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    (a, b), y = batch()
    torch.testing.assert_close(loaded.log_prob((a, b), y), density.log_prob((a, b), y))


# ---------------------------------------------------------------------- FrEIA's names
def test_standard_normal_distribution():
    normal = StandardNormalDistribution(2, 3, dtype=torch.float64)
    assert normal.event_shape == (2, 3) and normal.batch_shape == ()
    z = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(normal.log_prob(z), normal_log_prob(z.reshape(4, 6)))
    assert normal.sample((5,)).dtype == torch.float64


def test_pull_back_includes_the_log_det_freia_defect_3():
    """FrEIA master's PushForwardDistribution.log_prob ran the network with jac=False and
    got zeros for the log-det; ours equals the change of variables and differs from that."""
    inn = flow_2d()
    base = StandardNormalDistribution(2, dtype=torch.float64)
    x = torch.randn(6, 2, dtype=torch.float64)
    z, log_det = inn(x)
    z_nojac, zeros = inn(x, jac=False)
    pulled = PullBackDistribution(base, inn).log_prob(x)
    torch.testing.assert_close(pulled, base.log_prob(z) + log_det)
    assert (pulled - (base.log_prob(z_nojac) + zeros)).abs().min() > 1e-3
    torch.testing.assert_close(pulled, FlowDensity(inn).log_prob(x))


def test_push_forward_of_a_single_output_graph_with_conditions():
    """g maps latents to data; a GraphINN with one input and one output is accepted."""
    x = ig.InputNode(2, name="x")
    y = ig.ConditionNode(1, name="y")
    coupling = ig.Node(x, ig.GLOWCouplingBlock, {"subnet_constructor": subnet}, conditions=y)
    g = perturbed(ig.GraphINN([x, y, coupling, ig.OutputNode(coupling)]).double(), 0.4)
    base = StandardNormalDistribution(2, dtype=torch.float64)
    push = PushForwardDistribution(base, g)
    c = torch.tensor([0.3], dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64)
    data, log_det_g = g(z, c.expand(6, 1))
    torch.testing.assert_close(push.log_prob(data, c), base.log_prob(z) - log_det_g)
    assert push.log_prob(data[0], c).shape == ()

    torch.manual_seed(0)
    samples = push.sample((2, 3), c)
    assert samples.shape == (2, 3, 2) and not samples.requires_grad
    assert push.rsample((4,), c.expand(4, 1)).requires_grad  # g's parameters carry grads


def test_push_forward_rejects_several_outputs():
    with pytest.raises(ig.InvGraphError, match="one input and one output"):
        PushForwardDistribution(StandardNormalDistribution(2), two_in_two_out())


def test_temperature_per_output_scales_each_latent_by_its_own_value():
    inn = two_in_two_out()
    density = FlowDensity(inn)
    y = torch.randn(3, dtype=torch.float64)
    torch.manual_seed(5)
    hot = density.sample(4, y)
    torch.manual_seed(5)
    mixed = density.sample(4, y, temperature=[0.0, 0.5])
    (_, z1_hot), _ = inn(hot, y.expand(4, 3))
    (z0, z1), _ = inn(mixed, y.expand(4, 3))
    torch.testing.assert_close(z0, torch.zeros_like(z0), atol=1e-10, rtol=0)
    torch.testing.assert_close(z1, 0.5 * z1_hot)
    assert z1_hot.abs().min() > 0  # the second latent was really drawn, then scaled
    with pytest.raises(ig.InvGraphError, match="3 temperature"):
        density.sample(4, y, temperature=[1.0, 1.0, 1.0])


# ---------------------------------------------------------------------- the log-density helper
def test_standard_normal_log_prob_sums_the_trailing_event_dimensions():
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    per_value = Normal(0.0, 1.0).log_prob(z)
    torch.testing.assert_close(standard_normal_log_prob(z), per_value.sum((1, 2)))
    torch.testing.assert_close(standard_normal_log_prob(z, event_dims=1), per_value.sum(2))
    torch.testing.assert_close(standard_normal_log_prob(z, event_dims=3), per_value.sum())
    assert standard_normal_log_prob(torch.empty(0, 5)).shape == (0,)


# ---------------------------------------------------------------------- sample(n)
@pytest.mark.parametrize("density", [two_in_two_out, flow_2d], ids=["graph", "sequence"])
def test_sample_zero_returns_an_empty_batch(density):
    flow = FlowDensity(density())
    conditions = torch.zeros(1, 3, dtype=torch.float64) if density is two_in_two_out else None
    samples = flow.sample(0, conditions)
    shapes = [tuple(t.shape) for t in (samples if isinstance(samples, tuple) else (samples,))]
    assert shapes == [(0, *shape) for shape in flow.network.dims_in]


@pytest.mark.parametrize("n", [np.int64(3), np.uint8(3), torch.tensor(3)], ids=repr)
def test_sample_takes_integer_like_counts(n):
    assert FlowDensity(flow_2d()).sample(n).shape == (3, 2)


@pytest.mark.parametrize(
    "n",
    [-1, 2.0, 2.5, True, False, np.float64(2.0), np.bool_(True), torch.tensor(2.0), "3", None],
    ids=repr,
)
def test_sample_refuses_counts_that_are_not_integers_from_zero(n):
    with pytest.raises(ig.InvGraphError, match=r"FlowDensity.sample: n must be an integer >= 0"):
        FlowDensity(flow_2d()).sample(n)
    with pytest.raises(ig.InvGraphError, match=rf"received {re.escape(repr(n))} of type"):
        FlowDensity(flow_2d()).sample(n)


def test_sample_posterior_needs_at_least_one_sample():
    flow = FlowDensity(two_in_two_out())
    with pytest.raises(ig.InvGraphError, match=r"sample_posterior: n must be an integer >= 1"):
        flow.sample_posterior(0, torch.zeros(2, 3, dtype=torch.float64))
