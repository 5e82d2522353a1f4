"""Memory-efficient training against standard backpropagation: saved bytes and step time.

A convolutional coupling network: 3 x 32 x 32 images, Haar downsampling to 12 x 16 x 16,
then ``depth`` x (GLOW coupling with a 3-layer convolutional subnet, 64 hidden channels +
random channel permutation), batch 16, one thread. For each depth, both modes run the same
module objects (``inn.memory_efficient`` switched per round), so the weights are the same.

* Saved bytes: what autograd keeps for the backward pass of one training step, counted
  with :func:`invgraph.testing.saved_tensor_bytes` (storages saved for backward, each once,
  parameters excluded). Deterministic.
* Step time: forward, maximum-likelihood loss, backward; standard and memory-efficient
  rounds interleaved, the median of the per-round ratios.

Issue 5's targets: memory-efficient saved bytes flat in depth (depth 64 <= 1.2x depth 8),
<= 0.2x the standard mode at depth 32; step time <= 2x standard.

Run: ``python benchmarks/memory_efficient.py`` (a few minutes; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

import invgraph as ig
from invgraph.subnets import ConvNet
from invgraph.testing import saved_tensor_bytes

BATCH = 16
SUBNET = functools.partial(ConvNet, hidden=64)
"""3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv: Glow's coupling subnet, 64 channels."""


def build(depth: int) -> ig.GraphINN:
    x = ig.InputNode(3, 32, 32, name="x")
    nodes: list[ig.AbstractNode] = [x, ig.Node(x, ig.HaarDownsampling, name="haar")]
    for k in range(depth):
        nodes.append(ig.Node(nodes[-1], ig.GLOWCouplingBlock, {"subnet_constructor": SUBNET}))
        nodes.append(ig.Node(nodes[-1], ig.PermuteRandom, {"seed": k}))
    nodes.append(ig.OutputNode(nodes[-1], name="z"))
    inn = ig.GraphINN(nodes)
    with torch.no_grad():  # away from the identity initialisation
        for parameter in inn.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return inn


def training_step(inn: ig.GraphINN, x: torch.Tensor) -> torch.Tensor:
    z, log_det = inn(x)
    return (0.5 * z.square().flatten(1).sum(1) - log_det).mean()


def measure(depth: int, rounds: int) -> dict[str, float]:
    inn = build(depth)
    x = torch.randn(BATCH, 3, 32, 32)
    saved = {}
    for memory_efficient in (False, True):
        inn.memory_efficient = memory_efficient
        saved[memory_efficient] = saved_tensor_bytes(
            lambda: training_step(inn, x), exclude=inn.parameters()
        )
    ratios = []
    for _ in range(rounds):
        seconds = {}
        for memory_efficient in (False, True):
            inn.memory_efficient = memory_efficient
            inn.zero_grad(set_to_none=True)
            start = time.perf_counter()
            training_step(inn, x).backward()
            seconds[memory_efficient] = time.perf_counter() - start
        ratios.append(seconds[True] / seconds[False])
    return {
        "standard_mb": saved[False] / 2**20,
        "efficient_mb": saved[True] / 2**20,
        "time_ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths 2 and 4, 2 rounds")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    depths = (2, 4) if arguments.quick else (8, 16, 32, 64)
    rounds = 2 if arguments.quick else arguments.rounds

    results = {depth: measure(depth, rounds) for depth in depths}
    base = results[depths[0]]["efficient_mb"]
    print(f"Conv coupling network, 3x32x32, batch {BATCH}, one thread, {rounds} rounds")
    print(
        "| depth | saved standard (MB) | saved memory-efficient (MB) | efficient / standard "
        f"| efficient / efficient at depth {depths[0]} | step time efficient / standard |"
    )
    print("|---|---|---|---|---|---|")
    for depth, r in results.items():
        print(
            f"| {depth} | {r['standard_mb']:.1f} | {r['efficient_mb']:.2f} "
            f"| {r['efficient_mb'] / r['standard_mb']:.3f} | {r['efficient_mb'] / base:.2f} "
            f"| {r['time_ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
