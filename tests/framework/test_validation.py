"""Every mistake in a graph or a call raises InvGraphError naming node, port and shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from registry import ConditionalAffineCoupling
from torch import nn

import invgraph as ig
from invgraph.modules import InvertibleModule


class WrongOutputDims(InvertibleModule):
    """Declares one more feature than it returns."""

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        return (x_or_z[0],), 0.0

    def output_dims(self, input_dims):
        return [(input_dims[0][0] + 1,)]


class TwoDimensionalLogDet(InvertibleModule):
    """Returns a per-feature log-det instead of a per-sample one."""

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        return (x_or_z[0],), torch.zeros_like(x_or_z[0])

    def output_dims(self, input_dims):
        return list(input_dims)


def chain(*blocks, dims=(6,), conditions=()):
    x = ig.InputNode(*dims, name="x")
    nodes, node = [x, *conditions], x
    for k, block in enumerate(blocks):
        node = ig.Node(node, block, name=f"b{k}")
        nodes.append(node)
    return ig.GraphINN([*nodes, ig.OutputNode(node, name="z")])


def test_error_is_a_value_error():
    assert issubclass(ig.InvGraphError, ValueError)


def test_port_consumed_twice():
    x = ig.InputNode(6, name="x")
    ig.Node(x, ig.PermuteRandom, name="first")
    with pytest.raises(ig.InvGraphError, match=r"'second'.*'x'.out0.*already feeds.*'first'"):
        ig.Node(x, ig.PermuteRandom, name="second")
    # The failed node did not claim the port: the graph is still whole.
    assert x.outputs[0][0].name == "first"


def test_port_consumed_by_nobody():
    x = ig.InputNode(6, name="x")
    split = ig.Node(x, ig.Split, {"section_sizes": [2, 4]}, name="split")
    out = ig.OutputNode(split.out0, name="z")
    with pytest.raises(ig.InvGraphError, match=r"'split'.out1 \(shape \(4,\)\).*no node"):
        ig.GraphINN([x, split, out])


def test_nodes_missing_from_the_list():
    x = ig.InputNode(6, name="x")
    hidden = ig.Node(x, ig.PermuteRandom, name="hidden")
    out = ig.OutputNode(hidden, name="z")
    with pytest.raises(ig.InvGraphError, match=r"missing from node_list: 'hidden'"):
        ig.GraphINN([x, out])


def test_condition_port_used_as_data():
    c = ig.ConditionNode(6, name="c")
    with pytest.raises(ig.InvGraphError, match=r"'c'.out0 of ConditionNode.*only.*condition"):
        ig.Node(c, ig.PermuteRandom, name="p")
    features = ig.FeedForwardNode(c, (4,), torch.nn.Linear(6, 4), name="features")
    with pytest.raises(ig.InvGraphError, match=r"'features'.out0 of FeedForwardNode"):
        ig.Node(features, ig.PermuteRandom, name="p")


def test_missing_port_and_bad_inputs():
    split = ig.Node(ig.InputNode(6), ig.Split, name="split")
    with pytest.raises(ig.InvGraphError, match=r"port out2 of node 'split', which has 2"):
        ig.Node((split, 2), ig.PermuteRandom, name="p")
    with pytest.raises(AttributeError, match="has 2 output port"):
        _ = split.out5
    with pytest.raises(ig.InvGraphError, match="not a node"):
        ig.Node(["x"], ig.PermuteRandom, name="p")
    with pytest.raises(ig.InvGraphError, match="at least one dimension"):
        ig.InputNode(name="x")
    with pytest.raises(ig.InvGraphError, match="positive integers"):
        ig.ConditionNode(3, 0)


def test_built_block_with_other_shapes():
    with pytest.raises(ig.InvGraphError, match=r"expects inputs \[\(8,\)\].*carry \[\(6,\)\]"):
        ig.Node(ig.InputNode(6), ig.PermuteRandom([(8,)]), name="p")


def test_block_rejecting_its_shapes_names_the_node():
    with pytest.raises(ig.InvGraphError, match=r"Node 'haar'"):
        ig.Node(ig.InputNode(2, 5, 4), ig.HaarDownsampling, name="haar")


def test_cycle_in_the_inverse_pass():
    """Each coupling is conditioned on the half that only the other's inverse rebuilds."""
    x = ig.InputNode(8, name="x")
    split = ig.Node(x, ig.Split, name="split")
    a = ig.Node(split.out0, ConditionalAffineCoupling, conditions=split.out1, name="A")
    b = ig.Node(split.out1, ConditionalAffineCoupling, conditions=split.out0, name="B")
    nodes = [x, split, a, b, ig.OutputNode(a), ig.OutputNode(b)]
    with pytest.raises(ig.InvGraphError, match=r"cycle in the inverse pass: .*'A'.*'B'"):
        ig.GraphINN(nodes)


