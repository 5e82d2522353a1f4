"""Whole graphs against FrEIA 0.2: the same code with the import renamed, FrEIA's weights.

Each graph is built by one function from a framework and a modules namespace, once with
``FrEIA.framework``/``FrEIA.modules`` and once with ``invgraph.framework``/``invgraph.modules``;
FrEIA's ``state_dict`` is loaded into ours with ``strict=True``, and outputs and log-dets
must agree forward and inverse.

The state_dict keys are ``module_list.<k>.``: invgraph lists its modules in FrEIA's order (a
Kahn sort from the outputs, reversed), also where that order differs from the order invgraph
runs them in: where a branch ends in an output of its own, and in FrEIA's documented
multiscale pattern that flattens each split-off branch before concatenating.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

import invgraph.framework
import invgraph.modules
from invgraph.errors import InvGraphError
from invgraph.modules import (
    HaarDownsampling,
    HaarUpsampling,
    IRevNetDownsampling,
    IRevNetUpsampling,
)

# Coupling blocks the parity graphs interleave, with their options besides the subnet. A
# block joins once invgraph.modules has it: adding a coupling is adding a line here.
COUPLINGS: dict[str, dict] = {
    "NICECouplingBlock": {},
    "RNVPCouplingBlock": {"clamp": 2.0},
    "GLOWCouplingBlock": {"clamp": 2.0},
    "GINCouplingBlock": {"clamp": 2.0},
}
AVAILABLE = {name: kw for name, kw in COUPLINGS.items() if hasattr(invgraph.modules, name)}


def dense(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


def conv(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 1))


def _couplings(F: ModuleType, M: ModuleType, port, subnet, conditions=None, tag=""):
    """Append every available coupling after ``port``; return the last port."""
    for name, kwargs in AVAILABLE.items():
        args = {"subnet_constructor": subnet, **kwargs}
        port = F.Node(port, getattr(M, name), args, conditions=conditions, name=f"{name}{tag}")
    return port


# ----------------------------------------------------------------------------- graphs
def chain(F: ModuleType, M: ModuleType):
    """Vectors: permutations and conditional couplings in a row."""
    x = F.InputNode(8, name="x")
    c = [F.ConditionNode(3, name="c")] if AVAILABLE else []
    node = x
    for k in range(2):
        node = F.Node(node, M.PermuteRandom, {"seed": k}, name=f"permute{k}")
        node = _couplings(F, M, node, dense, c or None, tag=str(k))
    return F.GraphINN([x, *c, *_collect(node), F.OutputNode(node, name="z")])


def multiscale_concat(F: ModuleType, M: ModuleType):
    """Images: squeezes, a split whose halves are joined again (FrEIA's README pattern)."""
    x = F.InputNode(2, 8, 8, name="x")
    node = F.Node(x, M.IRevNetDownsampling, {}, name="irevnet")  # (8, 4, 4)
    node = _couplings(F, M, node, conv, tag="-conv")
    node = F.Node(node, M.PermuteRandom, {"seed": 0}, name="permute0")
    haar_args = {"order_by_wavelet": True, "rebalance": 0.5}
    node = F.Node(node, M.HaarDownsampling, haar_args, name="haar")  # (32, 2, 2)
    node = F.Node(node, M.Flatten, {}, name="flatten")
    split = F.Node(node, M.Split, {"section_sizes": [32, 96], "dim": 0}, name="split")
    node = F.Node(split.out0, M.PermuteRandom, {"seed": 1}, name="permute1")
    node = _couplings(F, M, node, dense, tag="-dense")
    node = F.Node(node, M.Reshape, {"output_dims": (8, 4)}, name="reshape")
    node = F.Node(node, M.Flatten, {}, name="flatten2")
    concat = F.Node([node.out0, split.out1], M.Concat, {"dim": 0}, name="concat")
    return F.GraphINN([x, *_collect(concat), F.OutputNode(concat, name="z")])


def multiscale_outputs(F: ModuleType, M: ModuleType):
    """Images: a level's high frequencies leave as a second output, upsampled back first."""
    x = F.InputNode(3, 8, 8, name="x")
    node = F.Node(x, M.HaarDownsampling, {}, name="haar")  # (12, 4, 4)
    node = F.Node(node, M.PermuteRandom, {"seed": 2}, name="permute")
    split = F.Node(node, M.Split, {"section_sizes": [4, 8]}, name="split")
    high = F.OutputNode(split.out1, name="z_high")
    node = F.Node(split.out0, M.IRevNetDownsampling, {"legacy_backend": True}, name="squeeze")
    node = _couplings(F, M, node, conv, tag="-low")
    node = F.Node(node, M.IRevNetUpsampling, {"legacy_backend": True}, name="unsqueeze")
    node = F.Node(node, M.HaarUpsampling, {}, name="haar_up")  # (1, 8, 8)
    return F.GraphINN([x, *_collect(node), F.OutputNode(node, name="z_low"), high])


def freia_docs_multiscale(F: ModuleType, M: ModuleType):
    """FrEIA's documented multiscale pattern: every split-off branch flattened, all concatenated."""
    nodes, split_nodes = [F.InputNode(2, 8, 8, name="x")], []
    nodes.append(F.Node(nodes[-1], M.PermuteRandom, {"seed": 0}, name="permute0"))
    nodes.append(F.Node(nodes[-1], M.HaarDownsampling, {"rebalance": 0.5}, name="haar0"))
    nodes.append(F.Node(nodes[-1], M.Split, {"section_sizes": [4, 4]}, name="split"))
    split_nodes.append(F.Node(nodes[-1].out1, M.Flatten, {}, name="flatten_split"))
    nodes.append(F.Node(nodes[-1], M.HaarDownsampling, {"rebalance": 0.5}, name="haar1"))
    nodes.append(F.Node(nodes[-1], M.PermuteRandom, {"seed": 1}, name="permute1"))
    nodes.append(F.Node(nodes[-1], M.Flatten, {}, name="flatten"))
    inputs = [nodes[-1].out0] + [node.out0 for node in split_nodes]
    nodes.append(F.Node(inputs, M.Concat, {"dim": 0}, name="concat"))
    nodes.append(F.OutputNode(nodes[-1], name="z"))
    return F.GraphINN(nodes + split_nodes)


def branches_to_outputs(F: ModuleType, M: ModuleType):
    """A split whose two halves each go through a block to an output of their own."""
    x = F.InputNode(8, name="x")
    split = F.Node(x, M.Split, {"section_sizes": [4, 4]}, name="split")
    a = F.Node(split.out0, M.PermuteRandom, {"seed": 0}, name="permute_a")
    b = F.Node(split.out1, M.PermuteRandom, {"seed": 1}, name="permute_b")
    return F.GraphINN([x, split, a, b, F.OutputNode(a, name="z_a"), F.OutputNode(b, name="z_b")])


def _collect(last) -> list:
    """Every node behind ``last`` (FrEIA wants them all in the node list)."""
    seen, pending = {}, [last]
    while pending:
        node = pending.pop()
        if id(node) not in seen:
            seen[id(node)] = node
            pending.extend(source for source, _ in node.inputs)
    return [node for node in seen.values() if node.inputs]  # input nodes are given apart


GRAPHS = {
    "chain": chain,
    "multiscale-concat": multiscale_concat,
    "multiscale-outputs": multiscale_outputs,
    # Listed in another order than they run in: a position-by-position load would fail
    # loudly (missing keys) for the first, and silently swap weights for the second.
    "freia-docs-multiscale": freia_docs_multiscale,
    "branches-to-outputs": branches_to_outputs,
}


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _keep_numpy_state():
    """FrEIA's PermuteRandom reseeds NumPy's global generator (defect 12); undo it."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _freia() -> tuple[ModuleType, ModuleType]:
    return pytest.importorskip("FrEIA.framework"), pytest.importorskip("FrEIA.modules")


def _both(build: Callable) -> tuple[nn.Module, nn.Module]:
    """FrEIA's graph with its weights moved away from their initial values, and ours."""
    torch.manual_seed(0)
    theirs = build(*_freia())
    with torch.no_grad():
        for parameter in theirs.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return theirs, build(invgraph.framework, invgraph.modules)


def _as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def _assert_same(theirs: nn.Module, ours: nn.Module) -> None:
    """Outputs and log-dets agree forward and inverse, to 1e-5 in float32."""
    xs = [torch.randn(5, *shape) for shape in ours.dims_in]
    c = [torch.randn(5, *shape) for shape in ours.dims_c] or None
    close = dict(atol=1e-5, rtol=1e-5)
    z_ours, log_det_ours = ours(xs, c=c)
    z_theirs, log_det_theirs = theirs([x.clone() for x in xs], c=c)
    torch.testing.assert_close(_as_tuple(z_ours), _as_tuple(z_theirs), **close)
    torch.testing.assert_close(log_det_ours, log_det_theirs, **close)
    zs = list(_as_tuple(z_ours))
    x_ours, inverse_ours = ours(zs, c=c, rev=True)
    x_theirs, inverse_theirs = theirs([z.clone() for z in zs], c=c, rev=True)  # FrEIA edits
    torch.testing.assert_close(_as_tuple(x_ours), _as_tuple(x_theirs), **close)
    torch.testing.assert_close(_as_tuple(x_ours), tuple(xs), **close)
    torch.testing.assert_close(inverse_ours, inverse_theirs, **close)


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("build", GRAPHS.values(), ids=GRAPHS.keys())
def test_freia_weights_load_strictly_and_the_graphs_agree(build):
    theirs, ours = _both(build)
    ours.load_state_dict(theirs.state_dict())  # strict
    _assert_same(theirs, ours)


@pytest.mark.parametrize("build", GRAPHS.values(), ids=GRAPHS.keys())
def test_module_list_order_is_freias(build):
    """Position by position, for the modules with state. (Where a node has several inputs,
    FrEIA's order follows Python set iteration and varies between runs; in these graphs
    that only reorders stateless modules, whose positions carry no keys.)"""
    theirs, ours = _both(build)
    freia_nodes = [node for node in theirs.node_list if node.module is not None]
    ours_nodes = [ours.module_position_to_node(k) for k in range(len(ours.module_list))]
    assert len(ours_nodes) == len(freia_nodes)
    for position, (mine, freias) in enumerate(zip(ours_nodes, freia_nodes)):
        if freias.module.state_dict() or mine.module.state_dict():
            assert mine.name == freias.name, f"module_list.{position}"


def test_the_parity_graphs_use_every_shared_block():
    used = set()
    for build in GRAPHS.values():
        used |= {type(module).__name__ for module in _both(build)[1].module_list}
    shared = {"PermuteRandom", "Split", "Concat", "Flatten", "Reshape"}
    shared |= {"HaarDownsampling", "HaarUpsampling", "IRevNetDownsampling", "IRevNetUpsampling"}
    assert used == shared | set(AVAILABLE)


def test_sequence_inn_parity():
    def build(F: ModuleType, M: ModuleType):
        inn = F.SequenceINN(2, 4, 4)
        inn.append(M.HaarDownsampling, rebalance=0.5)
        inn.append(M.PermuteRandom, seed=3)
        for name, kwargs in AVAILABLE.items():
            inn.append(getattr(M, name), subnet_constructor=conv, **kwargs)
        inn.append(M.IRevNetUpsampling)
        inn.append(M.Flatten)
        return inn

    theirs, ours = _both(build)
    ours.load_state_dict(theirs.state_dict())
    _assert_same(theirs, ours)


# ---------------------------------------------- FrEIA's fixed kernels in Haar / i-RevNet
def _freia_kernel(haar: bool, channels: int) -> torch.Tensor:
    """The ``haar_weights`` / ``downsample_kernel`` FrEIA 0.2 saves, written out by hand."""
    if haar:  # average, then the three difference filters, each a 2x2 patch
        filters = [[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]]
    else:  # one pixel of the patch each, row by row
        filters = [[[1, 0], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [1, 0]], [[0, 0], [0, 1]]]
    return torch.tensor(filters, dtype=torch.float32).unsqueeze(1).repeat(channels, 1, 1, 1)


SQUEEZES = [
    (HaarDownsampling, (3, 4, 4), "haar_weights", 3),
    (HaarUpsampling, (12, 2, 2), "haar_weights", 3),
    (IRevNetDownsampling, (3, 4, 4), "downsample_kernel", 3),
    (IRevNetUpsampling, (12, 2, 2), "downsample_kernel", 3),
]
SQUEEZE_IDS = [cls.__name__ for cls, *_ in SQUEEZES]


@pytest.mark.parametrize(("cls", "shape", "key", "channels"), SQUEEZES, ids=SQUEEZE_IDS)
def test_freias_fixed_kernel_is_checked_and_dropped(cls, shape, key, channels):
    block = cls([shape])
    state = {key: _freia_kernel(key == "haar_weights", channels)}
    assert block.load_state_dict(state).unexpected_keys == []  # strict by default
    assert key in state and key not in block.state_dict()  # the caller's dict is kept
    nested = nn.ModuleDict({"inner": cls([shape])})
    nested.load_state_dict({f"inner.{key}": state[key].double()})  # any prefix, any dtype


@pytest.mark.parametrize(("cls", "shape", "key", "channels"), SQUEEZES, ids=SQUEEZE_IDS)
def test_a_kernel_other_than_freias_is_refused(cls, shape, key, channels):
    good = _freia_kernel(key == "haar_weights", channels)
    wrong_values = good.clone()
    wrong_values[5, 0, 1, 1] += 0.5
    other = _freia_kernel(key != "haar_weights", channels)  # the other family's kernel
    wrong_shape = _freia_kernel(key == "haar_weights", channels + 1)
    for kernel in (wrong_values, other, wrong_shape):
        with pytest.raises(InvGraphError, match=rf"{cls.__name__}: the state dict's '{key}'"):
            cls([shape]).load_state_dict({key: kernel})
    with pytest.raises(InvGraphError, match=r"of shape \(16, 1, 2, 2\) .* shape \(12, 1, 2, 2\)"):
        cls([shape]).load_state_dict({key: wrong_shape})


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("HaarDownsampling", (3, 4, 4), {}),
        ("HaarDownsampling", (3, 4, 4), {"order_by_wavelet": True, "rebalance": 0.5}),
        ("HaarUpsampling", (12, 2, 2), {"rebalance": 2.0}),
        ("IRevNetDownsampling", (3, 4, 4), {}),
        ("IRevNetDownsampling", (3, 4, 4), {"legacy_backend": True}),  # FrEIA saves nothing
        ("IRevNetUpsampling", (12, 2, 2), {}),
    ],
)
def test_freia_squeezes_load_strictly_and_agree(name, shape, kwargs):
    _, Fm = _freia()
    theirs = getattr(Fm, name)([shape], **kwargs)
    assert set(theirs.state_dict()) <= {"haar_weights", "downsample_kernel"}
    for kernel in theirs.state_dict().values():  # the kernels written out above are FrEIA's
        torch.testing.assert_close(kernel, _freia_kernel("Haar" in name, 3))
    ours = getattr(invgraph.modules, name)([shape], **kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, *shape)
    (z,), _ = ours((x,))
    for rev, inputs in ((False, x), (True, z)):
        (out_ours,), log_det_ours = ours((inputs,), rev=rev)
        (out_theirs,), log_det_theirs = theirs([inputs.clone()], rev=rev)
        torch.testing.assert_close(out_ours, out_theirs, atol=1e-5, rtol=1e-5)
        assert log_det_ours == pytest.approx(float(log_det_theirs), abs=1e-4)
