"""Invertible blocks: the nodes' building bricks, one file per family.

Every block subclasses :class:`InvertibleModule` and keeps FrEIA's names and signatures,
so ``from FrEIA.modules import X`` becomes ``from invgraph.modules import X``.
"""

from .base import InvertibleModule
from .coupling import (
    AffineCouplingOneSided,
    ConditionalAffineTransform,
    CouplingBlock,
    GINCouplingBlock,
    GLOWCouplingBlock,
    NICECouplingBlock,
    RNVPCouplingBlock,
)
from .graph_topology import Concat, Split
from .inverse import Inverse
from .permutations import PermuteRandom
from .reshapes import (
    Flatten,
    HaarDownsampling,
    HaarUpsampling,
    IRevNetDownsampling,
    IRevNetUpsampling,
    Reshape,
)

__all__ = [
    "AffineCouplingOneSided",
    "Concat",
    "ConditionalAffineTransform",
    "CouplingBlock",
    "Flatten",
    "GINCouplingBlock",
    "GLOWCouplingBlock",
    "HaarDownsampling",
    "HaarUpsampling",
    "IRevNetDownsampling",
    "IRevNetUpsampling",
    "Inverse",
    "InvertibleModule",
    "NICECouplingBlock",
    "PermuteRandom",
    "RNVPCouplingBlock",
    "Reshape",
    "Split",
]
