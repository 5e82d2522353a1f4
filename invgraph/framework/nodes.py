"""Graph nodes: what a user declares, one node per block, connected through ports.

A node owns one block and knows its input ports, its condition ports and the shapes that
flow through them. Shapes are inferred eagerly, when the node is built, so a mistake is
reported at the line that makes it, not deep inside a training step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Union

from torch import nn

from .._checks import as_integer
from ..errors import InvGraphError
from ..modules.base import InvertibleModule, Shape

__all__ = [
    "AbstractNode",
    "ConditionNode",
    "FeedForwardNode",
    "InputNode",
    "Node",
    "OutputNode",
    "Port",
    "format_shapes",
    "port_name",
    "sample_shape",
]

Port = tuple["AbstractNode", int]
"""An output port: ``(node, index)``. ``node.out0`` is ``(node, 0)``."""

PortLike = Union["AbstractNode", Port]
"""A node (meaning its port 0) or a port."""

_creation_order = itertools.count()


def format_shapes(shapes: Sequence[Shape | None]) -> str:
    """``[(4, 8, 8), (16,)]``: how messages show a list of shapes (``None``: any shape)."""
    return "[" + ", ".join("None" if s is None else str(tuple(s)) for s in shapes) + "]"


def port_name(port: Port) -> str:
    """``'name'.outK``: how messages refer to a port."""
    node, index = port
    return f"{node.name!r}.out{index}"


class AbstractNode:
    """What every node shares: a name, input and condition ports, shapes, a module.

    Subclasses differ in what they compute (:class:`Node`: an invertible block;
    :class:`FeedForwardNode`: a plain network feeding conditions) or in being the graph's
    boundary (:class:`InputNode`, :class:`ConditionNode`, :class:`OutputNode`).

    Attributes:
        name: The node's name, unique enough to find it with
            :meth:`~invgraph.framework.GraphINN.get_node_by_name`.
        inputs: Data ports this node consumes, in order.
        conditions: Condition ports this node reads, in order.
        input_dims: Shapes of ``inputs`` (batch dimension excluded).
        condition_dims: Shapes of ``conditions``.
        output_dims: Shapes of this node's output ports.
        outputs: For each output port, the ``(node, input index)`` consuming it, or ``None``.
        module: The block (``None`` for boundary nodes).
    """

    #: Whether this node's outputs may be consumed as data (condition sources may not).
    _data_outputs: bool = True

    def __init__(
        self,
        inputs: PortLike | Sequence[PortLike],
        module_type: Any,
        module_args: dict[str, Any] | None = None,
        conditions: PortLike | Sequence[PortLike] | None = None,
        name: str | None = None,
    ):
        self._order = next(_creation_order)
        self.module_type = module_type
        self.module_args = module_args
        self.name: str = name if name is not None else f"{self._default_name()}_{self._order}"
        self.inputs: list[Port] = self._parse_ports(inputs, "input")
        self.conditions: list[Port] = self._parse_ports(conditions, "condition")
        self.input_dims: list[Shape] = [src.output_dims[i] for src, i in self.inputs]
        self.condition_dims: list[Shape] = [src.output_dims[i] for src, i in self.conditions]
        for source, index in self.inputs:
            if not source._data_outputs:
                raise InvGraphError(
                    f"{self._label()}: port {port_name((source, index))} of "
                    f"{type(source).__name__} can only be used as a condition, not as data "
                    f"(pass it in conditions=...)"
                )

        self.module, output_dims = self._build_module()
        self.output_dims: list[Shape] = [tuple(int(d) for d in s) for s in output_dims]
        self.outputs: list[tuple[AbstractNode, int] | None] = [None] * len(self.output_dims)
        self.condition_consumers: list[AbstractNode] = []

        # Claim the input ports only once everything above succeeded, so that a failed
        # construction leaves the graph as it was.
        for in_index, (source, out_index) in enumerate(self.inputs):
            consumer = source.outputs[out_index]
            if consumer is not None:
                other, other_index = consumer
                raise InvGraphError(
                    f"{self._label()}: input {in_index} is port "
                    f"{port_name((source, out_index))}, which already feeds input "
                    f"{other_index} of node {other.name!r}. A data port feeds exactly one "
                    f"node (a copy is not invertible); to reuse a tensor, pass it as a "
                    f"condition, or split it with Split"
                )
        for in_index, (source, out_index) in enumerate(self.inputs):
            source.outputs[out_index] = (self, in_index)
        for source, _ in self.conditions:
            if self not in source.condition_consumers:
                source.condition_consumers.append(self)

    # ----------------------------------------------------------------- construction
    def _default_name(self) -> str:
        module_type = self.module_type
        if module_type is None:
            return type(self).__name__
        if isinstance(module_type, nn.Module):
            return type(module_type).__name__
        return getattr(module_type, "__name__", type(self).__name__)

    def _label(self) -> str:
        return f"{type(self).__name__} {self.name!r}"

    def _parse_ports(self, ports: Any, role: str) -> list[Port]:
        """Accept a node, a ``(node, i)`` port, or a list of those; return ports."""
        if ports is None:
            return []
        if isinstance(ports, AbstractNode) or _is_port(ports):
            ports = [ports]
        if not isinstance(ports, (list, tuple)):
            raise InvGraphError(
                f"{self._label()}: cannot read {role}s {ports!r}: give a node, a "
                f"(node, index) port such as node.out1, or a list of those"
            )
        parsed = []
        for position, item in enumerate(ports):
            if isinstance(item, AbstractNode):
                item = (item, 0)
            if not _is_port(item):
                raise InvGraphError(
                    f"{self._label()}: {role} {position} is {item!r}, not a node or a "
                    f"(node, index) port"
                )
            source, index = item
            if not 0 <= index < len(source.output_dims):
                raise InvGraphError(
                    f"{self._label()}: {role} {position} asks for port out{index} of node "
                    f"{source.name!r}, which has {len(source.output_dims)} output port(s)"
                )
            parsed.append((source, index))
        return parsed

    def _build_module(self) -> tuple[nn.Module | None, list[Shape]]:
        raise NotImplementedError

    def _built_module(self) -> nn.Module | None:
        """The module if it was given already built (then without ``module_args``), else None."""
        given = self.module_type
        if not isinstance(given, nn.Module):
            return None
        if self.module_args:
            raise InvGraphError(
                f"{self._label()}: got a built {type(given).__name__} and module_args; "
                f"give either a class with its arguments or a built module"
            )
        self.module_type = type(given)
        return given

    def __getstate__(self) -> dict[str, Any]:
        """What pickling keeps: all but the construction arguments.

        ``module_args`` and a ``module_type`` that is not a class may hold lambdas or local
        functions (FrEIA's own examples pass subnet constructors as lambdas), which cannot
        be pickled; the built module holds everything the node computes. So a pickled or
        ``torch.save``-d node (with its network) comes back with ``module_args = None`` and
        ``module_type`` its module's class.
        """
        state = self.__dict__.copy()
        state["module_args"] = None
        if self.module is not None:
            state["module_type"] = type(self.module)
        return state

    # ----------------------------------------------------------------- access
    def __getattr__(self, attribute: str) -> Port:
        # node.out0, node.out1, ...: the node's output ports. A missing one raises an
        # AttributeError (not InvGraphError), as attribute access must for hasattr().
        if attribute.startswith("out") and attribute[3:].isdigit():
            index = int(attribute[3:])
            if index < len(self.__dict__.get("output_dims", ())):
                return (self, index)
            raise AttributeError(
                f"{self._label()} has {len(self.__dict__.get('output_dims', ()))} output "
                f"port(s); there is no {attribute}"
            )
        raise AttributeError(attribute)

    def __str__(self) -> str:
        block = type(self.module).__name__ if self.module is not None else type(self).__name__
        inputs = format_shapes(self.input_dims)
        if self.condition_dims:
            inputs += f" | c={format_shapes(self.condition_dims)}"
        return f"{self.name}: {inputs} -> {block} -> {format_shapes(self.output_dims)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _is_port(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], AbstractNode)
        and isinstance(item[1], int)
    )


class Node(AbstractNode):
    """A node computing an invertible block.

    Arguments:
        inputs: The data ports the block consumes: a node (its port 0), a ``(node, i)``
            port such as ``node.out1``, or a list of those.
        module_type: An :class:`~invgraph.modules.InvertibleModule` class (or a function
            returning a block), built as
            ``module_type(input_dims, dims_c=condition_dims, **module_args)``, or an
            already built block whose ``dims_in`` match the inputs. Anything else, such as
            a plain ``nn.Module``, is refused with an explanation.
        module_args: Keyword arguments for ``module_type``.
        conditions: Condition ports: from a :class:`ConditionNode`, a
            :class:`FeedForwardNode`, or any data port in the graph (a condition does not
            consume the port). In the inverse pass a data port used as a condition carries
            its reconstructed value.
        name: The node's name; defaults to the block's class name and a counter.

    Example:
        >>> import invgraph as ig
        >>> x = ig.InputNode(4, 8, 8, name="x")
        >>> haar = ig.Node(x, ig.HaarDownsampling, name="haar")
        >>> print(haar)
        haar: [(4, 8, 8)] -> HaarDownsampling -> [(16, 4, 4)]
    """

    def _build_module(self) -> tuple[nn.Module, list[Shape]]:
        given = self._built_module()
        module = self._check_built(given) if given is not None else self._construct()
        _refuse_bare_single_output(self, module)
        try:
            output_dims = module.output_dims(self.input_dims)
        except InvGraphError as error:
            raise InvGraphError(f"{self._label()}: {error}") from error
        return module, output_dims

    def _check_built(self, given: nn.Module) -> InvertibleModule:
        """A block given built: it must be invertible and built for these ports' shapes."""
        if not isinstance(given, InvertibleModule):
            raise InvGraphError(f"{self._label()}: {_not_invertible(type(given))}")
        expected = [tuple(d) for d in given.dims_in]
        if expected != self.input_dims:
            raise InvGraphError(
                f"{self._label()}: the built {type(given).__name__} expects inputs "
                f"{format_shapes(expected)}, but its input ports carry "
                f"{format_shapes(self.input_dims)}"
            )
        declared: Sequence[Shape | None] = given.dims_c  # None: a network's unread condition
        if len(declared) != len(self.condition_dims) or any(
            shape is not None and tuple(shape) != port
            for shape, port in zip(declared, self.condition_dims)
        ):
            raise InvGraphError(
                f"{self._label()}: the built {type(given).__name__} expects conditions "
                f"{format_shapes(given.dims_c)}, but its condition ports carry "
                f"{format_shapes(self.condition_dims)}"
            )
        return given

    def _construct(self) -> InvertibleModule:
        """``module_type(input_dims, dims_c=condition_dims, **module_args)``, checked."""
        factory = self.module_type
        if isinstance(factory, type) and not issubclass(factory, InvertibleModule):
            raise InvGraphError(f"{self._label()}: {_not_invertible(factory)}")
        if not callable(factory):
            raise InvGraphError(
                f"{self._label()}: module_type must be an InvertibleModule class or a built "
                f"block, got {factory!r}"
            )
        args = dict(self.module_args or {})
        if self.conditions:
            args["dims_c"] = self.condition_dims
        name = getattr(factory, "__name__", repr(factory))
        try:
            module = factory(self.input_dims, **args)
        except InvGraphError as error:
            raise InvGraphError(f"{self._label()}: {error}") from error
        except TypeError as error:  # a misspelt or missing argument, most often
            raise InvGraphError(
                f"{self._label()}: {name}({format_shapes(self.input_dims)}, "
                f"{', '.join(f'{k}=...' for k in args)}) raised TypeError: {error}"
            ) from error
        if not isinstance(module, InvertibleModule):
            raise InvGraphError(
                f"{self._label()}: module_type {name} returned an object of type "
                f"{_not_invertible(type(module))}"
            )
        return module


def _not_invertible(kind: type) -> str:
    """Why a class is not a block, and what to use instead."""
    text = f"{kind.__module__}.{kind.__qualname__} is not an invertible block (a subclass of "
    text += "invgraph.modules.InvertibleModule)"
    if issubclass(kind, nn.Module):
        text += (
            "; wrap a network in a block (e.g. as a coupling's subnet_constructor), or, to "
            "compute a condition from other tensors, put it in a FeedForwardNode"
        )
    return text


def _refuse_bare_single_output(node: AbstractNode, module: InvertibleModule) -> None:
    """A nested graph must return tuples, as every block does."""
    bare = getattr(module, "force_tuple_output", True) is False
    if bare and len(module.output_dims(list(module.dims_in))) == 1:
        raise InvGraphError(
            f"{node._label()}: a nested {type(module).__name__} with one output returns a "
            f"bare tensor; build it with force_tuple_output=True to use it as a block"
        )


def sample_shape(dims: Sequence[Any], owner: str, example: str) -> Shape:
    """``dims`` as the shape of one sample: a non-empty tuple of positive integers.

    Arguments:
        dims: The dimensions given (Python or NumPy integers).
        owner: Who asks, for the message (``"InputNode 'x'"``).
        example: A correct call, for the message (``"InputNode(3, 32, 32)"``).
    """
    if not dims:
        raise InvGraphError(
            f"{owner}: needs at least one dimension (the batch dimension is implicit), "
            f"e.g. {example}"
        )
    shape = []
    for d in dims:
        size = as_integer(d)  # ints and NumPy integers; not True, 4.0, "4" or [4]
        if size is None or size < 1:
            raise InvGraphError(
                f"{owner}: dimensions must be positive integers, got {tuple(dims)!r}; "
                f"give them one by one, e.g. {example}"
            )
        shape.append(size)
    return tuple(shape)


class _SourceNode(AbstractNode):
    """A graph boundary that provides a tensor: an input or a condition."""

    def __init__(self, *dims: int, name: str | None = None):
        kind = type(self).__name__
        self.dims: Shape = sample_shape(dims, f"{kind} {name!r}", f"{kind}(3, 32, 32)")
        super().__init__([], None, name=name)

    def _build_module(self) -> tuple[None, list[Shape]]:
        return None, [self.dims]


class InputNode(_SourceNode):
    """A graph input: data ``x`` in the forward pass, an output in the inverse pass.

    Arguments:
        *dims: The shape of one sample (the batch dimension is implicit).
        name: The node's name.

    Example:
        >>> import invgraph as ig
        >>> print(ig.InputNode(3, 32, 32, name="image"))
        image: [] -> InputNode -> [(3, 32, 32)]
    """


class ConditionNode(_SourceNode):
    """A condition input ``c``, given in both directions; feeds conditions only.

    Arguments:
        *dims: The shape of one sample (the batch dimension is implicit).
        name: The node's name.

    Example:
        >>> import invgraph as ig
        >>> print(ig.ConditionNode(10, name="label"))
        label: [] -> ConditionNode -> [(10,)]
    """

    _data_outputs = False


class OutputNode(AbstractNode):
    """A graph output: a latent ``z`` in the forward pass, an input in the inverse pass.

    A latent split off at any depth is simply another output node.

    Arguments:
        inputs: The port it collects: a node (its port 0) or ``(node, i)``.
        name: The node's name.
    """

    def __init__(self, inputs: PortLike, name: str | None = None):
        super().__init__(inputs, None, name=name)
        if len(self.inputs) != 1:
            raise InvGraphError(
                f"{self._label()}: collects exactly one port, got {len(self.inputs)}"
            )

    def _build_module(self) -> tuple[None, list[Shape]]:
        return None, []

    def release(self) -> None:
        """Leave the graph: free the port this node collects, for another node to consume.

        Example:
            >>> import invgraph as ig
            >>> x = ig.InputNode(4, name="x")
            >>> z = ig.OutputNode(x, name="z")
            >>> z.release()
            >>> p = ig.Node(x, ig.PermuteRandom, name="p")  # x.out0 is free again
        """
        source, index = self.inputs[0]
        if source.outputs[index] == (self, 0):
            source.outputs[index] = None


class FeedForwardNode(AbstractNode):
    """A plain (non-invertible) network whose output feeds conditions only.

    It computes ``module(*conditions)`` in both directions, so a conditioning network
    (for example a CNN summarising an observation for a cINN) is trained end to end with
    the flow. Its output may not be consumed as data.

    Arguments:
        conditions: The ports it reads (condition nodes or any port of the graph).
        output_dims: The shape of its single output, without the batch dimension.
        module_type: An ``nn.Module`` class, built as ``module_type(**module_args)``, or a
            built module.
        module_args: Keyword arguments for ``module_type``.
        name: The node's name.

    Example:
        >>> import torch, invgraph as ig
        >>> y = ig.ConditionNode(2, name="y")
        >>> features = ig.FeedForwardNode(y, (16,), torch.nn.Linear,
        ...                               {"in_features": 2, "out_features": 16})
        >>> features.output_dims
        [(16,)]
    """

    _data_outputs = False

    def __init__(
        self,
        conditions: PortLike | Sequence[PortLike],
        output_dims: Iterable[int],
        module_type: Any,
        module_args: dict[str, Any] | None = None,
        name: str | None = None,
    ):
        self._declared_output = tuple(int(d) for d in output_dims)
        super().__init__([], module_type, module_args, conditions=conditions, name=name)
        if not self.conditions:
            raise InvGraphError(f"{self._label()}: needs at least one condition port to read")

    def _build_module(self) -> tuple[nn.Module, list[Shape]]:
        module = self._built_module()
        if module is None:
            module = self.module_type(**(self.module_args or {}))
        return module, [self._declared_output]
