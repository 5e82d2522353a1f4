"""Regression guard for experiments/gin_artificial.py: a short GIN run must disentangle."""

from __future__ import annotations

import numpy as np
import torch

from experiments import gin_artificial
from invgraph.toy_data import gin_artificial as make_data


def test_spearman_of_known_orderings():
    a = np.arange(10.0)[:, None]
    both = np.hstack([a**3, -np.exp(a)])  # monotone maps of a: rank correlations +1 and -1
    assert np.allclose(gin_artificial.spearman(a, both), [[1.0, -1.0]])


def test_untrained_flow_shows_no_gap():
    """The spectrum of the data itself (the flow at initialisation) has no 10x gap: the
    threshold below is met only by training."""
    torch.manual_seed(0)
    data = make_data(2000, rng=np.random.default_rng(0))
    model = gin_artificial.build_model(gin_artificial.BLOCKS["GIN"], seed=0)
    _, gap, _, _ = gin_artificial.evaluate(model, data)
    assert gap < 5


def test_quick_gin_run_recovers_two_informative_latents():
    torch.set_num_threads(1)
    summary = gin_artificial.run(quick=True, blocks=("GIN",))["summary"]["GIN"]
    assert summary["gap"] >= gin_artificial.GAP_TARGET  # measured 84 (seed 0)
    assert summary["min_spearman"] >= 0.95  # measured 0.998
