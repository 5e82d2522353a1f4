r"""The demo of ``invgraph demo``: a small flow learns the two-moons density.

:func:`demo_flow` builds the flow: GLOW couplings whose subnetworks are
:class:`~invgraph.subnets.MLP`\ s, each followed by a random permutation. :func:`run_demo`
trains it by maximum likelihood under a standard normal base,

.. math::

    \log p(x) = \log \mathcal{N}(f(x); 0, I) + \log |\det J_f(x)|,

computed by :class:`~invgraph.distributions.FlowDensity`, then writes pictures of its
samples, its density and its graph, and prints the test negative log-likelihood beside the
exact entropy of the data (their gap is the KL divergence the model has left).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ._loading import CommandError
from ._output import INSTALL_DOT, NoDot, make_folder, save_figure, write_drawing
from .distributions import FlowDensity
from .framework import AbstractNode, GraphINN, InputNode, Node, OutputNode
from .modules import GLOWCouplingBlock, PermuteRandom
from .subnets import MLP
from .toy_data import TWO_MOONS_ENTROPY, two_moons

__all__ = ["demo_flow", "run_demo"]

INSTALL_EXTRA = 'pip install "invgraph[tutorials]"'


def demo_flow(blocks: int = 8, seed: int = 0) -> GraphINN:
    """The demo's flow on 2-d data: GLOW couplings, each followed by a random permutation.

    The couplings' subnetworks are :class:`~invgraph.subnets.MLP` (two hidden ReLU layers
    of 64 units, the last layer zero: the flow starts as a permutation of its input).

    Arguments:
        blocks: Number of coupling blocks.
        seed: Seed of the permutations (the weights follow torch's global generator).

    Example:
        >>> import torch
        >>> from invgraph.demo import demo_flow
        >>> flow = demo_flow(blocks=2)
        >>> [node.name for node in flow.node_list]
        ['x', 'coupling0', 'permute0', 'coupling1', 'permute1', 'z']
        >>> z, log_det = flow(torch.randn(5, 2))
        >>> tuple(z.shape), tuple(log_det.shape)
        ((5, 2), (5,))
    """
    nodes: list[AbstractNode] = [InputNode(2, name="x")]
    for k in range(blocks):
        coupling = {"subnet_constructor": MLP, "clamp": 2.0}
        nodes.append(Node(nodes[-1], GLOWCouplingBlock, coupling, name=f"coupling{k}"))
        nodes.append(Node(nodes[-1], PermuteRandom, {"seed": seed + k}, name=f"permute{k}"))
    nodes.append(OutputNode(nodes[-1], name="z"))
    return GraphINN(nodes)


def run_demo(
    output: str | os.PathLike[str] = "invgraph-demo", steps: int = 600, seed: int = 0
) -> float:
    """Train :func:`demo_flow` on two moons; write ``samples.png``, ``density.png`` and
    ``graph.svg`` (``graph.dot`` without Graphviz's ``dot``) to ``output``; print the test
    NLL; return it (nats).

    Adam with a cosine schedule, batches of 256 fresh points, on one thread (about half a
    minute for the default 600 steps on 2 cores); the test NLL is measured on 20,000 fresh
    points. Needs matplotlib and tqdm (``pip install "invgraph[tutorials]"``).

    Arguments:
        output: The folder to write to; created if missing.
        steps: Training steps.
        seed: Seeds the weights (torch's global generator), the permutations and the data.

    Raises:
        InvGraphError: When matplotlib or tqdm is missing, ``output`` cannot be written, or
            ``steps`` or ``seed`` is out of range.

    Example:
        >>> import tempfile
        >>> from invgraph.demo import run_demo
        >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +ELLIPSIS
        ...     nll = run_demo(folder, steps=2)
        training 8 GLOW couplings (70,688 parameters) on two moons
        trained 2 steps in ... s
        test NLL ... nats; the data's entropy is about 2.39 nats (the gap, ..., is the KL ...)
        samples: .../samples.png
        density: .../density.png
        graph:   .../graph...
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CommandError(f"the demo's steps must be a positive integer, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CommandError(f"the demo's seed must be an integer >= 0, got {seed!r}")
    try:
        from matplotlib.figure import Figure  # renders with Agg; leaves pyplot's state alone
        from tqdm import tqdm
    except ImportError as err:
        raise CommandError(
            f"the demo needs matplotlib and tqdm ({err}); install them: {INSTALL_EXTRA}"
        ) from err
    output = Path(output)
    make_folder(output)
    with _one_thread():
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        flow = demo_flow(seed=seed)
        density = FlowDensity(flow)
        blocks = sum(isinstance(m, GLOWCouplingBlock) for m in flow.module_list)
        parameters = sum(p.numel() for p in flow.parameters())
        print(f"training {blocks} GLOW couplings ({parameters:,} parameters) on two moons")
        start = time.perf_counter()
        _train(density, steps, rng, tqdm)
        print(f"trained {steps} steps in {time.perf_counter() - start:.1f} s")
        density.eval()
        with torch.no_grad():
            test_nll = density.nll(two_moons(20_000, rng)).item()
            samples = _plot_samples(Figure(figsize=(9, 4), layout="constrained"), density, rng)
            picture = _plot_density(Figure(figsize=(6, 4), layout="constrained"), density, test_nll)
    print(
        f"test NLL {test_nll:.3f} nats; the data's entropy is about {TWO_MOONS_ENTROPY:.2f} nats "
        f"(the gap, {test_nll - TWO_MOONS_ENTROPY:.3f}, is the KL divergence left to close)"
    )
    print(f"samples: {save_figure(samples, output / 'samples.png')}")
    print(f"density: {save_figure(picture, output / 'density.png')}")
    try:
        path, note = write_drawing(flow, output / "graph.svg")
    except NoDot:  # neither dot nor matplotlib: the DOT source
        path, _ = write_drawing(flow, output / "graph.dot")
        note = f" (the DOT source: Graphviz's dot is not installed; {INSTALL_DOT} to render it)"
    print(f"graph:   {path}{note}")
    return test_nll


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one thread: a network this small gains nothing from intra-op threads, and
    on a busy machine they spin (one thread trained ten times faster than two on two loaded
    cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(density: FlowDensity, steps: int, rng: np.random.Generator, tqdm: Any) -> None:
    """Maximum likelihood with Adam and a cosine schedule, batches of 256 fresh points."""
    optimizer = torch.optim.Adam(density.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    with tqdm(range(steps), desc="training", unit="step", file=sys.stderr) as bar:
        for step in bar:
            loss = density.nll(two_moons(256, rng))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 20 == 0:
                bar.set_postfix(nll=f"{loss.item():.3f}", refresh=False)


_LIMITS = {"xlim": (-3.5, 3.5), "ylim": (-2.2, 2.8)}


def _plot_samples(figure: Any, density: FlowDensity, rng: np.random.Generator) -> Any:
    """Data and samples side by side; sampling runs the flow in reverse on ``z ~ N(0, I)``."""
    data = two_moons(2_000, rng).numpy()
    samples = cast(torch.Tensor, density.sample(2_000)).numpy()  # one input: a bare tensor
    titles = ("data (two moons)", "samples from the flow")
    for axes, points, title in zip(figure.subplots(1, 2, sharey=True), (data, samples), titles):
        axes.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color="#1f5fa0")
        axes.set(title=title, aspect="equal", **_LIMITS)
    return figure


def _plot_density(figure: Any, density: FlowDensity, test_nll: float) -> Any:
    """The learned density ``exp(log p(x))`` on a grid."""
    xs, ys = torch.linspace(*_LIMITS["xlim"], 281), torch.linspace(*_LIMITS["ylim"], 201)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    values = density.log_prob(grid).exp().reshape(len(ys), len(xs)).numpy()
    axes = figure.subplots()
    extent = (*_LIMITS["xlim"], *_LIMITS["ylim"])
    image = axes.imshow(values, extent=extent, origin="lower", cmap="viridis")
    axes.set(title=f"learned density exp(log p(x)), test NLL {test_nll:.3f} nats")
    figure.colorbar(image, ax=axes, label="p(x)")
    return figure
