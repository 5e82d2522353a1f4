r"""Reproduce the 2-D density benchmarks of FFJORD's toy data with three kinds of flow.

What is reproduced: the toy densities of FFJORD (Grathwohl et al., "FFJORD: Free-form
Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019,
arXiv:1810.01367), used as a benchmark by Neural Spline Flows (Durkan et al., NeurIPS 2019,
arXiv:1906.04032) and most flow papers since: moons, eight Gaussians, circles, checkerboard
and rings. Their entropies :math:`H(p)` are known (:data:`invgraph.toy_data.ENTROPIES`), and
the test negative log-likelihood of a model :math:`q` is :math:`H(p) + \mathrm{KL}(p\,\|\,q)`,
so its gap to the entropy is exactly what the model misses: the yardstick is a gap below
0.10 nats (moons, eight Gaussians, circles) or 0.15 nats (checkerboard, rings).

Protocol: for each data set and each model, train by maximum likelihood on fresh samples
every step (:func:`invgraph.toy_data.sample_2d`; no fixed training set, so no overfitting),
with Adam, a one-cycle learning-rate schedule (warm-up then cosine decay) and gradient
clipping, for a fixed number of steps chosen so that every model gets about the same CPU
time (about 15 s on one idle core; flow matching about twice that). Then estimate the
test NLL on 50,000 fresh samples (standard error about 0.005 nats). The models, each a
:class:`~invgraph.distributions.FlowDensity` with a standard normal base:

- ``GLOW``: affine couplings :class:`~invgraph.GLOWCouplingBlock` and
  :class:`~invgraph.PermuteRandom` (RealNVP/Glow);
- ``spline``: rational-quadratic spline couplings :class:`~invgraph.RationalQuadraticSpline`
  and permutations (Neural Spline Flows);
- ``AllInOne``: :class:`~invgraph.AllInOneBlock`, an affine coupling with a learned global
  affine map and a fixed random rotation (``permute_soft``);
- ``MAF``: masked affine autoregressive blocks :class:`~invgraph.MaskedAffineAutoregressive`
  in alternating orders (Papamakarios et al., arXiv:1705.07057);
- ``AR spline``: autoregressive rational-quadratic splines
  :class:`~invgraph.MaskedRationalQuadraticAutoregressive` in alternating orders (the
  autoregressive Neural Spline Flow);
- ``flow matching``: one :class:`~invgraph.ContinuousFlow` (a continuous normalizing flow,
  RK4 steps, exact divergence) whose field is trained by
  :func:`invgraph.losses.flow_matching_loss` instead of maximum likelihood (Lipman et al.,
  arXiv:2210.02747); its test NLL comes from the same change of variables.

Run (from the repository root)::

    python -m experiments.densities_2d            # the full run, about 10 minutes of CPU
    python -m experiments.densities_2d --quick    # the test suite's budget, seconds

It prints one table (data set x model: test NLL, gap to the entropy, target gap, pass or
fail), saves ``densities_2d.png`` (the exact density and each model's, per data set) to
``--out``, and prints the run time.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import invgraph as ig
from invgraph.distributions import FlowDensity
from invgraph.losses import flow_matching_loss
from invgraph.subnets import MLP
from invgraph.toy_data import ENTROPIES, log_density_2d, sample_2d

from ._common import compact_png, markdown_table, parse_arguments, stopwatch

DATASETS = ("moons", "8gaussians", "circles", "checkerboard", "rings")
"""The data sets, by the names of :func:`invgraph.toy_data.sample_2d`."""

TARGET_GAPS = {
    "moons": 0.10,
    "8gaussians": 0.10,
    "circles": 0.10,
    "checkerboard": 0.15,
    "rings": 0.15,
}
"""The yardstick: the largest acceptable test NLL minus entropy, in nats."""

MODELS = ("GLOW", "spline", "AllInOne", "MAF", "AR spline", "flow matching")
"""The flows compared."""

TEST_SAMPLES = 50_000


@dataclass(frozen=True)
class Recipe:
    """How one model is built and trained."""

    blocks: int
    """Blocks (each coupling followed by a permutation, except AllInOne's own rotation; the
    autoregressive blocks alternate their order instead)."""
    width: int
    """Width of the two hidden layers of each subnetwork (or masked conditioner)."""
    steps: int
    """Training steps, each on a fresh batch."""
    batch_size: int
    learning_rate: float
    """The peak of the one-cycle schedule."""


RECIPES = {
    "GLOW": Recipe(blocks=8, width=64, steps=1200, batch_size=256, learning_rate=5e-3),
    "spline": Recipe(blocks=6, width=64, steps=600, batch_size=256, learning_rate=5e-3),
    "AllInOne": Recipe(blocks=16, width=64, steps=1000, batch_size=256, learning_rate=1e-2),
    "MAF": Recipe(blocks=8, width=64, steps=1200, batch_size=256, learning_rate=5e-3),
    "AR spline": Recipe(blocks=6, width=64, steps=600, batch_size=256, learning_rate=5e-3),
    # one block; no ODE is solved in training, so a step is cheap
    "flow matching": Recipe(blocks=1, width=128, steps=12000, batch_size=256, learning_rate=3e-3),
}
"""The full run's recipes: about the same CPU time per model (flow matching: twice, see the
reproduction page: at 3000 steps its densities were blurred)."""

QUICK_DATASETS = ("8gaussians", "moons")
QUICK_MODELS = ("spline",)
QUICK_RECIPES = {
    name: Recipe(blocks=4, width=32, steps=150, batch_size=256, learning_rate=1e-2)
    for name in MODELS
}
"""The regression guard's budget: a few seconds per model."""


