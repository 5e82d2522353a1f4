"""GraphINN on whole graphs: multiscale, conditional, several inputs and outputs."""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import pytest
import torch
from registry import ConditionalAffineCoupling
from torch import nn

import invgraph as ig
from invgraph.testing import check_block


def multiscale_graph(seed: int = 1) -> ig.GraphINN:
    """Latents split off at two depths; Haar, Split, Flatten, Reshape, Concat, coupling."""
    x = ig.InputNode(2, 8, 8, name="x")
    haar1 = ig.Node(x, ig.HaarDownsampling, name="haar1")  # (8, 4, 4)
    perm = ig.Node(haar1, ig.PermuteRandom, {"seed": seed}, name="perm")
    split1 = ig.Node(perm, ig.Split, {"section_sizes": [4, 4]}, name="split1")
    flat1 = ig.Node(split1.out0, ig.Flatten, name="flat1")  # (64,)
    split3 = ig.Node(flat1, ig.Split, {"section_sizes": [48, 16]}, name="split3")
    z1 = ig.OutputNode(split3.out0, name="z1")  # leaves at depth 1: (48,)
    haar2 = ig.Node(split1.out1, ig.HaarDownsampling, name="haar2")  # (16, 2, 2)
    split2 = ig.Node(haar2, ig.Split, {"section_sizes": [8, 8]}, name="split2")
    z2 = ig.OutputNode(split2.out0, name="z2")  # leaves at depth 2: (8, 2, 2)
    reshape = ig.Node(split2.out1, ig.Reshape, {"output_dims": (32,)}, name="reshape")
    concat = ig.Node([split3.out1, reshape], ig.Concat, name="concat")  # (48,)
    coupling = ig.Node(concat, ConditionalAffineCoupling, name="coupling")
    z3 = ig.OutputNode(coupling, name="z3")
    nodes = [x, haar1, perm, split1, flat1, split3, z1, haar2, split2, z2, reshape, concat]
    return ig.GraphINN([*nodes, coupling, z3])


def conditional_graph() -> ig.GraphINN:
    """Two inputs, three outputs, a condition node, a conditioning network, and a
    condition read from a data port inside the graph."""
    a = ig.InputNode(4, name="a")
    b = ig.InputNode(2, 4, 4, name="b")
    y = ig.ConditionNode(3, name="y")
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5))
    features = ig.FeedForwardNode(y, (5,), net, name="features")
    flat_b = ig.Node(b, ig.Flatten, name="flat_b")
    concat = ig.Node([a, flat_b], ig.Concat, name="concat")  # (36,)
    coupling1 = ig.Node(concat, ConditionalAffineCoupling, conditions=[features], name="c1")
    split = ig.Node(coupling1, ig.Split, {"section_sizes": [6, 10, 20]}, name="split")
    perm = ig.Node(split.out0, ig.PermuteRandom, {"seed": 0}, name="perm")
    # split.out0 is consumed by perm and read as a condition by coupling2: in the inverse
    # pass coupling2 must wait until perm's inverse has reconstructed it.
    coupling2 = ig.Node(
        split.out2, ConditionalAffineCoupling, conditions=[y, split.out0], name="c2"
    )
    outs = [ig.OutputNode(perm, name="z0"), ig.OutputNode(split.out1, name="z1")]
    outs.append(ig.OutputNode(coupling2, name="z2"))
    return ig.GraphINN(
        [a, b, y, features, flat_b, concat, coupling1, split, perm, coupling2, *outs]
    )


def perturbed(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Move every parameter away from its (identity) initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return module


def test_multiscale_graph_shapes_and_properties():
    inn = multiscale_graph()
    assert inn.output_dims() == [(48,), (8, 2, 2), (48,)]
    x = torch.randn(3, 2, 8, 8)
    (z1, z2, z3), log_det = inn(x)
    assert (z1.shape, z2.shape, z3.shape, log_det.shape) == ((3, 48), (3, 8, 2, 2), (3, 48), (3,))
    check_block(inn).assert_ok()


def test_conditional_graph_properties_and_gradients():
    inn = perturbed(conditional_graph())
    check_block(inn).assert_ok()

    a, b = torch.randn(4, 4), torch.randn(4, 2, 4, 4)
    y = torch.randn(4, 3, requires_grad=True)
    (z0, z1, z2), log_det = inn([a, b], c=[y])
    (0.5 * (z0.square().sum() + z1.square().sum() + z2.square().sum()) - log_det.sum()).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0  # gradients reach the condition
    features = inn.get_module_by_name("features")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in features.parameters())

    (a_rec, b_rec), log_det_inv = inn([z0, z1, z2], c=[y], rev=True)
    torch.testing.assert_close(a_rec, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b_rec, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_det_inv, -log_det, atol=1e-5, rtol=1e-5)


