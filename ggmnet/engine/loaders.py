"""Data loaders whose order is a function of (seed, epoch, pass) and which shard the data across ranks."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ggmnet.engine.distributed import DistContext

#: Passes over the data an epoch may make before its shuffling keys run into the next epoch's.
PASSES_PER_EPOCH = 1000


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - libraries that augment use the global generator
    random.seed(seed)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, ctx: DistContext, num_workers: int = 0,
                seed: int = 0, drop_last: bool = False,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A DataLoader whose order is a function of ``(seed, epoch)`` and which shards the data across ranks.

    Shuffled or distributed loaders use a :class:`~torch.utils.data.DistributedSampler` (with one replica when
    alone) seeded with ``seed``: call :func:`set_loader_epoch` (or iterate :func:`reshuffled`) so the order
    changes each epoch and a resumed run sees the same order as an uninterrupted one. When distributed, each
    rank reads ``ceil(len / world_size)`` samples (the sampler pads by repeating a few). Worker processes
    seed NumPy and Python from torch's per-worker seed, drawn from a generator seeded with ``seed + rank``;
    workers persist between epochs when ``num_workers > 0``.
    """
    sampler = None
    if shuffle or ctx.is_distributed:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
    generator = torch.Generator()
    generator.manual_seed(int(seed) + ctx.rank)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers,
        drop_last=drop_last, pin_memory=ctx.device.type == "cuda", worker_init_fn=_seed_worker,
        generator=generator, persistent_workers=num_workers > 0, collate_fn=collate_fn,
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a loader from :func:`make_loader` which epoch starts (reshuffles; a no-op without a sampler)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def reshuffled(loader: DataLoader, epoch: int, steps: int, *, stream: int = 0, streams: int = 1,
               dataset: Any = None) -> Iterator[Any]:
    """``steps`` batches of ``loader`` in ``epoch``, passing over it as often as that takes.

    Pass ``p`` reshuffles with the key ``streams * (PASSES_PER_EPOCH * epoch + p) + stream``, so the batches
    depend only on the seed, the epoch and the pass, and ``streams`` loaders read in one epoch (the search's
    two halves) never share a key. With ``dataset``, its ``set_epoch`` gets the same key (a new augmentation
    for every pass).
    """
    batches = 0
    for p in itertools.count():
        key = streams * (PASSES_PER_EPOCH * epoch + p) + stream
        if dataset is not None:
            dataset.set_epoch(key)
        set_loader_epoch(loader, key)
        for batch in loader:
            yield batch
            batches += 1
            if batches == steps:
                return


def validation_loader(dataset: Dataset, *, tiles: int | None, seed: int, batch_size: int, num_workers: int,
                      ctx: DistContext) -> tuple[DataLoader, list[int]]:
    """A loader over a fixed, seeded choice of ``tiles`` items of ``dataset`` (None: all), split over the ranks.

    Returns the loader of this rank's share and the chosen indices (sorted, the same on every rank).
    """
    chosen = np.random.default_rng(seed).permutation(len(dataset))[: tiles or len(dataset)]
    ids = sorted(chosen.tolist())
    # Workers are started afresh for every pass: each pass draws their seed from the global generator, so a
    # resumed run draws as often as an uninterrupted one (persistent workers draw on a process's first pass only).
    loader = DataLoader(Subset(dataset, ids[ctx.rank::ctx.world_size]), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    return loader, ids
