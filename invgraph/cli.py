"""The ``invgraph`` command: train a demo flow, and draw, summarise or check your networks.

``invgraph demo`` trains a small flow on the two-moons distribution and writes pictures of
its samples, its density and its graph. ``invgraph draw``, ``invgraph summary`` and
``invgraph check`` take ``MODULE:CALLABLE``: a callable that takes no arguments and returns
a network (``MODULE`` is a dotted module path such as ``mypackage.flows``, looked up from
the current directory first, or a file path such as ``path/to/flows.py``). An attribute
that already is a network or a list of nodes is used as it is.

Exit codes: 0 on success; 1 when ``invgraph check`` finds a failing check; 2 for a usage
or input error (a missing module, attribute, file or program, a callable that raises or
returns the wrong thing, an unwritable output), reported in one line without a traceback
unless ``--traceback`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import importlib.util
import inspect
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import graphviz
import numpy as np
import torch
from torch import Tensor, nn

from . import __version__
from .drawing import draw, summary
from .errors import InvGraphError
from .framework import AbstractNode, GraphINN, InputNode, Node, OutputNode, SequenceINN
from .modules import GLOWCouplingBlock, InvertibleModule, PermuteRandom
from .testing import CheckReport, check_block
from .toy_data import TWO_MOONS_ENTROPY, two_moons

__all__ = ["DemoSubnet", "demo_flow", "main"]


_DRAWING_FORMATS = {".svg": "svg", ".pdf": "pdf", ".png": "png", ".dot": None, ".gv": None}
_INSTALL_EXTRA = 'pip install "invgraph[tutorials]"'
_INSTALL_DOT = "install Graphviz (apt-get install graphviz, brew install graphviz, ...)"


class _UserError(Exception):
    """An error the user can fix: one line on stderr, exit code 2, no traceback."""


class _NoDot(_UserError):
    """Graphviz's ``dot`` program is not installed."""


