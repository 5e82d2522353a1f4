"""GaussianMixtureModel: the map, its modes, the helpers, shapes, graphs, FrEIA parity."""

import math

import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from invgraph.errors import InvGraphError
from invgraph.framework import ConditionNode, GraphINN, InputNode, Node, OutputNode
from invgraph.modules.gaussian_mixture import GaussianMixtureModel as GMM
from invgraph.testing import check_block


def _parameters(batch=3, k=4, d=3, dtype=torch.float32, seed=0):
    """Weights, means and Cholesky entries of a random mixture, and one index per sample."""
    g = torch.Generator().manual_seed(seed)
    w = GMM.normalize_weights(torch.randn(batch, k, generator=g, dtype=dtype))
    mu = torch.randn(batch, k, d, generator=g, dtype=dtype)
    entries = 0.5 * torch.randn(batch, k, d * (d + 1) // 2, generator=g, dtype=dtype)
    index = torch.randint(k, (batch,), generator=g)
    return w, mu, entries, index


def _upper(entries: torch.Tensor, d: int) -> torch.Tensor:
    """U from its entries, the slow and obvious way: exp'd diagonal, upper triangle by rows."""
    u = torch.zeros(*entries.shape[:-1], d, d, dtype=entries.dtype)
    position = d
    for row in range(d):
        u[..., row, row] = entries[..., row].exp()
        for col in range(row + 1, d):
            u[..., row, col] = entries[..., position]
            position += 1
    return u


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("index_shape", ["(B,)", "(B, 1)"])
def test_check_block_with_one_component_per_sample(d, index_shape):
    w, mu, entries, index = _parameters(d=d, dtype=torch.float64)
    index = index[:, None] if index_shape == "(B, 1)" else index
    check_block(GMM([(d,)]), conditions=(w, mu, entries, index)).assert_ok()
    dims_c = [(4,), (4, d), (4, d * (d + 1) // 2), (1,)]
    check_block(GMM([(d,)], dims_c), conditions=(w, mu, entries, index)).assert_ok()


def test_maps_x_to_the_standard_normal_coordinates_of_its_component():
    w, mu, entries, index = _parameters(d=3, dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64)
    (z,), log_det = GMM([(3,)])((x,), c=(w, mu, entries, index))
    u = _upper(entries, 3)[torch.arange(3), index]
    expected = (u @ (x - mu[torch.arange(3), index])[..., None])[..., 0]
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(log_det, torch.linalg.det(u).log())
    assert torch.equal(torch.triu(u), u) and (torch.diagonal(u, dim1=-2, dim2=-1) > 0).all()


def test_all_components_is_every_single_component_stacked():
    w, mu, entries, _ = _parameters(k=4, d=3, dtype=torch.float64)
    gmm, x = GMM([(3,)]), torch.randn(3, 3, dtype=torch.float64)
    (z_all,), log_dets = gmm((x,), c=(w, mu, entries))  # i left out: None
    assert z_all.shape == (3, 4, 3) and log_dets.shape == (3, 4)
    for k in range(4):
        index = torch.full((3,), k)
        (z_k,), log_det_k = gmm((x,), c=(w, mu, entries, index))
        torch.testing.assert_close(z_all[:, k], z_k)
        torch.testing.assert_close(log_dets[:, k], log_det_k)  # exact: check_block above
    # K points at once give the same, and the inverse of (B, K, d) or (B, d) latents
    (z_again,), _ = gmm((x[:, None].expand(3, 4, 3),), c=(w, mu, entries, None))
    torch.testing.assert_close(z_again, z_all)
    (x_back,), inverse = gmm((z_all,), c=(w, mu, entries, None), rev=True)
    torch.testing.assert_close(x_back, x[:, None].expand(3, 4, 3))
    torch.testing.assert_close(inverse, -log_dets)
    (samples,), _ = gmm((torch.zeros(3, 3, dtype=torch.float64),), c=(w, mu, entries), rev=True)
    torch.testing.assert_close(samples, mu)  # z = 0 is every component's mean


def test_nll_loss_is_the_mixture_density_up_to_the_gaussian_constant():
    w, mu, entries, _ = _parameters(k=3, d=2, dtype=torch.float64)
    x = torch.randn(3, 2, dtype=torch.float64)
    (z,), log_dets = GMM([(2,)])((x,), c=(w, mu, entries))
    u = _upper(entries, 2)
    mixture = MixtureSameFamily(
        Categorical(probs=w), MultivariateNormal(mu, precision_matrix=u.mT @ u)
    )
    nll = GMM.nll_loss(w, z, log_dets)
    torch.testing.assert_close(nll + math.log(2 * math.pi), -mixture.log_prob(x))


def test_nll_loss_stays_finite_where_the_direct_sum_underflows():
    w = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    z = torch.tensor([[[30.0, 0.0], [0.0, 40.0]], [[20.0, 0.0], [1.0, 0.0]]])
    log_jacobian = torch.tensor([[0.1, -0.2], [0.3, 5.0]], requires_grad=True)
    nll = GMM.nll_loss(w, z, log_jacobian)
    assert torch.isfinite(nll).all()
    # component 0 dominates sample 0; sample 1 has all its weight on component 0
    expected = torch.tensor([450.0 - 0.1 + math.log(2.0), 200.0 - 0.3])
    torch.testing.assert_close(nll, expected)
    nll.sum().backward()  # a zero weight gives zero gradient, not NaN
    assert torch.isfinite(log_jacobian.grad).all() and log_jacobian.grad[1, 1] == 0


def test_gradients_reach_every_mixture_parameter():
    logits = torch.randn(3, 4, requires_grad=True)
    _, mu, entries, _ = _parameters(k=4, d=3)
    mu.requires_grad_(True), entries.requires_grad_(True)
    w = GMM.normalize_weights(logits)
    (z,), log_dets = GMM([(3,)])((torch.randn(3, 3),), c=(w, mu, entries))
    GMM.nll_loss(w, z, log_dets).mean().backward()
    for tensor in (logits, mu, entries):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_normalize_weights_is_a_stable_softmax():
    w = GMM.normalize_weights(torch.tensor([[1e4, 1e4 - math.log(3.0)], [0.0, 0.0]]))
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.25], [0.5, 0.5]]))


