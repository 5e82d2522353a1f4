"""Element-wise blocks: values, ActNorm's initialisation and state, FrEIA parity and defects."""

import copy
import io
import math
import pickle
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from invgraph.errors import InvGraphError
from invgraph.modules import (
    ActNorm,
    InvAutoAct,
    InvAutoActFixed,
    InvAutoActTwoSided,
    InvertibleSigmoid,
    LearnedElementwiseScaling,
    elementwise,
)
from invgraph.testing import check_block

CONFIGURATIONS = {
    "sigmoid-vector": lambda: InvertibleSigmoid([(6,)]),
    "sigmoid-image": lambda: InvertibleSigmoid([(2, 4, 4)]),
    "scaling-vector": lambda: LearnedElementwiseScaling([(6,)], init_scale=1.5),
    "scaling-image": lambda: LearnedElementwiseScaling([(2, 4, 4)]),
    "actnorm-vector": lambda: ActNorm([(6,)]),
    "actnorm-image": lambda: ActNorm([(4, 4, 4)]),
    "actnorm-init-data": lambda: ActNorm([(2, 4, 4)], init_data=3 + 2 * torch.randn(5, 2, 4, 4)),
    "inv-auto-act-vector": lambda: InvAutoAct([(7,)]),
    "inv-auto-act-image-fixed": lambda: InvAutoAct([(2, 4, 4)], slope_init=1.5, learnable=False),
    "inv-auto-act-fixed": lambda: InvAutoActFixed([(4, 4, 4)], slope_init=3.0),
    "inv-auto-act-two-sided-vector": lambda: InvAutoActTwoSided([(7,)]),
    "inv-auto-act-two-sided-image": lambda: InvAutoActTwoSided(
        [(2, 4, 4)], init_pos=1.5, init_neg=0.3
    ),
}


@pytest.fixture
def freia():
    return pytest.importorskip("FrEIA.modules")


def perturbed(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """The module with noise added to its parameters (away from the initial values)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return module


def assert_matches_freia(ours, theirs, x, reverse_log_det_sign=1.0):
    """Same outputs and per-sample log-dets as the FrEIA block, forward at ``x`` and reverse
    at ``z = f(x)``, to 1e-5; ``ours`` gets the FrEIA block's state dict first (strictly)."""
    ours.load_state_dict(theirs.state_dict())
    inputs = x
    for rev, sign in ((False, 1.0), (True, reverse_log_det_sign)):
        (out,), log_det = ours((inputs,), rev=rev)
        (their_out,), their_log_det = theirs([inputs.clone()], rev=rev)
        torch.testing.assert_close(out, their_out, rtol=1e-5, atol=1e-5)
        expected = sign * their_log_det.detach().expand(x.shape[0])
        torch.testing.assert_close(log_det, expected, rtol=1e-5, atol=1e-5)
        inputs = out


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_check_block(name):
    check_block(CONFIGURATIONS[name]()).assert_ok()


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_compiles_without_graph_breaks(name):
    torch._dynamo.reset()  # blocks of one class share a code object and its recompile limit
    block = CONFIGURATIONS[name]()
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    x = torch.randn(5, *block.dims_in[0])
    (z,), log_det = compiled((x,))  # ActNorm: initialises inside the compiled graph
    (z_eager,), log_det_eager = block((x,))
    torch.testing.assert_close(z, z_eager)
    torch.testing.assert_close(log_det, log_det_eager)
    (back,), _ = compiled((z,), rev=True)
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "block",
    [InvertibleSigmoid, LearnedElementwiseScaling, ActNorm, InvAutoAct, InvAutoActTwoSided],
)
def test_rejects_anything_but_one_input_with_channels(block):
    name = block.__name__
    with pytest.raises(
        InvGraphError, match=rf"{name}: expects exactly 1 input.*\[\(3,\), \(3,\)\]"
    ):
        block([(3,), (3,)])
    with pytest.raises(InvGraphError, match=rf"{name}: expects exactly 1 input"):
        block([()])


# InvertibleSigmoid


