"""A Gaussian mixture model whose parameters arrive as conditions: a mixture density head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from ..errors import InvGraphError
from .base import InvertibleModule, Shape, full_precision, single_input

__all__ = ["GaussianMixtureModel"]

Index = Tensor | int | None
"""Which mixture component maps each sample: indices, a seed to draw them, or ``None``."""


class GaussianMixtureModel(InvertibleModule):
    r"""An invertible Gaussian mixture: :math:`z = U_k (x - \mu_k)`, the latent of component k.

    Component :math:`k` is :math:`\mathcal{N}(\mu_k, (U_k^\top U_k)^{-1})`, with :math:`U_k`
    the upper triangular Cholesky factor of its precision matrix, so that

    .. math::
        z = U_k (x - \mu_k) \sim \mathcal{N}(0, I) \text{ under component } k,
        \qquad \log|\det J| = \sum_{j=1}^{d} \log (U_k)_{jj},

    and the mixture density is
    :math:`p(x) = \sum_k w_k\, \mathcal{N}(z_k; 0, I)\, |\det U_k|`. Nothing is learned here:
    the parameters are the conditions ``c = (w, mu, U_entries[, i])``, typically predicted
    by a network and trained through :meth:`nll_loss` (a mixture density network).

    * ``w``: ``(B, K)`` component weights, positive and summing to one
      (:meth:`normalize_weights`).
    * ``mu``: ``(B, K, d)`` component means.
    * ``U_entries``: ``(B, K, d(d+1)/2)``: the first :math:`d` entries are
      :math:`\log` of the diagonal of :math:`U_k` (so it is positive), the others fill its
      strict upper triangle row by row.
    * ``i``, the component of each sample: a ``(B,)`` or ``(B, 1)`` integer tensor (e.g.
      from :meth:`pick_mixture_component`), then ``x`` and ``z`` are ``(B, d)`` and the
      log-det is ``(B,)``; or an ``int``, a seed to draw the components from ``w`` (with a
      :class:`torch.Generator`, so not on ``meta`` nor under ``torch.compile``); or
      ``None`` (or left out): every component at once. Then ``x`` is ``(B, d)`` or
      ``(B, K, d)``, ``z`` is ``(B, K, d)`` (in the inverse, ``z`` is ``(B, K, d)`` or
      ``(B, d)`` and ``x`` is ``(B, K, d)``), and the log-det is ``(B, K)``, one per
      component, as :meth:`nll_loss` takes it. This per-component log-det is the one
      exception to the ``(B,)`` rule of :class:`InvertibleModule`: use this mode for the
      loss, not inside a graph.

    Outputs, log-dets and helpers match FrEIA's (which fails in float64); the inverse
    solves the triangular system instead of inverting :math:`U_k`. Component indices are
    not range-checked (that would synchronise with the device).

    Arguments:
        dims_in: One input shape ``(d,)``.
        dims_c: The condition shapes ``[(K,), (K, d), (K, d(d+1)/2)]``, plus ``(1,)`` for
            the indices when they come from a graph's condition node; or ``None``/``[]``,
            then they are only checked when called.

    References:
        C. M. Bishop, "Mixture Density Networks", technical report NCRG/94/004, Aston
        University, 1994.

        J. Kruse, "Technical report: Training Mixture Density Networks with full
        covariance matrices", 2020, arXiv:2003.05739.

    Example:
        >>> import torch
        >>> from invgraph.modules.gaussian_mixture import GaussianMixtureModel as GMM
        >>> gmm = GMM([(2,)])
        >>> w = GMM.normalize_weights(torch.zeros(5, 3))  # 5 samples, 3 components
        >>> mu, entries = torch.randn(5, 3, 2), torch.randn(5, 3, 3)
        >>> x = torch.randn(5, 2)
        >>> (z,), log_dets = gmm((x,), c=(w, mu, entries))  # every component
        >>> tuple(z.shape), tuple(log_dets.shape), tuple(GMM.nll_loss(w, z, log_dets).shape)
        ((5, 3, 2), (5, 3), (5,))
        >>> i = GMM.pick_mixture_component(w, seed=0)
        >>> (z_i,), log_det = gmm((x,), c=(w, mu, entries, i))  # one component per sample
        >>> (x_back,), _ = gmm((z_i,), c=(w, mu, entries, i), rev=True)
        >>> tuple(z_i.shape), tuple(log_det.shape), torch.allclose(x_back, x, atol=1e-5)
        ((5, 2), (5,), True)
    """

    _layout: Tensor

    def __init__(
        self, dims_in: Sequence[Sequence[int]], dims_c: Sequence[Sequence[int]] | None = None
    ):
        super().__init__(dims_in, dims_c)
        (self.x_dims,) = self.output_dims(self.dims_in)[0]
        d = self.x_dims
        if self.dims_c:
            k = self.dims_c[0][0] if self.dims_c[0] else 0
            expected = [(k,), (k, d), (k, d * (d + 1) // 2)]
            if self.dims_c[:3] != expected or self.dims_c[3:] not in ([], [(1,)], [()]):
                raise InvGraphError(
                    f"GaussianMixtureModel: for d={d}, dims_c must be [(K,), (K, d), "
                    f"(K, d(d+1)/2)] plus optionally (1,) for the indices, e.g. {expected}; "
                    f"received {self.dims_c}"
                )
        # U_k, read row by row, is values[layout] with values = [exp(diagonal), upper, 0].
        n = d * (d + 1) // 2
        upper = iter(range(d, n))
        layout = [row if row == col else next(upper) if col > row else n
                  for row in range(d) for col in range(d)]  # fmt: skip
        self.register_buffer("_layout", torch.tensor(layout), persistent=False)

    @staticmethod
    def normalize_weights(w: Tensor) -> Tensor:
        r"""Softmax over the components: :math:`w_k = e^{v_k} / \sum_j e^{v_j}` for ``(B, K)``."""
        return torch.softmax(w, dim=-1)

    @staticmethod
    def pick_mixture_component(w: Tensor, seed: int | None = None) -> Tensor:
        """Draw one component per sample with probabilities ``w`` ``(B, K)``: ``(B,)`` indices.

        One uniform number per sample is compared with the cumulative weights, from a
        private generator on ``w``'s device: seeded with ``seed`` (the same draws as FrEIA)
        or, with ``None``, from a fresh random seed. The global random state is left alone.
        """
        generator = torch.Generator(device=w.device)
        if isinstance(seed, int):
            generator.manual_seed(seed)
        else:
            generator.seed()
        u = torch.rand(w.shape[0], 1, device=w.device, generator=generator)
        index = (u > torch.cumsum(w, dim=1)).sum(dim=1)
        return index.clamp(max=w.shape[1] - 1)  # u above a rounded-down total weight

    @staticmethod
    def nll_loss(w: Tensor, z: Tensor, log_jacobian: Tensor) -> Tensor:
        r"""Negative log-likelihood of the mixture, per sample, computed with log-sum-exp.

        .. math::
            -\log \sum_k w_k \exp\Big(-\tfrac{1}{2} \|z_k\|^2 + \log|\det U_k|\Big),

        which is :math:`-\log p(x)` up to the constant :math:`\frac{d}{2} \log 2\pi`, as in
        FrEIA, but finite where FrEIA's direct sum of exponentials underflows.

        Arguments:
            w: ``(B, K)`` component weights (zero weights are allowed).
            z: ``(B, K, d)`` latent codes under every component (the block with ``i=None``).
            log_jacobian: ``(B, K)`` per-component log-dets (the same call's log-det).
        """
        positive = w > 0
        log_w = torch.where(positive, torch.where(positive, w, 1.0).log(), -torch.inf)
        return -torch.logsumexp(log_w + log_jacobian - 0.5 * z.square().sum(dim=-1), dim=-1)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor | int | None] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:
        x, (w, mu, entries, index) = self._read(x_or_z, c)
        # in the data's dtype, also under autocast or with low-precision predicted parameters
        mu, entries, d = mu.to(x.dtype), entries.to(x.dtype), self.x_dims
        if index is None:
            x = x.unsqueeze(1) if x.dim() == 2 else x  # one point through all K components
        else:
            if not isinstance(index, Tensor):
                index = self.pick_mixture_component(w, seed=index)
            pick = index.reshape(-1, 1, 1).long()
            mu = mu.gather(1, pick.expand(-1, 1, d)).squeeze(1)
            entries = entries.gather(1, pick.expand(-1, 1, entries.shape[-1])).squeeze(1)
        zero = entries.new_zeros(*entries.shape[:-1], 1)
        values = torch.cat([entries[..., :d].exp(), entries[..., d:], zero], dim=-1)
        u = values.index_select(-1, self._layout).unflatten(-1, (d, d))
        with full_precision(x):
            if rev:
                out = mu + torch.linalg.solve_triangular(u, x.unsqueeze(-1), upper=True)[..., 0]
            else:
                out = (u @ (x - mu).unsqueeze(-1)).squeeze(-1)
        log_det = entries[..., :d].sum(dim=-1) if jac else None
        return (out,), (-log_det if rev and log_det is not None else log_det)

    def _read(
        self, x_or_z: Sequence[Tensor], c: Sequence[Tensor | int | None]
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor | int | None]]:
        """The input and ``(w, mu, U_entries, i)``, after checking every shape."""
        if len(x_or_z) != 1 or len(c) not in (3, 4):
            raise InvGraphError(
                f"GaussianMixtureModel: expects 1 input and conditions (w, mu, U_entries[, i]),"
                f" received {len(x_or_z)} input(s) and {len(c)} condition(s)"
            )
        (x,), (w, mu, entries, index) = x_or_z, (*c, None)[:4]
        # w, mu and U_entries are tensors; only i may also be a seed or None
        w, mu, entries = cast("tuple[Tensor, Tensor, Tensor]", (w, mu, entries))
        d, (batch, k) = self.x_dims, (*w.shape, -1, -1)[:2]
        received: dict[str, tuple[int, ...]]
        received = {"w": w.shape, "mu": mu.shape, "U_entries": entries.shape}
        expected = {"w": (batch, k), "mu": (batch, k, d), "U_entries": (batch, k, d * (d + 1) // 2)}
        inputs: list[tuple[int, ...]]
        inputs = [(batch, d)] if index is not None else [(batch, d), (batch, k, d)]
        if isinstance(index, Tensor):
            received["i"], expected["i"] = index.shape, (batch,) if index.dim() < 2 else (batch, 1)
            if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
                raise InvGraphError(f"GaussianMixtureModel: i must be integers, got {index.dtype}")
        received = {name: tuple(shape) for name, shape in received.items()}
        if received != expected or tuple(x.shape) not in inputs:
            raise InvGraphError(
                f"GaussianMixtureModel: for d={d}, expected input "
                f"{' or '.join(map(str, inputs))} and conditions {expected}; received input "
                f"{tuple(x.shape)} and conditions {received}"
            )
        return x, (w, mu, entries, index)

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return [single_input("GaussianMixtureModel", input_dims, ndim=(1,))]
