"""ContinuousFlow and flow_matching_loss: solver orders, log-det accuracy, the trace estimator,
compilation, mixed precision, graphs, and training by flow matching."""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import invgraph as ig
from invgraph.errors import InvGraphError
from invgraph.losses import _hungarian, _ot_permutation, flow_matching_loss
from invgraph.modules import ContinuousFlow
from invgraph.testing import check_block

F64 = torch.float64
ORDERS = {"rk4": 4, "midpoint": 2, "euler": 1}


def perturbed(solver: str = "rk4", steps: int = 8, **kwargs) -> ContinuousFlow:
    """The default field at seed 0 with its last layer drawn with standard deviation 1: a
    fixed smooth field (SiLU) far from the identity (mean |log det| 0.55), in float64."""
    torch.manual_seed(0)
    block = ContinuousFlow([(2,)], steps=steps, solver=solver, **kwargs).double()
    nn.init.normal_(block.field[-1].weight, std=1.0)
    return block


def points(n: int = 64, d: int = 2, seed: int = 1) -> Tensor:
    return torch.randn(n, d, dtype=F64, generator=torch.Generator().manual_seed(seed))


def jacobian_log_det(block: ContinuousFlow, at: Tensor, rev: bool = False) -> Tensor:
    """log|det| of the autograd Jacobian of the block's discretised map, per sample."""

    def one(v: Tensor) -> Tensor:
        return block((v[None],), rev=rev, jac=False)[0][0][0]

    return torch.linalg.slogdet(torch.func.vmap(torch.func.jacrev(one))(at)).logabsdet


def errors(solver: str, steps: int) -> dict[str, float]:
    """The figures of ContinuousFlow's docstring, at ``steps`` steps of ``solver``."""
    block, x = perturbed(solver, steps), points()
    with torch.no_grad():  # torch.func's Jacobians need no grad mode
        (z,), log_det = block((x,))
        (x_back,), inverse_log_det = block((z,), rev=True)
        reference = perturbed("rk4", 256)((x,), jac=False)[0][0]
        return {
            "global": float((z - reference).abs().max()),
            "round_trip": float((x_back - x).abs().max()),
            "log_det": float((log_det - jacobian_log_det(block, x)).abs().max()),
            "inverse_log_det": float(
                (inverse_log_det - jacobian_log_det(block, z, True)).abs().max()
            ),
            "symmetry": float((log_det + inverse_log_det).abs().max()),
        }


# Measured (torch 2.13, CPU): the table of ContinuousFlow's docstring.
MEASURED = {
    ("rk4", 8): {"global": 2.5e-6, "round_trip": 4.4e-7, "log_det": 1.8e-6},
    ("rk4", 16): {"global": 1.7e-7, "round_trip": 1.4e-8, "log_det": 1.1e-7},
    ("midpoint", 8): {"global": 4.8e-3, "round_trip": 4.5e-4, "log_det": 4.0e-3},
    ("midpoint", 16): {"global": 1.3e-3, "round_trip": 5.6e-5, "log_det": 1.1e-3},
    ("euler", 8): {"global": 1.2e-1, "round_trip": 1.1e-1, "log_det": 6.0e-2},
    ("euler", 16): {"global": 6.3e-2, "round_trip": 5.6e-2, "log_det": 3.2e-2},
}


