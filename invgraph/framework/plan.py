"""The plan: a graph of nodes compiled once into the module calls of each direction.

Every network of invgraph (:class:`~invgraph.framework.GraphINN`,
:class:`~invgraph.framework.SequenceINN`) is run from a :class:`Plan`. The plan numbers
every port of the graph with an integer *slot*; a call fills the slots of its entry tensors
(inputs, or latents in the inverse pass, and conditions), then runs the :class:`Step`\\ s of
its direction, each reading slots and writing slots, and returns the tensors in the exit
slots. The plan holds only numbers, names and shapes: the modules are looked up by position
in the network's ``module_list`` at call time, so a copied or replicated network runs the
same plan on its own modules.

:func:`build_plan` makes one from nodes; the executors in
:mod:`invgraph.framework.execution` and :mod:`invgraph.framework.memory_efficient` run it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ..modules.base import Shape
from .analysis import check_structure, execution_orders, freia_module_order
from .nodes import AbstractNode, ConditionNode, FeedForwardNode, InputNode, OutputNode, Port

__all__ = ["Boundary", "Compiled", "Plan", "Step", "StepKind", "build_plan", "plan_graph"]


class StepKind(enum.Enum):
    """What a step calls, and so how the executor passes it its tensors."""

    UNARY = "unary"
    """An invertible block with one input, one output and no conditions (couplings,
    permutations, normalisations: by far the most common): a path without loops."""

    BLOCK = "block"
    """An invertible block with several inputs or outputs, or with conditions."""

    FEED_FORWARD = "feed forward"
    """A :class:`~invgraph.framework.FeedForwardNode`'s network: ``module(*conditions)``,
    the same in both directions, without a log-det."""


@dataclass(frozen=True)
class Step:
    """One module call of a plan.

    Attributes:
        name: The node's name.
        description: The node as ``str(node)`` shows it, for error notes.
        position: The module's index in the network's ``module_list``.
        kind: What is called (see :class:`StepKind`).
        reads: The slots passed as data (empty for a feed-forward step).
        conditions: The slots passed as conditions.
        writes: The slots the results go to, in the order the module returns them.
    """

    name: str
    description: str
    position: int
    kind: StepKind
    reads: tuple[int, ...]
    conditions: tuple[int, ...]
    writes: tuple[int, ...]


@dataclass(frozen=True)
class Boundary:
    """The tensors a call passes or receives at one side of the graph, in call order.

    Attributes:
        names: The boundary nodes' names.
        shapes: Their shapes without the batch dimension; ``None`` where any shape is
            accepted (a condition index of a :class:`~invgraph.framework.SequenceINN` that
            no block reads).
        slots: Their slots; ``None`` where the tensor is not used.
    """

    names: tuple[str, ...]
    shapes: tuple[Shape | None, ...]
    slots: tuple[int | None, ...]


@dataclass(frozen=True)
class Plan:
    """A graph compiled for execution: the steps of each direction over numbered slots.

    Attributes:
        forward: The steps of the forward pass (``x -> z``), in order.
        inverse: The steps of the inverse pass (``z -> x``), in order: each block's step
            reads its output slots and writes its input slots.
        inputs: The graph's inputs (entries of the forward pass, exits of the inverse).
        outputs: The graph's outputs (exits of the forward pass, entries of the inverse).
        conditions: The conditions, given in both directions.
        slot_shapes: The shape of every slot (batch dimension excluded).

    Example:
        >>> import invgraph as ig
        >>> inn = ig.SequenceINN(4)
        >>> inn.append(ig.PermuteRandom, seed=0)
        >>> inn.append(ig.PermuteRandom, seed=1)
        >>> [(step.position, step.kind.name, step.reads, step.writes) for step in inn.plan.forward]
        [(0, 'UNARY', (0,), (1,)), (1, 'UNARY', (1,), (2,))]
        >>> [(step.position, step.reads, step.writes) for step in inn.plan.inverse]
        [(1, (2,), (1,)), (0, (1,), (0,))]
        >>> inn.plan.inputs.slots, inn.plan.outputs.slots
        ((0,), (2,))
    """

    forward: tuple[Step, ...]
    inverse: tuple[Step, ...]
    inputs: Boundary
    outputs: Boundary
    conditions: Boundary
    slot_shapes: tuple[Shape, ...]

    def steps(self, rev: bool) -> tuple[Step, ...]:
        """The steps of the inverse pass if ``rev``, else of the forward pass."""
        return self.inverse if rev else self.forward

    def entries(self, rev: bool) -> Boundary:
        """Where a call's tensors go: the outputs (latents) if ``rev``, else the inputs."""
        return self.outputs if rev else self.inputs

    def exits(self, rev: bool) -> Boundary:
        """Where a call's results come from: the inputs if ``rev``, else the outputs."""
        return self.inputs if rev else self.outputs


