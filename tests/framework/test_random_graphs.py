"""Random valid DAGs of structural blocks and couplings: round trip and exact log-det."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from registry import ConditionalAffineCoupling

import invgraph as ig
from invgraph.testing import check_block

INPUT_SHAPES = [(4,), (6,), (1, 4, 4), (2, 4, 4), (4, 2, 2)]


def _operations(shape: tuple[int, ...]) -> list[str]:
    """The blocks that accept a port of this shape."""
    ops = ["permute"]
    if shape[0] >= 2:
        ops.append("split")
    if len(shape) == 3:
        ops.append("flatten")
        if shape[1] % 2 == 0 and shape[2] % 2 == 0:
            ops += ["haar", "irevnet"]
        if shape[0] % 4 == 0:
            ops.append("haar_up")
    if len(shape) == 1:
        if shape[0] >= 2:
            ops.append("coupling")
        if shape[0] % 4 == 0:
            ops.append("reshape")
    return ops


def build_graph(data: st.DataObject) -> ig.GraphINN:
    draw = data.draw
    condition = ig.ConditionNode(3, name="c")
    inputs = [
        ig.InputNode(*draw(st.sampled_from(INPUT_SHAPES))) for _ in range(draw(st.integers(1, 2)))
    ]
    open_ports: list[ig.framework.Port] = [node.out0 for node in inputs]

    def shape_of(port):
        node, index = port
        return node.output_dims[index]

    for _ in range(draw(st.integers(1, 7))):
        port = open_ports.pop(draw(st.integers(0, len(open_ports) - 1)))
        shape = shape_of(port)
        others = [p for p in open_ports if shape_of(p)[1:] == shape[1:]]
        ops = _operations(shape) + (["concat"] if others else [])
        op = draw(st.sampled_from(ops))
        if op == "permute":
            node = ig.Node(port, ig.PermuteRandom, {"seed": draw(st.integers(0, 99))})
        elif op == "split":
            first = draw(st.integers(1, shape[0] - 1))
            node = ig.Node(port, ig.Split, {"section_sizes": [first, shape[0] - first]})
        elif op == "flatten":
            node = ig.Node(port, ig.Flatten)
        elif op == "reshape":
            node = ig.Node(port, ig.Reshape, {"output_dims": (shape[0] // 4, 2, 2)})
        elif op == "haar":
            node = ig.Node(port, ig.HaarDownsampling, {"order_by_wavelet": draw(st.booleans())})
        elif op == "haar_up":
            node = ig.Node(port, ig.HaarUpsampling)
        elif op == "irevnet":
            node = ig.Node(port, ig.IRevNetDownsampling)
        elif op == "coupling":
            # Condition on the condition node, or on another tensor of the graph.
            sources = [condition.out0, *open_ports]
            source = sources[draw(st.integers(0, len(sources) - 1))]
            node = ig.Node(port, ConditionalAffineCoupling, conditions=source)
        else:  # concat
            other = others[draw(st.integers(0, len(others) - 1))]
            open_ports.remove(other)
            node = ig.Node([port, other], ig.Concat)
        open_ports += [(node, k) for k in range(len(node.output_dims))]

    outputs = [ig.OutputNode(port) for port in open_ports]
    return ig.GraphINN(outputs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_graphs_invert_with_exact_log_det(data):
    try:
        inn = build_graph(data)
    except ig.InvGraphError as error:
        # Two couplings each conditioned on what only the other's inverse rebuilds:
        # not invertible, and reported as such.
        assert "cycle in the inverse pass" in str(error)
        event("not invertible: rejected with a clear error")
        return
    event(f"{len(inn.module_list)} blocks, {len(inn.out_nodes)} outputs")
    n_in = sum(math.prod(shape) for shape in inn.dims_in)
    assert n_in == sum(math.prod(shape) for shape in inn.output_dims())
    report = check_block(inn, batch_size=2)
    if not report.passed:
        pytest.fail(f"{inn.describe()}\n{report}")