@pytest.mark.parametrize("solver", ["rk4", "midpoint", "euler"])
def test_errors_fall_at_the_solver_order(solver):
    coarse, fine = errors(solver, 8), errors(solver, 16)
    p = ORDERS[solver]
    for steps, measured in ((8, coarse), (16, fine)):
        for name, value in MEASURED[(solver, steps)].items():
            assert measured[name] < 1.2 * value, (name, steps, measured[name])
    # The map's error against the exact flow: order p (measured ratios 15.0, 3.8, 1.9).
    assert 0.85 * 2**p < coarse["global"] / fine["global"] < 1.1 * 2**p
    # The log-det's error against the discretised map's Jacobian: order p, both directions
    # (15.5, 3.7, 1.9).
    for name in ("log_det", "inverse_log_det"):
        assert 0.85 * 2**p < coarse[name] / fine[name] < 1.1 * 2**p, name
    # The round trip: order p + 1 for the even orders (32.0, 8.0), as the adjoint of an
    # even-order method shares its leading error term, which the round trip cancels
    # (Hairer, Lubich, Wanner, Geometric Numerical Integration, II.3); Euler: order 1 (1.96).
    q = p + 1 if p % 2 == 0 else p
    assert 0.85 * 2**q < coarse["round_trip"] / fine["round_trip"] < 1.1 * 2**q
    assert 0.85 * 2**q < coarse["symmetry"] / fine["symmetry"] < 1.1 * 2**q


def test_starts_as_the_identity():
    block = ContinuousFlow([(2, 3)], dims_c=[(4,)], hidden=(16,), time_frequencies=2)
    x, c = torch.randn(5, 2, 3), torch.randn(5, 4)
    for rev in (False, True):
        (z,), log_det = block((x,), c=(c,), rev=rev)
        assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(5))


def test_a_near_identity_field_passes_every_check():
    # check_block's perturbation (0.05) of the zero last layer leaves a small field: the
    # solver's errors stay below the checks' float64 tolerances (measured over seeds 0-2:
    # round trip <= 7e-14, log-det <= 1.2e-12).
    torch.manual_seed(0)
    block = ContinuousFlow([(4,)], dims_c=[(2,)], hidden=(8, 8), steps=8)
    check_block(block).assert_ok()


def test_velocity_is_the_field_of_x_time_features_and_conditions():
    torch.manual_seed(0)
    block = ContinuousFlow([(1, 3)], dims_c=[(2,), (1, 2)], hidden=(8,), time_frequencies=2)
    nn.init.normal_(block.field[-1].weight)
    assert block.field[0].in_features == 3 + 1 + 2 * 2 + 2 + 2
    x, c = torch.randn(4, 1, 3), (torch.randn(4, 2), torch.randn(4, 1, 2))
    t = torch.rand(4)
    angles = math.pi * t[:, None] * torch.tensor([1.0, 2.0])
    inputs = torch.cat([x.flatten(1), t[:, None], angles.sin(), angles.cos(), c[0], c[1][:, 0]], 1)
    expected = block.field(inputs).reshape(4, 1, 3)
    torch.testing.assert_close(block.velocity(x, t, c), expected)
    torch.testing.assert_close(block.velocity(x, t[:, None], c), expected)
    same_time = block.velocity(x, 0.5, c)
    torch.testing.assert_close(same_time, block.velocity(x, torch.full((4,), 0.5), c))


def test_one_euler_step_is_x_plus_v_and_its_log_det_the_divergence():
    torch.manual_seed(0)
    block = ContinuousFlow([(3,)], hidden=(8,), steps=1, solver="euler").double()
    nn.init.normal_(block.field[-1].weight)
    x = points(5, 3)
    (z,), log_det = block((x,))
    torch.testing.assert_close(z, x + block.velocity(x, 0.0))

    def divergence(at: Tensor, t: float) -> Tensor:
        one = torch.func.jacrev(lambda v: block.velocity(v[None], t)[0])
        return torch.func.vmap(one)(at).diagonal(dim1=1, dim2=2).sum(1)

    torch.testing.assert_close(log_det, divergence(x, 0.0))
    (x_back,), inverse_log_det = block((z,), rev=True)  # one step back from t = 1
    torch.testing.assert_close(x_back, z - block.velocity(z, 1.0))
    torch.testing.assert_close(inverse_log_det, -divergence(z, 1.0))


