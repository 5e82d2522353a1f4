"""``python -m invgraph``: the ``invgraph`` command line (see :mod:`invgraph.cli`)."""

from .cli import main

if __name__ == "__main__":  # importing this file (as pytest's doctest collection does) runs nothing
    raise SystemExit(main())
