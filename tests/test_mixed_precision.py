"""Mixed precision: under torch.autocast the subnetworks run in low precision, the rest not.

The policy (docs/performance.md): a block's subnetworks, where the compute is, run in the
autocast dtype (bfloat16 on CPU, float16 on CUDA); the bijection itself (couplings' affine
maps, mixing matrices and their inverses, splines) runs in the data's dtype, so forward and
inverse remain inverses to float32 rounding; log-dets are summed in at least float32, and
graphs return a float32 log-det. The sweep checks this on every registry block by replay:
a float32 run whose subnetworks return the low-precision outputs recorded under autocast
must reproduce the autocast run to float32 rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from registry import BLOCKS, BlockCase
from test_compile import as_list, graph_of
from torch import Tensor, nn

import invgraph as ig
from invgraph.modules import InvertibleModule, IResNetLayer
from invgraph.modules.base import sum_except_batch
from invgraph.toy_data import TWO_MOONS_ENTROPY, two_moons

# (device, low-precision dtype) of autocast; float16 on CUDA needs a GPU (conftest skips)
AUTOCASTS = [
    pytest.param(("cpu", torch.bfloat16), id="cpu-bfloat16"),
    pytest.param(("cuda", torch.float16), id="cuda-float16", marks=pytest.mark.cuda),
]


def subnetworks(model: nn.Module) -> list[nn.Module]:
    """The networks inside blocks: the outermost modules that are not invertible blocks."""
    found: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, InvertibleModule | nn.ModuleList | nn.ModuleDict):
            found += subnetworks(child)
        else:
            found.append(child)
    return found


@contextlib.contextmanager
def hooked(modules: list[nn.Module], hook) -> Iterator[None]:
    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run(model: nn.Module, ins: list[Tensor], cs: list[Tensor], rev: bool, replay=None):
    """Outputs and log-det; records the subnetworks' outputs, or replays ``replay``'s."""
    records: dict[nn.Module, list[Tensor]] = {}

    def record(module: nn.Module, args: tuple, output: Tensor) -> None:
        records.setdefault(module, []).append(output)

    def substitute(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return replay[module].pop(0).to(output.dtype)

    with torch.no_grad(), hooked(subnetworks(model), record if replay is None else substitute):
        outputs, log_det = model(ins, cs or None, rev=rev)
    return as_list(outputs), log_det, records


def _cases() -> list:
    """The deterministic registry cases (a stochastic log-det leaves nothing to compare)."""
    return [
        pytest.param(case, id=case.id) for case in BLOCKS if "log_det" not in case.known_failures
    ]


@pytest.mark.parametrize("autocast", AUTOCASTS)
@pytest.mark.parametrize("case", _cases())
def test_only_subnetworks_run_in_low_precision(case: BlockCase, autocast) -> None:
    device, low = autocast
    model, xs, cs = graph_of(case, batch=16, device=device)
    with torch.no_grad():
        reference_z, reference_log_det = model(xs, cs or None)
    replayable = not any(isinstance(m, IResNetLayer) for m in model.modules())

    with torch.autocast(device, dtype=low):
        zs, log_det, forward_records = run(model, xs, cs, rev=False)
        x_back, inverse_log_det, inverse_records = run(model, zs, cs, rev=True)

    recorded = [t for records in (forward_records, inverse_records) for t in records.values()]
    assert {t.dtype for ts in recorded for t in ts} <= {low}  # the subnetworks ran low
    assert bool(recorded) == (replayable and bool(subnetworks(model)))
    for outputs in (zs, x_back):
        assert all(t.dtype == torch.float32 and t.isfinite().all() for t in outputs)
    for value in (log_det, inverse_log_det):
        assert value.dtype == torch.float32 and value.isfinite().all()

    # Each of the D log-det terms moves by about one eps (the subnetwork's rounded output,
    # times the block's sensitivity to it); independent errors add up as sqrt(D). Measured
    # over this registry (5 seeds x 64 samples, bfloat16): at most 2.9 eps sqrt(D) (splines;
    # affine couplings 0.6); outputs at most 1.3 eps relative.
    eps, dims = torch.finfo(low).eps, sum(x[0].numel() for x in xs)
    error = (log_det - reference_log_det).abs().max() / (eps * dims**0.5)
    assert error <= 6, f"log-det off by {error:.2f} eps sqrt(D)"
    for z, reference in zip(zs, as_list(reference_z)):
        torch.testing.assert_close(z, reference, rtol=4 * eps, atol=4 * eps)

    if not replayable:  # IResNetLayer calls its layers functionally; its inverse iterates
        return
    replayed_z, replayed_log_det, _ = run(model, xs, cs, rev=False, replay=forward_records)
    torch.testing.assert_close(replayed_z, zs)
    torch.testing.assert_close(replayed_log_det, log_det)
    replayed_x, replayed_inverse, _ = run(model, zs, cs, rev=True, replay=inverse_records)
    torch.testing.assert_close(replayed_x, x_back)
    torch.testing.assert_close(replayed_inverse, inverse_log_det)
    torch.testing.assert_close(x_back, xs, rtol=1e-5, atol=1e-5)  # exact inverses still
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=1e-5, atol=1e-5)


def test_sum_except_batch_accumulates_in_float32() -> None:
    terms = torch.ones(2, 3000, dtype=torch.bfloat16)
    assert terms.sum(dim=1)[0] == 3008  # bfloat16 has 8 significant bits
    total = sum_except_batch(terms)
    assert total.dtype == torch.float32 and total.tolist() == [3000.0, 3000.0]
    assert sum_except_batch(torch.ones(2, 3, dtype=torch.float64)).dtype == torch.float64


def _dense(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


def _conv(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 1))


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_graphs_return_a_float32_log_det(low: torch.dtype) -> None:
    """A graph or sequence run wholly in low precision (no autocast) sums in float32."""
    torch.manual_seed(0)
    x = ig.InputNode(3, 8, 8, name="x")
    coupling = ig.Node(x, ig.GLOWCouplingBlock, {"subnet_constructor": _conv, "clamp": 1.0})
    scaling = ig.Node(coupling, ig.LearnedElementwiseScaling, {"init_scale": 1.3})
    graph = ig.GraphINN([x, coupling, scaling, ig.OutputNode(scaling)])
    sequence = ig.SequenceINN(12)
    sequence.append(ig.AllInOneBlock, subnet_constructor=_dense)
    sequence.append(ig.ActNorm)
    for model, data in ((graph, torch.randn(4, 3, 8, 8)), (sequence, torch.randn(4, 12))):
        with torch.no_grad():
            model(data)  # ActNorm's initialisation
            expected = model(data.to(low).float())[1]  # the same inputs, in float32
            z, log_det = model.to(low)(data.to(low))
        assert z.dtype == low and log_det.dtype == torch.float32
        error = (log_det - expected).abs() / (1 + expected.abs())
        assert error.max() <= 2 * torch.finfo(low).eps  # weights, data rounded: 0.4 measured


def _moons_flow() -> ig.GraphINN:
    """Two rational-quadratic spline couplings with permutations, as the quickstart."""

    def subnet(c_in: int, c_out: int) -> nn.Module:
        layers = [nn.Linear(c_in, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(64, c_out))

    nodes = [ig.InputNode(2, name="x")]
    for k in range(2):
        spline = {"subnet_constructor": subnet, "bins": 8, "bound": 4.0}
        nodes.append(ig.Node(nodes[-1], ig.RationalQuadraticSpline, spline, name=f"spline{k}"))
        nodes.append(ig.Node(nodes[-1], ig.PermuteRandom, {"seed": k}, name=f"permute{k}"))
    return ig.GraphINN([*nodes, ig.OutputNode(nodes[-1], name="z")])


def _nll(flow: nn.Module, x: Tensor) -> Tensor:
    z, log_det = flow(x)
    return (0.5 * z.square().sum(1) + np.log(2 * np.pi) - log_det).mean()


def _train(device: str, low: torch.dtype | None, steps: int = 200) -> float:
    """Test NLL (float32, 20 000 points) after ``steps`` Adam steps, under autocast or not."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    flow = _moons_flow().to(device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=steps)
    scaler = torch.amp.GradScaler(device, enabled=low == torch.float16)  # float16's range
    for _ in range(steps):
        with torch.autocast(device, dtype=low or torch.bfloat16, enabled=low is not None):
            loss = _nll(flow, two_moons(256, rng).to(device))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
    with torch.no_grad():
        return _nll(flow, two_moons(20_000, np.random.default_rng(123)).to(device)).item()


@pytest.mark.parametrize("autocast", AUTOCASTS)
def test_training_under_autocast_converges_like_float32(autocast) -> None:
    """Two moons, 200 steps: float32 reaches 2.43 nats (entropy 2.39), autocast within 0.004
    of it (bfloat16; seeds 0-2); float32 runs differ by 0.007 between seeds."""
    device, low = autocast
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small: one thread is faster and steadier
    try:
        full, mixed = _train(device, None), _train(device, low)
    finally:
        torch.set_num_threads(threads)
    assert full < TWO_MOONS_ENTROPY + 0.1  # trained: an untrained flow is above 3 nats
    assert mixed < full + 0.02
