"""AllInOneBlock: every option combination, conditions, FrEIA 0.2 parity and its defects."""

from __future__ import annotations

import copy
import io
import itertools
import math

import numpy as np
import pytest
import torch
from registry import ConvSubnet, DenseSubnet
from torch import nn

import invgraph as ig
from invgraph.errors import InvGraphError
from invgraph.modules.all_in_one import AllInOneBlock
from invgraph.testing import check_block

SHAPES = {"vector": ([(7,)], DenseSubnet), "image": ([(2, 4, 4)], ConvSubnet)}
# The global scale is unused in GIN mode, so one global_affine_type suffices there.
AFFINE = [
    {"global_affine_type": "SOFTPLUS"},
    {"global_affine_type": "SIGMOID", "global_affine_init": 0.7},
    {"global_affine_type": "EXP", "global_affine_init": 1.5, "affine_clamping": 1.0},
    {"gin_block": True},
]
OPTIONS = [
    {**affine, "permute_soft": soft, "learned_householder_permutation": k, **reverse}
    for affine, soft, k, reverse in itertools.product(
        AFFINE, [False, True], [0, 2], [{}, {"reverse_permutation": True}]
    )
]

# On images (slower checks): each permutation variant once, each affine mode twice.
IMAGE_OPTIONS = [
    {**AFFINE[i % len(AFFINE)], "permute_soft": soft, "learned_householder_permutation": k, **rev}
    for i, (soft, k, rev) in enumerate(
        itertools.product([False, True], [0, 2], [{}, {"reverse_permutation": True}])
    )
]


def _id(options: dict) -> str:
    short = {"learned_householder_permutation": "householder", "global_affine_init": "init"}
    return ",".join(f"{short.get(k, k)}={v}" for k, v in options.items())


