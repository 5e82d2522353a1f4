r"""The inverse-kinematics arm of Kruse et al. (2021): a prismatic joint and three angles.

An arm starts on a vertical rail at height :math:`x_1` and has three segments of lengths
:math:`l = (0.5, 0.5, 1.0)` joined at the angles :math:`x_2, x_3, x_4` (each relative to the
previous segment). The observation :math:`y \in \mathbb R^2` is where its hand ends up. Many
arms reach the same point, so the posterior :math:`p(x \mid y^*)` is a spread-out, often
bimodal distribution: the benchmark for conditional generative models of

    Kruse, Ardizzone, Rother, Köthe, "Benchmarking Invertible Architectures on Inverse
    Problems", arXiv:2101.10763.

:func:`sample_arm_prior` draws parameters, :func:`arm_end_point` is the forward model
:math:`y = f(x)`, :func:`arm_joints` gives the joint positions (for drawing arms) and
:func:`rejection_sample_arm_posterior` draws ground-truth posterior samples.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ARM_LENGTHS",
    "ARM_PRIOR_STD",
    "ArmPosteriorSamples",
    "arm_end_point",
    "arm_joints",
    "rejection_sample_arm_posterior",
    "sample_arm_prior",
]

ARM_PRIOR_STD = (0.25, 0.5, 0.5, 0.5)
"""Standard deviations of the independent Gaussian prior of :math:`(x_1, x_2, x_3, x_4)`."""

ARM_LENGTHS = (0.5, 0.5, 1.0)
"""Lengths :math:`l_1, l_2, l_3` of the arm's three segments."""


