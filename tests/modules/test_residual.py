"""IResNetLayer: spectral normalisation, measured approximation errors, gradients, FrEIA parity."""

import pytest
import torch
from torch import nn

from invgraph.errors import InvGraphError
from invgraph.modules import IResNetLayer
from invgraph.modules.residual import _apply
from invgraph.testing import check_block

F64 = torch.float64


@pytest.fixture
def freia():
    return pytest.importorskip("FrEIA.modules")


def layers(block) -> list[nn.Module]:
    return list(block.residual)[::2]


def true_norm(weight: torch.Tensor, spatial: tuple[int, ...]) -> float:
    """The exact operator norm of a dense layer or of a padded 3x3 convolution on ``spatial``."""
    if weight.dim() == 4:  # the convolution as a matrix, column by column
        n = weight.shape[1] * spatial[0] * spatial[1]
        basis = torch.eye(n, dtype=weight.dtype).reshape(n, weight.shape[1], *spatial)
        weight = _apply(basis, weight).reshape(n, -1).T
    return float(torch.linalg.matrix_norm(weight.detach(), 2))


def pair(dims, **kwargs) -> tuple[IResNetLayer, IResNetLayer]:
    """A stochastic block and an exact one with the same (seeded, float64) weights."""
    torch.manual_seed(0)
    stochastic = IResNetLayer([dims], **kwargs).double()
    exact = IResNetLayer([dims], exact_log_det=True, **kwargs).double()
    exact.load_state_dict(stochastic.state_dict())
    return stochastic, exact


@pytest.mark.parametrize(
    ("dims", "kwargs"),
    [
        ((8,), {"exact_log_det": True}),
        ((6,), {"dims_c": [(3,)], "exact_log_det": True}),
        ((2, 4, 4), {"internal_size": 4, "exact_log_det": True}),
        ((2, 4, 4), {"dims_c": [(1, 4, 4)], "internal_size": 4, "exact_log_det": True}),
    ],
)
def test_exact_mode_passes_every_check(dims, kwargs):
    check_block(IResNetLayer([dims], **kwargs)).assert_ok()


def test_stochastic_mode_fails_only_the_exact_log_det_checks():
    report = check_block(IResNetLayer([(8,)]))
    assert {result.name for result in report.failed} == {"log_det", "log_det_symmetry"}


@pytest.mark.parametrize(("dims", "kwargs"), [((8,), {}), ((2, 4, 4), {"internal_size": 4})])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_normalised_layer_is_contractive_and_small_ones_are_left_alone(dims, kwargs, seed):
    torch.manual_seed(seed)
    block = IResNetLayer([dims], **kwargs).double()
    with torch.no_grad():
        layers(block)[0].weight.mul_(5.0)  # far above the bound
        layers(block)[1].weight.mul_(0.5 / true_norm(layers(block)[1].weight, dims[1:]))
    normalised = [block._normalised(layer) for layer in layers(block)]
    assert true_norm(normalised[0], dims[1:]) == pytest.approx(0.8, rel=0.02)  # measured <1.4%
    assert torch.equal(normalised[1], layers(block)[1].weight)  # 0.5 < 0.8: unchanged
    assert max(true_norm(w, dims[1:]) for w in normalised) < 0.8 * 1.02


def test_residual_branch_is_a_contraction():
    torch.manual_seed(3)
    block = IResNetLayer([(8,)], dims_c=[(2,)]).double()
    g, c = block._residual(), (torch.randn(500, 2, dtype=F64),)
    a, b = torch.randn(500, 8, dtype=F64), torch.randn(500, 8, dtype=F64)
    ratio = (g(a, c) - g(b, c)).norm(dim=1) / (a - b).norm(dim=1)
    assert ratio.max() < 0.8**3 * 1.02**3


def test_forward_and_inverse_use_the_same_weights_in_training_mode():
    # torch's spectral_norm parametrization updates its state at every weight access in
    # training mode; here the normalised weights are a function of the raw weights alone.
    block = IResNetLayer([(8,)]).double().train()
    x = torch.randn(4, 8, dtype=F64)
    z = [block((x,), jac=False)[0][0] for _ in range(3)]
    assert torch.equal(z[0], z[1]) and torch.equal(z[1], z[2])
    torch.testing.assert_close(block((z[0],), rev=True, jac=False)[0][0], x, atol=1e-13, rtol=0)