def build_flow(model: str, recipe: Recipe) -> FlowDensity:
    """The density of a flow of ``recipe.blocks`` blocks of kind ``model`` (see ``MODELS``)."""
    # every coupling's subnetwork: two hidden ReLU layers, the last layer zero (identity)
    subnet = functools.partial(MLP, hidden=recipe.width)
    hidden = (recipe.width, recipe.width)  # the autoregressive blocks' masked conditioner
    inn = ig.SequenceINN(2)
    for k in range(recipe.blocks):
        if model == "GLOW":
            inn.append(ig.GLOWCouplingBlock, subnet_constructor=subnet, clamp=2.0)
            inn.append(ig.PermuteRandom, seed=k)
        elif model == "spline":
            # the data lie in [-4.5, 4.5]^2; the splines act on [-5, 5], the identity outside
            inn.append(ig.RationalQuadraticSpline, subnet_constructor=subnet, bins=16, bound=5.0)
            inn.append(ig.PermuteRandom, seed=k)
        elif model == "AllInOne":
            # a random rotation between couplings (with a fixed swap, 0.18 nats instead of
            # 0.07 on the eight Gaussians)
            inn.append(ig.AllInOneBlock, subnet_constructor=subnet, permute_soft=True)
        elif model == "MAF":
            order = "natural" if k % 2 == 0 else "reversed"
            inn.append(ig.MaskedAffineAutoregressive, hidden=hidden, ordering=order, clamp=2.0)
        elif model == "AR spline":
            order = "natural" if k % 2 == 0 else "reversed"
            inn.append(
                ig.MaskedRationalQuadraticAutoregressive,
                hidden=hidden,
                ordering=order,
                bins=16,
                bound=5.0,
            )
        elif model == "flow matching":
            hidden = (recipe.width,) * 3
            inn.append(ig.ContinuousFlow, hidden=hidden, steps=16, time_frequencies=4)
        else:
            raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    return FlowDensity(inn)


def train(
    density: FlowDensity,
    dataset: str,
    recipe: Recipe,
    rng: np.random.Generator,
    progress: tqdm | None = None,
) -> None:
    """Maximum likelihood (or, for a continuous flow, flow matching) on a fresh batch every
    step: Adam, one-cycle schedule, clipping."""
    optimizer = torch.optim.Adam(density.parameters(), lr=recipe.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.steps, pct_start=0.1
    )
    (field,) = [m for m in density.modules() if isinstance(m, ig.ContinuousFlow)] or [None]
    for _ in range(recipe.steps):
        x = sample_2d(dataset, recipe.batch_size, rng)
        loss = density.nll(x) if field is None else flow_matching_loss(field, x)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(density.parameters(), max_norm=10.0)
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress.update()


def test_nll(density: FlowDensity, dataset: str, n: int, rng: np.random.Generator) -> float:
    """The mean negative log-likelihood of ``n`` fresh samples, in nats."""
    with torch.no_grad():
        return density.nll(sample_2d(dataset, n, rng)).item()


@dataclass
class Fit:
    """One model trained on one data set, and its test result."""

    dataset: str
    model: str
    nll: float
    """Test NLL in nats."""
    cpu_seconds: float
    """CPU time of the training."""
    density: FlowDensity

    @property
    def gap(self) -> float:
        """Test NLL minus the exact entropy: KL(p || q) plus Monte Carlo noise."""
        return self.nll - ENTROPIES[self.dataset]

    @property
    def target(self) -> float:
        return TARGET_GAPS[self.dataset]

    @property
    def passed(self) -> bool:
        return self.gap <= self.target


