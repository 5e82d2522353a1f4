"""Masked autoregressive flows of invgraph against zuko's: MAF and an autoregressive spline flow.

Each flow is built twice, as alike as the two libraries allow:

* ``MAF``: invgraph's :class:`invgraph.SequenceINN` of 3
  :class:`~invgraph.MaskedAffineAutoregressive` blocks against ``zuko.flows.MAF(D,
  transforms=3)``;
* ``NSF``: 3 :class:`~invgraph.MaskedRationalQuadraticAutoregressive` blocks (8 bins on
  ``[-5, 5]``, zuko's box) against ``zuko.flows.NSF(D, bins=8, transforms=3)``, zuko's
  fully autoregressive spline flow.

Both libraries' conditioners are MADE-style masked MLPs with hidden layers (64, 64) and
ReLUs; the orders are zuko's, natural, reversed, natural (``ordering="natural"``,
``"reversed"``, ``"natural"`` in invgraph). D = 8 features, batch 256; the ``+c4`` rows are
the same flows conditioned on a context of 4 features. The element-wise maps differ in
details that cost about the same (invgraph soft-clamps the affine log-scale with an
arctangent, zuko with ``s / (1 + |s / log(slope)|)``; the spline parametrisations differ a
little), the weights are independent random draws (invgraph's last layers, zero at
initialisation, are drawn small, so that no flow is the identity).

Three tasks per flow, each the same work in both libraries:

* ``density``: the log-probability of a batch under a standard normal base, no gradients:
  zuko's ``flow().log_prob(x)``; invgraph's ``z, log_det = inn(x)`` and
  ``sum(-z^2 / 2 - log(2 pi) / 2) + log_det``. One conditioner call per block.
* ``sampling``: draw a batch, no gradients: zuko's ``flow().sample((256,))``; invgraph's
  ``inn(torch.randn(256, D), rev=True, jac=False)``. A MAF's sampling direction takes D
  conditioner calls per block in both libraries.
* ``training``: negative log-likelihood of a batch, backward, Adam step (lr 1e-4).

Before timing, both flows are checked to give finite log-probabilities of shape (256,) and
samples of shape (256, D), the orders to be the same, and invgraph's flow to invert its
forward pass. All runs on one
thread (``torch.set_num_threads(1)``), timed in interleaved rounds (``_timing.py``); a
ratio is the median over rounds of invgraph's time over zuko's, taken side by side. The
target of the issue is a ratio <= 1.00 in every row. ``--cpu-time`` times the process's CPU
time rather than wall time, which is steadier on a machine busy with other jobs. Absolute
times vary between machines; the ratios are the result.

Run: ``python benchmarks/autoregressive.py`` (about a minute on 2 cores; ``--rounds``;
``--cpu-time``; ``--quick``, a smoke run of 2 rounds). Needs ``pip install zuko``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _timing import Times, interleaved_times, median_ms, median_ratio
from torch import Tensor, nn

import invgraph as ig

FEATURES, CONTEXT, BATCH = 8, 4, 256
HIDDEN, BINS, BOUND, TRANSFORMS = (64, 64), 8, 5.0, 3
ORDERINGS = ("natural", "reversed")  # zuko's MAF: ascending for even transforms, else descending
TARGET = 1.00  # invgraph / zuko, from the issue
TASKS = ("density", "sampling", "training")
REPS = {"density": 20, "sampling": 4, "training": 8}  # calls per timed round (full run)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class Case:
    """One flow: ``MAF`` or ``NSF``, unconditional or with a context."""

    kind: str
    context: int

    @property
    def label(self) -> str:
        return self.kind + (f" +c{self.context}" if self.context else "")


CASES = [Case("MAF", 0), Case("NSF", 0), Case("MAF", CONTEXT), Case("NSF", CONTEXT)]


# ---------------------------------------------------------------------------- the flows
class InvgraphFlow(nn.Module):
    """invgraph's flow with a standard normal base: ``log_prob`` and ``sample`` as zuko's."""

    def __init__(self, case: Case):
        super().__init__()
        self.inn = ig.SequenceINN(FEATURES)
        block = (
            ig.MaskedAffineAutoregressive
            if case.kind == "MAF"
            else ig.MaskedRationalQuadraticAutoregressive
        )
        extra = {} if case.kind == "MAF" else {"bins": BINS, "bound": BOUND}
        condition = {"cond": 0, "cond_shape": (case.context,)} if case.context else {}
        for k in range(TRANSFORMS):
            self.inn.append(block, hidden=HIDDEN, ordering=ORDERINGS[k % 2], **condition, **extra)
        with torch.no_grad():  # away from the identity of the zero initialisation
            for module in self.inn.modules():
                if isinstance(module, ig.subnets.MADE):
                    module.layers[-1].weight.normal_(0, 0.01)
                    module.layers[-1].bias.normal_(0, 0.01)

    def conditions(self, c: Tensor | None) -> list[Tensor] | None:
        return None if c is None else [c]

    def log_prob(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        z, log_det = self.inn(x, c=self.conditions(c))
        return (-0.5 * z.square() - HALF_LOG_2PI).sum(1) + log_det

    def sample(self, n: int, c: Tensor | None = None) -> Tensor:
        z = torch.randn(n, FEATURES)
        x, _ = self.inn(z, c=self.conditions(c), rev=True, jac=False)
        return x


def zuko_flow(case: Case) -> nn.Module:
    import zuko

    if case.kind == "MAF":
        return zuko.flows.MAF(FEATURES, case.context, transforms=TRANSFORMS, hidden_features=HIDDEN)
    return zuko.flows.NSF(
        FEATURES, case.context, bins=BINS, transforms=TRANSFORMS, hidden_features=HIDDEN
    )


class ZukoRunner:
    """zuko's flow behind the calls of :class:`InvgraphFlow`."""

    def __init__(self, flow: nn.Module):
        self.flow = flow

    def log_prob(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.flow(c).log_prob(x)

    def sample(self, n: int, c: Tensor | None = None) -> Tensor:
        # With a context of batch n, the base is expanded to n draws.
        return self.flow(c).sample(() if c is not None else (n,))


# ---------------------------------------------------------------------------- measuring
def bodies(
    model: InvgraphFlow | ZukoRunner, parameters: list[nn.Parameter], x: Tensor, c: Tensor | None
) -> dict[str, Callable[[], object]]:
    """The three tasks of one library's flow."""
    optimizer = torch.optim.Adam(parameters, lr=1e-4)

    def density() -> Tensor:
        with torch.no_grad():
            return model.log_prob(x, c)

    def sampling() -> Tensor:
        with torch.no_grad():
            return model.sample(BATCH, c)

    def training() -> None:
        optimizer.zero_grad(set_to_none=True)
        (-model.log_prob(x, c).mean()).backward()
        optimizer.step()

    return {"density": density, "sampling": sampling, "training": training}


def check(name: str, model: InvgraphFlow | ZukoRunner, x: Tensor, c: Tensor | None) -> None:
    """Finite log-probabilities of shape (batch,), samples of shape (batch, D)."""
    with torch.no_grad():
        log_prob, samples = model.log_prob(x, c), model.sample(BATCH, c)
    assert log_prob.shape == (BATCH,), f"{name}: log_prob of shape {tuple(log_prob.shape)}"
    assert torch.isfinite(log_prob).all(), f"{name}: log_prob not finite"
    assert samples.shape == (BATCH, FEATURES), f"{name}: samples of shape {samples.shape}"
    assert torch.isfinite(samples).all(), f"{name}: samples not finite"


def measure(case: Case, args: argparse.Namespace) -> dict[str, Times]:
    """Per task, the interleaved times of invgraph's and zuko's flows."""
    torch.manual_seed(0)
    x = torch.randn(BATCH, FEATURES)
    c = torch.randn(BATCH, case.context) if case.context else None
    ours, theirs = InvgraphFlow(case), zuko_flow(case)
    zuko_runner = ZukoRunner(theirs)
    for k, transform in enumerate(theirs.transform.transforms):  # the same orders
        assert torch.equal(ours.inn[k].conditioner.ranks, transform.order), case.label
    check(f"invgraph {case.label}", ours, x, c)
    check(f"zuko {case.label}", zuko_runner, x, c)
    with torch.no_grad():
        z, _ = ours.inn(x, c=ours.conditions(c))
        x_back, _ = ours.inn(z, c=ours.conditions(c), rev=True)
    torch.testing.assert_close(x_back, x, rtol=1e-4, atol=1e-4)

    runners = {
        "invgraph": bodies(ours, list(ours.parameters()), x, c),
        "zuko": bodies(zuko_runner, list(theirs.parameters()), x, c),
    }
    clock = time.process_time if args.cpu_time else time.perf_counter
    results = {}
    for task in TASKS:
        reps = 1 if args.quick else REPS[task]
        pair = {name: runner[task] for name, runner in runners.items()}
        results[task] = interleaved_times(pair, args.rounds, reps, args.warmup, clock)
    return results


def table(results: list[tuple[Case, dict[str, Times]]]) -> list[str]:
    """One row per flow and task: both times, the ratio and the target."""
    lines = [
        f"{'':20}{'invgraph ms':>13}{'zuko ms':>10}{'invgraph/zuko':>15}{'target':>14}",
    ]
    for case, per_task in results:
        for task in TASKS:
            times = per_task[task]
            ratio = median_ratio(times, "invgraph", "zuko")
            verdict = f"<={TARGET:.2f} {'pass' if ratio <= TARGET else 'FAIL'}"
            lines.append(
                f"{case.label + ' ' + task:20}{median_ms(times, 'invgraph'):>13.3f}"
                f"{median_ms(times, 'zuko'):>10.3f}{ratio:>15.3f}{verdict:>14}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=31, help="timing rounds per task")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per runner")
    parser.add_argument("--cpu-time", action="store_true", help="time CPU time, not wall time")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 1 call")
    args = parser.parse_args()
    try:
        import zuko  # noqa: F401
    except ImportError:
        sys.exit("this benchmark compares with zuko: pip install zuko")
    if args.quick:
        args.rounds, args.warmup = 2, 1
    torch.set_num_threads(1)

    start = time.perf_counter()
    results = [(case, measure(case, args)) for case in CASES]
    print(
        f"\nmasked autoregressive flows, invgraph {ig.__version__} against zuko "
        f"{__import__('zuko').__version__}: D = {FEATURES}, {TRANSFORMS} transforms, hidden "
        f"{HIDDEN}, NSF {BINS} bins, batch {BATCH}; +c{CONTEXT}: a context of {CONTEXT}\n"
        f"1 thread, {'CPU' if args.cpu_time else 'wall'} time; median over {args.rounds} "
        f"interleaved rounds of the per-round ratios\n"
    )
    print("\n".join(table(results)))
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
