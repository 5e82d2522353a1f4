"""The harness itself: :mod:`invgraph.testing` must fail each broken block on its check.

Every broken block below starts from a correct one (:class:`_Scale`) and breaks one rule of
the :class:`~invgraph.modules.InvertibleModule` contract; ``check_block`` must fail exactly
the checks that rule is about, and pass the others.
"""

from __future__ import annotations

import copy
import doctest
import math

import pytest
import torch
from registry import ConditionalAffineCoupling, DenseSubnet
from torch import Tensor, nn

import invgraph.testing
from invgraph.errors import InvGraphError
from invgraph.framework import GraphINN, InputNode, Node, OutputNode
from invgraph.modules import GLOWCouplingBlock, PermuteRandom
from invgraph.modules.base import InvertibleModule
from invgraph.testing import (
    CHECKS,
    CheckReport,
    CheckResult,
    check_block,
    check_inverse,
    check_log_det_shape,
)


class _Scale(InvertibleModule):
    """A correct block: ``z = x * exp(a)``, ``log|det J| = sum(a)``; ``a`` starts at zero."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__(dims_in, dims_c)
        self.log_scale = nn.Parameter(torch.zeros(self.dims_in[0]))

    def log_det(self, x: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[0])

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        (x,) = x_or_z
        if rev:
            return (x * torch.exp(-self.log_scale),), -self.log_det(x)
        return (x * torch.exp(self.log_scale),), self.log_det(x)

    def output_dims(self, input_dims):
        return list(input_dims)


class _WrongSign(_Scale):
    def log_det(self, x):
        return -super().log_det(x)


class _WrongInverseSign(_Scale):
    """FrEIA's LearnedElementwiseScaling: the reverse log-det has the wrong sign."""

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        outputs, log_det = super().forward(x_or_z, c, rev, jac)
        return outputs, -log_det if rev else log_det


class _WrongOutputDims(_Scale):
    def output_dims(self, input_dims):
        return [(shape[0] + 1, *shape[1:]) for shape in input_dims]


class _EditsInput(_Scale):
    """FrEIA's HaarDownsampling: the reverse pass scales the caller's tensor in place."""

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        if rev:
            (z,) = x_or_z
            return (z.mul_(torch.exp(-self.log_scale)),), -self.log_det(z)
        return super().forward(x_or_z, c, rev, jac)


class _TouchesCondition(_Scale):
    """Writes to its condition in place without changing it: only the version counter tells."""

    def __init__(self, dims_in, dims_c=((2,),)):
        super().__init__(dims_in, dims_c)

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        c[0].mul_(1.0)
        return super().forward(x_or_z, c, rev, jac)


class _NotInvertible(_Scale):
    def forward(self, x_or_z, c=(), rev=False, jac=True):
        outputs, log_det = super().forward(x_or_z, c, rev, jac)
        return ((outputs[0] + 0.1,) if rev else outputs), log_det


class _HostSync(_Scale):
    def forward(self, x_or_z, c=(), rev=False, jac=True):
        if self.log_scale.abs().max().item() > 30.0:
            raise ValueError("scale out of range")
        return super().forward(x_or_z, c, rev, jac)


