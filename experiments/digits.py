"""Density and generative classification on scikit-learn's 8x8 digits.

Two tasks on the 1797 grey-scale digits of :func:`sklearn.datasets.load_digits` (8x8
pixels, values 0..16), split as in Tomczak's course code: rows ``[:1000]`` train,
``[1000:1350]`` validation, ``[1350:]`` test (447 digits, mostly other writers than the
training rows). Every choice (early stopping, the ensemble's combination rule, the
baselines' smoothing) is made on the validation rows; the test rows are used once, at
the end.

(a) Density, in bits per dimension. No published flow figure exists for this data, so the
flow is measured against baselines fitted in the same run: uniform over the 17 levels
(``log2 17 = 4.087``), a diagonal and a full-covariance Gaussian on the dequantized pixels,
and independent per-pixel categoricals over the 17 levels (an exact discrete model, its
additive smoothing chosen on validation).

* Data: uniform dequantization, ``x = (v + u) / 17``, ``u ~ U[0, 1)^64``
  (:class:`~invgraph.dequantization.UniformDequantization`), then the logit map
  ``y = logit(a + (1 - 2a) x)``, ``a = 0.05`` (``Inverse(InvertibleSigmoid)``; its
  log-determinant enters the likelihood).
* Model: :func:`~invgraph.architectures.multiscale_flow`, two levels (Haar squeeze, 4
  GLOW couplings with CNN subnetworks 3x3 -> 1x1 -> 3x3 of 48 channels and random
  permutations per level, half the channels factored out after level 1), a standard normal
  on both latents (:class:`~invgraph.distributions.FlowDensity`).
* Training: maximum likelihood, 1000 steps of Adam with a one-cycle schedule up to 2e-3,
  batches of 128, gradient norm clipped at 10, dropout 0.2 in the subnetworks (the flow
  overfits 1000 digits without it: validation 2.37 bits/dim at best, then rising); the
  parameters with the best validation bits/dim are kept.
* Metric: the dequantization bound ``-E_u[log p(x) - 64 log 17] / (64 ln 2)``, an upper
  bound on the discrete negative log-likelihood in bits/dim, on the test rows, averaged
  over 10 draws of ``u``. The Gaussian baselines use the same bound.

(b) Generative classification with IB-INNs (Ardizzone et al., "Training Normalizing Flows
with the Information Bottleneck for Competitive Generative Classification", NeurIPS 2020,
arXiv:2001.06448). Target: test accuracy >= 0.95; scikit-learn's SVC example reaches about
0.97 on a 50/50 split of these digits, and is fitted here on the same rows as the flows.

* Data: pixels ``v / 16`` as 64-D vectors. During training each digit is warped by a
  random small affine map (rotation up to 10 degrees, scaling and shear up to 10 %, shift
  up to half a pixel; :func:`random_affine`), then Gaussian noise of sd 0.15 is added (the
  IB-INN's "controlled information loss", a strong regulariser on 1000 digits).
* Model: a :class:`~invgraph.mixture.LatentMixture`, ten Gaussians with learned means and
  diagonal scales in the latent space of 4 :class:`~invgraph.AllInOneBlock` (MLP
  subnetworks 64 -> 128 -> 128, affine clamping 1, soft permutations); classification by
  Bayes' rule with a uniform prior.
* Training: the IB loss ``L_X + beta L_Y`` with ``beta = 20``
  (:meth:`~invgraph.mixture.LatentMixture.ib_loss`), 2400 steps of Adam (weight decay
  1e-5), one-cycle schedule up to 2e-3, batches of 128, gradient norm clipped at 5; each
  model keeps its parameters at the validation-accuracy peak (checked every 200 steps).
* Ensemble: 5 such models from different seeds; their class posteriors are averaged. The
  alternative, a mixture of their class-conditional likelihoods (again a generative
  model), is reported too; the rule used is the one with the better validation accuracy.

Run from the repository root::

    python -m experiments.digits          # about 2 minutes of CPU time (one thread)
    python -m experiments.digits --quick  # the regression guard's budget (about 12 s)

It prints two Markdown tables (density, classification) with the references beside the
measured values, saves ``digits_flow_samples.png``, ``digits_class_samples.png`` and
``digits_classifier.png`` (confusion matrix and validation curves) under ``--out``, and
prints its run time.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix
from sklearn.svm import SVC
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

import invgraph as ig
from invgraph.architectures import multiscale_flow
from invgraph.dequantization import UniformDequantization
from invgraph.distributions import FlowDensity
from invgraph.mixture import LatentMixture
from invgraph.subnets import MLP

from ._common import markdown_table, parse_arguments, stopwatch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LEVELS = 17
"""Pixel values are 0..16."""
SHAPE = (1, 8, 8)
PIXELS = 64
ALPHA = 0.05
"""The logit map squeezes [0, 1) into [ALPHA, 1 - ALPHA) first, keeping it finite."""
TEST_DRAWS = 10
"""Dequantization draws averaged for the test bits/dim."""
ACCURACY_TARGET = 0.95
SVC_EXAMPLE_ACCURACY = 0.97
"""scikit-learn's "Recognizing hand-written digits" example, on its own 50/50 split."""