def test_conditions_change_the_map():
    torch.manual_seed(1)
    block = ContinuousFlow([(3,)], dims_c=[(2,)], hidden=(16,), steps=16).double()
    nn.init.normal_(block.field[-1].weight, std=0.5)
    x, c1, c2 = points(4, 3), points(4, 2, seed=2), points(4, 2, seed=3)
    (z1,), ld1 = block((x,), c=(c1,))
    (z2,), ld2 = block((x,), c=(c2,))
    assert not torch.allclose(z1, z2) and not torch.allclose(ld1, ld2)
    (x_back,), _ = block((z1,), c=(c1,), rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-6, rtol=0)


def test_hutchinson_estimate_and_its_gradient_are_unbiased():
    exact, stochastic = perturbed(steps=4), perturbed(steps=4, log_det="hutchinson")
    x = points(1)
    truth = exact((x,))[1]
    wanted = torch.autograd.grad(truth.sum(), list(exact.parameters()))
    estimates = stochastic((x.expand(2000, 2),))[1]  # 2000 independent estimates at x
    spread = float(estimates.detach().std())
    assert spread > 0.1  # measured 0.69: noisy, one Rademacher vector per sample
    assert float(estimates.detach().mean()) == pytest.approx(
        float(truth.detach()), abs=4 * spread / 2000**0.5
    )
    grads = torch.autograd.grad(estimates.mean(), list(stochastic.parameters()), allow_unused=True)
    for grad, want in zip(grads, wanted):
        if grad is None:  # the output bias: the divergence does not depend on it
            assert want.abs().max() == 0
            continue
        assert (grad - want).norm() / want.norm() < 0.25  # measured <= 0.1


def test_hutchinson_draws_one_vector_per_call():
    block = perturbed(steps=2, log_det="hutchinson")
    x = points(20)
    torch.manual_seed(5)
    first = block((x,))[1]
    torch.manual_seed(5)
    assert torch.equal(block((x,))[1], first)
    assert not torch.equal(block((x,))[1], first)


def test_log_det_gradients_are_exact():
    block = perturbed(steps=2)
    weight = block.field[0].weight

    def log_det(x: Tensor, w: Tensor) -> Tensor:
        params = {"field.0.weight": w}
        return torch.func.functional_call(block, params, ((x,),))[1]

    x = points(2).requires_grad_()
    w = weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(log_det, (x, w))


@pytest.mark.parametrize("log_det", ["exact", "hutchinson"])
def test_compiles_without_graph_breaks(log_det):
    torch.manual_seed(0)
    block = ContinuousFlow([(3,)], dims_c=[(2,)], hidden=(8,), steps=2, log_det=log_det)
    nn.init.normal_(block.field[-1].weight, std=0.5)
    x, c = torch.randn(4, 3, requires_grad=True), torch.randn(4, 2)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    results = []
    for run in (block, compiled):
        torch.manual_seed(7)
        (z,), forward = run((x,), c=(c,))
        (x_back,), inverse = run((z,), c=(c,), rev=True)
        loss = z.square().sum() + forward.sum() + inverse.sum()
        results.append((z, forward, x_back, inverse, *torch.autograd.grad(loss, [x])))
    torch.testing.assert_close(results[1], results[0])


