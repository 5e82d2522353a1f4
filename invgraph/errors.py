"""The one error type invgraph raises for a graph or an input it cannot accept."""

from __future__ import annotations

import sys

__all__ = ["InvGraphError", "add_note"]


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
        ...     print(err)  # doctest: +NORMALIZE_WHITESPACE
        InputNode 'x': needs at least one dimension (the batch dimension is implicit),
        e.g. InputNode(3, 32, 32)
    """


def add_note(error: BaseException, note: str) -> None:
    """Attach ``note`` to ``error``, to be printed below its message in the traceback.

    On Python 3.11 and newer this is :meth:`BaseException.add_note`. Python 3.10 has no
    notes: the note is kept in ``error.__notes__`` all the same (where 3.11 keeps it, so
    code that reads notes works on both), but its tracebacks do not print it. The error
    itself is never replaced, so the block's own error type and message reach the user.

    Example:
        >>> error = ValueError("bad input")
        >>> add_note(error, "raised in node 'coupling'")
        >>> error.__notes__
        ["raised in node 'coupling'"]
    """
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # Python 3.10: typeshed declares __notes__ from 3.11 on
        error.__notes__ = [*getattr(error, "__notes__", []), note]  # type: ignore[attr-defined]
