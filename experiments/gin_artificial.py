"""Reproduce the artificial-data experiment of GIN (Sorrenson, Rother, Köthe, "Disentanglement
by Nonlinear ICA with General Incompressible-flow Networks (GIN)", ICLR 2020,
arXiv:2001.04872).

Protocol:

* Data: :func:`invgraph.toy_data.gin_artificial`, 10,000 points of 5 classes; 2 informative
  latents (per-class means ~ U(-5, 5)^2, stds ~ U(0.5, 3)) and 8 noise latents
  N(0, 0.01^2), mixed into 10-D by a randomly initialised GLOW network. Each training
  batch gets fresh N(0, 0.01^2) noise on the data, as in the authors' code.
* Model: 8 :class:`~invgraph.GINCouplingBlock` (volume preserving, clamp 2, subnetworks
  10 -> 10 -> 10 with ReLU, last layer zero so that the flow starts at the identity), each
  followed by a :class:`~invgraph.PermuteRandom`; a :class:`~invgraph.mixture.LatentMixture`
  holds one diagonal Gaussian per class in the latent space.
* Loss: :meth:`LatentMixture.gin_loss`, the class-conditional Gaussian NLL. As in the
  authors' default (``empirical_vars=1``), the means and standard deviations are those of
  the current batch: before each step they are set to their maximum-likelihood values on
  the batch (:func:`fit_class_gaussians`). The NLL is stationary in them there, so the
  gradient with respect to the network equals that of the paper's loss with batch
  statistics. Adam, one-cycle schedule up to 3e-3, 500 steps of 500 points.
* Metrics, on the whole training set without added noise:
  the *latent spectrum*, per latent dimension the root mean square over classes of the
  within-class standard deviation (the quantity the authors plot), sorted; its *gap*, the
  spread of the 2nd dimension over that of the 3rd (target >= 10: exactly two informative
  dimensions); and the |Spearman| rank correlation between the 2 widest recovered
  dimensions and the 2 true informative latents, after the matching that maximises it
  (target >= 0.95 on each; identifiability holds up to permutation and component-wise
  monotone maps). Averaged over 3 seeds (data, network and training all change).
* The same pipeline with :class:`~invgraph.GLOWCouplingBlock` (not volume preserving; the
  loss then includes the log-determinant) runs beside it.

Run from the repository root::

    python -m experiments.gin_artificial          # about 2 minutes of CPU time, one thread
    python -m experiments.gin_artificial --quick  # the regression guard's budget

It prints a Markdown table with the targets beside the measured values, saves
``gin_artificial.png`` (spectra and recovered latents) under ``--out`` and prints its run
time.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

import invgraph as ig
from invgraph.mixture import LatentMixture
from invgraph.subnets import MLP
from invgraph.toy_data import GINArtificialData, gin_artificial

from ._common import markdown_table, parse_arguments, stopwatch

GAP_TARGET = 10.0
"""The spread of the 2nd latent dimension must be at least this multiple of the 3rd's."""
SPEARMAN_TARGET = 0.95
"""The |Spearman| correlation each recovered informative latent must reach."""
BLOCKS: dict[str, type[ig.InvertibleModule]] = {
    "GIN": ig.GINCouplingBlock,
    "GLOW": ig.GLOWCouplingBlock,
}
UNTRAINED = "untrained"
"""The baseline row: the flow at initialisation, the identity, i.e. the data itself."""


@dataclass
class Budget:
    """How much data and training one run gets."""

    n_points: int
    steps: int
    batch: int
    lr: float
    seeds: int


FULL = Budget(n_points=10_000, steps=500, batch=500, lr=3e-3, seeds=3)
QUICK = Budget(n_points=2_000, steps=120, batch=500, lr=3e-3, seeds=1)


@dataclass
class RunResult:
    """One trained model's metrics (and what the figure needs)."""

    block: str
    seed: int
    spectrum: np.ndarray
    """The latent spectrum, sorted in decreasing order, shape ``(10,)``."""
    gap: float
    """``spectrum[1] / spectrum[2]``."""
    spearman: tuple[float, float]
    """|Spearman| of the two matched pairs (true latent 0, true latent 1)."""
    recovered: np.ndarray
    """The matched recovered informative latents, signs aligned with the truth, ``(n, 2)``."""
    seconds: float


subnet = functools.partial(MLP, hidden=10)
"""The authors' subnetworks: two hidden ReLU layers of 10, the last layer zero (identity)."""


def build_model(block: type[ig.InvertibleModule], seed: int) -> LatentMixture:
    """8 coupling blocks with permutations, and one Gaussian per class (5) in latent space."""
    inn = ig.SequenceINN(10)
    for k in range(8):
        inn.append(block, subnet_constructor=subnet, clamp=2.0)
        inn.append(ig.PermuteRandom, seed=1000 * seed + k)
    return LatentMixture(inn, n_classes=5, learn_scales=True)


