"""GraphINN: a DAG of nodes compiled once into one reversible module."""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
from torch import Tensor, nn

from ..errors import InvGraphError
from ..modules.base import InvertibleModule, Shape
from .memory_efficient import Program, run_memory_efficient
from .nodes import (
    AbstractNode,
    ConditionNode,
    FeedForwardNode,
    InputNode,
    OutputNode,
    Port,
    _format_shapes,
    port_name,
)
from .plan import BLOCK, FEED_FORWARD, UNARY, Step, at_least_float32, batch_log_det

if TYPE_CHECKING:
    import graphviz

    from ..drawing import Summary

__all__ = ["GraphINN", "ReversibleGraphNet", "batch_log_det", "collect_nodes"]


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
        pending.extend(source for source, _ in node.inputs)
        pending.extend(source for source, _ in node.conditions)
        pending.extend(consumer[0] for consumer in node.outputs if consumer is not None)
        pending.extend(node.condition_consumers)
    return sorted(seen.values(), key=lambda node: node._order)


class GraphINN(InvertibleModule):
    r"""An invertible network built from a DAG of nodes.

    The graph is checked, sorted topologically and turned into two execution plans (one
    per direction) when the network is built; a call runs the plan over integer slots.

    With :math:`f = f_K \circ \dots \circ f_1` the blocks in topological order, the forward
    pass returns :math:`z = f(x; c)` and

    .. math::

        \log |\det J_f(x)| = \sum_{k=1}^{K} \log |\det J_{f_k}(x_{k-1})|,

    the inverse pass returns :math:`x = f^{-1}(z; c)` and :math:`-\log|\det J_f(x)|`.

    Inputs, outputs and conditions are matched by their order in ``node_list``.

    Arguments:
        node_list: The graph's nodes, or only its output nodes (the rest is collected).
        force_tuple_output: Return a tuple even for a single output.
        check_shapes: Check the number and shapes of inputs and conditions before any block
            runs (cheap), and each block's outputs against its ``output_dims`` the first
            time each direction runs. Set ``False`` to skip the input checks in hot loops.
        verbose: Print the graph once built.
        memory_efficient: Train without storing activations (also settable later as the
            attribute ``memory_efficient``): while gradients are being recorded, the graph
            runs as one autograd function that keeps only its outputs and the tensors read
            as conditions, and the backward pass reconstructs each block's inputs by its
            inverse and recomputes the block (see :mod:`invgraph.framework.memory_efficient`
            for what is kept and why). Saved memory is flat in depth; a step costs one extra
            inverse and one extra forward per block. Not traced by ``torch.compile`` and not
            supported by ``nn.DataParallel`` (use ``DistributedDataParallel``).

    Example:
        >>> import torch, invgraph as ig
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> haar = ig.Node(x, ig.HaarDownsampling, name="haar")
        >>> split = ig.Node(haar, ig.Split, {"section_sizes": [4, 12]}, name="split")
        >>> z1 = ig.OutputNode(split.out0, name="z1")
        >>> flat = ig.Node(split.out1, ig.Flatten, name="flat")
        >>> z2 = ig.OutputNode(flat, name="z2")
        >>> inn = ig.GraphINN([x, haar, split, z1, flat, z2])
        >>> (z1, z2), log_det = inn(torch.randn(5, 4, 8, 8))
        >>> tuple(z1.shape), tuple(z2.shape), tuple(log_det.shape)
        ((5, 4, 4, 4), (5, 192), (5,))
        >>> x_rec, _ = inn([z1, z2], rev=True)
        >>> tuple(x_rec.shape)
        (5, 4, 8, 8)

    References:
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730 (the graph formulation of FrEIA).
    """

    def __init__(
        self,
        node_list: AbstractNode | Iterable[AbstractNode],
        force_tuple_output: bool = False,
        check_shapes: bool = True,
        verbose: bool = False,
        memory_efficient: bool = False,
    ):
        nodes = _gather(node_list)
        in_nodes = [n for n in nodes if isinstance(n, InputNode)]
        out_nodes = [n for n in nodes if isinstance(n, OutputNode)]
        condition_nodes = [n for n in nodes if isinstance(n, ConditionNode)]
        _check_structure(nodes, in_nodes, out_nodes)
        forward_order = _sort(_forward_graph(nodes), "")
        reverse_order = _sort(_reverse_graph(nodes), " in the inverse pass")

        super().__init__([n.dims for n in in_nodes], [n.dims for n in condition_nodes])
        self.node_list: list[AbstractNode] = forward_order
        self.in_nodes = in_nodes
        self.out_nodes = out_nodes
        self.condition_nodes = condition_nodes
        self.force_tuple_output = force_tuple_output
        self.check_shapes = check_shapes
        self.memory_efficient = memory_efficient

        # The plans refer to modules by position, so module_list may take any order: take
        # FrEIA's, so that FrEIA checkpoints (keys "module_list.<k>.") load unchanged.
        computing = _freia_module_order(nodes, out_nodes)
        self.module_list = nn.ModuleList([n.module for n in computing])
        position = {id(n): k for k, n in enumerate(computing)}

        # One slot per port; an output node reads the slot of the port it collects.
        # (Keyed by id() while building only: ids change when the module is copied.)
        slot_of: dict[tuple[int, int], int] = {}
        self._ports: list[Port] = []
        for node in forward_order:
            for index in range(len(node.output_dims)):
                slot_of[id(node), index] = len(self._ports)
                self._ports.append((node, index))

        def slots(ports: Iterable[Port]) -> tuple[int, ...]:
            return tuple(slot_of[id(node), index] for node, index in ports)

        def produced(node: AbstractNode) -> list[Port]:
            return [(node, i) for i in range(len(node.output_dims))]

        def step(node: AbstractNode, rev: bool) -> Step:
            if isinstance(node, FeedForwardNode):
                kind, reads, writes = FEED_FORWARD, (), slots(produced(node))
            else:
                unary = len(node.inputs) == len(node.output_dims) == 1 and not node.conditions
                kind = UNARY if unary else BLOCK
                reads, writes = slots(node.inputs), slots(produced(node))
                if rev:
                    reads, writes = writes, reads
            return (position[id(node)], kind, reads, slots(node.conditions), writes)

        self._computing_nodes = computing
        self._plans: tuple[tuple[Step, ...], tuple[Step, ...]] = (
            tuple(step(n, False) for n in forward_order if n.module is not None),
            tuple(step(n, True) for n in reverse_order if n.module is not None),
        )
        self._input_slots = slots(n.out0 for n in in_nodes)
        self._output_slots = slots(n.inputs[0] for n in out_nodes)
        self._condition_slots = slots(n.out0 for n in condition_nodes)
        self._n_slots = len(self._ports)
        self._input_shapes = tuple(torch.Size(n.dims) for n in in_nodes)
        self._output_shapes = tuple(torch.Size(n.input_dims[0]) for n in out_nodes)
        self._condition_shapes = tuple(torch.Size(n.dims) for n in condition_nodes)
        self._outputs_verified = [False, False]  # per direction: block outputs checked once

        if verbose:
            print(self.describe())

    # ------------------------------------------------------------------ running
    def forward(
        self,
        x_or_z: Tensor | Sequence[Tensor],
        c: Tensor | Sequence[Tensor] | None = None,
        rev: bool = False,
        jac: bool = True,
        intermediate_outputs: bool = False,
    ) -> tuple[Any, Any]:
        """Run the graph forward (``x -> z``) or inverse (``rev=True``, ``z -> x``).

        Arguments:
            x_or_z: The inputs (forward) or the outputs (inverse): a tensor, or a sequence
                in the order of the input (output) nodes.
            c: The conditions: a tensor, or a sequence in the order of the condition nodes.
            rev: Run the inverse.
            jac: Compute the log-det; with ``False`` a tensor of zeros is returned.
            intermediate_outputs: Return every port's tensor, ``{(node, index): tensor}``,
                and every block's log-det, ``{node: log_det}``, instead.

        Returns:
            ``(outputs, log_jac_det)``: the outputs (a bare tensor for a single output
            unless ``force_tuple_output``) and a ``(batch,)`` tensor on the input's device
            and dtype.
        """
        tensors = (x_or_z,) if isinstance(x_or_z, Tensor) else tuple(x_or_z)
        conditions = () if c is None else (c,) if isinstance(c, Tensor) else tuple(c)
        check = self.check_shapes
        if check:
            self._check_call(tensors, conditions, rev)
        verify_outputs = check and not self._outputs_verified[rev]
        if self.memory_efficient and torch.is_grad_enabled() and not intermediate_outputs:
            return self._run_memory_efficient(tensors, conditions, rev, jac, verify_outputs)

        slots: list[Any] = [None] * self._n_slots
        for slot, tensor in zip(self._output_slots if rev else self._input_slots, tensors):
            slots[slot] = tensor
        for slot, tensor in zip(self._condition_slots, conditions):
            slots[slot] = tensor
        modules = list(self.module_list)
        per_node: dict[int, Any] | None = {} if intermediate_outputs else None
        log_det: Any = 0.0
        position = -1
        try:
            for position, kind, reads, conds, writes in self._plans[rev]:
                module = modules[position]
                if kind == UNARY:
                    outputs, block_log_det = module((slots[reads[0]],), rev=rev, jac=jac)
                elif kind == BLOCK:
                    outputs, block_log_det = module(
                        tuple([slots[i] for i in reads]),
                        c=tuple([slots[i] for i in conds]),
                        rev=rev,
                        jac=jac,
                    )
                else:
                    outputs = (module(*[slots[i] for i in conds]),)
                    block_log_det = None
                if verify_outputs:
                    self._verify_step(position, rev, jac, outputs, block_log_det)
                if kind == UNARY:
                    slots[writes[0]] = outputs[0]
                else:
                    for slot, tensor in zip(writes, outputs):
                        slots[slot] = tensor
                if kind != FEED_FORWARD:
                    if jac:
                        log_det = log_det + at_least_float32(block_log_det)
                    if per_node is not None:
                        per_node[position] = block_log_det
        except Exception as error:
            if position >= 0 and hasattr(error, "add_note"):
                node = self.module_position_to_node(position)
                error.add_note(f"raised in node {node} ({'inverse' if rev else 'forward'})")
            raise
        if verify_outputs and jac:  # with jac=False the log-dets were not seen yet
            self._outputs_verified[rev] = True

        log_det = batch_log_det(tensors[0], log_det, jac)

        if intermediate_outputs:
            ports = {port: slots[k] for k, port in enumerate(self._ports)}
            node_log_dets = {self.module_position_to_node(k): v for k, v in per_node.items()}
            return ports, node_log_dets
        results = tuple(slots[s] for s in (self._input_slots if rev else self._output_slots))
        if len(results) == 1 and not self.force_tuple_output:
            return results[0], log_det
        return results, log_det

    def _run_memory_efficient(
        self, tensors: tuple, conditions: tuple, rev: bool, jac: bool, verify_outputs: bool
    ) -> tuple[Any, Tensor]:
        if getattr(self, "_is_replica", False):
            raise InvGraphError(
                "GraphINN: memory_efficient=True does not work under nn.DataParallel (its "
                "replicas hide their parameters); use DistributedDataParallel"
            )
        program = Program(
            modules=list(self.module_list),
            steps=self._plans[rev],
            n_slots=self._n_slots,
            entry_slots=self._output_slots if rev else self._input_slots,
            exit_slots=self._input_slots if rev else self._output_slots,
            condition_slots=self._condition_slots,
            rev=rev,
            jac=jac,
            describe=lambda position: str(self.module_position_to_node(position)),
            verify=(
                (lambda position, out, ld: self._verify_step(position, rev, jac, out, ld))
                if verify_outputs
                else None
            ),
        )
        results, log_det = run_memory_efficient(program, tensors, conditions)
        if verify_outputs and jac:
            self._outputs_verified[rev] = True
        if len(results) == 1 and not self.force_tuple_output:
            return results[0], log_det
        return results, log_det

    @property
    def exact_inverse(self) -> bool:  # type: ignore[override]
        """Exact when every block is (a nested network is reconstructed as one block)."""
        return all(getattr(module, "exact_inverse", True) for module in self.module_list)

    def inverse(
        self,
        z: Tensor | Sequence[Tensor],
        c: Tensor | Sequence[Tensor] | None = None,
        jac: bool = True,
    ) -> tuple[Any, Tensor]:
        """``x = f^{-1}(z; c)`` and its log-det: the same as ``self(z, c, rev=True)``."""
        return self(z, c=c, rev=True, jac=jac)

    # ------------------------------------------------------------------ checks
    def _check_call(self, tensors: tuple, conditions: tuple, rev: bool) -> None:
        entry_nodes = self.out_nodes if rev else self.in_nodes
        expected = self._output_shapes if rev else self._input_shapes
        direction = "inverse" if rev else "forward"
        what = "outputs (latents)" if rev else "inputs"
        if len(tensors) != len(expected):
            raise InvGraphError(
                f"GraphINN {direction}: expected {len(expected)} {what} for nodes "
                f"{[n.name for n in entry_nodes]}, got {len(tensors)}"
            )
        if len(conditions) != len(self._condition_shapes):
            raise InvGraphError(
                f"GraphINN {direction}: expected {len(self._condition_shapes)} condition(s) "
                f"for nodes {[n.name for n in self.condition_nodes]}, got {len(conditions)}"
            )
        batch = None
        named = [(n, t, s, "") for n, t, s in zip(entry_nodes, tensors, expected)]
        named += [
            (n, t, s, "condition ")
            for n, t, s in zip(self.condition_nodes, conditions, self._condition_shapes)
        ]
        for node, tensor, shape, role in named:
            if not isinstance(tensor, Tensor):
                raise InvGraphError(
                    f"GraphINN {direction}: {role}node {node.name!r} got a "
                    f"{type(tensor).__name__}, not a tensor"
                )
            if tensor.shape[1:] != shape:
                raise InvGraphError(
                    f"GraphINN {direction}: {role}node {node.name!r} expects shape "
                    f"(batch, {', '.join(map(str, shape))}), got {tuple(tensor.shape)}"
                )
            if batch is None:
                batch = tensor.shape[0]
            elif tensor.shape[0] != batch:
                raise InvGraphError(
                    f"GraphINN {direction}: {role}node {node.name!r} has batch size "
                    f"{tensor.shape[0]}, but the first input has {batch}"
                )

    def _verify_step(self, position: int, rev: bool, jac: bool, outputs: Any, log_det: Any):
        """Check a block's outputs against its declared shapes (first call per direction)."""
        node = self.module_position_to_node(position)
        feed_forward = isinstance(node, FeedForwardNode)
        module_name = type(node.module).__name__
        direction = "inverse" if rev else "forward"
        if not isinstance(outputs, tuple):
            raise InvGraphError(
                f"node {node.name!r}: {module_name}.forward ({direction}) must return "
                f"(tuple_of_tensors, log_det), got a {type(outputs).__name__} as outputs"
            )
        expected = node.input_dims if rev and not feed_forward else node.output_dims
        received = [tuple(t.shape[1:]) if isinstance(t, Tensor) else None for t in outputs]
        if received != expected:
            said = "input shapes" if rev and not feed_forward else "output_dims"
            raise InvGraphError(
                f"node {node.name!r}: {module_name} ({direction}) returned "
                f"{len(received)} tensor(s) of shapes {received}, but its {said} are "
                f"{_format_shapes(expected)}"
            )
        if jac and not feed_forward:
            batch = outputs[0].shape[0] if outputs else None
            constant = isinstance(log_det, (int, float)) or (
                isinstance(log_det, Tensor) and log_det.dim() == 0
            )
            batched = isinstance(log_det, Tensor) and tuple(log_det.shape) == (batch,)
            if not (constant or batched):
                shape = tuple(log_det.shape) if isinstance(log_det, Tensor) else None
                raise InvGraphError(
                    f"node {node.name!r}: {module_name} ({direction}) returned a log-det of "
                    f"type {type(log_det).__name__} and shape {shape}; expected a (batch,) "
                    f"= ({batch},) tensor or a constant"
                )

    # ------------------------------------------------------------------ access
    def execution_order(self, rev: bool = False) -> list[AbstractNode]:
        """The nodes with a module, in the order the forward (or inverse) pass runs them."""
        return [self._computing_nodes[step[0]] for step in self._plans[rev]]

    def module_position_to_node(self, position: int) -> AbstractNode:
        """The node whose module sits at ``module_list[position]``."""
        return self._computing_nodes[position]

    def get_node_by_name(self, name: str) -> AbstractNode | None:
        """The first node called ``name``, or ``None``."""
        return next((node for node in self.node_list if node.name == name), None)

    def get_module_by_name(self, name: str) -> nn.Module | None:
        """The module of the first node called ``name``, or ``None``."""
        node = self.get_node_by_name(name)
        return None if node is None else node.module

    def output_dims(self, input_dims: list[Shape] | None = None) -> list[Shape]:
        """The shapes of the graph's outputs, in the order of its output nodes."""
        return [tuple(s) for s in self._output_shapes]

    def draw(self, reverse: bool = False, show_shapes: bool = True) -> graphviz.Digraph:
        """The graph drawn with graphviz (displays itself in Jupyter); see
        :func:`invgraph.drawing.draw`."""
        from ..drawing import draw  # drawing imports the framework: import when called

        return draw(self, reverse=reverse, show_shapes=show_shapes)

    def summary(
        self, x: Tensor | Sequence[Tensor] | None = None, c: Tensor | Sequence[Tensor] | None = None
    ) -> Summary:
        """A table of nodes, shapes, parameters and, given a batch, per-node log-dets; see
        :func:`invgraph.drawing.summary`."""
        from ..drawing import summary

        return summary(self, x, c)

    def plot(self, path: str = "graphs", filename: str = "graph") -> str:
        """Write ``path/filename.pdf`` (FrEIA's ``GraphINN.plot``); needs graphviz's ``dot``."""
        from ..drawing import plot_graph

        return plot_graph(self, path, filename)

    def describe(self) -> str:
        """One line per node: ``name: [in shapes] -> Block -> [out shapes]``."""
        return "\n".join(str(node) for node in self.node_list)


