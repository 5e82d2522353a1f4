"""HINT: hierarchical (recursive) affine coupling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..errors import InvGraphError
from .base import Shape, single_input
from .clamping import ClampActivation
from .coupling import (
    AffineCouplingBase,
    StepLogDet,
    SubnetConstructor,
    subnet_constructor_or_error,
)

__all__ = ["HINTCouplingBlock"]


class HINTCouplingBlock(AffineCouplingBase):
    r"""Recursive affine coupling (HINT): a dense, lower-triangular Jacobian in one block.

    The input's ``C`` channels are split as :math:`x = [x_1, x_2]` with :math:`C_1 = \lfloor
    C/2 \rfloor`. A leaf (``C < 2 * min_split_size``, or ``max_splits`` used up) is a
    one-sided affine coupling; otherwise each half is first transformed by a HINT block of
    its own size, :math:`H_1` and :math:`H_2`, then coupled:

    .. math::

        H(x; c) = \begin{cases}
            [\,x_1,\; x_2 \odot e^{s(x_1, c)} + t(x_1, c)\,] & \text{leaf,} \\
            [\,u_1,\; u_2 \odot e^{s(u_1, c)} + t(u_1, c)\,],\quad
            u_1 = H_1(x_1; c),\; u_2 = H_2(x_2; c) & \text{otherwise,}
        \end{cases}

    .. math::

        \log|\det J_H(x)| = \log|\det J_{H_1}(x_1)| + \log|\det J_{H_2}(x_2)|
            + \textstyle\sum s(u_1, c),

    with log-scales :math:`s = \text{clamp}\cdot f(\tilde s)` soft-clamped as in the other
    affine couplings. The inverse undoes it top-down: :math:`u_2 = (y_2 - t(y_1, c)) \odot
    e^{-s(y_1, c)}`, :math:`x_1 = H_1^{-1}(y_1; c)`, :math:`x_2 = H_2^{-1}(u_2; c)`. Every
    level gets the conditions. The order (sub-blocks first, then the coupling on their
    outputs) and the module names ``upper``, ``lower``, ``s``, ``t`` follow the authors'
    code. On the coupling base: side 0 is :math:`H_1`, side 1 is :math:`H_2` then the
    affine coupling.

    Arguments:
        dims_in: One input shape ``(C, ...)``, ``C >= 2``.
        dims_c: Condition shapes, ``(C_c, *spatial)`` or vectors (broadcast over space).
        subnet_constructor: ``constructor(c_in, c_out)``; builds ``s`` and ``t`` per level.
        clamp: Bound of the log-scales.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.
        max_splits: Depth of the recursion (``-1``: until the halves are too small).
        min_split_size: Smallest half (``>= 2``) a split may produce.

    References:
        Kruse, Detommaso, Köthe, Scheichl, "HINT: Hierarchical Invertible Neural Transport
        for Density Estimation and Bayesian Inference", AAAI 2021, arXiv:1905.10687.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import HINTCouplingBlock
        >>> block = HINTCouplingBlock([(8,)], subnet_constructor=nn.Linear)
        >>> block.upper.dims_in, block.upper.upper.dims_in, block.upper.upper.upper  # 8, 4, 2
        ([(4,)], [(2,)], None)
        >>> (z,), log_det = block((torch.randn(3, 8),))
        >>> z.shape, log_det.shape
        (torch.Size([3, 8]), torch.Size([3]))
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        clamp: float = 2.0,
        clamp_activation: str | ClampActivation = "ATAN",
        max_splits: int = -1,
        min_split_size: int = 2,
    ):
        name = type(self).__name__
        if min_split_size < 2:
            raise InvGraphError(f"{name}: needs min_split_size >= 2, got {min_split_size=}")
        channels = single_input(name, dims_in)[0]
        splits = channels >= 2 * min_split_size and max_splits != 0
        half = channels // 2  # the base refuses fewer than 2 channels: a half would be empty
        super().__init__(dims_in, dims_c, clamp, clamp_activation, half, two_sided=splits)
        make = subnet_constructor_or_error(name, subnet_constructor)
        self.s = make(half + self.condition_length, channels - half)
        self.t = make(half + self.condition_length, channels - half)
        self.upper: HINTCouplingBlock | None = None
        self.lower: HINTCouplingBlock | None = None
        if splits:
            spatial = self.dims_in[0][1:]
            options: dict[str, Any] = {
                "subnet_constructor": subnet_constructor,
                "clamp": clamp,
                "clamp_activation": clamp_activation,
                "max_splits": max_splits - 1,
                "min_split_size": min_split_size,
            }
            self.upper = HINTCouplingBlock([(half, *spatial)], self.dims_c, **options)
            self.lower = HINTCouplingBlock([(channels - half, *spatial)], self.dims_c, **options)

    def _conditioner(self, side: int, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.s(u), self.t(u)

    def _step(
        self, side: int, x: Tensor, u: Tensor, c: Sequence[Tensor], rev: bool
    ) -> tuple[Tensor, StepLogDet]:
        if side == 0:  # H_1 (only when split): x_1 <-> u_1 = y_1
            assert self.upper is not None  # two-sided exactly when split
            (y,), log_det = self.upper((x,), c, rev)
            return y, log_det
        log_det_lower: StepLogDet = 0.0
        if self.lower is not None and not rev:  # H_2 before the coupling
            (x,), log_det_lower = self.lower((x,), c)
        x, log_det = super()._step(side, x, u, c, rev)
        if self.lower is not None and rev:  # H_2^{-1} after the inverse coupling
            (x,), log_det_lower = self.lower((x,), c, rev=True)
        return x, log_det + log_det_lower