def test_sigmoid_values_and_log_det(dtype):
    x = torch.randn(4, 2, 3, 3, dtype=dtype)
    sigmoid = InvertibleSigmoid([(2, 3, 3)])
    (z,), log_det = sigmoid((x,))
    torch.testing.assert_close(z, torch.sigmoid(x))
    expected = torch.log(torch.sigmoid(x) * (1 - torch.sigmoid(x))).sum(dim=(1, 2, 3))
    torch.testing.assert_close(log_det, expected)
    (back,), inverse_log_det = sigmoid((z,), rev=True)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(inverse_log_det, -expected)


def test_sigmoid_log_det_is_finite_where_the_naive_formula_overflows(freia):
    x = torch.tensor([[100.0, -100.0, 0.0, 30.0, -30.0, 1.0]])
    (_,), log_det = InvertibleSigmoid([(6,)])((x,))
    (_,), exact = InvertibleSigmoid([(6,)])((x.double(),))
    assert torch.isfinite(log_det).all()
    torch.testing.assert_close(log_det.double(), exact)  # about -2 (100 + 30) - 1.4 - 1.6
    (_,), their_log_det = freia.InvertibleSigmoid([(6,)])([x])
    assert torch.isinf(their_log_det).all()  # FrEIA: log(1 / ((1 + e^x)(1 + e^-x))) = -inf


def test_sigmoid_log_det_has_one_value_per_sample_on_images(freia):
    # FrEIA defect 5: the log-det is summed over dimension 1 only, (B, H, W) on images.
    x = torch.randn(3, 2, 4, 4)
    (z,), log_det = InvertibleSigmoid([(2, 4, 4)])((x,))
    assert log_det.shape == (3,)
    (their_z,), their_log_det = freia.InvertibleSigmoid([(2, 4, 4)])([x])
    assert their_log_det.shape == (3, 4, 4)
    torch.testing.assert_close(log_det, their_log_det.sum(dim=(1, 2)))  # summed, they agree
    torch.testing.assert_close(z, their_z)


def test_sigmoid_without_jac_returns_outputs_and_none(freia):
    # FrEIA defect 5: with jac=False FrEIA returns a 1-tuple, which `outputs, log_det = ...`
    # cannot unpack.
    x = torch.randn(3, 6)
    for rev, inputs in ((False, x), (True, torch.sigmoid(x))):
        outputs, log_det = InvertibleSigmoid([(6,)])((inputs,), rev=rev, jac=False)
        assert log_det is None and len(outputs) == 1
        result = freia.InvertibleSigmoid([(6,)])([inputs], rev=rev, jac=False)
        assert len(result) == 1 and isinstance(result[0], torch.Tensor)


def test_sigmoid_matches_freia_on_vectors(freia):
    assert_matches_freia(
        InvertibleSigmoid([(6,)]), freia.InvertibleSigmoid([(6,)]), torch.randn(5, 6)
    )


# LearnedElementwiseScaling


def test_scaling_has_one_log_scale_per_value():
    scaling = LearnedElementwiseScaling([(2, 3, 3)], init_scale=3.0)
    assert [name for name, _ in scaling.named_parameters()] == ["s"]
    assert scaling.s.shape == (1, 2, 3, 3)
    torch.testing.assert_close(scaling.s.exp(), torch.full((1, 2, 3, 3), 3.0))
    perturbed(scaling)
    x = torch.randn(4, 2, 3, 3)
    (z,), log_det = scaling((x,))
    torch.testing.assert_close(z, x * scaling.s.exp())
    torch.testing.assert_close(log_det, scaling.s.sum().expand(4))


@pytest.mark.parametrize("init_scale", [0.0, -1.0])
def test_scaling_rejects_scales_that_are_not_positive(init_scale):
    with pytest.raises(InvGraphError, match=r"LearnedElementwiseScaling: init_scale must be > 0"):
        LearnedElementwiseScaling([(3,)], init_scale=init_scale)


def test_scaling_applies_init_scale(freia):
    # FrEIA 0.2 sets s = log(init_scale) * zeros: every scale starts at 1 whatever init_scale.
    assert torch.all(freia.LearnedElementwiseScaling([(4,)], init_scale=5.0).s == 0)
    torch.testing.assert_close(
        LearnedElementwiseScaling([(4,)], init_scale=5.0).s, torch.full((1, 4), math.log(5.0))
    )


