"""What every reproduction script shares: its command line, its table, its timing and
its figures' format."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["compact_png", "markdown_table", "parse_arguments", "stopwatch"]


def parse_arguments(description: str, flags: Mapping[str, str] = {}) -> argparse.Namespace:
    """The options every script takes: ``--quick`` (the seconds-long regression-guard
    budget), ``--seed`` and ``--out`` (the folder for figures, created if missing), plus the
    script's own on/off ``flags`` (``{"--make-fixture": "its help"}``).

    Also sets one thread per process: the scripts are timed on 2 shared cores.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="the test suite's small budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiment_outputs"))
    for flag, help_text in flags.items():
        parser.add_argument(flag, action="store_true", help=help_text)
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    return arguments


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (what the docs pages quote), numbers formatted to 3 decimals."""

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``: wall-clock time of the block."""
    elapsed = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed["seconds"] = time.perf_counter() - start


def compact_png(path: Path) -> None:
    """Rewrite a PNG with a palette of 256 colours: the same look, well under half the size
    of matplotlib's RGBA file (Pillow is matplotlib's image library)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(
            256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    palette.save(path, optimize=True)
