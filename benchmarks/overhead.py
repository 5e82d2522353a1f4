"""What the graph engine costs over a bare Python loop calling the same modules.

A chain of 32 GLOW coupling blocks + 32 random permutations on 8-D data, batch 256, one
thread. Three runners share the very same module objects (and so the same weights):

* ``bare``: a Python loop ``for m in modules: (x,), j = m((x,), jac=True); ld = ld + j``;
* ``invgraph``: :class:`invgraph.GraphINN` over nodes holding those modules;
* ``sequence``: :class:`invgraph.SequenceINN` with those modules appended (the same engine);
* ``freia``: FrEIA 0.2's ``GraphINN`` (when ``freia`` is installed: ``pip install freia==0.2``).

For each we time the forward pass, the inverse pass and a training step (forward,
maximum-likelihood loss, backward, Adam step), interleaving the runners round by round and
taking medians, and print each runner's time as a ratio to ``bare``. Absolute times vary
between machines; the ratios are the result.

Run: ``python benchmarks/overhead.py`` (about a minute; ``--rounds`` to change, ``--quick``
for a smoke run).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import torch
from _timing import interleaved_times, median_ms, median_ratio
from torch import Tensor, nn

import invgraph as ig

DIMS = 8
BATCH = 256
N_COUPLINGS = 32
HIDDEN = 64


class Subnet(nn.Sequential):
    """The coupling blocks' subnetwork: Linear, ReLU, Linear."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Linear(c_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, c_out))


def block_specs() -> list[tuple[type, dict]]:
    specs = []
    for k in range(N_COUPLINGS):
        specs += [(ig.GLOWCouplingBlock, {"subnet_constructor": Subnet})]
        specs += [(ig.PermuteRandom, {"seed": k})]
    return specs


def build_invgraph(modules: list[nn.Module]) -> ig.GraphINN:
    node = ig.InputNode(DIMS, name="x")
    nodes = [node]
    for module in modules:
        node = ig.Node(node, module)
        nodes.append(node)
    nodes.append(ig.OutputNode(node, name="z"))
    return ig.GraphINN(nodes)


def build_sequence(modules: list[nn.Module]) -> ig.SequenceINN:
    inn = ig.SequenceINN(DIMS)
    for module in modules:
        inn.append(module)
    return inn


def build_freia():
    """FrEIA 0.2's GraphINN over the same block classes, or ``None`` without freia."""
    try:
        import FrEIA.framework as ff
    except ImportError:
        return None
    node = ff.InputNode(DIMS, name="x")
    nodes = [node]
    for block, args in block_specs():
        node = ff.Node(node, block, args)
        nodes.append(node)
    nodes.append(ff.OutputNode(node, name="z"))
    return ff.GraphINN(nodes)


def bare_runner(modules: list[nn.Module]) -> Callable:
    def run(x: Tensor, rev: bool = False):
        log_det = 0.0
        for module in reversed(modules) if rev else modules:
            (x,), block_log_det = module((x,), rev=rev, jac=True)
            log_det = log_det + block_log_det
        return x, log_det

    return run


def measure(runners: dict[str, Callable], params: list[nn.Parameter], rounds: int, reps: int):
    """Per task and runner: the median over rounds of (runner time / bare time).

    Each round times every runner back to back (in alternating order), so a ratio compares
    measurements taken within milliseconds of each other; the median over rounds discards
    rounds disturbed by other work on the machine.
    """
    optimizer = torch.optim.Adam(params, lr=1e-5)
    x = torch.randn(BATCH, DIMS)

    def forward(run):
        with torch.no_grad():
            run(x)

    def inverse(run):
        with torch.no_grad():
            run(x, rev=True)

    def train_step(run):
        optimizer.zero_grad(set_to_none=True)
        z, log_det = run(x)
        loss = (0.5 * z.pow(2).sum(dim=1) - log_det).mean()
        loss.backward()
        optimizer.step()

    tasks = {"forward": forward, "inverse": inverse, "training step": train_step}
    ratios, bare_ms = {}, {}
    for task, body in tasks.items():
        bodies = {name: functools.partial(body, run) for name, run in runners.items()}
        times = interleaved_times(bodies, rounds, reps)
        ratios[task] = {name: median_ratio(times, name, "bare") for name in runners}
        bare_ms[task] = median_ms(times, "bare")
    return ratios, bare_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds of 1 call")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.reps = 3, 1
    torch.set_num_threads(1)
    torch.manual_seed(0)

    freia = build_freia()
    if freia is not None:
        modules = list(freia.module_list)  # FrEIA built them: share them with every runner
    else:
        modules = [block(((DIMS,),), **kw) for block, kw in block_specs()]
    inn = build_invgraph(modules)
    runners = {"bare": bare_runner(modules), "invgraph": inn, "sequence": build_sequence(modules)}
    if freia is not None:
        runners["freia"] = freia

    # Same modules, same numbers: a benchmark of different computations would be void.
    x = torch.randn(BATCH, DIMS)
    z_bare, ld_bare = runners["bare"](x)
    for name, run in runners.items():
        z, log_det = run(x)
        assert torch.allclose(z, z_bare) and torch.allclose(log_det, ld_bare), name

    params = list(inn.parameters())
    ratios, bare_ms = measure(runners, params, args.rounds, args.reps)
    print(
        f"chain of {N_COUPLINGS} GLOW couplings + {N_COUPLINGS} permutations, {DIMS}-D, "
        f"batch {BATCH}, hidden {HIDDEN}, 1 thread; median over {args.rounds} rounds of "
        f"{args.reps} calls each"
    )
    print(f"{'':15}" + "".join(f"{name:>12}" for name in runners) + "   (time / bare time)")
    for task, per in ratios.items():
        cells = "".join(f"{per[name]:>12.3f}" for name in runners)
        print(f"{task:15}{cells}   bare = {bare_ms[task]:.2f} ms")
    if freia is None:
        print("(install freia==0.2 to print FrEIA's ratio beside ours)")


if __name__ == "__main__":
    main()
