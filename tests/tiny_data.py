"""A tiny prepared dataset (built in well under a second), and the tiny search and retrain settings of the tests.

The fixtures built from them (``tiny_dataset``, ``tiny_genotype``, ``finished_search``) are in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ggmnet.datasets.geo import GeoGrid, Region
from ggmnet.datasets.labels import write_label_grid
from ggmnet.datasets.netcdf import write_gmt_grid
from ggmnet.datasets.prepare import prepare_dataset
from ggmnet.datasets.processing import ProcessingRecipe
from ggmnet.datasets.windows import Scale
from ggmnet.retrain.train import RetrainConfig
from ggmnet.search.search import SearchConfig

# The searches here run at depth 2, the smallest the contract allows (the paper's 16..24 and the supernet's
# 300 M weights at depth 22 are for GPUs); depths outside 16..24 log a warning.
DEPTH = 2
# A third of the default unit widths (12, 24, 48): the depth-2 supernet has 2 M weights instead of 18 M, so a
# search's checkpoints take about 25 MB of disk instead of 200 MB (the suite writes dozens of them).
UNIT_CHANNELS = (4, 8, 16)


def build_tiny_dataset(root: Path) -> Path:
    """A prepared dataset over E80-84, N44-47 at 0.1 degrees, 1-degree windows every 0.5 degrees (35).

    The Bouguer field is a sum of Gaussian anomalies and the classes are its quantiles, so the labels are
    learnable from the residual; a band in the south is cover (255).
    """
    lon = np.round(np.arange(79.0, 85.0 + 1e-9, 0.1), 6)
    lat = np.round(np.arange(43.0, 48.0 + 1e-9, 0.1), 6)
    rng = np.random.default_rng(3)
    glon, glat = np.meshgrid(lon, lat)
    field = np.zeros_like(glon)
    for _ in range(40):
        c_lon, c_lat = rng.uniform(79, 85), rng.uniform(43, 48)
        field += rng.normal(0, 20) * np.exp(-((glon - c_lon) ** 2 + (glat - c_lat) ** 2) / (2 * 0.3 ** 2))
    labels = np.digitize(field, np.quantile(field, [0.2, 0.4, 0.6, 0.8])).astype(np.uint8) * 2
    labels[glat < 44.4] = 255
    raw = root / "raw"
    write_gmt_grid(raw / "bouguer.nc", GeoGrid(lon, lat, field.astype(np.float32)))
    write_label_grid(raw / "labels.nc", GeoGrid(lon, lat, labels, name="label", units=""))
    return prepare_dataset(raw / "bouguer.nc", raw / "labels.nc", root / "prepared",
                           region=Region(80.0, 84.0, 44.0, 47.0), recipe=ProcessingRecipe(margin_km=50.0),
                           scales=(Scale(1.0, 0.5),), seed=0)


def search_config(data: Path, out: Path, **changes) -> SearchConfig:
    """3 epochs (1 warm-up) x 1 step of 2 tiles of 32 px at depth 2, narrow units, CPU, no W&B."""
    values = dict(depth=DEPTH, unit_channels=UNIT_CHANNELS, epochs=3, warmup_epochs=1, steps_per_epoch=1,
                  tile_size=32, crop_size=32, batch_size=2, val_tiles=2, num_workers=0, device="cpu",
                  wandb_mode="disabled", data=str(data), out=str(out))
    values.update(changes)
    return SearchConfig(**values)


def retrain_config(data: Path, genotype: Path | None, out: Path, **changes) -> RetrainConfig:
    """3 epochs (Adam, then SGD from the second) x 2 steps of 2 tiles of 24 px, CPU, no W&B."""
    values = dict(genotype=None if genotype is None else str(genotype), epochs=3, switch_epoch=1,
                  steps_per_epoch=2, tile_size=32, crop_size=24, batch_size=2, val_tiles=2, image_every=3,
                  val_images=1, num_workers=0, device="cpu", wandb_mode="disabled", data=str(data), out=str(out))
    values.update(changes)
    return RetrainConfig(**values)


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` less ggm-data's progress lines (``ggm-data: reading ...``), which precede an
    error just as they precede a result."""
    return [line for line in stderr.strip().splitlines()
            if not line.startswith("ggm-data: ") or line.startswith("ggm-data: error:")]
