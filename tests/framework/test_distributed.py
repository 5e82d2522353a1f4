"""DistributedDataParallel: 2 CPU processes (gloo) train like one process on their joint batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import invgraph as ig

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)
STEPS = 3
BATCH_PER_RANK = 8


class _Subnet(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Linear(c_in, 32), nn.Tanh(), nn.Linear(32, c_out))


def _model(memory_efficient: bool) -> ig.SequenceINN:
    """ActNorm (initialised from the first batch: all ranks must agree) and couplings."""
    torch.manual_seed(0)
    inn = ig.SequenceINN(6, memory_efficient=memory_efficient)
    inn.append(ig.ActNorm)
    for k in range(3):
        inn.append(ig.GLOWCouplingBlock, subnet_constructor=_Subnet)
        inn.append(ig.PermuteRandom, seed=k)
    return inn


def _data() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return 3 + 2 * torch.randn(STEPS, 2 * BATCH_PER_RANK, 6, generator=generator)


def _train(model: nn.Module, batches: torch.Tensor) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x in batches:
        z, log_det = model(x)
        loss = (0.5 * z.square().sum(1) - log_det).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _train_on_rank(rank: int, init_file: str, out: str, memory_efficient: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        inn = _model(memory_efficient)
        ddp = nn.parallel.DistributedDataParallel(inn)
        shard = slice(rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK)
        _train(ddp, _data()[:, shard])
        torch.save(inn.state_dict(), f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["standard", "memory_efficient"])
def test_two_processes_match_one_process_on_the_joint_batch(tmp_path, memory_efficient):
    # spawn, not fork: a forked child inherits every lock that another thread of this
    # process (pytest-xdist's among them) holds at that moment, and can wait on it forever.
    args = (str(tmp_path / "rendezvous"), str(tmp_path), memory_efficient)
    mp.start_processes(_train_on_rank, args=args, nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]

    single = _model(memory_efficient)
    _train(single, _data())
    expected = single.state_dict()
    untrained = _model(memory_efficient).state_dict()
    for key, value in expected.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"ranks disagree on {key}"
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6)
    moved = [k for k, v in expected.items() if v.is_floating_point() and v.ne(untrained[k]).any()]
    assert len(moved) > len(expected) // 2  # training changed the weights


def test_the_distributed_tutorial_runs_under_torchrun(tmp_path):
    script = Path(__file__).parents[2] / "tutorials" / "distributed_training.py"
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # the `torchrun` command
    command = [*torchrun, "--nproc_per_node=2", "--standalone", str(script), "--steps", "200"]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 process(es), ranks agree: True" in result.stdout
