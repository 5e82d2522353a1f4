"""Blocks that change the graph's topology: split one tensor into several, or concatenate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InvGraphError
from .base import InvertibleModule, Shape, single_input

__all__ = ["Concat", "Split"]


def _normalize_dim(block: str, dim: int, shape: Shape) -> int:
    """``dim`` (batch excluded, negative counts from the end) as an index into ``shape``."""
    ndim = len(shape)
    if not -ndim <= dim < ndim:
        raise InvGraphError(
            f"{block}: dim={dim} is out of range for input shape {shape} "
            f"(expected {-ndim} <= dim < {ndim}; the batch dimension is not counted)"
        )
    return dim % ndim


class Split(InvertibleModule):
    r"""Split one tensor into pieces along a dimension: :math:`x \mapsto (x_1, \dots, x_k)`.

    The inverse concatenates the pieces again; :math:`\log|\det J| = 0`. This is how a
    graph fans out: each piece is a separate output port (``node.out0``, ``node.out1``...).

    Arguments:
        dims_in: One input shape, e.g. ``[(C, H, W)]``.
        dims_c: Must be empty: the block takes no conditions.
        section_sizes: The sizes of the pieces along ``dim``; takes precedence over
            ``n_sections``. An int ``s`` cuts pieces of size ``s``, the last one smaller if
            ``s`` does not divide the size (as :func:`torch.split`). A list gives every size;
            if it sums to less than the size, one more piece takes the rest.
        n_sections: Without ``section_sizes``: the number of pieces, of equal sizes or as
            close as possible, the first ones one larger (as :func:`numpy.array_split`).
        dim: The dimension to split, batch dimension excluded (0: channels or features);
            negative values count from the end.

    Example:
        >>> import torch
        >>> from invgraph.modules import Split
        >>> split = Split([(5, 8)], n_sections=2)
        >>> split.output_dims(split.dims_in)
        [(3, 8), (2, 8)]
        >>> (a, b), log_det = split((torch.randn(10, 5, 8),))
        >>> a.shape, b.shape, log_det
        (torch.Size([10, 3, 8]), torch.Size([10, 2, 8]), 0.0)
        >>> Split([(5, 8)], section_sizes=[1, 3, 1], dim=-2).output_dims([(5, 8)])
        [(1, 8), (3, 8), (1, 8)]
    """

    takes_conditions = False

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        section_sizes: int | Sequence[int] | None = None,
        n_sections: int = 2,
        dim: int = 0,
    ):
        super().__init__(dims_in, dims_c)
        shape = single_input("Split", self.dims_in)
        self.dim = _normalize_dim("Split", dim, shape)
        self.section_sizes = self._sections(shape[self.dim], section_sizes, n_sections)

    @staticmethod
    def _sections(
        size: int, section_sizes: int | Sequence[int] | None, n_sections: int
    ) -> list[int]:
        if section_sizes is None:
            if not 2 <= n_sections <= size:
                raise InvGraphError(
                    f"Split: n_sections={n_sections} must be between 2 and the size {size} "
                    "of the split dimension"
                )
            small, n_large = divmod(size, n_sections)
            return [small + 1] * n_large + [small] * (n_sections - n_large)
        if isinstance(section_sizes, int):
            if not 1 <= section_sizes < size:
                raise InvGraphError(
                    f"Split: section_sizes={section_sizes} must be between 1 and {size - 1}, "
                    f"for a split dimension of size {size}"
                )
            full, rest = divmod(size, section_sizes)
            return [section_sizes] * full + ([rest] if rest else [])
        sizes = [int(s) for s in section_sizes]
        if not sizes or min(sizes) < 1 or sum(sizes) > size:
            raise InvGraphError(
                f"Split: section_sizes={list(section_sizes)} must be positive and sum to at "
                f"most the size {size} of the split dimension"
            )
        return sizes + ([size - sum(sizes)] if sum(sizes) < size else [])

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        if rev:
            return (torch.cat(x_or_z, dim=self.dim + 1),), 0.0
        return tuple(torch.split(x_or_z[0], self.section_sizes, dim=self.dim + 1)), 0.0

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        shapes = [tuple(shape) for shape in input_dims]
        shape = shapes[0] if len(shapes) == 1 else ()
        if len(shape) != len(self.dims_in[0]) or shape[self.dim] != sum(self.section_sizes):
            raise InvGraphError(
                f"Split: built for input shape {self.dims_in[0]}, received {shapes}"
            )
        dim = self.dim
        return [(*shape[:dim], size, *shape[dim + 1 :]) for size in self.section_sizes]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, section_sizes={self.section_sizes}, dim={self.dim}"


class Concat(InvertibleModule):
    r"""Concatenate several tensors along a dimension: :math:`(x_1, \dots, x_k) \mapsto x`.

    The inverse splits them apart again; :math:`\log|\det J| = 0`. All inputs must have
    the same shape except along ``dim``.

    Arguments:
        dims_in: Two or more input shapes, equal except along ``dim``.
        dims_c: Must be empty: the block takes no conditions.
        dim: The dimension to concatenate, batch dimension excluded (0: channels or
            features); negative values count from the end.

    Example:
        >>> import torch
        >>> from invgraph.modules import Concat
        >>> concat = Concat([(3, 8), (2, 8)])
        >>> concat.output_dims(concat.dims_in)
        [(5, 8)]
        >>> (x,), log_det = concat((torch.randn(10, 3, 8), torch.randn(10, 2, 8)))
        >>> x.shape, log_det
        (torch.Size([10, 5, 8]), 0.0)
    """

    takes_conditions = False

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        dim: int = 0,
    ):
        super().__init__(dims_in, dims_c)
        if len(self.dims_in) < 2:
            raise InvGraphError(
                f"Concat: expects at least 2 inputs, received {len(self.dims_in)} "
                f"with shapes {self.dims_in}"
            )
        self.dim = _normalize_dim("Concat", dim, self.dims_in[0])
        self.section_sizes = [shape[self.dim] for shape in self.dims_in]
        self.output_dims(self.dims_in)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], float]:
        if rev:
            return tuple(torch.split(x_or_z[0], self.section_sizes, dim=self.dim + 1)), 0.0
        return (torch.cat(x_or_z, dim=self.dim + 1),), 0.0

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        shapes = [tuple(shape) for shape in input_dims]
        ndim, dim = len(self.dims_in[0]), self.dim
        rests = {shape[:dim] + shape[dim + 1 :] for shape in shapes}  # shapes without `dim`
        if any(len(shape) != ndim for shape in shapes) or len(rests) != 1:
            raise InvGraphError(
                f"Concat: all inputs must have equal shapes except along dim={dim}, "
                f"received {shapes}"
            )
        if [shape[dim] for shape in shapes] != self.section_sizes:
            raise InvGraphError(f"Concat: built for input shapes {self.dims_in}, received {shapes}")
        (rest,) = rests
        return [(*rest[:dim], sum(self.section_sizes), *rest[dim:])]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"
