"""Split and Concat: section sizes, dims, errors, and parity with FrEIA 0.2."""

import warnings

import pytest
import torch

from invgraph.errors import InvGraphError
from invgraph.modules import Concat, Split


@pytest.fixture
def freia():
    return pytest.importorskip("FrEIA.modules")


@pytest.mark.parametrize(
    ("shape", "kwargs", "sizes"),
    [
        ((6, 3), {}, [3, 3]),
        ((7, 3), {"n_sections": 3}, [3, 2, 2]),
        ((7, 3), {"section_sizes": 3}, [3, 3, 1]),
        ((6, 3), {"section_sizes": 2}, [2, 2, 2]),
        ((7, 3), {"section_sizes": [1, 4, 2]}, [1, 4, 2]),
        ((7, 3), {"section_sizes": [1, 4]}, [1, 4, 2]),  # the rest becomes one more piece
        ((7, 3), {"section_sizes": [2, 3], "n_sections": 5}, [2, 3, 2]),  # sizes win
    ],
)
def test_split_section_sizes(shape, kwargs, sizes, device, dtype):
    split = Split([shape], **kwargs)
    assert split.section_sizes == sizes
    assert split.output_dims([shape]) == [(size, shape[1]) for size in sizes]
    x = torch.randn(2, *shape, device=device, dtype=dtype)
    pieces, log_det = split((x,))
    assert log_det == 0.0
    assert torch.equal(torch.cat(pieces, dim=1), x)
    assert [piece.shape[1] for piece in pieces] == sizes


@pytest.mark.parametrize(("dim", "expected"), [(0, 0), (1, 1), (2, 2), (-1, 2), (-3, 0)])
def test_split_dim_excludes_batch_and_may_be_negative(dim, expected):
    split = Split([(2, 4, 6)], dim=dim)
    assert split.dim == expected
    x = torch.randn(5, 2, 4, 6)
    first, second = split((x,))[0]
    assert torch.equal(first, x.narrow(expected + 1, 0, x.shape[expected + 1] // 2))
    assert torch.equal(split((first, second), rev=True)[0][0], x)


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((4, 8), {"dim": 2}, r"dim=2 is out of range for input shape \(4, 8\).*-2 <= dim < 2"),
        ((4, 8), {"dim": -3}, r"dim=-3 is out of range"),
        ((4,), {"n_sections": 1}, r"n_sections=1 must be between 2 and the size 4"),
        ((4,), {"n_sections": 5}, r"n_sections=5 must be between 2 and the size 4"),
        ((4,), {"section_sizes": 4}, r"section_sizes=4 must be between 1 and 3"),
        ((4,), {"section_sizes": 0}, r"section_sizes=0 must be between 1 and 3"),
        ((4,), {"section_sizes": [3, 2]}, r"section_sizes=\[3, 2\] .*at most the size 4"),
        ((4,), {"section_sizes": [2, 0, 2]}, r"must be positive"),
        ((4,), {"section_sizes": []}, r"must be positive"),
    ],
)
def test_split_rejects_bad_hyperparameters(shape, kwargs, match):
    with pytest.raises(InvGraphError, match=match):
        Split([shape], **kwargs)


def test_split_bad_dim_is_our_error_not_index_error():
    # FrEIA defect 17: its bounds check is off by one, so dim == ndim ends in IndexError.
    with pytest.raises(InvGraphError, match=r"Split: dim=2 is out of range"):
        Split([(4, 8)], dim=2)


def test_split_needs_one_input_and_checks_output_dims_shapes():
    with pytest.raises(InvGraphError, match=r"Split: expects exactly 1 input .*\[\(4,\), \(4,\)\]"):
        Split([(4,), (4,)])
    split = Split([(4, 8)])
    with pytest.raises(
        InvGraphError, match=r"built for input shape \(4, 8\), received \[\(6, 8\)\]"
    ):
        split.output_dims([(6, 8)])


def test_concat_joins_along_dim(device, dtype):
    concat = Concat([(2, 3, 5), (2, 3, 1), (2, 3, 2)], dim=-1)
    assert concat.dim == 2
    assert concat.output_dims(concat.dims_in) == [(2, 3, 8)]
    xs = tuple(torch.randn(4, 2, 3, n, device=device, dtype=dtype) for n in (5, 1, 2))
    (z,), log_det = concat(xs)
    assert log_det == 0.0
    assert torch.equal(z, torch.cat(xs, dim=3))
    back, _ = concat((z,), rev=True)
    assert all(torch.equal(a, b) for a, b in zip(back, xs, strict=True))


def test_concat_inverts_split():
    split = Split([(7, 2)], n_sections=3)
    concat = Concat(split.output_dims(split.dims_in))
    x = torch.randn(3, 7, 2)
    assert torch.equal(concat(split((x,))[0])[0][0], x)


@pytest.mark.parametrize(
    ("dims_in", "dim", "match"),
    [
        ([(4, 8)], 0, r"Concat: expects at least 2 inputs, received 1"),
        ([(4, 8), (4, 7)], 0, r"equal shapes except along dim=0, received \[\(4, 8\), \(4, 7\)\]"),
        ([(4, 8), (4, 8, 1)], 0, r"equal shapes except along dim=0"),
        ([(4, 8), (4, 8)], 2, r"Concat: dim=2 is out of range for input shape \(4, 8\)"),
    ],
)
def test_concat_rejects_bad_inputs(dims_in, dim, match):
    with pytest.raises(InvGraphError, match=match):
        Concat(dims_in, dim=dim)


def test_concat_output_dims_checks_shapes():
    concat = Concat([(2, 4), (3, 4)])
    with pytest.raises(InvGraphError, match=r"built for input shapes"):
        concat.output_dims([(3, 4), (2, 4)])


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((6, 3), {}),
        ((7, 3), {"n_sections": 3}),
        ((7, 3), {"section_sizes": 3}),
        ((7, 3), {"section_sizes": [2, 5]}),
        ((6, 4), {"dim": 1}),
    ],
)
def test_split_and_concat_match_freia(freia, shape, kwargs):
    x = torch.randn(5, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FrEIA warns about unequal sections
        theirs = freia.Split([shape], **kwargs)
    ours = Split([shape], **kwargs)
    (our_pieces, our_log_det), (their_pieces, their_log_det) = ours((x,)), theirs([x])
    # Compared with FrEIA's real shapes: its output_dims fails for an int section_sizes.
    assert ours.output_dims([shape]) == [tuple(piece.shape[1:]) for piece in their_pieces]
    assert our_log_det == their_log_det == 0
    assert all(torch.equal(a, b) for a, b in zip(our_pieces, their_pieces, strict=True))

    dims = ours.output_dims([shape])
    concat_kwargs = {"dim": kwargs.get("dim", 0)}
    ours, theirs = Concat(dims, **concat_kwargs), freia.Concat(dims, **concat_kwargs)
    assert ours.output_dims(dims) == [tuple(d) for d in theirs.output_dims(dims)]
    ((z,), _), ((their_z,), _) = ours(our_pieces), theirs(list(our_pieces))
    assert torch.equal(z, their_z)
    back, their_back = ours((z,), rev=True)[0], theirs([z], rev=True)[0]
    assert all(torch.equal(a, b) for a, b in zip(back, their_back, strict=True))