def _perturb(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    """Move the trainable parameters away from their initial values (not FrEIA's fixed ones)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(scale * noise.to(parameter.dtype))
    return module


def _error(ours, theirs) -> float:
    """``max |a - b| / (1 + |b|)``, with a constant log-det read as one value per sample."""
    theirs = torch.as_tensor(theirs).detach()
    ours = torch.as_tensor(ours).detach().expand_as(theirs)
    return float(((ours - theirs).abs() / (1 + theirs.abs())).max())


@pytest.fixture
def freia_modules():
    """FrEIA.modules, with NumPy's global random state restored after FrEIA drew from it."""
    modules = pytest.importorskip("FrEIA.modules")
    state = np.random.get_state()
    np.random.seed(0)
    yield modules
    np.random.set_state(state)


# --- properties of every configuration --------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS, ids=_id)
def test_check_block_on_every_option_combination(options):
    torch.manual_seed(0)
    block = AllInOneBlock([(7,)], subnet_constructor=DenseSubnet, **options)
    check_block(block, perturb=0.3).assert_ok()


@pytest.mark.parametrize("options", IMAGE_OPTIONS, ids=_id)
def test_check_block_on_images(options):
    torch.manual_seed(0)
    block = AllInOneBlock([(2, 4, 4)], subnet_constructor=ConvSubnet, **options)
    check_block(block, perturb=0.3).assert_ok()


@pytest.mark.parametrize(
    "dims_in, dims_c, subnet",
    [
        ([(6,)], [(3,)], DenseSubnet),
        ([(6,)], [(3,), (2,)], DenseSubnet),
        ([(2, 4, 4)], [(3, 4, 4)], ConvSubnet),
        ([(2, 4, 4)], [(3,)], ConvSubnet),  # a vector condition, broadcast over space
        ([(4, 4, 4)], [(3,), (2, 4, 4)], ConvSubnet),
    ],
    ids=["vector", "vector-2", "image-spatial", "image-vector", "image-vector-and-spatial"],
)
@pytest.mark.parametrize(
    "options",
    [{}, {"gin_block": True, "permute_soft": True, "learned_householder_permutation": 1}],
    ids=["default", "gin-soft-householder"],
)
def test_check_block_with_conditions(dims_in, dims_c, subnet, options):
    torch.manual_seed(0)
    block = AllInOneBlock(dims_in, dims_c, subnet_constructor=subnet, **options)
    check_block(block, perturb=0.3).assert_ok()


# --- the math ---------------------------------------------------------------------------------


def _zero_subnet(block: AllInOneBlock) -> AllInOneBlock:
    with torch.no_grad():
        for parameter in block.subnet.parameters():
            parameter.zero_()
    return block


@pytest.mark.parametrize("kind, init", [("SIGMOID", 0.3), ("SOFTPLUS", 2.5), ("EXP", 0.6)])
def test_global_scale_starts_at_global_affine_init(kind, init):
    block = _zero_subnet(
        AllInOneBlock(
            [(2, 4, 4)],
            subnet_constructor=ConvSubnet,
            global_affine_init=init,
            global_affine_type=kind,
        )
    ).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    (z,), log_det = block((x,))
    w = block._mixing_matrix()
    torch.testing.assert_close(z, torch.einsum("ij,bjhw->bihw", w, init * x))
    torch.testing.assert_close(log_det, torch.full((3,), 2 * 16 * math.log(init)).double())


def test_global_affine_type_names_are_case_insensitive_and_large_inits_do_not_overflow():
    block = AllInOneBlock(
        [(4,)],
        subnet_constructor=DenseSubnet,
        global_affine_type="softplus",
        global_affine_init=500.0,
    )
    assert torch.isfinite(block.global_scale).all()
    torch.testing.assert_close(block._global_scale().double(), torch.full((1, 4), 500.0).double())


def test_coupling_transforms_the_second_half_from_the_first():
    torch.manual_seed(0)
    block = _perturb(AllInOneBlock([(5,)], subnet_constructor=DenseSubnet, gin_block=True))
    x = torch.randn(4, 5)
    (z,), _ = block((x,))
    u = torch.einsum("ij,bj->bi", block._mixing_matrix().t(), z) - block.global_offset
    assert torch.allclose(u[:, :3], x[:, :3], atol=1e-6)  # x_1: the first ceil(C/2) channels
    assert not torch.allclose(u[:, 3:], x[:, 3:], atol=1e-3)


def test_reverse_permutation_undoes_its_own_permutation_around_an_identity_coupling():
    for reverse in (False, True):
        block = _zero_subnet(
            AllInOneBlock(
                [(6,)],
                subnet_constructor=DenseSubnet,
                global_affine_type="EXP",
                reverse_permutation=reverse,
            )
        )
        x = torch.randn(3, 6)
        (z,), _ = block((x,))
        expected = x if reverse else x @ block._mixing_matrix().t()
        torch.testing.assert_close(z, expected)


def test_gin_block_preserves_volume_but_scales_single_dimensions():
    torch.manual_seed(1)
    block = _perturb(AllInOneBlock([(2, 4, 4)], subnet_constructor=ConvSubnet, gin_block=True))
    block.double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    (_,), log_det = block((x,))
    assert log_det == 0.0 and block((x,), rev=True)[1] == 0.0
    jacobian = torch.func.jacrev(lambda v: block((v[None],))[0][0][0].flatten())(x[0])
    jacobian = jacobian.reshape(32, 32).detach()
    assert abs(float(torch.linalg.slogdet(jacobian)[1])) < 1e-10
    # centred over the whole sample, not per pixel: a pixel's own log-scales need not sum to 0
    log_dets_per_pixel = [torch.linalg.slogdet(jacobian[i::16, i::16])[1] for i in range(16)]
    assert max(abs(float(v)) for v in log_dets_per_pixel) > 1e-3
    assert "global_scale" not in dict(block.named_parameters())
    assert "global_scale" in block.state_dict()


def test_permutation_matrices_are_fixed_buffers_of_freias_shapes():
    torch.manual_seed(0)
    hard = AllInOneBlock([(4, 3, 3)], subnet_constructor=ConvSubnet)
    soft = AllInOneBlock([(4, 3, 3)], subnet_constructor=ConvSubnet, permute_soft=True)
    for block in (hard, soft):
        names = {name for name, _ in block.named_parameters()}
        assert {"w_perm", "w_perm_inv", "w_0"}.isdisjoint(names)
        assert block.w_perm.shape == block.w_perm_inv.shape == (4, 4, 1, 1)
        w = block.w_perm[:, :, 0, 0]
        assert torch.equal(block.w_perm_inv[:, :, 0, 0], w.t())
        torch.testing.assert_close(w @ w.t(), torch.eye(4))
    w = hard.w_perm[:, :, 0, 0]
    assert torch.equal(w.sum(0), torch.ones(4)) and torch.equal(w.sum(1), torch.ones(4))
    assert set(w.unique().tolist()) == {0.0, 1.0}
    assert torch.linalg.det(soft.w_perm[:, :, 0, 0].double()) == pytest.approx(1.0, abs=1e-6)
    assert not set(soft.w_perm.unique().tolist()) <= {0.0, 1.0}


def test_householder_matrix_is_rebuilt_from_the_parameters_and_trained():
    torch.manual_seed(0)
    block = AllInOneBlock(
        [(5,)], subnet_constructor=DenseSubnet, learned_householder_permutation=3
    ).double()
    assert {"vk_householder", "w_0"} <= set(block.state_dict())
    assert "w_0" not in dict(block.named_parameters()) and "w_perm" not in block.state_dict()
    expected = block.w_0
    for v in block.vk_householder.detach():
        expected = expected @ (torch.eye(5).double() - 2 * torch.outer(v, v) / v.dot(v))
    torch.testing.assert_close(block._mixing_matrix(), expected)
    with torch.no_grad():
        block.vk_householder.add_(1.0)  # a new matrix at the next call: nothing is cached
    torch.testing.assert_close(
        block._mixing_matrix() @ block._mixing_matrix().t(), torch.eye(5).double()
    )
    assert not torch.allclose(block._mixing_matrix(), expected)
    (z,), log_det = block((torch.randn(3, 5, dtype=torch.float64),))
    (z.square().sum() + log_det.sum()).backward()
    assert block.vk_householder.grad is not None and block.vk_householder.grad.abs().sum() > 0


def test_soft_rotation_stays_exact_after_a_cast_to_float64():
    torch.manual_seed(0)
    block = AllInOneBlock([(8,)], subnet_constructor=DenseSubnet, permute_soft=True).double()
    w = block.w_perm
    # stored in float32: cast to float64, it is orthogonal to 1e-7 only ...
    assert (w @ w.t() - torch.eye(8).double()).abs().max() > 1e-10
    x = torch.randn(5, 8, dtype=torch.float64)
    (z,), _ = block((x,))
    (x_back,), _ = block((z,), rev=True)
    assert (x_back - x).abs().max() < 1e-12  # ... the block still inverts exactly


def test_jac_false_skips_the_log_det():
    block = AllInOneBlock([(6,)], subnet_constructor=DenseSubnet)
    x = torch.randn(2, 6)
    assert block((x,), jac=False)[1] is None
    assert block((x,), rev=True, jac=False)[1] is None


def test_vector_condition_equals_its_spatial_broadcast():
    torch.manual_seed(0)
    vector = _perturb(AllInOneBlock([(2, 4, 4)], [(3,)], ConvSubnet, permute_soft=True))
    spatial = AllInOneBlock([(2, 4, 4)], [(3, 4, 4)], ConvSubnet, permute_soft=True)
    spatial.load_state_dict(vector.state_dict())
    x, c = torch.randn(2, 2, 4, 4), torch.randn(2, 3)
    for rev in (False, True):
        (z_vector,), ld_vector = vector((x,), c=(c,), rev=rev)
        (z_spatial,), ld_spatial = spatial(
            (x,), c=(c[:, :, None, None].expand(-1, -1, 4, 4),), rev=rev
        )
        torch.testing.assert_close(z_vector, z_spatial)
        torch.testing.assert_close(ld_vector, ld_spatial)


def test_in_a_graph_with_a_vector_condition_on_an_image():
    x, c = ig.InputNode(2, 4, 4, name="x"), ig.ConditionNode(3, name="c")
    node = ig.Node(x, AllInOneBlock, {"subnet_constructor": ConvSubnet}, conditions=c, name="aio")
    inn = ig.GraphINN([x, c, node, ig.OutputNode(node)])
    images, labels = torch.randn(4, 2, 4, 4), torch.randn(4, 3)
    z, log_det = inn(images, c=[labels])
    assert z.shape == images.shape and log_det.shape == (4,)
    torch.testing.assert_close(inn(z, c=[labels], rev=True)[0], images, atol=1e-5, rtol=1e-5)


def test_runs_under_torch_compile_without_graph_breaks():
    torch.manual_seed(0)
    block = AllInOneBlock(
        [(2, 4, 4)],
        [(3,)],
        ConvSubnet,
        permute_soft=True,
        learned_householder_permutation=2,
        reverse_permutation=True,
    )
    compiled = torch.compile(block, fullgraph=True, backend="eager")
    x, c = torch.randn(3, 2, 4, 4), torch.randn(3, 3)
    (z,), log_det = compiled((x,), c=(c,))
    (x_back,), _ = compiled((z,), c=(c,), rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_det, block((x,), c=(c,))[1])


def test_buffers_follow_the_device_context():
    with torch.device("meta"):
        block = AllInOneBlock([(4,)], subnet_constructor=DenseSubnet, permute_soft=True)
    assert block.w_perm.device.type == block.global_scale.device.type == "meta"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dims_c": [(3, 2, 2)]}, r"condition 0 has shape \(3, 2, 2\).*\(2, 4, 4\)"),
        ({"dims_c": [(3, 4)]}, r"condition 0 has shape \(3, 4\)"),
        ({"subnet_constructor": None}, "needs subnet_constructor"),
        ({"global_affine_type": "RELU"}, r"global_affine_type must be one of .* 'RELU'"),
        ({"global_affine_type": "SIGMOID", "global_affine_init": 10.0}, r"\(0, 10.0\)"),
        ({"global_affine_init": 0.0}, r"global_affine_init must be in \(0, inf\)"),
        ({"learned_householder_permutation": -1}, "must be >= 0, received -1"),
    ],
)
def test_errors_name_the_block_and_the_values(kwargs, message):
    options = {"subnet_constructor": ConvSubnet, **kwargs}
    with pytest.raises(InvGraphError, match=f"AllInOneBlock: .*{message}"):
        AllInOneBlock([(2, 4, 4)], **options)


