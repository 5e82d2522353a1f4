"""The coupling subnetworks: invgraph/subnets.py."""

from __future__ import annotations

import functools
import io
import pickle

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.subnets import MLP, ConvNet

# name: (subnet constructor, the shape of one sample the coupling acts on)
SUBNETS = {
    "MLP": (MLP, (6,)),
    "MLP-hidden16-1layer": (functools.partial(MLP, hidden=16, hidden_layers=1), (6,)),
    "MLP-tanh-3layers": (functools.partial(MLP, hidden_layers=3, activation=nn.Tanh), (6,)),
    "ConvNet": (functools.partial(ConvNet, hidden=8), (4, 6, 6)),
    "ConvNet-k5-1layer": (functools.partial(ConvNet, hidden=8, kernel_size=5, hidden_layers=1),
                          (4, 5, 7)),
}  # fmt: skip
COUPLINGS = {
    "GLOW": ig.GLOWCouplingBlock,
    "RNVP": ig.RNVPCouplingBlock,
    "NICE": ig.NICECouplingBlock,
    "GIN": ig.GINCouplingBlock,
    "spline": functools.partial(ig.RationalQuadraticSpline, bins=4),
}


def sample(shape: tuple[int, ...], batch: int = 5, **like) -> torch.Tensor:
    return torch.randn(batch, *shape, **like)


# ---------------------------------------------------------------------- the layers
@pytest.mark.parametrize("hidden_layers", [0, 1, 2, 3])
def test_mlp_layers_and_shapes(hidden_layers):
    net = MLP(3, 5, hidden=7, hidden_layers=hidden_layers)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == hidden_layers + 1
    assert [(m.in_features, m.out_features) for m in linears] == (
        [(3, 5)] if hidden_layers == 0 else [(3, 7)] + [(7, 7)] * (hidden_layers - 1) + [(7, 5)]
    )
    assert sum(isinstance(m, nn.ReLU) for m in net) == hidden_layers
    assert net(torch.randn(4, 3)).shape == (4, 5)


@pytest.mark.parametrize("hidden_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_convnet_layers_and_same_size_padding(hidden_layers, kernel_size):
    net = ConvNet(3, 5, hidden=6, hidden_layers=hidden_layers, kernel_size=kernel_size)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    inner = [1] * max(hidden_layers - 1, 0)
    expected = [kernel_size] if hidden_layers == 0 else [kernel_size, *inner, kernel_size]
    assert [m.kernel_size[0] for m in convs] == expected
    assert net(torch.randn(2, 3, 7, 4)).shape == (2, 5, 7, 4)


def test_the_same_layers_as_a_handwritten_sequential():
    """The same modules in the same order: the same keys and, from one seed, the same weights
    (what lets code move from its own ``nn.Sequential`` to these without changing a result)."""
    torch.manual_seed(3)
    mlp = MLP(3, 5, hidden=16)
    conv = ConvNet(2, 4, hidden=8)
    torch.manual_seed(3)
    hand_mlp = nn.Sequential(
        nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5)
    )
    hand_conv = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1),
    )  # fmt: skip
    for hand in (hand_mlp, hand_conv):
        nn.init.zeros_(hand[-1].weight)
        nn.init.zeros_(hand[-1].bias)
    for ours, hand in ((mlp, hand_mlp), (conv, hand_conv)):
        assert list(ours.state_dict()) == list(hand.state_dict())
        for key, value in hand.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), key


@pytest.mark.parametrize(
    "activation",
    [nn.Tanh, functools.partial(nn.LeakyReLU, 0.2), nn.SiLU],
    ids=["class", "partial", "silu"],
)
def test_activation_builds_one_module_per_layer(activation):
    net = MLP(2, 2, hidden_layers=3, activation=activation)
    activations = [m for m in net if not isinstance(m, nn.Linear)]
    assert len(activations) == 3
    assert len({id(m) for m in activations}) == 3  # fresh modules, not one shared
    assert all(isinstance(m, type(activation())) for m in activations)


# ---------------------------------------------------------------------- the initialisation
@pytest.mark.parametrize("subnet, shape", SUBNETS.values(), ids=SUBNETS.keys())
def test_outputs_zero_at_initialisation(subnet, shape, device, dtype):
    net = subnet(shape[0], 3).to(device, dtype)
    out = net(sample(shape, device=device, dtype=dtype))
    assert out.shape == (5, 3, *shape[1:])
    assert torch.count_nonzero(out) == 0
    last = net[-1]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    assert all(torch.count_nonzero(m.weight) > 0 for m in list(net)[:-1] if hasattr(m, "weight"))


