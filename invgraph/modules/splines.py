r"""Spline couplings: rational-quadratic splines (Neural Spline Flows).

All blocks build on :class:`~invgraph.modules.coupling.CouplingBlock`, which owns the split,
the conditions and the log-det sums; each supplies only its conditioner and bijection.

The spline is the monotonic rational-quadratic spline of Durkan et al. on the box
:math:`[-B, B]^2` with identity tails: ``K`` bins with knots :math:`(x_k, y_k)`,
:math:`x_0 = y_0 = -B`, :math:`x_K = y_K = B`, and derivatives :math:`d_k > 0` at the knots,
:math:`d_0 = d_K = 1`, so the map is :math:`C^1` at :math:`\pm B`. Its parameters per
element are ``K`` unnormalised widths, ``K`` heights and ``K - 1`` inner derivatives; all
zero give uniform bins with slope 1, the identity.

:class:`CircularRationalQuadraticSpline` makes the spline periodic (one learned derivative
at both ends, :math:`d_0 = d_K`) and adds a rotation: a diffeomorphism of the circle, for
angles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvGraphError
from .base import Shape, sum_except_batch
from .coupling import CouplingBlock, StepLogDet, SubnetConstructor, subnet_constructor_or_error

__all__ = [
    "CircularRationalQuadraticSpline",
    "ElementwiseRationalQuadraticSpline",
    "RationalQuadraticSpline",
    "check_spline_arguments",
    "rational_quadratic_spline",
]


def _knots(unnormalised: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    r"""Knots ``(..., K + 1)`` from ``-B`` to ``B`` exactly, and the bin sizes ``(..., K)``.

    Bin ``k`` has size :math:`m + (2B - Km)\,\mathrm{softmax}(u)_k` (at least ``min_size``).
    """
    bins = unnormalised.shape[-1]
    sizes = min_size + (2 * bound - bins * min_size) * torch.softmax(unnormalised, dim=-1)
    inner = torch.cumsum(sizes, dim=-1)[..., :-1] - bound
    ends = torch.full_like(sizes[..., :1], bound)
    knots = torch.cat([-ends, inner, ends], dim=-1)
    return knots, knots.diff(dim=-1)


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    rev: bool = False,
    min_bin_sizes: tuple[float, float] = (1e-3, 1e-3),
    min_derivative: float = 1e-3,
    boundary_derivatives: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The monotonic rational-quadratic spline :math:`g` element-wise, with identity tails.

    In bin :math:`k`, with :math:`\xi = (x - x_k) / w_k \in [0, 1]`, :math:`s_k = h_k / w_k`
    and :math:`\sigma = s_k + (d_{k+1} + d_k - 2 s_k)\,\xi(1 - \xi)`:

    .. math::

        g(x) = y_k + \frac{h_k\,[s_k \xi^2 + d_k \xi (1 - \xi)]}{\sigma}, \qquad
        g'(x) = \frac{s_k^2\,[d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + d_k (1 - \xi)^2]}{\sigma^2},

    and :math:`g(x) = x` outside :math:`[-B, B]`. The inverse finds the bin of :math:`y` and
    solves the quadratic :math:`a \xi^2 + b \xi + c = 0` of the paper (Eqs. 6-8),
    :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`, rearranged to avoid every cancellation
    (:func:`_inverse_in_bin`). Knots: :func:`_knots` of ``widths`` and ``heights``;
    :math:`d_k = m_d + \mathrm{softplus}(u_k + \log(e^{1 - m_d} - 1))`, which is 1 at
    :math:`u_k = 0`. Everything is element-wise (``searchsorted`` and ``gather``), without
    branching on values, so it runs on any device and compiles.

    Arguments:
        x: Inputs (``y`` when ``rev``), any shape ``S``.
        widths: Unnormalised bin widths, ``S + (K,)``.
        heights: Unnormalised bin heights, ``S + (K,)``.
        derivatives: Unnormalised derivatives at the ``K - 1`` inner knots, ``S + (K - 1,)``.
        bound: :math:`B`, the half-width of the spline's box.
        rev: Compute :math:`g^{-1}` instead of :math:`g`.
        min_bin_sizes: Smallest bin width and height (absolute).
        min_derivative: Smallest derivative :math:`m_d` at the knots, in (0, 1).
        boundary_derivatives: Unnormalised derivative at both ends, ``S + (1,)``:
            :math:`d_0 = d_K` (a periodic spline, :class:`CircularRationalQuadraticSpline`),
            mapped like the inner ones. ``None``: :math:`d_0 = d_K = 1`, :math:`C^1` tails.

    Returns:
        :math:`g(x)` and :math:`\log g'(x)`, or with ``rev``, :math:`g^{-1}(y)` and
        :math:`\log (g^{-1})'(y) = -\log g'(g^{-1}(y))`; both of shape ``S``.
    """
    knots_x, w = _knots(widths, bound, min_bin_sizes[0])
    knots_y, h = _knots(heights, bound, min_bin_sizes[1])
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner = min_derivative + F.softplus(derivatives + shift)
    if boundary_derivatives is None:
        ends = torch.ones_like(widths[..., :1])
    else:
        ends = min_derivative + F.softplus(boundary_derivatives + shift)
    d = torch.cat([ends, inner, ends], dim=-1)

    inside = (x >= -bound) & (x <= bound)
    v = x.clamp(-bound, bound)  # outside values stay finite: no NaN through torch.where
    knots = knots_y if rev else knots_x
    k = torch.searchsorted(knots[..., 1:-1].contiguous(), v.unsqueeze(-1).contiguous())
    xk, yk, yk1, wk, hk, dk, dk1 = (
        t.gather(-1, k).squeeze(-1)
        for t in (knots_x, knots_y[..., :-1], knots_y[..., 1:], w, h, d[..., :-1], d[..., 1:])
    )
    s = hk / wk
    xi = _inverse_in_bin(v - yk, yk1 - v, s, dk, dk1) if rev else ((v - xk) / wk).clamp(0, 1)
    mixed = xi * (1 - xi)
    sigma = s * (xi**2 + (1 - xi) ** 2) + (dk + dk1) * mixed  # = s + (d_k+1 + d_k - 2s) mixed
    out = xk + xi * wk if rev else yk + hk * (s * xi**2 + dk * mixed) / sigma
    numerator = dk1 * xi**2 + 2 * s * mixed + dk * (1 - xi) ** 2
    log_derivative = 2 * torch.log(s) + torch.log(numerator) - 2 * torch.log(sigma)
    log_derivative = -log_derivative if rev else log_derivative
    return torch.where(inside, out, x), torch.where(inside, log_derivative, 0.0)


