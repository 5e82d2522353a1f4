r"""Bounded supports: a bijection between a box (or half-lines) and :math:`\mathbb{R}^D`.

A flow whose data live in a bounded set, e.g. the parameters of a simulator under a uniform
prior, puts :class:`BoundedSupport` first (on the data side): the rest of the flow works on
:math:`\mathbb{R}^D`, and every sample, drawn by the inverse pass, lies in the support by
construction, with no rejection step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvGraphError
from .base import InvertibleModule, Shape, single_input, sum_except_batch

__all__ = ["BoundedSupport"]

Bound = float | Sequence[float] | Tensor
"""A bound: one number, or values broadcastable to the input shape (batch excluded)."""


class _Parts(NamedTuple):
    """The bounds in a given dtype, split by kind, with finite stand-ins where unused."""

    low: Tensor
    high: Tensor
    interval: Tensor  # both bounds finite
    half: Tensor  # exactly one bound finite
    anchor: Tensor  # the finite bound of a half-line (0 elsewhere)
    sign: Tensor  # +1: (anchor, inf), -1: (-inf, anchor)
    low_safe: Tensor  # low on intervals, 0 elsewhere
    high_safe: Tensor  # high on intervals, 1 elsewhere


def _as_bound(owner: str, name: str, value: Bound, shape: Shape) -> Tensor:
    """``value`` as a tensor of the input shape, checked broadcastable and not NaN."""
    # float64, whatever the default dtype: a bound rounded to float32 at construction (0.3 to
    # 0.30000001) would let float64 samples past the bound the user gave
    if isinstance(value, Tensor):
        tensor = value.detach().to("cpu", torch.float64)
    else:
        tensor = torch.as_tensor(value, dtype=torch.float64)
    try:
        broadcast: tuple[int, ...] | None = tuple(torch.broadcast_shapes(tensor.shape, shape))
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(shape):
        raise InvGraphError(
            f"{owner}: {name} of shape {tuple(tensor.shape)} does not broadcast to the input "
            f"shape {tuple(shape)} (batch dimension excluded)"
        )
    if tensor.isnan().any():
        raise InvGraphError(f"{owner}: {name} contains NaN: {tensor.tolist()}")
    return tensor.expand(shape).clone()


def _softplus(x: Tensor) -> Tensor:
    r""":math:`\log(1 + e^x)` without overflow, exact for every ``x`` (no linear threshold)."""
    return torch.logaddexp(x, torch.zeros_like(x))


class BoundedSupport(InvertibleModule):
    r"""A fixed bijection from a product of intervals onto :math:`\mathbb{R}^D`, element-wise.

    Each element :math:`x_i` of the data lies in :math:`(l_i, h_i)`, where ``low`` and
    ``high`` are numbers or tensors broadcastable to the input shape and may be infinite.
    The forward pass (data to latent) maps the interval onto :math:`\mathbb{R}`:

    * both bounds finite, the scaled logit, with :math:`w = h - l`:

      .. math::

          z = \log(x - l) - \log(h - x), \qquad x = l + w\,\sigma(z), \qquad
          \log\frac{dz}{dx} = \log w - \log(x - l) - \log(h - x);

    * only :math:`l` finite, the inverse softplus onto the half-line :math:`(l, \infty)`,
      with :math:`t = x - l`:

      .. math::

          z = t + \log(1 - e^{-t}), \qquad x = l + \log(1 + e^{z}), \qquad
          \log\frac{dz}{dx} = -\log(1 - e^{-t}) = -\log\sigma(z);

    * only :math:`h` finite, the mirror image: :math:`z = -(t + \log(1 - e^{-t}))` with
      :math:`t = h - x`, :math:`x = h - \log(1 + e^{-z})`;
    * both infinite, the identity.

    The inverse pass (sampling) maps :math:`\mathbb{R}` into the support, with
    :math:`\log\frac{dx}{dz} = \log w + \log\sigma(z) + \log\sigma(-z)` on an interval and
    :math:`\log\sigma(\pm z)` on a half-line. Every log-det is computed with log-sigmoids,
    ``logaddexp`` and ``expm1``: finite for every finite latent (:math:`z = \pm 10^3`
    included), no :math:`\log(\sigma(z))` that underflows.

    **Never leaking.** Samples stay in the closed box :math:`[l, h]` for every finite
    :math:`z`, in any precision. The naive :math:`l + w\,\sigma(z)` does not: in float32
    :math:`\sigma(z)` rounds to 1 for :math:`z > 17`, and the rounded sum can even exceed
    :math:`h`. Here the interval map is evaluated from the nearer bound,
    :math:`x = h - w\,\sigma(-z)` for :math:`z \ge 0` and :math:`l + w\,\sigma(z)` for
    :math:`z < 0`, which, rounded, cannot pass that bound (rounding is monotonic and
    :math:`h` is a float); the half-lines add a non-negative softplus to their bound. A
    final clamp to :math:`[l, h]` guards the rest (a no-op in exact arithmetic).

    **At the boundary in finite precision.** A sample can *equal* a bound: when
    :math:`w\,\sigma(-|z|)` (on a half-line :math:`\log(1 + e^{-|z|})`) is below half a unit
    in the last place of the bound, e.g. :math:`|z| > 17` in float32 for a box :math:`(0,
    1)` or a half-line from 1, :math:`|z| > 37` in float64, :math:`z < -104` in float32 for
    a half-line from 0 (the softplus underflows). Such a value is in the closed support but
    not in the open one, and the forward pass maps it to :math:`\pm\infty` with an infinite
    log-det; data outside the support give NaN (not checked: a check would synchronise the
    device). What to do: keep the log-density that the inverse pass returned with each
    sample instead of recomputing it by the forward pass; give data (and samples fed back)
    that lie strictly inside, e.g. clamp them a few ulps in from the bounds; or run in
    float64, whose bound is reached only at :math:`|z| > 37`.

    Arguments:
        dims_in: One input shape.
        dims_c: Must be empty: the block takes no conditions.
        low: Lower bounds :math:`l`: a number, or values broadcastable to ``dims_in[0]``;
            ``-inf`` for none.
        high: Upper bounds :math:`h`, likewise; ``inf`` for none.

    Raises:
        InvGraphError: Unless ``low`` and ``high`` broadcast to the input shape, contain no
            NaN and satisfy ``low < high`` element-wise (after rounding to the default
            dtype), naming the first offending element.

    The bounds are buffers (``low`` and ``high``, of the input shape): saved in the state
    dict and moved by ``.to()``.

    References:
        L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP (2017),
        section 4.1, the logit transform. arXiv:1605.08803.
        G. Papamakarios, D. Sterratt, I. Murray. Sequential Neural Likelihood (2019),
        logit-transformed bounded parameters. arXiv:1805.07226.

    Example:
        >>> import torch
        >>> from invgraph.modules import BoundedSupport
        >>> box = BoundedSupport([(3,)], low=[0.0, -1.0, 2.0], high=[1.0, 1.0, float("inf")])
        >>> z = torch.tensor([[-1e3, 0.0, 1e3], [40.0, 40.0, -40.0]])
        >>> (x,), log_det = box((z,), rev=True)
        >>> x.tolist()  # [0, 1] x [-1, 1] x [2, inf): never outside, at worst on a bound
        [[0.0, 0.0, 1002.0], [1.0, 1.0, 2.0]]
        >>> bool(log_det.isfinite().all())
        True
        >>> (back,), forward_log_det = box((torch.tensor([[0.5, 0.0, 3.0]]),))
        >>> [round(v, 4) for v in back[0].tolist()], round(forward_log_det.item(), 4)
        ([0.0, 0.0, 0.5413], 2.5381)
    """

    takes_conditions = False

    def __init__(
        self,
        dims_in: Sequence[Sequence[int]],
        dims_c: Sequence[Sequence[int]] | None = None,
        low: Bound = 0.0,
        high: Bound = 1.0,
    ):
        super().__init__(dims_in, dims_c)
        name = type(self).__name__
        shape = single_input(name, self.dims_in)
        low_t, high_t = _as_bound(name, "low", low, shape), _as_bound(name, "high", high, shape)
        bad = ~(low_t < high_t)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise InvGraphError(
                f"{name}: needs low < high element-wise; at index {first} low="
                f"{low_t[first].item()} >= high={high_t[first].item()} ({int(bad.sum())} of "
                f"{bad.numel()} elements)"
            )
        self.low: Tensor
        self.high: Tensor
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        shape = single_input(type(self).__name__, input_dims)
        if shape != self.dims_in[0]:
            raise InvGraphError(
                f"{type(self).__name__}: built for {self.dims_in}, got {list(input_dims)}"
            )
        return [shape]

    def _parts(self, like: Tensor) -> _Parts:
        low, high = self.low.to(like.dtype), self.high.to(like.dtype)
        has_low, has_high = torch.isfinite(low), torch.isfinite(high)
        interval = has_low & has_high
        zero = torch.zeros_like(low)
        return _Parts(
            low=low,
            high=high,
            interval=interval,
            half=has_low ^ has_high,
            anchor=torch.where(has_low, low, torch.where(has_high, high, zero)),
            sign=torch.where(has_low, 1.0, -1.0).to(like.dtype),
            low_safe=torch.where(interval, low, zero),
            high_safe=torch.where(interval, high, zero + 1),
        )

    def _to_latent(self, x: Tensor, p: _Parts) -> tuple[Tensor, Tensor]:
        # Unused branches see finite stand-ins: no inf or NaN reaches their gradients.
        inside = torch.where(p.interval, x, (p.low_safe + p.high_safe) / 2)
        above, below = inside - p.low_safe, p.high_safe - inside
        z_interval = torch.log(above) - torch.log(below)
        log_interval = torch.log(p.high_safe - p.low_safe) - torch.log(above) - torch.log(below)
        t = torch.where(p.half, p.sign * (x - p.anchor), 1.0)
        log_one_minus = torch.log(-torch.expm1(-t))  # log(1 - e^-t), exact for small t
        z_half = p.sign * (t + log_one_minus)
        z = torch.where(p.interval, z_interval, torch.where(p.half, z_half, x))
        log_derivative = torch.where(
            p.interval, log_interval, torch.where(p.half, -log_one_minus, 0.0)
        )
        return z, log_derivative

    def _to_data(self, z: Tensor, p: _Parts) -> tuple[Tensor, Tensor]:
        width = p.high_safe - p.low_safe
        from_high = p.high_safe - width * torch.sigmoid(-z)  # <= high after rounding
        from_low = p.low_safe + width * torch.sigmoid(z)  # >= low after rounding
        x_interval = torch.where(z >= 0, from_high, from_low)
        log_interval = torch.log(width) + F.logsigmoid(z) + F.logsigmoid(-z)
        x_half = p.anchor + p.sign * _softplus(p.sign * z)
        x = torch.where(p.interval, x_interval, torch.where(p.half, x_half, z))
        log_derivative = torch.where(
            p.interval, log_interval, torch.where(p.half, F.logsigmoid(p.sign * z), 0.0)
        )
        # the final guard, a no-op in exact arithmetic (its gradient passes at the bounds)
        return torch.clamp(x, p.low, p.high), log_derivative

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        (value,) = x_or_z
        parts = self._parts(value)
        out, log_derivative = (self._to_data if rev else self._to_latent)(value, parts)
        return (out,), sum_except_batch(log_derivative) if jac else None

    def extra_repr(self) -> str:
        def show(bound: Tensor) -> str:
            flat = bound.flatten()
            return f"{flat[0].item()}" if (flat == flat[0]).all() else f"{flat.tolist()}"

        return f"{super().extra_repr()}, low={show(self.low)}, high={show(self.high)}"
