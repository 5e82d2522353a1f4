"""FrEIA's ``FrEIA.utils`` names, kept so that FrEIA code migrates by renaming the import."""

from .drawing import plot_graph

__all__ = ["plot_graph"]