@dataclass(frozen=True)
class Budget:
    """The networks' sizes and the trainings' lengths."""

    flow_steps: int
    flow_hidden: int
    flow_blocks: int
    """GLOW couplings per level of the multiscale flow."""
    flow_dropout: float
    """Dropout in the couplings' subnetworks during training (off when evaluating)."""
    classifier_steps: int
    classifier_hidden: int
    classifier_blocks: int
    members: int
    """IB-INNs in the ensemble."""
    eval_every: int
    """Steps between validation checks (early stopping)."""


FULL = Budget(
    flow_steps=1000,
    flow_hidden=48,
    flow_blocks=4,
    flow_dropout=0.2,
    classifier_steps=2400,
    classifier_hidden=128,
    classifier_blocks=4,
    members=5,
    eval_every=200,
)
QUICK = Budget(
    flow_steps=150,
    flow_hidden=32,
    flow_blocks=2,
    flow_dropout=0.0,
    classifier_steps=400,
    classifier_hidden=64,
    classifier_blocks=3,
    members=1,
    eval_every=100,
)


@dataclass
class Split:
    """Images ``(N, 1, 8, 8)`` holding the integer pixel values 0..16 (as floats) and labels."""

    images: Tensor
    labels: Tensor

    @property
    def vectors(self) -> Tensor:
        """The classifiers' input: pixels scaled to [0, 1], flattened to ``(N, 64)``."""
        return self.images.flatten(1) / (LEVELS - 1)


