"""Toy data sets for examples, tutorials and tests, generated on the fly (no downloads)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["TWO_MOONS_ENTROPY", "two_moons"]

TWO_MOONS_ENTROPY = 2.392
"""Differential entropy of :func:`two_moons` in nats: the floor of any model's test NLL
(numerical integration here gives 2.396 ± 0.005)."""


def two_moons(n: int, rng: np.random.Generator | None = None) -> Tensor:
    r"""Two interleaved half circles with Gaussian noise, as FFJORD's toy data.

    A point is :math:`(\cos t, \sin t)` or :math:`(1 - \cos t, \tfrac12 - \sin t)` with
    equal probability, :math:`t \sim U(0, \pi)`, plus noise :math:`\mathcal N(0, 0.1^2 I)`,
    then scaled by 2 and shifted by :math:`(-1, -0.2)` (scikit-learn's ``make_moons`` with
    FFJORD's scaling).

    Arguments:
        n: Number of points.
        rng: The numpy generator to draw from (a fresh unseeded one when ``None``).

    Returns:
        A float32 tensor of shape ``(n, 2)``.

    Example:
        >>> import numpy as np
        >>> from invgraph.toy_data import two_moons
        >>> tuple(two_moons(100, np.random.default_rng(0)).shape)
        (100, 2)
    """
    rng = np.random.default_rng() if rng is None else rng
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    points = np.where(
        upper[:, None],
        np.stack([np.cos(t), np.sin(t)], 1),
        np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1),
    )
    points = points + rng.normal(0, 0.1, points.shape)
    return torch.as_tensor(points * 2 + [-1.0, -0.2], dtype=torch.float32)