def fit_class_gaussians(model: LatentMixture, x: Tensor, labels: Tensor) -> None:
    """Set each class's mean and log-scale to their maximum-likelihood values on ``x``.

    Classes with fewer than two points in ``x`` keep their previous values.
    """
    with torch.no_grad():
        z, _ = model.inn(x)
        for k in range(model.n_classes):
            z_k = z[labels == k]
            if len(z_k) >= 2:
                model.means[k] = z_k.mean(0)
                model.log_scales[k] = z_k.std(0, unbiased=False).log()


def train(
    model: LatentMixture, data: GINArtificialData, budget: Budget, progress: bool = False
) -> None:
    """Minimise the class-conditional NLL with batch statistics (see the module docstring)."""
    optimizer = torch.optim.Adam(model.inn.parameters(), lr=budget.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, budget.lr, total_steps=budget.steps, pct_start=0.1
    )
    for _ in tqdm(range(budget.steps), disable=not progress, leave=False, mininterval=2):
        batch = torch.randint(0, len(data.x), (budget.batch,))
        x = data.x[batch] + 0.01 * torch.randn(budget.batch, 10)
        labels = data.labels[batch]
        fit_class_gaussians(model, x, labels)
        loss = model.gin_loss(x, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def latent_spectrum(z: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    r"""Per latent dimension :math:`d`, :math:`\sqrt{\frac1K \sum_k \operatorname{std}(z_d
    \mid k)^2}`: the spread the authors plot, unsorted, shape ``(D,)``."""
    stds = torch.stack([z[labels == k].std(0, unbiased=False) for k in range(n_classes)])
    return stds.square().mean(0).sqrt()


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlations between the columns of ``a`` ``(n, p)`` and ``b`` ``(n, q)``,
    a ``(p, q)`` array: Pearson's correlation of the ranks (ties are negligible here)."""

    def centred_ranks(m: np.ndarray) -> np.ndarray:
        ranks = np.argsort(np.argsort(m, axis=0), axis=0).astype(np.float64)
        ranks -= ranks.mean(axis=0)
        return ranks / np.linalg.norm(ranks, axis=0)

    return centred_ranks(a).T @ centred_ranks(b)


def evaluate(
    model: LatentMixture, data: GINArtificialData
) -> tuple[np.ndarray, float, tuple[float, float], np.ndarray]:
    """The sorted spectrum, its gap, the matched |Spearman| pair and the recovered latents."""
    with torch.no_grad():
        z, _ = model.inn(data.x)
    spread = latent_spectrum(z, data.labels, model.n_classes)
    order = spread.argsort(descending=True)
    spectrum = spread[order].numpy()
    widest = z[:, order[:2]].numpy()
    correlations = spearman(widest, data.latents[:, :2].numpy())
    match = max(
        itertools.permutations(range(2)),
        key=lambda p: sum(abs(correlations[p[j], j]) for j in range(2)),
    )
    rho = tuple(float(abs(correlations[match[j], j])) for j in range(2))
    signs = np.sign([correlations[match[j], j] for j in range(2)])
    recovered = widest[:, list(match)] * signs
    return spectrum, float(spectrum[1] / spectrum[2]), rho, recovered


def run(
    quick: bool = False,
    seed: int = 0,
    blocks: tuple[str, ...] = ("GIN", "GLOW"),
    progress: bool = False,
) -> dict:
    """Train and evaluate every block type on ``budget.seeds`` seeds ``seed, seed + 1, ...``,
    beside the untrained flow (the identity: the metrics of the data itself).

    Returns:
        ``{"runs": [RunResult, ...], "summary": {block: {"gap": mean gap, "min_gap": worst
        gap, "spearman": mean |Spearman|, "min_spearman": worst pair, "seconds": mean time
        per run}}}``.
    """
    budget = QUICK if quick else FULL
    runs = []
    for s in range(seed, seed + budget.seeds):
        data = gin_artificial(budget.n_points, rng=np.random.default_rng(s))
        for name in (UNTRAINED, *blocks):
            torch.manual_seed(s)
            with stopwatch() as elapsed:
                model = build_model(BLOCKS.get(name, ig.GINCouplingBlock), s)
                if name != UNTRAINED:
                    train(model, data, budget, progress)
                spectrum, gap, rho, recovered = evaluate(model, data)
            runs.append(RunResult(name, s, spectrum, gap, rho, recovered, elapsed["seconds"]))
    summary = {}
    for name in (UNTRAINED, *blocks):
        mine = [r for r in runs if r.block == name]
        summary[name] = {
            "gap": float(np.mean([r.gap for r in mine])),
            "min_gap": float(np.min([r.gap for r in mine])),
            "spearman": float(np.mean([r.spearman for r in mine])),
            "min_spearman": float(np.min([r.spearman for r in mine])),
            "seconds": float(np.mean([r.seconds for r in mine])),
        }
    return {"runs": runs, "summary": summary}


def save_figure(runs: list[RunResult], data: GINArtificialData, path: Path) -> None:
    """Top row: the true informative latents of the first seed and, per block type, the
    recovered ones (matched, signs aligned), coloured by class. Bottom row: per block type
    the latent spectra of all seeds (log scale) beside those of the true latents and of the
    untrained flow; last, each recovered latent of the first block type against its true one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.block for r in runs if r.block != UNTRAINED))
    first_seed = runs[0].seed
    untrained = next(r for r in runs if r.block == UNTRAINED and r.seed == first_seed)
    shown = {r.block: r for r in runs if r.seed == first_seed}
    truth = latent_spectrum(data.latents, data.labels, 5).sort(descending=True).values.numpy()
    latents = data.latents[:, :2].numpy()
    subset = np.random.default_rng(0).permutation(len(latents))[:3000]  # a lighter figure
    colours = data.labels.numpy()[subset]
    columns = len(names) + 1
    figure, axes = plt.subplots(2, columns, figsize=(3.7 * columns, 7.2), squeeze=False)

    def scatter(axis, points: np.ndarray, title: str, label: str) -> None:
        axis.scatter(*points[subset].T, c=colours, s=1, cmap="tab10", vmin=0, vmax=9)
        axis.set(title=title, xlabel=f"${label}_1$", ylabel=f"${label}_2$")

    scatter(axes[0, 0], latents, f"true latents (seed {first_seed})", "s")
    for column, name in enumerate(names):
        rho = ", ".join(f"{v:.3f}" for v in shown[name].spearman)
        scatter(axes[0, column + 1], shown[name].recovered, f"{name}: recovered\n|ρ| {rho}", "z")
        axis = axes[1, column]
        for r in (r for r in runs if r.block == name):
            axis.semilogy(range(1, 11), r.spectrum, "o-", ms=3, label=f"seed {r.seed}")
        axis.semilogy(range(1, 11), truth, "k--", lw=1, label="true latents")
        axis.semilogy(range(1, 11), untrained.spectrum, ":", c="grey", label="untrained")
        axis.set(title=f"{name}: latent spectrum", xlabel="dimension (sorted)")
        axis.set_ylabel("rms within-class std")
        axis.legend(fontsize=7)
    axis = axes[1, -1]
    recovered = shown[names[0]].recovered
    for j in range(2):
        standardised = (recovered[:, j] - recovered[:, j].mean()) / recovered[:, j].std()
        axis.scatter(
            latents[subset, j], standardised[subset], s=1, label=f"$z_{j + 1}$ vs $s_{j + 1}$"
        )
    axis.set(title=f"{names[0]}: recovered vs true", xlabel="true $s_j$")
    axis.set_ylabel("recovered $z_j$ (standardised)")
    axis.legend(fontsize=7, markerscale=5)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> None:
    arguments = parse_arguments(__doc__.splitlines()[0])
    with stopwatch() as elapsed:
        result = run(quick=arguments.quick, seed=arguments.seed, progress=True)
    runs, summary = result["runs"], result["summary"]
    print()  # past the progress bar
    print(
        markdown_table(
            ["blocks", "seed", "gap (2nd / 3rd)", "abs Spearman s1", "abs Spearman s2", "seconds"],
            [[r.block, r.seed, r.gap, *r.spearman, f"{r.seconds:.0f}"] for r in runs],
        )
    )
    print()
    rows = []
    for name, s in summary.items():
        met = s["gap"] >= GAP_TARGET and s["spearman"] >= SPEARMAN_TARGET
        rows.append(
            [
                name,
                f">= {GAP_TARGET:.0f}",
                s["gap"],
                s["min_gap"],
                f">= {SPEARMAN_TARGET}",
                s["spearman"],
                s["min_spearman"],
                "yes" if met else "no",
            ]
        )
    headers = ["blocks", "target gap", "mean gap", "worst gap", "target abs Spearman"]
    headers += ["mean abs Spearman", "worst", "targets met (means)"]
    print(markdown_table(headers, rows))
    budget = QUICK if arguments.quick else FULL
    first = gin_artificial(budget.n_points, rng=np.random.default_rng(arguments.seed))
    path = arguments.out / "gin_artificial.png"
    save_figure(runs, first, path)
    print(f"\nsaved {path}; run time {elapsed['seconds']:.0f} s", end=" ")
    print(f"(CPU time of this process {time.process_time():.0f} s)")


if __name__ == "__main__":
    main()
