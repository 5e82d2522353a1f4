"""Linear blocks: values, exact inverses, state dicts, FrEIA parity and FrEIA's defects 7, 11."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invgraph.errors import InvGraphError
from invgraph.modules import AllInOneBlock
from invgraph.modules.linear import (
    Fixed1x1Conv,
    FixedLinearTransform,
    HouseholderPerm,
    InvertibleConv1x1,
    OrthogonalTransform,
    householder_reflect,
    random_orthogonal,
)
from invgraph.testing import check_block


@pytest.fixture
def freia():
    return pytest.importorskip("FrEIA.modules")


@pytest.fixture
def numpy_state():
    """FrEIA's constructors draw from (and reseed) NumPy's global RNG: put it back."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def invertible(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A well-conditioned random matrix."""
    generator = torch.Generator().manual_seed(seed)
    return torch.eye(n, dtype=dtype) + 0.3 * torch.randn(n, n, generator=generator, dtype=dtype)


def perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Move every parameter away from its initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def run(block, x, c=(), rev=False):
    (out,), log_det = block((x,), c=c, rev=rev)
    return out, log_det


def assert_same_as_freia(ours, theirs, x, c=None):
    """Same outputs and per-sample log-dets as the FrEIA block, both ways, to 1e-5."""
    kwargs = {} if c is None else {"c": [c]}
    for rev in (False, True):
        out, log_det = run(ours, x, () if c is None else (c,), rev=rev)
        (their_out,), their_log_det = theirs([x.clone()], rev=rev, **kwargs)
        torch.testing.assert_close(out, their_out, rtol=1e-5, atol=1e-5)
        their_log_det = torch.as_tensor(their_log_det, dtype=x.dtype).expand(len(x))
        torch.testing.assert_close(
            torch.as_tensor(log_det, dtype=x.dtype).expand(len(x)),
            their_log_det.detach(),
            rtol=1e-5,
            atol=1e-5,
        )
        x = out.detach()  # the reverse pass runs at z = f(x)


CONFIGURATIONS = {
    "fixed-linear": lambda: FixedLinearTransform([(6,)], M=invertible(6), b=torch.randn(6)),
    "fixed-linear-no-b": lambda: FixedLinearTransform([(6,)], M=invertible(6, seed=1)),
    "fixed-1x1": lambda: Fixed1x1Conv([(4, 4, 4)], M=invertible(4)),
    "fixed-1x1-sequence": lambda: Fixed1x1Conv([(3, 5)], M=invertible(3)),
    "glow-lu": lambda: InvertibleConv1x1([(4, 4, 4)]),
    "glow-lu-vector": lambda: InvertibleConv1x1([(7,)]),
    "glow-plain": lambda: InvertibleConv1x1([(4, 4, 4)], LU_decomposed=False),
    "householder-default": lambda: HouseholderPerm([(7,)]),
    "householder-3": lambda: HouseholderPerm([(7,)], n_reflections=3),
    "householder-fixed": lambda: HouseholderPerm([(7,)], n_reflections=3, fixed=True),
    "householder-cond": lambda: HouseholderPerm([(6,)], dims_c=[(6, 2)], n_reflections=2),
    "orthogonal": lambda: OrthogonalTransform([(6,)]),
}


@pytest.mark.parametrize("factory", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_check_block(factory):
    check_block(factory()).assert_ok()  # float64: round trip <= 1e-10, log-det <= 1e-8


@pytest.mark.parametrize(
    "name", ["fixed-linear", "fixed-1x1", "glow-lu", "glow-plain", "householder-cond", "orthogonal"]
)
def test_compiles_without_graph_breaks(name):
    block = CONFIGURATIONS[name]()
    x = torch.randn(3, *block.dims_in[0])
    c = tuple(torch.randn(3, *shape) for shape in block.dims_c)
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    z, log_det = run(compiled, x, c)
    back, _ = run(compiled, z, c, rev=True)
    eager_z, eager_log_det = run(block, x, c)
    torch.testing.assert_close(z, eager_z)
    torch.testing.assert_close(torch.as_tensor(log_det), torch.as_tensor(eager_log_det))
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)


