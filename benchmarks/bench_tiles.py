"""Tile rendering throughput and peak memory of ``TileDataset``.

Prints tiles per second and the peak resident memory at 512^2 and 2048^2 px, with and without augmentation
(with augmentation the paper's crop of half the tile size is used), on the synthetic default dataset (built on
first use) or a prepared dataset given with ``--data``. Targets on a 2-core CPU: >= 20 tiles/s at 512^2 and
>= 2 tiles/s at 2048^2.

    python benchmarks/bench_tiles.py [--data DIR] [--tiles N] [--channels pseudocolour|physical]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ggmnet.datasets import ensure_synthetic_default
from ggmnet.datasets.tiles import TileDataset
from ggmnet.studies.measure import peak_resident_mib


def bench(data, tile_size: int, augment: bool, n: int, channels: str, prior: bool) -> float:
    crop = tile_size // 2 if augment else None
    ds = TileDataset(data, "train", tile_size=tile_size, crop_size=crop, augment=augment, channels=channels,
                     geology_prior=prior)
    ds[0]  # load the grids once, as a worker does on its first item
    order = np.random.default_rng(0).permutation(len(ds))[:n]
    start = time.perf_counter()
    for i in order:
        item = ds[int(i)]
    elapsed = time.perf_counter() - start
    size = item["image"].shape[-1]
    print(f"tile {tile_size:5d}^2 -> {size:5d}^2  augment={'yes' if augment else 'no ':3s} "
          f"prior={'yes' if prior else 'no ':3s} {n / elapsed:7.1f} tiles/s  "
          f"({1000 * elapsed / n:6.1f} ms/tile)  peak RSS {peak_resident_mib():7.0f} MiB")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="prepared dataset (default: the synthetic default)")
    parser.add_argument("--tiles", type=int, default=40, help="tiles per measurement at 512^2 (default 40; "
                                                              "a quarter of it at 2048^2)")
    parser.add_argument("--channels", default="pseudocolour", choices=("pseudocolour", "physical"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as in a DataLoader worker)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or ensure_synthetic_default()
    print(f"dataset {data}, channels {args.channels}, torch threads {torch.get_num_threads()}")
    for tile_size, n in ((512, args.tiles), (2048, max(args.tiles // 4, 2))):
        for augment in (False, True):
            bench(data, tile_size, augment, n, args.channels, prior=False)
    bench(data, 512, True, args.tiles, args.channels, prior=True)


if __name__ == "__main__":
    main()