def test_exports_without_the_log_det():
    # torch.func (the divergence) does not export in torch 2.13, and a failed attempt leaves
    # functorch's state broken for the process: only the map is exported, as for sampling.
    block = perturbed(steps=4).float().eval()

    class Sample(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block

        def forward(self, z: Tensor) -> Tensor:
            return self.block((z,), rev=True, jac=False)[0][0]

    batch = torch.export.Dim("batch", min=2)
    with torch.no_grad():
        program = torch.export.export(Sample(), (torch.randn(4, 2),), dynamic_shapes=[{0: batch}])
        z = torch.randn(9, 2)
        torch.testing.assert_close(program.module()(z), Sample()(z))


def test_field_runs_in_low_precision_under_autocast():
    block = perturbed().float()
    x = points(256).float()
    dtypes = set()
    block.field.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    with torch.no_grad():
        (reference,), reference_log_det = block((x,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            (z,), log_det = block((x,))
            (x_back,), inverse_log_det = block((z,), rev=True)
    assert dtypes == {torch.float32, torch.bfloat16}
    assert {t.dtype for t in (z, log_det, x_back, inverse_log_det)} == {torch.float32}
    # The field's rounding (bfloat16: eps 7.8e-3) moves everything: measured round trip
    # 1.3e-3 (float32 without autocast: 1.4e-6), outputs 1.8e-2 and log-det 5.3e-3 off the
    # float32 run's.
    assert (x_back - x).abs().max() < 5e-3
    assert (z - reference).abs().max() < 4e-2
    assert (log_det - reference_log_det).abs().max() < 2e-2


def graph() -> ig.GraphINN:
    """ActNorm, a conditional continuous flow, a permutation and a conditional coupling."""
    x, y = ig.InputNode(4, name="x"), ig.ConditionNode(2, name="y")
    nodes = [x, y, ig.Node(x, ig.ActNorm, name="actnorm")]
    cnf = {"hidden": (8, 8), "steps": 8}
    nodes.append(ig.Node(nodes[-1], ig.ContinuousFlow, cnf, conditions=y, name="cnf"))
    nodes.append(ig.Node(nodes[-1], ig.PermuteRandom, {"seed": 0}, name="permute"))
    subnet = {"subnet_constructor": lambda c_in, c_out: ig.MLP(c_in, c_out, hidden=8)}
    nodes.append(ig.Node(nodes[-1], ig.GLOWCouplingBlock, subnet, conditions=y, name="glow"))
    return ig.GraphINN([*nodes, ig.OutputNode(nodes[-1], name="z")])


def test_composes_with_other_blocks_in_a_graph():
    check_block(graph()).assert_ok()


def test_memory_efficient_graph_stores_the_flows_inputs_and_gets_the_same_gradients():
    torch.manual_seed(0)
    standard = graph().double()
    with torch.no_grad():
        for parameter in standard.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    x, y = points(8, 4), points(8, 2, seed=2)
    grads = []
    for memory_efficient in (False, True):
        standard.memory_efficient = memory_efficient
        z, log_det = standard(x, y)
        loss = (0.5 * z.square().sum(1) - log_det).mean()
        grads.append(torch.autograd.grad(loss, list(standard.parameters())))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ([[(3,), (3,)]], {}, r"expects exactly 1 input .*\[\(3,\), \(3,\)\]"),
        ([[(3,)]], {"steps": 0}, "steps must be a positive integer, got 0"),
        ([[(3,)]], {"steps": 2.0}, "steps must be a positive integer, got 2.0"),
        ([[(3,)]], {"solver": "rk45"}, r"solver must be one of .*'rk4'.*, got 'rk45'"),
        ([[(3,)]], {"log_det": "trace"}, r"log_det must be one of \['exact', 'hutchinson'\]"),
        ([[(3,)]], {"hidden": (8, 0)}, r"hidden widths must be positive integers, got \(8, 0\)"),
        (
            [[(3,)]],
            {"activation": nn.SiLU()},
            r"pass the class \(SiLU\), not a module",
        ),
        ([[(3,)]], {"activation": torch.nn.functional.silu}, "silu.* failed"),
        ([[(3,)]], {"activation": lambda: torch.tanh}, "must return an nn.Module"),
        ([[(3,)]], {"time_frequencies": -1}, "time_frequencies must be an integer >= 0, got -1"),
        ([[(3,)]], {"field_constructor": 3}, "field_constructor must be callable"),
        ([[(3,)]], {"field_constructor": lambda i, o: None}, "must return an nn.Module"),
    ],
)
def test_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(InvGraphError, match=rf"^ContinuousFlow: .*{match}"):
        ContinuousFlow(*args, **kwargs)


def test_rejects_a_field_of_the_wrong_output_shape():
    block = ContinuousFlow([(3,)], field_constructor=lambda c_in, c_out: nn.Linear(c_in, 2))
    with pytest.raises(
        InvGraphError,
        match=r"ContinuousFlow: the field must map .* \(B, 4\) .* \(B, 3\), .* \(4, 2\)",
    ):
        block((torch.randn(4, 3),))


def test_velocity_rejects_bad_shapes():
    block = ContinuousFlow([(3,)], hidden=(4,))
    with pytest.raises(InvGraphError, match=r"velocity expects x of shape \(B, 3\)"):
        block.velocity(torch.randn(4, 2), 0.5)
    with pytest.raises(InvGraphError, match=r"velocity expects t of shape .*received \(3,\)"):
        block.velocity(torch.randn(4, 3), torch.rand(3))


# Flow matching


def test_flow_matching_loss_is_the_regression_on_straight_paths():
    torch.manual_seed(0)
    flow = ContinuousFlow([(2, 2)], dims_c=[(3,)], hidden=(8,))
    nn.init.normal_(flow.field[-1].weight)
    x, z, c, t = torch.randn(6, 2, 2), torch.randn(6, 2, 2), torch.randn(6, 3), torch.rand(6)
    x_t = (1 - t[:, None, None]) * x + t[:, None, None] * z
    expected = (flow.velocity(x_t, t, (c,)) - (z - x)).square().mean()
    torch.testing.assert_close(flow_matching_loss(flow, x, (c,), noise=z, t=t), expected)
    identity = ContinuousFlow([(2, 2)], dims_c=[(3,)], hidden=(8,))  # v = 0 at first
    loss = flow_matching_loss(identity, x, (c,), noise=z, t=t)
    torch.testing.assert_close(loss, (z - x).square().mean())


def test_hungarian_assignment_is_optimal():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 6):
        for _ in range(10):
            cost = rng.random((n, n))
            order = _hungarian(cost)
            best = min(
                sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n))
            )
            assert sorted(order.tolist()) == list(range(n))
            assert cost[np.arange(n), order].sum() == pytest.approx(best, abs=1e-12)
    scipy_optimize = pytest.importorskip("scipy.optimize")
    cost = rng.random((100, 100))
    rows, cols = scipy_optimize.linear_sum_assignment(cost)
    order = _hungarian(cost)
    assert cost[np.arange(100), order].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-10)