@pytest.mark.parametrize(
    ("dims_in", "match"),
    [
        ([(1,)], r"input shape \(1,\) has 1 channel; .* halves, here split_len=\(1, 0\)"),
        ([(4,), (4,)], r"expects exactly 1 input of shape \(C, \.\.\.\), .*\[\(4,\), \(4,\)\]"),
        ([()], r"expects exactly 1 input of shape \(C, \.\.\.\), received shapes \[\(\)\]"),
    ],
)
def test_rejects_anything_but_one_input_with_two_channels(dims_in, match):
    with pytest.raises(InvGraphError, match=rf"AllInOneBlock: {match}"):
        AllInOneBlock(dims_in, subnet_constructor=DenseSubnet)


# --- FrEIA 0.2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("options", OPTIONS, ids=_id)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_with_freia(freia_modules, shape, options):
    dims_in, subnet = SHAPES[shape]
    _assert_parity(freia_modules, dims_in, [], subnet, options)


@pytest.mark.parametrize(
    "dims_in, dims_c, subnet",
    [([(6,)], [(3,), (2,)], DenseSubnet), ([(2, 4, 4)], [(3, 4, 4)], ConvSubnet)],
    ids=["vector", "image"],
)
@pytest.mark.parametrize(
    "options",
    [{}, {"permute_soft": True, "learned_householder_permutation": 2, "reverse_permutation": True}],
    ids=["default", "soft-householder-reverse"],
)
def test_parity_with_freia_with_conditions(freia_modules, dims_in, dims_c, subnet, options):
    _assert_parity(freia_modules, dims_in, dims_c, subnet, options)


