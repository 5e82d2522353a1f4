"""Plain-text tables, as the summaries, the check reports and the command line print them."""

from __future__ import annotations

from collections.abc import Container, Sequence

__all__ = ["align_columns"]


def align_columns(rows: Sequence[Sequence[str]], right: Container[int] = ()) -> list[str]:
    """Rows of cells as lines of aligned columns, two spaces apart.

    Each column is as wide as its widest cell; the columns whose indices are in ``right``
    are right-aligned, the others left-aligned; trailing spaces are dropped.

    Example:
        >>> for line in align_columns([["name", "params"], ["coupling", "48"]], right={1}):
        ...     print(line)
        name      params
        coupling      48
    """
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))] if rows else []
    return [
        "  ".join(
            cell.rjust(width) if k in right else cell.ljust(width)
            for k, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    ]
