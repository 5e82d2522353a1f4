"""SequenceINN: a chain of blocks, for networks without branches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast, overload

from torch import nn

from ..compat import deprecated_alias
from ..errors import InvGraphError
from ..modules.base import InvertibleModule, Shape
from ..modules.inverse import Inverse
from .network import InvertibleNetwork
from .nodes import ConditionNode, InputNode, Node, OutputNode, sample_shape
from .plan import build_plan

__all__ = ["ReversibleSequential", "SequenceINN"]


class _Block(Node):
    """A block of a chain: a node whose messages say where it stands in the chain."""

    def _label(self) -> str:
        return f"SequenceINN block {self.name}"


class SequenceINN(InvertibleNetwork):
    r"""A chain of invertible blocks, each consuming the previous block's single output.

    Simpler than :class:`~invgraph.framework.GraphINN` when the network has no branches:
    blocks are appended one by one and their shapes inferred at once. The log-det is the
    sum of the blocks' log-dets, :math:`\sum_k \log|\det J_{f_k}|`. The chain is a graph
    like any other: its nodes are ``x``, the conditions ``c0``, ``c1``, ..., the blocks
    ``0``, ``1``, ... and ``z`` (see ``node_list``), it runs on the same plan and executors
    as a :class:`~invgraph.framework.GraphINN`, checks its calls the same way and also
    returns ``intermediate_outputs``.

    Indexing returns a block; slicing returns a new ``SequenceINN`` over the same blocks
    (shared, not copied) that takes the same conditions as the whole chain; a negative
    step returns the inverse network, so ``inn[::-1](z)`` equals ``inn(z, rev=True)``.

    Arguments:
        *dims: The shape of one input sample (the batch dimension is implicit).
        force_tuple_output: Return a 1-tuple instead of a bare tensor.
        check_shapes: Check the input's and the conditions' number, type, shapes and batch
            size before running, and each block's output on the first call.
        memory_efficient: Train without storing activations, reconstructing each block's
            input by its inverse in the backward pass; as
            :class:`~invgraph.framework.GraphINN`'s option of the same name.
        reconstruction_tolerance: As :class:`~invgraph.framework.GraphINN`'s option.

    Example:
        >>> import torch, invgraph as ig
        >>> inn = ig.SequenceINN(4, 8, 8)
        >>> inn.append(ig.HaarDownsampling)
        >>> inn.append(ig.PermuteRandom, seed=0)
        >>> inn.append(ig.Flatten)
        >>> z, log_det = inn(torch.randn(2, 4, 8, 8))
        >>> tuple(z.shape), tuple(log_det.shape)
        ((2, 256), (2,))
        >>> x, _ = inn[::-1](z)
        >>> tuple(x.shape)
        (2, 4, 8, 8)
    """

    def __init__(
        self,
        *dims: int,
        force_tuple_output: bool = False,
        check_shapes: bool = True,
        memory_efficient: bool = False,
        reconstruction_tolerance: float | None = None,
    ):
        shape = sample_shape(dims, "SequenceINN", "SequenceINN(3, 32, 32)")
        super().__init__()
        self._configure(
            force_tuple_output, check_shapes, memory_efficient, reconstruction_tolerance
        )
        self.conditions: list[int | None] = []  # per block: the index of the condition it reads
        self._x = InputNode(*shape, name="x")
        self._condition_nodes: list[ConditionNode | None] = []  # per condition index
        self._blocks: list[_Block] = []
        self._z = OutputNode(self._x, name="z")
        self._compile()

    @property
    def shapes(self) -> list[Shape]:
        """The shapes along the chain: the input's, then each block's output's."""
        return [self._x.dims] + [tuple(block.output_dims[0]) for block in self._blocks]

    def append(
        self,
        module_class: type[InvertibleModule] | InvertibleModule,
        cond: int | None = None,
        cond_shape: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        """Append a block, built as ``module_class([last shape], dims_c=[cond_shape], **kwargs)``.

        Arguments:
            module_class: A block class, or a built block whose ``dims_in`` fit.
            cond: Which of the conditions passed to ``forward`` this block reads (an index).
            cond_shape: That condition's shape (needed with ``cond``).
            **kwargs: The block's hyperparameters.
        """
        position = len(self._blocks)
        label = f"SequenceINN block {position}"
        shape = self._condition_shape(cond, cond_shape, label)
        # Build the block on a node of its own first, with the graph's checks and messages,
        # so that a failure leaves the chain as it was.
        trial = _Block(
            InputNode(*self.shapes[-1], name="previous"),
            module_class,
            kwargs or None,
            conditions=None if shape is None else ConditionNode(*shape, name=f"c{cond}"),
            name=str(position),
        )
        if len(trial.output_dims) != 1:
            raise InvGraphError(
                f"{label}: {type(trial.module).__name__} has {len(trial.output_dims)} outputs; "
                f"a SequenceINN needs one per block (use GraphINN for branches)"
            )
        condition = None if cond is None or shape is None else self._declare_condition(cond, shape)
        self._z.release()
        previous = self._blocks[-1] if self._blocks else self._x
        block = _Block(previous, trial.module, conditions=condition, name=str(position))
        self._blocks.append(block)
        self.conditions.append(cond)
        self._z = OutputNode(block, name="z")
        self._compile()

    def _condition_shape(
        self, cond: int | None, cond_shape: Sequence[int] | None, label: str
    ) -> Shape | None:
        """The shape of condition ``cond``, checked against what earlier blocks declared."""
        if cond is None:
            if cond_shape is not None:
                raise InvGraphError(f"{label}: cond_shape={cond_shape} needs cond, its index")
            return None
        if isinstance(cond, bool) or not isinstance(cond, int) or cond < 0:
            raise InvGraphError(f"{label}: cond must be a condition index >= 0, got {cond!r}")
        if cond_shape is None:
            raise InvGraphError(f"{label}: cond={cond} needs cond_shape")
        shape = sample_shape(tuple(cond_shape), label, "cond_shape=(10,)")
        declared = self._condition_nodes[cond] if cond < len(self._condition_nodes) else None
        if declared is not None and declared.dims != shape:
            raise InvGraphError(
                f"{label}: condition {cond} was declared with shape {declared.dims}, "
                f"now with {shape}"
            )
        return shape

    def _declare_condition(self, cond: int, shape: Shape) -> ConditionNode:
        """The node of condition ``cond``, made on its first use."""
        self._condition_nodes += [None] * (cond + 1 - len(self._condition_nodes))
        node = self._condition_nodes[cond]
        if node is None:
            node = self._condition_nodes[cond] = ConditionNode(*shape, name=f"c{cond}")
        return node

    def _compile(self) -> None:
        """The chain's nodes and their plan."""
        conditions = [c for c in self._condition_nodes if c is not None]
        nodes = [self._x, *conditions, *self._blocks, self._z]
        plan = build_plan(nodes, [self._x], [self._z], self._condition_nodes, "SequenceINN")
        self._adopt(plan)

    @overload
    def __getitem__(self, item: int) -> InvertibleModule: ...

    @overload
    def __getitem__(self, item: slice) -> SequenceINN: ...

    def __getitem__(self, item: int | slice) -> InvertibleModule | SequenceINN:
        if isinstance(item, int):
            return cast(InvertibleModule, self.module_list[item])  # every block is one
        indices = range(len(self.module_list))[item]
        if not indices:
            raise InvGraphError(f"SequenceINN: the slice {item} selects no block")
        reverse = (item.step or 1) < 0  # run the selected blocks backwards: their inverses
        first = self.shapes[indices[0] + 1] if reverse else self.shapes[indices[0]]
        sliced = SequenceINN(
            *first, force_tuple_output=self.force_tuple_output, check_shapes=self.check_shapes
        )
        for k, condition in enumerate(self._condition_nodes):  # called with the same c
            if condition is not None:
                sliced._declare_condition(k, condition.dims)
        sliced._compile()
        for k in indices:
            module = self[k]
            cond = self.conditions[k]
            shape = None if cond is None else self.dims_c[cond]
            sliced.append(Inverse(module) if reverse else module, cond=cond, cond_shape=shape)
        return sliced

    def __len__(self) -> int:
        return len(self.module_list)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.module_list)


ReversibleSequential = deprecated_alias(SequenceINN, "ReversibleSequential", __name__)
