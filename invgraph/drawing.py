"""Pictures and tables of invertible networks: graphviz drawings and torchinfo-like summaries.

:func:`draw` turns a :class:`~invgraph.framework.GraphINN`, a
:class:`~invgraph.framework.SequenceINN` or a list of nodes into a :class:`graphviz.Digraph`
(it displays itself in Jupyter; ``.render(...)`` writes a file and needs the ``dot``
program). :func:`summary` lists every node with its shapes and parameter counts and, given
a sample batch, the statistics of each block's log-determinant.

Split-off latents. Each port has a *depth*: the number of blocks (:class:`Node` objects)
on the longest data path from an input to it; conditions do not count. The *final* outputs are
the output nodes of greatest depth; every other output node is a *split-off latent* that
leaves the network at its depth, as the early latents of a multiscale network do.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import graphviz
import torch
from torch import Tensor, nn

from .errors import InvGraphError
from .framework.graph_inn import GraphINN, batch_log_det, collect_nodes
from .framework.nodes import (
    AbstractNode,
    ConditionNode,
    FeedForwardNode,
    InputNode,
    Node,
    OutputNode,
)
from .framework.sequence_inn import SequenceINN
from .modules.base import Shape

__all__ = ["Summary", "SummaryRow", "draw", "plot_graph", "split_latents", "summary"]

Drawable = GraphINN | SequenceINN | AbstractNode | Iterable[AbstractNode]
"""What :func:`draw` and :func:`summary` accept: a network, a node, or nodes of a graph."""

_NODE_STYLES: dict[str, dict[str, str]] = {
    "input": {"shape": "invhouse", "style": "filled", "fillcolor": "#d9f0d9"},
    "output": {"shape": "house", "style": "filled", "fillcolor": "#d6e4f7"},
    "latent": {"shape": "house", "style": "filled", "fillcolor": "#fbe1bd"},
    "condition": {"shape": "parallelogram", "style": "filled", "fillcolor": "#ebdff6"},
    "feed_forward": {"shape": "component", "style": "filled", "fillcolor": "#eeeeee"},
    "block": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff"},
}
_CONDITION_EDGE = {"style": "dashed", "color": "#7b4fa0", "fontcolor": "#7b4fa0"}


# ---------------------------------------------------------------------- the graph's nodes
def _nodes(graph: Drawable) -> list[AbstractNode]:
    """All nodes of ``graph`` in forward topological order.

    Creation order is topological (a node's inputs and conditions exist before it), which
    is also the order of :attr:`GraphINN.node_list`.
    """
    if isinstance(graph, GraphINN):
        return list(graph.node_list)
    if isinstance(graph, SequenceINN):
        return _sequence_nodes(graph)
    given = [graph] if isinstance(graph, AbstractNode) else list(graph)
    strangers = [item for item in given if not isinstance(item, AbstractNode)]
    if strangers or not given:
        raise InvGraphError(
            f"draw/summary: expected a GraphINN, a SequenceINN or nodes, got "
            f"{type(graph).__name__}" + (f" containing {strangers[0]!r}" if strangers else "")
        )
    return collect_nodes(*given)


def _sequence_nodes(inn: SequenceINN) -> list[AbstractNode]:
    """A SequenceINN as nodes over the same blocks: ``x``, ``c<k>``, ``0``, ``1``, ..., ``z``."""
    x = InputNode(*inn.shapes[0], name="x")
    used = sorted({k for k in inn.conditions if k is not None})
    conditions = {k: ConditionNode(*inn.dims_c[k], name=f"c{k}") for k in used}
    previous: AbstractNode = x
    for k, (module, cond) in enumerate(zip(inn.module_list, inn.conditions)):
        previous = Node(previous, module, conditions=conditions.get(cond), name=str(k))
    OutputNode(previous, name="z")
    return collect_nodes(x)


def split_latents(graph: Drawable) -> dict[OutputNode, int]:
    """The split-off latents of ``graph`` and the depth at which each leaves the network.

    The depth of a port is the number of blocks on the longest data path from an input to
    it. Output nodes of the greatest depth are the final outputs; the others are returned.

    Arguments:
        graph: A GraphINN, a SequenceINN (no latents) or nodes of a graph.

    Example:
        >>> import invgraph as ig
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> haar = ig.Node(x, ig.HaarDownsampling, name="haar")
        >>> split = ig.Node(haar, ig.Split, {"section_sizes": [4, 12]}, name="split")
        >>> z1 = ig.OutputNode(split.out0, name="z1")
        >>> flat = ig.Node(split.out1, ig.Flatten, name="flat")
        >>> z2 = ig.OutputNode(flat, name="z2")
        >>> {node.name: depth for node, depth in split_latents([z1, z2]).items()}
        {'z1': 2}
    """
    return _split_latents(_nodes(graph))


def _split_latents(nodes: list[AbstractNode]) -> dict[OutputNode, int]:
    depth: dict[AbstractNode, int] = {}
    for node in nodes:  # topological order: sources first
        reached = max((depth[source] for source, _ in node.inputs), default=0)
        depth[node] = reached + isinstance(node, Node)
    outputs = {node: depth[node] for node in nodes if isinstance(node, OutputNode)}
    final = max(outputs.values(), default=0)
    return {node: d for node, d in outputs.items() if d < final}


def _kind(node: AbstractNode, latents: dict[OutputNode, int]) -> str:
    if isinstance(node, InputNode):
        return "input"
    if isinstance(node, ConditionNode):
        return "condition"
    if isinstance(node, OutputNode):
        return "latent" if node in latents else "output"
    if isinstance(node, FeedForwardNode):
        return "feed_forward"
    return "block"


def _block_name(node: AbstractNode) -> str:
    return type(node.module if node.module is not None else node).__name__


def _count(module: nn.Module | None) -> tuple[int, int]:
    """``(parameters, trainable parameters)`` of a module (0 for boundary nodes)."""
    if module is None:
        return 0, 0
    parameters = list(module.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(shape))


# ---------------------------------------------------------------------- drawing
def draw(graph: Drawable, reverse: bool = False, show_shapes: bool = True) -> graphviz.Digraph:
    """Draw a network as a graphviz graph: one box per node, one arrow per tensor.

    Each box shows the node's name, its block and its parameter count. Inputs, outputs,
    conditions and feed-forward (conditioning) networks have their own shapes and colours;
    split-off latents (see :func:`split_latents`) are marked with the depth at which they
    leave. Data edges are solid, condition edges dashed; both are labelled with the tensor's
    shape. With ``reverse=True`` the inverse pass is drawn: each tensor's arrow starts where
    the inverse computes it (data edges run from the outputs to the inputs).

    The result displays itself in Jupyter; ``draw(inn).render("net", format="svg")`` writes
    ``net.svg`` (this needs Graphviz's ``dot`` program); ``.source`` is the DOT text.

    Arguments:
        graph: A :class:`~invgraph.framework.GraphINN`, a
            :class:`~invgraph.framework.SequenceINN`, or nodes of a graph (the rest of the
            graph is collected, so its output nodes suffice).
        reverse: Draw the inverse pass.
        show_shapes: Label the edges with the tensors' shapes (batch dimension excluded).

    Returns:
        A :class:`graphviz.Digraph`.

    Example:
        >>> import invgraph as ig
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> haar = ig.Node(x, ig.HaarDownsampling, name="haar")
        >>> z = ig.OutputNode(haar, name="z")
        >>> dot = draw(ig.GraphINN([x, haar, z]))
        >>> dot.source.count(" -> ")  # x -> haar -> z
        2
        >>> 'label="(16, 4, 4)"' in dot.source, "shape=invhouse" in dot.source
        (True, True)
        >>> "n1 -> n0" in draw(z, reverse=True).source  # inverse: haar reconstructs x
        True
    """
    nodes = _nodes(graph)
    latents = _split_latents(nodes)
    ids = {node: f"n{k}" for k, node in enumerate(nodes)}
    dot = graphviz.Digraph(
        name="inverse" if reverse else "forward",
        graph_attr={
            "label": "inverse pass" if reverse else "forward pass",
            "labelloc": "t",
            "fontname": "Helvetica",
        },
        node_attr={"fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9"},
    )
    for node in reversed(nodes) if reverse else nodes:
        kind = _kind(node, latents)
        dot.node(ids[node], label=_label(node, kind, latents, reverse), **_NODE_STYLES[kind])

    def label(shape: Sequence[int]) -> dict[str, str]:
        return {"label": _shape(shape)} if show_shapes else {}

    for node in nodes:
        for source, index in node.inputs:
            tail, head = (node, source) if reverse else (source, node)
            dot.edge(ids[tail], ids[head], **label(source.output_dims[index]))
        for source, index in node.conditions:
            origin = source
            if reverse and not isinstance(source, (ConditionNode, FeedForwardNode)):
                # The inverse reconstructs a data port in the node that consumes it.
                consumer = source.outputs[index]
                origin = consumer[0] if consumer is not None else source
            dot.edge(ids[origin], ids[node], **label(source.output_dims[index]), **_CONDITION_EDGE)
    return dot


def _label(node: AbstractNode, kind: str, latents: dict[OutputNode, int], reverse: bool) -> str:
    """An HTML-like label: the name (escaped for DOT), the block, parameters or shape."""
    lines = [f"<B>{html.escape(str(node.name))}</B>"]
    if node.module is None:
        shapes = node.input_dims if isinstance(node, OutputNode) else node.output_dims
        lines.append(f"{_block_name(node)} {_shape(shapes[0])}")
        if kind == "latent":
            lines.append(f"latent, leaves at depth {latents[node]}")
        return "<" + "<BR/>".join(lines) + ">"
    block = html.escape(_block_name(node))
    lines.append(f"{block} (inverse)" if reverse and kind == "block" else block)
    parameters, trainable = _count(node.module)
    frozen = f" ({trainable:,} trainable)" if trainable != parameters else ""
    lines.append(f"{parameters:,} params{frozen}")
    return "<" + "<BR/>".join(lines) + ">"


def plot_graph(nodes: Drawable, path: str | os.PathLike = "graphs", filename: str = "graph") -> str:
    """Write a drawing of the graph to ``path/filename.pdf``, as FrEIA's ``plot_graph``.

    The DOT source is written next to it as ``path/filename``, as FrEIA does. Unlike
    FrEIA, ``path`` is created if missing, and graphs with conditions and feed-forward
    nodes work. Needs Graphviz's ``dot`` program.

    Arguments:
        nodes: The nodes of the graph (or a GraphINN or SequenceINN), as for :func:`draw`.
        path: The directory to write to.
        filename: The file name, without extension.

    Returns:
        The path of the PDF file.

    Example:
        >>> import invgraph as ig
        >>> from invgraph.utils import plot_graph
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> z = ig.OutputNode(ig.Node(x, ig.HaarDownsampling), name="z")
        >>> plot_graph([z], "graphs", "haar")  # doctest: +SKIP
        'graphs/haar.pdf'
    """
    os.makedirs(path, exist_ok=True)
    try:
        return draw(nodes).render(filename=filename, directory=path, format="pdf")
    except graphviz.ExecutableNotFound as error:
        if hasattr(error, "add_note"):
            error.add_note(
                "plot_graph needs Graphviz's dot program (e.g. apt-get install graphviz); "
                "draw(...).source gives the DOT text without it"
            )
        raise


# ---------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class SummaryRow:
    """One node of a :class:`Summary`.

    Attributes:
        node: The node's name.
        block: The block's class name (the node's class for inputs, outputs, conditions).
        input_shapes: The shapes the node reads as data.
        condition_shapes: The shapes it reads as conditions.
        output_shapes: The shapes it writes.
        parameters: Its block's parameter count.
        trainable: Of those, the parameters with ``requires_grad``.
        latent_depth: For a split-off latent, the depth at which it leaves; else ``None``.
        log_det_mean: The mean over the sample batch of the block's log-det (``None``
            without a sample or for nodes without a log-det).
        log_det_std: Its standard deviation over the batch (``correction=0``).
    """

    node: str
    block: str
    input_shapes: tuple[Shape, ...]
    condition_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    parameters: int
    trainable: int
    latent_depth: int | None = None
    log_det_mean: float | None = None
    log_det_std: float | None = None


@dataclass(frozen=True, repr=False)
class Summary:
    """A table of a network's nodes: shapes, parameters and, given a sample, log-dets.

    ``str(summary)`` (and its ``repr``, so that notebooks show it) is the table.

    Attributes:
        rows: One row per node, in forward topological order.
        parameters: The network's parameter count (shared parameters counted once).
        trainable: Of those, the parameters with ``requires_grad``.
        log_det_mean: The mean over the sample batch of the network's log-det.
        log_det_std: Its standard deviation over the batch (``correction=0``).
    """

    rows: tuple[SummaryRow, ...]
    parameters: int
    trainable: int
    log_det_mean: float | None = None
    log_det_std: float | None = None

    def __str__(self) -> str:
        stats = self.log_det_mean is not None
        header = ["Node", "Block", "Shapes (in -> out)", "Params", "Trainable"]
        header += ["log-det mean", "log-det std"] if stats else []
        table = [_row_cells(row, stats) for row in self.rows]
        total = ["Total", "", "", f"{self.parameters:,}", f"{self.trainable:,}"]
        total += [_number(self.log_det_mean), _number(self.log_det_std)] if stats else []
        widths = [max(len(line[k]) for line in [header, *table, total]) for k in range(len(header))]

        def line(cells: list[str]) -> str:
            text = [
                c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths))
            ]
            return "  ".join(text).rstrip()

        rule = "=" * len(line([w * "x" for w in widths]))
        body = [line(cells) for cells in table]
        return "\n".join([rule, line(header), rule, *body, "-" * len(rule), line(total), rule])

    def __repr__(self) -> str:
        return str(self)


def _row_cells(row: SummaryRow, stats: bool) -> list[str]:
    block = row.block
    if row.latent_depth is not None:
        block += f" (latent, leaves at depth {row.latent_depth})"
    read = [", ".join(_shape(s) for s in row.input_shapes)]
    if row.condition_shapes:
        read.append("c " + ", ".join(_shape(s) for s in row.condition_shapes))
    written = ", ".join(_shape(s) for s in row.output_shapes)
    shapes = f"{' | '.join(part for part in read if part)} -> {written}".strip()
    cells = [row.node, block, shapes, f"{row.parameters:,}", f"{row.trainable:,}"]
    return cells + ([_number(row.log_det_mean), _number(row.log_det_std)] if stats else [])


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def summary(
    inn: Drawable,
    x: Tensor | Sequence[Tensor] | None = None,
    c: Tensor | Sequence[Tensor] | None = None,
) -> Summary:
    """Summarise a network: each node's block, shapes and parameters, like torchinfo.

    Given a sample batch ``x`` (and its conditions ``c``), the network runs forward once,
    without gradients, and each block's log-det is reported as its mean and standard
    deviation over the batch (``correction=0``), with the network's total. This is a
    real forward pass: data-dependent initialisations (such as ActNorm's) happen in it.

    Arguments:
        inn: A :class:`~invgraph.framework.GraphINN`, a
            :class:`~invgraph.framework.SequenceINN`, or nodes of a graph.
        x: A sample batch of inputs (a tensor, or one per input node), or ``None``.
        c: The conditions, as for the network's ``forward``.

    Returns:
        A :class:`Summary`; print it for the table.

    Example:
        >>> import torch, invgraph as ig
        >>> def subnet(c_in, c_out):
        ...     return torch.nn.Linear(c_in, c_out)
        >>> inn = ig.SequenceINN(6)
        >>> inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet)
        >>> inn.append(ig.PermuteRandom, seed=0)
        >>> print(summary(inn))
        ===============================================================
        Node   Block              Shapes (in -> out)  Params  Trainable
        ===============================================================
        x      InputNode          -> (6,)                  0          0
        0      GLOWCouplingBlock  (6,) -> (6,)            48         48
        1      PermuteRandom      (6,) -> (6,)             0          0
        z      OutputNode         (6,) ->                  0          0
        ---------------------------------------------------------------
        Total                                             48         48
        ===============================================================
        >>> x = torch.randn(5, 6)
        >>> stats = summary(inn, x)
        >>> torch.isclose(torch.tensor(stats.log_det_mean), inn(x)[1].mean())
        tensor(True)
        >>> stats.rows[2].log_det_mean, stats.rows[2].log_det_std  # a permutation
        (0.0, 0.0)
    """
    nodes = _nodes(inn)
    latents = _split_latents(nodes)
    per_node: dict[AbstractNode, Tensor] = {}
    total: Tensor | None = None
    if x is not None:
        per_node, total = _log_dets(inn, nodes, x, c)
    rows = []
    for node in nodes:
        parameters, trainable = _count(node.module)
        log_det = per_node.get(node)
        rows.append(
            SummaryRow(
                node=node.name,
                block=_block_name(node),
                input_shapes=tuple(node.input_dims),
                condition_shapes=tuple(node.condition_dims),
                output_shapes=tuple(node.output_dims),
                parameters=parameters,
                trainable=trainable,
                latent_depth=latents.get(node),
                log_det_mean=None if log_det is None else float(log_det.mean()),
                log_det_std=None if log_det is None else float(log_det.std(correction=0)),
            )
        )
    unique = {
        id(p): p for node in nodes if node.module is not None for p in node.module.parameters()
    }
    return Summary(
        rows=tuple(rows),
        parameters=sum(p.numel() for p in unique.values()),
        trainable=sum(p.numel() for p in unique.values() if p.requires_grad),
        log_det_mean=None if total is None else float(total.mean()),
        log_det_std=None if total is None else float(total.std(correction=0)),
    )


def _log_dets(
    inn: Drawable, nodes: list[AbstractNode], x: Any, c: Any
) -> tuple[dict[AbstractNode, Tensor], Tensor]:
    """Each block's log-det on the batch ``x`` as a ``(batch,)`` tensor, and their sum."""
    if isinstance(inn, SequenceINN):
        # Run the blocks through a graph over the same modules: its condition nodes are the
        # condition indices the blocks use, in increasing order.
        conditions = () if c is None else (c,) if isinstance(c, Tensor) else tuple(c)
        used = sorted({k for k in inn.conditions if k is not None})
        graph, c = GraphINN(nodes), [conditions[k] for k in used]
    else:
        graph = inn if isinstance(inn, GraphINN) else GraphINN(nodes)
    reference = x if isinstance(x, Tensor) else x[0]
    with torch.no_grad():
        _, log_dets = graph(x, c=c, intermediate_outputs=True)
    per_node = {node: batch_log_det(reference, value, True) for node, value in log_dets.items()}
    total = reference.new_zeros(reference.shape[0])
    for value in per_node.values():
        total = total + value
    return per_node, total
