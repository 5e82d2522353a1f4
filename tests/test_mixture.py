"""LatentMixture: class-conditional Gaussians in latent space, Bayes classifier, IB and GIN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.errors import InvGraphError
from invgraph.mixture import LatentMixture


def _subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 32), nn.ReLU(), nn.Linear(32, c_out))


def _flow(dims: int = 4, blocks: int = 2) -> ig.SequenceINN:
    inn = ig.SequenceINN(dims)
    for k in range(blocks):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=_subnet)
        inn.append(ig.PermuteRandom, seed=k)
    return inn


def _model(learn_scales: bool = True, n_classes: int = 3) -> LatentMixture:
    torch.manual_seed(0)
    model = LatentMixture(_flow(), n_classes, learn_scales=learn_scales, init_spread=3.0)
    with torch.no_grad():  # away from the initial values
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_means_start_equidistant():
    model = LatentMixture(_flow(8), 4, init_spread=2.5)
    distances = torch.cdist(model.means, model.means)
    off_diagonal = distances[~torch.eye(4, dtype=torch.bool)]
    torch.testing.assert_close(off_diagonal, torch.full_like(off_diagonal, 2.5))
    assert LatentMixture(_flow(2), 5).means.shape == (5, 2)  # fewer dims than classes


@pytest.mark.parametrize("learn_scales", [True, False])
def test_log_prob_is_gaussian_plus_log_det_by_hand(learn_scales):
    model = _model(learn_scales)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    z, log_det = model.inn(x)
    mu, sigma = model.means[y], model.log_scales[y].exp()
    expected = (
        torch.distributions.Normal(mu, sigma).log_prob(z).sum(1) + log_det
    )  # torch's own normal, not our formula
    torch.testing.assert_close(model.log_prob(x, y), expected)
    assert isinstance(model.log_scales, nn.Parameter) == learn_scales
    assert "log_scales" in model.state_dict()


def test_posterior_is_bayes_rule_and_sums_to_one():
    model = _model()
    x = torch.randn(7, 4)
    for prior in (None, torch.tensor([0.2, 0.3, 0.5])):
        log_posterior = model.class_log_posterior(x, prior)
        torch.testing.assert_close(log_posterior.exp().sum(1), torch.ones(7))
        log_prior = torch.full((3,), -math.log(3)) if prior is None else prior.log()
        joint = model.class_log_likelihoods(x) + log_prior
        torch.testing.assert_close(
            log_posterior, joint - model.marginal_log_prob(x, prior)[:, None]
        )
    skewed = torch.tensor([0.0, 0.0, 1.0])
    assert (model.classify(x, skewed) == 2).all()


def test_losses_by_hand():
    model = _model()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(model.gin_loss(x, y), -model.log_prob(x, y).mean())
    loss_x = -model.marginal_log_prob(x).mean() / 4
    loss_y = -model.class_log_posterior(x).gather(1, y[:, None]).mean()
    torch.testing.assert_close(model.ib_loss(x, y, beta=0.7), loss_x + 0.7 * loss_y)
    torch.manual_seed(1)
    noisy = model.ib_loss(x, y, beta=0.7, noise_std=0.1)
    assert not torch.allclose(noisy, loss_x + 0.7 * loss_y)


def test_gradients_reach_means_scales_and_network():
    model = _model()
    model.ib_loss(torch.randn(8, 4), torch.randint(0, 3, (8,)), beta=1.0).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sample_shapes_and_temperature_zero_is_the_mean():
    model = _model()
    with torch.no_grad():
        assert model.sample(5, 1).shape == (5, 4)
        labels = torch.tensor([0, 2, 1])
        modes = model.sample(3, labels, temperature=0.0)
        expected, _ = model.inn(model.means[labels], rev=True)
        torch.testing.assert_close(modes, expected)
        # Samples of class k map back to latents distributed as N(mu_k, sigma_k^2).
        z, _ = model.inn(model.sample(4000, 2, temperature=0.5))
    torch.testing.assert_close(z.mean(0), model.means[2], atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), 0.5 * model.log_scales[2].exp(), atol=0.05, rtol=0)


def test_classifies_separable_data_after_short_training():
    torch.manual_seed(0)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    y = torch.randint(0, 3, (300,))
    x = centers[y] + 0.5 * torch.randn(300, 2)
    model = LatentMixture(_flow(2, blocks=1), 3, init_spread=2.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        loss = model.ib_loss(x, y, beta=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x_test = centers[y] + 0.5 * torch.randn(300, 2)
    with torch.no_grad():
        accuracy = (model.classify(x_test) == y).float().mean()
    assert accuracy > 0.95


def test_gin_training_learns_class_scales():
    torch.manual_seed(0)
    y = torch.randint(0, 2, (512,))
    scales = torch.tensor([[0.3, 0.3], [2.0, 2.0]])
    x = scales[y] * torch.randn(512, 2) + torch.tensor([[1.0, 1.0], [-1.0, -1.0]])[y]
    inn = ig.SequenceINN(2)
    inn.append(ig.PermuteRandom, seed=0)  # log-det zero: the mixture alone fits the data
    model = LatentMixture(inn, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)
    for _ in range(300):
        loss = model.gin_loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fitted = model.log_scales.detach().exp().mean(1)
    torch.testing.assert_close(fitted, torch.tensor([0.3, 2.0]), rtol=0.15, atol=0)


def test_meta_device():
    with torch.device("meta"):
        model = LatentMixture(_flow(), 3)
        x, y = torch.randn(4, 4), torch.tensor([0, 1, 2, 0])
        assert model.means.device.type == "meta"
        assert model.log_prob(x, y).shape == (4,)
        assert model.class_log_posterior(x).shape == (4, 3)
        assert model.ib_loss(x, y, beta=1.0, noise_std=0.1).shape == ()
        assert model.sample(2, 1).shape == (2, 4)


def test_save_load_round_trip(tmp_path):
    model = _model()
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded.class_log_likelihoods(x), model.class_log_likelihoods(x))


def test_errors_name_shapes():
    x = ig.InputNode(4, name="x")
    split = ig.Node(x, ig.Split, {}, name="split")
    graph = ig.GraphINN([x, split, ig.OutputNode(split.out0), ig.OutputNode(split.out1)])
    with pytest.raises(InvGraphError, match="one output"):
        LatentMixture(graph, 3)
    with pytest.raises(InvGraphError, match=r"\(batch, 4\), got \(2, 5\)"):
        _model().log_prob(torch.randn(2, 5), torch.tensor([0, 1]))
