"""Flatten, Reshape, Haar and i-RevNet squeezes: known values, orders, errors, FrEIA parity."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from invgraph.errors import InvGraphError
from invgraph.modules import (
    Flatten,
    HaarDownsampling,
    HaarUpsampling,
    IRevNetDownsampling,
    IRevNetUpsampling,
    Reshape,
)


@pytest.fixture
def freia():
    return pytest.importorskip("FrEIA.modules")


def assert_same_as_freia(ours, theirs, x):
    """Same outputs and log-dets as the FrEIA block, forward and reverse."""
    (z,), log_det = ours((x,))
    (their_z,), their_log_det = theirs([x.clone()])
    torch.testing.assert_close(z, their_z, rtol=1e-6, atol=1e-6)
    assert log_det == pytest.approx(float(their_log_det), rel=1e-12, abs=1e-12)
    # FrEIA's Haar reverse scales its input in place (defect 4): give it a copy.
    (back,), log_det = ours((z,), rev=True)
    (their_back,), their_log_det = theirs([z.clone()], rev=True)
    torch.testing.assert_close(back, their_back, rtol=1e-6, atol=1e-6)
    assert log_det == pytest.approx(float(their_log_det), rel=1e-12, abs=1e-12)
    assert ours.output_dims(ours.dims_in) == [tuple(d) for d in theirs.output_dims(ours.dims_in)]


IMAGE = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # one channel, one 2x2 patch [[a, b], [c, d]]


# Flatten and Reshape


def test_flatten_is_row_major(device, dtype):
    x = torch.randn(3, 2, 4, 5, device=device, dtype=dtype)
    (z,), log_det = Flatten([(2, 4, 5)])((x,))
    assert log_det == 0.0
    assert torch.equal(z, x.reshape(3, 40))
    assert Flatten([(2, 4, 5)]).output_dims([(2, 4, 5)]) == [(40,)]


def test_flatten_needs_one_input():
    with pytest.raises(InvGraphError, match=r"Flatten: expects exactly 1 input .*\(2, 3\), \(4,\)"):
        Flatten([(2, 3), (4,)])


def test_reshape_is_row_major(device, dtype):
    x = torch.randn(3, 2, 4, 5, device=device, dtype=dtype)
    (z,), log_det = Reshape([(2, 4, 5)], output_dims=(8, 5))((x,))
    assert log_det == 0.0
    assert torch.equal(z, x.reshape(3, 8, 5))


def test_reshape_accepts_freias_old_name_target_dim():
    with pytest.warns(FutureWarning, match="'target_dim' is the old name of 'output_dims'"):
        reshape = Reshape([(2, 4, 5)], target_dim=(40,))
    assert reshape.output_dims([(2, 4, 5)]) == [(40,)]
    with pytest.warns(FutureWarning):  # the same shape under both names is fine
        Reshape([(2, 4, 5)], output_dims=(40,), target_dim=[40])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"Reshape: needs output_dims"),
        (
            {"output_dims": (3, 13)},
            r"cannot reshape input shape \(2, 4, 5\) \(40 elements\) to output_dims=\(3, 13\) "
            r"\(39 elements\)",
        ),
        ({"target_dim": (41,)}, r"\(40 elements\) to output_dims=\(41,\) \(41 elements\)"),
        ({"output_dims": (-1, -40)}, r"output_dims=\(-1, -40\) must be a non-empty shape"),
        ({"output_dims": ()}, r"must be a non-empty shape of positive sizes"),
        ({"output_dims": (40,), "target_dim": (8, 5)}, r"received output_dims=\(40,\) and"),
    ],
)
def test_reshape_rejects_bad_output_dims(kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # about target_dim, tested above
        with pytest.raises(InvGraphError, match=match):
            Reshape([(2, 4, 5)], **kwargs)


def test_flatten_and_reshape_match_freia(freia):
    x = torch.randn(4, 2, 4, 6)
    assert_same_as_freia(Flatten([(2, 4, 6)]), freia.Flatten([(2, 4, 6)]), x)
    assert_same_as_freia(
        Reshape([(2, 4, 6)], output_dims=(6, 8)),
        freia.Reshape([(2, 4, 6)], output_dims=(6, 8)),
        x,
    )


# Haar wavelets


@pytest.mark.parametrize("rebalance", [1.0, 0.5, -2.0])
def test_haar_of_a_hand_computed_patch(rebalance, device, dtype):
    image = IMAGE.to(device, dtype)
    haar = HaarDownsampling([(1, 2, 2)], rebalance=rebalance)
    (z,), log_det = haar((image,))
    # average (a+b+c+d), vertical (a-b+c-d), horizontal (a+b-c-d), diagonal (a-b-c+d), * r/2
    expected = torch.tensor([10.0, -2.0, -4.0, 0.0], device=device, dtype=dtype) * rebalance / 2
    assert torch.equal(z.flatten(), expected)
    assert log_det == pytest.approx(4 * math.log(abs(rebalance)))
    (x,), inverse_log_det = haar((z,), rev=True)
    assert torch.equal(x, image)
    assert inverse_log_det == -log_det


def test_haar_log_det_counts_every_element():
    haar = HaarDownsampling([(3, 4, 6)], rebalance=0.5)
    assert haar((torch.randn(2, 3, 4, 6),))[1] == pytest.approx(72 * math.log(0.5))
    assert HaarDownsampling([(3, 4, 6)])((torch.randn(2, 3, 4, 6),))[1] == 0.0


def test_haar_order_by_wavelet_groups_channels_by_wavelet(device, dtype):
    x = torch.randn(2, 3, 4, 6, device=device, dtype=dtype)
    (by_channel,), _ = HaarDownsampling([(3, 4, 6)])((x,))
    (by_wavelet,), _ = HaarDownsampling([(3, 4, 6)], order_by_wavelet=True)((x,))
    for channel in range(3):
        for wavelet in range(4):
            assert torch.equal(
                by_wavelet[:, 3 * wavelet + channel], by_channel[:, 4 * channel + wavelet]
            )
    # the first quarter of the channels are the averages: a 2x2 mean pool, times 2
    torch.testing.assert_close(by_wavelet[:, :3], 2 * F.avg_pool2d(x, 2))


@pytest.mark.parametrize("order_by_wavelet", [False, True])
def test_haar_upsampling_inverts_downsampling(order_by_wavelet, device, dtype):
    kwargs = {"order_by_wavelet": order_by_wavelet, "rebalance": 0.7}
    down = HaarDownsampling([(3, 4, 6)], **kwargs)
    up = HaarUpsampling(down.output_dims(down.dims_in), **kwargs)
    assert up.output_dims(up.dims_in) == [(3, 4, 6)]
    x = torch.randn(2, 3, 4, 6, device=device, dtype=dtype)
    (z,), log_det = down((x,))
    (back,), up_log_det = up((z,))
    torch.testing.assert_close(back, x)
    assert up_log_det == pytest.approx(-log_det)
    assert torch.equal(up((x,), rev=True)[0][0], down((x,))[0][0])


def test_haar_does_not_modify_its_input_unlike_freia(freia):
    z = torch.randn(2, 8, 2, 3)
    z_before = z.clone()
    HaarDownsampling([(2, 4, 6)])((z,), rev=True)
    HaarUpsampling([(8, 2, 3)])((z,))
    assert torch.equal(z, z_before)
    # FrEIA defect 4, kept as evidence: its reverse pass multiplies the caller's tensor.
    freia.HaarDownsampling([(2, 4, 6)])([z], rev=True)
    assert not torch.equal(z, z_before)


@pytest.mark.parametrize(
    ("block", "dims_in", "kwargs", "match"),
    [
        (HaarDownsampling, [(3, 5, 4)], {}, r"height and width must be even, .*\(3, 5, 4\)"),
        (HaarDownsampling, [(3, 4, 5)], {}, r"height and width must be even"),
        (HaarDownsampling, [(3, 4)], {}, r"input of shape \(C, H, W\), received shapes \[\(3, 4\)"),
        (HaarDownsampling, [(3, 4, 4)], {"rebalance": 0}, r"rebalance must be finite and nonzero"),
        (HaarDownsampling, [(3, 4, 4)], {"rebalance": math.inf}, r"rebalance must be finite"),
        (HaarUpsampling, [(6, 4, 4)], {}, r"HaarUpsampling: the channel count must be divisible"),
        (HaarUpsampling, [(4, 4, 4)], {"rebalance": 0.0}, r"HaarUpsampling: rebalance must be"),
        (IRevNetDownsampling, [(1, 2, 3)], {}, r"IRevNetDownsampling: height and width must be"),
        (IRevNetUpsampling, [(2, 2, 2)], {}, r"IRevNetUpsampling: the channel count"),
        (IRevNetUpsampling, [(4, 2, 2), (4, 2, 2)], {}, r"expects exactly 1 input of shape"),
    ],
)
def test_squeezes_reject_bad_shapes_and_hyperparameters(block, dims_in, kwargs, match):
    with pytest.raises(InvGraphError, match=match):
        block(dims_in, **kwargs)


@pytest.mark.parametrize("order_by_wavelet", [False, True])
@pytest.mark.parametrize("rebalance", [1.0, 0.5, 3.0])
def test_haar_matches_freia(freia, order_by_wavelet, rebalance):
    kwargs = {"order_by_wavelet": order_by_wavelet, "rebalance": rebalance}
    x = torch.randn(4, 3, 4, 6)
    ours, theirs = (
        HaarDownsampling([(3, 4, 6)], **kwargs),
        freia.HaarDownsampling([(3, 4, 6)], **kwargs),
    )
    assert_same_as_freia(ours, theirs, x)
    z = torch.randn(4, 12, 2, 3)
    ours, theirs = (
        HaarUpsampling([(12, 2, 3)], **kwargs),
        freia.HaarUpsampling([(12, 2, 3)], **kwargs),
    )
    assert_same_as_freia(ours, theirs, z)


# i-RevNet squeeze


def test_irevnet_moves_pixels_row_by_row(device, dtype):
    (z,), log_det = IRevNetDownsampling([(1, 2, 2)])((IMAGE.to(device, dtype),))
    assert z.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert log_det == 0.0
    x = torch.randn(2, 3, 4, 6, device=device, dtype=dtype)
    assert torch.equal(IRevNetDownsampling([(3, 4, 6)])((x,))[0][0], F.pixel_unshuffle(x, 2))
    z = torch.randn(2, 12, 2, 3, device=device, dtype=dtype)
    assert torch.equal(IRevNetUpsampling([(12, 2, 3)])((z,))[0][0], F.pixel_shuffle(z, 2))


def test_irevnet_legacy_backend_groups_channels_by_patch_position(device, dtype):
    x = torch.arange(8.0, device=device, dtype=dtype).reshape(
        1, 2, 2, 2
    )  # channel 0: 0 1 2 3, channel 1: 4 5 6 7
    (default,), _ = IRevNetDownsampling([(2, 2, 2)])((x,))
    (legacy,), _ = IRevNetDownsampling([(2, 2, 2)], legacy_backend=True)((x,))
    assert default.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert legacy.flatten().tolist() == [0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]
    (back,), _ = IRevNetUpsampling([(8, 1, 1)], legacy_backend=True)((legacy,))
    assert torch.equal(back, x)


@pytest.mark.parametrize("legacy_backend", [False, True])
def test_irevnet_matches_freia(freia, legacy_backend):
    kwargs = {"legacy_backend": legacy_backend}
    x = torch.randn(4, 3, 4, 6)
    ours, theirs = (
        IRevNetDownsampling([(3, 4, 6)], **kwargs),
        freia.IRevNetDownsampling([(3, 4, 6)], **kwargs),
    )
    assert_same_as_freia(ours, theirs, x)
    z = torch.randn(4, 12, 2, 3)
    ours, theirs = (
        IRevNetUpsampling([(12, 2, 3)], **kwargs),
        freia.IRevNetUpsampling([(12, 2, 3)], **kwargs),
    )
    assert_same_as_freia(ours, theirs, z)
