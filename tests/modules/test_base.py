"""The base module's shared helpers: the log-det sum and the single-input check."""

from __future__ import annotations

import pytest
import torch

from invgraph.errors import InvGraphError
from invgraph.modules.base import single_input, sum_except_batch


@pytest.mark.parametrize("shape", [(0, 3), (0, 2, 4, 4), (0,), (3, 0, 2)])
def test_sum_except_batch_keeps_empty_batches(shape):
    # reshape(len(x), -1) cannot infer -1 from zero elements: every coupling failed on B = 0.
    total = sum_except_batch(torch.ones(shape))
    assert total.shape == shape[:1]
    assert torch.equal(total, torch.zeros(shape[:1]))


def test_sum_except_batch_sums_every_dimension_but_the_first_and_needs_no_copy():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(sum_except_batch(x), x.reshape(3, -1).sum(1))
    strided = x.transpose(1, 2)  # not contiguous: summed in place of a reshaped copy
    torch.testing.assert_close(sum_except_batch(strided), x.reshape(3, -1).sum(1))
    assert sum_except_batch(torch.ones(4, dtype=torch.bfloat16)).dtype == torch.float32


@pytest.mark.parametrize(
    ("input_dims", "ndim", "match"),
    [
        ([(3,), (3,)], None, r"Block: expects exactly 1 input of shape \(C, \.\.\.\), received "),
        ([()], None, r"of shape \(C, \.\.\.\), received shapes \[\(\)\]"),
        ([], None, r"received shapes \[\]"),
        ([(3, 4)], (1,), r"of shape \(d,\), received shapes \[\(3, 4\)\]"),
        ([(3, 4)], (1, 3), r"of shape \(d,\) or \(C, H, W\), received shapes \[\(3, 4\)\]"),
    ],
)
def test_single_input_names_the_block_the_expected_and_the_received_shapes(input_dims, ndim, match):
    with pytest.raises(InvGraphError, match=match):
        single_input("Block", input_dims, ndim)


def test_single_input_returns_the_shape_as_ints():
    assert single_input("Block", [torch.Size([3, 4, 4])]) == (3, 4, 4)
    assert single_input("Block", [[5]], ndim=(1,)) == (5,)
