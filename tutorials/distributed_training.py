"""Tutorial: train a flow on several processes with DistributedDataParallel.

Run on 2 CPU processes: ``torchrun --nproc_per_node=2 --standalone
tutorials/distributed_training.py`` (under a minute on 2 cores). The same script runs
unchanged on N GPUs of one machine (``--nproc_per_node=N``) or on several machines
(``torchrun --nnodes=M --nproc_per_node=N --rdzv-endpoint=HOST:PORT ...`` on each), and
alone: ``python tutorials/distributed_training.py`` trains in one process.

Each process builds the same model, wraps it in ``DistributedDataParallel`` and trains on
its own share of every batch; DDP averages the gradients, so the processes stay identical
and together take the step one process would take on the whole batch. Two things are
special about flows, and both work here:

* ``ActNorm`` initialises itself from the first batch: under ``torch.distributed`` it
  all-reduces its statistics, so every process starts from the statistics of the whole
  first batch, not of its share.
* ``memory_efficient=True``: the graph keeps no activations and reconstructs them by the
  inverse in the backward pass; its parameters still receive their gradients once per
  step, where DDP's hooks expect them.

It ends by checking that the processes hold identical weights and printing the test
negative log-likelihood next to the entropy of the data.
"""

# %% [markdown]
# ## 1. One process per device
#
# `torchrun` starts the processes and tells each its rank and the world size in
# environment variables. Started without `torchrun`, the script plays a world of one.
# GPUs use the NCCL backend, CPUs gloo; each process takes the GPU of its local rank.

# %%
import argparse
import functools
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

import invgraph as ig
from invgraph.distributions import FlowDensity
from invgraph.subnets import MLP
from invgraph.toy_data import TWO_MOONS_ENTROPY, two_moons

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=400)
parser.add_argument("--batch", type=int, default=256, help="the whole batch, all processes")
arguments, _ = parser.parse_known_args()  # a notebook kernel passes its own

if "RANK" not in os.environ:  # started with python, not torchrun: a world of one
    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
if torch.cuda.is_available():
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
else:
    device = torch.device("cpu")
    dist.init_process_group("gloo")
rank, world_size = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)  # one thread per process: the processes share the cores

# %% [markdown]
# ## 2. The same model in every process
#
# Seeding before building gives every process the same weights (DDP also broadcasts
# rank 0's weights when it wraps the model). `memory_efficient=True` is a flag of the
# graph; nothing else changes.


# %%
subnet = functools.partial(MLP, hidden=64, hidden_layers=1)  # its last layer starts at zero
torch.manual_seed(0)
inn = ig.SequenceINN(2, memory_efficient=True)
inn.append(ig.ActNorm)
for k in range(6):
    inn.append(ig.RationalQuadraticSpline, subnet_constructor=subnet, bins=8)
    inn.append(ig.PermuteRandom, seed=k)
inn = inn.to(device)
model = nn.parallel.DistributedDataParallel(inn)
density = FlowDensity(model)  # FlowDensity calls the DDP wrapper: gradients are averaged
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, arguments.steps)

# %% [markdown]
# ## 3. Each process trains on its share of every batch
#
# Every process draws different points (its own seed); the loss is the mean over its
# share, and DDP's average of the gradients makes it the mean over the whole batch.

# %%
rng = np.random.default_rng(1 + rank)
share = arguments.batch // world_size
for _ in tqdm(range(arguments.steps), desc=f"rank {rank}", disable=rank != 0):
    x = two_moons(share, rng).to(device)
    loss = density.nll(x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()

# %% [markdown]
# ## 4. Check
#
# The processes must hold the same weights: compare each parameter's largest and
# smallest value over the processes. Then rank 0 evaluates the model on fresh data.

# %%
flat = torch.cat([p.detach().flatten() for p in inn.parameters()])
largest, smallest = flat.clone(), flat.clone()
dist.all_reduce(largest, op=dist.ReduceOp.MAX)
dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
agree = bool(torch.equal(largest, smallest))
if rank == 0:
    print(f"{world_size} process(es), ranks agree: {agree}")
    with torch.no_grad():
        test = two_moons(20_000, np.random.default_rng(123)).to(device)
        nll = FlowDensity(inn).nll(test).item()
    print(f"test NLL {nll:.3f} nats, entropy of the data {TWO_MOONS_ENTROPY:.3f}")
    assert agree and nll < TWO_MOONS_ENTROPY + 0.25, (agree, nll)
dist.destroy_process_group()
