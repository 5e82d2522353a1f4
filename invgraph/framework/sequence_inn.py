"""SequenceINN: a chain of blocks, for networks without branches."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import InvGraphError
from ..modules.base import InvertibleModule, Shape
from ..modules.inverse import Inverse
from .memory_efficient import Program, run_memory_efficient
from .plan import BLOCK, UNARY, Step, at_least_float32, batch_log_det

if TYPE_CHECKING:
    import graphviz

    from ..drawing import Summary

__all__ = ["ReversibleSequential", "SequenceINN"]


class SequenceINN(InvertibleModule):
    r"""A chain of invertible blocks, each consuming the previous block's single output.

    Simpler than :class:`~invgraph.framework.GraphINN` when the network has no branches:
    blocks are appended one by one and their shapes inferred at once. The log-det is the
    sum of the blocks' log-dets, :math:`\sum_k \log|\det J_{f_k}|`.

    Indexing returns a block; slicing returns a new ``SequenceINN`` over the same blocks
    (shared, not copied); a negative step returns the inverse network, so
    ``inn[::-1](z)`` equals ``inn(z, rev=True)``.

    Arguments:
        *dims: The shape of one input sample (the batch dimension is implicit).
        force_tuple_output: Return a 1-tuple instead of a bare tensor.
        check_shapes: Check the input's and the conditions' shapes before running.
        memory_efficient: Train without storing activations, reconstructing each block's
            input by its inverse in the backward pass; as
            :class:`~invgraph.framework.GraphINN`'s option of the same name.

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
    ):
        if not dims:
            raise InvGraphError("SequenceINN: needs the input's shape, e.g. SequenceINN(3, 32, 32)")
        super().__init__([dims])
        self.shapes: list[Shape] = [tuple(dims)]
        self.conditions: list[int | None] = []
        self.module_list = nn.ModuleList()
        self.force_tuple_output = force_tuple_output
        self.check_shapes = check_shapes
        self.memory_efficient = memory_efficient
        self._outputs_verified = [False, False]

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
        dims_in = [self.shapes[-1]]
        position = len(self.module_list)
        label = f"SequenceINN block {position}"
        if cond is not None:
            if cond_shape is None:
                raise InvGraphError(f"{label}: cond={cond} needs cond_shape")
            cond_shape = tuple(cond_shape)
            while len(self.dims_c) <= cond:
                self.dims_c.append(None)
            if self.dims_c[cond] not in (None, cond_shape):
                raise InvGraphError(
                    f"{label}: condition {cond} was declared with shape {self.dims_c[cond]}, "
                    f"now with {cond_shape}"
                )
            self.dims_c[cond] = cond_shape
        if isinstance(module_class, nn.Module):
            module = module_class
            if kwargs:
                raise InvGraphError(f"{label}: got a built block and keyword arguments")
            if [tuple(d) for d in module.dims_in] != dims_in:
                raise InvGraphError(
                    f"{label}: the built {type(module).__name__} expects inputs "
                    f"{module.dims_in}, but the chain carries {dims_in}"
                )
        else:
            if cond is not None:
                kwargs["dims_c"] = [cond_shape]
            module = module_class(dims_in, **kwargs)
        output_dims = module.output_dims(dims_in)
        if len(output_dims) != 1:
            raise InvGraphError(
                f"{label}: {type(module).__name__} has {len(output_dims)} outputs; a "
                f"SequenceINN needs one per block (use GraphINN for branches)"
            )
        self.module_list.append(module)
        self.conditions.append(cond)
        self.shapes.append(tuple(output_dims[0]))
        self._outputs_verified = [False, False]

    def forward(
        self,
        x_or_z: Tensor | Sequence[Tensor],
        c: Tensor | Sequence[Tensor] | None = None,
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[Any, Tensor]:
        """Run the chain forward or, with ``rev=True``, inverse.

        Returns:
            ``(output, log_jac_det)`` with a ``(batch,)`` log-det on the input's device.
        """
        x = x_or_z if isinstance(x_or_z, Tensor) else _single(x_or_z)
        conditions = () if c is None else (c,) if isinstance(c, Tensor) else tuple(c)
        if self.check_shapes:
            self._check_call(x, conditions, rev)
        verify = self.check_shapes and not self._outputs_verified[rev]
        if self.memory_efficient and torch.is_grad_enabled():
            return self._run_memory_efficient(x, conditions, rev, jac, verify)
        order = range(len(self.module_list) - 1, -1, -1) if rev else range(len(self.module_list))
        modules = list(self.module_list)
        values = (x,)
        log_det: Any = 0.0
        for k in order:
            cond = self.conditions[k]
            if cond is None:
                values, block_log_det = modules[k](values, rev=rev, jac=jac)
            else:
                values, block_log_det = modules[k](values, c=(conditions[cond],), rev=rev, jac=jac)
            if verify:
                self._verify(k, rev, values)
            if jac:
                log_det = log_det + at_least_float32(block_log_det)
        if verify and jac:
            self._outputs_verified[rev] = True
        log_det = batch_log_det(x, log_det, jac)
        return (values if self.force_tuple_output else values[0]), log_det

    def _run_memory_efficient(
        self, x: Tensor, conditions: tuple, rev: bool, jac: bool, verify: bool
    ) -> tuple[Any, Tensor]:
        # The chain as a plan over slots: value k enters block k, which writes value k + 1;
        # the conditions follow in slots n + 1, n + 2, ...
        n = len(self.module_list)
        steps: list[Step] = []
        for k, cond in enumerate(self.conditions):
            kind, conds = (UNARY, ()) if cond is None else (BLOCK, (n + 1 + cond,))
            steps.append((k, kind, (k + 1,) if rev else (k,), conds, (k,) if rev else (k + 1,)))
        program = Program(
            modules=list(self.module_list),
            steps=tuple(reversed(steps) if rev else steps),
            n_slots=n + 1 + len(conditions),
            entry_slots=(n,) if rev else (0,),
            exit_slots=(0,) if rev else (n,),
            condition_slots=tuple(range(n + 1, n + 1 + len(conditions))),
            rev=rev,
            jac=jac,
            describe=lambda k: f"SequenceINN block {k} ({type(self.module_list[k]).__name__})",
            verify=(lambda k, out, _: self._verify(k, rev, out)) if verify else None,
        )
        (result,), log_det = run_memory_efficient(program, (x,), conditions)
        if verify and jac:
            self._outputs_verified[rev] = True
        return ((result,) if self.force_tuple_output else result), log_det

    @property
    def exact_inverse(self) -> bool:  # type: ignore[override]
        """Exact when every block is (a nested network is reconstructed as one block)."""
        return all(getattr(module, "exact_inverse", True) for module in self.module_list)

    def _check_call(self, x: Tensor, conditions: tuple, rev: bool) -> None:
        expected = self.shapes[0 if not rev else -1]
        direction = "inverse" if rev else "forward"
        if x.shape[1:] != expected:
            raise InvGraphError(
                f"SequenceINN {direction}: expects shape (batch, "
                f"{', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        if len(conditions) < len(self.dims_c):
            raise InvGraphError(
                f"SequenceINN {direction}: expects {len(self.dims_c)} condition(s), "
                f"got {len(conditions)}"
            )
        for index, (tensor, shape) in enumerate(zip(conditions, self.dims_c)):
            if shape is not None and tensor.shape[1:] != shape:
                raise InvGraphError(
                    f"SequenceINN {direction}: condition {index} expects shape (batch, "
                    f"{', '.join(map(str, shape))}), got {tuple(tensor.shape)}"
                )

    def _verify(self, k: int, rev: bool, values: Any) -> None:
        expected = self.shapes[k] if rev else self.shapes[k + 1]
        received = [tuple(v.shape[1:]) for v in values] if isinstance(values, tuple) else values
        if received != [expected]:
            raise InvGraphError(
                f"SequenceINN block {k} ({type(self.module_list[k]).__name__}, "
                f"{'inverse' if rev else 'forward'}) returned {received}, expected "
                f"[{expected}] (a 1-tuple)"
            )

    def output_dims(self, input_dims: list[Shape] | None = None) -> list[Shape]:
        """The shape of the chain's output, ``[shapes[-1]]``."""
        return [self.shapes[-1]]

    def draw(self, reverse: bool = False, show_shapes: bool = True) -> graphviz.Digraph:
        """The chain drawn with graphviz; see :func:`invgraph.drawing.draw`."""
        from ..drawing import draw  # drawing imports the framework: import when called

        return draw(self, reverse=reverse, show_shapes=show_shapes)

    def summary(
        self, x: Tensor | None = None, c: Tensor | Sequence[Tensor] | None = None
    ) -> Summary:
        """A table of blocks, shapes, parameters and, given a batch, log-dets; see
        :func:`invgraph.drawing.summary`."""
        from ..drawing import summary

        return summary(self, x, c)

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, int):
            return self.module_list[item]
        indices = range(len(self.module_list))[item]
        if not indices:
            raise InvGraphError(f"SequenceINN: the slice {item} selects no block")
        reverse = (item.step or 1) < 0  # run the selected blocks backwards: their inverses
        first = self.shapes[indices[0] + 1] if reverse else self.shapes[indices[0]]
        sliced = SequenceINN(
            *first, force_tuple_output=self.force_tuple_output, check_shapes=self.check_shapes
        )
        for k in indices:
            module = self.module_list[k]
            cond = self.conditions[k]
            shape = None if cond is None else self.dims_c[cond]
            sliced.append(Inverse(module) if reverse else module, cond=cond, cond_shape=shape)
        return sliced

    def __len__(self) -> int:
        return len(self.module_list)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.module_list)


def _single(tensors: Sequence[Tensor]) -> Tensor:
    if len(tensors) != 1:
        raise InvGraphError(f"SequenceINN: takes one input tensor, got {len(tensors)}")
    return tensors[0]


class ReversibleSequential(SequenceINN):
    """Deprecated alias of :class:`SequenceINN`, kept for FrEIA code."""

    def __init__(self, *dims: int, **kwargs: Any):
        warnings.warn(
            "ReversibleSequential is deprecated; use SequenceINN", DeprecationWarning, stacklevel=2
        )
        super().__init__(*dims, **kwargs)
