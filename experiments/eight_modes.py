"""Reproduce the eight-mode Gaussian mixture of Ardizzone et al., "Analyzing Inverse Problems
with Invertible Neural Networks", ICLR 2019, arXiv:1808.04730 (Section 4.1).

Protocol:

* Data: :func:`invgraph.toy_data.eight_modes`, eight 2-D Gaussians (sigma 0.2, equal
  weights) on a regular octagon, fresh samples every step. Two labellings: one label per
  mode ("8 labels"), and the paper's coarse one, :data:`~invgraph.toy_data.EIGHT_MODES_GROUPED`
  = (0, 0, 0, 0, 1, 1, 2, 3) ("grouped"), where label 0 covers four modes and label 1 two.
  The label y is one-hot.
* Model: an augmented-latent INN on 16 dimensions: ``[x, 0]`` (x zero-padded,
  :func:`~invgraph.losses.zero_padding`) -> ``[y_hat, z, padding]`` with a 2-D latent z;
  8 :class:`~invgraph.GLOWCouplingBlock` (clamp 2, subnetworks 128 -> 128 with ReLU, last
  layer zero) each followed by a :class:`~invgraph.PermuteRandom`.
* Losses (weights as in the authors' toy code): forward, MSE of y_hat (300), MMD of
  (y_hat, z) against (y, N(0, I)) (300) and the padding outputs' mean square (300), all from
  :func:`~invgraph.losses.augmented_forward_loss`; backward, the INN run in reverse on
  ``[y, z', 0]`` with z' ~ N(0, I): MMD of the samples against x (400, ramped in over the
  first half of training) and their padding (300), from
  :func:`~invgraph.losses.augmented_backward_loss`; and, as in the authors' code, the
  reconstruction of x from ``[y, z + 0.03 eps, 0]``, z the forward latent (MSE, 150). MMDs
  use the inverse multiquadric kernel with widths (0.2, 0.5, 0.9, 1.3) of that code,
  unbiased estimator. Adam, one-cycle schedule up to 2e-3, gradient norm clipped at 10,
  1500 steps of 256 points.
* Metrics on 8000 fresh points / backward samples, whose exact values are known: forward
  label accuracy (argmax of y_hat; target >= 99 %); the share of backward samples, drawn
  for labels in their data proportions, within 0.6 (3 sigma) of a centre of their label
  (target >= 95 %; an exact sampler gets 1 - exp(-4.5) = 98.9 %); for grouped labels, the
  share of each mode among its label's backward samples (nearest centre), against the
  exact 1 / (number of modes of the label) (target: within +-5 points).

Run from the repository root::

    python -m experiments.eight_modes          # about 6 minutes of CPU time, one thread
    python -m experiments.eight_modes --quick  # the regression guard's budget

It prints a Markdown table with the targets beside the measured values, saves
``eight_modes.png`` (backward samples coloured by label) under ``--out`` and prints its run
time.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import invgraph as ig
from invgraph.losses import augmented_backward_loss, augmented_forward_loss, zero_padding
from invgraph.subnets import MLP
from invgraph.toy_data import (
    EIGHT_MODES_CENTRES,
    EIGHT_MODES_GROUPED,
    EIGHT_MODES_SIGMA,
    eight_modes,
)

from ._common import markdown_table, parse_arguments, stopwatch

WIDTH = 16
"""The INN's width: x (2) padded with zeros; y (8 or 4), z (2) and padding on the output."""
Z_DIMS = 2
RADIUS = 3 * EIGHT_MODES_SIGMA
"""A backward sample counts as on a mode if it lies within 3 sigma = 0.6 of its centre."""
KERNEL_WIDTHS = (0.2, 0.5, 0.9, 1.3)
LABELLINGS: dict[str, tuple[int, ...]] = {
    "8 labels": tuple(range(8)),
    "grouped": EIGHT_MODES_GROUPED,
}
ACCURACY_TARGET, ON_MODE_TARGET, SHARE_TOLERANCE = 0.99, 0.95, 0.05
EXACT_ON_MODE = 1.0 - float(np.exp(-4.5))
"""The share of an exact sampler's draws within 3 sigma of their mode (chi-square, 2 dof)."""


@dataclass
class Budget:
    """The network's size and the training's length."""

    blocks: int
    hidden: int
    steps: int
    batch: int
    lr: float


