"""Gaussian-mode data sets: the eight-mode mixture (Ardizzone et al. 2019) and the GIN
artificial data (Sorrenson et al. 2020)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ..framework import SequenceINN
from ..modules import GLOWCouplingBlock, PermuteRandom

__all__ = [
    "EIGHT_MODES_CENTRES",
    "EIGHT_MODES_GROUPED",
    "EIGHT_MODES_SIGMA",
    "GINArtificialData",
    "ModeSamples",
    "eight_modes",
    "gin_artificial",
]

_FAR = 1.0 + math.sqrt(2.0)  # 2.4142...: the eight centres are the vertices of an octagon

EIGHT_MODES_CENTRES = torch.tensor(
    [
        [-_FAR, 1.0],
        [-1.0, _FAR],
        [1.0, _FAR],
        [_FAR, 1.0],
        [_FAR, -1.0],
        [1.0, -_FAR],
        [-1.0, -_FAR],
        [-_FAR, -1.0],
    ]
)
"""The ``(8, 2)`` mode centres of :func:`eight_modes`, clockwise from the upper left:
:math:`(\\pm(1 + \\sqrt 2), \\pm 1)` and :math:`(\\pm 1, \\pm(1 + \\sqrt 2))`, a regular
octagon whose neighbouring vertices are 2 apart."""

EIGHT_MODES_SIGMA = 0.2
"""The standard deviation of each mode of :func:`eight_modes` (isotropic)."""

EIGHT_MODES_GROUPED = (0, 0, 0, 0, 1, 1, 2, 3)
"""The coarse labelling of Ardizzone et al.: the label of each mode of
:data:`EIGHT_MODES_CENTRES`; the four upper modes share label 0, the next two label 1."""


class ModeSamples(NamedTuple):
    """Samples of :func:`eight_modes`."""

    x: Tensor
    """The points, float32 ``(n, 2)``."""
    labels: Tensor
    """The label of each point, int64 ``(n,)`` (``grouping[mode]``)."""
    modes: Tensor
    """The mode each point was drawn from, int64 ``(n,)``, an index into
    :data:`EIGHT_MODES_CENTRES`."""


def eight_modes(
    n: int,
    grouping: tuple[int, ...] | None = None,
    rng: np.random.Generator | None = None,
) -> ModeSamples:
    r"""The labelled eight-mode Gaussian mixture of Ardizzone et al.

    .. math::

        m \sim U\{0, \dots, 7\}, \qquad x \mid m \sim \mathcal N(c_m, 0.2^2 I),
        \qquad y = g(m),

    with :math:`c_m` the centres :data:`EIGHT_MODES_CENTRES` and :math:`g` the
    ``grouping``: the identity (eight classes) or a coarser map such as
    :data:`EIGHT_MODES_GROUPED` (four classes, the first made of four modes). One-hot
    labels are ``torch.nn.functional.one_hot(labels)``.

    Arguments:
        n: Number of points.
        grouping: The label of each of the eight modes; ``None`` for ``(0, 1, ..., 7)``.
        rng: The numpy generator to draw from (a fresh unseeded one when ``None``).

    Returns:
        A :class:`ModeSamples` ``(x, labels, modes)``.

    References:
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
        ICLR 2019, arXiv:1808.04730.

    Example:
        >>> import numpy as np
        >>> from invgraph.toy_data import EIGHT_MODES_GROUPED, eight_modes
        >>> x, labels, modes = eight_modes(1000, EIGHT_MODES_GROUPED, np.random.default_rng(0))
        >>> tuple(x.shape), sorted(set(labels.tolist())), bool((modes < 4).eq(labels == 0).all())
        ((1000, 2), [0, 1, 2, 3], True)
    """
    grouping = tuple(range(8)) if grouping is None else tuple(grouping)
    if len(grouping) != 8 or min(grouping) < 0:
        raise ValueError(f"eight_modes: grouping must give 8 labels >= 0, got {grouping}")
    rng = np.random.default_rng() if rng is None else rng
    modes = torch.as_tensor(rng.integers(0, 8, n), dtype=torch.int64)
    noise = torch.as_tensor(rng.normal(0.0, EIGHT_MODES_SIGMA, (n, 2)), dtype=torch.float32)
    labels = torch.tensor(grouping, dtype=torch.int64)[modes]
    return ModeSamples(EIGHT_MODES_CENTRES[modes] + noise, labels, modes)


class GINArtificialData(NamedTuple):
    """Samples of :func:`gin_artificial` and the parameters that generated them."""

    x: Tensor
    """The observed data, float32 ``(n, 10)``."""
    labels: Tensor
    """The class of each point, int64 ``(n,)``."""
    latents: Tensor
    """The true latents, float32 ``(n, 10)``: columns 0 and 1 informative, 2..9 noise."""
    class_means: Tensor
    """The ``(n_classes, 2)`` means of the informative latents."""
    class_stds: Tensor
    """The ``(n_classes, 2)`` standard deviations of the informative latents."""


def _random_subnet(c_in: int, c_out: int) -> nn.Module:
    """The mixing network's subnetworks: 10-wide, two hidden layers, PyTorch's default init."""
    return nn.Sequential(
        nn.Linear(c_in, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, c_out)
    )


def _soft_clamp_2020(u: Tensor) -> Tensor:
    """FrEIA's soft clamp of 2020 for ``clamp=2``: :math:`0.636 \\arctan(u / 2)`."""
    return 0.636 * torch.atan(u / 2.0)