# FixedLinearTransform and Fixed1x1Conv


def test_fixed_linear_is_m_x_plus_b(device, dtype):
    M, b = invertible(5, dtype=dtype).to(device), torch.randn(5, dtype=dtype, device=device)
    block = FixedLinearTransform([(5,)], M=M, b=b)
    x = torch.randn(4, 5, dtype=dtype, device=device)
    z, log_det = run(block, x)
    torch.testing.assert_close(z, x @ M.T + b)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(M)[1])
    back, inverse_log_det = run(block, z, rev=True)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(inverse_log_det, -log_det)
    assert list(block.parameters()) == []
    assert set(block.state_dict()) == {"M", "M_inv", "b", "logDetM"}
    assert set(FixedLinearTransform([(5,)], M=M).state_dict()) == {"M", "M_inv", "logDetM"}


def test_fixed_1x1_conv_multiplies_each_pixel_by_m_transposed_as_freia():
    M = invertible(3)
    block = Fixed1x1Conv([(3, 4, 5)], M=M)
    x = torch.randn(2, 3, 4, 5)
    z, log_det = run(block, x)
    torch.testing.assert_close(z, F.conv2d(x, M.T[:, :, None, None]))
    torch.testing.assert_close(z[:, :, 1, 2], x[:, :, 1, 2] @ M)  # row vector times M = M^T x
    torch.testing.assert_close(log_det, 20 * torch.linalg.slogdet(M)[1])
    assert block.M.shape == block.M_inv.shape == (3, 3, 1, 1)
    torch.testing.assert_close(run(block, z, rev=True)[0], x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda M: FixedLinearTransform([(6,)], M=M, b=torch.randn(6)),
        lambda M: Fixed1x1Conv([(6, 2, 2)], M=M),
    ],
    ids=["linear", "1x1"],
)
def test_fixed_inverse_is_rederived_in_the_working_dtype(make):
    block = make(invertible(6, seed=3))  # float32
    x = torch.randn(3, *block.dims_in[0], dtype=torch.float64)
    block.double()  # M_inv rounded to float32 would give round trips of 1e-7
    assert run(block, run(block, x)[0], rev=True)[0].sub(x).abs().max() < 1e-13
    torch.testing.assert_close(
        block.logDetM, torch.linalg.slogdet(block.M.reshape(6, 6))[1], rtol=1e-15, atol=1e-15
    )
    state = {key: value.float() for key, value in block.state_dict().items()}
    state["M_inv"] = torch.zeros_like(state["M_inv"])  # whatever a checkpoint says
    block.load_state_dict(state)
    assert run(block, run(block, x)[0], rev=True)[0].sub(x).abs().max() < 1e-13


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"FixedLinearTransform: needs M, an invertible \(3, 3\) matrix"),
        ({"M": torch.eye(4)}, r"M must be \(3, 3\) for input shape \(3,\), received \(4, 4\)"),
        ({"M": torch.ones(3, 3)}, r"M is singular"),
        ({"M": torch.eye(3), "b": torch.ones(1, 3)}, r"b must have shape \(3,\), received \(1, 3"),
    ],
)
def test_fixed_linear_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InvGraphError, match=match):
        FixedLinearTransform([(3,)], **kwargs)


def test_fixed_blocks_reject_wrong_inputs():
    with pytest.raises(
        InvGraphError,
        match=r"FixedLinearTransform: expects exactly 1 input of shape \(d,\), .*\[\(3, 4, 4\)\]",
    ):
        FixedLinearTransform([(3, 4, 4)], M=torch.eye(3))
    with pytest.raises(InvGraphError, match=r"Fixed1x1Conv: expects exactly 1 input of shape \(C,"):
        Fixed1x1Conv([(3, 4, 4), (3, 4, 4)], M=torch.eye(3))


