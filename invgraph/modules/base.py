"""The base class of every invertible block."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvGraphError

__all__ = [
    "InvertibleModule",
    "LogDet",
    "Shape",
    "call_block",
    "check_condition_count",
    "flat_conditions",
    "full_precision",
    "mix_channels",
    "single_input",
    "sum_except_batch",
]

Shape = tuple[int, ...]
"""The shape of one tensor without its batch dimension."""

LogDet = Tensor | float | None
"""What a block returns as log-determinant: a ``(batch,)`` tensor, a constant (a Python
number or a 0-dim tensor, for blocks whose log-det does not depend on the input), or
``None`` when called with ``jac=False``."""


class InvertibleModule(nn.Module):
    r"""Base class of every invertible block: a bijection :math:`f` with its log-det.

    A block maps a tuple of input tensors to a tuple of output tensors and back. Shapes
    exclude the batch dimension; all tensors of one call share the batch size ``B``.

    **The contract** (what a subclass implements):

    * ``__init__(dims_in, dims_c=None, **hyperparameters)``: ``dims_in`` is a list of input
      shapes, ``dims_c`` a list of condition shapes (empty without conditions). Call
      ``super().__init__(dims_in, dims_c)`` first.
    * ``output_dims(input_dims) -> list of shapes``: the shapes ``forward`` returns for
      inputs of shapes ``input_dims``. The graph uses it to infer shapes at construction.
    * ``forward(x_or_z, c=(), rev=False, jac=True) -> (outputs, log_det)``:

      - ``rev=False``: ``x_or_z`` are the inputs :math:`x`; return :math:`z = f(x; c)`
        and :math:`\log|\det \partial f / \partial x|`.
      - ``rev=True``: ``x_or_z`` are the outputs :math:`z`; return :math:`x = f^{-1}(z; c)`
        and :math:`\log|\det \partial f^{-1} / \partial z| = -\log|\det J_f(x)|`.
      - ``outputs`` is always a tuple, even for one tensor.
      - ``log_det`` is a ``(B,)`` tensor, or a constant (a Python number or 0-dim tensor)
        for blocks whose log-det does not depend on the input (permutations, Haar
        wavelets). With ``jac=False`` it may be ``None``. The graph turns constants into
        ``(B,)`` tensors, so they never reach the user.
      - Never modify an input tensor in place; keep fixed tensors in buffers, not
        parameters; keep the forward and inverse paths free of host synchronisation
        (``.item()``, ``bool(tensor)``) so that graphs run on any device and compile.

    :mod:`invgraph.testing` checks all of this on any block
    (:func:`invgraph.testing.check_block`).

    Arguments:
        dims_in: Input shapes, one tuple per input, without the batch dimension.
        dims_c: Condition shapes, one tuple per condition.

    Example:
        >>> import math, torch
        >>> from invgraph.modules import InvertibleModule
        >>> class Double(InvertibleModule):
        ...     '''z = 2 x element-wise; log|det J| = n log 2, a constant.'''
        ...     def forward(self, x_or_z, c=(), rev=False, jac=True):
        ...         (x,) = x_or_z
        ...         log_det = math.prod(self.dims_in[0]) * math.log(2.0)
        ...         if rev:
        ...             return (x / 2,), -log_det
        ...         return (x * 2,), log_det
        ...     def output_dims(self, input_dims):
        ...         return list(input_dims)
        >>> block = Double([(3,)])
        >>> (z,), log_det = block((torch.ones(4, 3),))
        >>> z[0].tolist(), round(log_det, 4)
        ([2.0, 2.0, 2.0], 2.0794)
    """

    #: Whether the block reads conditions. Blocks that don't set this to ``False``, so that
    #: a condition wired to them is reported instead of silently ignored.
    takes_conditions: ClassVar[bool] = True

    #: Whether forward and inverse undo each other exactly (up to rounding). The graphs'
    #: memory-efficient mode reconstructs a block's inputs from its outputs by the inverse;
    #: a block whose inverse is approximate (an iterative solve) sets this to ``False``, and
    #: its inputs are stored instead.
    exact_inverse: ClassVar[bool] = True

    def __init__(
        self, dims_in: Iterable[Sequence[int]], dims_c: Iterable[Sequence[int]] | None = None
    ):
        super().__init__()
        self.dims_in: list[Shape] = [tuple(int(d) for d in shape) for shape in dims_in]
        self.dims_c: list[Shape] = [tuple(int(d) for d in shape) for shape in (dims_c or [])]
        if self.dims_c and not self.takes_conditions:
            raise InvGraphError(
                f"{type(self).__name__}: takes no conditions, got condition shapes {self.dims_c}"
            )

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        """Run the block forward (``rev=False``) or inverse (``rev=True``); see the class."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        """The output shapes for inputs of shapes ``input_dims`` (batch dimension excluded)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement output_dims()")

    def extra_repr(self) -> str:
        text = f"dims_in={self.dims_in}"
        if self.dims_c:
            text += f", dims_c={self.dims_c}"
        return text


def flat_conditions(block: InvertibleModule, c: Sequence[Tensor]) -> Tensor | None:
    """A block's conditions flattened and concatenated, ``(B, sum of their sizes)``, or
    ``None`` for a block without conditions.

    Raises:
        InvGraphError: When the number of conditions is not the block's
            (:func:`check_condition_count`).

    Example:
        >>> import torch
        >>> from invgraph.modules import MaskedAffineAutoregressive
        >>> block = MaskedAffineAutoregressive([(3,)], [(2,), (1, 2)])
        >>> flat_conditions(block, (torch.ones(5, 2), torch.ones(5, 1, 2))).shape
        torch.Size([5, 4])
    """
    check_condition_count(block, c)
    if not c:
        return None
    return torch.cat([condition.flatten(1) for condition in c], dim=1)


