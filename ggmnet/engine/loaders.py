"""Data loaders whose order is a function of (seed, epoch, pass) and which shard the data across ranks."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ggmnet.engine.distributed import DistContext

#: Passes over the data an epoch may make before its shuffling keys run into the next epoch's.
PASSES_PER_EPOCH = 1000


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - libraries that augment use the global generator
    random.seed(seed)


class _Keyed(Dataset):
    """``dataset`` read as ``(key, index)`` items: ``augmented.set_epoch(key)`` runs in the process that loads
    the item. A DataLoader worker holds its own copy of the dataset, which ``set_epoch`` in the main process
    never reaches."""

    def __init__(self, dataset: Dataset, augmented: Any) -> None:
        self.dataset, self.augmented = dataset, augmented

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        key, index = item
        self.augmented.set_epoch(key)
        return self.dataset[index]


class _KeyedSampler(Sampler):
    """The indices of a :class:`DistributedSampler` paired with the key of the pass: ``(key, index)``."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler, self.key = sampler, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.key, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, ctx: DistContext, num_workers: int = 0,
                seed: int = 0, drop_last: bool = False, augmented: Any = None,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A DataLoader whose order is a function of ``(seed, key)`` and which shards the data across ranks.

    Shuffled or distributed loaders use a :class:`~torch.utils.data.DistributedSampler` (with one replica when
    alone) seeded with ``seed``: call :func:`set_loader_epoch` with a new key (or iterate :func:`reshuffled`)
    so the order changes and a resumed run sees the same order as an uninterrupted one. With ``augmented``
    (the dataset under ``dataset`` whose ``set_epoch`` selects the augmentation), every item is loaded after
    ``augmented.set_epoch(key)``, in whichever process loads it. When distributed, each rank reads
    ``ceil(len / world_size)`` samples (the sampler pads by repeating a few). Worker processes seed NumPy and
    Python from torch's per-worker seed, drawn from a generator seeded with ``seed + rank``; workers persist
    between epochs when ``num_workers > 0``.
    """
    sampler: Sampler | None = None
    if shuffle or ctx.is_distributed or augmented is not None:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
    if augmented is not None:
        dataset, sampler = _Keyed(dataset, augmented), _KeyedSampler(sampler)
    generator = torch.Generator()
    generator.manual_seed(int(seed) + ctx.rank)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers,
        drop_last=drop_last, pin_memory=ctx.device.type == "cuda", worker_init_fn=_seed_worker,
        generator=generator, persistent_workers=num_workers > 0, collate_fn=collate_fn,
    )


def set_loader_epoch(loader: DataLoader, key: int) -> None:
    """Give a loader from :func:`make_loader` the key of its next pass (its order and augmentation)."""
    sampler = loader.sampler
    if isinstance(sampler, _KeyedSampler):
        sampler.key, sampler = key, sampler.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(key)


def reshuffled(loader: DataLoader, epoch: int, steps: int, *, stream: int = 0, streams: int = 1) -> Iterator[Any]:
    """``steps`` batches of ``loader`` in ``epoch``, passing over it as often as that takes.

    Pass ``p`` reshuffles (and re-augments) with the key ``streams * (PASSES_PER_EPOCH * epoch + p) + stream``,
    so the batches depend only on the seed, the epoch and the pass, and ``streams`` loaders read in one epoch
    (the search's two halves) never share a key.
    """
    batches = 0
    for p in itertools.count():
        set_loader_epoch(loader, streams * (PASSES_PER_EPOCH * epoch + p) + stream)
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
    # its own generator: drawing the workers' seed from the global one would make a resumed run's draws differ
    loader = DataLoader(Subset(dataset, ids[ctx.rank::ctx.world_size]), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    return loader, ids
