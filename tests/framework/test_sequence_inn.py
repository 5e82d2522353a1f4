"""SequenceINN: appending, conditions, indexing, slicing and the inverse network."""

from __future__ import annotations

import pytest
import torch
from registry import ConditionalAffineCoupling

import invgraph as ig
from invgraph.modules import InvertibleModule
from invgraph.testing import check_block


class NoneLogDetWithoutJac(InvertibleModule):
    """Returns ``None`` as log-det when ``jac=False``, as the contract allows."""

    def forward(self, x_or_z, c=(), rev=False, jac=True):
        x = x_or_z[0]
        out = x / 2 if rev else x * 2
        if not jac:
            return (out,), None
        log_det = x.new_full((x.shape[0],), x[0].numel() * 0.6931471805599453)
        return (out,), -log_det if rev else log_det

    def output_dims(self, input_dims):
        return list(input_dims)


def conditional_chain() -> ig.SequenceINN:
    inn = ig.SequenceINN(2, 4, 4)
    inn.append(ig.HaarDownsampling)
    inn.append(ig.Flatten)
    inn.append(ConditionalAffineCoupling, cond=1, cond_shape=(3,))
    inn.append(ig.PermuteRandom, seed=0)
    inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(2,))
    return inn


def test_shapes_and_properties():
    inn = conditional_chain()
    assert inn.shapes == [(2, 4, 4), (8, 2, 2), (32,), (32,), (32,), (32,)]
    assert inn.dims_c == [(2,), (3,)]
    assert inn.output_dims() == [(32,)]
    check_block(inn).assert_ok()


def test_jac_false_with_blocks_returning_none():
    """FrEIA defect 16: SequenceINN(jac=False) crashed on a block returning None."""
    inn = ig.SequenceINN(5)
    inn.append(NoneLogDetWithoutJac)
    inn.append(NoneLogDetWithoutJac)
    x = torch.randn(3, 5)
    z, log_det = inn(x, jac=False)
    torch.testing.assert_close(z, 4 * x)
    assert log_det.shape == (3,) and torch.all(log_det == 0)
    _, log_det = inn(x)
    torch.testing.assert_close(log_det, torch.full((3,), 10 * 0.6931471805599453))


def test_indexing_slicing_and_inverse_network():
    inn = conditional_chain()
    x, c = torch.randn(4, 2, 4, 4), [torch.randn(4, 2), torch.randn(4, 3)]
    z, log_det = inn(x, c=c)
    assert isinstance(inn[0], ig.HaarDownsampling) and len(inn) == 5
    assert [type(m).__name__ for m in inn][:2] == ["HaarDownsampling", "Flatten"]

    head, tail = inn[:2], inn[2:]
    assert head[0] is inn[0]  # slices share the blocks
    h, log_det_head = head(x, c=c)
    z_tail, log_det_tail = tail(h, c=c)
    torch.testing.assert_close(z_tail, z)
    torch.testing.assert_close(log_det_head + log_det_tail, log_det)

    backwards = inn[::-1]
    x_rec, log_det_rec = backwards(z, c=c)
    torch.testing.assert_close(x_rec, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_det_rec, -log_det, atol=1e-5, rtol=1e-5)
    x_rev, _ = inn(z, c=c, rev=True)
    torch.testing.assert_close(x_rec, x_rev)


def test_force_tuple_output_and_built_blocks():
    inn = ig.SequenceINN(6, force_tuple_output=True)
    inn.append(ig.PermuteRandom([(6,)], seed=1))
    (z,), _ = inn(torch.randn(2, 6))
    assert z.shape == (2, 6)


def test_errors():
    inn = ig.SequenceINN(6)
    with pytest.raises(ig.InvGraphError, match="cond=0 needs cond_shape"):
        inn.append(ConditionalAffineCoupling, cond=0)
    with pytest.raises(ig.InvGraphError, match=r"expects inputs \[\(8,\)\], but the chain"):
        inn.append(ig.PermuteRandom([(8,)]))
    with pytest.raises(ig.InvGraphError, match="has 2 outputs"):
        inn.append(ig.Split)
    inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(3,))
    with pytest.raises(ig.InvGraphError, match=r"declared with shape \(3,\), now with \(4,\)"):
        inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(4,))
    with pytest.raises(ig.InvGraphError, match=r"expects shape \(batch, 6\), got \(2, 5\)"):
        inn(torch.randn(2, 5), c=[torch.randn(2, 3)])
    with pytest.raises(ig.InvGraphError, match=r"expects 1 condition\(s\), got 0"):
        inn(torch.randn(2, 6))
    with pytest.raises(ig.InvGraphError, match=r"condition 0 expects shape \(batch, 3\)"):
        inn(torch.randn(2, 6), c=[torch.randn(2, 2)])


def test_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="SequenceINN"):
        inn = ig.framework.ReversibleSequential(4)
    assert isinstance(inn, ig.SequenceINN)
