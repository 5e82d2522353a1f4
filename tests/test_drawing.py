"""Drawings (graphviz) and summaries of networks: invgraph/drawing.py."""

from __future__ import annotations

import html
import re
import shutil
import sys

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.drawing import Summary, draw, picture, plot_graph, split_latents, summary
from invgraph.errors import InvGraphError

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")

ODD_NAME = 'coupling "2": <main> & \\ back'
"""A node name with every character that DOT or SVG would misread unescaped."""


class ConvSubnet(nn.Module):
    """A small conv subnet; a module-level class, so the graph can be saved."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DenseSubnet(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def multiscale() -> ig.GraphINN:
    """A conditional multiscale graph: Haar, couplings, a 3-way split, an early latent,
    a conditioning network, a condition read from a data port, flatten and concat."""
    x = ig.InputNode(2, 8, 8, name="x")
    label = ig.ConditionNode(3, name="label")
    features = ig.FeedForwardNode(
        label, (4,), nn.Linear, {"in_features": 3, "out_features": 4}, name="features"
    )
    haar = ig.Node(x, ig.HaarDownsampling, name="haar")  # (8, 4, 4)
    glow = {"subnet_constructor": ConvSubnet, "clamp": 1.0}
    coupling1 = ig.Node(haar, ig.GLOWCouplingBlock, glow, conditions=features, name="coupling 1")
    split = ig.Node(coupling1, ig.Split, {"section_sizes": [2, 2, 4]}, name="split")
    z_early = ig.OutputNode(split.out0, name="z_early")
    flat1 = ig.Node(split.out1, ig.Flatten, name="flat1")  # (32,)
    coupling2 = ig.Node(
        split.out2, ig.GLOWCouplingBlock, glow, conditions=[label, split.out0], name=ODD_NAME
    )
    flat2 = ig.Node(coupling2, ig.Flatten, name="flat2")  # (64,)
    concat = ig.Node([flat1, flat2], ig.Concat, name="concat")  # (96,)
    z = ig.OutputNode(concat, name="z")
    return ig.GraphINN(
        [x, label, features, haar, coupling1, split, z_early, flat1, coupling2, flat2, concat, z]
    )


def sample(inn: ig.GraphINN, batch: int = 5) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.randn(batch, 2, 8, 8), [torch.randn(batch, 3)]


EDGE = re.compile(r"^\t(n\d+) -> (n\d+)(?: \[(.*)\])?$", re.MULTILINE)
NODE = re.compile(r"^\t(n\d+) \[label=(<.*>) (.*)\]$", re.MULTILINE)


def edges(source: str) -> list[tuple[str, str, str]]:
    return [(tail, head, attributes or "") for tail, head, attributes in EDGE.findall(source)]


def ids(inn: ig.GraphINN, source: str) -> dict[str, str]:
    """Node name -> DOT id, read back from the labels."""
    found = {}
    for node_id, label, _ in NODE.findall(source):
        name = re.search(r"<B>(.*?)</B>", label).group(1)
        found[html.unescape(name)] = node_id
    assert set(found) == {node.name for node in inn.node_list}
    return found


def node_attributes(source: str, node_id: str) -> str:
    return next(line for line in source.splitlines() if line.startswith(f"\t{node_id} ["))


def expected_edges(inn: ig.GraphINN) -> tuple[int, int]:
    data = sum(len(node.inputs) for node in inn.node_list)
    conditions = sum(len(node.conditions) for node in inn.node_list)
    return data, conditions


# ---------------------------------------------------------------------- DOT source
def test_every_tensor_is_one_edge_with_its_shape():
    inn = multiscale()
    source = draw(inn).source
    name_to_id = ids(inn, source)
    drawn = edges(source)
    data, conditions = expected_edges(inn)
    assert (data, conditions) == (10, 4)
    assert len(drawn) == data + conditions
    assert sum("style=dashed" in attributes for *_, attributes in drawn) == conditions
    for node in inn.node_list:
        for source_node, index in node.inputs:
            label = f'label="{tuple(source_node.output_dims[index])}"'
            tail, head = name_to_id[source_node.name], name_to_id[node.name]
            assert any(
                (t, h) == (tail, head) and label in a and "dashed" not in a for t, h, a in drawn
            ), (source_node.name, node.name)
    split_to_early = (name_to_id["split"], name_to_id["z_early"], 'label="(2, 4, 4)"')
    assert split_to_early in drawn


def test_condition_edges_are_dashed_and_come_from_their_ports():
    inn = multiscale()
    source = draw(inn).source
    name_to_id = ids(inn, source)
    dashed = {(t, h) for t, h, a in edges(source) if "style=dashed" in a}
    expected = {
        ("label", "features"),
        ("features", "coupling 1"),
        ("label", ODD_NAME),
        ("split", ODD_NAME),  # a data port read as a condition
    }
    assert dashed == {(name_to_id[a], name_to_id[b]) for a, b in expected}


def test_boundary_nodes_have_distinct_shapes_and_the_latent_is_marked():
    inn = multiscale()
    source = draw(inn).source
    name_to_id = ids(inn, source)

    def attributes(name: str) -> str:
        return node_attributes(source, name_to_id[name])

    assert "shape=invhouse" in attributes("x")
    assert "shape=parallelogram" in attributes("label")
    assert "shape=component" in attributes("features")
    assert "shape=house" in attributes("z") and "shape=house" in attributes("z_early")
    assert "shape=box" in attributes("coupling 1")
    assert "latent, leaves at depth 3" in attributes("z_early")
    assert "latent" not in attributes("z")
    assert attributes("z_early").split("fillcolor=")[1] != attributes("z").split("fillcolor=")[1]
    # Name, block and parameter count in each box.
    parameters = sum(p.numel() for p in inn.get_module_by_name("coupling 1").parameters())
    assert f"GLOWCouplingBlock<BR/>{parameters:,} params" in attributes("coupling 1")
    assert "HaarDownsampling<BR/>0 params" in attributes("haar")


def test_split_latents_counts_blocks_on_the_longest_data_path():
    inn = multiscale()
    latents = {node.name: depth for node, depth in split_latents(inn).items()}
    assert latents == {"z_early": 3}
    # Two outputs of equal depth: neither is a split-off latent.
    x = ig.InputNode(8, name="x")
    split = ig.Node(x, ig.Split, name="split")
    ends = [ig.OutputNode(split.out0), ig.OutputNode(split.out1)]
    assert split_latents(ends) == {}


def test_reverse_draws_the_inverse_pass():
    inn = multiscale()
    forward, inverse = draw(inn).source, draw(inn, reverse=True).source
    name_to_id = ids(inn, inverse)
    forward_edges = {(t, h) for t, h, a in edges(forward) if "dashed" not in a}
    inverse_edges = {(t, h) for t, h, a in edges(inverse) if "dashed" not in a}
    assert inverse_edges == {(h, t) for t, h in forward_edges}
    assert (name_to_id["z"], name_to_id["concat"]) in inverse_edges
    assert (name_to_id["haar"], name_to_id["x"]) in inverse_edges
    # In the inverse, the condition port split.out0 is the latent z_early, given as input.
    dashed = {(t, h) for t, h, a in edges(inverse) if "dashed" in a}
    assert (name_to_id["z_early"], name_to_id[ODD_NAME]) in dashed
    assert (name_to_id["label"], name_to_id["features"]) in dashed
    assert len(edges(inverse)) == sum(expected_edges(inn))
    assert 'label="inverse pass"' in inverse and 'label="forward pass"' in forward
    assert "GLOWCouplingBlock (inverse)" in node_attributes(inverse, name_to_id["coupling 1"])
    assert "(inverse)" not in node_attributes(inverse, name_to_id["features"])


def test_show_shapes_false_leaves_edges_unlabelled():
    source = draw(multiscale(), show_shapes=False).source
    assert all("label=" not in attributes for *_, attributes in edges(source))


def test_node_names_are_escaped():
    source = draw(multiscale()).source
    assert html.escape(ODD_NAME) in source
    assert ODD_NAME not in source


def test_draw_accepts_sequences_node_lists_and_incomplete_graphs():
    inn = ig.SequenceINN(6)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet, cond=0, cond_shape=(3,))
    inn.append(ig.PermuteRandom, seed=0)
    source = draw(inn).source
    assert len(edges(source)) == 3 + 1  # x -> 0 -> 1 -> z, c0 -> 0
    assert "<B>c0</B>" in source and "<B>z</B>" in source
    # The output nodes suffice; a graph GraphINN rejects (a port nobody consumes) draws too.
    x = ig.InputNode(8, name="x")
    split = ig.Node(x, ig.Split, name="split")
    z = ig.OutputNode(split.out0, name="z")
    assert len(edges(draw(z).source)) == 2
    with pytest.raises(InvGraphError, match="GraphINN, a SequenceINN or nodes"):
        draw([1, 2])


# ---------------------------------------------------------------------- rendering with dot
@needs_dot
def test_svg_has_every_node_and_edge():
    inn = multiscale()
    svg = draw(inn).pipe(format="svg").decode()
    assert svg.count('class="edge"') == sum(expected_edges(inn))
    assert svg.count('class="node"') == len(inn.node_list)
    for node in inn.node_list:
        assert f">{html.escape(node.name, quote=False)}</text>" in svg.replace("&quot;", '"')


@needs_dot
def test_svg_of_the_inverse_and_of_a_sequence():
    inn = multiscale()
    svg = draw(inn, reverse=True).pipe(format="svg").decode()
    assert svg.count('class="edge"') == sum(expected_edges(inn))
    sequence = ig.SequenceINN(4, 8, 8)
    sequence.append(ig.HaarDownsampling)
    sequence.append(ig.Flatten)
    assert draw(sequence).pipe(format="svg").decode().count('class="edge"') == 3


@needs_dot
def test_plot_graph_writes_a_pdf(tmp_path):
    from invgraph.utils import plot_graph as reexported

    assert reexported is plot_graph
    inn = multiscale()
    written = plot_graph(inn.out_nodes, tmp_path / "graphs", "net")
    assert written.endswith("net.pdf")
    assert (tmp_path / "graphs" / "net.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "graphs" / "net").read_text().startswith("digraph")


def test_plot_graph_without_dot_draws_with_matplotlib(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program on it
    with pytest.warns(UserWarning, match="dot is not installed, so .*net.pdf was drawn with"):
        written = plot_graph(multiscale(), tmp_path / "graphs", "net")
    assert (tmp_path / "graphs" / "net.pdf").read_bytes().startswith(b"%PDF")
    assert written.endswith("net.pdf")


# ---------------------------------------------------------------------- without Graphviz
def _arrows(figure) -> list:
    return [a for a in figure.axes[0].texts if a.get_text() == "" and a.arrow_patch is not None]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
def test_picture_has_every_node_and_every_tensor(reverse):
    pytest.importorskip("matplotlib")
    inn = multiscale()
    figure = picture(inn, reverse=reverse)
    texts = [t.get_text() for t in figure.axes[0].texts]
    for node in inn.node_list:
        assert sum(text.startswith(f"{node.name}\n") for text in texts) == 1, node.name
    assert "z_early\nOutputNode (2, 4, 4)\nlatent, leaves at depth 3" in texts
    data, conditions = expected_edges(inn)
    arrows = _arrows(figure)
    assert len(arrows) == data + conditions
    assert sum(a.arrow_patch.get_linestyle() == "--" for a in arrows) == conditions
    # Layers follow the direction drawn: every arrow points downwards.
    assert all(a.xy[1] < a.xyann[1] for a in arrows)
    assert figure.axes[0].get_title() == ("inverse pass" if reverse else "forward pass")


def test_draw_shows_the_picture_in_jupyter_without_dot(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    drawing = draw(multiscale())
    monkeypatch.setenv("PATH", str(tmp_path))
    bundle = drawing._repr_mimebundle_()
    assert list(bundle) == ["image/svg+xml"]
    assert "<svg" in bundle["image/svg+xml"] and "z_early" in bundle["image/svg+xml"]


def test_picture_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    with pytest.raises(InvGraphError, match=r"picture\(\) needs matplotlib: pip install"):
        picture(multiscale())


# ---------------------------------------------------------------------- summaries
def test_summary_lists_shapes_and_parameters():
    inn = multiscale()
    features = inn.get_module_by_name("features")
    features.weight.requires_grad_(False)
    result = summary(inn)
    assert isinstance(result, Summary)
    assert [row.node for row in result.rows] == [node.name for node in inn.node_list]
    for row, node in zip(result.rows, inn.node_list):
        module = node.module
        expected = 0 if module is None else sum(p.numel() for p in module.parameters())
        assert row.parameters == expected
        assert row.input_shapes == tuple(node.input_dims)
        assert row.output_shapes == tuple(node.output_dims)
        assert row.log_det_mean is None and row.log_det_std is None
    by_name = {row.node: row for row in result.rows}
    assert by_name["features"].trainable == by_name["features"].parameters - 12
    assert by_name["z_early"].latent_depth == 3 and by_name["z"].latent_depth is None
    assert by_name[ODD_NAME].condition_shapes == ((3,), (2, 4, 4))
    assert result.parameters == sum(p.numel() for p in inn.parameters())
    assert result.trainable == result.parameters - 12
    table = str(result)
    assert repr(result) == table
    assert "latent, leaves at depth 3" in table and "log-det" not in table
    assert table.splitlines()[-2].split()[-2:] == [
        f"{result.parameters:,}",
        f"{result.trainable:,}",
    ]


def test_summary_log_det_statistics_match_intermediate_outputs():
    torch.manual_seed(0)
    inn = multiscale()
    x, c = sample(inn)
    result = summary(inn, x, c)
    _, log_dets = inn(x, c, intermediate_outputs=True)
    by_name = {row.node: row for row in result.rows}
    for node in inn.node_list:
        row = by_name[node.name]
        if node.module is None or isinstance(node, ig.FeedForwardNode):
            assert row.log_det_mean is None
            continue
        value = log_dets[node] + torch.zeros(5)
        assert row.log_det_mean == pytest.approx(value.mean().item(), abs=1e-5)
        assert row.log_det_std == pytest.approx(value.std(correction=0).item(), abs=1e-5)
    assert by_name["coupling 1"].log_det_std > 0  # the couplings are not constant
    _, total = inn(x, c)
    assert result.log_det_mean == pytest.approx(total.mean().item(), abs=1e-5)
    assert result.log_det_std == pytest.approx(total.std(correction=0).item(), abs=1e-5)
    assert "log-det mean" in str(result)


def test_summary_of_a_sequence_calls_each_block():
    torch.manual_seed(0)
    inn = ig.SequenceINN(6)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet, cond=1, cond_shape=(3,))
    inn.append(ig.PermuteRandom, seed=0)
    inn.append(ig.GLOWCouplingBlock, subnet_constructor=DenseSubnet, cond=1, cond_shape=(3,))
    x, c = torch.randn(7, 6), [torch.randn(7, 2), torch.randn(7, 3)]  # condition 0 unused
    result = summary(inn, x, c)
    assert [row.node for row in result.rows] == ["x", "c1", "0", "1", "2", "z"]
    values, expected = (x,), []
    with torch.no_grad():
        for module in inn:
            conditions = (c[1],) if module.dims_c else ()
            values, log_det = module(values, c=conditions)
            expected.append(log_det + torch.zeros(7))
    for row, value in zip(result.rows[2:5], expected):
        assert row.log_det_mean == pytest.approx(value.mean().item(), abs=1e-5)
        assert row.log_det_std == pytest.approx(value.std(correction=0).item(), abs=1e-5)
    _, total = inn(x, c)
    assert result.log_det_mean == pytest.approx(total.mean().item(), abs=1e-5)
    assert result.parameters == sum(p.numel() for p in inn.parameters())


def test_summary_of_node_lists_builds_the_graph():
    inn = multiscale()
    x, c = sample(inn)
    from_nodes = summary(inn.out_nodes, x, c)
    from_graph = summary(inn, x, c)
    assert from_nodes.log_det_mean == pytest.approx(from_graph.log_det_mean, abs=1e-5)
    assert [row.node for row in from_nodes.rows] == [row.node for row in from_graph.rows]