def check_condition_count(block: InvertibleModule, c: Sequence[Tensor]) -> None:
    """Raise an :class:`InvGraphError` naming ``block`` unless it was given one tensor per
    condition it was built for (graphs check this for every call; a block called directly,
    outside a graph, would otherwise fail deep inside its subnetwork)."""
    if len(c) != len(block.dims_c):
        raise InvGraphError(
            f"{type(block).__name__}: built for {len(block.dims_c)} condition(s) of shapes "
            f"{block.dims_c}, called with {len(c)}"
        )


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)``, in at least float32.

    A log-det sums many terms: in bfloat16 (8 significant bits) a sum near 3000 would be
    rounded to a multiple of 16, so low-precision terms are accumulated, and returned, in
    float32 (float64 stays float64). One reduction over the trailing dimensions, with no
    reshape: no copy of a non-contiguous ``x``, and an empty batch ``(0, ...)`` gives
    ``(0,)`` (``x.reshape(len(x), -1)`` cannot infer ``-1`` from zero elements).

    Example:
        >>> import torch
        >>> sum_except_batch(torch.ones(2, 3, 4)), sum_except_batch(torch.ones(0, 3)).shape
        (tensor([12., 12.]), torch.Size([0]))
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    if x.dim() == 1:  # nothing to sum: sum(dim=[]) would sum everything
        return x.to(dtype)
    return x.sum(dim=list(range(1, x.dim())), dtype=dtype)


_SHAPE_PATTERNS = {1: "(d,)", 2: "(C, L)", 3: "(C, H, W)", 4: "(C, D, H, W)"}


def single_input(
    block: str, input_dims: Iterable[Sequence[int]], ndim: Collection[int] | None = None
) -> Shape:
    """The one input shape of a single-input block, or an error naming what it received.

    Arguments:
        block: The block's name, for the message.
        input_dims: The input shapes, batch dimension excluded.
        ndim: The numbers of dimensions the block accepts, e.g. ``(1,)`` for vectors or
            ``(1, 3)`` for vectors and images; ``None``: any number but zero.

    Raises:
        InvGraphError: Unless ``input_dims`` holds exactly one shape with an accepted
            number of dimensions; the message names the block, the expected pattern and
            the shapes received.

    Example:
        >>> single_input("Flatten", [(3, 4, 4)])
        (3, 4, 4)
        >>> try:
        ...     single_input("HouseholderPerm", [(3, 4)], ndim=(1,))
        ... except InvGraphError as err:
        ...     print(err)
        HouseholderPerm: expects exactly 1 input of shape (d,), received shapes [(3, 4)]
    """
    shapes = [tuple(int(d) for d in shape) for shape in input_dims]
    if len(shapes) == 1 and shapes[0] and (ndim is None or len(shapes[0]) in ndim):
        return shapes[0]
    patterns = ["(C, ...)"] if ndim is None else [_SHAPE_PATTERNS.get(n, f"{n}-D") for n in ndim]
    raise InvGraphError(
        f"{block}: expects exactly 1 input of shape {' or '.join(patterns)}, "
        f"received shapes {shapes}"
    )


def full_precision(x: Tensor) -> contextlib.AbstractContextManager[None]:
    """A context in which :func:`torch.autocast` is off on ``x``'s device.

    Under autocast, matrix products and convolutions run in low precision. A block's own
    bijection (a mixing matrix and its inverse, a coupling's affine map) runs in the data's
    precision, so that forward and inverse stay inverses of each other to the data's
    rounding; only its subnetworks, where the compute is, run in low precision. On the
    ``meta`` device, which has no autocast, the context does nothing.

    Example:
        >>> import torch
        >>> x, matrix = torch.randn(2, 3), torch.randn(3, 3)
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     with full_precision(x):
        ...         kept = x @ matrix
        ...     lowered = x @ matrix
        >>> kept.dtype, lowered.dtype
        (torch.float32, torch.bfloat16)
    """
    if x.device.type == "meta":  # not torch.amp.is_autocast_available: in torch 2.4-2.6
        return contextlib.nullcontext()  # torch.compile cannot trace it (a graph break)
    return torch.autocast(x.device.type, enabled=False)


def mix_channels(x: Tensor, matrix: Tensor) -> Tensor:
    """``matrix @ x[b, :, ...]`` at every batch index and position of a ``(B, C, ...)`` tensor.

    Computed in ``x``'s dtype, also under autocast (see :func:`full_precision`).
    """
    with full_precision(x):
        return torch.einsum("ij,bj...->bi...", matrix.to(x.dtype), x)


def call_block(
    block: nn.Module,
    inputs: Sequence[Tensor],
    conditions: Sequence[Tensor] = (),
    rev: bool = False,
    jac: bool = True,
) -> tuple[tuple[Tensor, ...], LogDet]:
    """Call a block or a network alike: ``(tuple of outputs, log_det)``.

    A block returns a tuple; a network (:class:`~invgraph.framework.GraphINN`,
    :class:`~invgraph.framework.SequenceINN`) returns a bare tensor for a single output
    unless built with ``force_tuple_output``. Both take tuples of inputs and conditions.

    Example:
        >>> import torch, invgraph as ig
        >>> inn = ig.SequenceINN(3)
        >>> inn.append(ig.PermuteRandom, seed=0)
        >>> (z,), log_det = call_block(inn, (torch.randn(2, 3),))
        >>> (z_block,), _ = call_block(inn[0], (torch.randn(2, 3),))
        >>> z.shape, z_block.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    outputs, log_det = block(tuple(inputs), c=tuple(conditions), rev=rev, jac=jac)
    return ((outputs,) if isinstance(outputs, Tensor) else tuple(outputs)), log_det
