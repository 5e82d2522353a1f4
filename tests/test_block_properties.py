"""Every block of the registry through every check of :mod:`invgraph.testing`.

One test function per check, each parametrized over ``tests.registry.BLOCKS``, so a failure
reads ``test_log_det[haar-rebalance]`` with the check's table in the message. Run on a GPU
with ``pytest --device cuda --dtype float32``.
"""

from __future__ import annotations

import pytest
import torch
from registry import BLOCKS, BlockCase

import invgraph as ig
from invgraph.testing import CHECKS, check_block


def _cases(check: str) -> list:
    """The registry as parameters; a case's known failure of ``check`` is a strict xfail."""
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(reason=case.known_failures[check], strict=True)]
            if check in case.known_failures
            else [],
        )
        for case in BLOCKS
    ]


def _run(case: BlockCase, check: str, device: torch.device, dtype: torch.dtype) -> None:
    conditions = case.conditions() if case.conditions else None
    block = case.factory()
    report = check_block(block, conditions=conditions, checks=[check], device=device, dtype=dtype)
    report.assert_ok()


def test_registry_ids_are_unique() -> None:
    ids = [case.id for case in BLOCKS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_registry_covers_every_block() -> None:
    """Every public block of invgraph.modules is swept (abstract bases excepted)."""
    base = ig.modules.InvertibleModule
    blocks = {getattr(ig.modules, name) for name in ig.modules.__all__}
    blocks = {b for b in blocks if isinstance(b, type) and issubclass(b, base)}
    swept = {type(case.factory()) for case in BLOCKS}
    swept |= {type(case.factory().module) for case in BLOCKS if case.id.startswith("inverse")}
    bases = {base, ig.modules.CouplingBlock, ig.modules.AutoregressiveBlock}
    assert blocks - bases - swept == set()


def test_every_check_has_a_test() -> None:
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(CHECKS) <= tested, sorted(set(CHECKS) - tested)


@pytest.mark.parametrize("case", _cases("inverse"))
def test_inverse(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "inverse", device, dtype)


@pytest.mark.parametrize("case", _cases("log_det"))
def test_log_det(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "log_det", device, dtype)


@pytest.mark.parametrize("case", _cases("log_det_symmetry"))
def test_log_det_symmetry(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "log_det_symmetry", device, dtype)


@pytest.mark.parametrize("case", _cases("output_dims"))
def test_output_dims(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "output_dims", device, dtype)


@pytest.mark.parametrize("case", _cases("inputs_unmodified"))
def test_inputs_unmodified(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "inputs_unmodified", device, dtype)


@pytest.mark.parametrize("case", _cases("log_det_shape"))
def test_log_det_shape(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "log_det_shape", device, dtype)


@pytest.mark.parametrize("case", _cases("save_load"))
def test_save_load(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "save_load", device, dtype)


@pytest.mark.parametrize("case", _cases("meta_device"))
def test_meta_device(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "meta_device", device, dtype)


@pytest.mark.parametrize("case", _cases("empty_batch"))
def test_empty_batch(case: BlockCase, device: torch.device, dtype: torch.dtype) -> None:
    _run(case, "empty_batch", device, dtype)
