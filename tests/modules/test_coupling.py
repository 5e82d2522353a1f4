"""Coupling blocks: the shared base, conditions, clamps, and parity with FrEIA 0.2."""

from __future__ import annotations

import io
import re

import pytest
import torch
from registry import ConvSubnet, DenseSubnet
from torch import nn

import invgraph as ig
from invgraph.modules import (
    AffineCouplingOneSided,
    AllInOneBlock,
    ConditionalAffineTransform,
    ElementwiseRationalQuadraticSpline,
    GINCouplingBlock,
    GLOWCouplingBlock,
    HINTCouplingBlock,
    NICECouplingBlock,
    RationalQuadraticSpline,
    RNVPCouplingBlock,
)
from invgraph.modules.clamping import atan_clamp, resolve_clamp, sigmoid_clamp, tanh_clamp
from invgraph.testing import check_block

TWO_SIDED = [NICECouplingBlock, RNVPCouplingBlock, GLOWCouplingBlock, GINCouplingBlock]
ALL = [*TWO_SIDED, AffineCouplingOneSided]


def perturb(module: nn.Module, scale: float = 0.5, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return module


@pytest.mark.parametrize("block", ALL, ids=lambda b: b.__name__)
@pytest.mark.parametrize(
    "dims_in, dims_c, subnet",
    [
        ([(5,)], None, DenseSubnet),
        ([(5,)], [(3,), (2,)], DenseSubnet),
        ([(4, 4, 4)], [(2, 4, 4)], ConvSubnet),
        ([(4, 4, 4)], [(3,)], ConvSubnet),  # a vector condition, broadcast over space
    ],
    ids=["vector", "vector-2-conditions", "image", "image-vector-condition"],
)
def test_properties(block, dims_in, dims_c, subnet):
    check_block(block(dims_in, dims_c, subnet_constructor=subnet), perturb=0.3).assert_ok()


def test_conditional_affine_transform_properties():
    block = ConditionalAffineTransform([(4, 4, 4)], [(3,)], subnet_constructor=ConvSubnet)
    check_block(block, perturb=0.3).assert_ok()
    with pytest.raises(ig.InvGraphError, match="needs at least one condition"):
        ConditionalAffineTransform([(4,)], subnet_constructor=DenseSubnet)


def test_vector_condition_equals_its_spatial_broadcast():
    torch.manual_seed(0)
    vector = perturb(GLOWCouplingBlock([(4, 4, 4)], [(3,)], subnet_constructor=ConvSubnet))
    spatial = GLOWCouplingBlock([(4, 4, 4)], [(3, 4, 4)], subnet_constructor=ConvSubnet)
    spatial.load_state_dict(vector.state_dict())
    x, c = torch.randn(2, 4, 4, 4), torch.randn(2, 3)
    (z_vector,), ld_vector = vector((x,), c=(c,))
    (z_spatial,), ld_spatial = spatial((x,), c=(c[:, :, None, None].expand(-1, -1, 4, 4),))
    torch.testing.assert_close(z_vector, z_spatial)
    torch.testing.assert_close(ld_vector, ld_spatial)


def test_condition_of_another_spatial_size_is_refused():
    with pytest.raises(ig.InvGraphError, match=r"condition 0 has shape \(2, 8, 8\).*\(2, 4, 4\)"):
        GLOWCouplingBlock([(4, 4, 4)], [(2, 8, 8)], subnet_constructor=ConvSubnet)
    x = ig.InputNode(4, 4, 4, name="x")
    c = ig.ConditionNode(2, 3, 3, name="c")
    with pytest.raises(ig.InvGraphError, match=r"Node 'coupling'.*condition 0"):
        ig.Node(
            x, GLOWCouplingBlock, {"subnet_constructor": ConvSubnet}, conditions=c, name="coupling"
        )


def test_errors():
    with pytest.raises(ig.InvGraphError, match="needs subnet_constructor"):
        GLOWCouplingBlock([(4,)])
    with pytest.raises(ig.InvGraphError, match="split_len=7 for 4 channels"):
        GLOWCouplingBlock([(4,)], subnet_constructor=DenseSubnet, split_len=7)
    with pytest.raises(ig.InvGraphError, match="unknown clamp activation 'SOFT'"):
        GLOWCouplingBlock([(4,)], subnet_constructor=DenseSubnet, clamp_activation="SOFT")


# Every block that couples two halves of the channels (the spline and HINT couplings too).
COUPLINGS = [*ALL, RationalQuadraticSpline, HINTCouplingBlock, AllInOneBlock]


@pytest.mark.parametrize("block", COUPLINGS, ids=lambda b: b.__name__)
@pytest.mark.parametrize(
    ("shape", "advice"),
    [((1,), "a single feature cannot be coupled"), ((1, 8, 8), r"HaarDownsampling .*\(4, 4, 4\)")],
    ids=["vector", "image"],
)
def test_a_coupling_refuses_one_channel(block, shape, advice):
    # Before, the blocks with split_len (0, 1) built a degenerate block: one half empty.
    name, split = block.__name__, r"\(1, 0\)" if block is AllInOneBlock else r"\(0, 1\)"
    match = rf"{name}: input shape {re.escape(str(shape))} has 1 channel; a coupling splits"
    match += rf" the channels into two non-empty halves, here split_len={split}: .*{advice}"
    with pytest.raises(ig.InvGraphError, match=match):
        block([shape], subnet_constructor=nn.Linear)


@pytest.mark.parametrize(
    ("build", "halves"),
    [
        (lambda: AffineCouplingOneSided([(4,)], [(2,)], nn.Linear, split_len=0), r"\(0, 4"),
        (lambda: AffineCouplingOneSided([(4,)], [(2,)], nn.Linear, split_len=4), r"\(4, 0"),
        (lambda: GLOWCouplingBlock([(4,)], subnet_constructor=nn.Linear, split_len=0.1), r"\(0, 4"),
        (lambda: RNVPCouplingBlock([(4,)], subnet_constructor=nn.Linear, split_len=1.0), r"\(4, 0"),
    ],
    ids=["one-sided-0", "one-sided-4", "glow-0.1", "rnvp-1.0"],
)
def test_a_split_that_leaves_a_half_empty_is_refused(build, halves):
    match = rf"4 channels; .* non-empty halves, here split_len={halves}\): give split_len between"
    with pytest.raises(ig.InvGraphError, match=match + r" 1 and 3 .*ConditionalAffineTransform"):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: ConditionalAffineTransform([(1,)], [(2,)], DenseSubnet),
        lambda: ConditionalAffineTransform([(1, 4, 4)], [(2,)], ConvSubnet),
        lambda: ElementwiseRationalQuadraticSpline([(1,)]),
        lambda: ElementwiseRationalQuadraticSpline([(1, 4, 4)], [(3,)], ConvSubnet),
    ],
    ids=["conditional-affine", "conditional-affine-image", "spline", "spline-image-cond"],
)
def test_blocks_driven_by_conditions_alone_take_one_channel(build):
    block = build()  # the passive half is empty by design
    assert (block.split_len1, block.split_len2) == (0, 1)
    check_block(block, checks=["inverse", "log_det", "output_dims"]).assert_ok()


