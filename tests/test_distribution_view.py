"""The torch.distributions view of a FlowDensity (ConditionalFlowDistribution), its use in
pyro, and reverse-KL training with the effective sample size."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.distributions import ConditionalFlowDistribution, FlowDensity
from invgraph.errors import InvGraphError
from invgraph.losses import ReverseKL, effective_sample_size, reverse_kl


def subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


def conditional_flow(dtype: torch.dtype = torch.float64) -> FlowDensity:
    """A perturbed 2-D flow conditioned on a (1,) observation."""
    torch.manual_seed(0)
    inn = ig.SequenceINN(2)
    for k in range(3):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet, cond=0, cond_shape=(1,))
        inn.append(ig.PermuteRandom, seed=k)
    inn = inn.to(dtype)
    with torch.no_grad():
        for parameter in inn.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return FlowDensity(inn)


def observations(n: int | None) -> torch.Tensor:
    y = torch.linspace(-1.0, 1.0, n or 1, dtype=torch.float64)[:, None]
    return y[0] if n is None else y


@pytest.mark.parametrize("n", [None, 4])
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_shapes_log_prob_and_one_pass_log_prob(n, sample_shape):
    density = conditional_flow()
    c = observations(n)
    q = density.distribution(c)
    batch = () if n is None else (n,)
    assert isinstance(q, torch.distributions.Distribution) and q.has_rsample
    assert q.batch_shape == batch and q.event_shape == (2,)
    assert q.sample(sample_shape).shape == (*sample_shape, *batch, 2)
    x, log_q = q.sample_and_log_prob(sample_shape)
    assert x.shape == (*sample_shape, *batch, 2) and log_q.shape == (*sample_shape, *batch)
    torch.testing.assert_close(log_q, q.log_prob(x), rtol=0, atol=1e-10)
    # log_prob is FlowDensity's, sample by sample with the sample's own observation
    flat_c = c.expand(*sample_shape, *batch, 1).reshape(-1, 1)
    expected = density.log_prob(x.reshape(-1, 2), flat_c).reshape(torch.Size(sample_shape + batch))
    torch.testing.assert_close(q.log_prob(x), expected, rtol=0, atol=1e-12)


def test_sample_b_is_drawn_given_observation_b():
    density = conditional_flow()
    c = observations(3)
    torch.manual_seed(1)
    x = density.distribution(c).sample((4,))
    torch.manual_seed(1)
    z = torch.randn(12, 2, dtype=torch.float64)  # the same latents, in the same order
    expected = density.inn(z, c=(c.repeat(4, 1),), rev=True, jac=False)[0].reshape(4, 3, 2)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-12)


def test_log_prob_broadcasts_values_with_the_batch():
    q = conditional_flow().distribution(observations(4))
    assert q.log_prob(torch.zeros(2, dtype=torch.float64)).shape == (4,)
    assert q.log_prob(torch.zeros(7, 1, 2, dtype=torch.float64)).shape == (7, 4)
    with pytest.raises(InvGraphError, match=r"\(3,\) do not broadcast with batch_shape \(4,\)"):
        q.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(InvGraphError, match=r"shape \(\.\.\., 2\), got \(4, 3\)"):
        q.log_prob(torch.zeros(4, 3, dtype=torch.float64))


def test_rsample_carries_gradients_to_the_parameters_and_sample_does_not():
    density = conditional_flow()
    q = density.distribution(observations(2))
    assert not q.sample((3,)).requires_grad
    q.rsample((3,)).square().sum().backward()
    grads = [p.grad for p in density.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    x, log_q = q.rsample_and_log_prob((3,))
    assert x.requires_grad and log_q.requires_grad


def test_expand_and_validate_args():
    q = conditional_flow().distribution(observations(None))
    wide = q.expand((3,))
    assert wide.batch_shape == (3,) and wide.sample((2,)).shape == (2, 3, 2)
    with pytest.raises(InvGraphError, match=r"\(4,\) does not broadcast to \(3,\)"):
        conditional_flow().distribution(observations(4)).expand((3,))
    checked = conditional_flow().distribution(observations(None), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        checked.log_prob(torch.tensor([math.nan, 0.0], dtype=torch.float64))


def test_refuses_several_inputs_and_wrong_conditions():
    a, b = ig.InputNode(2, name="a"), ig.InputNode(2, name="b")
    concat = ig.Node([a, b], ig.Concat, name="concat")
    two = FlowDensity(ig.GraphINN([a, b, concat, ig.OutputNode(concat, name="z")]))
    with pytest.raises(InvGraphError, match=r"one input.*\[\(2,\), \(2,\)\]"):
        two.distribution()
    density = conditional_flow()
    with pytest.raises(InvGraphError, match="1 condition"):
        density.distribution()
    with pytest.raises(InvGraphError, match=r"condition 0 of shape \(\.\.\., 1\), got \(4, 2\)"):
        density.distribution(torch.zeros(4, 2))


# ---------------------------------------------------------------------- pyro
def test_pyro_model_trace_and_guide():
    pyro = pytest.importorskip("pyro")
    from pyro import poutine
    from pyro.distributions.torch_distribution import TorchDistributionMixin

    density = conditional_flow(torch.float32)
    q = density.distribution(observations(4).float())
    trace = poutine.trace(lambda: pyro.sample("x", q)).get_trace()
    x = trace.nodes["x"]["value"]
    assert x.shape == (4, 2)
    torch.testing.assert_close(trace.log_prob_sum(), q.log_prob(x).sum())

    # plates and guides use pyro's mixin (expand, score_parts) on top of the same class
    class PyroFlow(ConditionalFlowDistribution, TorchDistributionMixin):
        pass

    def plated():
        with pyro.plate("data", 3):
            return pyro.sample("x", PyroFlow(density, torch.tensor([0.5])))

    trace = poutine.trace(plated).get_trace()
    x = trace.nodes["x"]["value"]
    assert x.shape == (3, 2)
    expected = density.log_prob(x, torch.full((3, 1), 0.5)).sum()
    torch.testing.assert_close(trace.log_prob_sum(), expected)

    def model():
        pyro.sample("x", pyro.distributions.Normal(torch.ones(2), 0.5).to_event(1))

    def guide():
        pyro.module("flow", density)
        pyro.sample("x", PyroFlow(density, torch.tensor([0.5])))

    pyro.clear_param_store()
    elbo = pyro.infer.Trace_ELBO(num_particles=32, vectorize_particles=True)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    before = [p.detach().clone() for p in density.parameters()]
    losses = [svi.step() for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, density.parameters()))


# ---------------------------------------------------------------------- reverse KL
def test_effective_sample_size():
    assert float(effective_sample_size(torch.zeros(50))) == pytest.approx(50.0)
    one = torch.tensor([3.0, -80.0, -90.0, -100.0])
    assert float(effective_sample_size(one)) == pytest.approx(1.0)
    huge = torch.tensor([1e4, 1e4, -1e4], dtype=torch.float64)  # far outside exp's range
    assert float(effective_sample_size(huge)) == pytest.approx(2.0)
    assert effective_sample_size(torch.zeros(10, 3), dim=0).shape == (3,)
    with pytest.raises(InvGraphError, match="floating-point"):
        effective_sample_size(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(InvGraphError, match=r"shape \(0,\)"):
        effective_sample_size(torch.zeros(0))


def test_reverse_kl_fits_an_unnormalised_gaussian():
    torch.manual_seed(0)
    inn = ig.SequenceINN(2)
    for k in range(2):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=nn.Linear)
        inn.append(ig.PermuteRandom, seed=k)
    density = FlowDensity(inn)
    mean = torch.tensor([1.0, -0.5])
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    target = torch.distributions.MultivariateNormal(mean, cov)
    log_z = 3.0  # the target is Z = e^3 times too large: the loss tends to -log Z

    def log_target(x: torch.Tensor) -> torch.Tensor:
        return target.log_prob(x) + log_z

    optimizer = torch.optim.Adam(density.parameters(), lr=3e-2)
    for _ in range(300):
        result = reverse_kl(density, log_target, 128)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
    with torch.no_grad():
        result = reverse_kl(density, log_target, 4000)
    assert isinstance(result, ReverseKL) and result.log_weights.shape == (4000,)
    # from a KL of several nats at the start; a looser fit than the ideal 0 and 1, so
    # that 300 steps suffice
    assert 0.0 < float(result.loss) + log_z < 0.2  # the KL
    assert 0.5 < float(result.ess) <= 1.0
    log_z_estimate = torch.logsumexp(result.log_weights, 0) - math.log(4000)
    assert float(log_z_estimate) == pytest.approx(log_z, abs=0.1)


def test_reverse_kl_with_observations_and_checks():
    density = conditional_flow()
    q = density.distribution(observations(3))
    result = reverse_kl(q, lambda x: -x.square().sum(-1), 16)
    assert result.log_weights.shape == (16, 3) and result.ess.shape == (3,)
    assert not result.log_weights.requires_grad and result.loss.requires_grad
    assert reverse_kl(density, lambda x: -x.square().sum(-1), 8, observations(3)).ess.shape == (3,)
    with pytest.raises(InvGraphError, match=r"shape \(16, 3\) for samples of shape \(16, 3, 2\)"):
        reverse_kl(q, lambda x: x.sum(), 16)
    with pytest.raises(InvGraphError, match="n must be an integer >= 1"):
        reverse_kl(q, lambda x: x.sum(-1), 0)
    with pytest.raises(InvGraphError, match="carries its own"):
        reverse_kl(q, lambda x: x.sum(-1), 4, observations(3))
    with pytest.raises(InvGraphError, match="with rsample"):
        reverse_kl(torch.distributions.Poisson(1.0), lambda x: x, 4)
