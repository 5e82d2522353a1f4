"""Dequantization: values, corrections by hand, and the bound on known discrete models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import invgraph as ig
from invgraph.dequantization import UniformDequantization, VariationalDequantization
from invgraph.distributions import FlowDensity
from invgraph.errors import InvGraphError

K, D = 5, 3


class PiecewiseConstant:
    """The density on [0, 1)^D constant on each cell: p(x) = prod_d K pi_d[floor(K x_d)].

    Its cell masses are the factorised categorical P(v) = prod_d pi_d[v_d]."""

    def __init__(self, logits: Tensor):
        self.log_pi = logits.log_softmax(-1)  # (D, K)

    def discrete_log_prob(self, v: Tensor) -> Tensor:
        return self.log_pi.gather(1, v.T).T.sum(1)

    def log_prob(self, x: Tensor, c=None) -> Tensor:
        v = (x * K).floor().long().clamp(0, K - 1)
        return self.discrete_log_prob(v) + x.shape[1] * math.log(K)


class Linear1D:
    """p(x) = 2x on [0, 1): cell masses P(v) = (2v + 1) / K^2, not constant on cells."""

    def log_prob(self, x: Tensor, c=None) -> Tensor:
        return torch.log(2 * x[:, 0])


def q_flow(dims: int = D) -> nn.Module:
    torch.manual_seed(1)
    flow = ig.ConditionalAffineTransform(
        [(dims,)], dims_c=[(dims,)], subnet_constructor=lambda i, o: nn.Linear(i, o)
    )
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def dequantizers():
    return [UniformDequantization(K), VariationalDequantization(q_flow(), K)]


@pytest.mark.parametrize("deq", dequantizers(), ids=["uniform", "variational"])
def test_values_stay_in_their_cell(deq):
    v = torch.randint(0, K, (2000, D))
    x, correction = deq(v)
    assert x.dtype == torch.float32 and correction.shape == (2000,)
    assert bool(((x >= v / K) & (x < (v + 1) / K)).all())
    assert torch.equal(deq.quantize(x), v)
    x2, _ = deq(v)
    assert not torch.equal(x, x2)  # fresh noise every call


def test_quantize_clips_to_the_levels():
    deq = UniformDequantization(K)
    assert deq.quantize(torch.tensor([[-0.5, 0.0, 0.999, 1.0, 7.0]])).tolist() == [[0, 0, 4, 4, 4]]


def test_uniform_correction_by_hand():
    deq = UniformDequantization(256)
    _, correction = deq(torch.randint(0, 256, (4, 3, 2, 2)))
    assert torch.allclose(correction, torch.full((4,), -12 * math.log(256)))


def test_uniform_bits_per_dim_match_flow_density():
    inn = ig.SequenceINN(D)
    inn.append(ig.ActNorm)
    density, deq = FlowDensity(inn), UniformDequantization(K)
    v = torch.randint(0, K, (64, D))
    torch.manual_seed(3)
    bpd = deq.bits_per_dim(density, v)
    torch.manual_seed(3)
    x, _ = deq(v)
    assert torch.allclose(bpd, density.bits_per_dim(x, n_bins=K))
    torch.manual_seed(3)
    bound = deq.log_likelihood_bound(density, v)
    assert torch.allclose(bound, density.log_prob(x) - D * math.log(K))


def test_uniform_bound_is_tight_for_piecewise_constant_density():
    torch.manual_seed(0)
    model = PiecewiseConstant(torch.randn(D, K))
    v = torch.randint(0, K, (500, D))
    bound = UniformDequantization(K).log_likelihood_bound(model, v)
    assert torch.allclose(bound, model.discrete_log_prob(v), atol=1e-5)  # every sample
    # and the model is normalised: the masses of all K^D cells sum to one
    cells = torch.cartesian_prod(*[torch.arange(K)] * D)
    assert math.isclose(model.discrete_log_prob(cells).exp().sum().item(), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("v", [0, 1, 4])
def test_uniform_bound_on_a_smooth_density(v):
    """E_u[log 2(v+u)/K] - log K in closed form, strictly below log P(v) (Jensen)."""
    torch.manual_seed(0)
    bound = UniformDequantization(K).log_likelihood_bound(Linear1D(), torch.full((200_000, 1), v))
    integral = (v + 1) * math.log(v + 1) - (v + 1) - (v * math.log(v) - v if v else 0.0)
    exact = math.log(2 / K) + integral - math.log(K)
    assert abs(bound.mean().item() - exact) < 5e-3
    assert exact < math.log((2 * v + 1) / K**2) - 1e-3


def test_variational_log_q_matches_autograd_jacobian():
    """log q(u|v) = log N(eps) - log|det du/deps|, with the Jacobian from autograd."""
    deq = VariationalDequantization(q_flow(), K).double()
    v = torch.randint(0, K, (1, D)).double()
    torch.manual_seed(7)
    x, correction = deq(v)
    torch.manual_seed(7)
    eps = torch.randn_like(v)
    condition = (v + 0.5) / K - 0.5

    def noise(e: Tensor) -> Tensor:
        (y,), _ = deq.flow_q((e,), c=(condition,))
        return torch.sigmoid(y)[0]

    jacobian = torch.autograd.functional.jacobian(noise, eps)[:, 0]
    log_q = -0.5 * eps.square().sum() - 0.5 * D * math.log(2 * math.pi) - jacobian.slogdet()[1]
    assert torch.allclose(x, (v + noise(eps)) / K)
    assert torch.allclose(correction, -D * math.log(K) - log_q)


def test_variational_bound_is_below_the_log_likelihood_by_the_kl():
    """For a piecewise-constant density the bound is log P(v) - KL(q || uniform) < log P(v)."""
    torch.manual_seed(0)
    model = PiecewiseConstant(torch.randn(D, K))
    deq = VariationalDequantization(q_flow(), K)
    v = torch.randint(0, K, (1, D)).expand(20_000, D)
    with torch.no_grad():
        bound = deq.log_likelihood_bound(model, v)
    log_p = model.discrete_log_prob(v[:1]).item()
    kl = log_p - bound.mean().item()
    assert 0.05 < kl < 10.0


def test_variational_training_tightens_the_bound():
    torch.manual_seed(0)
    model = PiecewiseConstant(torch.randn(D, K))
    deq = VariationalDequantization(q_flow(), K)
    v = torch.randint(0, K, (256, D))
    gap = lambda: (model.discrete_log_prob(v) - deq.log_likelihood_bound(model, v)).mean()  # noqa: E731
    before = gap().item()
    optimizer = torch.optim.Adam(deq.parameters(), lr=5e-2)
    for _ in range(40):
        loss = deq.bits_per_dim(model, v)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deq.parameters())
    after = gap().item()
    assert after < 0.25 * before, (before, after)


def test_meta_device():
    v = torch.zeros(4, D, device="meta")
    x, correction = UniformDequantization(K)(v)
    assert x.device.type == "meta" and x.shape == (4, D) and correction.shape == (4,)
    deq = VariationalDequantization(q_flow(), K).to("meta")
    x, correction = deq(v.long())
    assert x.device.type == "meta" and x.shape == (4, D) and correction.shape == (4,)


def test_errors_name_the_problem():
    with pytest.raises(InvGraphError, match="n_bins"):
        UniformDequantization(0)
    with pytest.raises(InvGraphError, match="one condition"):
        VariationalDequantization(ig.PermuteRandom([(D,)]), K)
    with pytest.raises(InvGraphError, match=r"expected v of shape \(batch, 3\)"):
        VariationalDequantization(q_flow(), K)(torch.zeros(2, 4))


def test_save_load(tmp_path):
    deq = VariationalDequantization(q_flow(), K)
    torch.save(deq.state_dict(), tmp_path / "q.pt")
    other = VariationalDequantization(q_flow(), K)
    other.load_state_dict(torch.load(tmp_path / "q.pt"))
    v = torch.randint(0, K, (8, D))
    torch.manual_seed(0)
    a = deq(v)
    torch.manual_seed(0)
    b = other(v)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
