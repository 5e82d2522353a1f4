"""The ``invgraph`` command: train a demo flow, and draw, summarise or check your networks.

``invgraph demo`` trains a small flow on the two-moons distribution and writes pictures of
its samples, its density and its graph (:mod:`invgraph.demo`). ``invgraph draw``,
``invgraph summary`` and ``invgraph check`` take ``MODULE:CALLABLE``: a callable that takes
no arguments and returns a network (``MODULE`` is a dotted module path such as
``mypackage.flows``, looked up from the current directory first, or a file path such as
``path/to/flows.py``; any file name works). An attribute that already is a network or a
list of nodes is used as it is.

Exit codes: 0 on success; 1 when ``invgraph check`` finds a failing check; 2 for a usage
or input error (a missing module, attribute, file or program, a callable that raises or
returns the wrong thing, an unwritable output), reported in one line without a traceback
unless ``--traceback`` is given; 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from ._loading import CommandError, describe, is_nodes, load, load_network, one_line, search_path
from ._output import write_drawing
from ._text import align_columns
from .demo import INSTALL_EXTRA, run_demo
from .drawing import summary
from .errors import InvGraphError
from .framework import GraphINN, InvertibleNetwork
from .modules import InvertibleModule
from .testing import CheckReport, check_block

__all__ = ["main"]


# ---------------------------------------------------------------------- the commands
def _demo(args: argparse.Namespace) -> int:
    run_demo(args.output, steps=args.steps, seed=args.seed)
    return 0


def _draw(args: argparse.Namespace) -> int:
    network = load_network(args.target, "draw")
    try:
        path, note = write_drawing(network, Path(args.output), reverse=args.reverse)
    except CommandError:
        raise
    except InvGraphError as err:
        raise CommandError(f"cannot draw {args.target}: {err}") from err
    print(f"wrote {path}{note}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    network = load_network(args.target, "summary")
    try:
        print(summary(network))
    except InvGraphError as err:
        raise CommandError(f"cannot summarise {args.target}: {err}") from err
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


def _blocks(network: InvertibleNetwork) -> list[tuple[str, nn.Module]]:
    return [(str(n.name), n.module) for n in network.node_list if n.module is not None]


def _check_block(block: InvertibleModule, what: str) -> CheckReport:
    try:
        return check_block(block)
    except Exception as err:  # each check reports its own failures; this is the set-up's
        raise CommandError(f"cannot check {what}: {one_line(err)}") from err


def _check(args: argparse.Namespace) -> int:
    obj = load(args.target)
    if is_nodes(obj):
        try:
            obj = GraphINN(obj)
        except InvGraphError as err:
            raise CommandError(f"cannot build a GraphINN from {args.target}: {err}") from err
    if not isinstance(obj, InvertibleModule):
        raise CommandError(
            f"{args.target} returned {describe(obj)}; check needs a block (an "
            "InvertibleModule), a GraphINN, a SequenceINN or a list of nodes"
        )
    report = _check_block(obj, args.target)
    print(report)
    passed = report.passed
    if isinstance(obj, InvertibleNetwork):
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
        print("\neach block on its own:")
        for line in align_columns(rows):
            print(f"  {line}")
        broken = [f"{row[1]} ({row[2]})" for row in rows if row[0] == "FAIL"]
        if broken:
            print(f"\nfailing blocks: {', '.join(broken)}")
    failed = ", ".join(result.name for result in report.failed)
    verdict = f"FAILED: {failed}" if failed else "all checks passed"
    print(verdict if passed or failed else "FAILED: some blocks fail on their own")
    return 0 if passed else 1


# ---------------------------------------------------------------------- the parser
def _at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``, refused as ``expected {what}``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive = _at_least(1, "a positive integer")
_non_negative = _at_least(0, "an integer >= 0")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invgraph",
        description="Invertible neural networks as graphs: a demo, and tools for your networks.",
        epilog=(
            "examples:\n"
            "  invgraph demo --output invgraph-demo\n"
            "  invgraph draw invgraph.demo:demo_flow -o flow.svg\n"
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
    target: dict[str, Any] = {
        "metavar": "MODULE:CALLABLE",
        "help": "a callable with no arguments, in a module (pkg.mod) or a file (path/to/file.py)",
    }

    demo = commands.add_parser(
        "demo",
        help="train a small flow on two moons; write samples, density and graph pictures",
        description="Train a flow of GLOW couplings on the two-moons distribution (about "
        "half a minute on 2 cores), then write samples.png, density.png and graph.svg to the "
        f"output folder and print the test NLL. Needs matplotlib and tqdm: {INSTALL_EXTRA}.",
    )
    demo.add_argument("--output", "-o", default="invgraph-demo", help="output folder")
    demo.add_argument("--steps", type=_positive, default=600, help="training steps (default: 600)")
    demo.add_argument("--seed", type=_non_negative, default=0, help="random seed (default: 0)")
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
        input error (reported in one line on stderr), 130 when interrupted (Ctrl-C).

    Example:
        >>> main(["summary", "invgraph.demo:demo_flow"])  # doctest: +ELLIPSIS
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
        with search_path():
            return args.run(args)
    except CommandError as err:
        if args.traceback:
            traceback.print_exc()
        print(f"invgraph {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, e.g. during the demo's training: no traceback
        if args.traceback:
            traceback.print_exc()
        print(f"invgraph {args.command}: interrupted", file=sys.stderr)
        return 130