@dataclass(frozen=True)
class Compiled:
    """What :func:`build_plan` returns.

    Attributes:
        plan: The plan.
        node_list: Every node, in the order the forward pass runs them.
        module_nodes: The nodes with a module, in the order of ``module_list`` (a step's
            ``position`` indexes it).
        ports: The port of every slot, ``ports[slot] = (node, index)``.
        inputs: The input nodes, in call order.
        outputs: The output nodes, in call order.
        conditions: The condition nodes, in call order (``None``: an index no block reads).
    """

    plan: Plan
    node_list: list[AbstractNode]
    module_nodes: list[AbstractNode]
    ports: list[Port]
    inputs: list[InputNode]
    outputs: list[OutputNode]
    conditions: list[ConditionNode | None]


def build_plan(
    nodes: list[AbstractNode],
    inputs: Sequence[InputNode],
    outputs: Sequence[OutputNode],
    conditions: Sequence[ConditionNode | None],
    owner: str,
) -> Compiled:
    """Compile a checked graph into a plan.

    The modules are listed in FrEIA 0.2's order (see
    :func:`~invgraph.framework.analysis.freia_module_order`), so that FrEIA checkpoints
    (keys ``module_list.<k>.``) load unchanged.

    Arguments:
        nodes: Every node of the graph (checked by
            :func:`~invgraph.framework.analysis.check_structure`).
        inputs: The input nodes, in call order.
        outputs: The output nodes, in call order.
        conditions: The condition nodes, in call order; ``None`` for a condition index
            that no block reads.
        owner: Who builds, for error messages (``"GraphINN"``).
    """
    forward_order, reverse_order = execution_orders(nodes, owner)
    module_nodes = freia_module_order(nodes)
    position = {id(node): k for k, node in enumerate(module_nodes)}

    # One slot per port; an output node reads the slot of the port it collects.
    # (Keyed by id() while building only: ids change when a network is copied.)
    slot_of: dict[tuple[int, int], int] = {}
    ports: list[Port] = []
    for node in forward_order:
        for index in range(len(node.output_dims)):
            slot_of[id(node), index] = len(ports)
            ports.append((node, index))

    def slots(node_ports: Sequence[Port]) -> tuple[int, ...]:
        return tuple(slot_of[id(node), index] for node, index in node_ports)

    def step(node: AbstractNode, rev: bool) -> Step:
        produced = slots([(node, i) for i in range(len(node.output_dims))])
        reads: tuple[int, ...]
        if isinstance(node, FeedForwardNode):
            kind, reads, writes = StepKind.FEED_FORWARD, (), produced
        else:
            unary = len(node.inputs) == len(node.output_dims) == 1 and not node.conditions
            kind = StepKind.UNARY if unary else StepKind.BLOCK
            reads, writes = (
                (produced, slots(node.inputs)) if rev else (slots(node.inputs), produced)
            )
        conds = slots(node.conditions)
        return Step(node.name, str(node), position[id(node)], kind, reads, conds, writes)

    def boundary(given: Sequence[AbstractNode | None]) -> Boundary:
        names, shapes, found = [], [], []
        for node in given:
            if node is None:  # a condition index that no block reads
                entry: tuple[str, Shape | None, int | None] = ("", None, None)
            else:  # an output node collects a port; an input or condition node provides one
                source, index = node.inputs[0] if isinstance(node, OutputNode) else (node, 0)
                entry = (node.name, tuple(source.output_dims[index]), slot_of[id(source), index])
            names.append(entry[0])
            shapes.append(entry[1])
            found.append(entry[2])
        return Boundary(tuple(names), tuple(shapes), tuple(found))

    plan = Plan(
        forward=tuple(step(n, False) for n in forward_order if n.module is not None),
        inverse=tuple(step(n, True) for n in reverse_order if n.module is not None),
        inputs=boundary(inputs),
        outputs=boundary(outputs),
        conditions=boundary(conditions),
        slot_shapes=tuple(tuple(node.output_dims[index]) for node, index in ports),
    )
    return Compiled(
        plan, forward_order, module_nodes, ports, list(inputs), list(outputs), list(conditions)
    )


def plan_graph(nodes: list[AbstractNode], owner: str) -> Compiled:
    """Check a graph and compile it, its inputs, outputs and conditions in the order of
    ``nodes`` (as :class:`~invgraph.framework.GraphINN` matches them to a call's tensors).

    Arguments:
        nodes: Every node of the graph.
        owner: Who builds, for error messages (``"GraphINN"``).
    """
    check_structure(nodes, owner)
    inputs = [n for n in nodes if isinstance(n, InputNode)]
    outputs = [n for n in nodes if isinstance(n, OutputNode)]
    conditions = [n for n in nodes if isinstance(n, ConditionNode)]
    return build_plan(nodes, inputs, outputs, conditions, owner)
