"""The package as a user installs it: its files, its metadata, its version, its entry points.

CI also installs the built wheel (not the source tree) in fresh environments with other
torch versions and runs a subset of the suite there, this file included, with
``INVGRAPH_TEST_INSTALLED`` set to the torch version it installed: then the last test
checks that invgraph came from that installation and runs on that torch.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import invgraph

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_TORCH = os.environ.get("INVGRAPH_TEST_INSTALLED")


def test_the_package_ships_its_type_marker():
    """PEP 561: without ``py.typed`` a user's type checker ignores invgraph's annotations."""
    assert (importlib.resources.files("invgraph") / "py.typed").is_file()


def test_the_installed_metadata_has_the_package_version():
    assert importlib.metadata.version("invgraph") == invgraph.__version__


def test_the_changelog_dates_the_current_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = re.escape(invgraph.__version__)
    assert re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.MULTILINE), (
        f"CHANGELOG.md has no dated section '## [{invgraph.__version__}] - YYYY-MM-DD'"
    )


@pytest.mark.parametrize("command", [["-m", "invgraph"], ["-m", "invgraph.cli"]])
def test_the_version_from_the_command_line(command):
    if command[-1] == "invgraph.cli":  # the console script's entry point, invgraph.cli:main
        command = ["-c", "import sys, invgraph.cli; sys.exit(invgraph.cli.main())"]
    result = subprocess.run(
        [sys.executable, *command, "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"invgraph {invgraph.__version__}"


@pytest.mark.skipif(EXPECTED_TORCH is None, reason="runs where CI installed the wheel")
def test_this_is_the_installed_wheel_on_the_expected_torch():
    source = Path(invgraph.__file__).resolve()
    assert ROOT not in source.parents, f"invgraph was imported from the source tree: {source}"
    assert "site-packages" in source.parts
    assert torch.__version__.split("+")[0] == EXPECTED_TORCH