def test_pick_mixture_component_draws_by_weight_reproducibly():
    w = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert GMM.pick_mixture_component(w).tolist() == [1, 2, 0]
    w = GMM.normalize_weights(torch.randn(1000, 3))
    state = torch.get_rng_state()
    first = GMM.pick_mixture_component(w, seed=3)
    assert torch.equal(first, GMM.pick_mixture_component(w, seed=3))
    assert not torch.equal(first, GMM.pick_mixture_component(w, seed=4))
    assert torch.equal(torch.get_rng_state(), state)  # a private generator
    assert first.dtype == torch.long and first.min() >= 0 and first.max() <= 2
    frequencies = torch.bincount(first, minlength=3) / 1000
    assert (frequencies - w.mean(0)).abs().max() < 0.06
    # total weight rounded below the uniform draw: the last component, never K
    assert GMM.pick_mixture_component(torch.zeros(4, 2)).tolist() == [1, 1, 1, 1]


def test_an_integer_index_is_a_seed_for_picking_components():
    w, mu, entries, _ = _parameters()
    gmm, x = GMM([(3,)]), torch.randn(3, 3)
    index = GMM.pick_mixture_component(w, seed=11)
    for rev in (False, True):
        (by_seed,), log_det = gmm((x,), c=(w, mu, entries, 11), rev=rev)
        (by_index,), expected = gmm((x,), c=(w, mu, entries, index), rev=rev)
        assert torch.equal(by_seed, by_index) and torch.equal(log_det, expected)


def test_jac_false_skips_the_log_det():
    w, mu, entries, index = _parameters()
    for c in ((w, mu, entries), (w, mu, entries, index)):
        (z,), log_det = GMM([(3,)])((torch.randn(3, 3),), c=c, jac=False)
        assert log_det is None
        (_,), log_det = GMM([(3,)])((z,), c=c, rev=True, jac=False)
        assert log_det is None


def test_runs_on_meta_with_every_component():
    w, mu, entries, _ = (t.to("meta") for t in _parameters())
    gmm = GMM([(3,)]).to("meta")
    (z,), log_dets = gmm((torch.empty(3, 3, device="meta"),), c=(w, mu, entries))
    (x,), _ = gmm((z,), c=(w, mu, entries), rev=True)
    assert z.shape == x.shape == (3, 4, 3) and log_dets.shape == (3, 4)
    assert z.is_meta and x.is_meta and log_dets.is_meta


def test_no_state_to_save_and_the_layout_follows_the_module():
    gmm = GMM([(3,)])
    assert gmm.state_dict() == {} and list(gmm.parameters()) == []
    assert gmm.double()._layout.dtype == torch.long  # index buffer, not a float
    with torch.device("meta"):
        assert GMM([(2,)])._layout.is_meta


def test_fixed_components_inside_a_graph_with_condition_nodes():
    w, mu, entries, index = _parameters(d=2)
    x = InputNode(2, name="x")
    conditions = [ConditionNode(4), ConditionNode(4, 2), ConditionNode(4, 3), ConditionNode(1)]
    gmm = Node(x, GMM, conditions=conditions, name="gmm")
    inn = GraphINN([x, *conditions, gmm, OutputNode(gmm)])
    c = [w, mu, entries, index[:, None]]
    data = torch.randn(3, 2)
    z, log_det = inn(data, c=c)
    (expected,), expected_log_det = GMM([(2,)])((data,), c=(w, mu, entries, index))
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(log_det, expected_log_det)
    x_back, inverse = inn(z, c=c, rev=True)
    torch.testing.assert_close(x_back, data)
    torch.testing.assert_close(inverse, -log_det)


