"""multiscale_flow: the RealNVP / Glow multiscale graph builder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import invgraph as ig
from invgraph.architectures import multiscale_flow
from invgraph.testing import check_block


def conv(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, c_out, 1))


@pytest.mark.parametrize("downsampling", ["haar", "irevnet"])
@pytest.mark.parametrize("permutation", ["random", "conv1x1"])
def test_output_shapes_dims_and_check_block(downsampling, permutation):
    nodes = multiscale_flow(
        (1, 8, 8), 3, 1, conv, downsampling=downsampling, permutation=permutation
    )
    inn = ig.GraphINN(nodes)
    # Level 1: 4x4x4 -> 2 out; level 2: 8x2x2 -> 4 out; level 3: 16x1x1 is the last.
    expected = [(2, 4, 4), (4, 2, 2), (16, 1, 1)]
    assert [tuple(s) for s in inn.output_dims(inn.dims_in)] == expected
    assert sum(math.prod(s) for s in expected) == 1 * 8 * 8
    assert [n.name for n in inn.out_nodes] == ["z1", "z2", "z3"]
    (z1, z2, z3), log_det = inn(torch.randn(3, 1, 8, 8))
    assert (z1.shape, z2.shape, z3.shape) == ((3, 2, 4, 4), (3, 4, 2, 2), (3, 16, 1, 1))
    assert log_det.shape == (3,)
    kinds = {type(m).__name__ for m in inn.module_list}
    assert {"HaarDownsampling" if downsampling == "haar" else "IRevNetDownsampling"} <= kinds
    assert ("PermuteRandom" if permutation == "random" else "InvertibleConv1x1") in kinds
    options = {"downsampling": downsampling, "permutation": permutation}
    tiny = ig.GraphINN(multiscale_flow((1, 4, 4), 2, 1, conv, **options))
    check_block(tiny).assert_ok()  # float64, weights perturbed; 16 dims keep it fast


def test_split_fraction_and_coupling_args():
    nodes = multiscale_flow(
        (1, 4, 4), 2, 2, conv, split_fraction=0.25, coupling_args={"clamp": 1.0}, prefix="a_"
    )
    inn = ig.GraphINN(nodes)
    assert [tuple(s) for s in inn.output_dims(inn.dims_in)] == [(1, 2, 2), (12, 1, 1)]
    couplings = [n for n in nodes if n.name.startswith("a_level") and "coupling" in n.name]
    assert len(couplings) == 4 and all(n.module.clamp == 1.0 for n in couplings)
    assert all(n.name.startswith("a_") for n in nodes)


def test_conditions_reach_every_coupling():
    nodes = multiscale_flow((1, 4, 4), 2, 2, conv, condition_dims=(5,), coupling=ig.AllInOneBlock)
    inn = ig.GraphINN(nodes)
    (condition,) = inn.condition_nodes
    couplings = [n for n in nodes if isinstance(n.module, ig.AllInOneBlock)]
    assert len(couplings) == 4
    assert all(n.conditions == [(condition, 0)] for n in couplings)
    check_block(inn).assert_ok()
    seen = []
    for n in couplings:
        n.module.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(kwargs.get("c", args[1:2])), with_kwargs=True
        )
    x, c = torch.randn(3, 1, 4, 4), torch.randn(3, 5)
    z, _ = inn(x, c=c)
    assert len(seen) == 4 and all(torch.equal(got[0], c) for got in seen)
    z_other, _ = inn(x, c=c + 1)
    assert all(not torch.allclose(a, b) for a, b in zip(z, z_other))  # every level reads c


def test_samples_with_a_temperature_per_level():
    inn = ig.GraphINN(multiscale_flow((1, 4, 4), 2, 1, conv))
    density = ig.distributions.FlowDensity(inn)
    x = density.sample(6, temperature=[0.0, 0.0])
    (z1, z2), _ = inn(x)
    assert x.shape == (6, 1, 4, 4)
    assert z1.abs().max() < 1e-5 and z2.abs().max() < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_dims": (1, 6, 6), "levels": 2}, "divisible by 4"),
        ({"input_dims": (16,)}, r"image shape \(C, H, W\)"),
        ({"levels": 0}, "levels >= 1"),
        ({"downsampling": "bilinear"}, "downsampling must be one of"),
        ({"permutation": "reverse"}, "permutation must be one of"),
        ({"split_fraction": 1.0}, r"split_fraction must be in \(0, 1\)"),
        ({"split_fraction": 0.1}, "leaves no channel"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    arguments = {"input_dims": (1, 8, 8), "levels": 2, "blocks_per_level": 1}
    with pytest.raises(ig.InvGraphError, match=match):
        multiscale_flow(subnet_constructor=conv, **{**arguments, **kwargs})
