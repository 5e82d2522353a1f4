"""When memory-efficient gradients go wrong: reconstruction error against gradient error.

The memory-efficient mode rebuilds every block's inputs from its outputs with the block's
inverse, so its gradients are exact only as far as the whole chain of inverses
reconstructs the activations. This script makes the chain harder to invert, step by step,
and prints, in float32 and float64:

* ``round trip``: the largest relative error of ``f^{-1}(f(x))`` against ``x`` (per
  sample, ``|x' - x| / |x|``), the error the backward pass starts from;
* ``gradient``: the largest relative error of the memory-efficient gradients against
  standard backpropagation (per tensor, ``max |g' - g| / max |g|``), NaN counted as inf;
* ``check``: what ``reconstruction_tolerance=1e-3`` says (``ok`` or ``raised``).

The knob is how far the couplings are from the identity: their subnets' last layers are
drawn with standard deviation ``scale / sqrt(fan_in)`` (0 at initialisation), so larger
scales give log-scales nearer ``±clamp`` and shifts that vary faster with the other half;
each inverse then multiplies the rounding errors of its outputs by up to ``e^clamp``, over
the whole depth.

Run: ``python benchmarks/reconstruction.py`` (about a minute; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import invgraph as ig

DIMS = 16
BATCH = 64


class Subnet(nn.Sequential):
    """Linear, Tanh, Linear: a coupling's subnetwork."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Linear(c_in, 32), nn.Tanh(), nn.Linear(32, c_out))


def coupling_chain(depth: int, clamp: float, scale: float) -> ig.SequenceINN:
    """GLOW couplings and permutations, the subnets' last layers drawn with standard
    deviation ``scale / sqrt(fan_in)``."""
    torch.manual_seed(0)
    inn = ig.SequenceINN(DIMS)
    for k in range(depth):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=Subnet, clamp=clamp)
        inn.append(ig.PermuteRandom, seed=k)
    with torch.no_grad():
        for name, parameter in inn.named_parameters():
            if name.endswith("2.weight"):  # the subnets' last layers
                parameter.normal_(0.0, scale / math.sqrt(parameter.shape[1]))
    return inn


def gradients(inn: ig.SequenceINN, x: torch.Tensor, memory_efficient: bool) -> list:
    inn.memory_efficient = memory_efficient
    inn.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    z, log_det = inn(x)
    loss = (0.5 * z.square().sum(dim=1) - log_det).mean() / DIMS
    loss.backward()
    return [x.grad] + [p.grad for p in inn.parameters()]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    error = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    return math.inf if math.isnan(error) else error


def measure(depth: int, clamp: float, scale: float, dtype: torch.dtype) -> tuple:
    inn = coupling_chain(depth, clamp, scale).to(dtype)
    x = torch.randn(BATCH, DIMS, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        z, _ = inn(x)
        x_back, _ = inn(z, rev=True)
    per_sample = (x_back - x).norm(dim=1) / x.norm(dim=1)
    round_trip = float(per_sample.nan_to_num(math.inf).max())
    standard = gradients(inn, x, memory_efficient=False)
    efficient = gradients(inn, x, memory_efficient=True)
    gradient = max(relative(a, b) for a, b in zip(efficient, standard) if b is not None)
    inn.reconstruction_tolerance = 1e-3
    try:
        gradients(inn, x, memory_efficient=True)
        verdict = "ok"
    except ig.InvGraphError:
        verdict = "raised"
    return round_trip, gradient, verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two settings only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = [(depth, 2.0, scale) for depth in (16, 64) for scale in (0.3, 1.0, 2.0, 3.0)]
    if args.quick:
        settings = [settings[0], settings[-1]]
    print(f"GLOW couplings (clamp 2) + permutations, {DIMS}-D, batch {BATCH}, one thread")
    header = "depth  scale  dtype    round trip  gradient  check (1e-3)"
    print(header)
    print("-" * len(header))
    for depth, clamp, scale in settings:
        for dtype in (torch.float32, torch.float64):
            round_trip, gradient, verdict = measure(depth, clamp, scale, dtype)
            name = str(dtype).removeprefix("torch.")
            print(
                f"{depth:5d}  {scale:5.1f}  {name:7s}  {round_trip:10.1e}  {gradient:8.1e}  "
                f"{verdict}"
            )


if __name__ == "__main__":
    main()
