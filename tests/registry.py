"""One registry of every block: each property test in the suite is swept over ``BLOCKS``.

Adding a block to the sweep is adding one :class:`BlockCase` line: an id for the test names
and a factory that builds the block. Random inputs and conditions come from the block's
``dims_in`` and ``dims_c``; :func:`invgraph.testing.check_block` perturbs its parameters, so
blocks initialised to the identity are tested away from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from invgraph.framework import ConditionNode, GraphINN, InputNode, Node, OutputNode, SequenceINN
from invgraph.modules import (
    ActNorm,
    AffineCouplingOneSided,
    AllInOneBlock,
    BoundedSupport,
    CircularRationalQuadraticSpline,
    Concat,
    ConditionalAffineTransform,
    ContinuousFlow,
    ElementwiseRationalQuadraticSpline,
    Fixed1x1Conv,
    FixedLinearTransform,
    Flatten,
    GaussianMixtureModel,
    GINCouplingBlock,
    GLOWCouplingBlock,
    HaarDownsampling,
    HaarUpsampling,
    HINTCouplingBlock,
    HouseholderPerm,
    InvAutoAct,
    InvAutoActFixed,
    InvAutoActTwoSided,
    Inverse,
    InvertibleConv1x1,
    InvertibleModule,
    InvertibleSigmoid,
    IResNetLayer,
    IRevNetDownsampling,
    IRevNetUpsampling,
    LearnedElementwiseScaling,
    MaskedAffineAutoregressive,
    MaskedRationalQuadraticAutoregressive,
    NICECouplingBlock,
    OrthogonalTransform,
    PermuteRandom,
    RationalQuadraticSpline,
    Reshape,
    RNVPCouplingBlock,
    Split,
)
from invgraph.modules.base import Shape

__all__ = ["BLOCKS", "BlockCase", "ConditionalAffineCoupling", "ConvSubnet", "DenseSubnet"]


class ConditionalAffineCoupling(InvertibleModule):
    r"""A minimal conditional affine coupling, for the tests only (the real ones come later).

    :math:`x = [x_1, x_2]`, :math:`(s, t) = \mathrm{net}([x_1, c])`,
    :math:`z = [x_1, x_2 e^{s} + t]`, :math:`\log|\det J| = \sum s`, with :math:`s` soft
    clamped to :math:`(-2, 2)`. The subnet's last layer starts at zero (the identity), as
    real couplings do.
    """

    def __init__(
        self, dims_in: Sequence[Shape], dims_c: Sequence[Shape] | None = None, hidden: int = 8
    ):
        super().__init__(dims_in, dims_c)
        (n,) = self.dims_in[0]
        self.split = (n // 2, n - n // 2)
        n_cond = sum(math.prod(shape) for shape in self.dims_c)
        self.subnet = nn.Sequential(
            nn.Linear(self.split[0] + n_cond, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 2 * self.split[1]),
        )
        nn.init.zeros_(self.subnet[-1].weight)
        nn.init.zeros_(self.subnet[-1].bias)

    def forward(
        self,
        x_or_z: tuple[Tensor, ...],
        c: Sequence[Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        x1, x2 = x_or_z[0].split(self.split, dim=1)
        conditions = [condition.flatten(1) for condition in c]
        # Under autocast the subnet runs in low precision; the bijection stays in x's dtype.
        s, t = self.subnet(torch.cat([x1, *conditions], dim=1)).to(x2.dtype).chunk(2, dim=1)
        s = 2.0 * torch.tanh(s / 2.0)
        if rev:
            return (torch.cat([x1, (x2 - t) * torch.exp(-s)], dim=1),), -s.sum(dim=1)
        return (torch.cat([x1, x2 * torch.exp(s) + t], dim=1),), s.sum(dim=1)

    def output_dims(self, input_dims: list[Shape]) -> list[Shape]:
        return list(input_dims)


class DenseSubnet(nn.Sequential):
    """A small MLP subnet for coupling blocks (module level, so whole models pickle)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Linear(c_in, 16), nn.Tanh(), nn.Linear(16, c_out))