def test_cycle_in_a_hand_edited_graph():
    """Nodes are built from existing ones, so only an edited graph can loop forward."""
    x = ig.InputNode(6, name="x")
    first = ig.Node(x, ConditionalAffineCoupling, conditions=ig.ConditionNode(1), name="first")
    second = ig.Node(first, ig.PermuteRandom, name="second")
    ig.OutputNode(second, name="z")
    first.conditions.append(second.out0)
    with pytest.raises(ig.InvGraphError, match=r"has a cycle: 'first' -> 'second' -> 'first'"):
        ig.GraphINN(ig.collect_nodes(x))


def test_no_input_or_no_output():
    with pytest.raises(ig.InvGraphError, match="no OutputNode"):
        ig.GraphINN([ig.InputNode(3)])


def test_call_with_wrong_number_of_inputs_or_conditions():
    c = ig.ConditionNode(3, name="c")
    x = ig.InputNode(6, name="x")
    coupling = ig.Node(x, ConditionalAffineCoupling, conditions=c, name="coupling")
    inn = ig.GraphINN([x, c, coupling, ig.OutputNode(coupling, name="z")])
    x_value, c_value = torch.randn(2, 6), torch.randn(2, 3)
    with pytest.raises(ig.InvGraphError, match=r"expected 1 inputs for nodes \['x'\], got 2"):
        inn([x_value, x_value], c=[c_value])
    with pytest.raises(ig.InvGraphError, match=r"expected 1 condition\(s\) .*\['c'\], got 0"):
        inn(x_value)
    with pytest.raises(ig.InvGraphError, match=r"inverse: expected 1 outputs \(latents\)"):
        inn([], c=[c_value], rev=True)


def test_call_with_wrong_shapes():
    c = ig.ConditionNode(3, name="c")
    x = ig.InputNode(6, name="x")
    coupling = ig.Node(x, ConditionalAffineCoupling, conditions=c, name="coupling")
    inn = ig.GraphINN([x, c, coupling, ig.OutputNode(coupling, name="z")])
    with pytest.raises(
        ig.InvGraphError, match=r"node 'x' expects shape \(batch, 6\), got \(2, 5\)"
    ):
        inn(torch.randn(2, 5), c=torch.randn(2, 3))
    with pytest.raises(ig.InvGraphError, match=r"condition node 'c' expects shape \(batch, 3\)"):
        inn(torch.randn(2, 6), c=torch.randn(2, 4))
    with pytest.raises(ig.InvGraphError, match=r"condition node 'c' has batch size 3.*has 2"):
        inn(torch.randn(2, 6), c=torch.randn(3, 3))
    with pytest.raises(ig.InvGraphError, match=r"inverse: node 'z' expects shape \(batch, 6\)"):
        inn(torch.randn(2, 7), c=torch.randn(2, 3), rev=True)
    # The check is cheap but skippable: the block then fails on its own terms.
    inn.check_shapes = False
    with pytest.raises(RuntimeError):
        inn(torch.randn(2, 5), c=torch.randn(2, 3))


def test_block_returning_other_shapes_than_declared():
    inn = chain(ig.PermuteRandom, WrongOutputDims)
    with pytest.raises(
        ig.InvGraphError,
        match=r"node 'b1': WrongOutputDims \(forward\) returned.*\[\(6,\)\].*\[\(7,\)\]",
    ):
        inn(torch.randn(2, 6))


