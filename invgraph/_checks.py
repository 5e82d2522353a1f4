"""Checks of values a user gives, shared by several modules."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_integer"]


def as_integer(value: object) -> int | None:
    """``value`` as an ``int`` if it is an integer: a Python or NumPy integer, or a 0-dim
    integer tensor; ``None`` for anything else, booleans included (``True`` is an ``int``
    to Python, and NumPy 1.x warns when a ``np.bool_`` is used as one).

    Example:
        >>> as_integer(3), as_integer(np.int64(3)), as_integer(True), as_integer(3.0)
        (3, 3, None, None)
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, Tensor) and (value.is_floating_point() or value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