class _LambdaAttribute(_Scale):
    """FrEIA's clamp activations: a lambda stored on the module breaks ``torch.save``."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__(dims_in, dims_c)
        self.clamp = lambda s: 2.0 * torch.tanh(s / 2.0)

    def log_det(self, x):
        return self.clamp(self.log_scale).sum().expand(x.shape[0])

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        (x,) = x_or_z
        s = self.clamp(self.log_scale)
        if rev:
            return (x * torch.exp(-s),), -self.log_det(x)
        return (x * torch.exp(s),), self.log_det(x)


class _LogDetColumn(_Scale):
    """The log-det comes back as ``(B, 1)`` (FrEIA's InvertibleSigmoid returned ``(B, H, W)``)."""

    def log_det(self, x):
        return super().log_det(x)[:, None]


class _ReshapesWithMinusOne(_Scale):
    """Sums its log-det terms through ``reshape(len(x), -1)``, which no empty batch passes."""

    def log_det(self, x):
        return self.log_scale.expand_as(x).reshape(len(x), -1).sum(1)


class _Settings:
    """A plain object: ``torch.load(weights_only=True)`` refuses it."""

    def __init__(self, clamp: float):
        self.clamp = clamp


class _ObjectInStateDict(_Scale):
    """Keeps a custom object as extra state: the state dict no longer loads safely."""

    def get_extra_state(self):
        return _Settings(2.0)

    def set_extra_state(self, state):
        pass


class _Raises(_Scale):
    def forward(self, x_or_z, c=(), rev=False, jac=True):
        if rev:
            raise NotImplementedError("no inverse")
        return super().forward(x_or_z, c, rev, jac)


BROKEN = [
    ("wrong-log-det-sign", _WrongSign, {"log_det"}),
    ("wrong-inverse-log-det-sign", _WrongInverseSign, {"log_det", "log_det_symmetry"}),
    ("wrong-output-dims", _WrongOutputDims, {"output_dims"}),
    ("edits-input-in-place", _EditsInput, {"inputs_unmodified"}),
    ("writes-to-condition", _TouchesCondition, {"inputs_unmodified"}),
    ("not-invertible", _NotInvertible, {"inverse"}),
    ("item-in-forward", _HostSync, {"meta_device"}),
    ("lambda-attribute", _LambdaAttribute, {"save_load"}),
    ("log-det-column", _LogDetColumn, {"log_det_shape"}),
    ("reshape-with-minus-one", _ReshapesWithMinusOne, {"empty_batch"}),
]


def test_a_correct_block_passes_every_check() -> None:
    report = check_block(_Scale([(3, 2)]))
    report.assert_ok()
    assert [result.name for result in report.results] == list(CHECKS)


@pytest.mark.parametrize(
    ("block_type", "expected"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_a_broken_block_fails_exactly_its_check(block_type, expected) -> None:
    report = check_block(block_type([(3, 2)]))
    assert {result.name for result in report.failed} == expected, str(report)
    with pytest.raises(AssertionError, match="FAIL"):
        report.assert_ok()


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_log_dets_of_low_precision_inputs_are_float32(low: torch.dtype) -> None:
    """The library sums log-dets in at least float32; a log-det left in the inputs'
    low precision fails the check, with the expected dtype named."""
    x = torch.randn(5, 4, dtype=low)
    glow = GLOWCouplingBlock([(4,)], subnet_constructor=DenseSubnet).to(low)
    assert check_log_det_shape(glow, [x]).passed
    assert check_log_det_shape(_graph(_Scale).to(low), [x]).passed  # the graph sums in float32
    result = check_log_det_shape(_Scale([(4,)]).to(low), [x])  # sums in its parameters' dtype
    assert not result.passed
    assert f"{low} on cpu" in result.message and "torch.float32 on cpu" in result.message


def test_empty_batch_names_each_direction_that_fails() -> None:
    result = invgraph.testing.check_empty_batch(_ReshapesWithMinusOne([(3, 2)]))
    assert not result.passed
    assert "forward raised RuntimeError: cannot reshape tensor of 0 elements" in result.message
    assert "inverse raised RuntimeError" in result.message
    assert invgraph.testing.check_empty_batch(_Scale([(3, 2)])).message == "forward and inverse"


def test_a_state_dict_that_needs_pickle_fails_save_load() -> None:
    report = check_block(_ObjectInStateDict([(4,)]))
    assert {result.name for result in report.failed} == {"save_load"}, str(report)
    assert "weights_only" in report["save_load"].message


def _graph(block_type: type[InvertibleModule]) -> GraphINN:
    x = InputNode(4, name="x")
    scale = Node(x, block_type, {}, name="scale")
    permute = Node(scale, PermuteRandom, {"seed": 0}, name="permute")
    return GraphINN([x, scale, permute, OutputNode(permute)])


def test_a_broken_block_inside_a_graph_fails_the_graph() -> None:
    check_block(_graph(_Scale)).assert_ok()
    report = check_block(_graph(_WrongInverseSign))
    assert {result.name for result in report.failed} == {"log_det", "log_det_symmetry"}


def test_an_exception_is_reported_not_raised() -> None:
    report = check_block(_Raises([(4,)]), checks=["inverse", "meta_device"])
    assert not report["inverse"].passed
    assert "NotImplementedError: no inverse" in report["inverse"].message
    assert not report["meta_device"].passed


def test_blocks_at_the_identity_are_perturbed_away_from_it() -> None:
    # _WrongSign starts at a = 0, where its log-det 0 is right: only perturbation exposes it
    assert check_block(_WrongSign([(4,)]), perturb=0.0).passed
    assert not check_block(_WrongSign([(4,)])).passed


def test_check_block_leaves_the_block_alone() -> None:
    block = _Scale([(4,)]).float()
    before = copy.deepcopy(block.state_dict())
    check_block(block)
    assert block.log_scale.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())


def test_perturbation_is_seeded() -> None:
    def log_det(seed: int) -> float | None:
        return check_block(_WrongSign([(4,)]), seed=seed, checks=["log_det"])["log_det"].value

    assert log_det(0) == log_det(0)
    assert log_det(0) != log_det(1)


def test_given_inputs_are_used() -> None:
    block = _NotInvertible([(4,)])
    huge = torch.full((2, 4), 1e12)  # the +0.1 offset vanishes in the relative error
    assert check_block(block, inputs=huge, perturb=0.0, checks=["inverse"]).passed
    assert not check_block(block, inputs=[huge * 0], perturb=0.0, checks=["inverse"]).passed


def test_given_conditions_are_used() -> None:
    block = ConditionalAffineCoupling([(6,)], dims_c=[(3,)])
    assert check_block(block, conditions=torch.ones(2, 3), checks=["inverse"]).passed
    report = check_block(block, conditions=[torch.full((2, 3), math.nan)], checks=["inverse"])
    assert report["inverse"].value == math.inf


def test_tolerances_can_be_overridden() -> None:
    block = _NotInvertible([(4,)])
    report = check_block(block, checks=["inverse"], inverse_tol=1.0)
    assert report.passed
    assert report["inverse"].tolerance == 1.0
    assert 0.01 < report["inverse"].value < 1.0


def test_default_tolerances_follow_the_dtype() -> None:
    result = check_inverse(_Scale([(4,)]).float())
    assert result.passed
    assert result.tolerance == 1e-5
    assert check_inverse(_Scale([(4,)]).double()).tolerance == 1e-10


def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(InvGraphError, match="inverse_roundtrip"):
        check_block(_Scale([(4,)]), checks=["inverse_roundtrip"])


def test_report_table_names_every_check() -> None:
    report = check_block(_WrongOutputDims([(4,)]), checks=["inverse", "output_dims"])
    lines = str(report).splitlines()
    assert lines[0].startswith("checks of _WrongOutputDims")
    assert lines[1].split() == ["check", "result", "value", "tolerance", "message"]
    assert lines[2].split()[:2] == ["inverse", "pass"]
    assert lines[3].split()[:2] == ["output_dims", "FAIL"]
    assert "forward returns [(4,)], output_dims says [(5,)]" in lines[3]


def test_check_result_is_frozen() -> None:
    result = CheckResult("inverse", True, 0.0, 1e-10, "")
    with pytest.raises(AttributeError):
        result.passed = False  # type: ignore[misc]
    assert CheckReport("x", (result,)).passed


def test_examples_in_docstrings_run() -> None:
    outcome = doctest.testmod(invgraph.testing, optionflags=doctest.ELLIPSIS)
    assert outcome.attempted > 0
    assert outcome.failed == 0