def test_inverse_reads_the_reconstructed_condition_port():
    """A condition taken from a data port carries, in reverse, what the inverse rebuilt."""
    inn = perturbed(conditional_graph())
    a, b, y = torch.randn(2, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 3)
    forward_ports, _ = inn([a, b], c=[y], intermediate_outputs=True)
    (z0, z1, z2), _ = inn([a, b], c=[y])
    reverse_ports, _ = inn([z0, z1, z2], c=[y], rev=True, intermediate_outputs=True)
    split = inn.get_node_by_name("split")
    torch.testing.assert_close(reverse_ports[split.out0], forward_ports[split.out0])
    order = [node.name for node in inn.execution_order(rev=True)]
    assert order.index("perm") < order.index("c2")


def test_sum_of_block_log_dets_is_the_graph_log_det():
    inn = perturbed(conditional_graph())
    a, b, y = torch.randn(2, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 3)
    _, log_det = inn([a, b], c=[y])
    ports, node_log_dets = inn([a, b], c=[y], intermediate_outputs=True)
    assert {node.name for node in node_log_dets} == {
        "flat_b",
        "concat",
        "c1",
        "split",
        "perm",
        "c2",
    }
    total = sum(node_log_dets.values())
    torch.testing.assert_close(torch.zeros(2) + total, log_det)
    assert len(ports) == sum(len(node.output_dims) for node in inn.node_list)


def test_single_output_is_bare_unless_forced():
    def build(**kwargs):
        x = ig.InputNode(6, name="x")
        p = ig.Node(x, ig.PermuteRandom, {"seed": 0})
        return ig.GraphINN([x, p, ig.OutputNode(p)], **kwargs)

    x = torch.randn(2, 6)
    z, log_det = build()(x)
    assert isinstance(z, torch.Tensor)
    assert log_det.shape == (2,) and log_det.dtype == x.dtype and torch.all(log_det == 0)
    (z_tuple,), _ = build(force_tuple_output=True)(x)
    torch.testing.assert_close(z_tuple, z)
    # Inputs given as a list work too, and jac=False gives zeros of the right shape.
    z_list, zeros = build()([x], jac=False)
    torch.testing.assert_close(z_list, z)
    assert zeros.shape == (2,) and torch.all(zeros == 0)


def test_graph_from_output_nodes_alone_keeps_declaration_order():
    a, b = ig.InputNode(3, name="a"), ig.InputNode(5, name="b")
    concat = ig.Node([a, b], ig.Concat, name="concat")
    split = ig.Node(concat, ig.Split, {"section_sizes": [2, 6]}, name="split")
    out_small, out_big = ig.OutputNode(split.out0, name="s"), ig.OutputNode(split.out1, name="l")
    inn = ig.GraphINN([out_small, out_big])
    assert [n.name for n in inn.in_nodes] == ["a", "b"]
    assert [n.name for n in inn.out_nodes] == ["s", "l"]
    (s, big), _ = inn([torch.randn(2, 3), torch.randn(2, 5)])
    assert s.shape == (2, 2) and big.shape == (2, 6)
    assert [n.name for n in ig.collect_nodes(concat)] == ["a", "b", "concat", "split", "s", "l"]


def test_built_block_and_names():
    x = ig.InputNode(2, 4, 4, name="x")
    haar = ig.Node(x, ig.HaarDownsampling([(2, 4, 4)], rebalance=0.5), name="haar")
    out = ig.OutputNode(haar, name="z")
    inn = ig.GraphINN([x, haar, out])
    assert str(haar) == "haar: [(2, 4, 4)] -> HaarDownsampling -> [(8, 2, 2)]"
    assert inn.get_node_by_name("haar") is haar
    assert inn.get_module_by_name("haar") is haar.module is inn.module_list[0]
    assert inn.get_node_by_name("nope") is None and inn.get_module_by_name("nope") is None
    assert "haar: [(2, 4, 4)] -> HaarDownsampling -> [(8, 2, 2)]" in inn.describe()
    conditioned = ig.Node(
        ig.InputNode(6), ConditionalAffineCoupling, conditions=ig.ConditionNode(3), name="cc"
    )
    assert str(conditioned) == "cc: [(6,)] | c=[(3,)] -> ConditionalAffineCoupling -> [(6,)]"


