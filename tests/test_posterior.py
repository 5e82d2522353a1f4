"""FlowDensity.sample_posterior: n samples for each of a batch of observations at once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.distributions import FlowDensity
from invgraph.errors import InvGraphError
from invgraph.modules import InvertibleModule


class ConditionalShift(InvertibleModule):
    """``z = x - 10 c``: the samples ``x = z + 10 c`` sit far from each other's conditions."""

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        shift = 10.0 * c[0]
        out = x_or_z[0] + shift if rev else x_or_z[0] - shift
        return (out,), 0.0

    def output_dims(self, input_dims):
        return list(input_dims)


def subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


def conditional_graph() -> ig.GraphINN:
    """Inputs a (2,), b (3,); conditions y (2,) and s (1,), y through a conditioning net."""
    a, b = ig.InputNode(2, name="a"), ig.InputNode(3, name="b")
    y, s = ig.ConditionNode(2, name="y"), ig.ConditionNode(1, name="s")
    features = ig.FeedForwardNode(y, (4,), nn.Linear, {"in_features": 2, "out_features": 4})
    concat = ig.Node([a, b], ig.Concat, name="concat")
    args = {"subnet_constructor": subnet}
    c1 = ig.Node(concat, ig.GLOWCouplingBlock, args, conditions=[features, s], name="c1")
    p1 = ig.Node(c1, ig.PermuteRandom, {"seed": 0}, name="p1")
    c2 = ig.Node(p1, ig.GLOWCouplingBlock, args, conditions=[features, s], name="c2")
    split = ig.Node(c2, ig.Split, {"section_sizes": [2, 3]}, name="split")
    nodes = [a, b, y, s, features, concat, c1, p1, c2, split]
    nodes += [ig.OutputNode((split, 0), name="z0"), ig.OutputNode((split, 1), name="z1")]
    inn = ig.GraphINN(nodes)
    with torch.no_grad():
        for parameter in inn.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return inn


def shift_flow() -> ig.SequenceINN:
    inn = ig.SequenceINN(3)
    inn.append(ConditionalShift, cond=0, cond_shape=(1,))
    return inn


def test_samples_of_observation_b_use_condition_b():
    density = FlowDensity(shift_flow())
    c = torch.tensor([[5.0], [-5.0], [0.0], [20.0]])
    torch.manual_seed(0)
    x = density.sample_posterior(50, c)
    assert x.shape == (4, 50, 3)
    # Each observation's samples centre on 10 c_b, far (>= 50) from every other one.
    assert torch.allclose(x.mean(dim=(1, 2)), 10.0 * c[:, 0], atol=1.0)
    assert ((x - 10.0 * c[:, :, None]).abs() < 6.0).all()
    # And exactly: the latents are drawn in one batch, observation-major.
    torch.manual_seed(0)
    z = torch.randn(200, 3)
    assert torch.equal(x.reshape(200, 3), z + 10.0 * c.repeat_interleave(50, dim=0))


def test_two_inputs_match_one_batched_sample_call():
    density = FlowDensity(conditional_graph())
    y, s = torch.randn(3, 2), torch.randn(3, 1)
    torch.manual_seed(1)
    a, b = density.sample_posterior(7, (y, s))
    assert a.shape == (3, 7, 2) and b.shape == (3, 7, 3)
    torch.manual_seed(1)
    a_ref, b_ref = density.sample(21, (y.repeat_interleave(7, 0), s.repeat_interleave(7, 0)))
    assert torch.equal(a.reshape(21, 2), a_ref) and torch.equal(b.reshape(21, 3), b_ref)
    # Row b of the result is what sampling observation b alone gives, latent for latent.
    torch.manual_seed(1)
    zs = [base.sample((21,)) for base in density.base]
    (a_one, b_one), _ = density.inn(
        tuple(t.reshape(3, 7, -1)[1] for t in zs),
        c=(y[1:2].expand(7, 2), s[1:2].expand(7, 1)),
        rev=True,
        jac=False,
    )
    assert torch.allclose(a[1], a_one, atol=1e-6) and torch.allclose(b[1], b_one, atol=1e-6)


def test_sample_options_are_passed_on():
    density = FlowDensity(shift_flow())
    c = torch.tensor([[1.0], [2.0]])
    x = density.sample_posterior(4, c, temperature=0.0)
    assert torch.equal(x, 10.0 * c[:, :, None].expand(2, 4, 3))


def test_dtype_and_meta_device():
    density = FlowDensity(conditional_graph()).to(torch.float64)
    a, b = density.sample_posterior(2, (torch.randn(3, 2).double(), torch.randn(3, 1).double()))
    assert a.dtype == b.dtype == torch.float64
    meta = FlowDensity(conditional_graph()).to("meta")
    cond = (torch.empty(5, 2, device="meta"), torch.empty(5, 1, device="meta"))
    a, b = meta.sample_posterior(4, cond)
    assert a.device.type == b.device.type == "meta"
    assert a.shape == (5, 4, 2) and b.shape == (5, 4, 3)


def test_gradients_flow_to_the_parameters():
    density = FlowDensity(conditional_graph())
    a, b = density.sample_posterior(3, (torch.randn(2, 2), torch.randn(2, 1)))
    (a.sum() + b.sum()).backward()
    assert all(p.grad is not None for p in density.inn.parameters())


@pytest.mark.parametrize(
    ("c", "message"),
    [
        ((torch.randn(3, 2),), "expected 2 condition"),
        ((torch.randn(3, 2), torch.randn(4, 1)), "condition 1 must have shape"),
        ((torch.randn(2), torch.randn(1)), "condition 0 must have shape"),
        ((torch.randn(3, 5), torch.randn(3, 1)), "condition 0 must have shape"),
    ],
)
def test_bad_conditions_are_refused(c, message):
    with pytest.raises(InvGraphError, match=message):
        FlowDensity(conditional_graph()).sample_posterior(2, c)


def test_bad_n_is_refused():
    with pytest.raises(InvGraphError, match="n must be"):
        FlowDensity(conditional_graph()).sample_posterior(0, (torch.randn(1, 2), torch.randn(1, 1)))