@pytest.mark.parametrize("with_b", [True, False])
def test_fixed_linear_loads_freia_state_and_matches_freia(freia, with_b):
    M, b = invertible(6, seed=4), (torch.randn(6) if with_b else None)
    theirs = freia.FixedLinearTransform([(6,)], M=M, b=b)
    ours = FixedLinearTransform([(6,)], M=torch.eye(6), b=torch.zeros(6) if with_b else None)
    ours.load_state_dict(theirs.state_dict())
    assert_same_as_freia(ours, theirs, torch.randn(5, 6))
    assert_same_as_freia(FixedLinearTransform([(6,)], M=M, b=b), theirs, torch.randn(5, 6))


def test_fixed_1x1_conv_loads_freia_state_and_matches_freia(freia):
    M = invertible(4, seed=5)
    theirs = freia.Fixed1x1Conv([(4, 3, 3)], M=M)
    ours = Fixed1x1Conv([(4, 3, 3)], M=torch.eye(4))
    ours.load_state_dict(theirs.state_dict())
    assert_same_as_freia(ours, theirs, torch.randn(2, 4, 3, 3))
    assert_same_as_freia(Fixed1x1Conv([(4, 3, 3)], M=M), theirs, torch.randn(2, 4, 3, 3))


# InvertibleConv1x1


def glow_matrix(block: InvertibleConv1x1) -> torch.Tensor:
    """W assembled by hand from the block's parameters, as in the Glow paper."""
    if not block.LU_decomposed:
        return block.weight
    n = len(block.log_s)
    lower = torch.tril(block.lower, -1) + torch.eye(n)
    upper = torch.triu(block.upper, 1) + torch.diag(block.sign_s * block.log_s.exp())
    return block.p @ lower @ upper


@pytest.mark.parametrize("lu", [True, False])
def test_glow_starts_as_a_rotation(lu):
    block = InvertibleConv1x1([(5, 2, 2)], LU_decomposed=lu)
    W = glow_matrix(block).detach()
    torch.testing.assert_close(W @ W.T, torch.eye(5), rtol=0, atol=1e-5)
    assert abs(run(block, torch.randn(2, 5, 2, 2))[1].item()) < 1e-4


@pytest.mark.parametrize("lu", [True, False])
def test_glow_is_a_1x1_convolution_by_w_with_hw_log_det(lu):
    block = InvertibleConv1x1([(4, 3, 5)], LU_decomposed=lu)
    perturb(block, 0.3)
    W = glow_matrix(block).detach()
    x = torch.randn(2, 4, 3, 5)
    z, log_det = run(block, x)
    torch.testing.assert_close(z, F.conv2d(x, W[:, :, None, None]))
    torch.testing.assert_close(log_det, 15 * torch.linalg.slogdet(W)[1])
    if lu:
        torch.testing.assert_close(log_det, 15 * block.log_s.sum())
    back, inverse_log_det = run(block, z, rev=True)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inverse_log_det, -log_det)
    bigger = torch.randn(2, 4, 6, 6)  # the number of pixels comes from the input
    torch.testing.assert_close(run(block, bigger)[1], 36 * torch.linalg.slogdet(W)[1])


def test_glow_on_vectors_is_a_learned_linear_map():
    block = InvertibleConv1x1([(6,)])
    perturb(block, 0.3)
    W = glow_matrix(block).detach()
    x = torch.randn(5, 6)
    z, log_det = run(block, x)
    torch.testing.assert_close(z, x @ W.T)
    torch.testing.assert_close(log_det, torch.linalg.slogdet(W)[1])  # H = W = 1


