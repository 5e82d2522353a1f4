"""The 2-D toy densities (FFJORD's data sets): shapes, seeding, the shape of each
distribution, and that their exact log-densities and entropies agree with the samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invgraph.toy_data import (
    DENSITIES_2D,
    ENTROPIES,
    TWO_MOONS_ENTROPY,
    log_density_2d,
    sample_2d,
)

NAMES = sorted(DENSITIES_2D)


def draw(name: str, n: int, seed: int = 0) -> torch.Tensor:
    return sample_2d(name, n, np.random.default_rng(seed))


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_seeding(name: str) -> None:
    x = draw(name, 1000)
    assert x.shape == (1000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, draw(name, 1000))  # same seed, same points
    assert not torch.equal(x, draw(name, 1000, seed=1))
    assert torch.equal(x, DENSITIES_2D[name](1000, np.random.default_rng(0)))
    assert sample_2d(name, 3).shape == (3, 2)  # an unseeded generator by default


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown 2-D density"):
        sample_2d("spirals", 10)
    with pytest.raises(ValueError, match="unknown 2-D density"):
        log_density_2d("spirals", torch.zeros(1, 2))


def test_entropy_table() -> None:
    assert set(ENTROPIES) == set(DENSITIES_2D)
    assert ENTROPIES["checkerboard"] == pytest.approx(math.log(32))
    assert ENTROPIES["moons"] == TWO_MOONS_ENTROPY
    # the values quoted by the reproduction's yardsticks, to 0.002
    quoted = {"checkerboard": 3.4657, "circles": 3.268, "8gaussians": 2.833, "rings": 2.622}
    for name, value in quoted.items():
        assert abs(ENTROPIES[name] - value) < 0.002, name


@pytest.mark.parametrize("name", NAMES)
def test_entropy_is_the_mean_negative_log_density(name: str) -> None:
    """Monte Carlo: H = -E log p(x). A sampler that disagrees with the density raises it by
    KL(sampler || density); a wrong entropy misses it. Standard errors are below 0.005."""
    x = draw(name, 100_000, seed=2)
    log_p = log_density_2d(name, x)
    assert log_p.dtype == torch.float64 and log_p.shape == (100_000,)
    assert abs(-log_p.mean().item() - ENTROPIES[name]) < 0.02


@pytest.mark.parametrize("name", NAMES)
def test_log_density_integrates_to_one(name: str) -> None:
    step = 0.04  # half the smallest noise: a Riemann sum of a Gaussian is exact to 1e-30
    axis = torch.arange(-6.0, 6.0, step, dtype=torch.float64) + step / 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    mass = log_density_2d(name, grid).exp().sum().item() * step**2
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_checkerboard_fills_the_dark_squares_evenly() -> None:
    x = draw("checkerboard", 80_000)
    assert x.abs().max() <= 4
    cell = torch.floor(x / 2).long()  # the 2 x 2 square of each point, in -2..1
    assert ((cell.sum(1) % 2) == 0).all()
    counts = torch.bincount((cell[:, 0] + 2) * 4 + (cell[:, 1] + 2), minlength=16)
    dark = counts[counts > 0]
    assert len(dark) == 8
    assert (dark / len(x) - 1 / 8).abs().max() < 0.01
    inside = x - 2 * cell  # uniform within its square
    assert (inside.mean(0) - 1).abs().max() < 0.01


def test_eight_gaussians_means_and_spread() -> None:
    x = draw("8gaussians", 80_000).double()
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = 4 / 1.414 * torch.stack([angle.cos(), angle.sin()], 1)
    nearest = torch.cdist(x, centres).argmin(1)
    assert (torch.bincount(nearest, minlength=8) / len(x) - 1 / 8).abs().max() < 0.01
    for k in range(8):
        mode = x[nearest == k]
        assert (mode.mean(0) - centres[k]).abs().max() < 0.02
        assert (mode.std(0) - 0.5 / 1.414).abs().max() < 0.01


@pytest.mark.parametrize(
    ("name", "radii", "noise"),
    [("circles", (1.5, 3.0), 0.24), ("rings", (0.75, 1.5, 2.25, 3.0), 0.08)],
)
def test_circles_and_rings_radii_and_noise(name: str, radii: tuple, noise: float) -> None:
    radius = draw(name, 80_000).double().norm(dim=1)
    r = torch.tensor(radii, dtype=torch.float64)
    nearest = (radius[:, None] - r).abs().argmin(1)
    assert (torch.bincount(nearest) / len(radius) - 1 / len(radii)).abs().max() < 0.01
    outer = radius[nearest == len(radii) - 1] - radii[-1]
    # radial offsets of 2-D noise around a circle: mean sigma^2 / 2r, spread sigma
    assert abs(outer.mean().item() - noise**2 / (2 * radii[-1])) < 0.005
    assert abs(outer.std().item() - noise) < 0.005
    angle = torch.atan2(*draw(name, 80_000, seed=1).double().T.flip(0))
    assert (torch.histc(angle, 8, -math.pi, math.pi) / 80_000 - 1 / 8).abs().max() < 0.01


def test_moons_mean() -> None:
    # E(cos t, sin t) = (0, 2/pi) on the upper moon, (1, 1/2 - 2/pi) on the lower one
    x = draw("moons", 80_000).double()
    assert torch.allclose(x.mean(0), torch.tensor([0.0, 0.3], dtype=torch.float64), atol=0.02)
