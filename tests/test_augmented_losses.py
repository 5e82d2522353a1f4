"""The augmented-latent INN losses of Ardizzone et al. (ICLR 2019) against direct formulas."""

from __future__ import annotations

import pytest
import torch

from invgraph.errors import InvGraphError
from invgraph.losses import (
    AugmentedBackwardLoss,
    AugmentedForwardLoss,
    augmented_backward_loss,
    augmented_forward_loss,
    mmd,
    zero_padding,
)


def test_forward_terms_match_direct_computations():
    torch.manual_seed(0)
    outputs, y, z_samples = torch.randn(32, 7), torch.randn(32, 2), torch.randn(32, 3)
    loss = augmented_forward_loss(outputs, y, z_dims=3, z_samples=z_samples, widths=(0.5, 1.0))
    assert isinstance(loss, AugmentedForwardLoss)
    y_hat, z, padding = outputs[:, :2], outputs[:, 2:5], outputs[:, 5:]
    assert torch.allclose(loss.y, ((y_hat - y) ** 2).sum(1).mean() / 2)
    expected = mmd(torch.cat([y_hat, z], 1), torch.cat([y, z_samples], 1), widths=(0.5, 1.0))
    assert torch.allclose(loss.z, expected)
    assert torch.allclose(loss.padding, (padding**2).sum() / padding.numel())


def test_forward_without_padding_and_with_the_biased_estimator():
    outputs, y = torch.randn(16, 4), torch.randn(16, 1)
    z_samples = torch.randn(16, 3)
    loss = augmented_forward_loss(outputs, y, z_dims=3, z_samples=z_samples, estimator="biased")
    assert loss.padding == 0.0
    expected = mmd(outputs, torch.cat([y, z_samples], 1), estimator="biased")
    assert torch.allclose(loss.z, expected)


def test_forward_latent_gradient_is_blocked_towards_y():
    outputs = torch.randn(32, 6, requires_grad=True)
    loss = augmented_forward_loss(outputs, torch.randn(32, 2), z_dims=3)
    (grad_z,) = torch.autograd.grad(loss.z, outputs)
    assert (grad_z[:, :2] == 0).all() and (grad_z[:, 2:5] != 0).any() and (grad_z[:, 5:] == 0).all()
    (grad_y,) = torch.autograd.grad(loss.y, outputs)
    assert (grad_y[:, :2] != 0).all() and (grad_y[:, 2:] == 0).all()
    (grad_pad,) = torch.autograd.grad(loss.padding, outputs)
    assert (grad_pad[:, 5:] != 0).all() and (grad_pad[:, :5] == 0).all()


def test_forward_latent_term_detects_dependence_on_y():
    """Normal latents that copy y have the right marginal but the wrong joint."""
    torch.manual_seed(1)
    y = torch.randn(400, 1)
    independent = augmented_forward_loss(torch.cat([y, torch.randn(400, 1)], 1), y, z_dims=1)
    copied = augmented_forward_loss(torch.cat([y, y], 1), y, z_dims=1)
    assert independent.y == 0 and copied.y == 0
    assert copied.z > 0.02 > independent.z.abs() * 2


def test_backward_terms_match_direct_computations():
    torch.manual_seed(2)
    x_rec, x = torch.randn(20, 5), torch.randn(30, 3)
    loss = augmented_backward_loss(x_rec, x, kernel="gaussian", widths=(1.0,))
    assert isinstance(loss, AugmentedBackwardLoss)
    assert torch.allclose(loss.x, mmd(x_rec[:, :3], x, kernel="gaussian", widths=(1.0,)))
    assert torch.allclose(loss.padding, (x_rec[:, 3:] ** 2).mean())
    same = augmented_backward_loss(zero_padding(x, 5), x, estimator="biased")
    assert same.x == 0 and same.padding == 0


def test_backward_shifted_samples_cost_more():
    torch.manual_seed(3)
    x = torch.randn(300, 2)
    good = augmented_backward_loss(torch.randn(300, 2), x).x
    shifted = augmented_backward_loss(torch.randn(300, 2) + 1.0, x).x
    assert shifted > 10 * good.abs()


def test_meta_device():
    outputs = torch.empty(8, 6, device="meta")
    loss = augmented_forward_loss(outputs, torch.empty(8, 2, device="meta"), z_dims=2)
    assert loss.z.device.type == loss.padding.device.type == "meta"
    back = augmented_backward_loss(outputs, torch.empty(8, 4, device="meta"))
    assert back.x.shape == back.padding.shape == ()


@pytest.mark.parametrize(
    ("outputs", "y", "z_dims", "z_samples", "message"),
    [
        (torch.randn(8, 4), torch.randn(7, 2), 2, None, "expected y of shape"),
        (torch.randn(8, 4), torch.randn(8, 2), 3, None, "D >= d_y \\+ z_dims"),
        (torch.randn(8, 4), torch.randn(8, 2), 0, None, "z_dims >= 1"),
        (torch.randn(8, 4), torch.randn(8, 2), 2, torch.randn(9, 2), "z_samples must have"),
    ],
)
def test_forward_refuses_bad_shapes(outputs, y, z_dims, z_samples, message):
    with pytest.raises(InvGraphError, match=message):
        augmented_forward_loss(outputs, y, z_dims=z_dims, z_samples=z_samples)


def test_backward_refuses_bad_shapes():
    with pytest.raises(InvGraphError, match="x_rec of shape"):
        augmented_backward_loss(torch.randn(8, 2), torch.randn(8, 3))
    with pytest.raises(InvGraphError, match="expected x of shape"):
        augmented_backward_loss(torch.randn(8, 2), torch.randn(8))