FULL = Budget(blocks=8, hidden=128, steps=1500, batch=256, lr=2e-3)
QUICK = Budget(blocks=4, hidden=64, steps=150, batch=128, lr=3e-3)


@dataclass(frozen=True)
class Weights:
    """The loss weights of the authors' toy code."""

    y: float = 300.0
    z: float = 300.0
    x: float = 400.0
    padding: float = 300.0
    reconstruction: float = 150.0


def build_inn(budget: Budget, seed: int) -> ig.SequenceINN:
    """Coupling blocks and random permutations on ``WIDTH`` dimensions, starting at the identity."""

    subnet = functools.partial(MLP, hidden=budget.hidden)  # 2 hidden ReLU layers, last zero
    inn = ig.SequenceINN(WIDTH)
    for k in range(budget.blocks):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet, clamp=2.0)
        inn.append(ig.PermuteRandom, seed=1000 * seed + k)
    return inn


def backward_inputs(y: Tensor, z: Tensor) -> Tensor:
    """``[y, z, 0]``: what the INN inverts to sample x given the one-hot labels ``y``."""
    return zero_padding(torch.cat([y, z], dim=1), WIDTH)


def train(
    inn: ig.SequenceINN,
    grouping: tuple[int, ...],
    budget: Budget,
    rng: np.random.Generator,
    weights: Weights = Weights(),
    progress: bool = False,
) -> None:
    """Minimise the weighted forward, backward and reconstruction losses (module docstring)."""
    n_labels = max(grouping) + 1
    optimizer = torch.optim.Adam(inn.parameters(), lr=budget.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, budget.lr, total_steps=budget.steps, pct_start=0.1
    )
    for step in tqdm(range(budget.steps), disable=not progress, leave=False, mininterval=2):
        x, labels, _ = eight_modes(budget.batch, grouping, rng)
        y = F.one_hot(labels, n_labels).float()
        outputs, _ = inn(zero_padding(x, WIDTH))
        forward = augmented_forward_loss(outputs, y, z_dims=Z_DIMS, widths=KERNEL_WIDTHS)
        # One inverse pass for both: random latents (the samples) and the forward latents
        # slightly perturbed (the reconstruction).
        z = outputs[:, n_labels : n_labels + Z_DIMS].detach()
        latents = torch.cat([torch.randn_like(z), z + 0.03 * torch.randn_like(z)])
        x_back, _ = inn(backward_inputs(y.repeat(2, 1), latents), rev=True)
        samples, reconstructions = x_back.split(budget.batch)
        backward = augmented_backward_loss(samples, x, widths=KERNEL_WIDTHS)
        reconstruction = (reconstructions[:, :2] - x).square().mean()
        ramp = min(1.0, 2.0 * step / budget.steps)
        loss = (
            weights.y * forward.y
            + weights.z * forward.z
            + weights.padding * (forward.padding + backward.padding)
            + ramp * weights.x * backward.x
            + weights.reconstruction * reconstruction
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(inn.parameters(), 10.0)
        optimizer.step()
        schedule.step()


@dataclass
class Evaluation:
    """One labelling's metrics, and the backward samples for the figure."""

    accuracy: float
    on_mode: float
    shares: dict[int, list[float]]
    """For each label of several modes, the share of its backward samples at each mode."""
    expected_shares: dict[int, float]
    samples: np.ndarray
    sample_labels: np.ndarray


def evaluate(
    inn: ig.SequenceINN, grouping: tuple[int, ...], n: int, rng: np.random.Generator
) -> Evaluation:
    """Forward accuracy on ``n`` fresh points; the backward metrics on ``n`` samples."""
    n_labels = max(grouping) + 1
    x, labels, _ = eight_modes(n, grouping, rng)
    y = F.one_hot(labels, n_labels).float()
    with torch.no_grad():
        outputs, _ = inn(zero_padding(x, WIDTH))
        samples, _ = inn(backward_inputs(y, torch.randn(n, Z_DIMS)), rev=True)
    samples = samples[:, :2]
    accuracy = (outputs[:, :n_labels].argmax(1) == labels).float().mean().item()
    mode_labels = torch.tensor(grouping)
    distances = torch.cdist(samples, EIGHT_MODES_CENTRES)  # (n, 8)
    distances[mode_labels[None, :] != labels[:, None]] = float("inf")  # other labels' modes
    nearest = distances.min(dim=1)
    on_mode = (nearest.values < RADIUS).float().mean().item()
    shares, expected = {}, {}
    for label in range(n_labels):
        modes = (mode_labels == label).nonzero().flatten().tolist()
        if len(modes) > 1:
            of_label = nearest.indices[labels == label]
            shares[label] = [(of_label == m).float().mean().item() for m in modes]
            expected[label] = 1.0 / len(modes)
    return Evaluation(
        accuracy, on_mode, shares, expected, samples.numpy(), labels.numpy().astype(int)
    )


def run(
    quick: bool = False,
    seed: int = 0,
    labellings: tuple[str, ...] | None = None,
    progress: bool = False,
) -> dict[str, Evaluation]:
    """Train one INN per labelling and evaluate it; returns ``{labelling: Evaluation}``.

    ``labellings`` defaults to both (``"8 labels"``, ``"grouped"``), or only ``"8 labels"``
    when ``quick``.
    """
    budget = QUICK if quick else FULL
    if labellings is None:
        labellings = ("8 labels",) if quick else tuple(LABELLINGS)
    results = {}
    for name in labellings:
        torch.manual_seed(seed)
        inn = build_inn(budget, seed)
        train(inn, LABELLINGS[name], budget, np.random.default_rng(seed), progress=progress)
        test_rng = np.random.default_rng(seed + 10_000)
        results[name] = evaluate(inn, LABELLINGS[name], 2000 if quick else 8000, test_rng)
    return results


def save_figure(results: dict[str, Evaluation], path: Path) -> None:
    """Backward samples coloured by the label they were drawn for, one panel per labelling,
    with each mode's 3-sigma circle in its label's colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.6), squeeze=False)
    for axis, (name, result) in zip(axes[0], results.items()):
        grouping = LABELLINGS[name]
        axis.scatter(*result.samples.T, c=colours(result.sample_labels), s=1, alpha=0.5)
        for centre, label in zip(EIGHT_MODES_CENTRES.tolist(), grouping):
            axis.add_patch(plt.Circle(centre, RADIUS, fill=False, color=colours(label), lw=1.5))
        axis.set(xlim=(-4, 4), ylim=(-4, 4), aspect="equal", xticks=[], yticks=[])
        axis.set_title(
            f"{name}: backward samples\n{result.on_mode:.1%} within 0.6 of their label's modes"
        )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def table_rows(name: str, result: Evaluation) -> list[list[object]]:
    """The printed table's rows for one labelling: metric, target, exact value, measured."""
    rows: list[list[object]] = [
        [
            "forward label accuracy",
            f">= {ACCURACY_TARGET}",
            "1.000",
            result.accuracy,
            result.accuracy >= ACCURACY_TARGET,
        ],
        [
            "backward samples within 0.6 of a mode of their label",
            f">= {ON_MODE_TARGET}",
            f"{EXACT_ON_MODE:.3f}",
            result.on_mode,
            result.on_mode >= ON_MODE_TARGET,
        ],
    ]
    for label, shares in result.shares.items():
        exact = result.expected_shares[label]
        rows.append(
            [
                f"share of each mode of label {label}",
                f"{exact:.3f} +- {SHARE_TOLERANCE}",
                f"{exact:.3f}",
                ", ".join(f"{share:.3f}" for share in shares),
                max(abs(share - exact) for share in shares) <= SHARE_TOLERANCE,
            ]
        )
    return [[name, *row[:-1], "yes" if row[-1] else "no"] for row in rows]


def main() -> None:
    arguments = parse_arguments(__doc__.splitlines()[0])
    with stopwatch() as elapsed:
        results = run(quick=arguments.quick, seed=arguments.seed, progress=True)
    rows = [row for name, result in results.items() for row in table_rows(name, result)]
    print()  # past the progress bar
    print(markdown_table(["labels", "metric", "target", "exact", "measured", "met"], rows))
    path = arguments.out / "eight_modes.png"
    save_figure(results, path)
    print(f"saved {path}; run time {elapsed['seconds']:.0f} s", end=" ")
    print(f"(CPU time of this process {time.process_time():.0f} s)")


if __name__ == "__main__":
    main()
