r"""Generative classifiers: a class-conditional Gaussian mixture in an INN's latent space.

An invertible network :math:`z = f(x)` and one Gaussian per class,
:math:`p(z \mid k) = \mathcal{N}(z; \mu_k, \operatorname{diag} \sigma_k^2)`, give the
class-conditional data densities

.. math::

    \log p(x \mid k) = \log \mathcal{N}(f(x); \mu_k, \operatorname{diag} \sigma_k^2)
    + \log |\det J_f(x)|,

and by Bayes' rule a classifier :math:`p(k \mid x) \propto p(x \mid k)\, p(k)`. The
log-det is the same for every class, so it cancels in the posterior but not in the
likelihoods. :class:`LatentMixture` trains such a model with the Information Bottleneck
loss of IB-INNs (Ardizzone et al., 2020) or the GIN objective (Sorrenson et al., 2020).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import standard_normal_log_prob
from .errors import InvGraphError
from .framework.execution import batch_log_det
from .modules.base import InvertibleModule, call_block

__all__ = ["LatentMixture"]


def _equidistant_means(n_classes: int, size: int, spread: float, like: Tensor) -> Tensor:
    """``(n_classes, size)`` means, pairwise ``spread`` apart (random ones if ``size <
    n_classes``): class ``k`` sets coordinates ``k, k + K, k + 2K, ...`` to one value."""
    if size < n_classes:
        return like.new_empty(n_classes, size).normal_() * (spread / math.sqrt(2 * size))
    repeats = size // n_classes
    pattern = torch.eye(n_classes, dtype=like.dtype, device=like.device).repeat(1, repeats)
    means = like.new_zeros(n_classes, size)
    means[:, : n_classes * repeats] = pattern * (spread / math.sqrt(2 * repeats))
    return means


class LatentMixture(nn.Module):
    r"""An INN with one learnable diagonal Gaussian per class in its latent space.

    .. math::

        \log p(x \mid y) = -\frac{1}{2} \sum_{d=1}^{D}
        \Big(\frac{z_d - \mu_{y,d}}{\sigma_{y,d}}\Big)^2 - \sum_{d=1}^{D} \log \sigma_{y,d}
        - \frac{D}{2} \log 2\pi + \log |\det J_f(x)|, \qquad z = f(x),

    with :math:`z` the network's output flattened to :math:`D` entries. Means
    ``means`` ``(K, D)`` and log-scales ``log_scales`` ``(K, D)`` are parameters (the
    log-scales a zero buffer, unit variances, when ``learn_scales=False``, as in IB-INNs).
    The means start pairwise ``init_spread`` apart, the scales at one.

    Arguments:
        inn: The network, data to latents, with one input and one output and no
            conditions: a :class:`~invgraph.GraphINN`, :class:`~invgraph.SequenceINN` or a
            block.
        n_classes: The number of classes :math:`K`.
        learn_scales: Learn the per-class diagonal scales :math:`\sigma_k` (GIN) or keep
            them at one (IB-INN).
        init_spread: The initial distance between any two class means.

    Example:
        >>> import torch, invgraph as ig
        >>> from invgraph.mixture import LatentMixture
        >>> inn = ig.SequenceINN(4)
        >>> inn.append(ig.ActNorm)
        >>> model = LatentMixture(inn, n_classes=3)
        >>> x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
        >>> model.log_prob(x, y).shape, model.class_log_posterior(x).exp().sum(1).shape
        (torch.Size([5]), torch.Size([5]))
        >>> model.ib_loss(x, y, beta=1.0).backward()
        >>> model.sample(2, y=1).shape
        torch.Size([2, 4])

    References:
        Ardizzone et al., "Training Normalizing Flows with the Information Bottleneck for
        Competitive Generative Classification", NeurIPS 2020, arXiv:2001.06448.
        Sorrenson et al., "Disentanglement by Nonlinear ICA with General
        Incompressible-flow Networks (GIN)", ICLR 2020, arXiv:2001.04872.
    """

    def __init__(
        self,
        inn: InvertibleModule,
        n_classes: int,
        *,
        learn_scales: bool = True,
        init_spread: float = 5.0,
    ):
        super().__init__()
        dims_in = [tuple(d) for d in inn.dims_in]
        dims_out = [tuple(d) for d in inn.output_dims(inn.dims_in)]
        if len(dims_in) != 1 or len(dims_out) != 1 or len(getattr(inn, "dims_c", ())) > 0:
            raise InvGraphError(
                f"LatentMixture: the network must have one input, one output and no "
                f"conditions; it has inputs {dims_in}, outputs {dims_out}, conditions "
                f"{[tuple(d) for d in getattr(inn, 'dims_c', ())]}"
            )
        if n_classes < 1:
            raise InvGraphError(f"LatentMixture: n_classes must be >= 1, got {n_classes}")
        self.inn = inn
        self.n_classes = int(n_classes)
        self.input_shape, self.latent_shape = dims_in[0], dims_out[0]
        self.size = math.prod(self.latent_shape)
        tensors = itertools.chain(inn.parameters(), inn.buffers())
        like = next((t for t in tensors if t.is_floating_point()), torch.zeros(()))
        means = _equidistant_means(self.n_classes, self.size, float(init_spread), like)
        self.means = nn.Parameter(means)
        log_scales = like.new_zeros(self.n_classes, self.size)
        if learn_scales:
            self.log_scales = nn.Parameter(log_scales)
        else:
            self.register_buffer("log_scales", log_scales)

    def _latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The flattened latents ``(B, D)`` and the log-det ``(B,)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise InvGraphError(
                f"LatentMixture: expected x of shape (batch, "
                f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}"
            )
        (z,), log_det = call_block(self.inn, (x,), rev=False, jac=True)
        return z.flatten(1), batch_log_det(x, log_det, True)

    def _log_prior(self, prior: Tensor | None, like: Tensor) -> Tensor:
        if prior is None:
            return like.new_full((self.n_classes,), -math.log(self.n_classes))
        return prior.to(like).log()

    def class_log_likelihoods(self, x: Tensor) -> Tensor:
        """:math:`\\log p(x \\mid k)` for every class, a ``(B, K)`` tensor."""
        z, log_det = self._latents(x)
        scaled = (z.unsqueeze(1) - self.means) * torch.exp(-self.log_scales)  # (B, K, D)
        log_normal = standard_normal_log_prob(scaled, event_dims=1) - self.log_scales.sum(1)
        return log_normal + log_det.unsqueeze(1)

    def log_prob(self, x: Tensor, y: Tensor) -> Tensor:
        """:math:`\\log p(x \\mid y)`, a ``(B,)`` tensor, for integer labels ``y`` ``(B,)``."""
        return self.class_log_likelihoods(x).gather(1, y.long().view(-1, 1)).squeeze(1)

    def marginal_log_prob(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """:math:`\\log p(x) = \\log \\sum_k p(k)\\, p(x \\mid k)`, a ``(B,)`` tensor.

        Arguments:
            x: The data.
            prior: :math:`p(k)`, a ``(K,)`` tensor of probabilities; uniform if left out.
        """
        log_likelihoods = self.class_log_likelihoods(x)
        return torch.logsumexp(log_likelihoods + self._log_prior(prior, x), dim=1)

    def class_log_posterior(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """:math:`\\log p(k \\mid x)` by Bayes' rule, a ``(B, K)`` tensor (its exp sums to 1).

        Arguments:
            x: The data.
            prior: :math:`p(k)`, a ``(K,)`` tensor of probabilities; uniform if left out.
        """
        log_likelihoods = self.class_log_likelihoods(x)
        return torch.log_softmax(log_likelihoods + self._log_prior(prior, x), dim=1)

    def classify(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """The most probable class of each sample, a ``(B,)`` integer tensor."""
        return self.class_log_posterior(x, prior).argmax(dim=1)

    def sample(self, n: int, y: int | Tensor, temperature: float = 1.0) -> Tensor:
        """``n`` samples :math:`x = f^{-1}(\\mu_y + T \\sigma_y \\epsilon)`,
        :math:`\\epsilon \\sim \\mathcal{N}(0, I)`; ``temperature=0`` gives
        :math:`f^{-1}(\\mu_y)`.

        Arguments:
            n: The number of samples.
            y: Their class: an ``int`` for all, or a ``(n,)`` integer tensor.
            temperature: :math:`T`, the scale of the latent noise.
        """
        labels = torch.as_tensor(y, device=self.means.device).long().expand(n)
        noise = torch.randn_like(self.means[labels])
        z = self.means[labels] + temperature * torch.exp(self.log_scales[labels]) * noise
        (x,), _ = call_block(self.inn, (z.view(n, *self.latent_shape),), rev=True, jac=False)
        return x

    def ib_loss(
        self,
        x: Tensor,
        y: Tensor,
        beta: float,
        *,
        noise_std: float = 0.0,
        prior: Tensor | None = None,
    ) -> Tensor:
        r"""The Information Bottleneck loss of IB-INNs, :math:`L_X + \beta L_Y`, a 0-dim tensor.

        .. math::

            L_X = -\frac{1}{D} \Big(\log \sum_k p(k)\, p(\tilde x \mid k)\Big), \qquad
            L_Y = -\log p(y \mid \tilde x), \qquad \tilde x = x + \epsilon,\
            \epsilon \sim \mathcal{N}(0, \sigma^2 I),

        each averaged over the batch: :math:`L_X` is the negative log-likelihood of the class
        marginal (the mixture, log-det included) per latent dimension, :math:`L_Y` the
        cross-entropy of the Bayes class posterior. :math:`\beta \to 0` is a pure density
        model, large :math:`\beta` a discriminative classifier. The paper's noise
        augmentation (the "controlled information loss" that makes the IB finite) is
        ``noise_std``, off by default. The paper's :math:`L_Y` adds :math:`\log p(y)`, a
        constant for a fixed prior, left out here; its mixture has unit scales, use
        ``learn_scales=False`` to match.

        Arguments:
            x: The data.
            y: The integer labels, ``(B,)``.
            beta: :math:`\beta`, the weight of the cross-entropy.
            noise_std: :math:`\sigma` of the Gaussian noise added to ``x``.
            prior: :math:`p(k)`, a ``(K,)`` tensor of probabilities; uniform if left out.
        """
        if noise_std > 0:
            x = x + noise_std * torch.randn_like(x)
        joint = self.class_log_likelihoods(x) + self._log_prior(prior, x)
        loss_x = -torch.logsumexp(joint, dim=1).mean() / self.size
        loss_y = F.cross_entropy(joint, y.long())  # log_softmax(joint) is the posterior
        return loss_x + beta * loss_y

    def gin_loss(self, x: Tensor, y: Tensor) -> Tensor:
        r"""The GIN objective: :math:`-\frac{1}{B} \sum_i \log p(x_i \mid y_i)`, a 0-dim tensor.

        The class-conditional negative log-likelihood with learned means and scales
        (Sorrenson et al., 2020); GIN pairs it with a volume-preserving network (e.g.
        :class:`~invgraph.GINCouplingBlock`), whose log-det is zero.
        """
        return -self.log_prob(x, y).mean()

    def extra_repr(self) -> str:
        learned = isinstance(self.log_scales, nn.Parameter)
        return f"n_classes={self.n_classes}, size={self.size}, learn_scales={learned}"