# ---------------------------------------------------------------------- construction
def _gather(node_list: AbstractNode | Iterable[AbstractNode]) -> list[AbstractNode]:
    """The node list, completed from its output nodes if only those were given."""
    given = [node_list] if isinstance(node_list, AbstractNode) else list(node_list)
    for item in given:
        if not isinstance(item, AbstractNode):
            raise InvGraphError(f"GraphINN: node_list contains {item!r}, which is not a node")
    connected = collect_nodes(*given)
    listed = {id(n) for n in given}
    missing = [n for n in connected if id(n) not in listed]
    if missing and all(isinstance(n, OutputNode) for n in given):
        return connected
    if missing:
        raise InvGraphError(
            "GraphINN: nodes connected to the graph are missing from node_list: "
            + ", ".join(
                f"{n.name!r} (linked to {', '.join(repr(m.name) for m in _neighbours(n))})"
                for n in missing
            )
            + ". Add them, or pass only the output nodes to collect the graph"
        )
    unique = list({id(n): n for n in given}.values())
    return unique


def _neighbours(node: AbstractNode) -> list[AbstractNode]:
    linked = [s for s, _ in node.inputs] + [s for s, _ in node.conditions]
    linked += [c[0] for c in node.outputs if c is not None] + node.condition_consumers
    return linked