def test_nested_graph_as_a_block():
    inner_x = ig.InputNode(6, name="inner_x")
    inner_p = ig.Node(inner_x, ig.PermuteRandom, {"seed": 3})
    inner = ig.GraphINN([inner_x, inner_p, ig.OutputNode(inner_p)], force_tuple_output=True)
    x = ig.InputNode(6, name="x")
    node = ig.Node(x, inner, name="inner")
    outer = ig.GraphINN([x, node, ig.OutputNode(node)])
    x_value = torch.randn(2, 6)
    torch.testing.assert_close(outer(x_value)[0], inner(x_value)[0][0])

    bare = ig.GraphINN(ig.collect_nodes(ig.OutputNode(ig.InputNode(4))))
    with pytest.raises(ig.InvGraphError, match="force_tuple_output=True"):
        ig.Node(ig.InputNode(4), bare)


def test_save_load_state_dict_and_dtype():
    inn = perturbed(multiscale_graph(seed=1))
    x = torch.randn(2, 2, 8, 8)
    expected, expected_log_det = inn(x)

    buffer = io.BytesIO()
    torch.save(inn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for got, want in zip(loaded(x)[0], expected):
        torch.testing.assert_close(got, want)

    other = multiscale_graph(seed=2)  # other permutation and weights, until loaded
    assert not torch.equal(other(x)[0][0], expected[0])
    other.load_state_dict(inn.state_dict())
    for got, want in zip(other(x)[0], expected):
        torch.testing.assert_close(got, want)

    inn64 = copy.deepcopy(inn).to(torch.float64)
    (z1, _, _), log_det64 = inn64(x.double())
    assert z1.dtype == torch.float64 and log_det64.dtype == torch.float64
    torch.testing.assert_close(log_det64.float(), expected_log_det, atol=1e-4, rtol=1e-4)


def test_a_graph_built_with_lambdas_saves_whole():
    """FrEIA's own examples pass subnet constructors as lambdas; the nodes keep their
    construction arguments, which cannot be pickled, so the graph is saved without them."""

    def local_subnet(c_in, c_out):
        return nn.Sequential(nn.Linear(c_in, 8), nn.Tanh(), nn.Linear(8, c_out))

    x, c = ig.InputNode(6, name="x"), ig.ConditionNode(2, name="c")
    first = ig.Node(
        x,
        ig.GLOWCouplingBlock,
        {"subnet_constructor": lambda c_in, c_out: nn.Linear(c_in, c_out)},
        conditions=c,
        name="first",
    )
    second = ig.Node(first, ig.RNVPCouplingBlock, {"subnet_constructor": local_subnet})
    features = ig.FeedForwardNode(c, (3,), lambda: nn.Linear(2, 3), name="features")
    third = ig.Node(second, ConditionalAffineCoupling, conditions=features, name="third")
    inn = perturbed(ig.GraphINN([x, c, first, second, features, third, ig.OutputNode(third)]))
    x_value, c_value = torch.randn(4, 6), torch.randn(4, 2)
    expected, expected_log_det = inn(x_value, c=c_value)

    buffer = io.BytesIO()
    torch.save(inn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    z, log_det = loaded(x_value, c=c_value)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(log_det, expected_log_det)
    assert loaded.get_node_by_name("first").module_args is None  # not saved
    assert loaded.get_node_by_name("features").module_type is nn.Linear
    assert inn.get_node_by_name("first").module_args is not None  # the original keeps them
    assert check_block(inn, conditions=c_value, checks=["save_load"]).passed


def test_modules_are_called_through_module_list():
    """What nn.DataParallel relies on (FrEIA defect 1): a replica's forward must call the
    replica's modules, not the ones the nodes were built with."""
    inn = perturbed(conditional_graph())
    a, b, y = torch.randn(2, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 3)
    before, _ = inn([a, b], c=[y])

    replica = inn._replicate_for_data_parallel()
    replica._modules = dict(replica._modules)
    replica.module_list = nn.ModuleList([copy.deepcopy(m) for m in inn.module_list])
    with torch.no_grad():
        for parameter in replica.module_list.parameters():
            parameter.mul_(2.0)
    changed, _ = replica([a, b], c=[y])
    unchanged, _ = inn([a, b], c=[y])
    assert not torch.allclose(changed[2], before[2])
    torch.testing.assert_close(unchanged[2], before[2])


def test_data_parallel_wrapper_runs():
    inn = conditional_graph()
    parallel = nn.DataParallel(inn)
    a, b, y = torch.randn(4, 4), torch.randn(4, 2, 4, 4), torch.randn(4, 3)
    (z0, _, _), log_det = parallel([a, b], c=[y])
    torch.testing.assert_close(z0, inn([a, b], c=[y])[0][0])
    assert log_det.shape == (4,)


@pytest.mark.cuda
def test_data_parallel_on_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    inn = perturbed(conditional_graph()).cuda()
    a, b, y = torch.randn(8, 4), torch.randn(8, 2, 4, 4), torch.randn(8, 3)
    args = [t.cuda() for t in (a, b, y)]
    (z_parallel, _, _), log_det = nn.DataParallel(inn)(args[:2], c=[args[2]])
    (z_single, _, _), log_det_single = inn(args[:2], c=[args[2]])
    torch.testing.assert_close(z_parallel, z_single)
    torch.testing.assert_close(log_det, log_det_single)


@pytest.mark.cuda
def test_cuda_round_trip():
    inn = perturbed(conditional_graph()).cuda()
    a, b, y = torch.randn(3, 4).cuda(), torch.randn(3, 2, 4, 4).cuda(), torch.randn(3, 3).cuda()
    z, log_det = inn([a, b], c=[y])
    assert log_det.device.type == "cuda"
    (a_rec, _), _ = inn(list(z), c=[y], rev=True)
    torch.testing.assert_close(a_rec, a, atol=1e-5, rtol=1e-5)


def test_meta_device_forward_inverse_backward():
    inn = copy.deepcopy(conditional_graph()).to("meta")
    a = torch.empty(3, 4, device="meta", requires_grad=True)
    b = torch.empty(3, 2, 4, 4, device="meta")
    y = torch.empty(3, 3, device="meta")
    (z0, z1, z2), log_det = inn([a, b], c=[y])
    assert log_det.device.type == "meta" and log_det.shape == (3,)
    (z0.sum() + z1.sum() + z2.sum() + log_det.sum()).backward()
    assert a.grad is not None and a.grad.device.type == "meta"
    (a_rec, b_rec), _ = inn([z0, z1, z2], c=[y], rev=True)
    assert a_rec.shape == (3, 4) and b_rec.shape == (3, 2, 4, 4)


def test_compiles_without_graph_breaks():
    inn = perturbed(conditional_graph())
    a, b, y = torch.randn(2, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 3)
    compiled = torch.compile(inn, fullgraph=True, backend="eager")
    (z0, z1, z2), log_det = compiled([a, b], c=[y])
    (want0, _, _), want_log_det = inn([a, b], c=[y])
    torch.testing.assert_close(z0, want0)
    torch.testing.assert_close(log_det, want_log_det)
    (a_rec, _), _ = compiled([z0, z1, z2], c=[y], rev=True)
    torch.testing.assert_close(a_rec, a, atol=1e-5, rtol=1e-5)


def test_deprecated_alias():
    x = ig.InputNode(4)
    p = ig.Node(x, ig.PermuteRandom)
    with pytest.warns(DeprecationWarning, match="GraphINN"):
        net = ig.framework.ReversibleGraphNet([x, p, ig.OutputNode(p)])
    assert isinstance(net, ig.GraphINN)


def test_draw_summary_and_plot_methods(tmp_path):
    inn = conditional_graph()
    assert inn.draw(reverse=True).source == ig.draw(inn, reverse=True).source
    a, b, y = torch.randn(2, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 3)
    assert str(inn.summary([a, b], c=[y])) == str(ig.summary(inn, [a, b], c=[y]))
    chain = ig.SequenceINN(6)
    chain.append(ig.PermuteRandom, seed=0)
    assert chain.draw().source == ig.draw(chain).source
    assert "PermuteRandom" in str(chain.summary(torch.randn(2, 6)))
    if shutil.which("dot"):
        assert Path(inn.plot(str(tmp_path), "net")).read_bytes().startswith(b"%PDF")