def sample_arm_prior(n: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Draw ``n`` arm configurations from the prior.

    .. math::

        x \sim \mathcal N\big(0, \operatorname{diag}(0.25^2, 0.5^2, 0.5^2, 0.5^2)\big):

    :math:`x_1` is the height of the arm's start on the rail, :math:`x_2, x_3, x_4` are the
    joint angles in radians.

    Arguments:
        n: Number of samples.
        generator: The torch generator to draw from (the global one when ``None``).

    Returns:
        A float32 tensor of shape ``(n, 4)``.

    References:
        Kruse et al., "Benchmarking Invertible Architectures on Inverse Problems",
        arXiv:2101.10763.

    Example:
        >>> import torch
        >>> from invgraph.toy_data import sample_arm_prior
        >>> x = sample_arm_prior(100_000, torch.Generator().manual_seed(0))
        >>> [round(s, 2) for s in x.std(0).tolist()]
        [0.25, 0.5, 0.5, 0.5]
    """
    return torch.randn(n, 4, generator=generator) * torch.tensor(ARM_PRIOR_STD)


def arm_joints(x: Tensor) -> Tensor:
    r"""The four joint positions of the arms ``x``: the start on the rail, two elbows, the hand.

    With :math:`\phi_k = x_2 + \dots + x_{k+1}` the absolute angle of segment :math:`k`,

    .. math::

        p_0 = (0, x_1), \qquad
        p_k = p_{k-1} + l_k (\cos \phi_k, \sin \phi_k), \quad k = 1, 2, 3.

    Arguments:
        x: Arm parameters, shape ``(..., 4)``.

    Returns:
        The joints :math:`p_0, \dots, p_3`, shape ``(..., 4, 2)``; draw an arm with
        ``plt.plot(*arm_joints(x).T)`` for one ``x`` of shape ``(4,)``.

    Example:
        >>> import torch
        >>> from invgraph.toy_data import arm_joints
        >>> arm_joints(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # stretched out horizontally
        tensor([[0.0000, 1.0000],
                [0.5000, 1.0000],
                [1.0000, 1.0000],
                [2.0000, 1.0000]])
    """
    lengths = torch.tensor(ARM_LENGTHS, dtype=x.dtype, device=x.device)
    angles = torch.cumsum(x[..., 1:], dim=-1)
    segments = lengths[:, None] * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    start = torch.stack([torch.zeros_like(x[..., 0]), x[..., 0]], dim=-1)[..., None, :]
    return torch.cat([start, start + segments.cumsum(dim=-2)], dim=-2)


def arm_end_point(x: Tensor) -> Tensor:
    r"""The forward model :math:`y = f(x)`: where the hand of the arm ``x`` ends up.

    .. math::

        y_1 = l_1 \cos x_2 + l_2 \cos(x_2 + x_3) + l_3 \cos(x_2 + x_3 + x_4), \\
        y_2 = x_1 + l_1 \sin x_2 + l_2 \sin(x_2 + x_3) + l_3 \sin(x_2 + x_3 + x_4),

    with :math:`l = (0.5, 0.5, 1.0)` (:data:`ARM_LENGTHS`).

    Arguments:
        x: Arm parameters, shape ``(..., 4)``.

    Returns:
        The end points, shape ``(..., 2)``.

    References:
        Kruse et al., "Benchmarking Invertible Architectures on Inverse Problems",
        arXiv:2101.10763.

    Example:
        >>> import math, torch
        >>> from invgraph.toy_data import arm_end_point
        >>> arm_end_point(torch.tensor([0.5, 0.0, 0.0, 0.0]))  # stretched out to the right
        tensor([2.0000, 0.5000])
        >>> bool(arm_end_point(torch.tensor([0.5, math.pi / 2, 0.0, 0.0])).allclose(
        ...     torch.tensor([0.0, 2.5]), atol=1e-6))  # straight up
        True
    """
    reach, lift = _hand_offset(x[..., 1], x[..., 2], x[..., 3])
    return torch.stack([reach, x[..., 0] + lift], dim=-1)


def _hand_offset(x2: Tensor, x3: Tensor, x4: Tensor) -> tuple[Tensor, Tensor]:
    """The hand's position relative to the arm's start on the rail, from the three angles."""
    l1, l2, l3 = ARM_LENGTHS
    phi1, phi2, phi3 = x2, x2 + x3, x2 + x3 + x4
    reach = l1 * torch.cos(phi1) + l2 * torch.cos(phi2) + l3 * torch.cos(phi3)
    lift = l1 * torch.sin(phi1) + l2 * torch.sin(phi2) + l3 * torch.sin(phi3)
    return reach, lift


class ArmPosteriorSamples(NamedTuple):
    """What :func:`rejection_sample_arm_posterior` returns."""

    x: Tensor
    """The accepted posterior samples, shape ``(B, n, 4)``."""
    acceptance_rate: Tensor
    """Per observation, samples accepted over prior samples proposed (including those
    accepted beyond ``n`` in the last round), shape ``(B,)``."""


def rejection_sample_arm_posterior(
    y_star: Tensor,
    n: int,
    *,
    width: float = 0.005,
    generator: torch.Generator | None = None,
    proposals_per_round: int = 200_000,
) -> ArmPosteriorSamples:
    r"""Ground-truth posterior samples :math:`x \sim p(x \mid y^*)` by rejection sampling.

    The observation is modelled as :math:`y^* = f(x) + \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, \sigma^2 I)` with a narrow width :math:`\sigma`
    (``width``), so that

    .. math::

        p(x \mid y^*) \propto p(x)\, \exp\!\Big(-\frac{\lVert f(x) - y^* \rVert^2}
            {2 \sigma^2}\Big),

    which tends to :math:`p(x \mid f(x) = y^*)` as :math:`\sigma \to 0`; its samples
    re-simulate to within :math:`\mathbb E \lVert f(x) - y^* \rVert^2 \lesssim 2 \sigma^2`.

    Rejection sampling from the prior accepts :math:`x \sim p(x)` with probability
    :math:`\exp(-\lVert f(x) - y^* \rVert^2 / 2\sigma^2)`. The rail height enters
    :math:`f` additively, :math:`f(x) = (u(x'), x_1 + v(x'))` with :math:`x' = (x_2, x_3,
    x_4)` and :math:`x_1 \sim \mathcal N(0, s^2)`, :math:`s = 0.25`, so it is integrated
    out exactly, which accepts far more often and gives the same posterior:

    .. math::

        p(x' \mid y^*) \propto p(x')\,
            \exp\!\Big(-\frac{(u - y^*_1)^2}{2 \sigma^2}\Big)
            \exp\!\Big(-\frac{(y^*_2 - v)^2}{2 (s^2 + \sigma^2)}\Big), \qquad
        x_1 \mid x', y^* \sim \mathcal N\Big(\frac{s^2 (y^*_2 - v)}{s^2 + \sigma^2},
            \frac{s^2 \sigma^2}{s^2 + \sigma^2}\Big).

    So angles :math:`x' \sim p(x')` are proposed in rounds of ``proposals_per_round``, each
    accepted for observation :math:`b` with the probability given by the two exponentials
    (both at most 1), and the accepted ones get a rail height :math:`x_1` drawn from its
    Gaussian. Proposals with :math:`|u - y^*_1| \geq 6 \sigma` (acceptance below
    :math:`1.6 \cdot 10^{-8}`) are rejected without a draw. Every round serves all
    observations at once, each observation keeps its first ``n`` accepted samples, and the
    rounds go on until every observation has ``n``: observations the arm barely reaches
    (small :math:`p(y^*)`) take longest.

    Arguments:
        y_star: The observations, shape ``(B, 2)``.
        n: Number of posterior samples per observation.
        width: :math:`\sigma`, the standard deviation of the Gaussian likelihood.
        generator: The torch generator to draw from (the global one when ``None``).
        proposals_per_round: Angles drawn per round (memory grows as
            ``B * proposals_per_round`` booleans).

    Returns:
        An :class:`ArmPosteriorSamples` ``(x, acceptance_rate)``, ``x`` of shape
        ``(B, n, 4)`` in float32.

    References:
        Kruse et al., "Benchmarking Invertible Architectures on Inverse Problems",
        arXiv:2101.10763 (the ground truth of their inverse-kinematics benchmark).

    Example:
        >>> import torch
        >>> from invgraph.toy_data import arm_end_point, rejection_sample_arm_posterior
        >>> y_star = torch.tensor([[1.8, 0.5], [1.6, 0.8]])
        >>> post = rejection_sample_arm_posterior(
        ...     y_star, 100, width=0.01, generator=torch.Generator().manual_seed(0))
        >>> post.x.shape
        torch.Size([2, 100, 4])
        >>> residual = arm_end_point(post.x) - y_star[:, None]
        >>> bool(residual.square().sum(-1).mean() < 2 * 0.01**2 * 1.5)
        True
    """
    if y_star.dim() != 2 or y_star.shape[1] != 2 or n < 1 or width <= 0:
        raise ValueError(
            f"rejection_sample_arm_posterior: expected y_star of shape (B, 2), n >= 1 and "
            f"width > 0, received shape {tuple(y_star.shape)}, n={n}, width={width}"
        )
    y_star = y_star.to(torch.float32)
    batch = y_star.shape[0]
    prior_std = torch.tensor(ARM_PRIOR_STD)
    rail_var, noise_var = ARM_PRIOR_STD[0] ** 2, width**2
    samples = torch.zeros(batch, n, 4)
    counts = torch.zeros(batch, dtype=torch.long)  # accepted so far, may exceed n
    proposed = torch.zeros(batch, dtype=torch.long)
    while (active := (counts < n).nonzero().squeeze(1)).numel():
        angles = torch.randn(3, proposals_per_round, generator=generator) * prior_std[1:, None]
        reach, lift = _hand_offset(*angles)
        target = y_star[active]
        near = (reach - target[:, :1]).abs() < 6.0 * width  # (active, proposals)
        rows, columns = near.nonzero(as_tuple=True)  # sorted by row, then column
        log_accept = (reach[columns] - target[rows, 0]).square() / (-2.0 * noise_var) + (
            target[rows, 1] - lift[columns]
        ).square() / (-2.0 * (rail_var + noise_var))
        keep = torch.rand(rows.shape, generator=generator) < log_accept.exp()
        rows, columns = rows[keep], columns[keep]
        rail_mean = rail_var * (target[rows, 1] - lift[columns]) / (rail_var + noise_var)
        rail_std = (rail_var * noise_var / (rail_var + noise_var)) ** 0.5
        rail = rail_mean + rail_std * torch.randn(rows.shape, generator=generator)
        accepted = torch.cat([rail[:, None], angles[:, columns].T], dim=1)
        # Rank of each accepted sample among its observation's accepted ones so far.
        per_row = torch.bincount(rows, minlength=active.numel())
        first_of_row = torch.cumsum(per_row, 0) - per_row
        rank = torch.arange(rows.numel()) - first_of_row[rows] + counts[active][rows]
        fits = rank < n
        samples[active[rows[fits]], rank[fits]] = accepted[fits]
        proposed[active] += proposals_per_round
        counts[active] += per_row
    return ArmPosteriorSamples(samples, counts / proposed)