def check_spline_arguments(
    owner: str,
    bins: int,
    bound: float,
    min_bin_sizes: tuple[float, float],
    min_derivative: float,
) -> None:
    """Check the arguments of :func:`rational_quadratic_spline` for a block named ``owner``.

    Raises:
        InvGraphError: Unless ``bins >= 1``, ``bound > 0``, both minimum bin sizes are
            positive and leave room for ``bins`` bins in :math:`[-B, B]`, and
            ``0 < min_derivative < 1``.
    """
    if int(bins) < 1 or not bound > 0:
        raise InvGraphError(f"{owner}: needs bins >= 1 and bound > 0, got {bins}, {bound}")
    if not all(m > 0 and int(bins) * m < 2 * bound for m in min_bin_sizes):
        raise InvGraphError(
            f"{owner}: min_bin_sizes={min_bin_sizes} must be > 0 and leave room for "
            f"{bins} bins in [-{bound}, {bound}]"
        )
    if not 0 < min_derivative < 1:
        raise InvGraphError(f"{owner}: min_derivative={min_derivative} must be in (0, 1)")


def _inverse_in_bin(t0: Tensor, t1: Tensor, s: Tensor, dk: Tensor, dk1: Tensor) -> Tensor:
    r"""The root :math:`\xi \in [0, 1]` of :math:`a \xi^2 + b \xi + c = 0` for :math:`y` in a bin.

    ``t0 = y - y_k`` and ``t1 = y_{k+1} - y`` (both :math:`\ge 0`). The slopes are divided by
    their sum first (:math:`\xi` does not change; nothing overflows). With
    :math:`q = d_k t_1 - d_{k+1} t_0`: :math:`b = q + 2 s t_0`, :math:`c = -s t_0`,
    :math:`a = s (t_1 - t_0) - q`, and the discriminant is the sum of squares
    :math:`D = q^2 + 4 s^2 t_0 t_1` (no cancellation). The root is taken in the form without
    cancellation: :math:`2 s t_0 / (b + \sqrt{D})` when :math:`b \ge 0`, else
    :math:`(\sqrt{D} - b) / (2a)` (then :math:`a > 0`).
    """
    scale = s + dk + dk1
    s, dk, dk1 = s / scale, dk / scale, dk1 / scale
    q = dk * t1 - dk1 * t0
    b = q + 2 * s * t0
    root = torch.sqrt(q * q + 4 * s * s * t0 * t1)
    negative = b < 0
    # each form divides by 1 where it is not used: no 0/0 or x/0 reaches the gradients
    two_a = torch.where(negative, 2 * (s * (t1 - t0) - q), 1.0)
    b_plus_root = torch.where(negative, 1.0, b + root)
    xi = torch.where(negative, (root - b) / two_a, 2 * s * t0 / b_plus_root)
    return xi.clamp(0, 1)


