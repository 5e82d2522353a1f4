"""Autoregressive and continuous flows: a MAF, an IAF, a flow-matching ODE and a mixed graph.

Run: ``python tutorials/autoregressive_flows.py`` (about a minute of CPU time, one thread).

Coupling blocks cost one pass of their subnetworks in both directions. Autoregressive blocks
transform each feature from all the features before it in an order: more expressive per
block, but one of their two directions takes one pass per feature. A continuous flow
integrates a learned vector field; flow matching trains it without solving the ODE. This
tutorial trains a masked autoregressive flow (MAF, cheap density), an inverse
autoregressive flow (IAF, cheap sampling) and a continuous flow on the same data, counts
the passes each direction takes, and builds one graph with a coupling stage followed by an
autoregressive stage. It ends with each model's test negative log-likelihood next to the
data's exact entropy.
"""

# %% [markdown]
# ## 1. Data
#
# Eight Gaussians on a circle (FFJORD's toy data), whose entropy is known exactly, so a
# model's test NLL minus the entropy is what the model misses, in nats.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import invgraph as ig
from invgraph.distributions import FlowDensity
from invgraph.losses import flow_matching_loss
from invgraph.toy_data import ENTROPIES, sample_2d

torch.set_num_threads(1)
DATA = "8gaussians"
ENTROPY = ENTROPIES[DATA]