def test_ot_pairing_permutes_the_noise_to_the_optimal_plan():
    torch.manual_seed(0)
    flow = ContinuousFlow([(2,)], hidden=(8,))
    nn.init.normal_(flow.field[-1].weight)
    x, z, t = torch.randn(7, 2), torch.randn(7, 2), torch.rand(7)
    best = min(
        itertools.permutations(range(7)), key=lambda p: float((x - z[list(p)]).square().sum())
    )
    assert _ot_permutation(x, z).tolist() == list(best)
    paired = flow_matching_loss(flow, x, noise=z, t=t, ot_pairing=True)
    torch.testing.assert_close(paired, flow_matching_loss(flow, x, noise=z[list(best)], t=t))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: flow_matching_loss(ig.ActNorm([(2,)]), torch.randn(4, 2)), "ContinuousFlow"),
        (lambda f: flow_matching_loss(f, torch.randn(4, 3)), r"x of shape \(B, 2\).*\(4, 3\)"),
        (lambda f: flow_matching_loss(f, torch.randn(0, 2)), r"B >= 1.*received \(0, 2\)"),
        (lambda f: flow_matching_loss(f, torch.randn(4, 2)), r"1 condition\(s\).*received 0"),
        (
            lambda f: flow_matching_loss(f, torch.randn(4, 2), [torch.randn(3, 1)]),
            r"condition 0 of shape \(4, 1\), received \(3, 1\)",
        ),
        (
            lambda f: flow_matching_loss(f, torch.randn(4, 2), [torch.randn(4, 1)], torch.ones(4)),
            r"noise must have the shape of x, \(4, 2\), received \(4,\)",
        ),
        (
            lambda f: flow_matching_loss(
                f, torch.randn(4, 2), [torch.randn(4, 1)], t=torch.rand(4, 1)
            ),
            r"t of shape \(4,\), received \(4, 1\)",
        ),
    ],
)
def test_flow_matching_rejects_bad_inputs(call, match):
    flow = ContinuousFlow([(2,)], dims_c=[(1,)], hidden=(4,))
    with pytest.raises(InvGraphError, match=rf"^flow_matching_loss: .*{match}"):
        call(flow)


