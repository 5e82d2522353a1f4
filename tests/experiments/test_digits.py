"""Regression guard for experiments/digits.py: a short run must model the digits' density
better than a Gaussian and classify them well above chance."""

from __future__ import annotations

import math

import torch

from experiments import digits


def test_categorical_baseline_of_uniform_pixels_is_log2_17():
    torch.manual_seed(0)
    values = torch.randint(0, digits.LEVELS, (20000, 1, 8, 8)).float()
    bpd = digits.categorical_bits_per_dim(values[:10000], values[10000:], smoothing=1.0)
    assert abs(bpd - math.log2(digits.LEVELS)) < 0.01


def test_untrained_flow_is_worse_than_the_baselines():
    """At initialisation the flow is the logit map and a standard normal: worse than
    uniform over the levels, so the thresholds below are met only by training."""
    torch.manual_seed(0)
    val = digits.load_split()["val"].images
    flow = digits.DigitsFlow(hidden=8, blocks_per_level=1)
    with torch.no_grad():
        assert flow.bits_per_dim(val).item() > math.log2(digits.LEVELS)  # measured 5.36


def test_quick_run_models_and_classifies_the_digits():
    torch.set_num_threads(1)
    result = digits.run(quick=True)
    gaussian = result.baseline_bpd["full-covariance Gaussian"]["test"]
    assert result.flow_bpd["test"] < min(gaussian - 0.2, 2.8)  # measured 2.51 (Gaussian 2.98)
    assert result.test_accuracy >= 0.8  # measured 0.895; chance is 0.1
    assert result.svc_accuracy["test"] > 0.95  # the data and split are the usual ones
