"""Write what a command makes: folders, drawings in the format of their suffix, figures.

Every failure raises :class:`~invgraph._loading.CommandError` with the path at fault.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import graphviz

from ._loading import CommandError
from .drawing import draw, picture
from .errors import InvGraphError

__all__ = ["DRAWING_FORMATS", "INSTALL_DOT", "NoDot", "make_folder", "save_figure", "write_drawing"]

DRAWING_FORMATS = {".svg": "svg", ".pdf": "pdf", ".png": "png", ".dot": None, ".gv": None}
"""Suffix -> Graphviz output format; ``None``: the DOT source, which needs no ``dot``."""

INSTALL_DOT = "install Graphviz (apt-get install graphviz, brew install graphviz, ...)"


class NoDot(CommandError):
    """Graphviz's ``dot`` program is not installed."""


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents; fail if one of them is a file or it is read-only."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CommandError(f"cannot write into {folder}: {blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create the folder {folder}: {err.strerror or err}") from err
    if not os.access(folder, os.W_OK):
        raise CommandError(f"cannot write to the folder {folder}: permission denied")


def _write_bytes(path: Path, data: bytes) -> Path:
    make_folder(path.parent)
    try:
        path.write_bytes(data)
    except OSError as err:
        raise CommandError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def save_figure(figure: Any, path: Path) -> Path:
    """Save a matplotlib figure as ``path`` (120 dpi)."""
    try:
        figure.savefig(path, dpi=120)
    except OSError as err:
        raise CommandError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def write_drawing(graph: Any, path: Path, reverse: bool = False) -> tuple[Path, str]:
    """Draw ``graph`` (a network or nodes) to ``path`` in the format of its suffix.

    svg, pdf and png are rendered by Graphviz's ``dot`` or, where it is not installed, drawn
    by :func:`invgraph.drawing.picture` with matplotlib; ``.dot`` and ``.gv`` get the DOT
    source. Returns the path and a note for the user ("" when ``dot`` rendered it).
    """
    if path.suffix.lower() not in DRAWING_FORMATS:
        known = ", ".join(DRAWING_FORMATS)
        raise CommandError(f"cannot draw to {path}: the suffix must be one of {known}")
    dot = draw(graph, reverse=reverse)
    fmt = DRAWING_FORMATS[path.suffix.lower()]
    if fmt is None:
        return _write_bytes(path, dot.source.encode()), ""
    try:
        return _write_bytes(path, dot.pipe(format=fmt)), ""
    except graphviz.ExecutableNotFound as err:
        try:
            figure = picture(graph, reverse=reverse)
        except InvGraphError:  # no matplotlib either
            raise NoDot(
                f"drawing to {path.suffix} needs Graphviz's dot program or matplotlib, and "
                f"neither is installed: {INSTALL_DOT}, pip install matplotlib, or write the "
                f"DOT source with -o {path.with_suffix('.dot')}"
            ) from err
        make_folder(path.parent)
        save_figure(figure, path)
        return path, f" (drawn with matplotlib: Graphviz's dot is not installed; {INSTALL_DOT} "
        "for a tidier layout)"
    except graphviz.CalledProcessError as err:
        stderr = (err.stderr or b"").decode(errors="replace").strip()
        raise CommandError(f"dot failed to render {path}: {stderr or err}") from err