# ---------------------------------------------------------------------- the demo flow
class DemoSubnet(nn.Module):
    """The demo's subnetwork: ``Linear-ReLU-Linear-ReLU-Linear``, last layer zero (identity).

    Arguments:
        c_in: Input features.
        c_out: Output features.
        hidden: Width of the two hidden layers.

    Example:
        >>> import torch
        >>> DemoSubnet(3, 4)(torch.randn(5, 3)).abs().max()  # starts at zero
        tensor(0., grad_fn=<MaxBackward1>)
    """

    def __init__(self, c_in: int, c_out: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(c_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, c_out),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def demo_flow(blocks: int = 8, seed: int = 0) -> GraphINN:
    """The demo's flow on 2-d data: GLOW couplings, each followed by a random permutation.

    Arguments:
        blocks: Number of coupling blocks.
        seed: Seed of the permutations (the weights follow torch's global generator).

    Example:
        >>> import torch
        >>> flow = demo_flow(blocks=2)
        >>> [node.name for node in flow.node_list]
        ['x', 'coupling0', 'permute0', 'coupling1', 'permute1', 'z']
        >>> z, log_det = flow(torch.randn(5, 2))
        >>> tuple(z.shape), tuple(log_det.shape)
        ((5, 2), (5,))
    """
    nodes: list[AbstractNode] = [InputNode(2, name="x")]
    for k in range(blocks):
        coupling = {"subnet_constructor": DemoSubnet, "clamp": 2.0}
        nodes.append(Node(nodes[-1], GLOWCouplingBlock, coupling, name=f"coupling{k}"))
        nodes.append(Node(nodes[-1], PermuteRandom, {"seed": seed + k}, name=f"permute{k}"))
    nodes.append(OutputNode(nodes[-1], name="z"))
    return GraphINN(nodes)


def _log_likelihood(flow: GraphINN, x: Tensor) -> Tensor:
    """``log p(x) = log N(f(x); 0, I) + log|det J_f(x)|``, one value per sample."""
    z, log_det = flow(x)
    return log_det - 0.5 * z.square().sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def _demo(args: argparse.Namespace) -> int:
    try:
        from matplotlib.figure import Figure  # renders with Agg; leaves pyplot's state alone
        from tqdm import tqdm
    except ImportError as err:
        raise _UserError(
            f"the demo needs matplotlib and tqdm ({err}); install them: {_INSTALL_EXTRA}"
        ) from err
    output = Path(args.output)
    _make_folder(output)
    with _one_thread():
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        flow = demo_flow(seed=args.seed)
        blocks = sum(isinstance(m, GLOWCouplingBlock) for m in flow.module_list)
        parameters = sum(p.numel() for p in flow.parameters())
        print(f"training {blocks} GLOW couplings ({parameters:,} parameters) on two moons")
        start = time.perf_counter()
        _train(flow, args.steps, rng, tqdm)
        print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s")
        flow.eval()
        with torch.no_grad():
            test_nll = -_log_likelihood(flow, two_moons(20_000, rng)).mean().item()
            samples = _plot_samples(Figure(figsize=(9, 4), layout="constrained"), flow, rng)
            density = _plot_density(Figure(figsize=(6, 4), layout="constrained"), flow, test_nll)
    print(
        f"test NLL {test_nll:.3f} nats; the data's entropy is about {TWO_MOONS_ENTROPY:.2f} nats "
        f"(the gap, {test_nll - TWO_MOONS_ENTROPY:.3f}, is the KL divergence left to close)"
    )
    print(f"samples: {_save_figure(samples, output / 'samples.png')}")
    print(f"density: {_save_figure(density, output / 'density.png')}")
    try:
        print(f"graph:   {_write_drawing(draw(flow), output / 'graph.svg')}")
    except _NoDot:
        path = _write_drawing(draw(flow), output / "graph.dot")
        print(
            f"graph:   {path} (Graphviz's dot is not installed, so this is the DOT source; "
            f"{_INSTALL_DOT} to render it)"
        )
    return 0


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one thread: a network this small gains nothing from intra-op threads, and
    on a busy machine they spin (one thread trained ten times faster than two on two loaded
    cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(flow: GraphINN, steps: int, rng: np.random.Generator, tqdm: Any) -> None:
    """Maximum likelihood with Adam and a cosine schedule, batches of 256 fresh points."""
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    with tqdm(range(steps), desc="training", unit="step", file=sys.stderr) as bar:
        for step in bar:
            loss = -_log_likelihood(flow, two_moons(256, rng)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 20 == 0:
                bar.set_postfix(nll=f"{loss.item():.3f}", refresh=False)


_LIMITS = {"xlim": (-3.5, 3.5), "ylim": (-2.2, 2.8)}


def _plot_samples(figure: Any, flow: GraphINN, rng: np.random.Generator) -> Any:
    """Data and samples side by side; sampling runs the flow in reverse on ``z ~ N(0, I)``."""
    data, samples = two_moons(2_000, rng).numpy(), flow(torch.randn(2_000, 2), rev=True)[0].numpy()
    titles = ("data (two moons)", "samples from the flow")
    for axes, points, title in zip(figure.subplots(1, 2, sharey=True), (data, samples), titles):
        axes.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color="#1f5fa0")
        axes.set(title=title, aspect="equal", **_LIMITS)
    return figure


def _plot_density(figure: Any, flow: GraphINN, test_nll: float) -> Any:
    """The learned density ``exp(log p(x))`` on a grid."""
    xs, ys = torch.linspace(*_LIMITS["xlim"], 281), torch.linspace(*_LIMITS["ylim"], 201)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    density = _log_likelihood(flow, grid).exp().reshape(len(ys), len(xs)).numpy()
    axes = figure.subplots()
    extent = (*_LIMITS["xlim"], *_LIMITS["ylim"])
    image = axes.imshow(density, extent=extent, origin="lower", cmap="viridis")
    axes.set(title=f"learned density exp(log p(x)), test NLL {test_nll:.3f} nats")
    figure.colorbar(image, ax=axes, label="p(x)")
    return figure


# ---------------------------------------------------------------------- files
def _make_folder(folder: Path) -> None:
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise _UserError(f"cannot write into {folder}: {blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _UserError(f"cannot create the folder {folder}: {err.strerror or err}") from err
    if not os.access(folder, os.W_OK):
        raise _UserError(f"cannot write to the folder {folder}: permission denied")


def _write_bytes(path: Path, data: bytes) -> Path:
    _make_folder(path.parent)
    try:
        path.write_bytes(data)
    except OSError as err:
        raise _UserError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def _save_figure(figure: Any, path: Path) -> Path:
    try:
        figure.savefig(path, dpi=120)
    except OSError as err:
        raise _UserError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def _write_drawing(dot: graphviz.Digraph, path: Path) -> Path:
    """Write ``dot`` in the format of ``path``'s suffix: svg, pdf, png; dot or gv: the source."""
    if path.suffix.lower() not in _DRAWING_FORMATS:
        known = ", ".join(_DRAWING_FORMATS)
        raise _UserError(f"cannot draw to {path}: the suffix must be one of {known}")
    fmt = _DRAWING_FORMATS[path.suffix.lower()]
    if fmt is None:
        return _write_bytes(path, dot.source.encode())
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound as err:
        raise _NoDot(
            f"drawing to {path.suffix} needs Graphviz's dot program, which is not installed: "
            f"{_INSTALL_DOT}, or write the DOT source with -o {path.with_suffix('.dot')}"
        ) from err
    except graphviz.CalledProcessError as err:
        stderr = (err.stderr or b"").decode(errors="replace").strip()
        raise _UserError(f"dot failed to render {path}: {stderr or err}") from err
    return _write_bytes(path, data)


# ---------------------------------------------------------------------- MODULE:CALLABLE
@contextlib.contextmanager
def _search_path() -> Iterator[None]:
    """Look modules up from the current directory first, as ``python -m`` does; restore after."""
    saved = list(sys.path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        yield
    finally:
        sys.path[:] = saved


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


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or os.sep in name:
        return _import_file(name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(f"{err.name}.")):
            raise _UserError(
                f"no module named {name!r} (looked in the current directory and sys.path; "
                "for a file, give its path: path/to/file.py:CALLABLE)"
            ) from err
        raise _UserError(f"importing {name} failed: {_one_line(err)}{_where(err, None)}") from err
    except Exception as err:
        raise _UserError(f"importing {name} failed: {_one_line(err)}{_where(err, None)}") from err


def _import_file(given: str) -> ModuleType:
    """Import a file as a module registered in ``sys.modules`` (so its classes pickle)."""
    path = Path(given)
    if not path.is_file():
        raise _UserError(f"no file {given}" + (" (it is a folder)" if path.is_dir() else ""))
    name, k = path.stem, 1
    while name in sys.modules or not name.isidentifier():
        name, k = f"_invgraph_user_{path.stem.replace('-', '_')}_{k}", k + 1
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _UserError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))  # its siblings import, as for a script
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        where = _where(err, str(path))
        raise _UserError(f"importing {path} failed: {_one_line(err)}{where}") from err
    return module


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _load(target: str) -> Any:
    """Import ``MODULE:CALLABLE`` and return what the callable returns."""
    module_name, colon, attribute = target.rpartition(":")
    if not colon or not module_name or not attribute:
        raise _UserError(
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
            raise _UserError(f"{module_name} has no attribute {attribute!r}{hint}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module | AbstractNode | list | tuple):
        return obj  # already built
    if not callable(obj):
        raise _UserError(f"{target} is {_a(_type_name(obj))}, not a callable")
    with contextlib.suppress(ValueError, TypeError):  # no signature to read: just call it
        signature = inspect.signature(obj)
        try:
            signature.bind()
        except TypeError:
            raise _UserError(
                f"{target} must be callable with no arguments, but its signature is "
                f"{signature}; name a function that takes none and returns the network or block"
            ) from None
    try:
        return obj()
    except Exception as err:
        raise _UserError(
            f"{target} raised {_one_line(err)}{_where(err, getattr(module, '__file__', None))}"
        ) from err


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _describe(obj: Any) -> str:
    """What a callable returned, for an error message: ``an int``, ``a list containing a str``."""
    if isinstance(obj, list | tuple):
        strangers = [item for item in obj if not isinstance(item, AbstractNode)]
        if not obj:
            return f"an empty {type(obj).__name__}"
        return f"a {type(obj).__name__} containing {_a(_type_name(strangers[0]))}"
    return "None" if obj is None else _a(_type_name(obj))


def _is_nodes(obj: Any) -> bool:
    return isinstance(obj, AbstractNode) or (
        isinstance(obj, list | tuple)
        and bool(obj)
        and all(isinstance(n, AbstractNode) for n in obj)
    )


def _network(target: str, command: str) -> GraphINN | SequenceINN | AbstractNode | list:
    obj = _load(target)
    if isinstance(obj, GraphINN | SequenceINN) or _is_nodes(obj):
        return obj
    raise _UserError(
        f"{target} returned {_describe(obj)}; {command} needs a GraphINN, a SequenceINN or a "
        "list of nodes"
    )


# ---------------------------------------------------------------------- draw, summary, check
def _draw(args: argparse.Namespace) -> int:
    network = _network(args.target, "draw")
    try:
        dot = draw(network, reverse=args.reverse)
    except InvGraphError as err:
        raise _UserError(f"cannot draw {args.target}: {err}") from err
    print(f"wrote {_write_drawing(dot, Path(args.output))}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    network = _network(args.target, "summary")
    try:
        print(summary(network))
    except InvGraphError as err:
        raise _UserError(f"cannot summarise {args.target}: {err}") from err
    return 0


def _figures(report: CheckReport) -> str:
    """The failed checks of a report with their figures, on one line."""
    parts = []
    for result in report.failed:
        figure = ""
        if result.value is not None and result.tolerance is not None:
            figure = f"{result.value:.2e} > {result.tolerance:.2e}: "
        parts.append(f"{result.name} ({figure}{result.message})")
    return "; ".join(parts)


def _blocks(network: GraphINN | SequenceINN) -> list[tuple[str, nn.Module]]:
    if isinstance(network, SequenceINN):
        return [(str(k), module) for k, module in enumerate(network.module_list)]
    return [(str(n.name), n.module) for n in network.node_list if n.module is not None]


def _check_block(block: InvertibleModule, what: str) -> CheckReport:
    try:
        return check_block(block)
    except Exception as err:  # each check reports its own failures; this is the set-up's
        raise _UserError(f"cannot check {what}: {_one_line(err)}") from err


def _check(args: argparse.Namespace) -> int:
    obj = _load(args.target)
    if _is_nodes(obj):
        try:
            obj = GraphINN(obj)
        except InvGraphError as err:
            raise _UserError(f"cannot build a GraphINN from {args.target}: {err}") from err
    if not isinstance(obj, InvertibleModule):
        raise _UserError(
            f"{args.target} returned {_describe(obj)}; check needs a block (an "
            "InvertibleModule), a GraphINN, a SequenceINN or a list of nodes"
        )
    report = _check_block(obj, args.target)
    print(report)
    passed = report.passed
    if isinstance(obj, GraphINN | SequenceINN):
        rows = []
        for name, module in _blocks(obj):
            kind = type(module).__name__
            if not isinstance(module, InvertibleModule):
                rows.append(("skip", name, kind, "not invertible (feed-forward): not checked"))
                continue
            node_report = _check_block(module, f"node {name!r}")
            passed &= node_report.passed
            verdict = "pass" if node_report.passed else "FAIL"
            rows.append((verdict, name, kind, _figures(node_report)))
        widths = [max(len(row[k]) for row in rows) for k in range(3)] if rows else []
        print("\neach block on its own:")
        for row in rows:
            print("  " + "  ".join([*map(str.ljust, row[:3], widths), row[3]]).rstrip())
        broken = [f"{row[1]} ({row[2]})" for row in rows if row[0] == "FAIL"]
        if broken:
            print(f"\nfailing blocks: {', '.join(broken)}")
    failed = ", ".join(result.name for result in report.failed)
    verdict = f"FAILED: {failed}" if failed else "all checks passed"
    print(verdict if passed or failed else "FAILED: some blocks fail on their own")
    return 0 if passed else 1


# ---------------------------------------------------------------------- the parser
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invgraph",
        description="Invertible neural networks as graphs: a demo, and tools for your networks.",
        epilog=(
            "examples:\n"
            "  invgraph demo --output invgraph-demo\n"
            "  invgraph draw invgraph.cli:demo_flow -o flow.svg\n"
            "  invgraph summary path/to/flows.py:make_flow\n"
            "  invgraph check mypackage.flows:make_flow"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"invgraph {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    target = {
        "metavar": "MODULE:CALLABLE",
        "help": "a callable with no arguments, in a module (pkg.mod) or a file (path/to/file.py)",
    }

    demo = commands.add_parser(
        "demo",
        help="train a small flow on two moons; write samples, density and graph pictures",
        description="Train a flow of GLOW couplings on the two-moons distribution (about "
        "half a minute on 2 cores), then write samples.png, density.png and graph.svg to the "
        f"output folder and print the test NLL. Needs matplotlib and tqdm: {_INSTALL_EXTRA}.",
    )
    demo.add_argument("--output", "-o", default="invgraph-demo", help="output folder")
    demo.add_argument("--steps", type=_positive, default=600, help="training steps (default: 600)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(run=_demo)

    drawing = commands.add_parser(
        "draw",
        help="draw a network with graphviz",
        description="Draw the network that MODULE:CALLABLE returns (a GraphINN, a SequenceINN "
        "or a list of nodes). The format is the output's suffix: .svg, .pdf, .png (these need "
        "Graphviz's dot program), or .dot/.gv for the DOT source.",
    )
    drawing.add_argument("target", **target)
    drawing.add_argument("--output", "-o", required=True, help="e.g. net.svg")
    drawing.add_argument("--reverse", action="store_true", help="draw the inverse pass")
    drawing.set_defaults(run=_draw)

    table = commands.add_parser(
        "summary",
        help="print a table of a network's nodes, shapes and parameters",
        description="Print the summary of the network that MODULE:CALLABLE returns.",
    )
    table.add_argument("target", **target)
    table.set_defaults(run=_summary)

    checking = commands.add_parser(
        "check",
        help="check a block or a network: round trip, exact log-det, shapes, save/load",
        description="Run invgraph.testing.check_block on the block or network that "
        "MODULE:CALLABLE returns; for a network, also check each block on its own, to "
        "find the broken one. Exit code 1 when a check fails.",
    )
    checking.add_argument("target", **target)
    checking.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``invgraph`` command line and return its exit code.

    Arguments:
        argv: The arguments, without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when ``invgraph check`` finds a failing check, 2 for a usage or
        input error (reported in one line on stderr).

    Example:
        >>> main(["summary", "invgraph.cli:demo_flow"])  # doctest: +ELLIPSIS
        ===...
        Node       Block              Shapes (in -> out)  Params  Trainable
        ===...
        Total                                             ...
        ===...
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _search_path():
            return args.run(args)
    except _UserError as err:
        if args.traceback:
            traceback.print_exc()
        print(f"invgraph {args.command}: error: {err}", file=sys.stderr)
        return 2