def test_glow_names_and_gradients():
    lu = InvertibleConv1x1([(4, 2, 2)])
    assert set(dict(lu.named_parameters())) == {"lower", "upper", "log_s"}
    assert set(dict(lu.named_buffers())) == {"p", "sign_s"}
    assert set(dict(InvertibleConv1x1([(4,)], LU_decomposed=False).named_parameters())) == {
        "weight"
    }
    z, log_det = run(lu, torch.randn(3, 4, 2, 2))
    (z.square().sum() + log_det).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lu.parameters())


@pytest.mark.parametrize("lu", [True, False])
def test_glow_stays_exactly_invertible_while_training(lu):
    torch.manual_seed(0)
    block = InvertibleConv1x1([(6, 4, 4)], LU_decomposed=lu)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.05)
    x = torch.randn(16, 6, 4, 4) * torch.linspace(0.2, 3.0, 6)[:, None, None]
    for _ in range(20):
        z, log_det = run(block, x)
        loss = (0.5 * z.square().sum() / len(x) - log_det) / 96  # nats per dimension
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert run(block, run(block, x)[0], rev=True)[0].sub(x).abs().max() <= 1e-5


# HouseholderPerm


def householder_product(vectors: torch.Tensor) -> torch.Tensor:
    """H_n ... H_1, the matrix applied to column vectors."""
    matrix = torch.eye(vectors.shape[-1], dtype=vectors.dtype)
    for v in vectors:
        v = v / v.norm()
        matrix = (torch.eye(len(v), dtype=v.dtype) - 2 * torch.outer(v, v)) @ matrix
    return matrix


@pytest.mark.parametrize("fixed", [False, True])
def test_householder_applies_the_reflections_in_order(fixed):
    block = HouseholderPerm([(5,)], n_reflections=3, fixed=fixed)
    assert [name for name, _ in block.named_parameters()] == ([] if fixed else ["Vs"])
    assert block.Vs.shape == (3, 5)
    H = householder_product(block.Vs.detach())
    x = torch.randn(4, 5)
    z, log_det = run(block, x)
    torch.testing.assert_close(z, x @ H.T)
    torch.testing.assert_close(H @ H.T, torch.eye(5), rtol=0, atol=1e-6)
    assert log_det == 0.0
    torch.testing.assert_close(run(block, z, rev=True)[0], x, rtol=1e-5, atol=1e-5)


def test_householder_conditional_reads_one_set_of_vectors_per_sample():
    block = HouseholderPerm([(4,)], dims_c=[(4, 3)], n_reflections=3)
    assert list(block.parameters()) == []
    x, c = torch.randn(2, 4), torch.randn(2, 4, 3, requires_grad=True)
    z, log_det = run(block, x, (c,))
    assert log_det == 0.0
    for i in range(2):  # column k of the sample's condition is v_k
        torch.testing.assert_close(z[i], householder_product(c[i].detach().T) @ x[i])
    torch.testing.assert_close(run(block, z, (c,), rev=True)[0], x, rtol=1e-5, atol=1e-5)
    z.square().sum().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0


