r"""Dequantization: continuous densities as models of discrete data.

Data :math:`v \in \{0, \dots, K-1\}^D` (pixel values, counts) has no density. Dequantization
maps it into the unit cube, :math:`x = (v + u) / K` with noise :math:`u \in [0, 1)^D`, where a
flow's density :math:`p` on :math:`[0, 1)^D` defines a discrete model through the mass of
the cell of :math:`v`,

.. math::

    P(v) = \int_{[0,1)^D} p\Big(\frac{v + u}{K}\Big) K^{-D} \, du ,

and Jensen's inequality gives a lower bound that one sample of :math:`u` estimates without
bias: for any noise density :math:`q(u \mid v)` on :math:`[0, 1)^D`,

.. math::

    \log P(v) \ge \mathbb{E}_{u \sim q(\cdot \mid v)}
        \Big[\log p\Big(\frac{v + u}{K}\Big) - D \log K - \log q(u \mid v)\Big].

Uniform noise (:math:`q = 1`, :class:`UniformDequantization`) gives Theis et al.'s bound; a
learned :math:`q` (:class:`VariationalDequantization`) tightens it (Flow++). Both modules
return ``x`` and the term to add to ``FlowDensity.log_prob(x)``; the bound in bits per
dimension is :math:`-\text{bound} / (D \ln 2)`, which for uniform noise equals
``FlowDensity.bits_per_dim(x, n_bins=K)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import standard_normal_log_prob
from .errors import InvGraphError
from .modules.base import InvertibleModule

__all__ = ["UniformDequantization", "VariationalDequantization"]


class UniformDequantization(nn.Module):
    r"""Uniform dequantization :math:`x = (v + u) / K`, :math:`u \sim \mathcal{U}[0, 1)^D`.

    ``forward(v)`` returns ``x`` and the correction :math:`-D \log K` (a ``(batch,)``
    tensor) such that ``density.log_prob(x) + correction`` is a one-sample, unbiased
    estimate of a lower bound on :math:`\log P(v)` in nats:

    .. math::

        \log P(v) \ge \mathbb{E}_u \big[\log p(x)\big] - D \log K .

    Arguments:
        n_bins: The number of levels :math:`K` (256 for 8-bit images); ``v`` holds integers
            in :math:`\{0, \dots, K-1\}` (any integer or float dtype; values are not
            checked, so that it runs on any device and compiles).

    Example:
        >>> import torch
        >>> from invgraph.dequantization import UniformDequantization
        >>> deq = UniformDequantization(256)
        >>> v = torch.randint(0, 256, (4, 3, 8, 8))
        >>> x, correction = deq(v)
        >>> bool((deq.quantize(x) == v).all()), correction.shape
        (True, torch.Size([4]))

    References:
        Theis, van den Oord, Bethge, "A note on the evaluation of generative models",
        ICLR 2016, arXiv:1511.01844.
    """

    def __init__(self, n_bins: int):
        super().__init__()
        if int(n_bins) != n_bins or n_bins < 1:
            raise InvGraphError(
                f"{type(self).__name__}: n_bins must be an integer >= 1, got {n_bins}"
            )
        self.n_bins = int(n_bins)

    def _float(self, v: Tensor) -> Tensor:
        return v if v.is_floating_point() else v.to(torch.get_default_dtype())

    def _noise(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Noise :math:`u \\in [0, 1)` shaped like ``v`` and :math:`-\\log q(u \\mid v)`."""
        return torch.rand_like(v), v.new_zeros(v.shape[0])

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``x = (v + u) / K`` and the ``(batch,)`` term to add to ``log p(x)``."""
        v = self._float(v)
        u, neg_log_q = self._noise(v)
        correction = neg_log_q - v[0].numel() * math.log(self.n_bins)
        return (v + u) / self.n_bins, correction

    def quantize(self, x: Tensor) -> Tensor:
        """The discrete values of points of :math:`[0, 1)^D` (e.g. samples): an integer
        tensor, :math:`\\lfloor K x \\rfloor` clipped to :math:`\\{0, \\dots, K-1\\}`."""
        return (x * self.n_bins).floor().clamp(0, self.n_bins - 1).long()

    def log_likelihood_bound(self, density: Any, v: Tensor, c: Any = None) -> Tensor:
        """A one-sample estimate of the lower bound on :math:`\\log P(v \\mid c)`, nats,
        ``(batch,)``; ``density`` is e.g. a :class:`~invgraph.distributions.FlowDensity`."""
        x, correction = self(v)
        return density.log_prob(x, c) + correction

    def bits_per_dim(self, density: Any, v: Tensor, c: Any = None) -> Tensor:
        """The bound as a loss: :math:`-\\text{bound} / (D \\ln 2)` averaged over the batch
        (an upper bound on the discrete negative log-likelihood in bits per dimension)."""
        bound = self.log_likelihood_bound(density, v, c)
        return -bound.mean() / (v[0].numel() * math.log(2))

    def extra_repr(self) -> str:
        return f"n_bins={self.n_bins}"


class VariationalDequantization(UniformDequantization):
    r"""Learned dequantization noise :math:`u = \sigma(g(\epsilon; v))`, :math:`\epsilon \sim
    \mathcal{N}(0, I)`, with ``flow_q`` :math:`= g` an invertible network conditioned on ``v``.

    The noise density follows from the change of variables, with :math:`y = g(\epsilon; v)`,

    .. math::

        \log q(u \mid v) = \log \mathcal{N}(\epsilon; 0, I) - \log |\det J_g(\epsilon; v)|
            - \sum_i \big(\log \sigma(y_i) + \log \sigma(-y_i)\big),

    and the correction returned with ``x`` is :math:`-D \log K - \log q(u \mid v)`. Train
    ``flow_q`` jointly with the density by maximising the bound; it is tight when :math:`q`
    is the density's own conditional :math:`p(u \mid v)`.

    Arguments:
        flow_q: An invertible network (block, SequenceINN or GraphINN) with one input and
            one condition, both of the shape of one ``v``; it receives the condition
            :math:`(v + 1/2) / K - 1/2` (cell centres, centred on 0).
        n_bins: The number of levels :math:`K`.

    Example:
        >>> import torch, invgraph as ig
        >>> from torch import nn
        >>> from invgraph.dequantization import VariationalDequantization
        >>> q = ig.ConditionalAffineTransform([(3,)], dims_c=[(3,)], subnet_constructor=nn.Linear)
        >>> deq = VariationalDequantization(q, n_bins=16)
        >>> v = torch.randint(0, 16, (5, 3))
        >>> x, correction = deq(v)
        >>> bool((deq.quantize(x) == v).all()), correction.shape
        (True, torch.Size([5]))

    References:
        Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative Models
        with Variational Dequantization and Architecture Design", ICML 2019,
        arXiv:1902.00275.
    """

    def __init__(self, flow_q: InvertibleModule, n_bins: int):
        super().__init__(n_bins)
        dims_in = [tuple(d) for d in flow_q.dims_in]
        dims_c = [tuple(d) for d in flow_q.dims_c]
        if len(dims_in) != 1 or dims_c != dims_in:
            raise InvGraphError(
                f"{type(self).__name__}: flow_q must have one input and one condition of the "
                f"same shape (that of one v); it has inputs {dims_in} and conditions {dims_c}"
            )
        self.flow_q = flow_q
        self.shape = dims_in[0]

    def _float(self, v: Tensor) -> Tensor:
        if v.is_floating_point():
            return v
        like = next(self.flow_q.parameters(), None)
        return v.to(torch.get_default_dtype() if like is None else like.dtype)

    def _noise(self, v: Tensor) -> tuple[Tensor, Tensor]:
        if tuple(v.shape[1:]) != self.shape:
            raise InvGraphError(
                f"{type(self).__name__}: expected v of shape (batch, "
                f"{', '.join(map(str, self.shape))}), got {tuple(v.shape)}"
            )
        eps = torch.randn_like(v)
        condition = (v + 0.5) / self.n_bins - 0.5
        y, log_det = self.flow_q((eps,), c=(condition,), rev=False, jac=True)
        y = y[0] if isinstance(y, (tuple, list)) else y
        log_sigmoid_grad = (F.logsigmoid(y) + F.logsigmoid(-y)).flatten(1).sum(1)
        log_q = standard_normal_log_prob(eps) - log_det - log_sigmoid_grad
        return torch.sigmoid(y), -log_q
