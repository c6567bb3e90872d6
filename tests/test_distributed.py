"""Process groups: single-process fallbacks, and two gloo processes meeting through a file."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import spawned
import torch
import torch.multiprocessing as mp
from torch import nn

from ggmnet.engine.distributed import (
    DistContext,
    all_reduce_mean,
    all_reduce_sum_,
    barrier,
    broadcast_module_,
    broadcast_object,
    cleanup,
    init_distributed,
    init_distributed_for_test,
    maybe_sync_batchnorm,
    unwrap_model,
    wrap_ddp,
)
from ggmnet.engine.rng import seed_everything
from ggmnet.metrics import ConfusionMatrix


def test_single_process_without_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistContext(0, 1, 0, torch.device("cpu"), None)
    assert ctx.is_main and not ctx.is_distributed
    t = torch.tensor([1, 2])
    assert torch.equal(all_reduce_mean(t), torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert all_reduce_sum_(t) is t and broadcast_object({"a": 1}) == {"a": 1}
    barrier()
    cleanup()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert wrap_ddp(model, ctx) is model and unwrap_model(model) is model
    assert maybe_sync_batchnorm(model, DistContext(world_size=2)) is model  # CPU: BatchNorm kept


def test_seed_everything_seeds_all_three_and_offsets_by_rank():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))  # noqa: NPY002

    seed_everything(5)
    first = draw()
    seed_everything(5)
    assert draw() == first
    seed_everything(5, rank=1)
    assert all(a != b for a, b in zip(draw(), first))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    ctx = init_distributed_for_test(rank, world, init_file)
    try:
        results = {"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend}
        results["mean"] = all_reduce_mean(torch.tensor([float(rank + 1), 10.0 * rank])).tolist()
        results["sum"] = all_reduce_sum_(torch.tensor([rank + 1])).tolist()
        torch.manual_seed(100 + rank)  # different weights on each rank before the broadcast
        model = nn.Linear(3, 1)
        broadcast_module_(model, src=0)
        results["weights"] = torch.cat([model.weight.flatten(), model.bias]).tolist()
        results["object"] = broadcast_object(f"run-from-{rank}")
        cm = ConfusionMatrix(num_classes=2)
        cm.update(np.array([rank, 1]), np.array([0, 1]))
        results["confusion"] = cm.all_reduce().matrix.tolist()
        ddp = wrap_ddp(model, ctx)
        ddp(torch.full((1, 3), float(rank + 1))).sum().backward()
        results["grad"] = unwrap_model(ddp).weight.grad.flatten().tolist()
        with open(f"{out_dir}/rank{rank}.json", "w") as fh:
            json.dump(results, fh)
        barrier()  # no rank leaves the group while the other is still at work
    finally:
        cleanup()
    spawned.leave()


@pytest.mark.distributed
def test_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for r, res in enumerate((r0, r1)):
        assert res["rank"] == r and res["world"] == 2 and res["backend"] == "gloo"
        assert res["mean"] == pytest.approx([1.5, 5.0])
        assert res["sum"] == [3]
        assert res["object"] == "run-from-0"
        assert res["confusion"] == [[1, 1], [0, 2]]
        # d(w.x + b)/dw = x; DDP averages x = 1 and x = 2 over the ranks
        assert res["grad"] == pytest.approx([1.5, 1.5, 1.5])
    assert r0["weights"] == pytest.approx(r1["weights"])


@pytest.mark.gpu
def test_cuda_context_and_nccl_reductions_of_cpu_tensors(tmp_path, monkeypatch):
    import torch.distributed as dist

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cuda")
    assert ctx.device.type == "cuda" and ctx.device.index == torch.cuda.current_device()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1,
                            device_id=ctx.device)
    try:
        total = torch.tensor([2.0, 3.0])
        assert all_reduce_sum_(total) is total and total.device.type == "cpu" and total.tolist() == [2.0, 3.0]
        assert all_reduce_mean(torch.tensor([4])).tolist() == [4.0]
        cm = ConfusionMatrix(num_classes=2)
        cm.update(torch.tensor([0, 1], device=ctx.device), torch.tensor([0, 0], device=ctx.device))
        assert cm.all_reduce().matrix.tolist() == [[1, 1], [0, 0]]
    finally:
        dist.destroy_process_group()


@pytest.fixture
def join_alone(tmp_path, monkeypatch):
    """``init_distributed`` replaced by joining a one-process gloo group through a file (no torchrun here);
    any group still joined is left at the end."""
    import torch.distributed as dist

    import ggmnet.engine.distributed as distributed

    def join(device: str = "auto") -> DistContext:
        if not dist.is_initialized():
            dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
            joined.append(device)
        return DistContext(0, 1, 0, torch.device("cpu"), "gloo")

    joined: list[str] = []
    join.joined = joined
    monkeypatch.setattr(distributed, "init_distributed", join)
    monkeypatch.setattr("ggmnet.engine.loop.init_distributed", join)  # where an Engine joins by itself
    yield join
    cleanup()


def test_process_group_leaves_the_group_it_joined_even_when_the_run_fails(join_alone):
    import torch.distributed as dist

    from ggmnet.engine.distributed import process_group

    with process_group("cpu") as ctx:
        assert dist.is_initialized() and ctx.backend == "gloo"
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="a rank failed"), process_group("cpu"):
        raise RuntimeError("a rank failed")
    assert not dist.is_initialized()


def test_process_group_leaves_a_group_it_did_not_join_to_its_owner(join_alone):
    import torch.distributed as dist

    from ggmnet.engine.distributed import process_group

    mine = join_alone()
    with process_group("cpu", mine) as ctx:
        assert ctx is mine
    assert dist.is_initialized()
    with process_group("cpu") as ctx:  # joined before, by someone else
        assert ctx.backend == "gloo"
    assert dist.is_initialized()


@pytest.mark.parametrize("stage", ["search", "retrain"])
def test_a_stage_launched_by_torchrun_leaves_its_group(stage, join_alone, tiny_dataset, tiny_genotype, tmp_path):
    """Every torchrun process must call destroy_process_group before it exits; the stages joined and never left."""
    import torch.distributed as dist
    from tiny_data import retrain_config, search_config

    from ggmnet.retrain.train import run_retrain
    from ggmnet.search.search import run_search

    if stage == "search":
        assert (run_search(search_config(tiny_dataset, tmp_path / "run")) / "genotype.json").is_file()
    else:
        assert run_retrain(retrain_config(tiny_dataset, tiny_genotype, tmp_path / "run"))["epochs"] == 3
    assert join_alone.joined == ["cpu"]  # the run joined the group once,
    assert not dist.is_initialized()  # and left it
