"""Pictures and tables of invertible networks: graphviz drawings and torchinfo-like summaries.

:func:`draw` turns a :class:`~invgraph.framework.GraphINN`, a
:class:`~invgraph.framework.SequenceINN` or a list of nodes into a :class:`graphviz.Digraph`
(it displays itself in Jupyter; ``.render(...)`` writes a file and needs the ``dot``
program). :func:`summary` lists every node with its shapes and parameter counts and, given
a sample batch, the statistics of each block's log-determinant.

Split-off latents (see :func:`~invgraph.framework.analysis.split_latents`, also importable
from here) are drawn and listed with the depth at which they leave the network.

This module only draws: what it shows of a graph (its nodes, latents, plan) comes from
:mod:`invgraph.framework`, which imports it only to offer ``network.draw()`` and
``network.summary()``.
"""

from __future__ import annotations

import html
import io
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast

import graphviz
import networkx as nx
import torch
from torch import Tensor, nn

from ._text import align_columns
from .errors import InvGraphError, add_note
from .framework.analysis import nodes_of, split_latents
from .framework.execution import Call, as_tensors, batch_log_det, check_call, run_standard
from .framework.nodes import (
    AbstractNode,
    ConditionNode,
    FeedForwardNode,
    InputNode,
    OutputNode,
)
from .framework.plan import plan_graph
from .modules.base import Shape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .framework.network import InvertibleNetwork

__all__ = ["Summary", "SummaryRow", "draw", "picture", "plot_graph", "split_latents", "summary"]