def train(density: FlowDensity, steps: int, loss=None, lr: float = 5e-3) -> float:
    """Minimise ``loss(x)`` (default: the NLL) on fresh batches with a one-cycle schedule;
    return the test NLL on 20,000 fresh points."""
    loss = loss or density.nll
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(density.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for _ in range(steps):
        value = loss(sample_2d(DATA, 256, rng))
        optimizer.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(density.parameters(), 10.0)
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return density.nll(sample_2d(DATA, 20_000, np.random.default_rng(1))).item()


# %% [markdown]
# ## 2. A masked autoregressive flow (MAF)
#
# `MaskedAffineAutoregressive` computes, for every feature `i`, a scale and a shift from the
# features before it, `z_i = x_i exp(s_i(x_<i)) + t_i(x_<i)`, all in one pass of a masked
# network (`invgraph.subnets.MADE`). Stacked blocks alternate their order, as couplings
# alternate with permutations. The `MaskedRationalQuadraticAutoregressive` blocks put a
# monotonic spline in place of the affine map; we use both.

# %%
torch.manual_seed(0)
maf = ig.SequenceINN(2)
for k in range(4):
    order = "natural" if k % 2 == 0 else "reversed"
    maf.append(
        ig.MaskedRationalQuadraticAutoregressive,
        hidden=(64, 64),
        ordering=order,
        bins=16,
        bound=5.0,
    )
    maf.append(ig.MaskedAffineAutoregressive, hidden=(64, 64), ordering=order)
maf_density = FlowDensity(maf)
start = time.process_time()
maf_nll = train(maf_density, steps=500)
print(
    f"MAF: test NLL {maf_nll:.3f}, gap {maf_nll - ENTROPY:.3f} nats "
    f"({time.process_time() - start:.0f} s CPU)"
)

# %% [markdown]
# ## 3. Which direction is cheap
#
# A hook on each block's conditioner counts its calls. The MAF's forward (data to latent,
# what the likelihood needs) is one pass per block; its inverse (sampling) solves for the
# features one after the other: one pass per feature, two here.


# %%
def conditioner_calls(inn: ig.SequenceINN, rev: bool) -> int:
    """How many times the network's MADE conditioners run in one call."""
    calls = []
    hooks = [
        module.register_forward_hook(lambda *_: calls.append(1))
        for module in inn.modules()
        if isinstance(module, ig.MADE)
    ]
    with torch.no_grad():
        inn(torch.randn(3, 2), rev=rev)
    for hook in hooks:
        hook.remove()
    return len(calls)


print(
    f"MAF: {conditioner_calls(maf, rev=False)} conditioner calls for a density, "
    f"{conditioner_calls(maf, rev=True)} for a sample"
)

# %% [markdown]
# ## 4. An inverse autoregressive flow (IAF)
#
# `inverse_autoregressive=True` turns the same block around: its forward is the solve,
# its inverse, sampling, is one pass. Use an IAF where samples are what the loss needs, e.g.
# a variational posterior trained on its own samples; here we train it by maximum
# likelihood anyway (two features: the solve is two passes) and compare.

# %%
torch.manual_seed(0)
iaf = ig.SequenceINN(2)
for k in range(4):
    order = "natural" if k % 2 == 0 else "reversed"
    iaf.append(
        ig.MaskedRationalQuadraticAutoregressive,
        hidden=(64, 64),
        ordering=order,
        bins=16,
        bound=5.0,
        inverse_autoregressive=True,
    )
iaf_density = FlowDensity(iaf)
start = time.process_time()
iaf_nll = train(iaf_density, steps=500)
print(
    f"IAF: test NLL {iaf_nll:.3f}, gap {iaf_nll - ENTROPY:.3f} nats "
    f"({time.process_time() - start:.0f} s CPU)"
)
print(
    f"IAF: {conditioner_calls(iaf, rev=False)} conditioner calls for a density, "
    f"{conditioner_calls(iaf, rev=True)} for a sample"
)

# %% [markdown]
# ## 5. A continuous flow, trained by flow matching
#
# `ContinuousFlow` integrates `dx/dt = v(x, t)` from the data (`t = 0`) to the latent
# (`t = 1`) with fixed RK4 steps, and its log-det, the integral of the divergence of `v`,
# alongside. Maximum likelihood would solve that ODE at every step; flow matching does not:
# on the straight path `x_t = (1 - t) x + t z` from a data point to a noise sample the
# velocity is `z - x`, and `flow_matching_loss` regresses `v(x_t, t)` onto it. Once trained,
# the block is a flow like the others: `FlowDensity` gives its exact log-density (of the
# discretised map) and its samples.

# %%
torch.manual_seed(0)
cnf = ig.SequenceINN(2)
cnf.append(ig.ContinuousFlow, hidden=(128, 128, 128), steps=16, time_frequencies=4)
cnf_density = FlowDensity(cnf)
start = time.process_time()
cnf_nll = train(cnf_density, 3000, lambda x: flow_matching_loss(cnf[0], x), lr=3e-3)
print(
    f"flow matching: test NLL {cnf_nll:.3f}, gap {cnf_nll - ENTROPY:.3f} nats "
    f"({time.process_time() - start:.0f} s CPU)"
)

# %% [markdown]
# ## 6. A graph with a coupling stage and an autoregressive stage
#
# Autoregressive blocks are graph nodes like any other: here two spline couplings (each with
# a permutation) feed two autoregressive splines, in one `GraphINN`.

# %%
torch.manual_seed(0)
nodes = [ig.InputNode(2, name="x")]
for k in range(2):
    nodes.append(
        ig.Node(
            nodes[-1],
            ig.RationalQuadraticSpline,
            {"subnet_constructor": ig.MLP, "bins": 16, "bound": 5.0},
            name=f"coupling{k}",
        )
    )
    nodes.append(ig.Node(nodes[-1], ig.PermuteRandom, {"seed": k}, name=f"permute{k}"))
for k in range(2):
    nodes.append(
        ig.Node(
            nodes[-1],
            ig.MaskedRationalQuadraticAutoregressive,
            {"hidden": (64, 64), "ordering": ["natural", "reversed"][k], "bins": 16, "bound": 5.0},
            name=f"autoregressive{k}",
        )
    )
nodes.append(ig.OutputNode(nodes[-1], name="z"))
mixed = ig.GraphINN(nodes)
mixed_nll = train(FlowDensity(mixed), steps=500)
print(f"coupling + autoregressive: test NLL {mixed_nll:.3f}, gap {mixed_nll - ENTROPY:.3f}")
x = torch.randn(5, 2)
x_back, _ = mixed(mixed(x)[0], rev=True)
print(f"round trip error {(x_back - x).abs().max():.1e}")

# %% [markdown]
# ## 7. Samples
#
# Samples `x = f^{-1}(z)`, `z ~ N(0, I)`, of the four models.

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharex=True, sharey=True)
with torch.no_grad():
    for ax, (name, model) in zip(
        axes,
        [("MAF", maf), ("IAF", iaf), ("flow matching", cnf), ("coupling + autoregressive", mixed)],
    ):
        samples = FlowDensity(model).sample(3000)
        ax.scatter(samples[:, 0], samples[:, 1], s=1)
        ax.set_title(name)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
fig.savefig("autoregressive_samples.png", dpi=90, bbox_inches="tight")

# %%
for name, nll in [("MAF", maf_nll), ("IAF", iaf_nll), ("mixed", mixed_nll), ("CNF", cnf_nll)]:
    assert nll - ENTROPY < 0.10, f"{name}: test NLL {nll:.3f}, {nll - ENTROPY:.3f} above H(p)"
assert (x_back - x).abs().max() < 1e-3  # float32, through eight splines