def _check_structure(nodes, in_nodes, out_nodes) -> None:
    if not in_nodes:
        raise InvGraphError("GraphINN: the graph has no InputNode")
    if not out_nodes:
        raise InvGraphError("GraphINN: the graph has no OutputNode")
    for node in nodes:
        if not node._data_outputs:
            continue
        for index, consumer in enumerate(node.outputs):
            if consumer is None:
                raise InvGraphError(
                    f"GraphINN: port {port_name((node, index))} (shape "
                    f"{node.output_dims[index]}) is consumed by no node; every data port "
                    f"must reach an OutputNode (no data may be lost)"
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


def _freia_module_order(nodes: list[AbstractNode], out_nodes: list[OutputNode]) -> list:
    """The nodes with a module in the order FrEIA 0.2 lists them in ``module_list``.

    FrEIA sorts with Kahn's algorithm from the output nodes backwards along data edges
    (first in, first out), then reverses. Where FrEIA's order depends on Python set
    iteration (a node with several inputs), this takes the inputs in port order, which
    makes it deterministic. Feed-forward nodes, which FrEIA 0.2 does not have, follow in
    creation order.
    """
    pending_consumers = {id(n): sum(consumer is not None for consumer in n.outputs) for n in nodes}
    queue, visited = deque(out_nodes), []
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
    ordered += [n for n in nodes if isinstance(n, FeedForwardNode)]
    return ordered


def _sort(graph: nx.DiGraph, where: str) -> list[AbstractNode]:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return list(nx.lexicographical_topological_sort(graph, key=lambda n: n._order))
    path = " -> ".join(repr(u.name) for u, _ in cycle) + f" -> {cycle[0][0].name!r}"
    raise InvGraphError(
        f"GraphINN: the graph has a cycle{where}: {path}. "
        + (
            "In the inverse pass a condition taken from a data port is available only "
            "once that port is reconstructed; these nodes wait on each other"
            if where
            else "A graph of invertible blocks must be acyclic"
        )
    )


class ReversibleGraphNet(GraphINN):
    """Deprecated alias of :class:`GraphINN`, kept for FrEIA code."""

    def __init__(self, node_list, ind_in=None, ind_out=None, verbose=False, **kwargs):
        warnings.warn(
            "ReversibleGraphNet is deprecated; use GraphINN", DeprecationWarning, stacklevel=2
        )
        if ind_in is not None or ind_out is not None:
            raise InvGraphError(
                "ReversibleGraphNet: ind_in/ind_out are not supported; inputs and outputs "
                "are the InputNodes and OutputNodes of node_list"
            )
        super().__init__(node_list, verbose=verbose, **kwargs)
