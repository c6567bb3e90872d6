"""A tiny prepared dataset shared by the search and retrain tests (built in well under a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ggmnet.datasets.grids import GeoGrid, Region, write_gmt_grid, write_label_grid
from ggmnet.datasets.prepare import prepare_dataset
from ggmnet.datasets.processing import ProcessingRecipe
from ggmnet.datasets.windows import Scale


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