def test_householder_defaults_and_conditions_work_where_freia_fails(freia, numpy_state):
    # FrEIA defect 7: the default n_reflections=1 raises, and conditional mode crashes.
    with pytest.raises(ValueError, match="at least 2 householder reflections"):
        freia.HouseholderPerm([(5,)])
    theirs = freia.HouseholderPerm([(5,)], dims_c=[(5, 2)], n_reflections=2)
    x, c = torch.randn(3, 5), torch.randn(3, 5, 2)
    with pytest.raises(RuntimeError):
        theirs([x], c=[c])
    check_block(HouseholderPerm([(5,)])).assert_ok()
    ours = HouseholderPerm([(5,)], dims_c=[(5, 2)], n_reflections=2)
    z, _ = run(ours, x, (c,))
    # FrEIA's intent, per sample: x @ _fast_h(vectors), with the vectors read as FrEIA does.
    from FrEIA.modules.orthogonal import _fast_h

    matrices = _fast_h(c.reshape(-1, 5, 2).transpose(-1, -2))
    torch.testing.assert_close(z, torch.einsum("bi,bij->bj", x, matrices), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixed", [False, True])
def test_householder_loads_freia_state_and_matches_freia(freia, numpy_state, fixed):
    theirs = freia.HouseholderPerm([(7,)], n_reflections=4, fixed=fixed)
    if not fixed:
        perturb(theirs, 0.3)
    ours = HouseholderPerm([(7,)], n_reflections=4, fixed=fixed)
    ours.load_state_dict(theirs.state_dict())  # fixed: FrEIA's extra W and weight are dropped
    assert_same_as_freia(ours, theirs, torch.randn(5, 7))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_reflections": 0}, r"n_reflections must be >= 1, got 0"),
        ({"dims_c": [(12,)], "n_reflections": 2, "fixed": True}, r"cannot be fixed and condit"),
        ({"dims_c": [(5,)], "n_reflections": 2}, r"one condition of 6 x 2 = 12 elements"),
        ({"dims_c": [(6,), (6,)]}, r"received shapes \[\(6,\), \(6,\)\]"),
    ],
)
def test_householder_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InvGraphError, match=match):
        HouseholderPerm([(6,)], **kwargs)


# OrthogonalTransform


def orthogonal(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, n, generator=generator))[0]


def test_orthogonal_transform_uses_an_orthogonal_matrix_whatever_the_weights():
    block = OrthogonalTransform([(6,)], clamp=2.0)
    perturb(block, 0.5)  # weights far from orthogonal
    assert (block.weights.T @ block.weights - torch.eye(6)).abs().max() > 0.1
    x = torch.randn(4, 6)
    z, log_det = run(block, x)
    with torch.no_grad():
        log_scale = 2.0 * 0.636 * torch.atan(block.scaling / 2.0)
        rotation = (z * torch.exp(-log_scale) - block.bias).T.contiguous()  # R x, column-wise
    # lengths are kept by the orthogonal part: |R x| = |x|
    torch.testing.assert_close(rotation.norm(dim=0), x.norm(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_det, log_scale.sum())
    back, inverse_log_det = run(block, z, rev=True)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inverse_log_det, -log_det)


@pytest.mark.filterwarnings("ignore:Using non-full backward hooks")  # FrEIA's hook
def test_orthogonal_transform_computes_what_freias_correction_would(freia, numpy_state):
    from FrEIA.modules.orthogonal import orth_correction

    theirs = freia.OrthogonalTransform([(6,)])
    perturb(theirs, 0.3)  # now FrEIA's weights are not orthogonal
    ours = OrthogonalTransform([(6,)])
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        orth_correction(theirs.weights.data)  # FrEIA's projection, every 256 steps
    assert_same_as_freia(ours, theirs, torch.randn(5, 6))


@pytest.mark.filterwarnings("ignore:Using non-full backward hooks")  # FrEIA's hook
def test_orthogonal_transform_loads_freia_state_and_matches_freia(freia, numpy_state):
    theirs = freia.OrthogonalTransform([(6,)], clamp=3.0)
    perturb(theirs, 0.3)
    with torch.no_grad():  # parity needs orthogonal weights: FrEIA uses its weights as they are
        theirs.weights.copy_(orthogonal(6, seed=1))
    ours = OrthogonalTransform([(6,)], clamp=3.0)
    ours.load_state_dict(theirs.state_dict())
    assert set(ours.state_dict()) == {"weights", "bias", "scaling"}
    assert_same_as_freia(ours, theirs, torch.randn(5, 6))


