"""Invertible blocks: the nodes' building bricks, one file per family.

Every block subclasses :class:`InvertibleModule` and keeps FrEIA's names and signatures,
so ``from FrEIA.modules import X`` becomes ``from invgraph.modules import X``.
"""

from .all_in_one import AllInOneBlock
from .autoregressive import (
    AutoregressiveBlock,
    MaskedAffineAutoregressive,
    MaskedRationalQuadraticAutoregressive,
)
from .base import InvertibleModule
from .bounded import BoundedSupport
from .continuous import ContinuousFlow
from .coupling import (
    AffineCouplingOneSided,
    ConditionalAffineTransform,
    CouplingBlock,
    GINCouplingBlock,
    GLOWCouplingBlock,
    NICECouplingBlock,
    RNVPCouplingBlock,
)
from .elementwise import (
    ActNorm,
    InvAutoAct,
    InvAutoActFixed,
    InvAutoActTwoSided,
    InvertibleSigmoid,
    LearnedElementwiseScaling,
)
from .gaussian_mixture import GaussianMixtureModel
from .graph_topology import Concat, Split
from .hint import HINTCouplingBlock
from .inverse import Inverse
from .linear import (
    Fixed1x1Conv,
    FixedLinearTransform,
    HouseholderPerm,
    InvertibleConv1x1,
    OrthogonalTransform,
)
from .permutations import PermuteRandom
from .reshapes import (
    Flatten,
    HaarDownsampling,
    HaarUpsampling,
    IRevNetDownsampling,
    IRevNetUpsampling,
    Reshape,
)
from .residual import IResNetLayer
from .splines import (
    CircularRationalQuadraticSpline,
    ElementwiseRationalQuadraticSpline,
    RationalQuadraticSpline,
)

__all__ = [
    "ActNorm",
    "AffineCouplingOneSided",
    "AllInOneBlock",
    "AutoregressiveBlock",
    "BoundedSupport",
    "CircularRationalQuadraticSpline",
    "Concat",
    "ConditionalAffineTransform",
    "ContinuousFlow",
    "CouplingBlock",
    "ElementwiseRationalQuadraticSpline",
    "Fixed1x1Conv",
    "FixedLinearTransform",
    "Flatten",
    "GINCouplingBlock",
    "GLOWCouplingBlock",
    "GaussianMixtureModel",
    "HINTCouplingBlock",
    "HaarDownsampling",
    "HaarUpsampling",
    "HouseholderPerm",
    "IResNetLayer",
    "IRevNetDownsampling",
    "IRevNetUpsampling",
    "InvAutoAct",
    "InvAutoActFixed",
    "InvAutoActTwoSided",
    "Inverse",
    "InvertibleConv1x1",
    "InvertibleModule",
    "InvertibleSigmoid",
    "LearnedElementwiseScaling",
    "MaskedAffineAutoregressive",
    "MaskedRationalQuadraticAutoregressive",
    "NICECouplingBlock",
    "OrthogonalTransform",
    "PermuteRandom",
    "RNVPCouplingBlock",
    "RationalQuadraticSpline",
    "Reshape",
    "Split",
]
