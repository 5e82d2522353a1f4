"""SequenceINN: appending, conditions, indexing, slicing and the inverse network."""

from __future__ import annotations

import numpy as np
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
    with pytest.raises(
        ig.InvGraphError,
        match=r"SequenceINN block 0: the built PermuteRandom expects inputs \[\(8,\)\], but its "
        r"input ports carry \[\(6,\)\]",
    ):
        inn.append(ig.PermuteRandom([(8,)]))
    with pytest.raises(ig.InvGraphError, match="has 2 outputs"):
        inn.append(ig.Split)
    inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(3,))
    with pytest.raises(ig.InvGraphError, match=r"declared with shape \(3,\), now with \(4,\)"):
        inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(4,))
    with pytest.raises(ig.InvGraphError, match=r"expects shape \(batch, 6\), got \(2, 5\)"):
        inn(torch.randn(2, 5), c=[torch.randn(2, 3)])
    with pytest.raises(
        ig.InvGraphError, match=r"forward: expected 1 condition\(s\) for nodes \['c0'\], got 0"
    ):
        inn(torch.randn(2, 6))
    with pytest.raises(
        ig.InvGraphError, match=r"condition node 'c0' expects shape \(batch, 3\), got \(2, 2\)"
    ):
        inn(torch.randn(2, 6), c=[torch.randn(2, 2)])


def test_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="SequenceINN"):
        inn = ig.framework.ReversibleSequential(4)
    assert isinstance(inn, ig.SequenceINN)


@pytest.mark.parametrize("dims", [(), (0,), (-3,), (4.0,), ([4],), ("4",), (True,), (4, 0)])
def test_input_shape_must_be_positive_integers(dims):
    with pytest.raises(ig.InvGraphError, match=r"SequenceINN: .*e\.g\. SequenceINN"):
        ig.SequenceINN(*dims)


def test_numpy_integers_are_dimensions():
    inn = ig.SequenceINN(np.int64(3), np.int32(4))
    assert inn.shapes == [(3, 4)]


def test_calls_are_checked_as_a_graph_checks_them():
    inn = ig.SequenceINN(6)
    inn.append(ConditionalAffineCoupling, cond=0, cond_shape=(3,))
    x, c = torch.randn(2, 6), torch.randn(2, 3)
    with pytest.raises(ig.InvGraphError, match=r"expected 1 condition\(s\) .*\['c0'\], got 2"):
        inn(x, c=[c, torch.randn(2, 3)])  # an extra condition is refused, not ignored
    with pytest.raises(ig.InvGraphError, match=r"condition node 'c0' has batch size 5.*has 2"):
        inn(x, c=torch.randn(5, 3))
    with pytest.raises(ig.InvGraphError, match=r"got numpy.ndarray.*torch.as_tensor"):
        inn(x, c=np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ig.InvGraphError, match=r"'c0' got numpy.ndarray, not a tensor"):
        inn(x, c=[np.zeros((2, 3), dtype=np.float32)])
    with pytest.raises(ig.InvGraphError, match=r"the inputs must be a tensor .* got numpy"):
        inn(np.zeros((2, 6), dtype=np.float32), c=c)
    with pytest.raises(ig.InvGraphError, match=r"expected 1 inputs for nodes \['x'\], got 2"):
        inn([x, x], c=c)


def test_a_condition_index_no_block_reads_takes_any_tensor_of_the_batch():
    inn = ig.SequenceINN(6)
    inn.append(ConditionalAffineCoupling, cond=1, cond_shape=(3,))
    assert inn.dims_c == [None, (3,)]
    x, c1 = torch.randn(2, 6), torch.randn(2, 3)
    z, _ = inn(x, c=[torch.randn(2, 7, 7), c1])
    torch.testing.assert_close(z, inn[0]((x,), c=(c1,))[0][0])
    with pytest.raises(ig.InvGraphError, match=r"condition node '#0' has batch size 4"):
        inn(x, c=[torch.randn(4, 7), c1])


def test_intermediate_outputs_and_error_notes_as_in_a_graph():
    inn = conditional_chain()
    x, c = torch.randn(4, 2, 4, 4), [torch.randn(4, 2), torch.randn(4, 3)]
    ports, log_dets = inn(x, c=c, intermediate_outputs=True)
    names = {node.name: node for node in inn.node_list}
    # Conditions appear where a block first reads them; the plan takes them in index order.
    assert [node.name for node in inn.node_list] == ["x", "0", "1", "c1", "2", "3", "c0", "4", "z"]
    assert inn.plan.conditions.names == ("c0", "c1")
    torch.testing.assert_close(ports[names["4"], 0], inn(x, c=c)[0])
    assert ports[names["1"], 0].shape == (4, 32)
    total = sum(log_det + torch.zeros(4) for log_det in log_dets.values())
    torch.testing.assert_close(total, inn(x, c=c)[1])

    inn.check_shapes = False
    with pytest.raises(RuntimeError) as info:
        inn(x, c=[c[0], torch.randn(4, 5)])  # condition 1 of the wrong width reaches block 2
    assert any("raised in node 2: [(32,)] | c=[(3,)]" in note for note in info.value.__notes__)


def test_append_leaves_the_chain_unchanged_when_it_fails():
    inn = ig.SequenceINN(6)
    inn.append(ig.PermuteRandom, seed=0)
    with pytest.raises(ig.InvGraphError, match="has 2 outputs"):
        inn.append(ig.Split)
    with pytest.raises(ig.InvGraphError, match=r"SequenceINN block 1: .*not an invertible block"):
        inn.append(torch.nn.Linear, in_features=6, out_features=6)
    assert len(inn) == 1 and inn.shapes == [(6,), (6,)] and inn.dims_c == []
    x = torch.randn(2, 6)
    torch.testing.assert_close(inn(inn(x)[0], rev=True)[0], x)
