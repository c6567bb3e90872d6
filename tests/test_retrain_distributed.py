"""A two-process CPU (gloo) retrain: DDP keeps the ranks' weights identical and only rank 0 writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spawned
import torch
import torch.multiprocessing as mp

from ggmnet.engine.distributed import cleanup, init_distributed_for_test
from ggmnet.retrain.train import RetrainConfig, Retrainer

pytestmark = pytest.mark.distributed


def _worker(rank: int, world: int, init_file: str, config: dict, results_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed_for_test(rank, world, init_file)
    try:
        trainer = Retrainer(RetrainConfig(**config), ctx)
        initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        seen: list[int] = []
        for batch in trainer.batches(0):
            seen.extend(int(w) for w in batch["window"])
        trainer.run()
        torch.save({"initial": initial, "final": trainer.model.state_dict(), "windows": seen,
                    "steps": trainer.steps_per_epoch}, f"{results_dir}/rank{rank}.pt")
    finally:
        cleanup()
    spawned.leave()


def test_two_process_gloo_retrain(tiny_dataset, tiny_genotype, tmp_path):
    out = tmp_path / "run"
    config = dict(genotype=str(tiny_genotype), epochs=1, steps_per_epoch=2, tile_size=32, crop_size=24, batch_size=2,
                  val_tiles=3, image_every=1, val_images=1, num_workers=0, device="cpu", wandb_mode="disabled",
                  data=str(tiny_dataset), out=str(out))
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), config, str(tmp_path)), nprocs=2, join=True)

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["steps"] == 2 for r in ranks)
    # DistributedSampler shards: each rank gets 2 steps x 2 tiles of its own windows.
    assert len(ranks[0]["windows"]) == len(ranks[1]["windows"]) == 4
    assert not set(ranks[0]["windows"]) & set(ranks[1]["windows"])
    # Gradients are averaged over the ranks, so the weights (not the per-rank BatchNorm statistics) agree.
    buffers = {k for k in ranks[0]["final"] if "running_" in k or "num_batches" in k}
    for key, value in ranks[0]["final"].items():
        if key not in buffers:
            assert torch.equal(value, ranks[1]["final"][key]), key
    assert any(not torch.equal(ranks[0]["final"][k], ranks[0]["initial"][k]) for k in ranks[0]["final"])

    last = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["config"]["batch_size"] == 2
    assert all(torch.equal(last["model"][k], ranks[0]["final"][k]) for k in last["model"])
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["step"] == 1  # rank 1 logged nothing
    assert sorted(p.name for p in out.glob("run*.json")) == ["run.json"]
    assert Path(out / "checkpoints" / "best.pt").is_file()