def test_a_fresh_block_loading_the_state_dict_computes_the_same_map():
    torch.manual_seed(4)
    block, fresh = IResNetLayer([(2, 4, 4)]), IResNetLayer([(2, 4, 4)])
    assert set(block.state_dict()) == {
        f"residual.{i}.{p}" for i in (0, 2, 4) for p in ["weight", "bias"]
    }
    fresh.load_state_dict(block.state_dict())  # the power-iteration start vectors are seeded
    x = torch.randn(3, 2, 4, 4)
    assert torch.equal(fresh((x,), jac=False)[0][0], block((x,), jac=False)[0][0])


def test_lipschitz_correction_rescales_raw_weights_but_keeps_the_map():
    torch.manual_seed(5)
    block = IResNetLayer([(8,)]).double()
    x = torch.randn(4, 8, dtype=F64)
    z = block((x,), jac=False)[0][0]
    block.lipschitz_correction()
    assert max(true_norm(layer.weight, ()) for layer in layers(block)) < 0.8 * 1.02
    torch.testing.assert_close(block((x,), jac=False)[0][0], z, atol=1e-12, rtol=0)


def test_measured_approximation_errors_of_the_docstring():
    # The figures quoted in IResNetLayer's docstring: 8-D input, default hyperparameters,
    # seed 0, float64, 2000 samples. Bounds are the measured values with a margin.
    stochastic, exact = pair((8,))
    x = torch.randn(2000, 8, dtype=F64)
    with torch.no_grad():
        (z,), estimate = stochastic((x,))
        truth = exact((x,))[1]
        round_trip = {}
        for steps in (10, 50):
            stochastic.fixed_point_iterations = steps
            round_trip[steps] = float((stochastic((z,), rev=True, jac=False)[0][0] - x).abs().max())
        lip, g_z = 0.8**3 * 1.02**3, stochastic._residual()(z, ()).norm(dim=1).max()
    assert round_trip[50] < 1e-14  # measured 4.4e-16
    assert round_trip[10] < 1e-9  # measured 5.0e-11
    assert round_trip[10] <= lip**10 * g_z / (1 - lip)  # the a-priori bound holds
    error = estimate - truth
    assert truth.abs().mean() == pytest.approx(0.078, abs=0.005)  # measured 0.0776
    assert error.abs().mean() / truth.abs().mean() < 3.5  # measured 2.7: one sample is noisy
    assert error.mean().abs() / truth.abs().mean() < 0.15  # measured 0.013: no bias
    stochastic.hutchinson_samples = 100
    with torch.no_grad():
        error = stochastic((x,))[1] - truth
    assert error.abs().mean() / truth.abs().mean() < 0.4  # measured 0.27


def test_float32_round_trip():
    torch.manual_seed(0)
    block = IResNetLayer([(8,)])
    x = torch.randn(2000, 8)
    with torch.no_grad():
        z = block((x,), jac=False)[0][0]
        assert (block((z,), rev=True, jac=False)[0][0] - x).abs().max() < 2e-6  # measured 4.8e-7


def test_estimate_and_its_gradient_are_unbiased():
    stochastic, exact = pair((8,))
    x = torch.randn(1, 8, dtype=F64)
    params = list(stochastic.parameters())[:-1]  # the log-det ignores the output bias
    truth = exact((x,))[1]
    wanted = torch.autograd.grad(truth.sum(), list(exact.parameters())[:-1])
    estimate = stochastic((x.expand(1000, 8),))[1]  # 1000 independent estimates at x
    assert float(estimate.detach().mean()) == pytest.approx(
        float(truth.detach()), abs=4 * 0.3 / 1000**0.5
    )
    grads = torch.autograd.grad(estimate.mean(), params)
    for grad, want in zip(grads, wanted):
        assert grad.abs().sum() > 0
        assert (grad - want).norm() / want.norm() < 0.25  # measured <= 0.1


def test_inverse_jacobian_is_the_inverse_of_the_forward_jacobian():
    _, block = pair((6,))
    x = torch.randn(6, dtype=F64)
    z = block((x[None],), jac=False)[0][0][0]
    forward = torch.autograd.functional.jacobian(lambda v: block((v[None],))[0][0][0], x)
    inverse = torch.autograd.functional.jacobian(lambda v: block((v[None],), rev=True)[0][0][0], z)
    torch.testing.assert_close(inverse @ forward, torch.eye(6, dtype=F64), atol=1e-12, rtol=0)


