"""The oldest Python the package declares (``python_requires``) can run its code.

Python 3.10 has no exception notes (``BaseException.add_note`` is 3.11): invgraph attaches
its notes through :func:`invgraph.errors.add_note`, which falls back to ``__notes__``. These
tests need a ``python3.10`` next to the running one (pyenv's, on our machines) and are
skipped without one; the whole suite on the oldest torch and Python runs in CI.
"""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_310() -> str | None:
    """A working python3.10: pyenv's (its shim may not run), else one on the PATH."""
    candidates = [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
    candidates += [found] if (found := shutil.which("python3.10")) else []
    for candidate in candidates:
        try:
            subprocess.run([candidate, "--version"], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    return None


PYTHON_310 = _python_310()
needs_310 = pytest.mark.skipif(PYTHON_310 is None, reason="no python3.10 on this machine")


def test_the_declared_floors():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["options"]["python_requires"].strip() == ">=3.10"
    requires = metadata["options"]["install_requires"].split()
    # torch.amp.is_autocast_available and torch.get_autocast_dtype(device) are torch 2.4's.
    assert "torch>=2.4" in requires


def test_notes_are_added_only_through_the_helper():
    """A direct ``error.add_note(...)`` is an AttributeError on Python 3.10, which would
    replace the block's own error."""
    direct = []
    for path in sorted((ROOT / "invgraph").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if call and node.func.attr == "add_note" and path.name != "errors.py":
                direct.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not direct, direct


@needs_310
def test_every_module_compiles_on_python_3_10():
    files = [str(p) for p in sorted((ROOT / "invgraph").rglob("*.py"))]
    result = subprocess.run(
        [PYTHON_310, "-m", "py_compile", *files], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@needs_310
def test_add_note_keeps_the_note_on_python_3_10():
    errors_py = str(ROOT / "invgraph" / "errors.py")
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('errors', {errors_py!r})\n"
        "errors = importlib.util.module_from_spec(spec); spec.loader.exec_module(errors)\n"
        "error = RuntimeError('boom')\n"
        "errors.add_note(error, 'raised in node b0')\n"
        "errors.add_note(error, 'and more')\n"
        "assert not hasattr(BaseException, 'add_note'), sys.version\n"
        "assert error.__notes__ == ['raised in node b0', 'and more'], error.__notes__\n"
        "assert str(error) == 'boom'\n"
    )
    result = subprocess.run([PYTHON_310, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