def test_scaling_reverse_log_det_is_minus_the_forward_one(freia):
    # FrEIA defect 6: the reverse log-det has the sign of the forward one.
    theirs = perturbed(freia.LearnedElementwiseScaling([(2, 3, 3)]))
    ours = LearnedElementwiseScaling([(2, 3, 3)])
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 3, 3)
    (z,), forward = ours((x,))
    _, reverse = ours((z,), rev=True)
    torch.testing.assert_close(reverse, -forward)
    _, their_forward = theirs([x])
    _, their_reverse = theirs([z], rev=True)
    assert torch.equal(their_reverse, their_forward) and their_forward.abs().item() > 0.1


def test_scaling_matches_freia_up_to_the_reverse_sign(freia):
    theirs = perturbed(freia.LearnedElementwiseScaling([(2, 3, 3)]))
    x = torch.randn(4, 2, 3, 3)
    ours = LearnedElementwiseScaling([(2, 3, 3)])
    assert_matches_freia(ours, theirs, x, reverse_log_det_sign=-1.0)


# ActNorm


def assert_standardised(z, tol=1e-5):
    dims = [0, *range(2, z.dim())]
    z = z.double()
    torch.testing.assert_close(
        z.mean(dims), torch.zeros(z.shape[1], dtype=z.dtype), atol=tol, rtol=0
    )
    variance = z.var(dims, unbiased=False)
    torch.testing.assert_close(variance, torch.ones_like(variance), atol=tol, rtol=0)


@pytest.mark.parametrize("shape", [(3,), (3, 4, 4)])
def test_actnorm_first_batch_initialises_then_parameters_stay(shape):
    actnorm = ActNorm([shape])
    assert not actnorm.initialized and not actnorm.is_initialized
    scales = torch.tensor([0.5, 2.0, 7.0]).reshape(1, 3, *[1] * (len(shape) - 1))
    x = torch.randn(16, *shape) * scales - 4.0
    (z,), log_det = actnorm((x,))
    assert actnorm.initialized and actnorm.is_initialized
    assert_standardised(z)
    n = math.prod(shape[1:])
    torch.testing.assert_close(log_det, (actnorm.scale.sum() * n).expand(16))
    state = {key: value.clone() for key, value in actnorm.state_dict().items()}
    (z_again,), _ = actnorm((2 * x + 1,))
    for key, value in actnorm.state_dict().items():
        assert torch.equal(value, state[key])  # no second initialisation
    torch.testing.assert_close(z_again, (2 * x + 1) * actnorm.scale.exp() + actnorm.bias)


def test_actnorm_initialisation_is_differentiable_from_the_first_batch():
    actnorm = ActNorm([(3, 2, 2)])
    (z,), log_det = actnorm((torch.randn(8, 3, 2, 2, requires_grad=True),))
    (z.square().sum() - log_det.sum()).backward()
    assert actnorm.scale.grad is not None and actnorm.bias.grad is not None


def test_actnorm_init_data_and_initialize(freia):
    data = 5 + 3 * torch.randn(10, 3)
    ours = ActNorm([(3,)], init_data=data)
    assert ours.initialized
    assert_standardised(ours((data,))[0][0])
    other = ActNorm([(3,)])
    other.initialize(data)
    assert other.initialized and torch.equal(other.scale, ours.scale)
    with pytest.raises(InvGraphError, match=r"ActNorm: .* \(B, \*\(3,\)\), received \(10, 4\)"):
        ActNorm([(3,)]).initialize(torch.randn(10, 4))
    # FrEIA 0.2 tests `if init_data:`, which raises for any tensor of more than one value.
    with pytest.raises(RuntimeError, match="ambiguous"):
        freia.ActNorm([(3,)], init_data=data)


def test_actnorm_initialisation_is_freias_but_with_the_population_variance(freia):
    x = 2 + 3 * torch.randn(6, 3, 2, 2)
    ours, theirs = ActNorm([(3, 2, 2)]), freia.ActNorm([(3, 2, 2)])
    ours((x,))
    theirs([x])
    n = 6 * 2 * 2  # FrEIA divides by n - 1; we standardise exactly: variance 1 over the batch
    torch.testing.assert_close(ours.scale, theirs.scale + 0.5 * math.log(n / (n - 1)))
    torch.testing.assert_close(ours.bias, theirs.bias * math.sqrt(n / (n - 1)))