@pytest.mark.parametrize(
    ("dims_in", "dims_c", "match"),
    [
        ([(3,), (3,)], None, r"expects .* of shape \(d,\), received shapes \[\(3,\), \(3,\)\]"),
        ([(2, 3)], None, r"expects exactly 1 input of shape \(d,\), received shapes \[\(2, 3\)\]"),
        ([(3,)], [(4,), (4, 3), (4, 3)], r"for d=3, dims_c must be .*\(4, 6\)"),
        (
            [(3,)],
            [(4,), (4, 3), (4, 6), (2,)],
            r"for d=3, dims_c must .*received \[\(4,\), \(4, 3\), \(4, 6\), \(2,\)\]",
        ),
    ],
)
def test_rejects_bad_shapes_at_construction(dims_in, dims_c, match):
    with pytest.raises(InvGraphError, match=rf"GaussianMixtureModel: {match}"):
        GMM(dims_in, dims_c)


def test_rejects_bad_calls_naming_the_shapes():
    w, mu, entries, index = _parameters()
    gmm, x = GMM([(3,)]), torch.randn(3, 3)
    with pytest.raises(InvGraphError, match=r"received 1 input\(s\) and 2 condition"):
        gmm((x,), c=(w, mu))
    with pytest.raises(InvGraphError, match=r"'U_entries': \(3, 4, 6\).*'U_entries': \(3, 4, 5\)"):
        gmm((x,), c=(w, mu, entries[..., :5]))
    with pytest.raises(
        InvGraphError, match=r"expected input \(3, 3\) and .*received input \(3, 4, 3\)"
    ):
        gmm((x[:, None].expand(3, 4, 3),), c=(w, mu, entries, index))
    with pytest.raises(InvGraphError, match=r"'i': \(3,\)\}; received .*'i': \(2,\)"):
        gmm((x,), c=(w, mu, entries, index[:2]))
    with pytest.raises(InvGraphError, match=r"i must be integers, got torch\.float32"):
        gmm((x,), c=(w, mu, entries, index.float()))


# ------------------------------------------------------------------ FrEIA 0.2 parity
@pytest.mark.parametrize("mode", ["indices", "seed", "all"])
def test_matches_freia_forward_inverse_and_nll(mode):
    freia = pytest.importorskip("FrEIA.modules")
    theirs, ours = freia.GaussianMixtureModel([(3,)], []), GMM([(3,)], [])
    ours.load_state_dict(theirs.state_dict())  # both empty: strict loading works
    w, mu, entries, index = _parameters(batch=5, k=4, d=3, seed=1)
    i = {"indices": index, "seed": 7, "all": None}[mode]
    x = torch.randn(5, 3)
    (z_ours,), log_det_ours = ours((x,), c=(w, mu, entries, i))
    (z_theirs,), log_det_theirs = theirs([x], c=[w, mu, entries, i])
    torch.testing.assert_close(z_ours, z_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_det_ours, log_det_theirs, atol=1e-5, rtol=1e-5)
    (x_ours,), inverse_ours = ours((z_ours,), c=(w, mu, entries, i), rev=True)
    (x_theirs,), inverse_theirs = theirs([z_ours], c=[w, mu, entries, i], rev=True)
    torch.testing.assert_close(x_ours, x_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inverse_ours, inverse_theirs, atol=1e-5, rtol=1e-5)
    if mode == "all":
        torch.testing.assert_close(
            GMM.nll_loss(w, z_ours, log_det_ours),
            freia.GaussianMixtureModel.nll_loss(w, z_theirs, log_det_theirs),
        )


def test_helpers_match_freia():
    freia = pytest.importorskip("FrEIA.modules")
    logits = 3 * torch.randn(50, 5)
    w = GMM.normalize_weights(logits)
    torch.testing.assert_close(w, freia.GaussianMixtureModel.normalize_weights(logits))
    for seed in (0, 1, 2):
        theirs = freia.GaussianMixtureModel.pick_mixture_component(w, seed=seed)
        assert torch.equal(GMM.pick_mixture_component(w, seed=seed), theirs.long())


def test_freia_defect_float64_fails_there_and_works_here():
    freia = pytest.importorskip("FrEIA.modules")
    w, mu, entries, index = _parameters(dtype=torch.float64)
    x = torch.randn(3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="dtypes match"):  # U is built in float32
        freia.GaussianMixtureModel([(3,)], [])([x], c=[w, mu, entries, index])
    (z,), log_det = GMM([(3,)])((x,), c=(w, mu, entries, index))
    assert z.dtype == log_det.dtype == torch.float64


def test_freia_nll_underflows_where_ours_does_not():
    freia = pytest.importorskip("FrEIA.modules")
    w = torch.full((1, 2), 0.5)
    z, log_jacobian = torch.full((1, 2, 2), 15.0), torch.zeros(1, 2)  # exp(-225) is 0
    assert torch.isinf(freia.GaussianMixtureModel.nll_loss(w, z, log_jacobian)).all()
    torch.testing.assert_close(GMM.nll_loss(w, z, log_jacobian), torch.tensor([225.0]))