def test_conditions_change_the_map():
    torch.manual_seed(6)
    block = IResNetLayer([(2, 4, 4)], dims_c=[(3, 4, 4)], exact_log_det=True).double()
    x, c1, c2 = (torch.randn(2, k, 4, 4, dtype=F64) for k in (2, 3, 3))
    (z1,), ld1 = block((x,), c=(c1,))
    (z2,), ld2 = block((x,), c=(c2,))
    assert not torch.allclose(z1, z2) and not torch.allclose(ld1, ld2)
    torch.testing.assert_close(block((z1,), c=(c1,), rev=True)[0][0], x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("exact", [False, True])
def test_compiles_without_graph_breaks(exact):
    small = {"jacobian_iterations": 3, "lipschitz_iterations": 2, "hutchinson_samples": 2}
    block = IResNetLayer(
        [(6,)], dims_c=[(2,)], exact_log_det=exact, fixed_point_iterations=10, **small
    )
    x, c = torch.randn(3, 6), torch.randn(3, 2)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    torch.manual_seed(7)
    (z,), log_det = compiled((x,), c=(c,))
    torch.manual_seed(7)
    (want,), want_log_det = block((x,), c=(c,))
    torch.testing.assert_close(z, want)
    torch.testing.assert_close(log_det, want_log_det)
    torch.testing.assert_close(compiled((z,), c=(c,), rev=True)[0][0], x, atol=1e-5, rtol=0)


def test_builds_and_runs_on_the_meta_device():
    with torch.device("meta"):
        block = IResNetLayer([(2, 4, 4)], fixed_point_iterations=2)
    assert all(t.device.type == "meta" for t in (*block.parameters(), *block.buffers()))
    x = torch.empty(3, 2, 4, 4, device="meta")
    (z,), log_det = block((x,))
    (back,), _ = block((z,), rev=True)
    assert back.shape == (3, 2, 4, 4) and log_det.shape == (3,)


def test_zero_initialised_layers_give_finite_values_and_gradients():
    block = IResNetLayer([(4,)])
    nn.init.zeros_(block.residual[0].weight)  # the power iteration meets a zero operator
    x = torch.randn(3, 4, requires_grad=True)
    (z,), log_det = block((x,))
    (z.sum() + log_det.sum()).backward()
    assert torch.equal(log_det, torch.zeros(3))  # g is constant
    torch.testing.assert_close(z - x, (z - x)[:1].expand(3, 4))
    assert all(p.grad.isfinite().all() for p in block.parameters())


def test_jac_false_skips_the_log_det():
    block = IResNetLayer([(4,)])
    assert block((torch.randn(2, 4),), jac=False)[1] is None
    assert block((torch.randn(2, 4),), rev=True, jac=False)[1] is None


@pytest.mark.parametrize(
    ("dims_in", "kwargs", "match"),
    [
        ([(4,), (4,)], {}, r"1 input of shape \(d,\) or \(C, H, W\), .*\[\(4,\), \(4,\)\]"),
        ([(4, 4)], {}, r"received shapes \[\(4, 4\)\]"),
        ([(4,)], {"spectral_norm_max": 1.0}, r"must be in \(0, 1\) .*received 1.0 and 1"),
        ([(4,)], {"hutchinson_samples": 0}, r"hutchinson_samples >= 1, received 0.8 and 0"),
        ([(2, 4, 4)], {"dims_c": [(1, 2, 2)]}, r"shape \(C_c, 4, 4\), received \[\(1, 2, 2\)\]"),
    ],
)
def test_rejects_bad_shapes_and_hyperparameters(dims_in, kwargs, match):
    with pytest.raises(InvGraphError, match=rf"IResNetLayer: .*{match}"):
        IResNetLayer(dims_in, **kwargs)


# FrEIA 0.2


def contractive_freia(freia, dims, **kwargs):
    """A FrEIA block perturbed from its initialisation, each layer rescaled to norm <= 0.7,
    so that our normalisation (to 0.8) leaves it alone and both compute the same map."""
    torch.manual_seed(8)
    theirs = freia.IResNetLayer([dims], **kwargs)
    with torch.no_grad():
        for layer in theirs.layers:
            layer.weight.add_(0.2 * torch.randn_like(layer.weight))
            layer.bias.add_(0.2 * torch.randn_like(layer.bias))
            w = layer.weight
            bound = (
                torch.linalg.matrix_norm(w.permute(2, 3, 0, 1), 2).sum() if w.dim() == 4 else None
            )
            layer.weight.mul_(0.7 / (torch.linalg.matrix_norm(w, 2) if bound is None else bound))
    return theirs


@pytest.mark.parametrize(
    ("dims", "kwargs"),
    [((8,), {}), ((8,), {"hutchinson_samples": 3, "n_internal_layers": 2}), ((2, 4, 4), {})],
)
def test_loads_a_freia_state_dict_and_matches_freia(freia, dims, kwargs):
    theirs = contractive_freia(freia, dims, **kwargs)
    ours = IResNetLayer([dims], **kwargs)
    ours.load_state_dict(theirs.state_dict())  # strict: same keys
    x = torch.randn(5, *dims)
    torch.manual_seed(9)  # the same Rademacher vectors: FrEIA draws randn(...).sign() too
    (z,), log_det = ours((x,))
    torch.manual_seed(9)
    (their_z,), their_log_det = theirs([x.clone()])
    torch.testing.assert_close(z, their_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_det, their_log_det, atol=1e-5, rtol=1e-5)
    torch.manual_seed(10)
    (back,), back_log_det = ours((z.detach(),), rev=True)
    (their_back,), _ = theirs([z.detach().clone()], rev=True)
    torch.testing.assert_close(back, their_back, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back, x, atol=1e-5, rtol=1e-5)
    # Reverse log-det: minus FrEIA's forward estimate at x (not at z, see below).
    torch.manual_seed(10)
    their_at_x = theirs([back.detach().clone()])[1]
    torch.testing.assert_close(back_log_det, -their_at_x, atol=1e-5, rtol=1e-5)


def test_log_det_estimate_has_a_gradient_unlike_freia(freia):
    # FrEIA defect 10: its vector-Jacobian products are taken without create_graph.
    theirs = contractive_freia(freia, (8,))
    ours = IResNetLayer([(8,)])
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 8)
    assert not theirs([x.clone()])[1].requires_grad
    grads = torch.autograd.grad(ours((x,))[1].sum(), list(ours.parameters())[:-1])
    assert all(grad.abs().sum() > 0 for grad in grads)


