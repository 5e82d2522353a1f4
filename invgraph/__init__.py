"""invgraph: invertible neural networks and normalizing flows as graphs, for PyTorch.

Declare nodes in a DAG, and :class:`GraphINN` turns them into one reversible module that
runs forward (data -> latents) and inverse (latents -> data) with exact log-Jacobian
determinants. The vocabulary is FrEIA's: ``invgraph.framework`` holds the graph,
``invgraph.modules`` the blocks, and the common names are here at top level.
"""

from . import utils
from .drawing import draw, summary
from .errors import InvGraphError
from .framework import (
    ConditionNode,
    FeedForwardNode,
    GraphINN,
    InputNode,
    Node,
    OutputNode,
    SequenceINN,
    collect_nodes,
)
from .modules import (
    AffineCouplingOneSided,
    Concat,
    ConditionalAffineTransform,
    Flatten,
    GINCouplingBlock,
    GLOWCouplingBlock,
    HaarDownsampling,
    HaarUpsampling,
    Inverse,
    InvertibleModule,
    IRevNetDownsampling,
    IRevNetUpsampling,
    NICECouplingBlock,
    PermuteRandom,
    Reshape,
    RNVPCouplingBlock,
    Split,
)

__version__ = "0.1.0"

__all__ = [
    "AffineCouplingOneSided",
    "Concat",
    "ConditionNode",
    "ConditionalAffineTransform",
    "FeedForwardNode",
    "Flatten",
    "GINCouplingBlock",
    "GLOWCouplingBlock",
    "GraphINN",
    "HaarDownsampling",
    "HaarUpsampling",
    "IRevNetDownsampling",
    "IRevNetUpsampling",
    "InputNode",
    "InvGraphError",
    "Inverse",
    "InvertibleModule",
    "NICECouplingBlock",
    "Node",
    "OutputNode",
    "PermuteRandom",
    "RNVPCouplingBlock",
    "Reshape",
    "SequenceINN",
    "Split",
    "collect_nodes",
    "draw",
    "summary",
    "utils",
]
