"""The engine's runtime: devices, the checkpoint format, RNG capture, loaders and run folders."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ggmnet.engine.checkpoint import CheckpointFormat, read_checkpoint, write_checkpoint
from ggmnet.engine.device import autocast_for, make_grad_scaler, resolve_device
from ggmnet.engine.distributed import DistContext
from ggmnet.engine.loaders import make_loader, reshuffled, set_loader_epoch
from ggmnet.engine.rng import capture_rng_state, restore_rng_state
from ggmnet.engine.runio import latest_run_dir, new_run_dir
from ggmnet.errors import UserError

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


TOY = CheckpointFormat("ggmnet-toy-checkpoint", 2, "toy")


def test_checkpoint_round_trip_and_format_errors(tmp_path):
    path = write_checkpoint(tmp_path / "last.pt", TOY, {"value": torch.tensor([1.5]), "epoch": 3})
    state = read_checkpoint(path, TOY)
    assert state["format"] == TOY.name and state["version"] == 2 and state["epoch"] == 3
    assert torch.equal(state["value"], torch.tensor([1.5]))

    other = write_checkpoint(tmp_path / "other.pt", CheckpointFormat("ggmnet-other", 2, "other"), {})
    with pytest.raises(UserError, match=r"other.pt: not a ggmnet toy checkpoint \(format 'ggmnet-other', "
                                        r"expected 'ggmnet-toy-checkpoint'\)$"):
        read_checkpoint(other, TOY)
    old = write_checkpoint(tmp_path / "old.pt", CheckpointFormat(TOY.name, 1, "toy"), {})
    with pytest.raises(UserError, match=r"old.pt: checkpoint version 1 is not supported \(expected 2\)$"):
        read_checkpoint(old, TOY)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="list.pt: not a ggmnet toy checkpoint"):
        read_checkpoint(tmp_path / "list.pt", TOY)
    with pytest.raises(UserError, match=r"^--resume .*missing.pt: no such file"):
        read_checkpoint(tmp_path / "missing.pt", TOY, option="--resume")


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "last.pt", TOY, {"value": torch.tensor(1)})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, TOY, {"value": torch.tensor(2)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="last.pt: not a readable ggmnet checkpoint"):
        read_checkpoint(tmp_path / "last.pt", TOY)


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


def test_reshuffled_takes_steps_batches_over_passes_keyed_by_epoch_pass_and_stream():
    keys: list[int] = []

    class Recorder(list):
        def set_epoch(self, key: int) -> None:
            keys.append(key)

    data = Recorder(range(6))
    loader = make_loader(data, batch_size=2, shuffle=True, ctx=ALONE, seed=3, drop_last=True)
    batches = [[int(v) for v in batch] for batch in reshuffled(loader, 2, 7, stream=1, streams=2, dataset=data)]
    assert len(batches) == 7
    assert keys == [2 * (1000 * 2 + p) + 1 for p in range(3)]  # the 7th batch opens the third pass, no more
    assert sorted(sum(batches[:3], [])) == list(range(6)) and batches[:3] != batches[3:6]
    again = [[int(v) for v in batch] for batch in reshuffled(loader, 2, 7, stream=1, streams=2)]
    assert again == batches


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