def load_split() -> dict[str, Split]:
    """The rows ``[:1000]``, ``[1000:1350]`` and ``[1350:]`` as ``train``, ``val``, ``test``."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    labels = torch.as_tensor(digits.target)
    rows = {"train": slice(0, 1000), "val": slice(1000, 1350), "test": slice(1350, None)}
    return {name: Split(images[r], labels[r]) for name, r in rows.items()}


# ---------------------------------------------------------------------------------------
# (a) Density baselines
# ---------------------------------------------------------------------------------------


def categorical_bits_per_dim(train: Tensor, evaluate: Tensor, smoothing: float) -> float:
    """The exact discrete NLL, bits/dim, of independent per-pixel categoricals over the 17
    levels, fitted to ``train`` by counting (plus ``smoothing`` per level)."""
    values = train.flatten(1).long()
    counts = torch.stack([(values == level).sum(0) for level in range(LEVELS)], 1) + smoothing
    log_p = (counts / counts.sum(1, keepdim=True)).log()  # (64, 17)
    picked = log_p.gather(1, evaluate.flatten(1).long().T)  # (64, N)
    return -picked.sum(0).mean().item() / (PIXELS * math.log(2))


def gaussian_bits_per_dim(
    train: Tensor, evaluate: Tensor, *, diagonal: bool, draws: int = TEST_DRAWS
) -> float:
    """The uniform-dequantization bound, bits/dim, of a Gaussian fitted (maximum
    likelihood) to dequantized ``train``, averaged over ``draws`` draws on ``evaluate``."""
    dequantize = UniformDequantization(LEVELS)
    x, _ = dequantize(train.flatten(1))
    mean = x.mean(0)
    if diagonal:
        gaussian = torch.distributions.Independent(torch.distributions.Normal(mean, x.std(0)), 1)
    else:
        gaussian = torch.distributions.MultivariateNormal(mean, torch.cov(x.T))
    bounds = []
    for _ in range(draws):
        x, correction = dequantize(evaluate.flatten(1))
        bounds.append(gaussian.log_prob(x) + correction)
    return -torch.stack(bounds).mean().item() / (PIXELS * math.log(2))


def baselines(data: dict[str, Split]) -> dict[str, dict[str, float]]:
    """Each baseline's validation and test bits/dim (the categorical's smoothing picked on
    validation)."""
    train = data["train"].images
    smoothing = min(
        (0.01, 0.1, 1.0), key=lambda s: categorical_bits_per_dim(train, data["val"].images, s)
    )
    results = {"uniform over 17 levels": dict.fromkeys(("val", "test"), math.log2(LEVELS))}
    results["diagonal Gaussian"] = {
        name: gaussian_bits_per_dim(train, data[name].images, diagonal=True)
        for name in ("val", "test")
    }
    results["full-covariance Gaussian"] = {
        name: gaussian_bits_per_dim(train, data[name].images, diagonal=False)
        for name in ("val", "test")
    }
    results[f"independent categoricals (smoothing {smoothing:g})"] = {
        name: categorical_bits_per_dim(train, data[name].images, smoothing)
        for name in ("val", "test")
    }
    return results


# ---------------------------------------------------------------------------------------
# (a) The multiscale flow
# ---------------------------------------------------------------------------------------


class DigitsFlow(nn.Module):
    """Uniform dequantization, the logit map and a two-level multiscale flow.

    ``log_likelihood_bound(v)`` is the dequantization bound on ``log P(v)`` (nats) of integer
    images ``v``; ``sample`` returns integer images.
    """

    def __init__(self, hidden: int, blocks_per_level: int, dropout: float = 0.0):
        super().__init__()

        def subnet(c_in: int, c_out: int) -> nn.Module:
            """A small CNN whose last layer starts at zero: each coupling starts as the identity."""
            net = nn.Sequential(
                nn.Conv2d(c_in, hidden, 3, padding=1),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Conv2d(hidden, hidden, 1),
                nn.ReLU(),
                nn.Conv2d(hidden, c_out, 3, padding=1),
            )
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            return net

        self.dequantize = UniformDequantization(LEVELS)
        self.logit = ig.Inverse(ig.InvertibleSigmoid([SHAPE]))
        self.density = FlowDensity(ig.GraphINN(multiscale_flow(SHAPE, 2, blocks_per_level, subnet)))

    def log_likelihood_bound(self, v: Tensor) -> Tensor:
        """One-sample estimate of the bound on ``log P(v)``, nats, ``(batch,)``."""
        x, correction = self.dequantize(v)
        (y,), log_det_logit = self.logit((ALPHA + (1 - 2 * ALPHA) * x,))
        log_det = log_det_logit + PIXELS * math.log(1 - 2 * ALPHA)
        return self.density.log_prob(y) + log_det + correction

    def bits_per_dim(self, v: Tensor, draws: int = 1) -> Tensor:
        """The bound in bits/dim averaged over the batch and ``draws`` dequantizations."""
        bounds = torch.stack([self.log_likelihood_bound(v) for _ in range(draws)])
        return -bounds.mean() / (PIXELS * math.log(2))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` integer images ``(n, 1, 8, 8)``, latents scaled by ``temperature``."""
        y = self.density.sample(n, temperature=temperature)
        (s,), _ = self.logit((y,), rev=True)
        return self.dequantize.quantize((s - ALPHA) / (1 - 2 * ALPHA))


def train_flow(
    flow: DigitsFlow, data: dict[str, Split], budget: Budget, progress: bool = False
) -> list[tuple[int, float]]:
    """Maximum likelihood with early stopping; returns the validation curve (step, bits/dim)
    and leaves ``flow`` at its best validation point, in evaluation mode."""
    train, val = data["train"].images, data["val"].images
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=budget.flow_steps)
    curve: list[tuple[int, float]] = []
    best, best_state = math.inf, None
    bar = tqdm(range(budget.flow_steps), desc="flow", disable=not progress, mininterval=2)
    for step in bar:
        loss = flow.bits_per_dim(train[torch.randint(0, len(train), (128,))])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % budget.eval_every == 0 or step + 1 == budget.flow_steps:
            flow.eval()  # no dropout
            with torch.no_grad():
                val_bpd = flow.bits_per_dim(val).item()
            flow.train()
            curve.append((step + 1, val_bpd))
            bar.set_postfix(train=f"{loss.item():.3f}", val=f"{val_bpd:.3f}")
            if val_bpd < best:
                best, best_state = val_bpd, {k: t.clone() for k, t in flow.state_dict().items()}
    flow.load_state_dict(best_state)
    flow.eval()
    return curve