class _SplineCoupling(CouplingBlock):
    """A coupling whose bijection is the rational-quadratic spline; the conditioner returns
    ``(B, C * (3K - 1), *spatial)``: per channel ``K`` widths, ``K`` heights, ``K - 1``
    derivatives."""

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None,
        split_len: float | int,
        two_sided: bool,
        bins: int,
        bound: float,
        min_bin_sizes: tuple[float, float],
        min_derivative: float,
    ):
        super().__init__(dims_in, dims_c, split_len, two_sided)
        check_spline_arguments(type(self).__name__, bins, bound, min_bin_sizes, min_derivative)
        self.bins, self.bound = int(bins), float(bound)
        self.min_bin_sizes = (float(min_bin_sizes[0]), float(min_bin_sizes[1]))
        self.min_derivative = float(min_derivative)
        self.per_element = 3 * self.bins - 1

    def _bijection(
        self, side: int, x: Tensor, theta: Tensor, rev: bool
    ) -> tuple[Tensor, StepLogDet]:
        theta = theta.reshape(x.shape[0], x.shape[1], self.per_element, *x.shape[2:])
        theta = theta.movedim(2, -1)
        k = self.bins
        y, log_derivative = rational_quadratic_spline(
            x,
            theta[..., :k],
            theta[..., k : 2 * k],
            theta[..., 2 * k :],
            self.bound,
            rev,
            self.min_bin_sizes,
            self.min_derivative,
        )
        return y, sum_except_batch(log_derivative)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bins={self.bins}, bound={self.bound}"


