"""Reproductions of published results with invgraph (see ``docs/reproductions``).

Each module is a script, ``python -m experiments.<name>``, and exposes ``run(...)`` that
returns its metrics; the test suite calls ``run`` with a small budget as a regression guard.
"""