def test_actnorm_inverse_before_initialisation_raises():
    with pytest.raises(InvGraphError, match=r"ActNorm: inverse called before init.* \(2, 3\)"):
        ActNorm([(3,)])((torch.randn(2, 3),), rev=True)


def _constant_channel() -> torch.Tensor:
    x = torch.randn(8, 2, 2, 2)
    x[:, 1] = 0.5
    return x


@pytest.mark.parametrize("make_x", [_constant_channel, lambda: torch.randn(1, 3)])
def test_actnorm_gives_no_nan_on_a_zero_spread(freia, make_x):
    # FrEIA's NaNs (issue #113): log(1 / std) with std = 0 (a constant channel), or with the
    # unbiased std of a single value (a batch of one vector).
    x = make_x()
    ours = ActNorm([x.shape[1:]])
    (z,), log_det = ours((x,))
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    assert ours.scale.flatten()[1] == 0.0  # channel 1 has no spread: only centred
    assert torch.equal(z[:, 1], torch.zeros_like(z[:, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # std() of one value warns
        (their_z,), _ = freia.ActNorm([x.shape[1:]])([x])
    assert not torch.isfinite(their_z).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_actnorm_runs_in_every_floating_dtype(dtype):
    # FrEIA defect 9 (fails in float64 and bfloat16) does not reproduce with FrEIA 0.2 here;
    # this pins down ours: parameters, outputs and log-det in the block's dtype, no NaN.
    # eps=0: exactly standardised (the default eps shrinks the variance by about 1e-6).
    actnorm = ActNorm([(2, 8, 8)], eps=0.0).to(dtype)
    x = (3 + 2 * torch.randn(64, 2, 8, 8)).to(dtype)
    (z,), log_det = actnorm((x,))
    assert z.dtype == log_det.dtype == actnorm.scale.dtype == actnorm.bias.dtype == dtype
    assert torch.isfinite(z).all() and torch.isfinite(log_det).all()
    assert_standardised(z, tol=1e-10 if dtype == torch.float64 else 2e-2)
    (back,), _ = actnorm((z,), rev=True)
    torch.testing.assert_close(back.double(), x.double(), rtol=2e-2, atol=2e-2)


def test_actnorm_statistics_of_low_precision_inputs_are_computed_in_float32():
    # One channel holds 4096 values of about 300: their sum overflows in float16.
    x = (300 + 2 * torch.randn(64, 2, 8, 8)).half()
    assert torch.isinf(x.sum(dim=(0, 2, 3))).all()
    actnorm = ActNorm([(2, 8, 8)]).half()
    actnorm.initialize(x)
    values = x.double().transpose(0, 1).reshape(2, -1)
    mean, std = values.mean(1), values.std(1, unbiased=False)
    torch.testing.assert_close(actnorm.scale.flatten(), (-std.log()).half())
    torch.testing.assert_close(actnorm.bias.flatten(), (-mean / std).half())


def test_actnorm_flag_is_saved_and_restored_on_load():
    trained = ActNorm([(3, 2, 2)])
    trained((torch.randn(8, 3, 2, 2),))
    assert set(trained.state_dict()) == {"scale", "bias", "is_initialized"}
    fresh = nn.Sequential(ActNorm([(3, 2, 2)]))  # loaded under a prefix
    fresh.load_state_dict({f"0.{key}": value for key, value in trained.state_dict().items()})
    assert fresh[0].initialized
    fresh[0]((torch.randn(8, 3, 2, 2) * 10,))  # no initialisation on this batch
    assert torch.equal(fresh[0].scale, trained.scale)
    fresh[0].load_state_dict(ActNorm([(3, 2, 2)]).state_dict())  # an uninitialised one
    assert not fresh[0].initialized
    fresh[0]((torch.randn(8, 3, 2, 2) * 10,))
    assert fresh[0].initialized and not torch.equal(fresh[0].scale, trained.scale)


def test_actnorm_keeps_freias_init_on_next_batch():
    actnorm = ActNorm([(3,)])
    assert actnorm.init_on_next_batch
    actnorm((torch.randn(5, 3),))
    assert not actnorm.init_on_next_batch
    actnorm.init_on_next_batch = True
    assert not actnorm.initialized and not actnorm.is_initialized
    (z,), _ = actnorm((7 + torch.randn(5, 3),))
    assert_standardised(z)


def test_actnorm_initialises_on_the_meta_device():
    with torch.device("meta"):
        actnorm = ActNorm([(3, 2, 2)])
    (z,), log_det = actnorm((torch.empty(4, 3, 2, 2, device="meta"),))
    assert actnorm.initialized and z.is_meta and log_det.shape == (4,)


def test_actnorm_compiled_initialises_once():
    actnorm = ActNorm([(3, 2, 2)])
    compiled = torch.compile(actnorm, fullgraph=True, backend="eager")
    x = 2 + 3 * torch.randn(8, 3, 2, 2)
    (z,), _ = compiled((x,))
    assert actnorm.initialized
    assert_standardised(z)
    scale = actnorm.scale.detach().clone()
    (z_shifted,), _ = compiled((x + 1,))  # a recompiled graph, without the initialisation
    assert torch.equal(actnorm.scale, scale)
    torch.testing.assert_close(z_shifted, z + actnorm.scale.exp())


def test_actnorm_loads_a_freia_state_dict_and_matches_freia(freia):
    theirs = freia.ActNorm([(3, 4, 4)])
    theirs([2 + 3 * torch.randn(8, 3, 4, 4)])
    perturbed(theirs)
    ours = ActNorm([(3, 4, 4)])
    assert_matches_freia(ours, theirs, torch.randn(5, 3, 4, 4))  # strict load, no flag in it
    assert ours.initialized and ours.is_initialized


def _initialise_on_rank(rank, world_size, init_file, batches, results):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        actnorm = ActNorm([(3, 2, 2)])
        actnorm((batches[rank],))
        torch.save(actnorm.state_dict(), f"{results}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_actnorm_initialises_alike_on_every_rank(tmp_path):
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available")
    generator = torch.Generator().manual_seed(0)
    batches = [
        2 + 3 * torch.randn(4, 3, 2, 2, generator=generator),
        -1 + 0.5 * torch.randn(6, 3, 2, 2, generator=generator),
    ]
    args = (2, str(tmp_path / "rendezvous"), batches, str(tmp_path))
    # spawn, not fork: a forked child inherits every lock that another thread of this
    # process (pytest-xdist's among them) holds at that moment, and can wait on it forever.
    mp.start_processes(_initialise_on_rank, args=args, nprocs=2, start_method="spawn")
    states = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    expected = ActNorm([(3, 2, 2)], init_data=torch.cat(batches)).state_dict()
    for key in expected:
        assert torch.equal(states[0][key], states[1][key])
        torch.testing.assert_close(states[0][key], expected[key])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_actnorm_refuses_non_finite_initialisation_data(bad):
    x = 2 + torch.randn(8, 3, 2, 2)
    x[1, 2, 0, 1] = x[5, 0, 1, 1] = bad
    actnorm = ActNorm([(3, 2, 2)])
    match = r"ActNorm: .* batch of shape \(8, 3, 2, 2\) holding 2 non-finite value\(s\)"
    with pytest.raises(InvGraphError, match=match):
        actnorm((x,))
    assert not actnorm.initialized and not actnorm.is_initialized  # nothing poisoned
    assert torch.equal(actnorm.scale, torch.zeros_like(actnorm.scale))
    with pytest.raises(InvGraphError, match=match):
        actnorm.initialize(x)
    with pytest.raises(InvGraphError, match=match):
        ActNorm([(3, 2, 2)], init_data=x)
    x[1, 2, 0, 1] = x[5, 0, 1, 1] = 2.0
    (z,), log_det = actnorm((x,))  # a clean batch then initialises
    assert actnorm.initialized and torch.isfinite(z).all() and torch.isfinite(log_det).all()


def test_actnorm_refuses_statistics_that_overflow():
    x = torch.tensor([[3e30], [-3e30]])  # finite, but the squared deviations overflow float32
    with pytest.raises(InvGraphError, match=r"ActNorm: the statistics .* overflow in torch.float"):
        ActNorm([(1,)])((x,))


def test_actnorm_eps_bounds_the_scale_of_a_near_constant_channel():
    # A spread of rounding noise: without eps the scale is 1 / 1e-7 and the next sample,
    # 1 away from the mean, lands at 1e7.
    x = 1 + 1e-7 * torch.randn(64, 2, dtype=torch.float64)
    actnorm = ActNorm([(2,)]).double()
    actnorm((x,))
    std = x.std(0, unbiased=False)
    torch.testing.assert_close(actnorm.scale.flatten(), -torch.log(std + 1e-6))
    assert (actnorm.scale <= -math.log(1e-6)).all()  # e^s <= 1 / eps
    (z,), _ = actnorm((torch.full((1, 2), 2.0, dtype=torch.float64),))
    assert z.abs().max() <= 1e6
    exact = ActNorm([(2,)], eps=0.0).double()
    exact((x,))
    torch.testing.assert_close(exact.scale.flatten(), -torch.log(std))


@pytest.mark.parametrize("eps", [-1e-6, math.nan, math.inf])
def test_actnorm_eps_must_be_finite_and_not_negative(eps):
    with pytest.raises(InvGraphError, match=r"ActNorm: eps must be a finite number >= 0"):
        ActNorm([(3,)], eps=eps)


def test_actnorm_empty_first_batch_leaves_it_uninitialised():
    actnorm = ActNorm([(3, 2, 2)])
    (z,), log_det = actnorm((torch.empty(0, 3, 2, 2),))
    assert z.shape == (0, 3, 2, 2) and log_det.shape == (0,)
    assert not actnorm.initialized and not actnorm.is_initialized
    assert torch.equal(actnorm.scale, torch.zeros_like(actnorm.scale))  # no NaN from 0 / 0
    with pytest.raises(InvGraphError, match=r"ActNorm: cannot initialise from an empty batch"):
        actnorm.initialize(torch.empty(0, 3, 2, 2))
    (z,), _ = actnorm((5 + torch.randn(8, 3, 2, 2),))  # the next batch initialises
    assert actnorm.initialized
    assert_standardised(z)


def test_actnorm_first_call_from_many_threads_initialises_once(monkeypatch):
    x = 2 + 3 * torch.randn(32, 3, 4, 4)
    reference = ActNorm([(3, 4, 4)])
    (expected,), expected_log_det = reference((x,))
    reductions = []

    def slow_all_reduce(tensor):  # widens the window in which a second thread could enter
        reductions.append(threading.get_ident())
        time.sleep(0.02)
        return tensor

    monkeypatch.setattr(elementwise, "_all_reduce", slow_all_reduce)
    actnorm, threads = ActNorm([(3, 4, 4)]), 8
    barrier = threading.Barrier(threads)

    def first_call(_):
        barrier.wait()  # all threads make their first call together
        return actnorm((x,))

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(first_call, range(threads)))
    assert len(reductions) == 2  # the two reductions of one initialisation
    for (z,), log_det in results:
        assert torch.equal(z, expected) and torch.equal(log_det, expected_log_det)
    assert torch.equal(actnorm.scale, reference.scale)
    assert torch.equal(actnorm.bias, reference.bias)


@pytest.mark.parametrize("initialised", [False, True])
def test_actnorm_with_its_lock_pickles_saves_and_deep_copies(initialised):
    actnorm = ActNorm([(3,)], eps=1e-4)
    x = 1 + 2 * torch.randn(16, 3)
    if initialised:
        actnorm((x,))
    buffer = io.BytesIO()
    torch.save(actnorm, buffer)
    buffer.seek(0)
    copies = [
        copy.deepcopy(actnorm),
        pickle.loads(pickle.dumps(actnorm)),
        torch.load(buffer, weights_only=False),
    ]
    for other in copies:
        assert other._init_lock is not actnorm._init_lock  # each copy locks on its own
        assert other.eps == 1e-4 and other.initialized == initialised
        (z,), _ = other((x,))  # initialises the copy if it was not
        torch.testing.assert_close(z, actnorm((x,))[0][0])


# InvAutoAct, InvAutoActFixed, InvAutoActTwoSided


def test_inv_auto_act_slopes_per_channel(dtype):
    act = perturbed(InvAutoAct([(3, 2, 2)], slope_init=2.0)).to(dtype)
    x = torch.randn(4, 3, 2, 2, dtype=dtype)
    (z,), log_det = act((x,))
    slope = torch.where(x >= 0, act.alpha.exp(), (-act.alpha).exp())
    torch.testing.assert_close(z, x * slope)
    torch.testing.assert_close(log_det, slope.log().sum(dim=(1, 2, 3)))
    assert act.alpha.shape == (1, 3, 1, 1) and act.alpha.unique().numel() == 3


def test_two_sided_slopes(dtype):
    act = InvAutoActTwoSided([(2,)], init_pos=3.0, init_neg=0.25).to(dtype)
    (z,), log_det = act((torch.tensor([[1.0, -2.0], [-1.0, 0.0]], dtype=dtype),))
    torch.testing.assert_close(z, torch.tensor([[3.0, -0.5], [-0.25, 0.0]], dtype=dtype))
    expected = [math.log(3.0) + math.log(0.25), math.log(0.25) + math.log(3.0)]
    torch.testing.assert_close(log_det, torch.tensor(expected, dtype=dtype))  # 0 counts as >= 0


@pytest.mark.parametrize(
    ("block", "names"),
    [
        (lambda: InvAutoAct([(3,)], learnable=False), ["alpha"]),
        (lambda: InvAutoActFixed([(3,)]), ["alpha"]),
        (lambda: InvAutoActTwoSided([(3,)], learnable=False), ["alpha_pos", "alpha_neg"]),
    ],
)
def test_fixed_slopes_are_buffers(block, names):
    act = block()
    assert list(act.parameters()) == []
    assert [name for name, _ in act.named_buffers()] == list(act.state_dict()) == names


def test_learnable_slopes_are_parameters():
    assert [name for name, _ in InvAutoAct([(3,)]).named_parameters()] == ["alpha"]
    two_sided = InvAutoActTwoSided([(3,)])
    assert [name for name, _ in two_sided.named_parameters()] == ["alpha_pos", "alpha_neg"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: InvAutoAct([(3,)], slope_init=0.0),
        lambda: InvAutoActFixed([(3,)], slope_init=-2.0),
        lambda: InvAutoActTwoSided([(3,)], init_neg=0.0),
    ],
)
def test_slopes_must_be_positive(build):
    with pytest.raises(InvGraphError, match=r"InvAutoAct\w*: (slope_init|init_neg) must be > 0"):
        build()


@pytest.mark.parametrize("shape", [(5,), (3, 4, 4)])
@pytest.mark.parametrize("learnable", [True, False])
def test_inv_auto_acts_match_freia(freia, shape, learnable):
    x = torch.randn(4, *shape)
    pairs = [
        (
            InvAutoAct([shape], slope_init=1.7, learnable=learnable),
            freia.InvAutoAct([shape], slope_init=1.7, learnable=learnable),
        ),
        (
            InvAutoActTwoSided([shape], init_pos=1.5, init_neg=0.4, learnable=learnable),
            freia.InvAutoActTwoSided([shape], init_pos=1.5, init_neg=0.4, learnable=learnable),
        ),
    ]
    with pytest.warns(UserWarning, match="Deprecated"):
        pairs.append(
            (
                InvAutoActFixed([shape], slope_init=2.5),
                freia.InvAutoActFixed([shape], slope_init=2.5, learnable=False),
            )
        )
    for ours, theirs in pairs:
        with torch.no_grad():  # FrEIA's fixed slopes are frozen parameters: perturb them too
            for tensor in theirs.state_dict().values():
                tensor.add_(0.3 * torch.randn_like(tensor))
        assert_matches_freia(ours, theirs, x)


def test_inv_auto_act_fixed_does_not_train(freia):
    # FrEIA 0.2's InvAutoActFixed is InvAutoAct with learnable=True by default: it trains.
    with pytest.warns(UserWarning, match="Deprecated"):
        theirs = freia.InvAutoActFixed([(3,)])
    assert [p.requires_grad for p in theirs.parameters()] == [True]
    ours = InvAutoActFixed([(3,)])
    assert list(ours.parameters()) == []
    ours.load_state_dict(theirs.state_dict())  # its checkpoints still load
