"""Time ``separate_regional`` on the paper's region (E65-95, N40-55) at 2' with a 500 km margin.

The input is a synthetic smooth field (a sum of random plane waves, 30-600 km wavelengths) on a 2' grid
covering the region and its margin, as the WGM2012 file would. Prints wall seconds and peak memory.

    .venv/bin/python benchmarks/bench_processing.py [--channels] [--repeat N]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from ggmnet.datasets.geo import PAPER_REGION, GeoGrid
from ggmnet.datasets.processing import ProcessingRecipe, separate_regional
from ggmnet.studies.measure import peak_resident_mib


def synthetic_field(lon: np.ndarray, lat: np.ndarray, *, waves: int = 40, seed: int = 0) -> np.ndarray:
    """A smooth field (ny, nx) float32 in mGal: random plane waves of 30-600 km wavelength."""
    rng = np.random.default_rng(seed)
    lon2, lat2 = np.meshgrid(lon, lat)
    x_km = np.radians(lon2) * 6371.0 * np.cos(np.radians(lat2))
    y_km = np.radians(lat2) * 6371.0
    field = np.zeros(lon2.shape)
    for _ in range(waves):
        wavelength = rng.uniform(30.0, 600.0)
        angle = rng.uniform(0.0, np.pi)
        k = 2.0 * np.pi / wavelength
        field += rng.normal(0.0, 10.0) * np.cos(k * (np.cos(angle) * x_km + np.sin(angle) * y_km)
                                                + rng.uniform(0.0, 2.0 * np.pi))
    return field.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", action="store_true", help="also compute the three derivative channels")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs (default 2)")
    args = parser.parse_args()

    step = 1.0 / 30.0  # 2 arc-minutes
    lon = np.round(np.arange(50.0, 110.0 + step / 2, step), 10)
    lat = np.round(np.arange(33.0, 61.0 + step / 2, step), 10)
    grid = GeoGrid(lon, lat, synthetic_field(lon, lat))
    channels = ("residual", "vertical_derivative", "horizontal_gradient", "tilt") if args.channels \
        else ("residual",)
    recipe = ProcessingRecipe(channels=channels)
    print(f"source grid {grid.shape[0]} x {grid.shape[1]} nodes (2'), region {PAPER_REGION}, recipe "
          f"{recipe.to_dict()}")
    for run in range(args.repeat):
        tracemalloc.start()
        start = time.perf_counter()
        out = separate_regional(grid, PAPER_REGION, recipe)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"run {run}: {seconds:.2f} s, peak traced memory {peak / 2**20:.0f} MiB; region "
              f"{out['residual'].shape[0]} x {out['residual'].shape[1]}, metric grid {out['metric_shape']} at "
              f"{out['spacing_km']:.3f} km, residual std {out['residual'].std():.2f} mGal")
    print(f"peak resident memory of the process: {peak_resident_mib():.0f} MiB")


if __name__ == "__main__":
    main()
