"""Region inference throughput of ``ggm-predict``: km^2 per second and peak memory.

The paper's example region, the Junggar Basin (E80-92, N43-48, about 520,000 km^2), on a synthetic smooth
2' Bouguer grid with the default 500 km margin, predicted by a randomly initialised GGMNet from
``default_genotype(22)`` (the paper's depth) at a small tile size. Prints the end-to-end time of
``predict_region`` (reading, residual, tiled inference, netCDF and PNG), the residual alone, the rest
(mostly inference), the pixel grid and tile count, km^2/s and the process's peak resident memory.

    .venv/bin/python benchmarks/bench_predict.py [--tile-size 256] [--scale-deg 5] [--device cpu]
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ggmnet.datasets.geo import GeoGrid, Region
from ggmnet.datasets.netcdf import read_gravity_grid, write_gmt_grid
from ggmnet.datasets.processing import ProcessingRecipe, separate_regional
from ggmnet.engine.device import resolve_device
from ggmnet.engine.runio import torch_save_atomic
from ggmnet.inference.predict import predict_region, upsampling_factors
from ggmnet.inference.tiling import tile_origins
from ggmnet.models import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, create_model
from ggmnet.search_space.genotype import default_genotype
from ggmnet.studies.measure import bench_parser, peak_resident_mib

JUNGGAR = Region(80.0, 92.0, 43.0, 48.0)
EARTH_RADIUS_KM = 6371.0


def area_km2(region: Region) -> float:
    """Area of a lon/lat box on a sphere of radius 6371 km."""
    return (EARTH_RADIUS_KM ** 2 * math.radians(region.east - region.west)
            * (math.sin(math.radians(region.north)) - math.sin(math.radians(region.south))))


def synthetic_bouguer(path: Path, region: Region, margin_deg: tuple[float, float], seed: int = 0) -> Path:
    """A smooth 2' Bouguer grid (mGal) round ``region``: a regional trend plus a few hundred Gaussian bodies."""
    rng = np.random.default_rng(seed)
    step = 1.0 / 30.0
    lon = np.round(np.arange(region.west - margin_deg[0], region.east + margin_deg[0] + step / 2, step), 9)
    lat = np.round(np.arange(region.south - margin_deg[1], region.north + margin_deg[1] + step / 2, step), 9)
    lon2, lat2 = np.meshgrid(lon, lat)
    values = -150.0 + 4.0 * (lat2 - lat2.mean()) + 2.0 * np.sin(lon2 / 3.0)
    for x, y, amp, width in zip(rng.uniform(lon[0], lon[-1], 300), rng.uniform(lat[0], lat[-1], 300),
                                rng.normal(0.0, 15.0, 300), rng.uniform(0.05, 0.6, 300)):
        values += amp * np.exp(-((lon2 - x) ** 2 + (lat2 - y) ** 2) / (2.0 * width ** 2))
    return write_gmt_grid(path, GeoGrid(lon, lat, values.astype(np.float32)))


def random_checkpoint(path: Path, depth: int, tile_size: int) -> Path:
    """A retrain checkpoint of a randomly initialised GGMNet (default genotype of ``depth``)."""
    torch.manual_seed(0)
    model = create_model("ggmnet", genotype=default_genotype(depth))
    torch_save_atomic({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": 0,
        "model": model.state_dict(), "model_config": model.model_config(),
        "data": {"manifest_sha256": "", "recipe": ProcessingRecipe().to_dict(),
                 "normalisation": {"residual": {"mean": 0.0, "std": 5.0, "p02": -10.0, "p98": 10.0}},
                 "channels": "pseudocolour", "geology_prior": False, "tile_size": tile_size,
                 "region": list(JUNGGAR.as_tuple()), "spacing_deg": [1 / 30, 1 / 30]},
        "metrics": {}, "config": {},
    }, path)
    return path


def main() -> None:
    parser = bench_parser(__doc__, tile_size=(int, 256, "inference tile, px"), scale_deg=(float, 5.0, "degrees per tile"),
                          overlap=(float, 0.25, "tile overlap"), depth=(int, 22, "MRFEM depth of the genotype"),
                          batch_size=(int, 1, "tiles per forward pass"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    args = parser.parse_args()
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        margin = (500.0 / (111.2 * math.cos(math.radians(JUNGGAR.north + 4.5))) + 0.2, 500.0 / 111.2 + 0.2)
        bouguer = synthetic_bouguer(folder / "bouguer.nc", JUNGGAR, margin)
        ckpt = random_checkpoint(folder / "best.pt", args.depth, args.tile_size)
        grid = read_gravity_grid(bouguer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            fields = separate_regional(grid, JUNGGAR, ProcessingRecipe())
            residual_s = time.perf_counter() - start
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            predict_region(ckpt, bouguer, JUNGGAR, folder / "out", tile_size=args.tile_size,
                           overlap=args.overlap, scale_deg=args.scale_deg, device=str(device),
                           batch_size=args.batch_size, progress=False)
            total_s = time.perf_counter() - start

    ny, nx = np.asarray(fields["lat"]).size, np.asarray(fields["lon"]).size
    fy, fx = upsampling_factors(grid.spacing_deg(), args.scale_deg, args.tile_size)
    height, width = (ny - 1) * fy + 1, (nx - 1) * fx + 1
    tiles = len(tile_origins(height, args.tile_size, args.overlap)) * len(tile_origins(width, args.tile_size,
                                                                                         args.overlap))
    area = area_km2(JUNGGAR)
    peak_rss_mib = peak_resident_mib()
    print(f"device: {device}  torch threads: {torch.get_num_threads()}")
    print(f"region: Junggar {JUNGGAR} = {area:,.0f} km^2, {ny} x {nx} nodes at 2'")
    print(f"model: GGMNet default_genotype({args.depth}), random weights, tile {args.tile_size} px, "
          f"{args.scale_deg:g} deg per tile, overlap {args.overlap}")
    print(f"pixel grid: {height} x {width} px ({fy} x {fx} px per node step), {tiles} tiles")
    print(f"predict_region: {total_s:.1f} s end to end  ({area / total_s:,.0f} km^2/s)")
    print(f"  residual (separate_regional, 500 km margin): {residual_s:.1f} s")
    print(f"  the rest (tiled inference, netCDF, PNG): {total_s - residual_s:.1f} s "
          f"({area / max(total_s - residual_s, 1e-9):,.0f} km^2/s, {tiles / max(total_s - residual_s, 1e-9):.2f} "
          f"tiles/s)")
    print(f"peak resident memory: {peak_rss_mib:,.0f} MiB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2 ** 20:,.0f} MiB")


if __name__ == "__main__":
    main()
