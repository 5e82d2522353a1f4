"""The inverse-kinematics arm (Kruse et al. 2021): forward model, joints, prior, posterior."""

from __future__ import annotations

import math

import pytest
import torch

from invgraph.losses import mmd
from invgraph.toy_data import (
    ARM_LENGTHS,
    arm_end_point,
    arm_joints,
    rejection_sample_arm_posterior,
    sample_arm_prior,
)

HALF_PI = math.pi / 2

# (x1, x2, x3, x4) -> end point, worked out by hand from the segment lengths 0.5, 0.5, 1.0.
HAND_COMPUTED = [
    ((0.0, 0.0, 0.0, 0.0), (2.0, 0.0)),  # stretched out to the right
    ((0.3, HALF_PI, 0.0, 0.0), (0.0, 2.3)),  # straight up from height 0.3
    ((0.0, math.pi, 0.0, 0.0), (-2.0, 0.0)),  # stretched out to the left
    ((0.0, 0.0, HALF_PI, 0.0), (0.5, 1.5)),  # bent up at the first elbow
    ((-0.2, HALF_PI, -HALF_PI, -HALF_PI), (0.5, -0.7)),  # up 0.5, right 0.5, down 1.0
    ((1.0, 0.0, math.pi, 0.0), (-1.0, 1.0)),  # folded back: 0.5 - 0.5 - 1.0
]


@pytest.mark.parametrize(("x", "y"), HAND_COMPUTED)
def test_end_point_of_hand_computed_arms(x, y):
    assert torch.allclose(arm_end_point(torch.tensor(x)), torch.tensor(y), atol=1e-6)


def test_end_point_formula_at_random_arms():
    x = sample_arm_prior(50, torch.Generator().manual_seed(0)).double()
    x1, x2, x3, x4 = x.T
    l1, l2, l3 = ARM_LENGTHS
    y1 = l1 * torch.cos(x2) + l2 * torch.cos(x2 + x3) + l3 * torch.cos(x2 + x3 + x4)
    y2 = x1 + l1 * torch.sin(x2) + l2 * torch.sin(x2 + x3) + l3 * torch.sin(x2 + x3 + x4)
    assert torch.allclose(arm_end_point(x), torch.stack([y1, y2], 1))


def test_joints_start_on_the_rail_have_the_segment_lengths_and_end_at_the_hand():
    x = sample_arm_prior(7 * 5, torch.Generator().manual_seed(1)).reshape(7, 5, 4)
    joints = arm_joints(x)
    assert joints.shape == (7, 5, 4, 2)
    assert torch.allclose(joints[..., 0, 0], torch.zeros(7, 5))
    assert torch.allclose(joints[..., 0, 1], x[..., 0])
    lengths = (joints[..., 1:, :] - joints[..., :-1, :]).norm(dim=-1)
    assert torch.allclose(lengths, torch.tensor(ARM_LENGTHS).expand(7, 5, 3), atol=1e-6)
    assert torch.allclose(joints[..., -1, :], arm_end_point(x), atol=1e-6)
    assert arm_end_point(x).shape == (7, 5, 2)


def test_prior_moments_and_reproducibility():
    x = sample_arm_prior(200_000, torch.Generator().manual_seed(2))
    assert x.shape == (200_000, 4) and x.dtype == torch.float32
    assert torch.allclose(x.mean(0), torch.zeros(4), atol=0.005)
    assert torch.allclose(x.std(0), torch.tensor([0.25, 0.5, 0.5, 0.5]), atol=0.005)
    again = sample_arm_prior(200_000, torch.Generator().manual_seed(2))
    assert torch.equal(x, again)


def test_posterior_samples_resimulate_near_the_observation():
    generator = torch.Generator().manual_seed(3)
    y_star = arm_end_point(sample_arm_prior(6, generator))
    width = 0.01
    post = rejection_sample_arm_posterior(y_star, 300, width=width, generator=generator)
    assert post.x.shape == (6, 300, 4)
    assert ((post.acceptance_rate > 0) & (post.acceptance_rate < 1)).all()
    residual = (arm_end_point(post.x) - y_star[:, None]).square().sum(-1)
    # E||f(x) - y*||^2 is 2 sigma^2 (slightly less: the rail height absorbs part of it).
    assert 0.7 * 2 * width**2 < residual.mean() < 1.2 * 2 * width**2
    assert residual.max().sqrt() < 7 * width
    # Many different arms reach each point: the posterior is spread, not a single arm.
    assert (post.x[..., 1:].std(dim=1) > 0.05).all()


def test_posterior_matches_brute_force_rejection():
    """The sampler integrates the rail height out analytically; plain rejection sampling of
    whole prior draws (accepted with the Gaussian likelihood) must give the same posterior."""
    generator = torch.Generator().manual_seed(4)
    y_star, width, n = torch.tensor([[1.8, 0.5]]), 0.05, 4000
    x = sample_arm_prior(1_000_000, generator)
    likelihood = torch.exp(-(arm_end_point(x) - y_star).square().sum(-1) / (2 * width**2))
    brute_force = x[torch.rand(len(x), generator=generator) < likelihood]
    assert len(brute_force) > n  # about 12,000
    brute_force = brute_force[:n]
    sampled = rejection_sample_arm_posterior(y_star, n, width=width, generator=generator).x[0]
    # Standard errors of the means are about 0.01 here, of the standard deviations 1-2 %.
    assert torch.allclose(sampled.mean(0), brute_force.mean(0), atol=0.03)
    assert torch.allclose(sampled.std(0), brute_force.std(0), rtol=0.06)
    prior = sample_arm_prior(1000, generator)
    assert mmd(sampled[:1000], brute_force[:1000]) < 0.003  # measured 0.0004
    assert mmd(prior, brute_force[:1000]) > 0.05  # measured 0.08: the test can tell


def test_posterior_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        rejection_sample_arm_posterior(torch.zeros(3), 10)
    with pytest.raises(ValueError, match="width"):
        rejection_sample_arm_posterior(torch.zeros(1, 2), 10, width=0.0)
