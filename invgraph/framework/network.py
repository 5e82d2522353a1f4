"""InvertibleNetwork: what every network of blocks shares, whatever builds its plan.

:class:`~invgraph.framework.GraphINN` compiles a DAG of nodes into a plan once;
:class:`~invgraph.framework.SequenceINN` builds the nodes of a chain block by block and
compiles them the same way. Everything else is here, once: reading a call's arguments,
checking them against the plan, choosing the executor, checking each block's outputs on
the first call, returning the results, and the views (``draw``, ``summary``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import drawing
from ..errors import InvGraphError
from ..modules.base import InvertibleModule, Shape
from .execution import Call, as_tensors, check_call, run_standard
from .memory_efficient import run_memory_efficient
from .nodes import AbstractNode, ConditionNode, InputNode, OutputNode, Port
from .plan import Compiled, Plan

if TYPE_CHECKING:
    import graphviz

__all__ = ["InvertibleNetwork"]

Tensors = Tensor | Sequence[Tensor]


class InvertibleNetwork(InvertibleModule):
    r"""Base of the networks of blocks: a :class:`~invgraph.framework.plan.Plan` over nodes.

    With :math:`f = f_K \circ \dots \circ f_1` the blocks in execution order, the forward
    pass returns :math:`z = f(x; c)` and

    .. math::

        \log |\det J_f(x)| = \sum_{k=1}^{K} \log |\det J_{f_k}(x_{k-1})|,

    the inverse pass returns :math:`x = f^{-1}(z; c)` and :math:`-\log|\det J_f(x)|`.

    A subclass sets the options (:meth:`_configure`), builds the nodes and calls
    :meth:`_adopt` with their compiled plan; the plan's inputs, outputs and conditions are
    matched to a call's tensors by position.

    Attributes:
        node_list: Every node, in the order the forward pass runs them.
        in_nodes: The input nodes, in call order.
        out_nodes: The output nodes, in call order.
        condition_nodes: The condition nodes.
        module_list: The blocks (and feed-forward networks), in FrEIA's order.
        plan: The compiled plan.
        force_tuple_output: Return a tuple even for a single output.
        check_shapes: Check a call's tensors before any block runs (cheap), and each
            block's outputs the first time each direction runs.
        memory_efficient: Train without storing activations; see
            :mod:`invgraph.framework.memory_efficient`.
        reconstruction_tolerance: With ``memory_efficient``, the relative error allowed to
            each block's reconstructed inputs in the backward pass (``None``: unchecked).
    """

    def __init__(self) -> None:
        super().__init__([])
        self.node_list: list[AbstractNode] = []
        self.module_list = nn.ModuleList()

    def _configure(
        self,
        force_tuple_output: bool,
        check_shapes: bool,
        memory_efficient: bool,
        reconstruction_tolerance: float | None,
    ) -> None:
        """Set the options every network takes (see the attributes)."""
        self.force_tuple_output = force_tuple_output
        self.check_shapes = check_shapes
        self.memory_efficient = memory_efficient
        if reconstruction_tolerance is not None and not reconstruction_tolerance > 0:
            raise InvGraphError(
                f"{type(self).__name__}: reconstruction_tolerance must be a positive number "
                f"or None, got {reconstruction_tolerance!r}"
            )
        self.reconstruction_tolerance = reconstruction_tolerance

    def _adopt(self, compiled: Compiled) -> None:
        """Take a compiled plan and its nodes."""
        plan = compiled.plan
        self.plan: Plan = plan
        self.node_list = compiled.node_list
        self.in_nodes: list[InputNode] = compiled.inputs
        self.out_nodes: list[OutputNode] = compiled.outputs
        self.condition_nodes: list[ConditionNode] = [n for n in compiled.conditions if n]
        modules = [n.module for n in compiled.module_nodes if n.module is not None]  # each has one
        self.module_list = nn.ModuleList(modules)
        self.dims_in = [s for s in plan.inputs.shapes if s is not None]
        # None for a condition index no block reads (a SequenceINN's): any shape is accepted
        self.dims_c = list(plan.conditions.shapes)  # type: ignore[arg-type]
        self._module_nodes = compiled.module_nodes
        self._ports: list[Port] = compiled.ports
        self._outputs_verified = [False, False]  # per direction: block outputs checked once

    # ------------------------------------------------------------------ running
    def forward(
        self,
        x_or_z: Tensors,
        c: Tensors | None = None,
        rev: bool = False,
        jac: bool = True,
        intermediate_outputs: bool = False,
    ) -> tuple[Any, Any]:
        """Run the network forward (``x -> z``) or inverse (``rev=True``, ``z -> x``).

        Arguments:
            x_or_z: The inputs (forward) or the outputs (inverse): a tensor, or a list or
                tuple in the order of the input (output) nodes.
            c: The conditions: a tensor, or a list or tuple in the order of the conditions.
            rev: Run the inverse.
            jac: Compute the log-det; with ``False`` a tensor of zeros is returned.
            intermediate_outputs: Return every port's tensor, ``{(node, index): tensor}``,
                and every block's log-det, ``{node: log_det}``, instead.

        Returns:
            ``(outputs, log_jac_det)``: the outputs (a bare tensor for a single output
            unless ``force_tuple_output``) and a ``(batch,)`` tensor on the input's device
            and dtype (at least float32).
        """
        owner = f"{type(self).__name__} {'inverse' if rev else 'forward'}"
        entries = as_tensors(x_or_z, "the latents" if rev else "the inputs", owner)
        conditions = as_tensors(c, "c (the conditions)", owner)
        verify = False
        if self.check_shapes:
            check_call(self.plan, entries, conditions, rev, type(self).__name__)
            verify = not self._outputs_verified[rev]
        modules = list(self.module_list)
        call = Call(self.plan, modules, rev, jac, verify, keep=intermediate_outputs)
        if self.memory_efficient and torch.is_grad_enabled() and not intermediate_outputs:
            self._refuse_replica()
            call = replace(call, tolerance=self.reconstruction_tolerance)
            run = run_memory_efficient(call, entries, conditions)
        else:
            run = run_standard(call, entries, conditions)
        if verify and jac:  # with jac=False the log-dets were not seen yet
            self._outputs_verified[rev] = True
        if intermediate_outputs:
            assert run.slots is not None and run.log_dets is not None
            ports = {port: run.slots[k] for k, port in enumerate(self._ports)}
            log_dets = {self._module_nodes[k]: v for k, v in run.log_dets.items()}
            return ports, log_dets
        if len(run.exits) == 1 and not self.force_tuple_output:
            return run.exits[0], run.log_det
        return run.exits, run.log_det

    def _refuse_replica(self) -> None:
        if getattr(self, "_is_replica", False):
            raise InvGraphError(
                f"{type(self).__name__}: memory_efficient=True does not work under "
                f"nn.DataParallel (its replicas hide their parameters); use "
                f"DistributedDataParallel"
            )

    def inverse(self, z: Tensors, c: Tensors | None = None, jac: bool = True) -> tuple[Any, Tensor]:
        """``x = f^{-1}(z; c)`` and its log-det: the same as ``self(z, c, rev=True)``."""
        return self(z, c=c, rev=True, jac=jac)

    @property
    def exact_inverse(self) -> bool:  # type: ignore[override]
        """Exact when every block is (a nested network is reconstructed as one block)."""
        return all(getattr(module, "exact_inverse", True) for module in self.module_list)

    def output_dims(self, input_dims: list[Shape] | None = None) -> list[Shape]:
        """The shapes of the network's outputs, in the order of its output nodes."""
        return [tuple(shape) for shape in self.plan.outputs.shapes if shape is not None]

    # ------------------------------------------------------------------ access
    def execution_order(self, rev: bool = False) -> list[AbstractNode]:
        """The nodes with a module, in the order the forward (or inverse) pass runs them."""
        return [self._module_nodes[step.position] for step in self.plan.steps(rev)]

    def module_position_to_node(self, position: int) -> AbstractNode:
        """The node whose module sits at ``module_list[position]``."""
        return self._module_nodes[position]

    def get_node_by_name(self, name: str) -> AbstractNode | None:
        """The first node called ``name``, or ``None``."""
        return next((node for node in self.node_list if node.name == name), None)

    def get_module_by_name(self, name: str) -> nn.Module | None:
        """The module of the first node called ``name``, or ``None``."""
        node = self.get_node_by_name(name)
        return None if node is None else node.module

    def describe(self) -> str:
        """One line per node: ``name: [in shapes] -> Block -> [out shapes]``."""
        return "\n".join(str(node) for node in self.node_list)

    # ------------------------------------------------------------------ views
    def draw(self, reverse: bool = False, show_shapes: bool = True) -> graphviz.Digraph:
        """The network drawn with graphviz (displays itself in Jupyter); see
        :func:`invgraph.drawing.draw`."""
        return drawing.draw(self, reverse=reverse, show_shapes=show_shapes)

    def summary(self, x: Tensors | None = None, c: Tensors | None = None) -> drawing.Summary:
        """A table of nodes, shapes, parameters and, given a batch, per-node log-dets; see
        :func:`invgraph.drawing.summary`."""
        return drawing.summary(self, x, c)

    def plot(self, path: str = "graphs", filename: str = "graph") -> str:
        """Write ``path/filename.pdf`` (FrEIA's ``GraphINN.plot``); see
        :func:`invgraph.drawing.plot_graph`."""
        return drawing.plot_graph(self, path, filename)
