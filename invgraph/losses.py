"""Sample-based losses for training invertible networks: the maximum mean discrepancy,
flow matching, and the reverse Kullback-Leibler divergence to an unnormalised density.

Ardizzone et al. train INNs for inverse problems by matching the distribution of the
network's outputs to a target with the maximum mean discrepancy (MMD) of two sets of
samples; :func:`mmd` computes it, and :func:`zero_padding` / :func:`remove_padding` build
the zero-padded inputs of their augmented-latent networks, and
:func:`augmented_forward_loss` / :func:`augmented_backward_loss` their training losses.
:func:`flow_matching_loss` trains the field of a
:class:`~invgraph.modules.ContinuousFlow` by regression, without solving its ODE.
:func:`reverse_kl` fits a flow to an unnormalised density from its own samples (Boltzmann
generators, variational inference), with :func:`effective_sample_size` to judge the fit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from ._checks import as_integer
from .distributions import FlowDensity
from .errors import InvGraphError
from .modules.continuous import ContinuousFlow

__all__ = [
    "AugmentedBackwardLoss",
    "AugmentedForwardLoss",
    "ReverseKL",
    "augmented_backward_loss",
    "augmented_forward_loss",
    "effective_sample_size",
    "flow_matching_loss",
    "mmd",
    "remove_padding",
    "reverse_kl",
    "zero_padding",
]

KernelName = Literal["inverse_multiquadric", "gaussian"]
Estimator = Literal["biased", "unbiased"]


# A tensor, not sum()'s 0 for no terms: _kernel_matrix refuses empty widths.
def _inverse_multiquadric(d2: Tensor, widths: Sequence[float]) -> Tensor:
    return cast(Tensor, sum(1.0 / (1.0 + d2 / (h * h)) for h in widths))


def _gaussian(d2: Tensor, widths: Sequence[float]) -> Tensor:
    return cast(Tensor, sum(torch.exp(d2 / (-2.0 * h * h)) for h in widths))


_KERNELS = {"inverse_multiquadric": _inverse_multiquadric, "gaussian": _gaussian}


def _squared_distances(z: Tensor) -> Tensor:
    """All pairwise squared Euclidean distances of the rows of ``z``, differentiably."""
    norms = z.pow(2).sum(dim=1)
    return (norms[:, None] + norms[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)


def mmd(
    x: Tensor,
    y: Tensor,
    kernel: KernelName | Callable[[Tensor], Tensor] = "inverse_multiquadric",
    widths: Sequence[float] = (0.05, 0.2, 0.9),
    estimator: Estimator = "unbiased",
) -> Tensor:
    r"""Squared maximum mean discrepancy between the samples ``x`` and ``y``.

    .. math::

        \mathrm{MMD}^2(x, y) = \overline{k(x_i, x_{i'})} + \overline{k(y_j, y_{j'})}
            - 2\, \overline{k(x_i, y_j)}

    where each bar is a mean over pairs. With ``kernel="inverse_multiquadric"`` (the
    multiscale kernel of Ardizzone et al. and Kruse et al.) or ``kernel="gaussian"``,

    .. math::

        k(a, b) = \sum_{h \in \text{widths}} \frac{1}{1 + \lVert a - b \rVert^2 / h^2}
        \qquad\text{or}\qquad
        k(a, b) = \sum_{h \in \text{widths}} \exp\left(-\frac{\lVert a - b \rVert^2}{2 h^2}
        \right).

    The ``"biased"`` estimator (a V-statistic) averages over all :math:`n^2`, :math:`m^2`
    and :math:`nm` pairs; it is never negative and is exactly 0 when ``x`` and ``y`` are the
    same tensor. The ``"unbiased"`` estimator (a U-statistic) leaves the :math:`i = i'` and
    :math:`j = j'` terms out of the within-sample means, dividing by :math:`n(n-1)` and
    :math:`m(m-1)`; its expectation is the population MMD², so it can be negative when both
    samples come from one distribution.

    Squared distances are :math:`\lVert a \rVert^2 + \lVert b \rVert^2 - 2 a^\top b`,
    clamped at 0: differentiable everywhere (unlike ``torch.cdist`` at 0), with no host
    synchronisation, so the loss runs on the ``meta`` device and under
    ``torch.compile(fullgraph=True)``.

    Arguments:
        x: Samples of shape ``(n, d)``.
        y: Samples of shape ``(m, d)``, of the same dtype and on the same device.
        kernel: ``"inverse_multiquadric"``, ``"gaussian"``, or a callable mapping the
            ``(n + m, n + m)`` tensor of squared distances to kernel values element-wise
            (``widths`` is then ignored).
        widths: The kernel widths :math:`h` (positive), summed over.
        estimator: ``"unbiased"`` (needs :math:`n, m \geq 2`) or ``"biased"``.

    Returns:
        A 0-dim tensor.

    References:
        Gretton et al., "A Kernel Two-Sample Test", JMLR 2012.
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730.
        Kruse et al., "Benchmarking Invertible Architectures on Inverse Problems",
        arXiv:2101.10763.

    Example:
        >>> import torch
        >>> from invgraph.losses import mmd
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(200, 2)
        >>> bool(mmd(x, x + 2.0) > 10 * mmd(x, torch.randn(200, 2)).abs())
        True
        >>> float(mmd(x, x, estimator="biased"))
        0.0
    """
    n, m = _mmd_sample_sizes(x, y, estimator)
    k = _kernel_matrix(torch.cat([x, y]), kernel, widths)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * kxy.mean()


def _mmd_sample_sizes(x: Tensor, y: Tensor, estimator: Estimator) -> tuple[int, int]:
    """``(n, m)``, after checking the shapes, the estimator and the sample sizes."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise InvGraphError(
            f"mmd: expected samples of shapes (n, d) and (m, d) with the same d, "
            f"received {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if estimator not in ("biased", "unbiased"):
        raise InvGraphError(f"mmd: estimator must be 'biased' or 'unbiased', got {estimator!r}")
    n, m = x.shape[0], y.shape[0]
    least = 2 if estimator == "unbiased" else 1
    if n < least or m < least:
        raise InvGraphError(
            f"mmd: the {estimator} estimator needs at least {least} samples on each side, "
            f"received shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return n, m


def _kernel_matrix(
    z: Tensor, kernel: KernelName | Callable[[Tensor], Tensor], widths: Sequence[float]
) -> Tensor:
    """The kernel values of all pairs of rows of ``z``, after checking the kernel's options."""
    if callable(kernel):
        return kernel(_squared_distances(z))
    if kernel not in _KERNELS:
        raise InvGraphError(
            f"mmd: kernel must be one of {sorted(_KERNELS)} or a callable, got {kernel!r}"
        )
    if len(widths) == 0 or any(h <= 0 for h in widths):
        raise InvGraphError(f"mmd: widths must be positive and not empty, got {widths!r}")
    return _KERNELS[kernel](_squared_distances(z), widths)


def zero_padding(x: Tensor, total_dim: int) -> Tensor:
    r"""Pad the features of ``x`` (shape ``(batch, d)``) with zeros to width ``total_dim``.

    .. math::

        x \mapsto (x_1, \dots, x_d, 0, \dots, 0) \in \mathbb{R}^{\text{total\_dim}}

    An INN maps :math:`\mathbb{R}^D` to itself, so when data and latents are narrower than
    the network (Ardizzone et al.'s augmented latent space) their inputs are zero-padded;
    :func:`remove_padding` cuts the padding off again.

    Arguments:
        x: A tensor of shape ``(batch, d)`` with ``d <= total_dim``.
        total_dim: The feature width of the result.

    References:
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730.

    Example:
        >>> import torch
        >>> from invgraph.losses import remove_padding, zero_padding
        >>> zero_padding(torch.ones(1, 2), 4)
        tensor([[1., 1., 0., 0.]])
        >>> remove_padding(zero_padding(torch.ones(1, 2), 4), 2)
        tensor([[1., 1.]])
    """
    if x.dim() != 2 or x.shape[1] > total_dim:
        raise InvGraphError(
            f"zero_padding: expected a tensor of shape (batch, d) with d <= {total_dim}, "
            f"received {tuple(x.shape)}"
        )
    return torch.nn.functional.pad(x, (0, total_dim - x.shape[1]))


def remove_padding(x: Tensor, dim: int) -> Tensor:
    r"""Keep the first ``dim`` features of ``x``: the inverse of :func:`zero_padding`.

    .. math::

        (x_1, \dots, x_D) \mapsto (x_1, \dots, x_{\text{dim}})

    Arguments:
        x: A tensor of shape ``(batch, D)`` with ``D >= dim``.
        dim: The number of features kept.

    Example:
        >>> import torch
        >>> from invgraph.losses import remove_padding
        >>> remove_padding(torch.arange(4.0)[None], 3)
        tensor([[0., 1., 2.]])
    """
    if x.dim() != 2 or x.shape[1] < dim:
        raise InvGraphError(
            f"remove_padding: expected a tensor of shape (batch, D) with D >= {dim}, "
            f"received {tuple(x.shape)}"
        )
    return x[:, :dim]


class AugmentedForwardLoss(NamedTuple):
    """The three forward-pass terms of an augmented-latent INN (0-dim tensors)."""

    y: Tensor
    """:math:`\\mathcal{L}_y`: mean squared error of the predicted observations."""
    z: Tensor
    """:math:`\\mathcal{L}_z`: squared MMD of :math:`(\\hat y, z)` to :math:`p(y) \\times`
    :math:`\\mathcal{N}(0, I)`."""
    padding: Tensor
    """Mean square of the padding outputs (0 without padding)."""


class AugmentedBackwardLoss(NamedTuple):
    """The backward-pass terms of an augmented-latent INN (0-dim tensors)."""

    x: Tensor
    """:math:`\\mathcal{L}_x`: squared MMD of the backward samples to the data."""
    padding: Tensor
    """Mean square of the padding part of the backward samples (0 without padding)."""


def _mean_square(t: Tensor) -> Tensor:
    return t.square().mean() if t.numel() else t.new_zeros(())


def augmented_forward_loss(
    outputs: Tensor,
    y: Tensor,
    *,
    z_dims: int,
    z_samples: Tensor | None = None,
    kernel: KernelName | Callable[[Tensor], Tensor] = "inverse_multiquadric",
    widths: Sequence[float] = (0.05, 0.2, 0.9),
    estimator: Estimator = "unbiased",
) -> AugmentedForwardLoss:
    r"""The forward training losses of an augmented-latent INN :math:`(\hat y, z, p) = f(x)`.

    The network's output, shape ``(batch, D)``, is read as ``[y_hat | z | padding]``: the
    first ``y.shape[1]`` columns predict the observation, the next ``z_dims`` are the
    latent, the rest (if any) padding. With :math:`z' \sim \mathcal{N}(0, I)` drawn
    afresh (or given as ``z_samples``) and :math:`\bot` stopping the gradient,

    .. math::

        \mathcal{L}_y = \frac{1}{B\,d_y} \sum_{i} \lVert \hat y_i - y_i \rVert^2, \qquad
        \mathcal{L}_z = \mathrm{MMD}^2\big(\{(\bot \hat y_i, z_i)\}, \{(y_i, z'_i)\}\big),
        \qquad \mathcal{L}_\mathrm{pad} = \frac{1}{B\,d_p} \sum_i \lVert p_i \rVert^2.

    :math:`\mathcal{L}_z` compares the joint of (predicted observation, latent) with the
    product of the data's observations and a standard normal, which makes :math:`z`
    independent of :math:`y`. As in the paper, its gradient with respect to
    :math:`\hat y` is blocked, so that it shapes only :math:`z` and leaves the
    prediction of :math:`y` to :math:`\mathcal{L}_y`. Weigh and sum the terms yourself,
    e.g. ``l.y * w_y + l.z * w_z + l.padding * w_pad``.

    Arguments:
        outputs: The forward output of the network, shape ``(batch, D)``.
        y: The true observations of the batch, shape ``(batch, d_y)``.
        z_dims: The width of the latent :math:`z`.
        z_samples: The :math:`\mathcal{N}(0, I)` samples to compare with, shape
            ``(m, z_dims)``; by default ``batch`` fresh ones. They are paired row by row
            with ``y``, so ``m`` must equal ``batch``.
        kernel: The MMD's kernel, see :func:`mmd`.
        widths: The kernel widths, see :func:`mmd`.
        estimator: ``"unbiased"`` or ``"biased"``, see :func:`mmd`.

    Returns:
        An :class:`AugmentedForwardLoss` ``(y, z, padding)`` of 0-dim tensors.

    References:
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730.

    Example:
        >>> import torch
        >>> from invgraph.losses import augmented_forward_loss
        >>> _ = torch.manual_seed(0)
        >>> y = torch.randn(64, 2)
        >>> outputs = torch.cat([y, torch.randn(64, 3), torch.zeros(64, 1)], dim=1)
        >>> loss = augmented_forward_loss(outputs, y, z_dims=3)
        >>> float(loss.y), float(loss.padding), bool(loss.z.abs() < 0.05)
        (0.0, 0.0, True)
    """
    batch, y_dims = _check_2d("augmented_forward_loss", "y", y, outputs.shape[0])
    if outputs.dim() != 2 or outputs.shape[1] < y_dims + z_dims or z_dims < 1:
        raise InvGraphError(
            f"augmented_forward_loss: expected outputs of shape ({batch}, D) with "
            f"D >= d_y + z_dims = {y_dims} + {z_dims} and z_dims >= 1, received "
            f"{tuple(outputs.shape)}"
        )
    y_hat, z, padding = outputs.split([y_dims, z_dims, outputs.shape[1] - y_dims - z_dims], 1)
    if z_samples is None:
        z_samples = torch.randn_like(z)
    elif tuple(z_samples.shape) != tuple(z.shape):
        raise InvGraphError(
            f"augmented_forward_loss: z_samples must have shape {tuple(z.shape)}, received "
            f"{tuple(z_samples.shape)}"
        )
    fit = (y_hat - y).square().mean()
    joint = torch.cat([y_hat.detach(), z], dim=1)
    target = torch.cat([y, z_samples], dim=1)
    latent = mmd(joint, target, kernel=kernel, widths=widths, estimator=estimator)
    return AugmentedForwardLoss(fit, latent, _mean_square(padding))


def augmented_backward_loss(
    x_rec: Tensor,
    x: Tensor,
    *,
    kernel: KernelName | Callable[[Tensor], Tensor] = "inverse_multiquadric",
    widths: Sequence[float] = (0.05, 0.2, 0.9),
    estimator: Estimator = "unbiased",
) -> AugmentedBackwardLoss:
    r"""The backward training losses of an augmented-latent INN.

    ``x_rec`` is the network run backward on ``[y | z' | 0]`` with :math:`y` observations
    of the data, :math:`z' \sim \mathcal{N}(0, I)` and zero padding (build it with
    ``torch.cat`` and :func:`zero_padding`). Its first ``x.shape[1]`` columns are the
    samples :math:`\hat x`, the rest padding:

    .. math::

        \mathcal{L}_x = \mathrm{MMD}^2\big(\{\hat x_i\}, \{x_j\}\big), \qquad
        \mathcal{L}_\mathrm{pad} = \frac{1}{B\,d_p} \sum_i \lVert p_i \rVert^2.

    :math:`\mathcal{L}_x` matches the distribution of the backward samples to the data
    distribution :math:`p(x)` (the paper's :math:`\mathcal{L}_x`, which speeds up
    training and keeps the backward samples on the data); the padding term keeps the
    padding of the backward output at zero.

    Arguments:
        x_rec: The backward output, shape ``(batch, D)``.
        x: Samples of the data, shape ``(m, d_x)`` with ``d_x <= D``.
        kernel: The MMD's kernel, see :func:`mmd`.
        widths: The kernel widths, see :func:`mmd`.
        estimator: ``"unbiased"`` or ``"biased"``, see :func:`mmd`.

    Returns:
        An :class:`AugmentedBackwardLoss` ``(x, padding)`` of 0-dim tensors.

    References:
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730.

    Example:
        >>> import torch
        >>> from invgraph.losses import augmented_backward_loss, zero_padding
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(64, 2)
        >>> loss = augmented_backward_loss(zero_padding(torch.randn(64, 2), 4), x)
        >>> float(loss.padding), bool(loss.x.abs() < 0.05)
        (0.0, True)
    """
    _, x_dims = _check_2d("augmented_backward_loss", "x", x, None)
    if x_rec.dim() != 2 or x_rec.shape[1] < x_dims:
        raise InvGraphError(
            f"augmented_backward_loss: expected x_rec of shape (batch, D) with D >= d_x = "
            f"{x_dims}, received {tuple(x_rec.shape)}"
        )
    x_hat, padding = x_rec.split([x_dims, x_rec.shape[1] - x_dims], dim=1)
    distance = mmd(x_hat, x, kernel=kernel, widths=widths, estimator=estimator)
    return AugmentedBackwardLoss(distance, _mean_square(padding))


def _check_2d(who: str, name: str, t: Tensor, batch: int | None) -> tuple[int, int]:
    if t.dim() != 2 or (batch is not None and t.shape[0] != batch):
        expected = f"({'batch' if batch is None else batch}, d)"
        raise InvGraphError(
            f"{who}: expected {name} of shape {expected}, received {tuple(t.shape)}"
        )
    return t.shape[0], t.shape[1]


def flow_matching_loss(
    flow: ContinuousFlow,
    x: Tensor,
    c: Sequence[Tensor] = (),
    noise: Tensor | None = None,
    t: Tensor | None = None,
    ot_pairing: bool = False,
) -> Tensor:
    r"""Conditional flow matching: the regression loss of a :class:`ContinuousFlow`'s field.

    Each data point :math:`x` is paired with a noise sample :math:`z \sim \mathcal N(0, I)`
    and a time :math:`t \sim U(0, 1)`; on the straight path between them the velocity is
    constant,

    .. math::

        x_t = (1 - t)\, x + t\, z, \qquad \dot x_t = z - x, \qquad
        \mathcal L = \frac{1}{B\,D} \sum_{i=1}^{B}
        \big\lVert v(x_{t_i, i}, t_i; c_i) - (z_i - x_i) \big\rVert^2 .

    The minimiser of :math:`\mathcal L` is the field whose flow carries the data
    distribution (:math:`t = 0`) to the noise (:math:`t = 1`), conditioned on :math:`c` if
    the block takes conditions (Lipman et al.; the conditional expectation of :math:`z - x`
    given :math:`x_t`): no ODE is solved during training. This is the block's own direction
    (forward: data to latent, from :math:`t = 0` to 1), so afterwards the same block gives
    log-densities (forward, with its log-det, under a standard normal latent) and samples
    (inverse of noise) like any other.

    With ``ot_pairing=True`` (Tong et al.'s OT-CFM), the noise samples of the batch are
    permuted first to the exact minibatch optimal transport plan: the permutation
    :math:`\sigma` minimising :math:`\sum_i \lVert x_i - z_{\sigma(i)} \rVert^2` (an
    assignment problem, solved exactly: by SciPy's ``linear_sum_assignment`` when SciPy is
    installed, else by the shortest-augmenting-path Hungarian algorithm written here,
    :math:`O(B^3)`, about 0.1 s for :math:`B = 256`). Paths then cross less, the field is
    straighter, and fewer solver steps suffice. The assignment runs on the CPU: it
    synchronises with the device and does not compile. The pairing ignores the conditions:
    it keeps the noise's marginal distribution, but with conditions it couples data and
    noise across conditions (Tong et al. pair within each condition instead; group the batch
    by condition yourself to do so).

    Arguments:
        flow: The :class:`~invgraph.modules.ContinuousFlow` whose field is trained.
        x: Data, ``(B, *flow.dims_in[0])``.
        c: Conditions, one tensor ``(B, *shape)`` per entry of ``flow.dims_c``.
        noise: The latent samples :math:`z`, shaped like ``x``; fresh standard normal ones
            by default.
        t: The times, ``(B,)``; fresh uniform ones in :math:`[0, 1)` by default.
        ot_pairing: Pair ``x`` and ``noise`` by the minibatch optimal transport plan.

    Returns:
        A 0-dim tensor, differentiable with respect to the field's parameters.

    Raises:
        InvGraphError: For a ``flow`` that is not a :class:`ContinuousFlow`, or tensors whose
            shapes do not match the flow's or each other's (the message names them).

    References:
        Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR
        2023, arXiv:2210.02747.
        Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio, "Improving and
        Generalizing Flow-Based Generative Models with Minibatch Optimal Transport", TMLR
        2024, arXiv:2302.00482.
        Liu, Gong, Liu, "Flow Straight and Fast: Learning to Generate and Transfer Data with
        Rectified Flow", ICLR 2023, arXiv:2209.03003 (the same straight paths).

    Example:
        >>> import torch
        >>> import invgraph as ig
        >>> from invgraph.losses import flow_matching_loss
        >>> _ = torch.manual_seed(0)
        >>> flow = ig.ContinuousFlow([(2,)], hidden=(32, 32), steps=8)
        >>> optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
        >>> for _ in range(100):  # data: N((3, -1), 0.25 I)
        ...     x = torch.randn(128, 2) * 0.5 + torch.tensor([3.0, -1.0])
        ...     loss = flow_matching_loss(flow, x)
        ...     optimizer.zero_grad()
        ...     loss.backward()
        ...     optimizer.step()
        >>> with torch.no_grad():
        ...     (samples,), _ = flow((torch.randn(2000, 2),), rev=True)
        >>> torch.allclose(samples.mean(0), torch.tensor([3.0, -1.0]), atol=0.2)
        True
    """
    name = "flow_matching_loss"
    if not isinstance(flow, ContinuousFlow):
        raise InvGraphError(f"{name}: flow must be a ContinuousFlow, got {type(flow).__name__}")
    arguments = {"x": x, "noise": noise, "t": t, **{f"condition {k}": v for k, v in enumerate(c)}}
    for label, value in arguments.items():
        if value is not None and not isinstance(value, Tensor):
            raise InvGraphError(
                f"{name}: {label} must be a tensor, got {type(value).__name__} (convert it "
                f"first, e.g. torch.as_tensor(array, dtype=torch.float32))"
            )
    shape = flow.dims_in[0]
    pattern = f"(B, {', '.join(map(str, shape))})"
    if tuple(x.shape[1:]) != shape or x.dim() != len(shape) + 1 or x.shape[0] == 0:
        raise InvGraphError(
            f"{name}: expected x of shape {pattern} with B >= 1 for a flow with dims_in "
            f"{flow.dims_in}, received {tuple(x.shape)}"
        )
    batch = x.shape[0]
    c = tuple(c)
    if len(c) != len(flow.dims_c):
        raise InvGraphError(
            f"{name}: the flow takes {len(flow.dims_c)} condition(s) of shapes {flow.dims_c}, "
            f"received {len(c)}"
        )
    for k, (condition, expected) in enumerate(zip(c, flow.dims_c)):
        if tuple(condition.shape) != (batch, *expected):
            raise InvGraphError(
                f"{name}: expected condition {k} of shape {(batch, *expected)}, received "
                f"{tuple(condition.shape)}"
            )
    if noise is None:
        noise = torch.randn_like(x)
    elif tuple(noise.shape) != tuple(x.shape):
        raise InvGraphError(
            f"{name}: noise must have the shape of x, {tuple(x.shape)}, received "
            f"{tuple(noise.shape)}"
        )
    if t is None:
        t = torch.rand(batch, dtype=x.dtype, device=x.device)
    elif tuple(t.shape) != (batch,):
        raise InvGraphError(f"{name}: expected t of shape ({batch},), received {tuple(t.shape)}")
    if ot_pairing:
        noise = noise[_ot_permutation(x, noise)]
    s = t.to(x.dtype).reshape(batch, *[1] * len(shape))
    x_t = (1 - s) * x + s * noise
    velocity = flow.velocity(x_t, t, c)
    return (velocity - (noise - x)).square().mean()


def _ot_permutation(x: Tensor, noise: Tensor) -> Tensor:
    """The permutation ``sigma`` minimising ``sum_i |x_i - noise[sigma[i]]|^2`` (exact)."""
    a, b = x.detach().flatten(1).double(), noise.detach().flatten(1).double()
    cost = (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * a @ b.T).cpu()
    return torch.as_tensor(_assignment(cost.numpy()), device=x.device)


def _assignment(cost: np.ndarray) -> np.ndarray:
    """The column of each row in a minimum-cost perfect matching of a square cost matrix.

    SciPy's ``linear_sum_assignment`` when SciPy is installed; otherwise the Hungarian
    method in its shortest-augmenting-path form with dual potentials, :math:`O(n^3)`: row
    :math:`i` joins the matching along the shortest path, in reduced costs, from it to a
    free column, found Dijkstra-style with one vectorised pass over the columns per column
    added to the tree. Exact, like SciPy's.
    """
    try:  # optional: not a dependency of invgraph
        optimize = importlib.import_module("scipy.optimize")
    except ImportError:
        return _hungarian(cost)
    rows, cols = optimize.linear_sum_assignment(cost)
    order = np.empty_like(cols)
    order[rows] = cols
    return order


def _hungarian(cost: np.ndarray) -> np.ndarray:
    """:func:`_assignment` without SciPy; columns and rows are 1-based, 0 is a sentinel."""
    n = cost.shape[0]
    u, v = np.zeros(n + 1), np.zeros(n + 1)  # dual potentials of rows and columns
    match = np.zeros(n + 1, dtype=np.int64)  # match[j]: the row of column j, 0 if free
    parent = np.zeros(n + 1, dtype=np.int64)  # the previous column on the shortest path
    for i in range(1, n + 1):
        match[0], column = i, 0
        distance = np.full(n + 1, np.inf)  # shortest reduced distances to the columns
        done = np.zeros(n + 1, dtype=bool)  # the columns in the shortest-path tree
        while True:
            done[column] = True
            row = match[column]
            free = ~done
            free[0] = False
            reduced = cost[row - 1] - u[row] - v[1:]
            closer = np.flatnonzero(free[1:] & (reduced < distance[1:])) + 1
            distance[closer] = reduced[closer - 1]
            parent[closer] = column
            candidates = np.where(free, distance, np.inf)
            column = int(np.argmin(candidates))
            step = candidates[column]
            u[match[done]] += step
            v[done] -= step
            distance[free] -= step
            if match[column] == 0:  # a free column: augment along the path
                break
        while column:
            previous = parent[column]
            match[column] = match[previous]
            column = previous
    order = np.empty(n, dtype=np.int64)
    order[match[1:] - 1] = np.arange(n)
    return order


def effective_sample_size(log_weights: Tensor, dim: int = 0) -> Tensor:
    r"""Kish's effective sample size of importance weights given by their logarithms.

    .. math::

        \mathrm{ESS} = \frac{\left(\sum_i w_i\right)^2}{\sum_i w_i^2}
        = \exp\left(2 \operatorname{logsumexp}_i \log w_i
        - \operatorname{logsumexp}_i 2 \log w_i\right),

    computed in the second form, so that weights far outside floating-point range (log-weights
    of :math:`\pm 10^4`) are fine; the weights need no normalisation. It is the absolute
    count, between 1 (one weight dominates) and :math:`n` (equal weights); divide by
    :math:`n` for the fraction that :func:`reverse_kl` reports.

    Arguments:
        log_weights: :math:`\log w_i`, a floating-point tensor with at least one entry along
            ``dim``.
        dim: The dimension of the samples; the others are kept (one ESS each).

    Returns:
        A tensor of ``log_weights``' shape without ``dim``.

    References:
        Kong, "A Note on Importance Sampling using Standardized Weights", Technical Report
        348, Department of Statistics, University of Chicago, 1992.
        Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9.3.

    Example:
        >>> import torch
        >>> from invgraph.losses import effective_sample_size
        >>> round(float(effective_sample_size(torch.zeros(100))), 3)  # equal weights: n
        100.0
        >>> float(effective_sample_size(torch.tensor([0.0, -1e4, -1e4])))  # one dominates
        1.0
    """
    if not isinstance(log_weights, Tensor) or not log_weights.is_floating_point():
        raise InvGraphError(
            f"effective_sample_size: log_weights must be a floating-point tensor, got "
            f"{getattr(log_weights, 'dtype', type(log_weights).__name__)}"
        )
    if not -log_weights.dim() <= dim < max(log_weights.dim(), 1) or (
        log_weights.dim() and log_weights.shape[dim] == 0
    ):
        raise InvGraphError(
            f"effective_sample_size: dim {dim} must index a dimension with at least one entry "
            f"of log_weights, of shape {tuple(log_weights.shape)}"
        )
    log_sum = torch.logsumexp(log_weights, dim)
    return torch.exp(2.0 * log_sum - torch.logsumexp(2.0 * log_weights, dim))


class ReverseKL(NamedTuple):
    """The result of :func:`reverse_kl`."""

    loss: Tensor
    r""":math:`\overline{\log q(x_i) - \log \tilde p(x_i)}`, a 0-dim tensor, differentiable
    with respect to the flow's parameters (the samples are reparametrised)."""
    log_weights: Tensor
    r""":math:`\log w_i = \log \tilde p(x_i) - \log q(x_i)`, detached, of shape
    ``(n, *batch_shape)``."""
    ess: Tensor
    """The effective sample size of the weights as a fraction of ``n`` (in ``(0, 1]``, 1 when
    ``q`` is the normalised target), detached, one per observation (``batch_shape``)."""


def reverse_kl(
    density_or_distribution: FlowDensity | Distribution,
    log_target: Callable[[Tensor], Tensor],
    n: int,
    c: Tensor | Sequence[Tensor] | None = None,
) -> ReverseKL:
    r"""The reverse Kullback-Leibler divergence of a flow :math:`q` to an unnormalised density.

    For :math:`\tilde p = Z p` known up to its normalisation :math:`Z` (a Boltzmann weight
    :math:`e^{-u(x)/kT}`, a posterior's likelihood times prior) and :math:`n` samples
    :math:`x_i = f^{-1}(z_i) \sim q`, :math:`z_i \sim p_Z`,

    .. math::

        \mathcal{L} = \frac{1}{n} \sum_i \big(\log q(x_i) - \log \tilde p(x_i)\big)
        \approx \mathrm{KL}(q \,\|\, p) - \log Z \;\geq\; -\log Z.

    It needs no data, only :math:`\log \tilde p` (and its gradient): the samples are
    reparametrised, so the loss differentiates through the inverse network, and
    :math:`\log q(x_i)` comes from the same inverse pass
    (:meth:`~invgraph.distributions.ConditionalFlowDistribution.rsample_and_log_prob`). Its
    minimum, :math:`-\log Z`, is reached at :math:`q = p`. The importance weights
    :math:`w_i = \tilde p(x_i) / q(x_i)` reweight :math:`q`'s samples to :math:`p`
    (unbiased expectations under :math:`p`, :math:`\log Z \approx \log \overline{w}`); their
    effective sample size tells how well :math:`q` covers :math:`p`. The reverse KL is
    mode-seeking: a low loss with a low ESS means :math:`q` missed mass of :math:`p`.

    Arguments:
        density_or_distribution: :math:`q`: a :class:`~invgraph.distributions.FlowDensity`
            with one input (given ``c``), or any ``torch.distributions`` object with
            ``rsample`` (e.g. :meth:`FlowDensity.distribution
            <invgraph.distributions.FlowDensity.distribution>`'s).
        log_target: :math:`\log \tilde p`: maps samples ``(n, *batch_shape, *event_shape)``
            to ``(n, *batch_shape)``, differentiably.
        n: The number of samples (per observation), an integer ``>= 1``.
        c: The observations for a ``FlowDensity`` (see
            :class:`~invgraph.distributions.ConditionalFlowDistribution`); a distribution
            carries its own.

    Returns:
        A :class:`ReverseKL` ``(loss, log_weights, ess)``; ``ess`` is a fraction of ``n``.

    Raises:
        InvGraphError: For a ``q`` that cannot be sampled with gradients, ``c`` given with a
            distribution, an ``n`` that is not a positive integer, a ``log_target`` that is
            not callable or returns the wrong shape (the message names the shapes).

    References:
        Rezende, Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
        arXiv:1505.05770.
        Noé, Olsson, Köhler, Wu, "Boltzmann generators: Sampling equilibrium states of
        many-body systems with deep learning", Science 365, 2019, arXiv:1812.01729.

    Example:
        >>> import torch, invgraph as ig
        >>> from invgraph.distributions import FlowDensity
        >>> from invgraph.losses import reverse_kl
        >>> inn = ig.SequenceINN(2)
        >>> inn.append(ig.PermuteRandom, seed=0)
        >>> q = FlowDensity(inn)  # the standard normal
        >>> result = reverse_kl(q, lambda x: -0.5 * x.square().sum(-1), 256)
        >>> round(float(result.loss), 4), float(result.ess)  # -log Z = -log(2 pi)
        (-1.8379, 1.0)
    """
    q = _variational_distribution(density_or_distribution, c)
    if not callable(log_target):
        raise InvGraphError(
            f"reverse_kl: log_target must be callable (samples to log-densities), got "
            f"{type(log_target).__name__}"
        )
    count = as_integer(n)
    if count is None or count < 1:
        raise InvGraphError(f"reverse_kl: n must be an integer >= 1, received {n!r}")
    if hasattr(q, "rsample_and_log_prob"):
        x, log_q = q.rsample_and_log_prob((count,))
    else:
        x = q.rsample((count,))
        log_q = q.log_prob(x)
    log_p = log_target(x)
    if not isinstance(log_p, Tensor) or log_p.shape != log_q.shape:
        raise InvGraphError(
            f"reverse_kl: log_target must return one log-density per sample, of shape "
            f"{tuple(log_q.shape)} for samples of shape {tuple(x.shape)}; got "
            f"{tuple(log_p.shape) if isinstance(log_p, Tensor) else type(log_p).__name__}"
        )
    difference = log_q - log_p
    log_weights = -difference.detach()
    ess = effective_sample_size(log_weights) / count
    return ReverseKL(difference.mean(), log_weights, ess)


def _variational_distribution(
    q: FlowDensity | Distribution, c: Tensor | Sequence[Tensor] | None
) -> Distribution:
    """``q`` as a distribution with ``rsample``: a FlowDensity given ``c``, or as given."""
    if isinstance(q, FlowDensity):
        return q.distribution(c)
    if not isinstance(q, Distribution) or not q.has_rsample:
        raise InvGraphError(
            f"reverse_kl: expected a FlowDensity or a torch.distributions object with "
            f"rsample, got {type(q).__name__}"
        )
    if c is not None:
        raise InvGraphError(
            "reverse_kl: c is for a FlowDensity; a distribution carries its own conditions "
            "(build it with FlowDensity.distribution(c))"
        )
    return q
