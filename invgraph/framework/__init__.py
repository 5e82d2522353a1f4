"""The graph: nodes, and the networks built from them (GraphINN, SequenceINN).

FrEIA code migrates by renaming the import: ``FrEIA.framework`` -> ``invgraph.framework``.
"""

from ..modules.inverse import Inverse
from .graph_inn import GraphINN, ReversibleGraphNet, collect_nodes
from .nodes import (
    AbstractNode,
    ConditionNode,
    FeedForwardNode,
    InputNode,
    Node,
    OutputNode,
    Port,
)
from .sequence_inn import ReversibleSequential, SequenceINN

__all__ = [
    "AbstractNode",
    "ConditionNode",
    "FeedForwardNode",
    "GraphINN",
    "InputNode",
    "Inverse",
    "Node",
    "OutputNode",
    "Port",
    "ReversibleGraphNet",
    "ReversibleSequential",
    "SequenceINN",
    "collect_nodes",
]