def _assert_parity(freia_modules, dims_in, dims_c, subnet, options):
    torch.manual_seed(0)
    theirs = _perturb(freia_modules.AllInOneBlock(dims_in, dims_c, subnet, **options))
    ours = AllInOneBlock(dims_in, dims_c, subnet, **options)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(5, *dims_in[0])
    c = [torch.randn(5, *shape) for shape in dims_c]
    for rev in (False, True):
        with torch.no_grad():
            (z_ours,), ld_ours = ours((x,), c=c, rev=rev)
            (z_theirs,), ld_theirs = theirs((x,), c=c, rev=rev)
        assert _error(z_ours, z_theirs) <= 1e-5, f"rev={rev}: outputs"
        assert _error(ld_ours, ld_theirs) <= 1e-5, f"rev={rev}: log-dets {ld_ours}, {ld_theirs}"


def test_freia_refuses_a_vector_condition_on_an_image_which_is_broadcast_here(freia_modules):
    """FrEIA defect 2: a condition must have the input's spatial shape."""
    with pytest.raises(AssertionError, match="don't agree"):
        freia_modules.AllInOneBlock([(2, 4, 4)], [(3,)], subnet_constructor=ConvSubnet)
    torch.manual_seed(0)
    theirs = _perturb(freia_modules.AllInOneBlock([(2, 4, 4)], [(3, 4, 4)], ConvSubnet))
    ours = AllInOneBlock([(2, 4, 4)], [(3,)], ConvSubnet)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, c = torch.randn(3, 2, 4, 4), torch.randn(3, 3)
    with torch.no_grad():
        (z_ours,), ld_ours = ours((x,), c=(c,))
        (z_theirs,), ld_theirs = theirs((x,), c=[c[:, :, None, None].expand(-1, -1, 4, 4)])
    assert _error(z_ours, z_theirs) <= 1e-5 and _error(ld_ours, ld_theirs) <= 1e-5


