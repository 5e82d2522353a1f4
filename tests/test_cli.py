"""The ``invgraph`` command line: invgraph/cli.py, its helpers (invgraph/_loading.py,
invgraph/_output.py), invgraph/demo.py and invgraph/__main__.py."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import invgraph as ig
from invgraph._loading import module_name_for
from invgraph.cli import main
from invgraph.demo import demo_flow, run_demo

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")

MODULE = "cli_user_flows"
"""The name of the user module the tests write; removed from ``sys.modules`` after each."""

USER_CODE = textwrap.dedent(
    '''
    import torch
    from torch import nn

    import invgraph as ig
    from invgraph.modules import InvertibleModule


    class Subnet(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(c_in, 8), nn.Tanh(), nn.Linear(8, c_out))

        def forward(self, x):
            return self.net(x)


    class WrongSignScale(InvertibleModule):
        """z = x * exp(a), but the inverse log-det has the wrong sign."""

        def __init__(self, dims_in, dims_c=None):
            super().__init__(dims_in, dims_c)
            self.log_scale = nn.Parameter(torch.zeros(self.dims_in[0]))

        def forward(self, x_or_z, c=(), rev=False, jac=True):
            (x,) = x_or_z
            log_det = self.log_scale.sum().expand(x.shape[0])
            if rev:
                return (x * torch.exp(-self.log_scale),), log_det  # must be -log_det
            return (x * torch.exp(self.log_scale),), log_det

        def output_dims(self, input_dims):
            return list(input_dims)


    def broken_block():
        return WrongSignScale([(4,)])


    def good_block():
        return ig.GLOWCouplingBlock([(4,)], subnet_constructor=Subnet)


    def nodes(broken=False):
        x = ig.InputNode(4, name="x")
        glow = ig.Node(x, ig.GLOWCouplingBlock, {"subnet_constructor": Subnet}, name="glow")
        middle = ig.Node(glow, WrongSignScale if broken else ig.PermuteRandom, name="middle")
        perm = ig.Node(middle, ig.PermuteRandom, {"seed": 1}, name="perm")
        return [x, glow, middle, perm, ig.OutputNode(perm, name="z")]


    def broken_nodes():
        return nodes(broken=True)


    def sequence():
        inn = ig.SequenceINN(4)
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=Subnet)
        inn.append(ig.PermuteRandom, seed=0)
        return inn


    built = sequence()


    def boom():
        raise RuntimeError("boom")


    def needs_arguments(n):
        return n


    def number():
        return 3


    def strings():
        return ["x", "z"]


    def loose_nodes():
        x = ig.InputNode(4, name="x")
        return [x, ig.Node(x, ig.PermuteRandom, name="perm")]  # no output node


    def exits():
        raise SystemExit(3)


    def interrupted():
        raise KeyboardInterrupt
    '''
)


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """A user's module file in ``tmp_path``; the current directory is ``tmp_path``."""
    path = tmp_path / f"{MODULE}.py"
    path.write_text(USER_CODE)
    importlib.invalidate_caches()
    yield path
    for name in [n for n in sys.modules if MODULE in n]:
        del sys.modules[name]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------- the program
