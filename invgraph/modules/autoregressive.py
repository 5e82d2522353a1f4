r"""Masked autoregressive blocks (MAF, IAF, autoregressive neural spline flows).

An autoregressive map transforms each feature with parameters computed from the features
before it in a fixed order (a :class:`~invgraph.subnets.MADE` computes all of them in one
pass):

.. math::

    b_i = \tau(a_i;\, \theta_i(a_{<i}, c)), \qquad
    \log|\det J| = \sum_i \log \tau'(a_i;\, \theta_i),

since the Jacobian is triangular. Evaluating :math:`b = g(a)` takes one conditioner call;
inverting it takes :math:`D` calls, one feature becoming exact per call: starting anywhere,
after pass :math:`k` the features of rank :math:`< k` are exact, because feature :math:`i`'s
parameters read only features of lower rank.

A masked autoregressive flow (MAF) evaluates densities cheaply: its forward (data to
latent) is :math:`g`. An inverse autoregressive flow (IAF, ``inverse_autoregressive=True``)
is the same map the other way round: its forward is :math:`g^{-1}` (:math:`D` calls) and
sampling, its inverse, is one call. The :math:`D` passes are a Python loop of fixed length:
no host synchronisation, traced whole by ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvGraphError
from ..subnets import MADE, Activation
from .base import (
    InvertibleModule,
    LogDet,
    Shape,
    check_condition_count,
    flat_conditions,
    single_input,
    sum_except_batch,
)
from .clamping import ClampActivation, resolve_clamp
from .coupling import broadcast_conditions, concat_conditions
from .splines import check_spline_arguments, rational_quadratic_spline

__all__ = [
    "AutoregressiveBlock",
    "MaskedAffineAutoregressive",
    "MaskedRationalQuadraticAutoregressive",
]

_OVER = ("features", "channels")


class AutoregressiveBlock(InvertibleModule):
    r"""Base of the masked autoregressive blocks: shapes, conditions, the conditioner and the
    two directions (one conditioner call, or :math:`D` of them).

    A subclass passes the number of parameters per feature and implements
    ``_transform(a, parameters, rev)``: the element-wise map :math:`\tau` of ``(N, D)``
    values with parameters ``(N, D, P)``, returning the values and the element-wise
    log-derivatives (of :math:`\tau^{-1}` when ``rev``).

    Arguments:
        dims_in: One input shape.
        dims_c: Condition shapes.
        params: Parameters per feature, ``P``.
        hidden: Widths of the conditioner's hidden layers.
        activation: Builds the conditioner's activations (a module class such as ``nn.ReLU``).
        ordering: The autoregressive order, see :func:`~invgraph.subnets.autoregressive_order`.
        seed: Seed of a ``"random"`` ordering.
        residual: Skip connections in the conditioner.
        inverse_autoregressive: IAF: forward is :math:`g^{-1}`, the inverse is one call.
        autoregressive_over: ``"features"``: every element of the input is one feature of
            one order (an image is flattened); ``"channels"``: the channels at each position
            are the features, positions are independent and share the conditioner (per-pixel
            autoregression; conditions are vectors or maps of the input's spatial shape).
    """

    #: Whether the inverse maps only the feature that each pass makes exact: worth it where
    #: the element-wise map costs more than picking and placing one column (splines).
    _one_feature_per_pass: ClassVar[bool] = False

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None,
        params: int,
        hidden: Sequence[int],
        activation: Activation,
        ordering: str | Sequence[int],
        seed: int | None,
        residual: bool,
        inverse_autoregressive: bool,
        autoregressive_over: str,
    ):
        super().__init__(dims_in, dims_c)
        name = type(self).__name__
        shape = single_input(name, self.dims_in)
        if autoregressive_over not in _OVER:
            raise InvGraphError(
                f"{name}: autoregressive_over must be one of {_OVER}, got {autoregressive_over!r}"
            )
        self.per_position = autoregressive_over == "channels"
        if self.per_position:
            features = shape[0]
            context = broadcast_conditions(name, shape, self.dims_c)
        else:
            features = math.prod(shape)
            context = sum(math.prod(c) for c in self.dims_c)
        try:
            self.conditioner = MADE(
                features, params, context, hidden, ordering, seed, activation, residual
            )
        except InvGraphError as err:
            raise InvGraphError(f"{name}: {err}") from None
        self.features = features
        self.inverse_autoregressive = bool(inverse_autoregressive)

    def _transform(self, a: Tensor, parameters: Tensor, rev: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _rows(self, x: Tensor) -> Tensor:
        """``(B, *shape)`` -> ``(N, D)``: one row per autoregressive sequence."""
        if self.per_position:
            return x.movedim(1, -1).reshape(-1, self.features)
        return x.reshape(x.shape[0], self.features)

    def _context(self, x: Tensor, c: Sequence[Tensor]) -> Tensor | None:
        """The conditions as ``(N, context)`` rows matching :meth:`_rows`, or ``None``."""
        if not self.per_position:
            return flat_conditions(self, c)
        check_condition_count(self, c)
        if not c:
            return None
        maps = concat_conditions(x[:, :0], c)  # (B, C_c, *spatial), vectors broadcast
        return maps.movedim(1, -1).reshape(-1, maps.shape[1])

    def _theta(self, a: Tensor, context: Tensor | None) -> Tensor:
        # Under autocast the conditioner runs in low precision; the map in the data's.
        return self.conditioner(a, context).to(a.dtype)

    def _inverse(self, b: Tensor, context: Tensor | None, jac: bool) -> tuple[Tensor, Tensor]:
        """``a = g^{-1}(b)`` of ``(N, D)`` rows in :math:`D` conditioner calls, and its
        element-wise log-derivatives (zeros where ``jac`` is false and they are not needed).

        Each call computes the parameters as the one-pass direction does, bit for bit (with
        the same masked weights, computed once for all calls), so that the two directions
        stay inverses in low precision too. With ``_one_feature_per_pass``, pass :math:`k`
        maps the feature of rank :math:`k` alone: its parameters read the features of lower
        rank, all exact by then, so it is final (the features of higher rank are still
        zeros, which the masks keep out); otherwise every pass maps every feature.
        """
        made = self.conditioner
        weights = made.masked_weights()
        if not self._one_feature_per_pass:
            out, log_derivative = torch.zeros_like(b), torch.zeros_like(b)
            for _ in range(self.features):
                theta = made(out, context, weights).to(b.dtype)
                out, log_derivative = self._transform(b, theta, True)
            return out, log_derivative
        order = torch.argsort(made.ranks)  # the features by rank
        by_rank = b.index_select(1, order)
        out, log_derivative = torch.zeros_like(b), torch.zeros_like(b)
        for k in range(self.features):
            feature = order[k : k + 1]  # a tensor: no host synchronisation
            theta = made(out, context, weights).index_select(1, feature)[:, 0].to(b.dtype)
            value, log_d = self._transform(by_rank[:, k], theta, True)
            chosen = made.ranks == k
            out = torch.where(chosen, value[:, None], out)
            if jac:
                log_derivative = torch.where(chosen, log_d[:, None], log_derivative)
        return out, log_derivative

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], LogDet]:
        (v,) = x_or_z
        rows, context = self._rows(v), self._context(v, c)
        if rev == self.inverse_autoregressive:  # b = g(a): one pass
            out, log_derivative = self._transform(rows, self._theta(rows, context), False)
        else:  # a = g^{-1}(b): D passes, each makes the next feature in the order exact
            out, log_derivative = self._inverse(rows, context, jac)
        if self.per_position:
            moved = v.movedim(1, -1)
            out = out.reshape(moved.shape).movedim(-1, 1)
            log_derivative = log_derivative.reshape(moved.shape)
        else:
            out = out.reshape(v.shape)
            log_derivative = log_derivative.reshape(v.shape[0], self.features)
        return (out,), sum_except_batch(log_derivative) if jac else None

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        if [tuple(s) for s in input_dims] != self.dims_in:
            raise InvGraphError(
                f"{type(self).__name__}: built for {self.dims_in}, got {list(input_dims)}"
            )
        return list(self.dims_in)

    def extra_repr(self) -> str:
        over = "channels" if self.per_position else "features"
        return (
            f"{super().extra_repr()}, inverse_autoregressive={self.inverse_autoregressive}, "
            f"autoregressive_over={over!r}"
        )


class MaskedAffineAutoregressive(AutoregressiveBlock):
    r"""Masked affine autoregressive flow (MAF; IAF with ``inverse_autoregressive=True``).

    With :math:`[\tilde s_i, t_i] = \mathrm{MADE}(a_{<i}, c)` and the soft-clamped log-scale
    :math:`s_i = \text{clamp}\cdot f(\tilde s_i)`,

    .. math::

        b_i = a_i\, e^{s_i} + t_i, \qquad \log|\det J| = \sum_i s_i.

    MAF: :math:`z = g(x)`, the density in one conditioner call, sampling in :math:`D`.
    IAF: :math:`x = g(z)`, sampling in one call, the density in :math:`D`. The conditioner
    starts at zero: the block starts as the identity.

    Arguments:
        dims_in: One input shape: a vector ``(D,)``, or any shape, flattened (see
            ``autoregressive_over``).
        dims_c: Condition shapes; they enter the conditioner unmasked.
        hidden: Widths of the MADE's hidden layers.
        activation: Builds the MADE's activations, e.g. ``nn.ReLU`` or ``nn.ELU``.
        ordering: ``"natural"``, ``"reversed"``, ``"random"`` or the ranks of the features.
        seed: Seed of a ``"random"`` ordering.
        residual: Skip connections in the MADE (equal hidden widths).
        inverse_autoregressive: Build an IAF.
        autoregressive_over: ``"features"`` (every element, flattened) or ``"channels"``
            (the channels at each position).
        clamp: Bound of the log-scales.
        clamp_activation: The soft clamp: ``"ATAN"``, ``"TANH"``, ``"SIGMOID"`` or a callable.

    References:
        Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation",
        NeurIPS 2017, arXiv:1705.07057. Kingma, Salimans, Jozefowicz, Chen, Sutskever,
        Welling, "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS
        2016, arXiv:1606.04934.

    Example:
        >>> import torch
        >>> import invgraph as ig
        >>> inn = ig.SequenceINN(3)
        >>> for k in range(2):
        ...     inn.append(ig.MaskedAffineAutoregressive, hidden=(32, 32), ordering=["natural",
        ...                "reversed"][k])
        >>> x = torch.randn(5, 3)
        >>> z, log_det = inn(x)
        >>> x_back, _ = inn(z, rev=True)
        >>> z.shape, log_det.shape, torch.allclose(x_back, x, atol=1e-5)
        (torch.Size([5, 3]), torch.Size([5]), True)
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = nn.ReLU,
        ordering: str | Sequence[int] = "natural",
        seed: int | None = None,
        residual: bool = False,
        inverse_autoregressive: bool = False,
        autoregressive_over: str = "features",
        clamp: float = 2.0,
        clamp_activation: str | ClampActivation = "ATAN",
    ):
        super().__init__(
            dims_in,
            dims_c,
            2,
            hidden,
            activation,
            ordering,
            seed,
            residual,
            inverse_autoregressive,
            autoregressive_over,
        )
        self.clamp = float(clamp)
        self.f_clamp = resolve_clamp(clamp_activation)

    def _transform(self, a: Tensor, parameters: Tensor, rev: bool) -> tuple[Tensor, Tensor]:
        log_scale = self.clamp * self.f_clamp(parameters[..., 0])
        shift = parameters[..., 1]
        if rev:
            log_scale = -log_scale
            return (a - shift) * torch.exp(log_scale), log_scale
        return a * torch.exp(log_scale) + shift, log_scale


