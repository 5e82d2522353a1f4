"""The benchmark scripts run: each finishes its ``--quick`` smoke run and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str) -> str:
    # The script's own folder comes first on its sys.path; the repository root, second,
    # makes invgraph importable without an installation.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_overhead_prints_its_table():
    out = run_quick("overhead.py")
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows[:2] == ["forward", "inverse"] and "training" in rows
    assert out.splitlines()[1].split()[:3] == ["bare", "invgraph", "sequence"]
    assert "bare = " in out


def test_training_step_prints_its_table():
    out = run_quick("training_step.py")
    assert "invgraph/hand" in out and "FrEIA/invgraph" in out
    for row in ("(a) eager", "(a) compiled", "(b) eager", "(b) compiled"):
        assert row in out
    eager_a = next(line for line in out.splitlines() if line.startswith("(a) eager"))
    assert "pass" in eager_a or "FAIL" in eager_a  # a ratio was measured against its target


def test_memory_efficient_prints_its_table():
    out = run_quick("memory_efficient.py")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert [row[0].strip() for row in rows[1:]] == ["2", "4"]
    # the saved bytes are deterministic: the memory-efficient mode keeps the output alone
    assert [row[2].strip() for row in rows[1:]] == ["0.19", "0.19"]


def test_reconstruction_prints_its_table():
    out = run_quick("reconstruction.py")
    rows = [line.split() for line in out.splitlines() if line[:5].strip().isdigit()]
    assert [(row[0], row[2]) for row in rows] == [
        ("16", "float32"),
        ("16", "float64"),
        ("64", "float32"),
        ("64", "float64"),
    ]
    # A well-conditioned chain passes the check; the worst one fails it in float32.
    assert rows[0][-1] == "ok" and rows[2][-1] == "raised"
    assert float(rows[0][4]) < 1e-4 < float(rows[2][4])  # the gradients' relative error


def test_autoregressive_prints_its_table():
    pytest.importorskip("zuko")
    out = run_quick("autoregressive.py")
    header = next(line for line in out.splitlines() if "invgraph/zuko" in line)
    assert header.split() == ["invgraph", "ms", "zuko", "ms", "invgraph/zuko", "target"]
    rows = [line.split() for line in out.splitlines() if line.startswith(("MAF", "NSF"))]
    flows = ["MAF", "NSF", "MAF +c4", "NSF +c4"]
    tasks = ["density", "sampling", "training"]
    assert [" ".join(row[:-5]) for row in rows] == [f"{f} {t}" for f in flows for t in tasks]
    for row in rows:  # two times, their ratio, measured against the target
        ours, theirs, ratio = (float(cell) for cell in row[-5:-2])
        assert ours > 0 and theirs > 0 and ratio > 0
        assert row[-2] == "<=1.00" and row[-1] in ("pass", "FAIL")