def run(
    quick: bool = False,
    seed: int = 0,
    datasets: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[tuple[str, str], Fit]:
    """Train every model on every data set and measure its test NLL.

    Arguments:
        quick: The regression guard's budget (``QUICK_RECIPES`` on ``QUICK_DATASETS`` with
            ``QUICK_MODELS``, unless given) instead of the full run (``RECIPES``).
        seed: Seeds the data and the initial weights of each fit.
        datasets: Which data sets (default: all, or the quick ones).
        models: Which models (default: all, or the quick ones).
        progress: Show a progress bar over all training steps.

    Returns:
        ``{(dataset, model): Fit}``.
    """
    recipes = QUICK_RECIPES if quick else RECIPES
    datasets = datasets or (QUICK_DATASETS if quick else DATASETS)
    models = models or (QUICK_MODELS if quick else MODELS)
    total = len(datasets) * sum(recipes[model].steps for model in models)
    fits = {}
    with tqdm(total=total, disable=not progress, mininterval=2.0) as bar:
        for dataset in datasets:
            for model in models:
                bar.set_description(f"{dataset} {model}")
                torch.manual_seed(seed)
                rng = np.random.default_rng(seed)
                density = build_flow(model, recipes[model])
                start = time.process_time()
                train(density, dataset, recipes[model], rng, bar)
                cpu = time.process_time() - start
                nll = test_nll(density, dataset, TEST_SAMPLES, np.random.default_rng(seed + 1))
                fits[dataset, model] = Fit(dataset, model, nll, cpu, density)
    return fits


def results_table(fits: dict[tuple[str, str], Fit]) -> str:
    """The Markdown table: one row per data set and model."""
    rows = [
        (
            fit.dataset,
            fit.model,
            ENTROPIES[fit.dataset],
            fit.nll,
            fit.gap,
            fit.target,
            "pass" if fit.passed else "FAIL",
            f"{fit.cpu_seconds:.0f}",
        )
        for fit in fits.values()
    ]
    headers = ("data", "model", "entropy", "test NLL", "gap", "target gap", "", "train CPU s")
    return markdown_table(headers, rows)


def plot(fits: dict[tuple[str, str], Fit], path: Path, resolution: int = 120) -> None:
    """Heat maps of the exact density (first column) and of each model's, per data set, on
    one colour scale per data set (up to 1.5 times the exact density's maximum)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(dataset for dataset, _ in fits))
    models = list(dict.fromkeys(model for _, model in fits))
    axis = torch.linspace(-4.5, 4.5, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    fig, axes = plt.subplots(
        len(datasets), len(models) + 1, figsize=(1.7 * (len(models) + 1), 1.75 * len(datasets))
    )
    axes = np.atleast_2d(axes)
    for row, dataset in enumerate(datasets):
        exact = log_density_2d(dataset, grid).exp()
        panels = [("exact", exact)]
        with torch.no_grad():
            for model in models:
                fit = fits[dataset, model]
                panels.append((f"{model}, gap {fit.gap:.2f}", fit.density.log_prob(grid).exp()))
        for ax, (label, density) in zip(axes[row], panels):
            ax.imshow(
                density.reshape(resolution, resolution).float().numpy(),
                origin="lower",
                extent=(-4.5, 4.5, -4.5, 4.5),
                cmap="magma",
                vmin=0.0,
                vmax=1.5 * exact.max().item(),
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=8)
        axes[row, 0].set_ylabel(dataset, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    compact_png(path)


def main() -> None:
    arguments = parse_arguments(__doc__.splitlines()[0])
    wall_start = time.perf_counter()
    with stopwatch() as clock:
        fits = run(quick=arguments.quick, seed=arguments.seed, progress=True)
    print(results_table(fits))
    best = {
        dataset: min((f for f in fits.values() if f.dataset == dataset), key=lambda f: f.gap)
        for dataset in dict.fromkeys(d for d, _ in fits)
    }
    met = sum(fit.passed for fit in best.values())
    print(f"\nbest model within the target gap on {met} of {len(best)} data sets")
    path = arguments.out / "densities_2d.png"
    plot(fits, path)
    print(f"saved {path}")
    cpu = time.process_time()
    print(
        f"training {clock['seconds']:.0f} s wall; whole run "
        f"{time.perf_counter() - wall_start:.0f} s wall, {cpu:.0f} s CPU (one thread)"
    )


if __name__ == "__main__":
    main()
