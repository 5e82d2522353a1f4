"""Inverse kinematics: posterior sampling with a cINN and an augmented-latent INN.

Reproduces the inverse-kinematics benchmark of Kruse, Ardizzone, Rother, Köthe,
"Benchmarking Invertible Architectures on Inverse Problems" (arXiv:2101.10763), Table 1.

Protocol:

- Data: an arm on a vertical rail, ``x = (height, three joint angles)`` with the prior
  ``N(0, diag(0.25², 0.5², 0.5², 0.5²))``; the observation is the hand position
  ``y = f(x)`` in the plane (``invgraph.toy_data.arm_end_point``). Training draws fresh
  prior samples at every step; the simulator is free.
- Ground truth: ``experiments/data/ik_posterior.npz``, 100 test observations ``y*`` (prior
  samples pushed through ``f``, seed 2101) with 500 posterior samples each, from rejection
  sampling with a Gaussian likelihood of width 0.002 around ``y*``
  (``invgraph.toy_data.rejection_sample_arm_posterior``). Made once by
  ``python -m experiments.inverse_kinematics --make-fixture`` (about 2 s).
- Models: a conditional INN (cINN: 8 GLOW couplings with 128-wide subnetworks, each
  followed by a random permutation, reading ``y`` and 32 features of it from a
  conditioning network trained with them; maximum likelihood of ``x`` given ``y``, 7000
  steps of 256 fresh prior samples, Adam with a one-cycle schedule up to 3e-3) and an
  augmented-latent INN (``(y, z) = g(x)`` with ``z`` in R², 8 GLOW couplings of the same
  width; trained with ``invgraph.losses.augmented_forward_loss`` and
  ``augmented_backward_loss``: MSE on ``y`` (weight 30), MMD of ``(y, z)`` to
  ``p(y) N(0, I)`` (100), MMD of backward samples to the prior (100), and the
  reconstruction of ``x`` from ``(y, z + 0.03 ε)`` (50); 5000 steps of 256, one-cycle
  schedule up to 2e-3). Beside them, prior samples: a model that ignores ``y``.
- Metrics, 500 model samples per observation, averaged over the 100 observations:
  ``Err_post``, the squared MMD between model and ground-truth samples with the multiscale
  inverse multiquadric kernel ``k(a, b) = sum_{h in (0.05, 0.2, 0.9)} 1 / (1 + |a - b|² / h²)``
  and the unbiased estimator (``invgraph.losses.mmd``); ``Err_resim``, the mean of
  ``|f(x_hat) - y*|²``.

Run: ``python -m experiments.inverse_kinematics`` (about 6.5 minutes of CPU time on one
core; ``--quick`` for the test suite's seconds-long version).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import invgraph as ig
from invgraph.distributions import FlowDensity
from invgraph.losses import augmented_backward_loss, augmented_forward_loss, mmd
from invgraph.subnets import MLP
from invgraph.toy_data import (
    arm_end_point,
    arm_joints,
    rejection_sample_arm_posterior,
    sample_arm_prior,
)

from ._common import compact_png, markdown_table, parse_arguments, stopwatch

FIXTURE = Path(__file__).parent / "data" / "ik_posterior.npz"
"""The ground-truth posterior samples (see :func:`make_fixture`)."""

PUBLISHED = [
    ("autoencoder", 0.037, 0.012, "Kruse et al., Table 1"),
    ("MDN", 0.007, 0.012, "Kruse et al., Table 1"),
    ("ignores y", 0.24, 2.7, "approximate, for scale"),
]
"""Published ``(model, Err_post, Err_resim, source)``."""


# ----------------------------------------------------------------------------------------
# Ground truth and metrics


def make_fixture(
    path: Path = FIXTURE,
    observations: int = 100,
    samples: int = 500,
    width: float = 0.002,
    seed: int = 2101,
) -> dict[str, float]:
    """Draw the test observations and their ground-truth posterior samples; save them.

    ``y* = f(x)`` for ``observations`` prior samples ``x``, then ``samples`` posterior
    samples each by rejection sampling with a Gaussian likelihood of standard deviation
    ``width`` (:func:`~invgraph.toy_data.rejection_sample_arm_posterior`), all from one
    torch generator seeded with ``seed``. Saved compressed, in float32, with the settings
    and the acceptance rates.

    Returns:
        The run time in seconds and the smallest and median acceptance rates.
    """
    generator = torch.Generator().manual_seed(seed)
    y_star = arm_end_point(sample_arm_prior(observations, generator))
    with stopwatch() as elapsed:
        posterior = rejection_sample_arm_posterior(
            y_star, samples, width=width, generator=generator
        )
    np.savez_compressed(
        path,
        y_star=y_star.numpy().astype(np.float32),
        x=posterior.x.numpy().astype(np.float32),
        acceptance_rate=posterior.acceptance_rate.numpy().astype(np.float32),
        width=np.float32(width),
        seed=np.int64(seed),
    )
    rates = posterior.acceptance_rate
    return {
        "seconds": elapsed["seconds"],
        "min_acceptance": float(rates.min()),
        "median_acceptance": float(rates.median()),
    }


def load_fixture(path: Path = FIXTURE) -> tuple[Tensor, Tensor]:
    """The test observations ``y*``, shape ``(B, 2)``, and their ground-truth posterior
    samples, shape ``(B, n, 4)``."""
    with np.load(path) as data:
        return torch.from_numpy(data["y_star"]), torch.from_numpy(data["x"])


def posterior_errors(samples: Tensor, y_star: Tensor, truth: Tensor) -> tuple[float, float]:
    """``(Err_post, Err_resim)`` of posterior samples ``(B, n, 4)`` for the observations
    ``y_star`` ``(B, 2)``, against ground-truth samples ``(B, m, 4)``.

    ``Err_post`` is the unbiased squared MMD with the multiscale inverse multiquadric
    kernel (widths 0.05, 0.2, 0.9, :func:`invgraph.losses.mmd`'s defaults), averaged over
    the observations; ``Err_resim`` is the mean of ``|f(x_hat) - y*|²`` over all samples.
    """
    with torch.no_grad():
        err_post = torch.stack([mmd(s, t) for s, t in zip(samples, truth)]).mean()
        err_resim = (arm_end_point(samples) - y_star[:, None]).square().sum(-1).mean()
    return float(err_post), float(err_resim)


# ----------------------------------------------------------------------------------------
# Models


def glow_inn(blocks: int, width: int) -> ig.SequenceINN:
    """``blocks`` GLOW couplings on 4 features, each followed by a random permutation; the
    subnetworks have two hidden ReLU layers of ``width`` units, the last layer zero."""
    subnet = functools.partial(MLP, hidden=width)
    inn = ig.SequenceINN(4)
    for k in range(blocks):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet, clamp=2.0)
        inn.append(ig.PermuteRandom, seed=k)
    return inn


class ConditionNet(nn.Module):
    """What the cINN's couplings read: the observation ``y`` and ``features`` learned
    features of it (a ReLU network with two hidden layers of ``width`` units)."""

    def __init__(self, features: int = 32, width: int = 128):
        super().__init__()
        self.net = MLP(2, features, hidden=width)
        self.net[-1].reset_parameters()  # PyTorch's default, not zero as in the couplings

    def forward(self, y: Tensor) -> Tensor:
        return torch.cat([y, self.net(y)], dim=1)


def build_cinn(blocks: int, width: int, features: int = 32) -> FlowDensity:
    """The cINN: a :class:`ConditionNet` on ``y`` feeds ``blocks`` GLOW couplings (each
    followed by a random permutation) on ``x``; the density of ``x`` given ``y``."""
    x, y = ig.InputNode(4, name="x"), ig.ConditionNode(2, name="y")
    args = {"features": features, "width": width}
    conditions = ig.FeedForwardNode(y, (features + 2,), ConditionNet, args, name="features")
    nodes, subnet = [x], functools.partial(MLP, hidden=width)
    for k in range(blocks):
        coupling = {"subnet_constructor": subnet, "clamp": 2.0}
        nodes.append(
            ig.Node(nodes[-1], ig.GLOWCouplingBlock, coupling, conditions=conditions, name=f"c{k}")
        )
        nodes.append(ig.Node(nodes[-1], ig.PermuteRandom, {"seed": k}, name=f"p{k}"))
    return FlowDensity(ig.GraphINN([y, conditions, *nodes, ig.OutputNode(nodes[-1], name="z")]))


@dataclass
class Budget:
    """How long and how a model trains: Adam with a one-cycle learning-rate schedule
    (warm-up over the first 5 %, then cosine decay to ``lr / 10⁴``)."""

    steps: int
    batch: int
    lr: float


def _optimizer(
    model: nn.Module, budget: Budget
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=budget.lr, total_steps=budget.steps, pct_start=0.05
    )
    return optimizer, schedule


def train_cinn(density: FlowDensity, budget: Budget, progress: bool = False) -> float:
    """Maximum likelihood of ``x`` given ``y = f(x)``, fresh prior samples every step.

    Returns:
        The last batch's negative log-likelihood (nats).
    """
    optimizer, schedule = _optimizer(density, budget)
    bar = tqdm(range(budget.steps), desc="cINN", disable=not progress, mininterval=2.0)
    for _ in bar:
        x = sample_arm_prior(budget.batch)
        loss = density.nll(x, arm_end_point(x))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(density.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(nll=f"{loss.item():.2f}", refresh=False)
    return loss.item()


@dataclass
class LossWeights:
    """Weights of the augmented-latent INN's losses (Ardizzone et al. 2019)."""

    y: float = 30.0
    """Mean squared error of the predicted observation."""
    z: float = 100.0
    """MMD of ``(y_hat, z)`` to ``p(y) x N(0, I)``."""
    x: float = 100.0
    """MMD of the backward samples to the prior."""
    reconstruction: float = 50.0
    """Mean squared error of ``x`` rebuilt from ``(y, z + 0.03 ε)``, ``z`` its own latent."""


def train_augmented_inn(
    inn: ig.SequenceINN, budget: Budget, weights: LossWeights, progress: bool = False
) -> float:
    """Train ``(y_hat, z) = g(x)`` with the forward and backward losses of
    :mod:`invgraph.losses` and, as in the authors' code, a reconstruction term: one inverse
    pass turns ``(y, z')`` with ``z' ~ N(0, I)`` into samples (MMD to the batch) and
    ``(y, z + 0.03 ε)``, ``z`` the forward latent, back into ``x`` (mean squared error).
    Fresh prior samples every step.

    Returns:
        The last batch's weighted loss.
    """
    optimizer, schedule = _optimizer(inn, budget)
    bar = tqdm(range(budget.steps), desc="INN", disable=not progress, mininterval=2.0)
    for _ in bar:
        x = sample_arm_prior(budget.batch)
        y = arm_end_point(x)
        outputs, _ = inn(x, jac=False)
        forward = augmented_forward_loss(outputs, y, z_dims=2)
        z = outputs[:, 2:].detach()
        latents = torch.cat([torch.randn_like(z), z + 0.03 * torch.randn_like(z)])
        x_back, _ = inn(torch.cat([y.repeat(2, 1), latents], 1), rev=True, jac=False)
        samples, reconstructions = x_back.split(budget.batch)
        backward = augmented_backward_loss(samples, x)
        reconstruction = (reconstructions - x).square().mean()
        loss = (
            weights.y * forward.y
            + weights.z * forward.z
            + weights.x * backward.x
            + weights.reconstruction * reconstruction
        )
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(inn.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", mse=f"{forward.y.item():.4f}", refresh=False)
    return loss.item()


def sample_augmented_inn(inn: ig.SequenceINN, y_star: Tensor, n: int) -> Tensor:
    """``n`` posterior samples per observation, ``x = g^{-1}(y*, z)`` with
    ``z ~ N(0, I)``: shape ``(B, n, 4)``."""
    y = y_star.repeat_interleave(n, dim=0)
    with torch.no_grad():
        x, _ = inn(torch.cat([y, torch.randn_like(y)], 1), rev=True, jac=False)
    return x.reshape(len(y_star), n, 4)


# ----------------------------------------------------------------------------------------
# The experiment


@dataclass
class Setup:
    """Model sizes and training budgets of one run."""

    cinn_blocks: int
    cinn_width: int
    cinn: Budget
    inn_blocks: int
    inn_width: int
    inn: Budget
    observations: int | None  # None: all of the fixture's
    samples: int


FULL = Setup(
    cinn_blocks=8,
    cinn_width=128,
    cinn=Budget(steps=7000, batch=256, lr=3e-3),
    inn_blocks=8,
    inn_width=128,
    inn=Budget(steps=5000, batch=256, lr=2e-3),
    observations=None,
    samples=500,
)
QUICK = Setup(
    cinn_blocks=4,
    cinn_width=64,
    cinn=Budget(steps=400, batch=256, lr=5e-3),
    inn_blocks=4,
    inn_width=64,
    inn=Budget(steps=50, batch=256, lr=1e-3),
    observations=8,
    samples=200,
)


@dataclass
class Result:
    """Metrics of one run, and what the figure draws."""

    rows: list[tuple[str, float, float]]
    """``(model, Err_post, Err_resim)``, measured."""
    seconds: dict[str, tuple[float, float]]
    """Training time per model: ``(wall clock, CPU)`` seconds."""
    y_star: Tensor
    truth: Tensor
    samples: dict[str, Tensor]
    """Posterior samples per model, shape ``(B, n, 4)``."""

    def errors(self, model: str) -> tuple[float, float]:
        """``(Err_post, Err_resim)`` of the row named ``model``."""
        return next((p, r) for name, p, r in self.rows if name == model)


def run(quick: bool = False, seed: int = 0, progress: bool = False) -> Result:
    """Train both models and measure them on the fixture's observations.

    Arguments:
        quick: The test suite's budget (seconds; small models, 8 observations).
        seed: Seeds the initialisation, training data and model samples (not the fixture).
        progress: Show progress bars.
    """
    setup = QUICK if quick else FULL
    y_star, truth = load_fixture()
    y_star, truth = y_star[: setup.observations], truth[: setup.observations]
    torch.manual_seed(seed)
    rows, samples, seconds = [], {}, {}

    density = build_cinn(setup.cinn_blocks, setup.cinn_width)
    cpu = time.process_time()
    with stopwatch() as elapsed:
        train_cinn(density, setup.cinn, progress)
    seconds["cINN"] = (elapsed["seconds"], time.process_time() - cpu)
    density.eval()
    with torch.no_grad():
        samples["cINN"] = density.sample_posterior(setup.samples, y_star)

    inn = glow_inn(setup.inn_blocks, setup.inn_width)
    cpu = time.process_time()
    with stopwatch() as elapsed:
        train_augmented_inn(inn, setup.inn, LossWeights(), progress)
    seconds["augmented INN"] = (elapsed["seconds"], time.process_time() - cpu)
    inn.eval()
    samples["augmented INN"] = sample_augmented_inn(inn, y_star, setup.samples)

    prior = sample_arm_prior(len(y_star) * setup.samples).reshape(len(y_star), -1, 4)
    samples["prior (ignores y)"] = prior
    for name, x in samples.items():
        rows.append((name, *posterior_errors(x, y_star, truth)))
    # The noise floor: one half of the ground-truth samples against the other.
    half = truth.shape[1] // 2
    floor = posterior_errors(truth[:, :half], y_star, truth[:, half:])
    rows.append(("ground truth, half vs half", *floor))
    return Result(rows, seconds, y_star, truth, samples)


def draw_arms(
    result: Result, path: Path, observations: tuple[int, ...] = (0, 1, 2, 3), arms: int = 80
) -> None:
    """Arms drawn from each model's posterior (rows) for a few observations (columns), and
    from the ground truth; the cross is ``y*``, the grey line the rail."""
    models = {
        "cINN": result.samples["cINN"],
        "augmented INN": result.samples["augmented INN"],
        "ground truth": result.truth,
    }
    fig, axes = plt.subplots(
        len(models), len(observations), figsize=(2.4 * len(observations), 2.6 * len(models))
    )
    for column, b in enumerate(observations):
        height = result.y_star[b, 1].item()
        for row, (name, x) in enumerate(models.items()):
            ax = axes[row, column]
            for arm in arm_joints(x[b, :arms]):
                ax.plot(arm[:, 0], arm[:, 1], color="tab:blue", alpha=0.15, linewidth=1)
            ax.axvline(0, color="grey", linewidth=3, alpha=0.5)
            ax.plot(*result.y_star[b], "x", color="tab:red", markersize=9, markeredgewidth=2.5)
            ax.set(xlim=(-0.4, 2.2), ylim=(min(height, 0) - 1.2, max(height, 0) + 1.2))
            ax.set(aspect="equal", xticks=[], yticks=[])
            if column == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(f"y* = ({result.y_star[b, 0]:.2f}, {result.y_star[b, 1]:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    compact_png(path)


def main() -> None:
    arguments = parse_arguments(
        "Inverse kinematics (Kruse et al. 2021): cINN and augmented-latent INN posteriors.",
        {"--make-fixture": f"recompute the ground truth ({FIXTURE.name}) instead"},
    )
    if arguments.make_fixture:
        info = make_fixture()
        print(
            f"wrote {FIXTURE} in {info['seconds']:.1f} s; acceptance rates: smallest "
            f"{info['min_acceptance']:.2e}, median {info['median_acceptance']:.2e}"
        )
        return
    start_cpu = time.process_time()
    with stopwatch() as total:
        result = run(quick=arguments.quick, seed=arguments.seed, progress=True)
    rows = [(name, f"{p:.3g}", f"{r:.3g}", "this run") for name, p, r in result.rows]
    rows += [(name, f"{p:.3f}", f"{r:.3f}", source) for name, p, r, source in PUBLISHED]
    print(markdown_table(["model", "Err_post", "Err_resim", "source"], rows))
    figure = arguments.out / "inverse_kinematics.png"
    draw_arms(result, figure)
    print(f"saved {figure}")
    for name, (wall, cpu) in result.seconds.items():
        print(f"training {name}: {wall:.0f} s wall clock, {cpu:.0f} s CPU")
    cpu = time.process_time() - start_cpu
    print(f"total: {total['seconds']:.0f} s wall clock, {cpu:.0f} s CPU (one thread)")


if __name__ == "__main__":
    main()
