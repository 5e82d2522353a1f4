"""The Gaussian-mode toy data: the eight-mode mixture and the GIN artificial data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invgraph.toy_data import (
    EIGHT_MODES_CENTRES,
    EIGHT_MODES_GROUPED,
    EIGHT_MODES_SIGMA,
    eight_modes,
    gin_artificial,
)


def test_eight_modes_centres_form_a_regular_octagon():
    radii = EIGHT_MODES_CENTRES.norm(dim=1)
    assert torch.allclose(radii, radii[0].expand(8))
    neighbours = (EIGHT_MODES_CENTRES - EIGHT_MODES_CENTRES.roll(1, 0)).norm(dim=1)
    assert torch.allclose(neighbours, torch.full((8,), 2.0))
    assert EIGHT_MODES_CENTRES[1].tolist() == pytest.approx([-1.0, 2.4142], abs=1e-4)


def test_eight_modes_shapes_dtypes_and_determinism():
    x, labels, modes = eight_modes(300, rng=np.random.default_rng(5))
    assert x.shape == (300, 2) and x.dtype == torch.float32
    assert labels.dtype == modes.dtype == torch.int64
    assert torch.equal(labels, modes)  # the default labelling is one class per mode
    again = eight_modes(300, rng=np.random.default_rng(5))
    assert torch.equal(x, again.x) and torch.equal(modes, again.modes)
    assert not torch.equal(x, eight_modes(300, rng=np.random.default_rng(6)).x)


def test_eight_modes_points_sit_around_their_centres_with_sigma():
    x, _, modes = eight_modes(40_000, rng=np.random.default_rng(0))
    offsets = x - EIGHT_MODES_CENTRES[modes]
    assert offsets.mean(0).abs().max() < 0.01
    assert offsets.std(0).tolist() == pytest.approx([EIGHT_MODES_SIGMA] * 2, abs=0.005)
    counts = torch.bincount(modes, minlength=8).float() / len(modes)
    assert (counts - 1 / 8).abs().max() < 0.01  # equal weights
    # Each point is nearest to its own centre (neighbours are 5 sigma from the midpoint).
    nearest = torch.cdist(x, EIGHT_MODES_CENTRES).argmin(1)
    assert (nearest == modes).float().mean() > 0.999


def test_eight_modes_grouping_maps_modes_to_labels():
    _, labels, modes = eight_modes(2000, EIGHT_MODES_GROUPED, np.random.default_rng(1))
    assert torch.equal(labels, torch.tensor(EIGHT_MODES_GROUPED)[modes])
    assert torch.bincount(labels).tolist()[0] > 900  # four of eight modes share label 0
    with pytest.raises(ValueError, match="8 labels"):
        eight_modes(10, (0, 1, 2))


@pytest.fixture(scope="module")
def gin_data():
    return gin_artificial(4000, rng=np.random.default_rng(3))


def test_gin_artificial_shapes_and_determinism(gin_data):
    assert gin_data.x.shape == gin_data.latents.shape == (4000, 10)
    assert gin_data.labels.shape == (4000,) and gin_data.labels.dtype == torch.int64
    assert set(gin_data.labels.tolist()) == set(range(5))
    assert gin_data.class_means.shape == gin_data.class_stds.shape == (5, 2)
    state = torch.random.get_rng_state()
    again = gin_artificial(4000, rng=np.random.default_rng(3))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(again.x, gin_data.x) and torch.equal(again.latents, gin_data.latents)
    other = gin_artificial(4000, rng=np.random.default_rng(4))
    assert not torch.allclose(other.x, gin_data.x)


def test_gin_artificial_latents_follow_the_class_gaussians(gin_data):
    means, stds = gin_data.class_means, gin_data.class_stds
    assert means.abs().max() <= 5 and stds.min() >= 0.5 and stds.max() <= 3
    for k in range(5):
        informative = gin_data.latents[gin_data.labels == k, :2]
        n = len(informative)
        assert (informative.mean(0) - means[k]).abs().max() < 4 * 3 / math.sqrt(n)
        assert torch.allclose(informative.std(0), stds[k], rtol=0.15)
    noise = gin_data.latents[:, 2:]
    assert noise.std(0).tolist() == pytest.approx([0.01] * 8, rel=0.1)


def test_gin_artificial_mixing_is_nonlinear_and_invertible(gin_data):
    """The data is neither the latents nor a linear map of them, yet determines them."""
    latents, x = gin_data.latents.double(), gin_data.x.double()
    assert not torch.allclose(x, latents, atol=0.1)
    design = torch.cat([latents, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(design, x).solution
    unexplained = (x - design @ solution).var(0) / x.var(0)
    assert unexplained.max() > 0.01  # a linear map of the latents misses part of the data
    assert torch.isfinite(gin_data.x).all() and gin_data.x.abs().max() < 1e4