Drawable = Union["InvertibleNetwork", AbstractNode, Iterable[AbstractNode]]
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
_FILL = {kind: style["fillcolor"] for kind, style in _NODE_STYLES.items()}


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
    nodes = nodes_of(graph, "draw")
    latents = split_latents(nodes)
    ids = {node: f"n{k}" for k, node in enumerate(nodes)}
    dot = _Drawing(
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
        name, *rest = _label_lines(node, kind, latents, reverse)
        label = "<" + "<BR/>".join([f"<B>{html.escape(name)}</B>", *map(html.escape, rest)]) + ">"
        dot.node(ids[node], label=label, **_NODE_STYLES[kind])
    for tail, head, shape, condition in _edges(nodes, reverse):
        attributes = {"label": _shape(shape)} if show_shapes else {}
        dot.edge(ids[tail], ids[head], **attributes, **(_CONDITION_EDGE if condition else {}))
    dot.nodes_drawn, dot.reverse = nodes, reverse
    return dot


class _Drawing(graphviz.Digraph):
    """A :class:`graphviz.Digraph` that Jupyter shows as :func:`picture` where Graphviz's
    ``dot`` is missing (instead of an error), so that a plain ``pip install`` sees graphs."""

    nodes_drawn: list[AbstractNode] | None = None
    reverse = False

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> Any:
        try:
            return super()._repr_mimebundle_(include, exclude, **kwargs)
        except graphviz.ExecutableNotFound:
            if self.nodes_drawn is None:
                raise
            svg = io.StringIO()
            picture(self.nodes_drawn, self.reverse).savefig(svg, format="svg")
            return {"image/svg+xml": svg.getvalue()}


Edge = tuple[AbstractNode, AbstractNode, Shape, bool]
"""A drawn tensor: ``(tail, head, shape, is_condition)``."""


def _edges(nodes: list[AbstractNode], reverse: bool) -> list[Edge]:
    """Every tensor of the graph as an edge, in the direction drawn.

    In the inverse pass data edges run backwards, and a condition read from a data port
    comes from the node whose inverse reconstructs that port (the port's consumer).
    """
    edges = []
    for node in nodes:
        for source, index in node.inputs:
            tail, head = (node, source) if reverse else (source, node)
            edges.append((tail, head, tuple(source.output_dims[index]), False))
        for source, index in node.conditions:
            origin = source
            if reverse and not isinstance(source, (ConditionNode, FeedForwardNode)):
                consumer = source.outputs[index]
                origin = consumer[0] if consumer is not None else source
            edges.append((origin, node, tuple(source.output_dims[index]), True))
    return edges


def _label_lines(
    node: AbstractNode, kind: str, latents: dict[OutputNode, int], reverse: bool
) -> list[str]:
    """A node's label, line by line: its name, its block, its parameters or shape."""
    lines = [str(node.name)]
    if node.module is None:
        shapes = node.input_dims if isinstance(node, OutputNode) else node.output_dims
        lines.append(f"{_block_name(node)} {_shape(shapes[0])}")
        if kind == "latent" and isinstance(node, OutputNode):  # a latent is an output node
            lines.append(f"latent, leaves at depth {latents[node]}")
        return lines
    block = _block_name(node)
    lines.append(f"{block} (inverse)" if reverse and kind == "block" else block)
    parameters, trainable = _count(node.module)
    frozen = f" ({trainable:,} trainable)" if trainable != parameters else ""
    lines.append(f"{parameters:,} params{frozen}")
    return lines


def picture(graph: Drawable, reverse: bool = False, show_shapes: bool = True) -> Figure:
    """Draw a network with matplotlib alone: for machines without Graphviz's ``dot``.

    The same boxes, colours and arrows as :func:`draw`, laid out in topological layers
    (each node one layer below the last node it reads from, found with networkx), top to
    bottom in the direction drawn. :func:`draw`'s layout is tidier; this one needs no
    program outside Python, only matplotlib (``pip install "invgraph[tutorials]"``).

    Arguments:
        graph: A network, or nodes of a graph, as for :func:`draw`.
        reverse: Draw the inverse pass.
        show_shapes: Label the edges with the tensors' shapes.

    Returns:
        A :class:`matplotlib.figure.Figure` (not registered with pyplot); save it with
        ``picture(inn).savefig("net.png")`` (or ``.svg``, ``.pdf``).

    Example:
        >>> import invgraph as ig
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> haar = ig.Node(x, ig.HaarDownsampling, name="haar")
        >>> figure = picture([ig.OutputNode(haar, name="z")])
        >>> [t.get_text() for t in figure.axes[0].texts if t.get_text()]
        ... # doctest: +NORMALIZE_WHITESPACE
        ['x\\nInputNode (4, 8, 8)', 'haar\\nHaarDownsampling\\n0 params',
         'z\\nOutputNode (16, 4, 4)', '(4, 8, 8)', '(16, 4, 4)']
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise InvGraphError(
            'picture() needs matplotlib: pip install "invgraph[tutorials]", or use draw() '
            "with Graphviz"
        ) from error
    nodes = nodes_of(graph, "picture")
    latents = split_latents(nodes)
    edges = _edges(nodes, reverse)
    position = _layered_layout(nodes, edges)
    width = max(x for x, _ in position.values()) + 1
    depth = max(-y for _, y in position.values()) + 1
    figure = Figure(figsize=(max(3.0, 2.4 * width), max(2.0, 1.1 * depth)), layout="tight")
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title("inverse pass" if reverse else "forward pass", fontsize=9)
    boxes = {}  # drawn first: each arrow is clipped at the boxes it joins
    for node in nodes:
        kind = _kind(node, latents)
        box = {"boxstyle": "round" if kind == "block" else "square", "fc": _FILL[kind]}
        text = "\n".join(_label_lines(node, kind, latents, reverse))
        label = axes.text(*position[node], text, ha="center", va="center", fontsize=7, bbox=box)
        boxes[node] = label.get_bbox_patch()
    for tail, head, shape, condition in edges:
        color = _CONDITION_EDGE["color"] if condition else "#333333"
        arrow: dict[str, Any] = {
            "arrowstyle": "-|>",
            "color": color,
            "ls": "--" if condition else "-",
        }
        arrow |= {"patchA": boxes[tail], "patchB": boxes[head], "shrinkA": 2, "shrinkB": 2}
        axes.annotate("", position[head], position[tail], arrowprops=arrow, zorder=4)
        if show_shapes:
            (x0, y0), (x1, y1) = position[tail], position[head]
            middle = ((x0 + x1) / 2, (y0 + y1) / 2)
            axes.text(*middle, _shape(shape), fontsize=6, color=color, ha="center", va="center")
    axes.set_xlim(-0.7, width - 0.3)
    axes.set_ylim(-depth + 0.5, 0.5)
    return figure


def _layered_layout(
    nodes: list[AbstractNode], edges: list[Edge]
) -> dict[AbstractNode, tuple[float, float]]:
    """``(x, y)`` per node: ``y`` minus its topological layer, ``x`` its place in the layer."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from((tail, head) for tail, head, _, _ in edges)
    order = {node: k for k, node in enumerate(nodes)}
    layers = [sorted(layer, key=order.__getitem__) for layer in nx.topological_generations(graph)]
    widest = max(len(layer) for layer in layers)
    position = {}
    for depth, layer in enumerate(layers):
        for rank, node in enumerate(layer):
            position[node] = (rank + (widest - len(layer)) / 2, -float(depth))
    return position


def plot_graph(
    nodes: Drawable, path: str | os.PathLike[str] = "graphs", filename: str = "graph"
) -> str:
    """Write a drawing of the graph to ``path/filename.pdf``, as FrEIA's ``plot_graph``.

    The DOT source is written next to it as ``path/filename``, as FrEIA does. Unlike
    FrEIA, ``path`` is created if missing, and graphs with conditions and feed-forward
    nodes work. Rendered by Graphviz's ``dot``; where it is not installed, drawn by
    :func:`picture` with matplotlib instead (with a warning).

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
        try:
            figure = picture(nodes)
        except InvGraphError:  # no matplotlib either
            add_note(
                error,
                "plot_graph needs Graphviz's dot program (e.g. apt-get install graphviz) or "
                "matplotlib; draw(...).source gives the DOT text without them",
            )
            raise error from None
    pdf = os.path.join(path, f"{filename}.pdf")
    figure.savefig(pdf)
    warnings.warn(
        f"plot_graph: Graphviz's dot is not installed, so {pdf} was drawn with matplotlib",
        stacklevel=2,
    )
    return pdf


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
        header_line, *body, total_line = align_columns(
            [header, *table, total], right=range(3, len(header))
        )
        rule = "=" * max(len(line) for line in [header_line, *body, total_line])
        return "\n".join([rule, header_line, rule, *body, "-" * len(rule), total_line, rule])

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
    nodes = nodes_of(inn, "summary")
    latents = split_latents(nodes)
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
                latent_depth=latents.get(node) if isinstance(node, OutputNode) else None,
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
    graph: Drawable, nodes: list[AbstractNode], x: Any, c: Any
) -> tuple[dict[AbstractNode, Tensor], Tensor]:
    """Each block's log-det on the batch ``x`` as a ``(batch,)`` tensor, and their sum.

    A network runs its own plan; nodes are compiled into one first. Either way the call is
    checked as a network checks it, and runs on the standard executor.
    """
    owner: Callable[[int], AbstractNode]
    plan = getattr(graph, "plan", None)
    if plan is not None:  # a network
        network = cast("InvertibleNetwork", graph)
        modules, owner = list(network.module_list), network.module_position_to_node
    else:
        compiled = plan_graph(nodes, "summary")
        plan, owner = compiled.plan, compiled.module_nodes.__getitem__
        modules = [node.module for node in compiled.module_nodes if node.module is not None]
    entries, conditions = as_tensors(x, "x", "summary"), as_tensors(c, "c", "summary")
    check_call(plan, entries, conditions, False, "summary")
    with torch.no_grad():
        run = run_standard(Call(plan, modules, keep=True), entries, conditions)
    assert run.log_dets is not None
    per_node = {owner(k): batch_log_det(entries[0], v, True) for k, v in run.log_dets.items()}
    return per_node, run.log_det
