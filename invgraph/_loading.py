"""Load what a command names: ``MODULE:CALLABLE`` -> the network or block the callable returns.

``MODULE`` is a dotted module path (``mypackage.flows``, looked up from the current
directory first, as ``python -m`` does) or a file path (``path/to/my flows.py``; any file
name works). Every mistake a user can make here raises :class:`CommandError`, which the
command line reports in one line.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from .errors import InvGraphError
from .framework import AbstractNode, InvertibleNetwork

__all__ = [
    "CommandError",
    "describe",
    "is_nodes",
    "load",
    "load_network",
    "module_name_for",
    "one_line",
    "search_path",
]


class CommandError(InvGraphError):
    """An error the user can fix: one line on stderr, exit code 2, no traceback."""


@contextlib.contextmanager
def search_path() -> Iterator[None]:
    """Look modules up from the current directory first, as ``python -m`` does; restore after."""
    saved = list(sys.path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        yield
    finally:
        sys.path[:] = saved


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _where(err: BaseException, file: str | None) -> str:
    """`` (at file:line)``: the innermost frame in ``file`` if any, else the innermost."""
    if isinstance(err, SyntaxError):  # its message names the file and the line
        return ""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    if not frames:
        return ""
    mine = [f for f in frames if file is not None and _same_file(f.filename, file)]
    frame = (mine or frames)[-1]
    return f" (at {frame.filename}:{frame.lineno})"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _failure(what: str, err: BaseException, file: str | None) -> CommandError:
    """``what failed: Type: message (at file:line)``, with a hint for ``sys.exit``."""
    hint = ""
    if isinstance(err, SystemExit):
        hint = (
            "; it exits the program: keep a script's code under "
            '`if __name__ == "__main__":` and return the network instead'
        )
    return CommandError(f"{what} {one_line(err)}{_where(err, file)}{hint}")


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or os.sep in name or os.path.isfile(name):
        return _import_file(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(f"{err.name}.")):
            raise CommandError(
                f"no module named {name!r} (looked in the current directory and sys.path; "
                "for a file, give its path: path/to/file.py:CALLABLE)"
            ) from err
        raise _failure(f"importing {name} failed:", err, None) from err
    except (Exception, SystemExit) as err:
        raise _failure(f"importing {name} failed:", err, None) from err


def module_name_for(path: Path) -> str:
    """A name, not yet in ``sys.modules``, under which to import the file ``path``.

    The file's stem when that is a free identifier (``flows.py`` -> ``flows``), else
    ``_invgraph_user_<stem>_<k>`` with every character that cannot be in an identifier
    replaced by ``_`` (``my flows.py``, ``v1.2-model.py``, ``2flows.py``): always a valid
    identifier, so that the classes of the file pickle by reference.

    Example:
        >>> from pathlib import Path
        >>> module_name_for(Path("models/v1.2-my flow.py"))
        '_invgraph_user_v1_2_my_flow_1'
    """
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        return stem
    safe = "".join(c if f"_{c}".isidentifier() else "_" for c in stem)
    k = 1
    while (name := f"_invgraph_user_{safe}_{k}") in sys.modules:
        k += 1
    return name


def _import_file(given: str) -> ModuleType:
    """Import a file as a module registered in ``sys.modules`` (so its classes pickle)."""
    path = Path(given)
    if not path.is_file():
        raise CommandError(f"no file {given}" + (" (it is a folder)" if path.is_dir() else ""))
    if path.suffix != ".py":
        raise CommandError(f"{given} is not a Python file: give a .py file or a module (pkg.mod)")
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CommandError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))  # its siblings import, as for a script
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:
        del sys.modules[name]
        raise _failure(f"importing {path} failed:", err, str(path)) from err
    return module


def load(target: str) -> Any:
    """Import ``MODULE:CALLABLE`` and return what the callable returns.

    An attribute that already is a module, a node or a list of nodes is returned as it is.
    """
    module_name, colon, attribute = target.rpartition(":")
    if not colon or not module_name or not attribute:
        raise CommandError(
            f"{target!r} is not MODULE:CALLABLE, e.g. mypackage.flows:make_flow or "
            "path/to/flows.py:make_flow"
        )
    module = _import(module_name)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CommandError(f"{module_name} has no attribute {attribute!r}{hint}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module | AbstractNode | list | tuple):
        return obj  # already built
    if not callable(obj):
        raise CommandError(f"{target} is {_a(_type_name(obj))}, not a callable")
    try:
        signature = inspect.signature(obj)
    except (ValueError, TypeError):  # no signature to read: just call it
        signature = None
    if signature is not None:
        try:
            signature.bind()
        except TypeError:
            raise CommandError(
                f"{target} must be callable with no arguments, but its signature is "
                f"{signature}; name a function that takes none and returns the network or block"
            ) from None
    try:
        return obj()
    except (Exception, SystemExit) as err:
        raise _failure(f"{target} raised", err, getattr(module, "__file__", None)) from err


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def describe(obj: Any) -> str:
    """What a callable returned, for an error message: ``an int``, ``a list containing a str``."""
    if isinstance(obj, list | tuple):
        strangers = [item for item in obj if not isinstance(item, AbstractNode)]
        if not obj:
            return f"an empty {type(obj).__name__}"
        return f"a {type(obj).__name__} containing {_a(_type_name(strangers[0]))}"
    return "None" if obj is None else _a(_type_name(obj))


def is_nodes(obj: Any) -> bool:
    """Whether ``obj`` is a node or a non-empty list or tuple of nodes."""
    return isinstance(obj, AbstractNode) or (
        isinstance(obj, list | tuple)
        and bool(obj)
        and all(isinstance(n, AbstractNode) for n in obj)
    )


def load_network(
    target: str, command: str
) -> InvertibleNetwork | AbstractNode | list[AbstractNode]:
    """:func:`load`, refusing anything but a network or nodes (for ``draw`` and ``summary``)."""
    obj = load(target)
    if isinstance(obj, InvertibleNetwork) or is_nodes(obj):
        return obj
    raise CommandError(
        f"{target} returned {describe(obj)}; {command} needs a GraphINN, a SequenceINN or a "
        "list of nodes"
    )
