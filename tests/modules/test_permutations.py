"""PermuteRandom: buffers, seeding without global side effects, values, FrEIA parity."""

import numpy as np
import pytest
import torch

from invgraph.errors import InvGraphError
from invgraph.modules import PermuteRandom


def test_permutation_and_inverse_are_buffers_not_parameters():
    permute = PermuteRandom([(6, 2)], seed=0)
    assert list(permute.parameters()) == []
    assert set(dict(permute.named_buffers())) == {"perm", "perm_inv"}
    assert set(permute.state_dict()) == {"perm", "perm_inv"}
    assert permute.perm.dtype == permute.perm_inv.dtype == torch.long
    assert torch.equal(permute.perm[permute.perm_inv], torch.arange(6))
    assert torch.equal(permute.perm.sort().values, torch.arange(6))
    permute.double()  # a dtype change leaves the index buffers alone
    assert permute.perm.dtype == torch.long


def test_permutes_dim_one_of_the_batch_tensor_both_ways(device, dtype):
    permute = PermuteRandom([(5, 3, 2)], seed=3).to(device)
    x = torch.randn(4, 5, 3, 2, device=device, dtype=dtype)
    (z,), log_det = permute((x,))
    assert log_det == 0.0
    for i, source in enumerate(permute.perm.tolist()):
        assert torch.equal(z[:, i], x[:, source])
    (back,), log_det = permute((z,), rev=True)
    assert log_det == 0.0
    assert torch.equal(back, x)


def test_seed_gives_a_reproducible_permutation():
    perms = [PermuteRandom([(32,)], seed=seed).perm for seed in (7, 7, 8)]
    assert torch.equal(perms[0], perms[1])
    assert not torch.equal(perms[0], perms[2])


def test_seed_leaves_the_global_random_states_alone():
    # FrEIA defect 12: PermuteRandom(seed=...) reseeds NumPy's global RNG.
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    PermuteRandom([(16,)], seed=1)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_no_seed_draws_from_torchs_global_generator():
    numpy_state = np.random.get_state()
    torch.manual_seed(123)
    first = PermuteRandom([(32,)]).perm
    torch.manual_seed(123)
    assert torch.equal(PermuteRandom([(32,)]).perm, first)
    assert not torch.equal(PermuteRandom([(32,)]).perm, first)  # the global state moved on
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])


def test_buffers_follow_the_device_context():
    with torch.device("meta"):
        permute = PermuteRandom([(4,)], seed=0)
    assert permute.perm.device.type == permute.perm_inv.device.type == "meta"
    (z,), _ = permute((torch.empty(2, 4, device="meta"),))
    assert z.shape == (2, 4)


@pytest.mark.parametrize("dims_in", [[(4,), (4,)], [()]])
def test_rejects_anything_but_one_input_with_channels(dims_in):
    with pytest.raises(InvGraphError, match=r"PermuteRandom: expects exactly 1 input"):
        PermuteRandom(dims_in)


def test_loads_a_freia_state_dict_and_matches_freia():
    freia = pytest.importorskip("FrEIA.modules")
    numpy_state = np.random.get_state()
    try:
        theirs = freia.PermuteRandom([(6, 2)], seed=5)
    finally:
        np.random.set_state(numpy_state)  # FrEIA reseeds NumPy's global RNG
    ours = PermuteRandom([(6, 2)])
    ours.load_state_dict(theirs.state_dict())  # same keys: perm, perm_inv
    x = torch.randn(3, 6, 2)
    assert torch.equal(ours((x,))[0][0], theirs([x])[0][0])
    assert torch.equal(ours((x,), rev=True)[0][0], theirs([x], rev=True)[0][0])