def gin_artificial(
    n: int = 10_000,
    n_classes: int = 5,
    rng: np.random.Generator | None = None,
) -> GINArtificialData:
    r"""The artificial data of the GIN paper: 2 informative latents mixed into 10-D.

    For each class :math:`k`, a mean :math:`\mu_k \sim U(-5, 5)^2` and standard
    deviations :math:`\sigma_k \sim U(0.5, 3)^2` are drawn once; then for each point

    .. math::

        y \sim U\{0, \dots, K-1\}, \quad
        s \mid y \sim \mathcal N(\mu_y, \operatorname{diag} \sigma_y^2), \quad
        \epsilon \sim \mathcal N(0, 0.01^2 I_8), \quad
        x = f([s, \epsilon]),

    where :math:`f` is a randomly initialised (not trained, not identity) GLOW network:
    8 :class:`~invgraph.GLOWCouplingBlock`\ s (clamp 2, subnetworks
    ``Linear(., 10) -> ReLU -> Linear(10, 10) -> ReLU -> Linear(10, .)`` with PyTorch's
    default initialisation), each followed by a :class:`~invgraph.PermuteRandom`, as in
    the authors' code. Its soft clamp is that of the FrEIA version they used: a subnetwork
    output :math:`a` becomes the log-scale :math:`2 \cdot 0.636 \arctan(a / 2)`;
    invgraph's (and today's FrEIA's) ``"ATAN"``, :math:`2 \cdot 0.636 \arctan(a)`, would
    double the initial log-scales and mix far more strongly.

    The latents :math:`[s, \epsilon]` are returned too: a model that recovers :math:`s` up
    to permutation and component-wise monotone maps has disentangled the data.

    The network's weights are drawn from torch's generator seeded from ``rng`` inside
    :func:`torch.random.fork_rng`, so the global random state is left alone and the same
    ``rng`` seed gives the same data.

    Arguments:
        n: Number of points (the paper uses 10,000).
        n_classes: Number of classes :math:`K` (the paper uses 5).
        rng: The numpy generator to draw from (a fresh unseeded one when ``None``).

    Returns:
        A :class:`GINArtificialData` ``(x, labels, latents, class_means, class_stds)``.

    References:
        Sorrenson, Rother, Köthe, "Disentanglement by Nonlinear ICA with General
        Incompressible-flow Networks (GIN)", ICLR 2020, arXiv:2001.04872.

    Example:
        >>> import numpy as np
        >>> from invgraph.toy_data import gin_artificial
        >>> data = gin_artificial(500, rng=np.random.default_rng(0))
        >>> tuple(data.x.shape), tuple(data.latents.shape), int(data.labels.max()) < 5
        ((500, 10), (500, 10), True)
    """
    rng = np.random.default_rng() if rng is None else rng
    means = rng.uniform(-5.0, 5.0, (n_classes, 2))
    stds = rng.uniform(0.5, 3.0, (n_classes, 2))
    labels = rng.integers(0, n_classes, n)
    informative = means[labels] + rng.normal(size=(n, 2)) * stds[labels]
    noise = rng.normal(0.0, 0.01, (n, 8))
    latents = torch.as_tensor(np.concatenate([informative, noise], 1), dtype=torch.float32)
    network_seed = int(rng.integers(2**62))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(network_seed)
        mixing = SequenceINN(10)
        for k in range(8):
            mixing.append(
                GLOWCouplingBlock,
                subnet_constructor=_random_subnet,
                clamp=2.0,
                clamp_activation=_soft_clamp_2020,
            )
            mixing.append(PermuteRandom, seed=network_seed + k)
    with torch.no_grad():
        x, _ = mixing(latents, jac=False)
    return GINArtificialData(
        x,
        torch.as_tensor(labels, dtype=torch.int64),
        latents,
        torch.as_tensor(means, dtype=torch.float32),
        torch.as_tensor(stds, dtype=torch.float32),
    )
