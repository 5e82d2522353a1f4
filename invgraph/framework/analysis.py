"""What the framework reads off a graph of nodes: which nodes, whether it is well formed,
in which order its blocks run, where FrEIA lists its modules, and its split-off latents.

Everything here works on nodes only; :mod:`invgraph.framework.plan` turns the result into
a plan, and :mod:`invgraph.drawing` draws it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import networkx as nx

from ..errors import InvGraphError
from .nodes import AbstractNode, FeedForwardNode, InputNode, Node, OutputNode, port_name

__all__ = [
    "check_structure",
    "collect_nodes",
    "execution_orders",
    "freia_module_order",
    "gather",
    "nodes_of",
    "split_latents",
]


def collect_nodes(*nodes: AbstractNode) -> list[AbstractNode]:
    """Every node connected to ``nodes`` (through inputs, outputs or conditions).

    Returned in creation order, so the graph's inputs, outputs and conditions keep the
    order in which they were declared.

    Arguments:
        *nodes: Any nodes of the graph, typically its output nodes.

    Example:
        >>> import invgraph as ig
        >>> x = ig.InputNode(8, name="x")
        >>> p = ig.Node(x, ig.PermuteRandom, {"seed": 0}, name="p")
        >>> z = ig.OutputNode(p, name="z")
        >>> [node.name for node in ig.collect_nodes(z)]
        ['x', 'p', 'z']
    """
    seen: dict[int, AbstractNode] = {}
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        pending.extend(_neighbours(node))
    return sorted(seen.values(), key=lambda node: node._order)


def _neighbours(node: AbstractNode) -> list[AbstractNode]:
    linked = [source for source, _ in node.inputs + node.conditions]
    linked += [consumer[0] for consumer in node.outputs if consumer is not None]
    return linked + node.condition_consumers


def gather(node_list: AbstractNode | Iterable[AbstractNode], owner: str) -> list[AbstractNode]:
    """The graph's nodes: ``node_list`` itself, or the graph collected from its output nodes.

    Arguments:
        node_list: Every node of the graph, or only its output nodes.
        owner: Who asks, for the error messages (``"GraphINN"``).
    """
    given = [node_list] if isinstance(node_list, AbstractNode) else list(node_list)
    for item in given:
        if not isinstance(item, AbstractNode):
            raise InvGraphError(f"{owner}: node_list contains {item!r}, which is not a node")
    connected = collect_nodes(*given)
    listed = {id(n) for n in given}
    missing = [n for n in connected if id(n) not in listed]
    if missing and all(isinstance(n, OutputNode) for n in given):
        return connected
    if missing:
        raise InvGraphError(
            f"{owner}: nodes connected to the graph are missing from node_list: "
            + ", ".join(
                f"{n.name!r} (linked to {', '.join(repr(m.name) for m in _neighbours(n))})"
                for n in missing
            )
            + ". Add them, or pass only the output nodes to collect the graph"
        )
    return list({id(n): n for n in given}.values())


def check_structure(nodes: list[AbstractNode], owner: str) -> None:
    """Refuse a graph without inputs or outputs, or with a data port nobody consumes."""
    if not any(isinstance(n, InputNode) for n in nodes):
        raise InvGraphError(f"{owner}: the graph has no InputNode")
    if not any(isinstance(n, OutputNode) for n in nodes):
        raise InvGraphError(f"{owner}: the graph has no OutputNode")
    for node in nodes:
        if not node._data_outputs:
            continue
        for index, consumer in enumerate(node.outputs):
            if consumer is None:
                raise InvGraphError(
                    f"{owner}: port {port_name((node, index))} (shape "
                    f"{node.output_dims[index]}) is consumed by no node; every data port "
                    f"must reach an OutputNode (no data may be lost)"
                )


def execution_orders(
    nodes: list[AbstractNode], owner: str
) -> tuple[list[AbstractNode], list[AbstractNode]]:
    """The nodes in the order the forward pass runs them, and the order the inverse does.

    Ties are broken by creation order, so the orders are deterministic.
    """
    return (
        _sort(_forward_graph(nodes), owner, ""),
        _sort(_reverse_graph(nodes), owner, " in the inverse pass"),
    )


def _forward_graph(nodes: list[AbstractNode]) -> nx.DiGraph:
    """Who must run before whom in the forward pass: data and condition edges."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    for node in nodes:
        for source, _ in node.inputs + node.conditions:
            graph.add_edge(source, node)
    return graph


