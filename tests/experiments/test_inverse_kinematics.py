"""Regression guard for ``experiments/inverse_kinematics.py`` (Kruse et al. 2021).

A small cINN trained for a few seconds must sample the arm's posterior far better than a
model that ignores the observation, on a handful of the fixture's observations.
"""

from __future__ import annotations

import torch

from experiments import inverse_kinematics as ik
from invgraph.toy_data import arm_end_point, sample_arm_prior


def test_fixture_is_what_the_docs_say():
    y_star, truth = ik.load_fixture()
    assert y_star.shape == (100, 2) and truth.shape == (100, 500, 4)
    assert truth.dtype == torch.float32
    # The observations are prior samples pushed through f, from the documented seed.
    expected = arm_end_point(sample_arm_prior(100, torch.Generator().manual_seed(2101)))
    assert torch.allclose(y_star, expected)
    # Likelihood width 0.002: the samples re-simulate to about 2 * 0.002^2.
    err_post, err_resim = ik.posterior_errors(truth[:, :250], y_star, truth[:, 250:])
    assert abs(err_post) < 0.002
    assert err_resim < 2 * 0.002**2 * 1.3


def test_quick_cinn_beats_a_model_that_ignores_y():
    result = ik.run(quick=True)
    cinn_post, cinn_resim = result.errors("cINN")
    prior_post, prior_resim = result.errors("prior (ignores y)")
    assert prior_post > 0.15 and prior_resim > 1.0  # the baseline is what it should be
    assert cinn_post < 0.5 * prior_post  # measured 0.071 against 0.29
    assert cinn_resim < 0.05 * prior_resim  # measured 0.008 against 2.7
    # 50 steps teach the augmented INN to hit y*, not yet the posterior's shape.
    _, inn_resim = result.errors("augmented INN")
    assert inn_resim < 0.25 * prior_resim  # measured 0.31 against 2.7
