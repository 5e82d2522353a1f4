"""What the engines share: the layout of an execution plan and the log-det bookkeeping."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["batch_log_det"]

# What a step of a plan runs. One input and one output is by far the most common case
# (couplings, permutations, normalisations); it gets a path without loops.
UNARY = 0  # an invertible block with one input, one output and no conditions
BLOCK = 1  # an invertible block with several inputs or outputs, or with conditions
FEED_FORWARD = 2  # a FeedForwardNode's network

Step = tuple[int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]
"""One module call of a plan: ``(position in the module list, kind, data slots read,
condition slots read, slots written)``."""


def batch_log_det(reference: Tensor, log_det: Any, jac: bool) -> Tensor:
    """The summed log-det as a ``(batch,)`` tensor on ``reference``'s device and dtype.

    Blocks may return constants (a number or a 0-dim tensor); a graph whose blocks all do,
    or a call with ``jac=False`` (zeros, as FrEIA returns), still gives a ``(batch,)`` tensor.
    Its dtype is at least float32: low-precision inputs get a float32 log-det.
    """
    dtype = torch.promote_types(reference.dtype, torch.float32)  # low precision: float32
    if jac and isinstance(log_det, Tensor) and log_det.dim() == 1 and log_det.dtype == dtype:
        return log_det
    return reference.new_zeros(reference.shape[0], dtype=dtype) + (log_det if jac else 0.0)


def at_least_float32(log_det: Any) -> Any:
    """A block's low-precision log-det (under autocast) promoted before it is summed."""
    if isinstance(log_det, Tensor) and log_det.dtype in (torch.float16, torch.bfloat16):
        return log_det.float()
    return log_det