def test_split_len_and_one_sided_identity():
    block = perturb(AffineCouplingOneSided([(6,)], subnet_constructor=DenseSubnet, split_len=2))
    x = torch.randn(3, 6)
    (z,), _ = block((x,))
    assert torch.equal(z[:, :2], x[:, :2]) and not torch.allclose(z[:, 2:], x[:, 2:])


def test_gin_is_volume_preserving_but_not_identity_per_dimension():
    block = perturb(GINCouplingBlock([(6,)], subnet_constructor=DenseSubnet))
    x = torch.randn(4, 6, dtype=torch.float64)
    block.double()
    jacobian = torch.func.jacrev(lambda v: block((v[None],))[0][0][0])(x[0])
    assert abs(torch.linalg.slogdet(jacobian)[1].item()) < 1e-10
    assert (jacobian.diagonal() - 1).abs().max() > 1e-2


def test_clamps_are_named_and_bounded():
    u = torch.tensor([-1e6, 0.0, 1e6])
    for name, function in [("ATAN", atan_clamp), ("tanh", tanh_clamp), ("SIGMOID", sigmoid_clamp)]:
        assert resolve_clamp(name) is function
        assert function(u).abs().max() <= 1.0 and function(u)[1] == 0
    assert resolve_clamp(torch.sin) is torch.sin


