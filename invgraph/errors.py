"""The one error type invgraph raises for a graph or an input it cannot accept."""

from __future__ import annotations

__all__ = ["InvGraphError"]


class InvGraphError(ValueError):
    """A graph, block or call that invgraph cannot accept.

    Every message names the node (and port) at fault and, where shapes are involved, the
    expected and the received shapes. It subclasses :class:`ValueError`, so FrEIA code that
    catches ``ValueError`` keeps working after migration.

    Example:
        >>> import invgraph as ig
        >>> try:
        ...     ig.InputNode(name="x")
        ... except ig.InvGraphError as err:
        ...     print(err)
        InputNode 'x': needs at least one dimension (the batch dimension is implicit)
    """
