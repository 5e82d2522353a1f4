"""Run any block backwards."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..errors import InvGraphError
from .base import InvertibleModule, LogDet, Shape

__all__ = ["Inverse"]


class Inverse(InvertibleModule):
    r"""The inverse of a built block: :math:`g = f^{-1}`, so :math:`g^{-1} = f`.

    ``Inverse(f)`` runs ``f`` with the directions swapped: its forward pass is ``f``'s
    inverse, and the other way round. Its inputs are ``f``'s outputs and its outputs are
    ``f``'s inputs; conditions pass through unchanged. The log-det comes from ``f`` in the
    direction it runs, so :math:`\log|\det J_g(z)| = -\log|\det J_f(f^{-1}(z))|`. The
    wrapped block is a submodule: its parameters are ``Inverse``'s.

    Arguments:
        module: The block to invert, already built.

    Example:
        >>> import torch
        >>> from invgraph.modules import Flatten, Inverse
        >>> unflatten = Inverse(Flatten([(3, 4, 4)]))
        >>> unflatten.dims_in, unflatten.output_dims(unflatten.dims_in)
        ([(48,)], [(3, 4, 4)])
        >>> (x,), log_det = unflatten((torch.randn(10, 48),))
        >>> x.shape
        torch.Size([10, 3, 4, 4])
    """

    def __init__(self, module: InvertibleModule):
        if not isinstance(module, InvertibleModule):
            raise InvGraphError(
                f"Inverse: expects a built InvertibleModule, received {type(module).__name__}"
            )
        super().__init__(module.output_dims(module.dims_in), module.dims_c)
        self.module = module

    @property
    def exact_inverse(self) -> bool:  # type: ignore[override]
        """Exact as the wrapped block is: the two run the same pair of maps."""
        return self.module.exact_inverse

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        return self.module(x_or_z, c=c, rev=not rev, jac=jac)

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        shapes = [tuple(shape) for shape in input_dims]
        if shapes != self.dims_in:
            raise InvGraphError(
                f"Inverse({type(self.module).__name__}): built for input shapes {self.dims_in} "
                f"(the wrapped block's output shapes), received {shapes}"
            )
        return list(self.module.dims_in)