def round_trip_error_after_training(block, call, steps=20):
    """Maximum-likelihood SGD on anisotropic data; then max |f^{-1}(f(x)) - x|."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.01)
    x = torch.randn(64, 8) * torch.linspace(0.5, 1.5, 8)
    for _ in range(steps):
        z, log_det = call(block, x, rev=False)
        loss = (0.5 * z.square().sum(dim=1) - log_det).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((call(block, call(block, x, rev=False)[0], rev=True)[0] - x).abs().max())


@pytest.mark.filterwarnings("ignore:Using non-full backward hooks")  # FrEIA's hook
def test_orthogonal_transform_stays_invertible_where_freia_drifts(freia, numpy_state):
    # FrEIA defect 11: the inverse is the transpose of weights that drift off orthogonality.
    def call_freia(block, x, rev):
        (out,), log_det = block([x], rev=rev)
        return out, log_det

    torch.manual_seed(0)
    theirs = freia.OrthogonalTransform([(8,)])
    freia_error = round_trip_error_after_training(theirs, call_freia)
    ours = OrthogonalTransform([(8,)])
    ours.load_state_dict(theirs.state_dict() | {"weights": orthogonal(8, seed=0)})
    our_error = round_trip_error_after_training(ours, run)
    assert freia_error > 0.1  # measured: 3.3 (its weights end 0.44 away from orthogonal)
    assert our_error <= 1e-5


def test_orthogonal_transform_rejects_images():
    with pytest.raises(InvGraphError, match=r"OrthogonalTransform: .* of shape \(d,\), received"):
        OrthogonalTransform([(3, 4, 4)])


# --- the shared helpers: one random orthogonal matrix, one Householder reflection ---------------


def test_random_orthogonal_draws_what_the_blocks_always_drew():
    """Seeded models depend on it: the same numbers, and the same draws left in the RNG."""
    torch.manual_seed(3)
    lapack, after = torch.linalg.qr(torch.randn(5, 5))[0], torch.randn(2)
    torch.manual_seed(3)
    assert torch.equal(random_orthogonal(5), lapack) and torch.equal(torch.randn(2), after)
    torch.manual_seed(3)  # AllInOneBlock's rotation: Haar on SO(n), float64 on the CPU
    q, r = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    q = q * torch.sign(r.diagonal())
    q[:, 0] *= torch.linalg.det(q).sign()
    torch.manual_seed(3)
    rotation = random_orthogonal(5, haar=True, dtype=torch.float64, device="cpu")
    assert torch.equal(rotation, q)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.tensor(1.0, dtype=torch.float64))


def _all_in_one_rotation() -> torch.Tensor:
    return AllInOneBlock([(4,)], subnet_constructor=torch.nn.Linear, permute_soft=True).w_perm


@pytest.mark.parametrize(
    ("matrix", "options"),
    [
        (lambda: InvertibleConv1x1([(4, 2, 2)], LU_decomposed=False).weight, {}),
        (lambda: OrthogonalTransform([(4,)]).weights, {}),
        (_all_in_one_rotation, {"haar": True, "dtype": torch.float64, "device": "cpu"}),
    ],
    ids=["conv-1x1", "orthogonal", "all-in-one"],
)
def test_the_blocks_draw_their_matrices_with_random_orthogonal(matrix, options):
    torch.manual_seed(4)  # each block's first draw is its matrix
    drawn = matrix()
    torch.manual_seed(4)
    assert torch.equal(drawn, random_orthogonal(4, **options).to(drawn.dtype))


def test_householder_reflect_is_the_reflection_matrix_row_by_row():
    x, v = torch.randn(3, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    h = torch.eye(5, dtype=torch.float64) - 2 * torch.outer(v, v) / v.dot(v)
    torch.testing.assert_close(householder_reflect(x, v), x @ h)
    per_row = torch.randn(3, 5, dtype=torch.float64)  # one vector per row (conditional mode)
    expected = torch.stack([householder_reflect(x[i], per_row[i]) for i in range(3)])
    torch.testing.assert_close(householder_reflect(x, per_row), expected)
    torch.testing.assert_close(householder_reflect(householder_reflect(x, v), v), x)