class MaskedRationalQuadraticAutoregressive(AutoregressiveBlock):
    r"""Autoregressive neural spline flow: a rational-quadratic spline per feature.

    :math:`b_i = g_{\theta_i}(a_i)` with :math:`\theta_i = \mathrm{MADE}(a_{<i}, c)`: ``bins``
    widths, ``bins`` heights and ``bins - 1`` inner derivatives of the monotonic spline of
    :func:`~invgraph.modules.splines.rational_quadratic_spline` on :math:`[-B, B]` (the
    identity outside); :math:`\log|\det J| = \sum_i \log g'_{\theta_i}(a_i)`. The directions
    and arguments are those of :class:`MaskedAffineAutoregressive` (``inverse_autoregressive``
    makes the sampling direction the cheap one).

    Arguments:
        dims_in: One input shape (see :class:`MaskedAffineAutoregressive`).
        dims_c: Condition shapes.
        hidden: Widths of the MADE's hidden layers.
        activation: Builds the MADE's activations.
        ordering: ``"natural"``, ``"reversed"``, ``"random"`` or the ranks of the features.
        seed: Seed of a ``"random"`` ordering.
        residual: Skip connections in the MADE (equal hidden widths).
        inverse_autoregressive: The inverse (sampling) is one conditioner call.
        autoregressive_over: ``"features"`` or ``"channels"``.
        bins: Number of bins ``K`` of each spline.
        bound: :math:`B`; the spline acts on :math:`[-B, B]`, the identity elsewhere.
        min_bin_sizes: Smallest bin width and height (absolute).
        min_derivative: Smallest derivative at the knots, in (0, 1).

    References:
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.

    Example:
        >>> import torch
        >>> import invgraph as ig
        >>> block = ig.MaskedRationalQuadraticAutoregressive([(4,)], hidden=(16,), bins=6)
        >>> x = torch.randn(3, 4)
        >>> (z,), log_det = block((x,))
        >>> torch.allclose(z, x, atol=1e-5), log_det.abs().max() < 1e-5  # starts as identity
        (True, tensor(True))
    """

    _one_feature_per_pass = True  # a spline costs more than placing one column

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = nn.ReLU,
        ordering: str | Sequence[int] = "natural",
        seed: int | None = None,
        residual: bool = False,
        inverse_autoregressive: bool = False,
        autoregressive_over: str = "features",
        bins: int = 8,
        bound: float = 3.0,
        min_bin_sizes: tuple[float, float] = (1e-3, 1e-3),
        min_derivative: float = 1e-3,
    ):
        check_spline_arguments(type(self).__name__, bins, bound, min_bin_sizes, min_derivative)
        super().__init__(
            dims_in,
            dims_c,
            3 * int(bins) - 1,
            hidden,
            activation,
            ordering,
            seed,
            residual,
            inverse_autoregressive,
            autoregressive_over,
        )
        self.bins, self.bound = int(bins), float(bound)
        self.min_bin_sizes = (float(min_bin_sizes[0]), float(min_bin_sizes[1]))
        self.min_derivative = float(min_derivative)

    def _transform(self, a: Tensor, parameters: Tensor, rev: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        return rational_quadratic_spline(
            a,
            parameters[..., :k],
            parameters[..., k : 2 * k],
            parameters[..., 2 * k :],
            self.bound,
            rev,
            self.min_bin_sizes,
            self.min_derivative,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bins={self.bins}, bound={self.bound}"
