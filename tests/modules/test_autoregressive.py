"""Masked autoregressive blocks and their MADE conditioner: the order, the directions, misuse.

The registry sweep (tests/test_block_properties.py) checks round trips, log-dets against the
autograd Jacobian, saving and the meta device; here is what is particular to autoregression.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.errors import InvGraphError
from invgraph.subnets import MADE, autoregressive_order

BLOCKS = [ig.MaskedAffineAutoregressive, ig.MaskedRationalQuadraticAutoregressive]


def _perturbed(block: nn.Module, seed: int = 0) -> nn.Module:
    """Weights away from the zero initialisation (the identity has a diagonal Jacobian)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return block.double()


def _jacobian(block: nn.Module, x: torch.Tensor, rev: bool) -> torch.Tensor:
    """The Jacobian of one sample's flattened output by its flattened input."""
    flat = x.reshape(-1)

    def f(v: torch.Tensor) -> torch.Tensor:
        (out,), _ = block((v.reshape(1, *x.shape),), rev=rev)
        return out.reshape(-1)

    return torch.func.jacrev(f)(flat)


@pytest.mark.parametrize("block_type", BLOCKS)
@pytest.mark.parametrize("iaf", [False, True], ids=["maf", "iaf"])
@pytest.mark.parametrize("ordering", ["natural", "reversed", "random", [2, 0, 4, 1, 3]])
def test_the_jacobian_is_triangular_in_the_order(block_type, iaf, ordering):
    # tanh (no dead units) and inputs inside the spline's box: every allowed entry is nonzero
    arguments = {"ordering": ordering, "seed": 3, "inverse_autoregressive": iaf}
    block = _perturbed(block_type([(5,)], hidden=(16, 16), activation=nn.Tanh, **arguments))
    ranks = block.conditioner.ranks
    later = ranks[None, :] > ranks[:, None]  # output i, input j later in the order than i
    earlier = ranks[None, :] < ranks[:, None]
    for rev in (False, True):
        jacobian = _jacobian(block, 0.5 * torch.randn(5, dtype=torch.float64), rev)
        assert torch.all(jacobian[later] == 0), (rev, jacobian)
        assert torch.all(jacobian[earlier] != 0)  # perturbed: every earlier feature is read
        assert torch.all(jacobian.diagonal() > 0)  # monotonic in its own feature


@pytest.mark.parametrize("block_type", BLOCKS)
def test_per_channel_autoregression_keeps_positions_independent(block_type):
    arguments = {"hidden": (8,), "activation": nn.Tanh, "autoregressive_over": "channels"}
    block = _perturbed(block_type([(3, 2, 2)], **arguments))
    jacobian = _jacobian(block, 0.5 * torch.randn(3, 2, 2, dtype=torch.float64), rev=False)
    jacobian = jacobian.reshape(3, 4, 3, 4)  # (channel, position) by (channel, position)
    other_position = ~torch.eye(4, dtype=torch.bool)[None, :, None, :].expand(3, 4, 3, 4)
    assert torch.all(jacobian[other_position] == 0)
    below = torch.ones(3, 3, dtype=torch.bool).tril(-1)
    for p in range(4):  # within a position: lower triangular in the channels
        assert torch.all(jacobian[:, p, :, p].triu(1) == 0)
        assert torch.all(jacobian[:, p, :, p][below] != 0)


@pytest.mark.parametrize("block_type", BLOCKS)
def test_an_iaf_is_the_inverse_of_the_maf_with_the_same_weights(block_type):
    maf = _perturbed(block_type([(4,)], [(2,)], hidden=(8, 8), ordering="reversed"))
    iaf = block_type(
        [(4,)], [(2,)], hidden=(8, 8), ordering="reversed", inverse_autoregressive=True
    )
    iaf.load_state_dict(maf.state_dict())
    iaf.double()
    x, c = torch.randn(6, 4, dtype=torch.float64), (torch.randn(6, 2, dtype=torch.float64),)
    (z_maf,), log_det_maf = maf((x,), c)
    (x_iaf,), log_det_iaf = iaf((z_maf,), c)  # the IAF's forward is the MAF's inverse
    torch.testing.assert_close(x_iaf, x)
    torch.testing.assert_close(log_det_iaf, -log_det_maf)


@pytest.mark.parametrize("iaf", [False, True], ids=["maf", "iaf"])
def test_the_cheap_direction_calls_the_conditioner_once_the_other_once_per_feature(iaf):
    block = ig.MaskedAffineAutoregressive([(7,)], hidden=(8,), inverse_autoregressive=iaf)
    calls = []
    block.conditioner.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(3, 7)
    counts = []
    for rev in (False, True):
        calls.clear()
        block((x,), rev=rev)
        counts.append(len(calls))
    assert counts == ([7, 1] if iaf else [1, 7])


@pytest.mark.parametrize("block_type", BLOCKS)
def test_blocks_start_as_the_identity(block_type):
    block = block_type([(2, 3)], [(4,)], hidden=(8,))
    x = torch.randn(5, 2, 3)
    for rev in (False, True):
        (out,), log_det = block((x,), (torch.randn(5, 4),), rev=rev)
        torch.testing.assert_close(out, x)
        torch.testing.assert_close(log_det, torch.zeros(5))


