"""Devices, atomic checkpoints, RNG capture and exact resume, loaders and run folders."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from ggmnet.distributed import DistContext
from ggmnet.errors import UserError
from ggmnet.training import (
    CheckpointManager,
    autocast_for,
    capture_rng_state,
    latest_run_dir,
    make_grad_scaler,
    make_loader,
    new_run_dir,
    resolve_device,
    restore_rng_state,
    set_loader_epoch,
)

ALONE = DistContext()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match=r"^--device gpu: expected auto, cpu, cuda or cuda:N$"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_resolve_device_without_cuda():
    with pytest.raises(UserError, match=r"^--device cuda: CUDA is not available on this machine$"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="cuda:1"):
        resolve_device("cuda:1")


@pytest.mark.gpu
def test_cuda_devices_autocast_and_rng():
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    cuda = torch.device("cuda")
    with autocast_for(cuda, enabled=True):
        out = torch.ones(2, 2, device=cuda) @ torch.ones(2, 2, device=cuda)
    assert out.dtype in (torch.bfloat16, torch.float16)
    state = capture_rng_state()
    first = torch.rand(3, device=cuda)
    restore_rng_state(state)
    assert torch.equal(torch.rand(3, device=cuda), first)


def draw_all() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()  # noqa: NPY002


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    state = capture_rng_state()
    first = draw_all()
    assert draw_all() != first
    torch.save(state, tmp_path / "rng.pt")
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draw_all() == first


def test_checkpoint_last_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path, mode="max")
    assert not mgr.has_checkpoint and mgr.load_latest() is None
    assert mgr.save({"value": torch.tensor(1)}, epoch=1, metric=0.1)
    assert mgr.save({"value": torch.tensor(2)}, epoch=2, metric=0.3)
    # best.pt is the same file as the new last.pt (a hard link, not a gigabyte copy) ...
    assert mgr.best_path.stat().st_ino == mgr.last_path.stat().st_ino
    assert not mgr.save({"value": torch.tensor(3)}, epoch=3, metric=0.2)
    # ... and keeps its content when last.pt is replaced
    assert mgr.best_path.stat().st_ino != mgr.last_path.stat().st_ino
    assert not mgr.save({"value": torch.tensor(4)}, epoch=4, metric=float("nan"))
    assert mgr.load(mgr.best_path)["value"].item() == 2
    resumed = CheckpointManager(tmp_path)
    state = resumed.load_latest()
    assert state["value"].item() == 4 and state["checkpoint"]["epoch"] == 4
    assert resumed.best_value == pytest.approx(0.3)
    assert not resumed.save({"value": torch.tensor(5)}, epoch=5, metric=0.25)
    assert CheckpointManager(tmp_path, is_main=False).save({}, epoch=6, metric=9.0) is False
    minimising = CheckpointManager(tmp_path / "loss", mode="min")
    assert minimising.save({}, epoch=1, metric=2.0) and minimising.save({}, epoch=2, metric=1.0)


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path)
    mgr.save({"value": torch.tensor(1)}, epoch=1, metric=0.5)
    before = mgr.last_path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        mgr.save({"value": torch.tensor(2)}, epoch=2, metric=0.9)
    assert mgr.last_path.read_bytes() == before
    assert sorted(p.name for p in mgr.dir.iterdir()) == ["best.pt", "last.pt"]


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.dir.mkdir(parents=True)
    mgr.last_path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="last.pt: not a readable ggmnet checkpoint"):
        mgr.load_latest()


class NoisyData(Dataset):
    """Eight samples whose augmentation draws from the global torch and NumPy generators."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.full((4,), float(i)) + 0.1 * torch.randn(4) + float(np.random.normal())  # noqa: NPY002
        return x, torch.tensor([float(i % 3)])


def train(run_dir, epochs: int, resume: bool) -> torch.Tensor:
    """A tiny training loop that checkpoints each epoch; with ``resume`` it continues from last.pt."""
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(NoisyData(), batch_size=3, shuffle=True, ctx=ALONE, seed=7)
    mgr = CheckpointManager(run_dir, mode="min")
    start = 0
    if resume:
        torch.manual_seed(123)  # a restarted process would not be where the run stopped
        state = mgr.load_latest()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        start = state["checkpoint"]["epoch"] + 1
    for epoch in range(start, epochs):
        set_loader_epoch(loader, epoch)
        total = 0.0
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item()
        mgr.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": capture_rng_state()},
                 epoch=epoch, metric=total)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = train(tmp_path / "a", epochs=4, resume=False)
    train(tmp_path / "b", epochs=2, resume=False)
    resumed = train(tmp_path / "b", epochs=4, resume=True)
    assert torch.equal(straight, resumed)
    assert not torch.equal(straight, train(tmp_path / "c", epochs=2, resume=False))


def test_loader_order_depends_on_seed_and_epoch_and_shards_ranks():
    data = list(range(10))

    def order(seed, epoch, ctx=ALONE):
        loader = make_loader(data, batch_size=4, shuffle=True, ctx=ctx, seed=seed)
        set_loader_epoch(loader, epoch)
        return [int(v) for batch in loader for v in batch]

    assert order(1, 0) == order(1, 0) and sorted(order(1, 0)) == data
    assert order(1, 1) != order(1, 0) and order(2, 0) != order(1, 0)
    ranks = [order(1, 0, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5 and sorted(ranks[0] + ranks[1]) == data
    plain = make_loader(data, batch_size=4, shuffle=False, ctx=ALONE)
    assert [int(v) for batch in plain for v in batch] == data


def test_autocast_and_scaler_are_off_on_cpu():
    cpu = torch.device("cpu")
    with autocast_for(cpu, enabled=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not make_grad_scaler(cpu, enabled=True).is_enabled()


def test_new_and_latest_run_dir(tmp_path):
    assert latest_run_dir(tmp_path / "none") is None
    first = new_run_dir(tmp_path, "search")
    second = new_run_dir(tmp_path, "search")
    other = new_run_dir(tmp_path, "retrain")
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name.startswith("search-")
    (tmp_path / "notes").mkdir()
    assert latest_run_dir(tmp_path, "search") == second
    assert latest_run_dir(tmp_path, "retrain") == other
