"""The engine's epoch loop on a toy stage: exact resume, last.pt and best.pt, resume checks, derived settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from ggmnet.engine.checkpoint import CheckpointFormat
from ggmnet.engine.config import DERIVED, EPOCHS, NON_NEGATIVE_INT, NUM_WORKERS, RunConfig, option
from ggmnet.engine.loaders import make_loader, reshuffled, validation_loader
from ggmnet.engine.loop import Engine
from ggmnet.errors import UserError

TOY = CheckpointFormat("ggmnet-toy-checkpoint", 1, "toy")


class NoisyData(Dataset):
    """Twelve samples whose augmentation draws from the global torch and NumPy generators."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = torch.full((4,), float(i)) + 0.1 * torch.randn(4) + float(np.random.normal())  # noqa: NPY002
        return {"image": x, "mask": torch.tensor([float(i % 3)])}


@dataclasses.dataclass
class ToyConfig(RunConfig):
    epochs: int = EPOCHS.field(4)
    num_workers: int = NUM_WORKERS.field(0)
    halve_after: int = option(DERIVED, "epochs before the learning rate halves", NON_NEGATIVE_INT,
                              derive=lambda c: c.epochs // 2, derived="half of --epochs")


class ToyStage(Engine):
    """A linear model fitted by SGD with momentum; its "FWIoU" peaks at epoch 2, then falls."""

    stage = "toy"
    checkpoint_format = TOY
    runs_root = Path("runs") / "toy"
    resume_fixed = ("batch_size", "seed")
    config: ToyConfig

    def run_name(self) -> str:
        return "toy"

    def setup(self, state: dict[str, Any] | None) -> None:
        self.network = nn.Linear(4, 1)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=0.01, momentum=0.9)
        self.loader = make_loader(NoisyData(), batch_size=self.config.batch_size, shuffle=True, ctx=self.ctx,
                                  seed=self.config.seed, drop_last=True)
        self.steps_per_epoch = self.config.steps_per_epoch or len(self.loader)
        self.val_loader = make_loader(NoisyData(), batch_size=4, shuffle=False, ctx=self.ctx)

    def load_state(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def checkpoint_state(self, epoch: int, scores: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.network.state_dict(), "config": self.config.to_dict()}

    def training_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        lr = 0.01 if epoch < self.config.halve_after else 0.005
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.network.train()
        return {"lr": lr}

    def batches(self, epoch: int):
        return reshuffled(self.loader, epoch, self.steps_per_epoch)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.optimizer.zero_grad()
        loss = nn.functional.mse_loss(self.network(batch["image"]), batch["mask"])
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def validate(self) -> dict[str, Any]:
        return {"fwiou": [0.1, 0.5, 0.3, 0.2, 0.4, 0.1][self.global_step // self.steps_per_epoch - 1]}

    def epoch_record(self, epoch, scalars, train, scores):
        return {"epoch": epoch, **scalars, "train/loss": train["loss"], "val/fwiou": scores["fwiou"]}


@pytest.fixture()
def dataset(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "toy"}))
    return folder


def toy(dataset: Path, out: Path, **changes) -> ToyConfig:
    values = dict(batch_size=3, device="cpu", wandb_mode="disabled", data=str(dataset), out=str(out))
    return ToyConfig(**{**values, **changes})


def weights(path: Path) -> torch.Tensor:
    state = torch.load(path, weights_only=True)
    return torch.cat([v.flatten() for v in state["model"].values()])


def test_resume_equals_an_uninterrupted_run_and_best_pt_holds_no_training_state(dataset, tmp_path):
    straight = ToyStage(toy(dataset, tmp_path / "straight")).run()

    def stop(epoch: int, record: dict) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ToyStage(toy(dataset, tmp_path / "resumed"), on_epoch_end=stop).run()
    torch.manual_seed(123)  # a restarted process is not where the run stopped
    np.random.seed(123)  # noqa: NPY002
    resumed = ToyStage(toy(dataset, tmp_path / "resumed", resume=True)).run()
    last = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["step"] == 16 and torch.equal(last["rng"]["torch"], torch.load(
        straight / "checkpoints" / "last.pt", weights_only=True)["rng"]["torch"])
    assert torch.equal(weights(resumed / "checkpoints" / "last.pt"), weights(straight / "checkpoints" / "last.pt"))
    # best.pt: the weights of epoch 2 (FWIoU 0.5) and what it takes to use them, no optimiser or generators
    best = torch.load(resumed / "checkpoints" / "best.pt", weights_only=True)
    assert best["format"] == TOY.name and best["epoch"] == 2 and not {"optimizer", "rng"} & best.keys()
    assert best["checkpoint"]["best"]["epoch"] == 2 and last["checkpoint"]["best"]["scores"] == {"fwiou": 0.5}
    assert torch.equal(weights(resumed / "checkpoints" / "best.pt"), weights(straight / "checkpoints" / "best.pt"))
    assert (resumed / "run.resume-3.json").is_file()
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and [r["lr"] for r in rows] == [0.01, 0.01, 0.005, 0.005]


def test_a_tie_keeps_the_first_best_unless_the_stage_prefers_the_later_epoch(dataset, tmp_path):
    """Scores 0.3, 0.5, 0.5, 0.2: the first 0.5 stays best, or with ``ties_to_later`` (the search, whose
    derived networks can all score the same at a short budget) the later one (test fails on the old code)."""

    class Tied(ToyStage):
        def validate(self) -> dict[str, Any]:
            return {"fwiou": [0.3, 0.5, 0.5, 0.2][self.global_step // self.steps_per_epoch - 1]}

    class TiedLater(Tied):
        ties_to_later = True

    for stage, epoch in ((Tied, 2), (TiedLater, 3)):
        run = stage(toy(dataset, tmp_path / stage.__name__)).run()
        assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["epoch"] == epoch


def test_resume_refuses_what_does_not_continue_the_run(dataset, tmp_path):
    out = tmp_path / "run"
    ToyStage(toy(dataset, out, epochs=1)).run()
    with pytest.raises(UserError, match=r"--out .*run: already holds a toy run .* pass --resume"):
        ToyStage(toy(dataset, out))
    with pytest.raises(UserError, match=r"^--resume .*last.pt: the run used --batch-size 3, not 4; resume with"):
        ToyStage(toy(dataset, out, batch_size=4, resume=True))
    (dataset / "manifest.json").write_text(json.dumps({"format": "another"}))
    with pytest.raises(UserError, match="the run used another dataset than"):
        ToyStage(toy(dataset, out, resume=True))
    best = out / "checkpoints" / "best.pt"
    best.replace(out / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match="holds no training state"):
        ToyStage(toy(dataset, out, resume=True))
    torch.save({"format": "ggmnet-checkpoint", "version": 1}, out / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match=r"^--resume .*last.pt: not a ggmnet toy checkpoint"):
        ToyStage(toy(dataset, out, resume=True))


def test_a_resumed_run_keeps_its_derived_settings(dataset, tmp_path):
    out = tmp_path / "run"
    first = toy(dataset, out, epochs=2)
    ToyStage(first).run()
    assert first.halve_after == 1 and first.derived["halve_after"] == "half of --epochs"
    longer = ToyStage(toy(dataset, out, epochs=6, resume=True))
    assert longer.config.halve_after == 1  # not 3: the run continues with the value it started with
    assert longer.config.derived["halve_after"] == "as in the run resumed"
    assert longer.start_epoch == 2
    assert ToyStage(toy(dataset, tmp_path / "new", epochs=6)).config.halve_after == 3


class KeyedData(Dataset):
    """Twelve samples augmented from a generator seeded by (key, index), the key in shared memory so that it
    reaches persistent loader workers (as TileDataset does)."""

    def __init__(self) -> None:
        self.key = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return 12

    def set_epoch(self, key: int) -> None:
        self.key.fill_(key)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        noise = np.random.default_rng([int(self.key), i]).normal(size=4).astype(np.float32)
        return {"image": torch.full((4,), float(i)) + torch.from_numpy(noise), "mask": torch.tensor([float(i % 3)])}


class WorkersToy(ToyStage):
    """The toy with a worker per loader (persistent for training), keyed augmentation, global-RNG noise in each step (as the
    search's Gumbel samples) and a validation pass over a loader."""

    def setup(self, state: dict[str, Any] | None) -> None:
        super().setup(state)
        self.data = KeyedData()
        self.loader = make_loader(self.data, batch_size=3, shuffle=True, ctx=self.ctx, seed=0, drop_last=True,
                                  num_workers=1)
        self.val_loader, _ = validation_loader(KeyedData(), tiles=4, seed=0, batch_size=2, num_workers=1,
                                               ctx=self.ctx)

    def batches(self, epoch: int):
        return reshuffled(self.loader, epoch, self.steps_per_epoch, dataset=self.data)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        batch = {**batch, "image": batch["image"] + 0.01 * torch.randn(batch["image"].shape)}
        return super().train_step(batch)

    def validate(self) -> dict[str, Any]:
        seen = sum(len(batch["image"]) for batch in self.val_loader)
        return {"fwiou": super().validate()["fwiou"] * seen / 4}


def test_resume_is_exact_with_loader_workers(dataset, tmp_path):
    straight = WorkersToy(toy(dataset, tmp_path / "straight")).run()

    def stop(epoch: int, record: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        WorkersToy(toy(dataset, tmp_path / "resumed"), on_epoch_end=stop).run()
    resumed = WorkersToy(toy(dataset, tmp_path / "resumed", resume=True)).run()
    assert torch.equal(weights(resumed / "checkpoints" / "last.pt"), weights(straight / "checkpoints" / "last.pt"))