def test_reverse_log_det_is_taken_at_x_unlike_freia(freia):
    # Found here (not in freia.md): FrEIA's reverse log-det is minus the estimate at its
    # input z, not at x = f^-1(z); and it sets requires_grad on the caller's input tensor.
    theirs = contractive_freia(freia, (8,))
    ours = IResNetLayer([(8,)])
    ours.load_state_dict(theirs.state_dict())
    x = 2 * torch.randn(5, 8)
    z = ours((x,), jac=False)[0][0].detach()
    assert not x.requires_grad
    estimates = {}
    for name, block, at, rev in [
        ("ours reverse", ours, z, True),
        ("ours at x", ours, x, False),
        ("freia reverse", lambda xs, rev: theirs(list(xs), rev=rev), z, True),
        ("freia at x", lambda xs, rev: theirs(list(xs), rev=rev), x, False),
        ("freia at z", lambda xs, rev: theirs(list(xs), rev=rev), z, False),
    ]:
        torch.manual_seed(11)  # the same Rademacher vector in every call
        estimates[name] = block((at.clone(),), rev=rev)[1].detach()
    torch.testing.assert_close(estimates["ours reverse"], -estimates["ours at x"])
    torch.testing.assert_close(estimates["ours at x"], estimates["freia at x"])
    torch.testing.assert_close(estimates["freia reverse"], -estimates["freia at z"])
    assert (estimates["freia reverse"] + estimates["freia at x"]).abs().max() > 1e-3  # 8e-3
    theirs([x])
    assert x.requires_grad  # FrEIA flagged the caller's tensor


def test_inverse_gradient_is_exact_unlike_freia(freia):
    # FrEIA differentiates only its last fixed-point step: d f^-1(z) / dz comes out as I.
    theirs = contractive_freia(freia, (6,))
    ours = IResNetLayer([(6,)])
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6)
    forward = torch.autograd.functional.jacobian(lambda v: ours((v[None],), jac=False)[0][0][0], x)
    z = x[None] + theirs.residual(x[None]).detach()
    ours_inv = torch.autograd.functional.jacobian(
        lambda v: ours((v[None],), rev=True, jac=False)[0][0][0], z[0]
    )
    theirs_inv = torch.autograd.functional.jacobian(
        lambda v: theirs([v[None]], rev=True, jac=False)[0][0][0], z[0]
    )
    torch.testing.assert_close(ours_inv @ forward, torch.eye(6), atol=1e-5, rtol=0)
    assert torch.equal(theirs_inv, torch.eye(6))
