"""Every ```python block of every docs page (docs/**/*.md) runs, in order, one namespace per page.

A block that is a fragment (it cannot run alone) is marked by the line
``<!-- not-run -->`` right before its opening fence, and skipped. Each page runs as a
module registered in ``sys.modules``, so that the classes it defines pickle (as they would
in a user's script); tracebacks point at the page's own line numbers.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
NOT_RUN = "<!-- not-run -->"
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """``(line of the first code line, code, runs)`` for each ```python block, in order."""
    blocks = []
    for match in _BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        first_line = text.count("\n", 0, match.start(1)) + 1
        blocks.append((first_line, match.group(1), before.strip() != NOT_RUN))
    return blocks


def test_there_are_pages_with_code():
    assert {"concepts", "custom_blocks"} <= {page.stem for page in PAGES}
    assert any(runs for _, _, runs in python_blocks((DOCS / "custom_blocks.md").read_text()))


def test_blocks_are_found_in_order_and_not_run_marks_are_honoured():
    text = "\n".join(
        [
            "# Page",
            "```python",
            "a = 1",
            "```",
            "<!-- not-run -->",
            "```python",
            "fragment(x)",
            "```",
            "```text",
            "not python",
            "```",
            "```python",
            "b = a + 1",
            "",
            "c = b",
            "```",
        ]
    )
    assert python_blocks(text) == [
        (3, "a = 1\n", True),
        (7, "fragment(x)\n", False),
        (13, "b = a + 1\n\nc = b\n", True),
    ]


NAMES = [page.relative_to(DOCS).with_suffix("").as_posix() for page in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=NAMES)
def test_page_examples_run(page: Path, monkeypatch: pytest.MonkeyPatch):
    name = "_docs_" + page.relative_to(DOCS).with_suffix("").as_posix().replace("/", "_")
    module = types.ModuleType(name)
    module.__file__ = str(page)
    monkeypatch.setitem(sys.modules, name, module)
    for first_line, code, runs in python_blocks(page.read_text()):
        if runs:
            padded = "\n" * (first_line - 1) + code  # tracebacks show the page's lines
            exec(compile(padded, str(page), "exec"), module.__dict__)