def test_block_returning_a_malformed_log_det():
    inn = chain(TwoDimensionalLogDet)
    with pytest.raises(ig.InvGraphError, match=r"node 'b0'.*log-det.*shape \(2, 6\).*\(2,\)"):
        inn(torch.randn(2, 6))


def test_errors_inside_a_block_name_the_node():
    inn = chain(ig.PermuteRandom, ig.PermuteRandom)
    inn.check_shapes = False
    with pytest.raises(RuntimeError) as info:
        inn(torch.randn(2, 5))
    assert any("b0: [(6,)] -> PermuteRandom" in note for note in info.value.__notes__)


def test_condition_wired_to_a_block_without_conditions():
    x, c = ig.InputNode(6, name="x"), ig.ConditionNode(2, name="c")
    with pytest.raises(ig.InvGraphError, match=r"'p'.*PermuteRandom: takes no conditions.*\(2,\)"):
        ig.Node(x, ig.PermuteRandom, conditions=c, name="p")


def test_a_numpy_array_is_not_read_as_a_list_of_inputs():
    inn = chain(ig.PermuteRandom)
    array = np.zeros((2, 6), dtype=np.float32)
    with pytest.raises(ig.InvGraphError, match=r"GraphINN forward: the inputs must be .*numpy"):
        inn(array)
    with pytest.raises(ig.InvGraphError, match=r"node 'x' got numpy.ndarray, not a tensor"):
        inn([array])
    with pytest.raises(ig.InvGraphError, match=r"GraphINN inverse: the latents must be"):
        inn(array, rev=True)


def test_data_must_be_floating_point_and_on_one_device():
    inn = chain(ig.PermuteRandom)
    with pytest.raises(ig.InvGraphError, match=r"node 'x' got a tensor of dtype torch.int64"):
        inn(torch.ones(2, 6, dtype=torch.long))
    c = ig.ConditionNode(3, name="c")
    x = ig.InputNode(6, name="x")
    coupling = ig.Node(x, ConditionalAffineCoupling, conditions=c, name="coupling")
    conditional = ig.GraphINN([x, c, coupling, ig.OutputNode(coupling, name="z")])
    with pytest.raises(ig.InvGraphError, match=r"'c' is on device meta, but the first .* cpu"):
        conditional(torch.randn(2, 6), c=torch.randn(2, 3, device="meta"))
    with pytest.raises(ig.InvGraphError, match=r"'c' expects shape \(batch, 3\), got \(\)"):
        conditional(torch.randn(2, 6), c=torch.tensor(1.0))


@pytest.mark.parametrize("module_type", [nn.Linear, nn.Identity, nn.Linear(6, 6)])
def test_a_plain_network_is_not_a_block(module_type):
    x = ig.InputNode(6, name="x")
    with pytest.raises(
        ig.InvGraphError,
        match=r"Node 'lin': torch.nn.*(Linear|Identity) is "
        r"not an invertible block .*FeedForwardNode",
    ):
        ig.Node(x, module_type, name="lin")
    assert x.outputs == [None]  # the failed node claimed nothing


def test_factories_and_misspelt_arguments():
    x = ig.InputNode(6, name="x")
    with pytest.raises(
        ig.InvGraphError,
        match=r"Node 'p': PermuteRandom\(\[\(6,\)\], sed=...\) "
        r"raised TypeError: .*'sed'",
    ):
        ig.Node(x, ig.PermuteRandom, {"sed": 0}, name="p")
    with pytest.raises(
        ig.InvGraphError,
        match=r"module_type <lambda> returned an object of "
        r"type torch.nn.modules.linear.Linear is not an invertible block",
    ):
        ig.Node(x, lambda dims: nn.Linear(6, 6), name="f")
    with pytest.raises(ig.InvGraphError, match=r"module_type must be an InvertibleModule class"):
        ig.Node(x, "PermuteRandom", name="s")
    # A factory returning a block works, as in FrEIA.
    node = ig.Node(x, lambda dims, seed: ig.PermuteRandom(dims, seed=seed), {"seed": 1})
    assert isinstance(node.module, ig.PermuteRandom)