def test_made_masks_follow_the_order_with_and_without_context():
    for features, context in [(1, 0), (1, 2), (2, 0), (6, 0), (6, 3)]:
        made = MADE(features, 3, context, hidden=(11, 11), ordering="random", seed=features)
        outputs = made.layers[-1].mask @ made.layers[1].mask @ made.layers[0].mask
        outputs = outputs.reshape(features, 3, features + context)
        ranks = made.ranks
        reads = outputs[..., :features] > 0  # a path from input j to an output of feature i
        assert torch.equal(reads, (ranks[None, :] < ranks[:, None])[:, None, :].expand_as(reads))
        if context:  # the context reaches every output
            assert torch.all(outputs[..., features:] > 0)


def test_made_output_starts_at_zero_and_random_orderings_are_seeded():
    made = MADE(4, 2, hidden=(8,), ordering="random", seed=5)
    assert torch.equal(made(torch.randn(3, 4)), torch.zeros(3, 4, 2))
    assert torch.equal(made.ranks, autoregressive_order(4, "random", seed=5))
    assert torch.equal(autoregressive_order(3, [1, 2, 0]), torch.tensor([1, 2, 0]))


def test_a_random_ordering_survives_saving(tmp_path):
    block = ig.MaskedAffineAutoregressive([(6,)], hidden=(8,), ordering="random")
    torch.save(block, tmp_path / "maf.pt")
    loaded = torch.load(tmp_path / "maf.pt", weights_only=False)
    assert torch.equal(loaded.conditioner.ranks, block.conditioner.ranks)


def test_a_lambda_activation_saves_with_the_model(tmp_path):
    inn = ig.SequenceINN(3)
    inn.append(ig.MaskedAffineAutoregressive, hidden=(8,), activation=lambda: nn.LeakyReLU(0.1))
    torch.save(inn, tmp_path / "inn.pt")  # the lambda built the modules; none is stored
    loaded = torch.load(tmp_path / "inn.pt", weights_only=False)
    x = torch.randn(2, 3)
    torch.testing.assert_close(loaded(x)[0], inn(x)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ordering": "sideways"}, r"MaskedAffineAutoregressive: unknown ordering 'sideways'"),
        ({"ordering": [0, 0, 1]}, r"ordering \[0, 0, 1\] is not a permutation of range\(3\)"),
        ({"hidden": (8, 4), "residual": True}, r"residual connections need equal hidden widths"),
        ({"hidden": (0,)}, r"a hidden width must be a positive integer, got 0"),
        ({"autoregressive_over": "pixels"}, r"autoregressive_over must be one of"),
        ({"activation": nn.ReLU()}, r"pass the class \(ReLU\), not a module"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(InvGraphError, match=match):
        ig.MaskedAffineAutoregressive([(3,)], **kwargs)


def test_bad_spline_arguments_and_condition_shapes_are_named():
    with pytest.raises(InvGraphError, match=r"MaskedRationalQuadraticAutoregressive: needs bins"):
        ig.MaskedRationalQuadraticAutoregressive([(3,)], bins=0)
    with pytest.raises(InvGraphError, match=r"condition 0 has shape \(2, 3, 3\); for an input"):
        ig.MaskedAffineAutoregressive([(3, 2, 2)], [(2, 3, 3)], autoregressive_over="channels")
    with pytest.raises(InvGraphError, match=r"expects exactly 1 input"):
        ig.MaskedAffineAutoregressive([(3,), (3,)])


def test_a_graph_mixes_coupling_and_autoregressive_stages_and_compiles():
    subnet = functools.partial(ig.MLP, hidden=16)
    inn = ig.SequenceINN(4)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet)
    inn.append(ig.MaskedRationalQuadraticAutoregressive, hidden=(16,), bins=4)
    inn.append(ig.MaskedAffineAutoregressive, hidden=(16,), inverse_autoregressive=True)
    _perturbed(inn)
    x = torch.randn(8, 4, dtype=torch.float64)
    compiled = torch.compile(inn, fullgraph=True, backend="eager")
    z, log_det = compiled(x)
    x_back, log_det_back = compiled(z, rev=True)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, -log_det)


def test_a_maf_learns_a_correlated_gaussian():
    torch.manual_seed(0)
    covariance = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    data = torch.randn(2048, 2) @ torch.linalg.cholesky(covariance).T
    inn = ig.SequenceINN(2)
    for k in range(2):
        inn.append(
            ig.MaskedAffineAutoregressive, hidden=(32, 32), ordering=["natural", "reversed"][k]
        )
    optimizer = torch.optim.Adam(inn.parameters(), lr=1e-2)
    for _ in range(300):
        batch = data[torch.randint(len(data), (256,))]
        z, log_det = inn(batch)
        loss = (0.5 * z.square().sum(1) - log_det).mean() + math.log(2 * math.pi)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z, log_det = inn(data)
        nll = ((0.5 * z.square().sum(1) - log_det).mean() + math.log(2 * math.pi)).item()
    entropy = 0.5 * torch.logdet(2 * math.pi * math.e * covariance).item()
    assert nll < entropy + 0.05, (nll, entropy)


@pytest.mark.parametrize("over", ["features", "channels"])
def test_a_block_called_directly_with_the_wrong_number_of_conditions_says_so(over):
    block = ig.MaskedAffineAutoregressive([(3, 2)], [(2,)], autoregressive_over=over)
    match = r"MaskedAffineAutoregressive: built for 1 condition\(s\) of shapes \[\(2,\)\], called"
    with pytest.raises(InvGraphError, match=match):
        block((torch.randn(4, 3, 2),))