def _reverse_graph(nodes: list[AbstractNode]) -> nx.DiGraph:
    """Who must run before whom in the inverse pass.

    A block's inverse needs its output ports, which the inverses of their consumers
    reconstruct: a data edge ``u -> v`` becomes ``v -> u``. A condition read from a
    data port needs that port reconstructed first, by the inverse of its consumer;
    conditions from condition nodes and feed-forward nodes keep their direction.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    for node in nodes:
        for source, _ in node.inputs:
            graph.add_edge(node, source)
        for source, index in node.conditions:
            if source._data_outputs:
                consumer = source.outputs[index]
                if consumer is not None:
                    graph.add_edge(consumer[0], node)
            else:
                graph.add_edge(source, node)
    return graph


def _sort(graph: nx.DiGraph, owner: str, where: str) -> list[AbstractNode]:
    try:
        return list(nx.lexicographical_topological_sort(graph, key=lambda n: n._order))
    except nx.NetworkXUnfeasible:  # a cycle: find it for the message
        cycle = nx.find_cycle(graph)
    path = " -> ".join(repr(u.name) for u, _ in cycle) + f" -> {cycle[0][0].name!r}"
    raise InvGraphError(
        f"{owner}: the graph has a cycle{where}: {path}. "
        + (
            "In the inverse pass a condition taken from a data port is available only "
            "once that port is reconstructed; these nodes wait on each other"
            if where
            else "A graph of invertible blocks must be acyclic"
        )
    )


def freia_module_order(nodes: list[AbstractNode]) -> list[AbstractNode]:
    """The nodes with a module in the order FrEIA 0.2 lists them in ``module_list``.

    FrEIA sorts with Kahn's algorithm from the output nodes backwards along data edges
    (first in, first out), then reverses. Where FrEIA's order depends on Python set
    iteration (a node with several inputs), this takes the inputs in port order, which
    makes it deterministic. Feed-forward nodes, which FrEIA 0.2 does not have, follow in
    creation order. A chain's order is its own.
    """
    pending_consumers = {id(n): sum(consumer is not None for consumer in n.outputs) for n in nodes}
    queue: deque[AbstractNode] = deque(n for n in nodes if isinstance(n, OutputNode))
    visited: list[AbstractNode] = []
    while queue:
        node = queue.popleft()
        visited.append(node)
        for source in dict.fromkeys(source for source, _ in node.inputs):  # unique, in order
            pending_consumers[id(source)] -= sum(
                consumer is not None and consumer[0] is node for consumer in source.outputs
            )
            if pending_consumers[id(source)] == 0:
                queue.append(source)
    ordered = [n for n in reversed(visited) if n.module is not None]
    return ordered + [n for n in nodes if isinstance(n, FeedForwardNode)]


def split_latents(graph: object) -> dict[OutputNode, int]:
    """The split-off latents of a graph and the depth at which each leaves the network.

    Each port has a *depth*: the number of blocks (:class:`~invgraph.framework.Node`
    objects) on the longest data path from an input to it; conditions do not count. The
    output nodes of greatest depth are the final outputs; every other output node is a
    *split-off latent* that leaves the network at its depth, as the early latents of a
    multiscale network do.

    Arguments:
        graph: A network (anything with a ``node_list``), a node, or nodes of a graph (the
            rest of the graph is collected).

    Example:
        >>> import invgraph as ig
        >>> x = ig.InputNode(8, name="x")
        >>> split = ig.Node(x, ig.Split, {"section_sizes": [3, 5]}, name="split")
        >>> early = ig.OutputNode(split.out0, name="early")
        >>> permute = ig.Node(split.out1, ig.PermuteRandom, {"seed": 0}, name="permute")
        >>> last = ig.OutputNode(permute, name="last")
        >>> {node.name: depth for node, depth in split_latents([early, last]).items()}
        {'early': 1}
    """
    depth: dict[AbstractNode, int] = {}
    for node in nodes_of(graph, "split_latents"):  # topological order: sources first
        reached = max((depth[source] for source, _ in node.inputs), default=0)
        depth[node] = reached + isinstance(node, Node)
    outputs = {node: d for node, d in depth.items() if isinstance(node, OutputNode)}
    final = max(outputs.values(), default=0)
    return {node: d for node, d in outputs.items() if d < final}


def nodes_of(graph: object, owner: str) -> list[AbstractNode]:
    """All nodes of a network (its ``node_list``, in execution order), or of the graph of
    some nodes (in creation order); both orders are topological."""
    node_list = getattr(graph, "node_list", None)
    if node_list is not None:
        return list(node_list)
    given = [graph] if isinstance(graph, AbstractNode) else graph
    items = list(given) if isinstance(given, Iterable) else [given]
    found = [item for item in items if isinstance(item, AbstractNode)]
    strangers = [item for item in items if not isinstance(item, AbstractNode)]
    if strangers or not items:
        raise InvGraphError(
            f"{owner}: expected a GraphINN, a SequenceINN or nodes, got "
            f"{type(graph).__name__}" + (f" containing {strangers[0]!r}" if strangers else "")
        )
    return collect_nodes(*found)
