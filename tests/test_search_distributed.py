"""Two CPU processes (gloo) search together: the architecture parameters end identical on both ranks."""

from __future__ import annotations

import json

import pytest
import spawned
import torch
import torch.multiprocessing as mp
from test_search import initial_arch_state
from tiny_data import DEPTH, search_config

pytestmark = pytest.mark.distributed


def _worker(rank: int, world_size: int, init_file: str, data: str, out: str, result_dir: str) -> None:
    import warnings
    from pathlib import Path

    from ggmnet.engine.distributed import cleanup, init_distributed_for_test
    from ggmnet.search.search import ArchitectureSearch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    ctx = init_distributed_for_test(rank, world_size, init_file)
    try:
        search = ArchitectureSearch(search_config(Path(data), Path(out)), ctx)
        search.run()
        arch = {n: p.detach().clone() for n, p in search.supernet.named_arch_parameters()}
        torch.save({"arch": arch, "val_batches": len(search.val_loader)}, Path(result_dir) / f"rank{rank}.pt")
    finally:
        cleanup()
    spawned.leave()


def test_two_gloo_processes_keep_identical_architecture_parameters(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tiny_dataset), str(out), str(tmp_path)), nprocs=2,
             join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    in_channels = json.loads((out / "genotype.json").read_text())["in_channels"]
    start = initial_arch_state(DEPTH, in_channels)
    assert rank0["arch"].keys() == rank1["arch"].keys() == start.keys()
    for name in start:
        assert torch.equal(rank0["arch"][name], rank1["arch"][name]), name
    assert any(not torch.equal(rank0["arch"][n], start[n]) for n in start)
    # each rank scored its own share of the 2 validation tiles
    assert rank0["val_batches"] == rank1["val_batches"] == 1
    # rank 0 alone wrote the run's files (one row per epoch), with the world size in the provenance
    genotype = json.loads((out / "genotype.json").read_text())
    assert genotype["provenance"]["world_size"] == 2
    meta = json.loads((out / "run.json").read_text())
    assert meta["world_size"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "val/fwiou" in r] == [2, 3]  # the warm-up epoch is not validated