# ---------------------------------------------------------------------------------------
# (b) The IB-INN generative classifier
# ---------------------------------------------------------------------------------------

BETA, NOISE = 20.0, 0.15
MAX_ROTATION, MAX_SCALING, MAX_SHEAR, MAX_SHIFT = math.radians(10), 0.1, 0.1, 0.5
"""The augmentation's ranges: degrees, relative scale, shear, pixels (each drawn uniformly)."""


def random_affine(vectors: Tensor) -> Tensor:
    """Each digit (a 64-D vector) rotated, scaled, sheared and shifted by a random small
    amount, with bilinear interpolation and zeros outside the image."""
    n = len(vectors)

    def uniform(bound: float, *shape: int) -> Tensor:
        return (2 * torch.rand(n, *shape) - 1) * bound

    angle, scale = uniform(MAX_ROTATION), 1 + uniform(MAX_SCALING)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    theta = torch.zeros(n, 2, 3)  # maps output to input coordinates in [-1, 1]
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + uniform(MAX_SHEAR)
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, :, 2] = uniform(MAX_SHIFT * 2 / 8, 2)  # one pixel is 2/8 of the width
    images = vectors.view(n, *SHAPE)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False).view(n, PIXELS)


def build_classifier(budget: Budget) -> LatentMixture:
    """AllInOneBlocks on 64-D vectors and ten learned diagonal Gaussians in the latent space."""
    # one hidden ReLU layer, the last layer zero: every block starts at the identity
    subnet = functools.partial(MLP, hidden=budget.classifier_hidden, hidden_layers=1)
    inn = ig.SequenceINN(PIXELS)
    for _ in range(budget.classifier_blocks):
        inn.append(
            ig.AllInOneBlock, subnet_constructor=subnet, affine_clamping=1.0, permute_soft=True
        )
    return LatentMixture(inn, n_classes=10, learn_scales=True, init_spread=5.0)


def accuracy(log_posterior: Tensor, labels: Tensor) -> float:
    return (log_posterior.argmax(1) == labels).float().mean().item()


def train_classifier(
    model: LatentMixture,
    data: dict[str, Split],
    budget: Budget,
    progress: bool = False,
    desc: str = "IB-INN",
) -> list[tuple[int, float]]:
    """The IB loss with early stopping on validation accuracy (the later checkpoint wins a
    tie); returns the validation curve (step, accuracy) and leaves ``model`` at its best."""
    x, y = data["train"].vectors, data["train"].labels
    x_val, y_val = data["val"].vectors, data["val"].labels
    steps = budget.classifier_steps
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    curve: list[tuple[int, float]] = []
    best, best_state = -1.0, None
    for step in tqdm(range(steps), desc=desc, disable=not progress, mininterval=2, leave=False):
        batch = torch.randint(0, len(x), (128,))
        loss = model.ib_loss(random_affine(x[batch]), y[batch], beta=BETA, noise_std=NOISE)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % budget.eval_every == 0 or step + 1 == steps:
            with torch.no_grad():
                val_accuracy = accuracy(model.class_log_posterior(x_val), y_val)
            curve.append((step + 1, val_accuracy))
            if val_accuracy >= best:
                best = val_accuracy
                best_state = {k: t.clone() for k, t in model.state_dict().items()}
    model.load_state_dict(best_state)
    return curve


@torch.no_grad()
def ensemble_log_posterior(models: list[LatentMixture], x: Tensor, rule: str) -> Tensor:
    """``log p(k | x)`` of an ensemble, ``(N, 10)``.

    ``rule="posterior"``: the average of the members' posteriors. ``rule="likelihood"``: Bayes'
    rule on the average of their class-conditional likelihoods ``p(x | k)`` (the ensemble
    as one mixture density per class).
    """
    if rule == "posterior":
        posteriors = torch.stack([m.class_log_posterior(x) for m in models])
        return torch.logsumexp(posteriors, 0) - math.log(len(models))
    likelihoods = torch.stack([m.class_log_likelihoods(x) for m in models])
    return torch.logsumexp(likelihoods, 0).log_softmax(1)


