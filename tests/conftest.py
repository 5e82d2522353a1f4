"""Shared pytest options: run the same suite on any device and dtype.

``pytest --device cuda --dtype float32`` reruns every test that takes the ``device`` and
``dtype`` fixtures on a GPU in single precision. Tests marked ``cuda`` are skipped when no
CUDA device is available.
"""

from __future__ import annotations

import os

import pytest
import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("invgraph")
    group.addoption("--device", default="cpu", help="torch device for the tests (default: cpu)")
    group.addoption(
        "--dtype", default="float64", choices=sorted(_DTYPES), help="floating dtype of the tests"
    )


def pytest_configure(config: pytest.Config) -> None:
    # The tests' tensors are tiny: one thread is as fast, and several threads on a busy
    # machine wait on each other (a 64-block step took 6 s with 2 threads, 0.06 s with 1).
    torch.set_num_threads(1)
    # Inductor compiles in this process: no pool of compile workers started from a test
    # process that already runs other threads (pytest-xdist's).
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    device = torch.device(config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device}: CUDA is not available here")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device given by ``--device`` (default ``cpu``)."""
    return torch.device(pytestconfig.getoption("--device"))


@pytest.fixture(scope="session")
def dtype(pytestconfig: pytest.Config) -> torch.dtype:
    """The floating dtype given by ``--dtype`` (default ``float64``)."""
    return _DTYPES[pytestconfig.getoption("--dtype")]