class ConvSubnet(nn.Sequential):
    """A small convolutional subnet for coupling blocks on images."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 1))


def _matrix(n: int, seed: int) -> Tensor:
    """A fixed, well-conditioned invertible matrix for the fixed linear blocks."""
    generator = torch.Generator().manual_seed(seed)
    return torch.eye(n) + 0.3 * torch.randn(n, n, generator=generator)


def _gmm_conditions(k: int = 4, d: int = 3) -> tuple[Tensor, ...]:
    """Valid mixture parameters for batch 3, and one component index per sample."""
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(torch.randn(3, k, generator=g), dim=1)
    mu = torch.randn(3, k, d, generator=g)
    entries = 0.5 * torch.randn(3, k, d * (d + 1) // 2, generator=g)
    return w, mu, entries, torch.tensor([0, k - 1, 1])


@dataclass(frozen=True)
class BlockCase:
    """One entry of the sweep.

    Attributes:
        id: The name in test ids, e.g. ``"split-sizes"``.
        factory: Builds the block (called afresh by every test).
        known_failures: Checks this block is known to fail, with the reason (an issue);
            the sweep marks them ``xfail(strict=True)``, so a fix is noticed.
        conditions: Builds the conditions, for blocks whose conditions must be valid
            values rather than random normal ones (e.g. mixture weights and indices).
    """

    id: str
    factory: Callable[[], InvertibleModule]
    known_failures: Mapping[str, str] = field(default_factory=dict)
    conditions: Callable[[], tuple[Tensor, ...]] | None = None


def _multiscale_graph() -> GraphINN:
    """Haar -> flatten -> split; a conditional coupling on one half, a permutation on the other."""
    x, c = InputNode(2, 4, 4, name="x"), ConditionNode(3, name="c")
    haar = Node(x, HaarDownsampling, {}, name="haar")
    flat = Node(haar, Flatten, {}, name="flatten")
    split = Node(flat, Split, {"section_sizes": [26, 6]}, name="split")
    coupling = Node(split.out1, ConditionalAffineCoupling, {}, conditions=c, name="coupling")
    permute = Node(split.out0, PermuteRandom, {"seed": 0}, name="permute")
    concat = Node([permute.out0, coupling.out0], Concat, {}, name="concat")
    return GraphINN([x, c, haar, flat, split, coupling, permute, concat, OutputNode(concat)])


def _two_output_graph() -> GraphINN:
    """Two inputs, concatenated, coupled, split into two outputs."""
    a, b, c = InputNode(2, name="a"), InputNode(4, name="b"), ConditionNode(3, name="c")
    concat = Node([a, b], Concat, {}, name="concat")
    coupling = Node(concat, ConditionalAffineCoupling, {}, conditions=c, name="coupling")
    split = Node(coupling, Split, {"section_sizes": [1, 5]}, name="split")
    nodes = [a, b, c, concat, coupling, split, OutputNode(split.out0), OutputNode(split.out1)]
    return GraphINN(nodes)


def _sequence() -> SequenceINN:
    inn = SequenceINN(6)
    inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(3,))
    inn.append(PermuteRandom, seed=3)
    inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(3,))
    return inn


# ContinuousFlow solves an ODE with a few fixed steps: its inverse (the backward solve) and
# its log-det (the solver's quadrature of the divergence) hold to the solver's order only.
# With these fields and steps the errors are at least 6e-8 (measured over 12 seeds), far
# above the checks' float64 tolerances (1e-10 / 1e-8); tests/modules/test_continuous.py
# measures them and their convergence with the step count.
_CNF_SOLVER_ERRORS = {
    "inverse": "the backward solve inverts the forward to O(h^p) only, see test_continuous.py",
    "log_det": "the divergence's quadrature matches the discretised map to O(h^p) only, see "
    "test_continuous.py",
    "log_det_symmetry": "forward and backward solves agree to O(h^p) only, see test_continuous.py",
}

BLOCKS: list[BlockCase] = [
    BlockCase("split-sizes", lambda: Split([(6, 4)], section_sizes=[2, 4])),
    BlockCase("split-3-sections", lambda: Split([(6,)], n_sections=3)),
    BlockCase("split-dim1", lambda: Split([(2, 4, 4)], section_sizes=[1, 3], dim=1)),
    BlockCase("concat-2", lambda: Concat([(2, 4), (3, 4)])),
    BlockCase("concat-3", lambda: Concat([(2,), (3,), (1,)])),
    BlockCase("concat-dim1", lambda: Concat([(2, 1, 4), (2, 3, 4)], dim=1)),
    BlockCase("flatten", lambda: Flatten([(2, 4, 4)])),
    BlockCase("reshape", lambda: Reshape([(2, 4, 4)], output_dims=(8, 4))),
    BlockCase("haar", lambda: HaarDownsampling([(2, 4, 4)])),
    BlockCase("haar-wavelet-order", lambda: HaarDownsampling([(2, 4, 4)], order_by_wavelet=True)),
    BlockCase("haar-rebalance", lambda: HaarDownsampling([(2, 4, 4)], rebalance=0.5)),
    BlockCase("haar-up", lambda: HaarUpsampling([(8, 2, 2)])),
    BlockCase("irevnet-down", lambda: IRevNetDownsampling([(2, 4, 4)])),
    BlockCase("irevnet-up", lambda: IRevNetUpsampling([(8, 2, 2)])),
    BlockCase("permute-vector", lambda: PermuteRandom([(7,)], seed=0)),
    BlockCase("permute-image", lambda: PermuteRandom([(4, 2, 2)], seed=1)),
    BlockCase("inverse-haar", lambda: Inverse(HaarDownsampling([(2, 4, 4)], rebalance=0.5))),
    BlockCase("inverse-permute", lambda: Inverse(PermuteRandom([(6,)], seed=2))),
    BlockCase("cond-coupling", lambda: ConditionalAffineCoupling([(6,)], dims_c=[(3,)])),
    BlockCase("nice", lambda: NICECouplingBlock([(6,)], subnet_constructor=DenseSubnet)),
    BlockCase("rnvp-cond", lambda: RNVPCouplingBlock([(6,)], [(3,)], DenseSubnet, clamp=1.5)),
    BlockCase("glow", lambda: GLOWCouplingBlock([(7,)], subnet_constructor=DenseSubnet)),
    BlockCase(
        "glow-image-vector-cond",
        lambda: GLOWCouplingBlock([(4, 4, 4)], [(3,)], ConvSubnet, clamp_activation="TANH"),
    ),
    BlockCase("gin-image", lambda: GINCouplingBlock([(4, 4, 4)], subnet_constructor=ConvSubnet)),
    BlockCase(
        "one-sided-cond", lambda: AffineCouplingOneSided([(6,)], [(2,)], DenseSubnet, split_len=2)
    ),
    BlockCase(
        "conditional-affine", lambda: ConditionalAffineTransform([(6,)], [(3,)], DenseSubnet)
    ),
    BlockCase(
        "fixed-linear",
        lambda: FixedLinearTransform([(6,)], M=_matrix(6, 0), b=torch.linspace(-1, 1, 6)),
    ),
    BlockCase("fixed-linear-no-b", lambda: FixedLinearTransform([(7,)], M=_matrix(7, 1))),
    BlockCase("fixed-1x1", lambda: Fixed1x1Conv([(4, 4, 4)], M=_matrix(4, 2))),
    BlockCase("glow-1x1", lambda: InvertibleConv1x1([(4, 4, 4)])),
    BlockCase("glow-1x1-vector", lambda: InvertibleConv1x1([(7,)])),
    BlockCase("glow-1x1-plain", lambda: InvertibleConv1x1([(2, 4, 4)], LU_decomposed=False)),
    BlockCase("householder", lambda: HouseholderPerm([(7,)])),
    BlockCase("householder-3", lambda: HouseholderPerm([(6,)], n_reflections=3)),
    BlockCase("householder-fixed", lambda: HouseholderPerm([(6,)], n_reflections=3, fixed=True)),
    BlockCase(
        "householder-cond", lambda: HouseholderPerm([(6,)], dims_c=[(6, 2)], n_reflections=2)
    ),
    BlockCase("orthogonal", lambda: OrthogonalTransform([(8,)])),
    BlockCase("all-in-one", lambda: AllInOneBlock([(7,)], subnet_constructor=DenseSubnet)),
    BlockCase(
        "all-in-one-soft-householder-reverse-cond",
        lambda: AllInOneBlock(
            [(6,)],
            [(3,)],
            DenseSubnet,
            permute_soft=True,
            learned_householder_permutation=2,
            reverse_permutation=True,
        ),
    ),
    BlockCase(
        "all-in-one-exp-soft",
        lambda: AllInOneBlock(
            [(8,)], subnet_constructor=DenseSubnet, global_affine_type="EXP", permute_soft=True
        ),
    ),
    BlockCase(
        "all-in-one-image-sigmoid-householder",
        lambda: AllInOneBlock(
            [(4, 4, 4)],
            [(2, 4, 4)],
            ConvSubnet,
            global_affine_type="SIGMOID",
            global_affine_init=0.7,
            learned_householder_permutation=1,
        ),
    ),
    BlockCase(
        "all-in-one-gin-image-vector-cond",
        lambda: AllInOneBlock([(2, 4, 4)], [(3,)], ConvSubnet, gin_block=True, permute_soft=True),
    ),
    BlockCase("sigmoid-vector", lambda: InvertibleSigmoid([(6,)])),
    BlockCase("sigmoid-image", lambda: InvertibleSigmoid([(2, 4, 4)])),
    BlockCase("scaling", lambda: LearnedElementwiseScaling([(2, 4, 4)], init_scale=1.5)),
    BlockCase("actnorm-vector", lambda: ActNorm([(6,)])),
    BlockCase("actnorm-image", lambda: ActNorm([(4, 4, 4)])),
    BlockCase("inv-auto-act", lambda: InvAutoAct([(2, 4, 4)])),
    BlockCase("inv-auto-act-fixed", lambda: InvAutoActFixed([(7,)], slope_init=3.0)),
    BlockCase(
        "inv-auto-act-two-sided",
        lambda: InvAutoActTwoSided([(2, 4, 4)], init_pos=1.5, init_neg=0.3),
    ),
    BlockCase(
        "gmm",
        lambda: GaussianMixtureModel([(3,)], [(4,), (4, 3), (4, 6), (1,)]),
        conditions=_gmm_conditions,
    ),
    BlockCase(
        "gmm-d1",
        lambda: GaussianMixtureModel([(1,)], [(2,), (2, 1), (2, 1), (1,)]),
        conditions=lambda: _gmm_conditions(k=2, d=1),
    ),
    BlockCase("iresnet-exact", lambda: IResNetLayer([(8,)], exact_log_det=True)),
    BlockCase(
        "iresnet-cond-exact", lambda: IResNetLayer([(6,)], dims_c=[(3,)], exact_log_det=True)
    ),
    BlockCase(
        "iresnet-conv-exact",
        lambda: IResNetLayer([(2, 4, 4)], internal_size=4, exact_log_det=True),
    ),
    BlockCase(
        "iresnet-conv-cond-exact",
        lambda: IResNetLayer([(2, 4, 4)], dims_c=[(1, 4, 4)], internal_size=4, exact_log_det=True),
    ),
    BlockCase(
        "iresnet-stochastic",
        lambda: IResNetLayer([(8,)]),
        known_failures={
            "log_det": "stochastic estimator, see test_residual.py",
            "log_det_symmetry": "stochastic estimator, see test_residual.py",
        },
    ),
    BlockCase("rqs", lambda: RationalQuadraticSpline([(6,)], subnet_constructor=DenseSubnet)),
    BlockCase(
        "rqs-cond-tails",
        lambda: RationalQuadraticSpline([(7,)], [(3,)], DenseSubnet, bins=5, bound=1.0),
    ),
    BlockCase(
        "rqs-image-vector-cond",
        lambda: RationalQuadraticSpline([(2, 4, 4)], [(3,)], ConvSubnet, bins=4, bound=1.5),
    ),
    BlockCase("rqs-elementwise", lambda: ElementwiseRationalQuadraticSpline([(6,)], bound=1.0)),
    BlockCase(
        "rqs-elementwise-image", lambda: ElementwiseRationalQuadraticSpline([(2, 4, 4)], bins=4)
    ),
    BlockCase(
        "rqs-elementwise-cond",
        lambda: ElementwiseRationalQuadraticSpline([(2, 4, 4)], [(3,)], ConvSubnet, bound=1.0),
    ),
    BlockCase(
        "circular-spline",
        lambda: CircularRationalQuadraticSpline([(5,)], subnet_constructor=DenseSubnet, bound=4.0),
    ),
    BlockCase(
        "circular-spline-image-cond-no-rotation",
        lambda: CircularRationalQuadraticSpline(
            [(2, 4, 4)], [(3,)], ConvSubnet, bins=4, bound=5.0, rotation=False
        ),
    ),
    # Random normal inputs must lie in the support: bounds at +-8 (or beyond) hold them.
    BlockCase(
        "bounded-box", lambda: BoundedSupport([(6,)], low=-8.0, high=torch.linspace(8, 9, 6))
    ),
    BlockCase(
        "bounded-mixed-image",
        lambda: BoundedSupport(
            [(2, 2, 2)],
            low=torch.tensor([-8.0, -math.inf]).reshape(2, 1, 1),
            high=torch.tensor([[8.0, math.inf], [9.0, math.inf]]),
        ),
    ),
    BlockCase(
        "inverse-bounded", lambda: Inverse(BoundedSupport([(5,)], low=-1.0, high=[1, 2, 3, 4, 5]))
    ),
    BlockCase(
        "maf", lambda: MaskedAffineAutoregressive([(5,)], hidden=(12, 12), ordering="random")
    ),
    BlockCase(
        "iaf-cond-residual",
        lambda: MaskedAffineAutoregressive(
            [(4,)], [(3,)], hidden=(12, 12), residual=True, inverse_autoregressive=True
        ),
    ),
    BlockCase(
        "maf-image-channels-cond",
        lambda: MaskedAffineAutoregressive(
            [(3, 2, 2)], [(2,), (1, 2, 2)], hidden=(8,), autoregressive_over="channels"
        ),
    ),
    BlockCase(
        "ar-spline-cond",
        lambda: MaskedRationalQuadraticAutoregressive([(4,)], [(2,)], hidden=(12,), bins=4),
    ),
    BlockCase(
        "ar-spline-iaf-image",
        lambda: MaskedRationalQuadraticAutoregressive(
            [(2, 2, 2)], hidden=(12,), bins=3, bound=1.5, inverse_autoregressive=True
        ),
    ),
    BlockCase("hint", lambda: HINTCouplingBlock([(8,)], subnet_constructor=DenseSubnet)),
    BlockCase("hint-odd-cond", lambda: HINTCouplingBlock([(7,)], [(3,)], DenseSubnet)),
    BlockCase("hint-image-vector-cond", lambda: HINTCouplingBlock([(4, 4, 4)], [(3,)], ConvSubnet)),
    BlockCase(
        "cnf-rk4",
        lambda: ContinuousFlow([(4,)], field_constructor=DenseSubnet, steps=1),
        known_failures=_CNF_SOLVER_ERRORS,
    ),
    BlockCase(
        "cnf-midpoint-cond",
        lambda: ContinuousFlow([(3,)], [(2,)], DenseSubnet, steps=4, solver="midpoint"),
        known_failures=_CNF_SOLVER_ERRORS,
    ),
    BlockCase(
        "cnf-euler-image-vector-cond",
        lambda: ContinuousFlow(
            [(1, 2, 2)], [(3,)], hidden=(8,), steps=4, solver="euler", time_frequencies=2
        ),
        known_failures=_CNF_SOLVER_ERRORS,
    ),
    BlockCase(
        "cnf-hutchinson",
        lambda: ContinuousFlow(
            [(4,)], field_constructor=DenseSubnet, steps=2, log_det="hutchinson"
        ),
        known_failures={
            "inverse": _CNF_SOLVER_ERRORS["inverse"],
            "log_det": "stochastic estimator, see test_continuous.py",
            "log_det_symmetry": "stochastic estimator, see test_continuous.py",
        },
    ),
    BlockCase("graph-multiscale", _multiscale_graph),
    BlockCase("graph-two-outputs", _two_output_graph),
    BlockCase("sequence", _sequence),
]