def svc_accuracies(data: dict[str, Split]) -> dict[str, float]:
    """scikit-learn's example SVC (RBF kernel, ``gamma=0.001`` on raw pixel values 0..16)."""
    pixels = {name: split.images.flatten(1).numpy() for name, split in data.items()}
    svc = SVC(gamma=0.001).fit(pixels["train"], data["train"].labels.numpy())
    return {name: svc.score(pixels[name], data[name].labels.numpy()) for name in ("val", "test")}


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


@dataclass
class DigitsResult:
    """The metrics of one run, and the trained models (for the figures)."""

    flow_bpd: dict[str, float]
    """Validation and test bits/dim of the flow."""
    baseline_bpd: dict[str, dict[str, float]]
    member_accuracy: list[dict[str, float]]
    ensemble_accuracy: dict[str, dict[str, float]]
    """Per combination rule ("posterior", "likelihood"): validation and test accuracy."""
    rule: str
    """The rule with the better validation accuracy (the reported ensemble)."""
    svc_accuracy: dict[str, float]
    confusion: np.ndarray
    flow_curve: list[tuple[int, float]]
    classifier_curves: list[list[tuple[int, float]]]
    flow: DigitsFlow = field(repr=False)
    classifiers: list[LatentMixture] = field(repr=False)

    @property
    def test_accuracy(self) -> float:
        return self.ensemble_accuracy[self.rule]["test"]


def run(quick: bool = False, seed: int = 0, progress: bool = False) -> DigitsResult:
    """Train and evaluate the flow (a) and the IB-INN ensemble (b) on the digits protocol."""
    budget = QUICK if quick else FULL
    data = load_split()
    torch.manual_seed(seed)
    baseline_bpd = baselines(data)

    flow = DigitsFlow(budget.flow_hidden, budget.flow_blocks, budget.flow_dropout)
    flow_curve = train_flow(flow, data, budget, progress)
    with torch.no_grad():
        flow_bpd = {
            name: flow.bits_per_dim(data[name].images, TEST_DRAWS).item()
            for name in ("val", "test")
        }

    classifiers, curves, member_accuracy = [], [], []
    for member in range(budget.members):
        torch.manual_seed(1000 * seed + member)
        model = build_classifier(budget)
        curves.append(train_classifier(model, data, budget, progress, desc=f"IB-INN {member + 1}"))
        model.eval()
        with torch.no_grad():
            member_accuracy.append(
                {
                    name: accuracy(model.class_log_posterior(data[name].vectors), data[name].labels)
                    for name in ("val", "test")
                }
            )
        classifiers.append(model)

    ensemble_accuracy = {
        rule: {
            name: accuracy(
                ensemble_log_posterior(classifiers, data[name].vectors, rule), data[name].labels
            )
            for name in ("val", "test")
        }
        for rule in ("posterior", "likelihood")
    }
    rule = max(ensemble_accuracy, key=lambda r: ensemble_accuracy[r]["val"])
    predictions = ensemble_log_posterior(classifiers, data["test"].vectors, rule).argmax(1)
    return DigitsResult(
        flow_bpd=flow_bpd,
        baseline_bpd=baseline_bpd,
        member_accuracy=member_accuracy,
        ensemble_accuracy=ensemble_accuracy,
        rule=rule,
        svc_accuracy=svc_accuracies(data),
        confusion=confusion_matrix(data["test"].labels.numpy(), predictions.numpy()),
        flow_curve=flow_curve,
        classifier_curves=curves,
        flow=flow,
        classifiers=classifiers,
    )


# ---------------------------------------------------------------------------------------
# Tables and figures
# ---------------------------------------------------------------------------------------


def density_table(result: DigitsResult) -> str:
    rows = [(name, values["val"], values["test"]) for name, values in result.baseline_bpd.items()]
    rows.append(("multiscale flow (invgraph)", result.flow_bpd["val"], result.flow_bpd["test"]))
    return markdown_table(["model", "validation bits/dim", "test bits/dim"], rows)


