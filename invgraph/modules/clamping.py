"""Soft clamps: smooth maps of the real line onto (-1, 1) that bound a block's log-scales.

A coupling multiplies by :math:`\\exp(\\text{clamp} \\cdot f(s))`, so a scale can change a
value by at most :math:`e^{\\pm\\text{clamp}}`. The clamps are plain module-level functions,
never lambdas stored on modules, so ``torch.save`` of a whole model works. FrEIA's strings
``"ATAN"``, ``"TANH"`` and ``"SIGMOID"`` name them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import InvGraphError

__all__ = ["ClampActivation", "atan_clamp", "resolve_clamp", "sigmoid_clamp", "tanh_clamp"]

ClampActivation = Callable[[Tensor], Tensor]


def atan_clamp(u: Tensor) -> Tensor:
    r""":math:`0.636 \arctan(u)`: FrEIA's default (0.636 ≈ 2/π keeps it inside (-1, 1))."""
    return 0.636 * torch.atan(u)


def tanh_clamp(u: Tensor) -> Tensor:
    r""":math:`\tanh(u)`, as in the RealNVP paper."""
    return torch.tanh(u)


def sigmoid_clamp(u: Tensor) -> Tensor:
    r""":math:`2\,(\sigma(u) - 1/2)`."""
    return 2.0 * (torch.sigmoid(u) - 0.5)


_BY_NAME: dict[str, ClampActivation] = {
    "ATAN": atan_clamp,
    "TANH": tanh_clamp,
    "SIGMOID": sigmoid_clamp,
}


def resolve_clamp(activation: str | ClampActivation) -> ClampActivation:
    """A clamp given by FrEIA's name (``"ATAN"``, ``"TANH"``, ``"SIGMOID"``) or a callable.

    Example:
        >>> import torch
        >>> from invgraph.modules.clamping import resolve_clamp
        >>> resolve_clamp("TANH")(torch.tensor([100.0]))
        tensor([1.])
    """
    if isinstance(activation, str):
        try:
            return _BY_NAME[activation.upper()]
        except KeyError:
            raise InvGraphError(
                f"unknown clamp activation {activation!r}; use one of {sorted(_BY_NAME)} "
                f"or a callable"
            ) from None
    if not callable(activation):
        raise InvGraphError(f"clamp activation {activation!r} is neither a name nor callable")
    return activation