@pytest.mark.parametrize("coupling", COUPLINGS.values(), ids=COUPLINGS.keys())
@pytest.mark.parametrize("subnet, shape", SUBNETS.values(), ids=SUBNETS.keys())
def test_a_coupling_starts_as_the_identity(subnet, shape, coupling, device, dtype):
    torch.manual_seed(0)
    block = coupling([shape], subnet_constructor=subnet).to(device, dtype)
    x = sample(shape, device=device, dtype=dtype)
    (z,), log_det = block((x,))
    (x_back,), _ = block((z,), rev=True)
    atol = 1e-5 if dtype == torch.float32 else 1e-12  # the spline rounds, even at the identity
    assert torch.allclose(z, x, atol=atol)
    log_det = torch.as_tensor(log_det, dtype=dtype, device=device)
    assert torch.allclose(log_det, torch.zeros_like(log_det), atol=atol)
    assert torch.allclose(x_back, x, atol=atol)


@pytest.mark.parametrize("subnet, shape", SUBNETS.values(), ids=SUBNETS.keys())
def test_gradients_reach_every_parameter_after_one_step(subnet, shape, device, dtype):
    """At initialisation only the zero last layer gets a gradient (the ones behind it are
    multiplied by zero); after one step every parameter learns."""
    torch.manual_seed(0)
    inn = ig.SequenceINN(*shape)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet)
    inn.append(ig.PermuteRandom, seed=0)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet)
    inn = inn.to(device, dtype)
    optimizer = torch.optim.Adam(inn.parameters(), lr=1e-2)
    x = sample(shape, batch=16, device=device, dtype=dtype) * 2 + 1
    for _ in range(2):
        z, log_det = inn(x)
        loss = (0.5 * z.square().flatten(1).sum(1) - log_det).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    missing = [n for n, p in inn.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


# ---------------------------------------------------------------------- saving
@pytest.mark.parametrize("subnet, shape", SUBNETS.values(), ids=SUBNETS.keys())
def test_a_graph_built_with_them_saves_and_loads(subnet, shape):
    torch.manual_seed(0)
    x = ig.InputNode(*shape, name="x")
    glow = ig.Node(x, ig.GLOWCouplingBlock, {"subnet_constructor": subnet}, name="glow")
    perm = ig.Node(glow, ig.PermuteRandom, {"seed": 0}, name="perm")
    inn = ig.GraphINN([x, glow, perm, ig.OutputNode(perm, name="z")])
    with torch.no_grad():  # away from the identity, so that loading is tested
        for parameter in inn.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    buffer = io.BytesIO()
    torch.save(inn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    data = sample(shape)
    assert torch.equal(loaded(data)[0], inn(data)[0])
    assert not torch.equal(inn(data)[0], data)
    assert pickle.loads(pickle.dumps(subnet))(shape[0], 2) is not None  # the constructor too


# ---------------------------------------------------------------------- bad arguments
BAD = {
    "c_in-zero": (MLP, (0, 2), {}, "MLP: c_in must be a positive integer, got 0"),
    "c_out-negative": (ConvNet, (2, -1), {}, "ConvNet: c_out must be a positive integer, got -1"),
    "hidden-float": (MLP, (2, 2), {"hidden": 2.5}, "hidden must be a positive integer, got 2.5"),
    "hidden-bool": (MLP, (2, 2), {"hidden": True}, "hidden must be a positive integer"),
    "hidden_layers-negative": (
        MLP, (2, 2), {"hidden_layers": -1}, "hidden_layers must be an integer >= 0, got -1"
    ),
    "kernel-even": (ConvNet, (2, 2), {"kernel_size": 2}, "kernel_size must be odd"),
    "kernel-zero": (ConvNet, (2, 2), {"kernel_size": 0}, "kernel_size must be a positive"),
    "activation-module": (
        MLP, (2, 2), {"activation": nn.ReLU()}, "pass the class (ReLU), not a module (ReLU())"
    ),
    "activation-function": (
        MLP, (2, 2), {"activation": torch.relu}, "activation must be callable without arguments"
    ),
    "activation-returns-tensor": (
        ConvNet, (2, 2), {"activation": lambda: torch.zeros(1)}, "returned Tensor"
    ),
    "activation-string": (MLP, (2, 2), {"activation": "relu"}, "a module class such as nn.ReLU"),
}  # fmt: skip


@pytest.mark.parametrize("cls, args, kwargs, message", BAD.values(), ids=BAD.keys())
def test_bad_arguments_raise_invgraph_error(cls, args, kwargs, message):
    with pytest.raises(ig.InvGraphError) as info:
        cls(*args, **kwargs)
    assert message in str(info.value)