def classification_table(result: DigitsResult) -> str:
    members = np.array([[a["val"], a["test"]] for a in result.member_accuracy])
    n = len(members)
    rows: list[tuple[object, ...]] = [
        (
            f"IB-INN, single model (mean of {n})",
            float(members[:, 0].mean()),
            float(members[:, 1].mean()),
            f"{members[:, 1].min():.3f} - {members[:, 1].max():.3f}",
            f">= {ACCURACY_TARGET}",
        )
    ]
    for rule, label in (("posterior", "posteriors averaged"), ("likelihood", "likelihoods mixed")):
        chosen = " (chosen on validation)" if rule == result.rule else ""
        values = result.ensemble_accuracy[rule]
        rows.append(
            (
                f"IB-INN ensemble of {n}, {label}{chosen}",
                values["val"],
                values["test"],
                "",
                f">= {ACCURACY_TARGET}",
            )
        )
    rows.append(
        (
            "SVC (RBF, gamma 0.001), same split",
            result.svc_accuracy["val"],
            result.svc_accuracy["test"],
            "",
            f"about {SVC_EXAMPLE_ACCURACY} (scikit-learn example, 50/50 split)",
        )
    )
    headers = ["classifier", "validation accuracy", "test accuracy", "test range", "reference"]
    return markdown_table(headers, rows)


def show_digits(axes: np.ndarray, images: Tensor, vmax: float) -> None:
    for axis, image in zip(axes.flat, images):
        axis.imshow(image.reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=vmax)
        axis.axis("off")


def save_figures(result: DigitsResult, out: Path) -> list[Path]:
    """Flow samples, class-conditional IB-INN samples, confusion matrix and curves."""
    paths = [out / f"digits_{n}.png" for n in ("flow_samples", "class_samples", "classifier")]

    figure, axes = plt.subplots(6, 10, figsize=(6, 3.9))
    show_digits(axes, result.flow.sample(60, temperature=0.8).float(), LEVELS - 1)
    figure.suptitle(f"Multiscale flow samples, T = 0.8 (test {result.flow_bpd['test']:.2f} bpd)")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.2, hspace=0.2)
    figure.savefig(paths[0], dpi=100)
    plt.close(figure)

    model = result.classifiers[0]
    with torch.no_grad():
        rows = [
            torch.cat([model.sample(1, k, temperature=0.0), model.sample(7, k, temperature=0.7)])
            for k in range(10)
        ]
    figure, axes = plt.subplots(10, 8, figsize=(4.4, 6))
    show_digits(axes, torch.cat(rows).clamp(0, 1), 1.0)
    figure.suptitle("IB-INN samples, one row per class\n(column 1: T = 0, others T = 0.7)")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.1, hspace=0.3)
    figure.savefig(paths[1], dpi=100)
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.imshow(result.confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(result.confusion):
        if count:
            left.text(j, i, str(count), ha="center", va="center", fontsize=7)
    left.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true")
    left.set_title(f"Ensemble on the test rows: accuracy {result.test_accuracy:.3f}")
    for k, curve in enumerate(result.classifier_curves):
        steps, values = zip(*curve)
        right.plot(steps, values, marker=".", label=f"model {k + 1}")
    right.axhline(ACCURACY_TARGET, color="grey", linestyle="--", label="target (test)")
    right.set(xlabel="training step", ylabel="validation accuracy", ylim=(0.85, 1.0))
    right.set_title("Validation accuracy during training")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(paths[2], dpi=100)
    plt.close(figure)
    return paths


def main() -> None:
    arguments = parse_arguments(__doc__.splitlines()[0])
    cpu_start = time.process_time()
    with stopwatch() as elapsed:
        result = run(quick=arguments.quick, seed=arguments.seed, progress=True)
    cpu_seconds = time.process_time() - cpu_start
    print("\n(a) Density, bits/dim (lower is better; uniform dequantization bound)\n")
    print(density_table(result))
    print("\n(b) Generative classification, accuracy\n")
    print(classification_table(result))
    for path in save_figures(result, arguments.out):
        print(f"saved {path}")
    print(f"run time {elapsed['seconds']:.0f} s ({cpu_seconds:.0f} s of CPU time)")


if __name__ == "__main__":
    main()