def test_householder_reflections_with_a_hard_permutation():
    """FrEIA defect 8 as freia.md lists it (reflections without permute_soft; FrEIA 0.2 runs
    it in this environment, see the parity sweep): exact here, as the permutation is."""
    torch.manual_seed(0)
    for dims_in, subnet in SHAPES.values():
        block = AllInOneBlock(
            dims_in, subnet_constructor=subnet, learned_householder_permutation=3
        ).double()
        w0 = block.w_0
        assert torch.equal(w0 @ w0.t(), torch.eye(len(w0)).double())  # an exact permutation
        x = torch.randn(3, *dims_in[0], dtype=torch.float64)
        (z,), log_det = block((x,))
        (x_back,), log_det_back = block((z,), rev=True)
        assert (x_back - x).abs().max() < 1e-12
        torch.testing.assert_close(log_det_back, -log_det)


def test_freia_stores_lambdas_and_cannot_be_saved_whole(freia_modules):
    """FrEIA defect 13: torch.save of the module fails on its lambdas; it works here."""
    theirs = freia_modules.AllInOneBlock([(6,)], subnet_constructor=DenseSubnet)
    with pytest.raises(Exception, match=r"lambda|pickle|local"):
        torch.save(theirs, io.BytesIO())
    for kind in ("SIGMOID", "SOFTPLUS", "EXP"):
        ours = AllInOneBlock([(6,)], subnet_constructor=DenseSubnet, global_affine_type=kind)
        buffer = io.BytesIO()
        torch.save(ours, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        x = torch.randn(2, 6)
        torch.testing.assert_close(loaded((x,))[0][0], ours((x,))[0][0])


def test_freia_householder_block_cannot_be_deep_copied_after_a_forward_pass(freia_modules):
    """FrEIA keeps the Householder matrix, a non-leaf tensor, on the module after forward."""
    x = torch.randn(3, 6)
    theirs = freia_modules.AllInOneBlock(
        [(6,)], subnet_constructor=DenseSubnet, learned_householder_permutation=2
    )
    theirs((x,))
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(theirs)
    ours = AllInOneBlock([(6,)], subnet_constructor=DenseSubnet, learned_householder_permutation=2)
    (z,), _ = ours((x,))
    torch.testing.assert_close(copy.deepcopy(ours)((x,))[0][0], z)


def test_freias_fixed_matrices_are_parameters_here_buffers(freia_modules):
    theirs = freia_modules.AllInOneBlock([(6,)], subnet_constructor=DenseSubnet)
    assert {"w_perm", "w_perm_inv"} <= {name for name, _ in theirs.named_parameters()}
    ours = AllInOneBlock([(6,)], subnet_constructor=DenseSubnet)
    assert {name for name, _ in ours.named_buffers()} == {"w_perm", "w_perm_inv"}
    assert set(ours.state_dict()) == set(theirs.state_dict())