def test_whole_model_saves_with_string_clamps():
    """FrEIA defect 13: its clamps are lambdas stored on the module; torch.save fails."""
    inn = ig.SequenceINN(6)
    for _ in range(2):
        inn.append(GLOWCouplingBlock, subnet_constructor=DenseSubnet, clamp_activation="TANH")
    buffer = io.BytesIO()
    torch.save(inn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 6)
    torch.testing.assert_close(loaded(x)[0], inn(x)[0])


def test_freia_clamp_lambdas_break_torch_save():
    FrEIA = pytest.importorskip("FrEIA.modules")
    block = FrEIA.GLOWCouplingBlock([(6,)], subnet_constructor=DenseSubnet)
    with pytest.raises(Exception, match=r"lambda|pickle|local"):
        torch.save(block, io.BytesIO())


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("NICECouplingBlock", {}),
        ("RNVPCouplingBlock", {"clamp": 1.5}),
        ("RNVPCouplingBlock", {"clamp_activation": "TANH", "split_len": 2}),
        ("GLOWCouplingBlock", {}),
        ("GLOWCouplingBlock", {"clamp": 3.0, "clamp_activation": "SIGMOID"}),
        ("GINCouplingBlock", {}),
        ("AffineCouplingOneSided", {"split_len": 0.25}),
    ],
)
@pytest.mark.parametrize("conditioned", [False, True], ids=["plain", "conditioned"])
@pytest.mark.parametrize("image", [False, True], ids=["vector", "image"])
def test_parity_with_freia(name, kwargs, conditioned, image):
    FrEIA = pytest.importorskip("FrEIA.modules")
    subnet = ConvSubnet if image else DenseSubnet
    dims_in = [(4, 4, 4)] if image else [(8,)]
    dims_c = ([(3, 4, 4)] if image else [(3,)]) if conditioned else []
    torch.manual_seed(0)
    theirs = perturb(getattr(FrEIA, name)(dims_in, dims_c, subnet_constructor=subnet, **kwargs))
    ours = getattr(ig.modules, name)(dims_in, dims_c, subnet_constructor=subnet, **kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(5, *dims_in[0])
    c = [torch.randn(5, *s) for s in dims_c]
    for rev in (False, True):
        (z_ours,), ld_ours = ours((x,), c=c, rev=rev)
        (z_theirs,), ld_theirs = theirs((x,), c=c, rev=rev)
        torch.testing.assert_close(z_ours, z_theirs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            torch.zeros(5) + ld_ours, torch.zeros(5) + ld_theirs, atol=1e-5, rtol=1e-5
        )


def test_conditional_affine_transform_parity_with_freia():
    FrEIA = pytest.importorskip("FrEIA.modules")
    torch.manual_seed(0)
    theirs = perturb(
        FrEIA.ConditionalAffineTransform([(6,)], [(3,)], subnet_constructor=DenseSubnet)
    )
    ours = ConditionalAffineTransform([(6,)], [(3,)], subnet_constructor=DenseSubnet)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, c = torch.randn(4, 6), torch.randn(4, 3)
    for rev in (False, True):
        (z_ours,), ld_ours = ours((x,), c=[c], rev=rev)
        (z_theirs,), ld_theirs = theirs((x,), c=[c], rev=rev)
        torch.testing.assert_close(z_ours, z_theirs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ld_ours, ld_theirs, atol=1e-5, rtol=1e-5)