def test_flow_matching_learns_a_gaussian():
    # N(mean, cov) in 2-D, 500 Adam steps of 256 points (about 1.5 s). Measured over seeds
    # 0-4: KL(data || model) <= 0.007 nats; the samples' covariance off by <= 0.12.
    torch.manual_seed(0)
    mean, cov = torch.tensor([1.0, -0.5]), torch.tensor([[1.5, 0.9], [0.9, 1.0]])
    data = torch.distributions.MultivariateNormal(mean, cov)
    flow = ContinuousFlow([(2,)], hidden=(64, 64), steps=8)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 500)
    for _ in range(500):
        loss = flow_matching_loss(flow, data.sample((256,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        x = data.sample((4000,))
        (z,), log_det = flow((x,))
        log_density = -0.5 * z.square().sum(1) - math.log(2 * math.pi) + log_det
        (samples,), _ = flow((torch.randn(20_000, 2),), rev=True, jac=False)
    entropy = float(data.entropy())  # 2.652 nats
    assert float(-log_density.mean()) == pytest.approx(entropy, abs=0.06)  # measured 0.000
    assert -0.01 < float((data.log_prob(x) - log_density).mean()) < 0.03  # measured 0.006
    torch.testing.assert_close(samples.mean(0), mean, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.15, rtol=0)  # measured 0.12


def test_conditional_flow_matching_learns_each_condition():
    # x | c ~ N((2c, -c), 0.3^2 I), c ~ U(-1, 1): the samples at c = +-0.8 sit at their means.
    torch.manual_seed(0)
    flow = ContinuousFlow([(2,)], dims_c=[(1,)], hidden=(64, 64), steps=8)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    direction = torch.tensor([2.0, -1.0])
    for _ in range(300):
        c = 2 * torch.rand(256, 1) - 1
        x = c * direction + 0.3 * torch.randn(256, 2)
        loss = flow_matching_loss(flow, x, (c,))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for value in (-0.8, 0.8):
            c = torch.full((4000, 1), value)
            (samples,), _ = flow((torch.randn(4000, 2),), c=(c,), rev=True, jac=False)
            torch.testing.assert_close(samples.mean(0), value * direction, atol=0.1, rtol=0)
            assert samples.std(0).sub(0.3).abs().max() < 0.1


def test_ot_pairing_straightens_the_flow():
    # 200 Adam steps of 128 points each way; then one Euler step against 16 rk4 steps from
    # the same noise. Measured over seeds 0-2: mean distance 1.18-1.20 without pairing,
    # 0.10-0.13 with it (the straight-line flow of an exact OT plan needs a single step).
    data = torch.distributions.MultivariateNormal(
        torch.tensor([2.0, -1.0]), torch.tensor([[1.5, 0.9], [0.9, 1.0]])
    )
    distances = {}
    for ot_pairing in (False, True):
        torch.manual_seed(0)
        flow = ContinuousFlow([(2,)], hidden=(64, 64), steps=16)
        optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
        for _ in range(200):
            loss = flow_matching_loss(flow, data.sample((128,)), ot_pairing=ot_pairing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        z = torch.randn(2000, 2)
        with torch.no_grad():
            fine = flow((z,), rev=True, jac=False)[0][0]
            flow.steps, flow.solver = 1, "euler"
            coarse = flow((z,), rev=True, jac=False)[0][0]
        distances[ot_pairing] = float((coarse - fine).norm(dim=1).mean())
    assert distances[False] > 0.8
    assert distances[True] < 0.25 * distances[False]


# ---------------------------------------------------------------- torchdiffeq (optional)
def _pair(**kwargs) -> tuple[ContinuousFlow, ContinuousFlow]:
    """A 64-step rk4 block away from the identity, and an adaptive one with its weights."""
    fixed = perturbed("rk4", 64)
    adaptive = ContinuousFlow([(2,)], rtol=1e-9, atol=1e-9, **kwargs).double()
    adaptive.load_state_dict(fixed.state_dict())
    return fixed, adaptive


def test_an_adaptive_solver_agrees_with_many_fixed_steps_and_inverts():
    pytest.importorskip("torchdiffeq")
    fixed, adaptive = _pair(solver="dopri5")
    x = points()
    (z_fixed,), log_det_fixed = fixed((x,))
    (z,), log_det = adaptive((x,))
    torch.testing.assert_close(z, z_fixed, rtol=0, atol=1e-7)  # measured 6e-9
    torch.testing.assert_close(log_det, log_det_fixed, rtol=0, atol=1e-7)
    (x_back,), log_det_back = adaptive((z,), rev=True)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-7)
    torch.testing.assert_close(log_det_back, -log_det, rtol=0, atol=1e-7)


def test_the_adjoint_method_gives_the_gradients_of_backpropagation():
    pytest.importorskip("torchdiffeq")
    _, direct = _pair(solver="dopri5")
    _, adjoint = _pair(solver="dopri5", adjoint=True)
    x = points()
    grads = []
    for block in (direct, adjoint):
        inputs = x.clone().requires_grad_()
        (z,), log_det = block((inputs,))
        loss = 0.5 * z.square().sum() - log_det.sum()
        grads.append(torch.autograd.grad(loss, [inputs, *block.parameters()]))
    for ours, theirs in zip(*grads):  # both solved to 1e-9; measured: at most 6e-7 apart
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_adaptive_solvers_without_torchdiffeq_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # import fails
    with pytest.raises(InvGraphError, match=r"torchdiffeq, which is not installed: pip install"):
        ContinuousFlow([(2,)], solver="dopri5")
    with pytest.raises(InvGraphError, match=r"adjoint=True needs one of torchdiffeq's adaptive"):
        ContinuousFlow([(2,)], solver="rk4", adjoint=True)


def test_called_directly_with_the_wrong_conditions_or_numpy_it_says_so():
    flow = ContinuousFlow([(2,)], [(3,)], steps=1)
    with pytest.raises(InvGraphError, match=r"ContinuousFlow: built for 1 condition\(s\)"):
        flow((torch.randn(4, 2),))
    with pytest.raises(InvGraphError, match=r"flow_matching_loss: x must be a tensor, got ndarray"):
        flow_matching_loss(flow, np.zeros((4, 2), dtype=np.float32), (torch.randn(4, 3),))


def test_a_continuous_flow_on_one_branch_after_haar_and_a_split():
    # Haar downsampling, a split of the channels, a continuous flow on one half only
    x = ig.InputNode(1, 4, 4, name="x")
    haar = ig.Node(x, ig.HaarDownsampling, name="haar")  # (4, 2, 2)
    split = ig.Node(haar, ig.Split, {"section_sizes": [1, 3]}, name="split")
    cnf = ig.Node(split.out1, ig.ContinuousFlow, {"hidden": (8,), "steps": 8}, name="cnf")
    concat = ig.Node([split.out0, cnf.out0], ig.Concat, name="concat")
    inn = ig.GraphINN([x, haar, split, cnf, concat, ig.OutputNode(concat, name="z")])
    check_block(inn).assert_ok()
    (flow,) = [m for m in inn.modules() if isinstance(m, ContinuousFlow)]
    assert flow.dims_in == [(3, 2, 2)]
