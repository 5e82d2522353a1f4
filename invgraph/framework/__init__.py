"""The graph: nodes, and the networks built from them (GraphINN, SequenceINN).

FrEIA code migrates by renaming the import: ``FrEIA.framework`` -> ``invgraph.framework``.

How it is put together (see the documentation's architecture page): :mod:`.nodes` are what
a user declares; :mod:`.analysis` reads a graph of nodes (checks, orders, split latents);
:mod:`.plan` compiles it into a :class:`~.plan.Plan`; :mod:`.execution` and
:mod:`.memory_efficient` run a plan; :mod:`.network` is the base class of the networks,
and :mod:`.graph_inn` and :mod:`.sequence_inn` are the two ways to build one.
"""

from ..modules.inverse import Inverse
from .analysis import collect_nodes
from .graph_inn import GraphINN, ReversibleGraphNet
from .network import InvertibleNetwork
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
    "InvertibleNetwork",
    "Node",
    "OutputNode",
    "Port",
    "ReversibleGraphNet",
    "ReversibleSequential",
    "SequenceINN",
    "collect_nodes",
]