def test_python_m_invgraph_help():
    result = subprocess.run(
        [sys.executable, "-m", "invgraph", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: invgraph ")
    for command in ("demo", "draw", "summary", "check"):
        assert command in result.stdout


def test_no_command_shows_help_and_fails(capsys):
    code, _, err = run(capsys)
    assert code == 2
    assert "usage: invgraph" in err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"invgraph \d+\.\d+\.\d+\S*\n", out)


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["draw", "mod:fn"],
        ["check"],
        ["demo", "--steps", "0"],
        ["demo", "--seed", "-1"],
    ],
    ids=[
        "unknown-command",
        "draw-without-output",
        "check-without-target",
        "zero-steps",
        "negative-seed",
    ],
)
def test_usage_errors(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: invgraph" in err


# ---------------------------------------------------------------------- demo
@pytest.fixture
def demo_dependencies():
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")


def test_demo_writes_pictures_and_reports_the_nll(capsys, tmp_path, demo_dependencies):
    threads = torch.get_num_threads()
    out_dir = tmp_path / "new" / "demo"
    code, out, err = run(capsys, "demo", "--output", str(out_dir), "--steps", "5", "--seed", "1")
    assert code == 0, err
    for name in ("samples.png", "density.png"):
        assert (out_dir / name).read_bytes().startswith(b"\x89PNG"), name
        assert str(out_dir / name) in out
    nll = float(re.search(r"test NLL (\S+) nats", out).group(1))
    assert 2.0 < nll < 10.0  # five steps: a finite NLL above the entropy
    assert "2.39 nats" in out
    assert "training" in err  # the progress bar
    assert torch.get_num_threads() == threads  # the demo's one-thread setting is undone
    if shutil.which("dot"):
        assert "<svg" in (out_dir / "graph.svg").read_text()
        assert str(out_dir / "graph.svg") in out


def test_demo_without_dot_draws_the_graph_with_matplotlib(
    capsys, tmp_path, monkeypatch, demo_dependencies
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program on it
    code, out, err = run(capsys, "demo", "--output", str(tmp_path), "--steps", "2")
    assert code == 0, err
    svg = (tmp_path / "graph.svg").read_text()
    assert "<svg" in svg and "Graphviz" not in svg  # matplotlib's picture, not dot's
    assert "drawn with matplotlib: Graphviz's dot is not installed" in out


def test_demo_without_dot_or_matplotlib_figures_writes_the_dot_source(
    capsys, tmp_path, monkeypatch, demo_dependencies
):
    monkeypatch.setenv("PATH", str(tmp_path))

    def no_matplotlib(*args, **kwargs):
        raise ig.InvGraphError("picture() needs matplotlib")

    monkeypatch.setattr("invgraph._output.picture", no_matplotlib)
    code, out, err = run(capsys, "demo", "--output", str(tmp_path), "--steps", "2")
    assert code == 0, err
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")
    assert not (tmp_path / "graph.svg").exists()
    assert "the DOT source: Graphviz's dot is not installed" in out


@pytest.mark.parametrize("missing", ["matplotlib.figure", "tqdm"])
def test_demo_without_its_dependencies_says_what_to_install(capsys, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    code, out, err = run(capsys, "demo", "--steps", "1")
    assert code == 2
    assert 'pip install "invgraph[tutorials]"' in err
    assert out == ""


def test_demo_into_an_unwritable_folder(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "demo", "--output", str(tmp_path / "file" / "out"))
    assert code == 2
    assert "is a file, not a folder" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- check
def test_check_a_broken_block_names_the_failing_checks(capsys, user):
    code, out, _ = run(capsys, "check", f"{user}:broken_block")
    assert code == 1
    failed = {line.split()[0] for line in out.splitlines() if " FAIL " in line}
    assert failed == {"log_det", "log_det_symmetry"}
    assert re.search(r"^log_det +FAIL .*inverse, sample \d+", out, re.MULTILINE)
    assert out.rstrip().endswith("FAILED: log_det, log_det_symmetry")


def test_check_a_graph_names_the_broken_node(capsys, user, monkeypatch):
    monkeypatch.chdir(user.parent)
    code, out, _ = run(capsys, "check", f"{MODULE}:broken_nodes")  # module form, from cwd
    assert code == 1
    rows = out.split("each block on its own:")[1]
    assert re.search(r"^  pass +glow +GLOWCouplingBlock$", rows, re.MULTILINE)
    assert re.search(r"^  pass +perm +PermuteRandom$", rows, re.MULTILINE)
    broken = re.search(r"^  FAIL +middle +WrongSignScale +(.*)$", rows, re.MULTILINE)
    assert broken is not None
    assert re.match(r"log_det \(\d\.\d\de[-+]\d\d > 1\.00e-08: inverse", broken.group(1))
    assert "failing blocks: middle (WrongSignScale)" in out


@pytest.mark.parametrize("target", ["nodes", "sequence", "built", "good_block"])
def test_check_a_good_network_or_block_passes(capsys, user, target):
    code, out, _ = run(capsys, "check", f"{user}:{target}")
    assert code == 0, out
    assert " FAIL " not in out
    assert out.rstrip().endswith("all checks passed")
    if target != "good_block":
        assert "each block on its own:" in out


# ---------------------------------------------------------------------- draw, summary
@needs_dot
def test_draw_to_svg(capsys, user, tmp_path):
    target = tmp_path / "pictures" / "net.svg"  # the folder is created
    code, out, _ = run(capsys, "draw", f"{user}:nodes", "-o", str(target))
    assert code == 0
    assert "<svg" in target.read_text()
    assert str(target) in out


@pytest.mark.parametrize("suffix", [".dot", ".gv"])
def test_draw_to_dot_needs_no_dot_program(capsys, user, tmp_path, monkeypatch, suffix):
    monkeypatch.setenv("PATH", str(tmp_path))
    target = tmp_path / f"net{suffix}"
    code, _, _ = run(capsys, "draw", f"{user}:sequence", "-o", str(target))
    assert code == 0
    source = target.read_text()
    assert source.startswith("digraph forward")
    assert "GLOWCouplingBlock" in source


def test_draw_reverse(capsys, user, tmp_path):
    target = tmp_path / "inverse.dot"
    assert run(capsys, "draw", f"{user}:nodes", "-o", str(target), "--reverse")[0] == 0
    assert 'label="inverse pass"' in target.read_text()


def test_summary(capsys, user):
    code, out, _ = run(capsys, "summary", f"{user}:nodes")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[3:8]]
    assert names == ["x", "glow", "middle", "perm", "z"]
    assert re.search(r"^Total +\d+ +\d+$", out, re.MULTILINE)


# ---------------------------------------------------------------------- user errors
ERRORS = {
    "missing-module": (
        ["check", "no_such_module_xyz:make"],
        "no module named 'no_such_module_xyz'",
    ),
    "missing-file": (["check", "{dir}/missing.py:make"], "no file {dir}/missing.py"),
    "not-module-callable": (["summary", "{user}"], "is not MODULE:CALLABLE"),
    "missing-attribute": (
        ["check", "{user}:nodez"],
        "has no attribute 'nodez'; did you mean nodes",
    ),
    "raises": (["check", "{user}:boom"], "{user}:boom raised RuntimeError: boom (at {user}:"),
    "takes-arguments": (["draw", "{user}:needs_arguments", "-o", "x.dot"], "no arguments"),
    "returns-int": (["check", "{user}:number"], "returned an int; check needs a block"),
    "returns-strings": (["summary", "{user}:strings"], "returned a list containing a str"),
    "draw-a-block": (
        ["draw", "{user}:good_block", "-o", "x.dot"],
        "returned an invgraph.modules.coupling.GLOWCouplingBlock; draw needs a GraphINN",
    ),
    "bad-graph": (["check", "{user}:loose_nodes"], "cannot build a GraphINN from"),
    "import-fails": (["check", "{dir}/bad.py:make"], "importing {dir}/bad.py failed: NameError"),
    "unknown-suffix": (["draw", "{user}:nodes", "-o", "{dir}/net.jpg"], "must be one of .svg"),
    "output-under-a-file": (
        ["draw", "{user}:nodes", "-o", "{user}/net.dot"],
        "{user} is a file, not a folder",
    ),
    "output-is-a-folder": (["draw", "{user}:nodes", "-o", "{dir}/folder.dot"], "cannot write"),
    "not-a-python-file": (["summary", "{dir}/notes.txt:nodes"], "{dir}/notes.txt is not a Python"),
    "exits": (["check", "{user}:exits"], "{user}:exits raised SystemExit: 3 (at {user}:"),
    "exits-on-import": (
        ["summary", "{dir}/script.py:make"],
        "importing {dir}/script.py failed: SystemExit: 2 (at {dir}/script.py:2); it exits",
    ),
}


@pytest.mark.parametrize("argv, message", ERRORS.values(), ids=ERRORS.keys())
def test_user_errors_exit_2_with_one_line(capsys, user, argv, message):
    (user.parent / "bad.py").write_text("x = 1\nundefined_name\n")
    (user.parent / "script.py").write_text("import sys\nsys.exit(2)\n")
    (user.parent / "notes.txt").write_text(USER_CODE)
    (user.parent / "folder.dot").mkdir()
    fill = {"user": str(user), "dir": str(user.parent)}
    code, out, err = run(capsys, *(arg.format(**fill) for arg in argv))
    assert code == 2
    assert message.format(**fill) in err
    assert err.startswith(f"invgraph {argv[0]}: error: ")
    assert len(err.strip().splitlines()) == 1, err  # no traceback
    assert out == ""


@pytest.mark.parametrize("suffix", [".svg", ".pdf", ".png"])
def test_draw_without_dot_draws_with_matplotlib(capsys, user, tmp_path, monkeypatch, suffix):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("PATH", str(tmp_path))
    path = tmp_path / f"net{suffix}"
    code, out, err = run(capsys, "draw", f"{user}:nodes", "-o", str(path))
    assert code == 0, err
    assert f"wrote {path} (drawn with matplotlib: Graphviz's dot is not installed" in out
    magic = {".svg": b"<?xml", ".pdf": b"%PDF", ".png": b"\x89PNG"}[suffix]
    assert path.read_bytes().startswith(magic)


def test_draw_without_dot_or_matplotlib_says_so(capsys, user, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import raises ImportError
    code, _, err = run(capsys, "draw", f"{user}:nodes", "-o", str(tmp_path / "net.svg"))
    assert code == 2
    assert "needs Graphviz's dot program or matplotlib, and neither is installed" in err
    assert "net.dot" in err  # the way out
    assert "Traceback" not in err
    assert not (tmp_path / "net.svg").exists()


def test_traceback_option_shows_the_cause(capsys, user):
    code, _, err = run(capsys, "--traceback", "check", f"{user}:boom")
    assert code == 2
    assert "Traceback" in err
    assert 'raise RuntimeError("boom")' in err


def test_sys_path_is_restored(capsys, user):
    before = list(sys.path)
    run(capsys, "summary", f"{user}:nodes")
    assert sys.path == before


def test_interrupted_exits_130_in_one_line(capsys, user):
    code, out, err = run(capsys, "summary", f"{user}:interrupted")
    assert code == 130
    assert err == "invgraph summary: interrupted\n"
    assert out == ""


def test_a_read_only_output_folder_is_reported(capsys, user, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as for a non-root user
    code, _, err = run(capsys, "draw", f"{user}:nodes", "-o", str(tmp_path / "out" / "net.dot"))
    assert code == 2
    assert f"cannot write to the folder {tmp_path / 'out'}: permission denied" in err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------- any file name
ODD_NAMES = {
    "space": "my flows.py",
    "dots": "my.flows.py",
    "dash-and-dots": "v1.2-model.py",
    "leading-digit": "2flows.py",
    "unicode": "flüsse λ-модель.py",
    "keyword": "class.py",
}


def run_with_timeout(capsys, *argv: str, seconds: float = 120) -> tuple[int, str, str]:
    """``run``, in a thread: a hang fails the test instead of blocking the suite."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(list(argv))), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"invgraph {' '.join(argv)} hangs"
    out, err = capsys.readouterr()
    return result[0], out, err


@pytest.mark.parametrize("file_name", ODD_NAMES.values(), ids=ODD_NAMES.keys())
def test_any_file_name_loads(capsys, tmp_path, file_name):
    path = tmp_path / file_name
    path.write_text(USER_CODE)
    try:
        code, out, err = run_with_timeout(capsys, "summary", f"{path}:nodes")
        assert code == 0, err
        names = [line.split()[0] for line in out.splitlines()[3:8]]
        assert names == ["x", "glow", "middle", "perm", "z"]
        assert re.search(r"^Total +\d+ +\d+$", out, re.MULTILINE)
        # registered under an identifier, so that the file's classes pickle by reference
        (name,) = [n for n, m in sys.modules.items() if getattr(m, "__file__", "") == str(path)]
        assert name.isidentifier()
    finally:
        for name in [n for n, m in sys.modules.items() if getattr(m, "__file__", "") == str(path)]:
            del sys.modules[name]


def test_generated_module_names_are_unique_identifiers(tmp_path):
    path = tmp_path / "v1.2 my-flow.py"
    first = module_name_for(path)
    assert first == "_invgraph_user_v1_2_my_flow_1" and first.isidentifier()
    sys.modules[first] = sys  # taken: the next name differs
    try:
        assert module_name_for(path) == "_invgraph_user_v1_2_my_flow_2"
    finally:
        del sys.modules[first]
    assert module_name_for(tmp_path / "flows.py") == "flows"  # a free identifier stays
    assert module_name_for(tmp_path / "json.py").startswith("_invgraph_user_json_")  # taken


# ---------------------------------------------------------------------- invgraph.demo
def test_the_documented_target_draws(capsys, tmp_path):
    target = tmp_path / "flow.dot"
    code, out, _ = run(capsys, "draw", "invgraph.demo:demo_flow", "-o", str(target))
    assert code == 0
    assert out == f"wrote {target}\n"
    assert "coupling7" in target.read_text()


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"seed": -1}, {"steps": 2.5}])
def test_run_demo_refuses_bad_arguments(kwargs, tmp_path):
    with pytest.raises(ig.InvGraphError, match="the demo's"):
        run_demo(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_demo_flow_starts_as_a_permutation():
    """Its couplings' subnetworks (invgraph.subnets.MLP) start at zero."""
    flow = demo_flow(blocks=3)
    x = torch.randn(7, 2)
    z, log_det = flow(x)
    assert torch.equal(log_det, torch.zeros(7))
    assert torch.equal(z.sort(dim=1).values, x.sort(dim=1).values)