class RationalQuadraticSpline(_SplineCoupling):
    r"""Rational-quadratic spline coupling (Neural Spline Flows), two-sided as in FrEIA:
    :math:`y_1 = g_{\theta_1(x_2, c)}(x_1)`, :math:`y_2 = g_{\theta_2(y_1, c)}(x_2)`.

    Each element of a half goes through its own monotonic rational-quadratic spline
    :math:`g_\theta` on :math:`[-B, B]` (identity outside), whose ``3 * bins - 1`` parameters
    the subnetwork predicts from the other half and the conditions. ``subnet1`` transforms
    :math:`x_1`, ``subnet2`` transforms :math:`x_2` (FrEIA master's names). Unlike FrEIA
    master's spline, whose box and tails are learned, the box is fixed and the tails are the
    identity, as in the paper. A subnetwork that outputs zeros gives the identity.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes, ``(C_c, *spatial)`` or vectors (broadcast over space).
        subnet_constructor: ``constructor(c_in, c_out)``; builds two subnetworks.
        split_len: Channels of :math:`x_1` (fraction or count).
        bins: Number of bins ``K`` of each spline.
        bound: :math:`B`; the spline acts on :math:`[-B, B]`, the identity elsewhere.
        min_bin_sizes: Smallest bin width and height (absolute).
        min_derivative: Smallest derivative at the knots, in (0, 1).

    References:
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from invgraph.modules import RationalQuadraticSpline
        >>> _ = torch.manual_seed(0)
        >>> block = RationalQuadraticSpline([(4,)], subnet_constructor=nn.Linear, bins=8)
        >>> x = torch.randn(3, 4)
        >>> (z,), log_det = block((x,))
        >>> (x_back,), _ = block((z,), rev=True)
        >>> z.shape, log_det.shape, torch.allclose(x_back, x, atol=1e-4)
        (torch.Size([3, 4]), torch.Size([3]), True)
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        split_len: float | int = 0.5,
        bins: int = 10,
        bound: float = 3.0,
        min_bin_sizes: tuple[float, float] = (1e-3, 1e-3),
        min_derivative: float = 1e-3,
    ):
        super().__init__(
            dims_in, dims_c, split_len, True, bins, bound, min_bin_sizes, min_derivative
        )
        make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
        n = self.per_element
        self.subnet1 = make(self.split_len2 + self.condition_length, self.split_len1 * n)
        self.subnet2 = make(self.split_len1 + self.condition_length, self.split_len2 * n)

    def _conditioner(self, side: int, u: Tensor) -> Tensor:
        return self.subnet1(u) if side == 0 else self.subnet2(u)


class ElementwiseRationalQuadraticSpline(_SplineCoupling):
    r"""A learned rational-quadratic spline of every element: :math:`y_i = g_{\theta_i}(x_i)`.

    Without conditions, each element (channel and position) has its own parameters
    :math:`\theta_i`, the parameter ``spline_parameters`` of shape
    ``(C * (3 * bins - 1), *spatial)``, initialised to zero (the identity). With conditions,
    ``subnet`` predicts them from the conditions only (vector conditions are broadcast over
    space): :math:`\theta = N(c)`. The coupling base with an empty passive half.

    Arguments:
        dims_in: One input shape ``(C, ...)``.
        dims_c: Condition shapes; none for an unconditional spline.
        subnet_constructor: ``constructor(c_in, c_out)``; needed with conditions only.
        bins: Number of bins ``K`` of each spline.
        bound: :math:`B`; the spline acts on :math:`[-B, B]`, the identity elsewhere.
        min_bin_sizes: Smallest bin width and height (absolute).
        min_derivative: Smallest derivative at the knots, in (0, 1).

    References:
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.

    Example:
        >>> import torch
        >>> from invgraph.modules import ElementwiseRationalQuadraticSpline
        >>> block = ElementwiseRationalQuadraticSpline([(2, 4, 4)], bins=4)
        >>> block.spline_parameters.shape
        torch.Size([22, 4, 4])
        >>> x = torch.randn(3, 2, 4, 4)
        >>> (z,), log_det = block((x,))
        >>> torch.allclose(z, x, atol=1e-5), torch.allclose(log_det, torch.zeros(3), atol=1e-5)
        (True, True)
    """

    _passive_may_be_empty = True  # by design: no passive half, parameters or conditions drive it

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        bins: int = 10,
        bound: float = 3.0,
        min_bin_sizes: tuple[float, float] = (1e-3, 1e-3),
        min_derivative: float = 1e-3,
    ):
        super().__init__(dims_in, dims_c, 0, False, bins, bound, min_bin_sizes, min_derivative)
        outputs = self.split_len2 * self.per_element
        if self.dims_c:
            make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
            self.subnet = make(self.condition_length, outputs)
        else:
            self.spline_parameters = nn.Parameter(torch.zeros(outputs, *self.dims_in[0][1:]))

    def _conditioner(self, side: int, u: Tensor) -> Tensor:
        if self.dims_c:
            return self.subnet(u)
        return self.spline_parameters.expand(u.shape[0], *self.spline_parameters.shape)


def _wrap(x: Tensor, bound: float) -> Tensor:
    """``x`` modulo the period ``2 * bound``, into :math:`[-B, B]` (``B`` itself only by
    rounding: ``remainder`` may round a tiny negative up to the period)."""
    return torch.remainder(x + bound, 2 * bound) - bound


class CircularRationalQuadraticSpline(_SplineCoupling):
    r"""Circular rational-quadratic spline coupling for angles (Rezende et al. 2020).

    Every element of the input is an angle, a point of the circle
    :math:`\mathbb{S}^1 = [-B, B)` with period :math:`2B` (:math:`B = \pi` by default); the
    block is a diffeomorphism of the torus :math:`(\mathbb{S}^1)^D`. It is two-sided as
    :class:`RationalQuadraticSpline`: :math:`y_1 = h_{\theta_1(x_2, c)}(x_1)`, then
    :math:`y_2 = h_{\theta_2(y_1, c)}(x_2)`, where each element's map is the monotonic
    rational-quadratic spline :math:`g` on :math:`[-B, B]` (:func:`rational_quadratic_spline`)
    followed by a rotation :math:`\phi`:

    .. math::

        h(x) = \big(g(x) + \phi + B\big) \bmod 2B - B, \qquad
        \log|h'(x)| = \log g'(x).

    :math:`g` fixes :math:`\pm B`, and its derivatives there are one learned value
    :math:`d_0 = d_K > 0`, so :math:`h` and :math:`h'` agree at :math:`-B` and :math:`B`:
    :math:`h` is a :math:`C^1` bijection of the circle. The rotation (a learned shift, with
    ``rotation=True``) moves the fixed point :math:`\pm B`. Per element the subnetwork
    predicts ``3 * bins + 1`` values: ``bins`` widths, ``bins`` heights, ``bins - 1`` inner
    derivatives, the end derivative and :math:`\phi` (``3 * bins`` without rotation). The
    subnetworks see the other half as :math:`(\cos(\pi x / B), \sin(\pi x / B))`, so the
    parameters, and the whole map, are periodic in every angle (conditions are passed as
    they are). A subnetwork that outputs zeros gives the identity.

    **Inputs outside the period are wrapped**, not refused (a check would need a host
    synchronisation): the forward pass first maps each angle to :math:`[-B, B)` modulo
    :math:`2B` (this does not change the log-det), and its outputs are in :math:`[-B, B]`.
    So the round trip returns the wrapped angle, equal to the input modulo :math:`2B`; an
    angle within rounding of the seam :math:`\pm B` may come back as the other end.

    Arguments:
        dims_in: One input shape ``(C, ...)`` of angles.
        dims_c: Condition shapes, ``(C_c, *spatial)`` or vectors (broadcast over space).
        subnet_constructor: ``constructor(c_in, c_out)``; builds two subnetworks, whose
            ``c_in`` is twice the other half's channels plus the conditions'.
        split_len: Channels of :math:`x_1` (fraction or count).
        bins: Number of bins ``K`` of each spline.
        bound: :math:`B`, half the period; angles in radians: :math:`\pi`.
        rotation: Learn the rotation :math:`\phi` too.
        min_bin_sizes: Smallest bin width and height (absolute).
        min_derivative: Smallest derivative at the knots, in (0, 1).

    References:
        Rezende, Papamakarios, Racanière, Albergo, Kanwar, Shanahan, Cranmer, "Normalizing
        Flows on Tori and Spheres", ICML 2020, arXiv:2002.02428.
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.

    Example:
        >>> import math, torch
        >>> from torch import nn
        >>> from invgraph.modules import CircularRationalQuadraticSpline
        >>> _ = torch.manual_seed(0)
        >>> block = CircularRationalQuadraticSpline([(4,)], subnet_constructor=nn.Linear)
        >>> angles = (2 * torch.rand(3, 4) - 1) * math.pi
        >>> (z,), log_det = block((angles,))
        >>> (back,), _ = block((z,), rev=True)
        >>> bool(z.abs().max() <= math.pi), torch.allclose(back, angles, atol=1e-4)
        (True, True)
        >>> (wrapped,), _ = block((angles + 2 * math.pi,))  # one more turn: the same point
        >>> torch.allclose(wrapped, z, atol=1e-4)
        True
    """

    def __init__(
        self,
        dims_in: Sequence[Shape],
        dims_c: Sequence[Shape] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
        split_len: float | int = 0.5,
        bins: int = 8,
        bound: float = math.pi,
        rotation: bool = True,
        min_bin_sizes: tuple[float, float] = (1e-3, 1e-3),
        min_derivative: float = 1e-3,
    ):
        super().__init__(
            dims_in, dims_c, split_len, True, bins, bound, min_bin_sizes, min_derivative
        )
        self.rotation = bool(rotation)
        self.per_element = 3 * self.bins + int(self.rotation)
        make = subnet_constructor_or_error(type(self).__name__, subnet_constructor)
        n, c = self.per_element, self.condition_length
        self.subnet1 = make(2 * self.split_len2 + c, self.split_len1 * n)
        self.subnet2 = make(2 * self.split_len1 + c, self.split_len2 * n)

    def _conditioner(self, side: int, u: Tensor) -> Tensor:
        angles = self.split_len2 if side == 0 else self.split_len1
        phase = u[:, :angles] * (math.pi / self.bound)
        features = torch.cat([torch.cos(phase), torch.sin(phase), u[:, angles:]], dim=1)
        return self.subnet1(features) if side == 0 else self.subnet2(features)

    def _bijection(
        self, side: int, x: Tensor, theta: Tensor, rev: bool
    ) -> tuple[Tensor, StepLogDet]:
        theta = theta.reshape(x.shape[0], x.shape[1], self.per_element, *x.shape[2:])
        theta = theta.movedim(2, -1)
        k, bound = self.bins, self.bound
        x = _wrap(x, bound)
        if rev and self.rotation:
            x = _wrap(x - theta[..., 3 * k], bound)
        y, log_derivative = rational_quadratic_spline(
            x,
            theta[..., :k],
            theta[..., k : 2 * k],
            theta[..., 2 * k : 3 * k - 1],
            bound,
            rev,
            self.min_bin_sizes,
            self.min_derivative,
            boundary_derivatives=theta[..., 3 * k - 1 : 3 * k],
        )
        if not rev and self.rotation:
            y = _wrap(y + theta[..., 3 * k], bound)
        return y, sum_except_batch(log_derivative)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rotation={self.rotation}"
