"""Geological maps as polygons (Shapefile, GeoPackage, GeoJSON, ...) through geopandas.

:func:`label_vector_on_nodes` reads the polygons of a map, takes each polygon's unit from a field
(``--label-field``), maps the units to classes with a legend (:mod:`ggmnet.datasets.legend`), and rasterises
them onto the processing grid's nodes by majority: each node's cell is sampled at ``oversample`` x
``oversample`` points (rasterio's ``rasterize``, a point taking the polygon it falls in), and the cell takes
the commonest class among them (:func:`ggmnet.datasets.resample.resample_labels`). A map in a projected CRS is
densified (its edges cut to half a node long) before it is transformed to longitude/latitude, so that its
straight edges stay where they were. Ground outside every polygon is 255 (not learned, not scored).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ggmnet.classes import COVER_INDEX
from ggmnet.datasets.geo import KM_PER_DEG, GeoGrid, node_cells
from ggmnet.datasets.legend import Legend
from ggmnet.datasets.resample import resample_labels
from ggmnet.errors import UserError, one_line

#: File suffixes read as vector maps.
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite", ".shz")
#: Sample points per node cell along each axis when rasterising polygons.
OVERSAMPLE = 4
#: The equal-area projection the areas of units are measured in (Lambert's cylindrical, on WGS 84).
EQUAL_AREA = "+proj=cea +datum=WGS84 +units=m +no_defs"


def is_vector(path: Path, head: bytes) -> bool:
    """Whether ``path`` is a vector map: a known suffix, a GeoPackage (SQLite) or a GeoJSON text."""
    return (path.suffix.lower() in VECTOR_SUFFIXES or head.startswith(b"SQLite format 3\x00")
            or head.lstrip()[:1] == b"{")


def _read(path: Path, layer: str | None) -> Any:
    """The layer of a vector map as a GeoDataFrame (a one-line error for a bad file or layer)."""
    import geopandas
    import pyogrio

    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as err:  # pyogrio raises its own DataSourceError and others for a bad file
        raise UserError(f"{path}: cannot be read as a vector map ({one_line(err)})") from None
    if layer is None and len(layers) > 1:
        raise UserError(f"{path}: {len(layers)} layers ({', '.join(layers)}); name the one to use with "
                        f"--label-variable")
    if layer is not None and layer not in layers:
        raise UserError(f"--label-variable {layer}: {path} has no such layer (it has {', '.join(layers)})")
    try:
        return geopandas.read_file(path, layer=layer)
    except Exception as err:
        raise UserError(f"{path}: cannot be read as a vector map ({one_line(err)})") from None


def label_vector_on_nodes(path: str | os.PathLike, lon: np.ndarray, lat: np.ndarray, *, field: str | None,
                          legend: Legend, layer: str | None = None, unlisted: str = "error",
                          oversample: int = OVERSAMPLE) -> np.ndarray:
    """The classes (uint8 (ny, nx); 255 for cover, for ignored units and outside every polygon) of a polygon
    map on the nodes ``lon`` (nx,) x ``lat`` (ny,) (ascending degrees), as the module docstring describes.

    ``path`` is a vector map GDAL reads (Shapefile with its ``.prj``, GeoPackage, GeoJSON, ...) in any CRS;
    ``field`` the attribute that holds each polygon's unit; ``legend`` maps units to classes (``--legend``, or
    the class names themselves); ``layer`` picks one of several; ``unlisted`` is ``"error"`` (units the legend
    does not name are listed with their areas in km^2) or ``"ignore"`` (they become 255).
    """
    import geopandas
    import shapely
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    path = Path(path)
    frame = _read(path, layer)
    columns = [c for c in frame.columns if c != frame.geometry.name]
    if field is None:
        raise UserError(f"--label-field: required for the vector map {path} (the field that names each polygon's "
                        f"unit; it has {', '.join(columns) or 'no fields'})")
    if field not in frame.columns:
        raise UserError(f"--label-field {field}: {path} has no such field (it has {', '.join(columns) or 'none'})")
    if frame.crs is None:
        raise UserError(f"{path}: no CRS (expected a map with its coordinate reference system, e.g. the .prj "
                        f"beside a Shapefile)")
    polygons = frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"]) & ~frame.geometry.is_empty
    if not polygons.any():
        raise UserError(f"{path}: no polygons (expected the geological units as polygons)")
    frame = frame[polygons]

    west, south, east, north, dlon, dlat = node_cells(lon, lat)
    if not frame.crs.equals("EPSG:4326"):
        half_node_m = 0.5 * min(dlon, dlat) * KM_PER_DEG * 1000.0
        step = half_node_m / frame.crs.axis_info[0].unit_conversion_factor if frame.crs.is_projected \
            else 0.5 * min(dlon, dlat)
        frame = frame.set_geometry(frame.geometry.segmentize(step)).to_crs("EPSG:4326")
    frame = frame.cx[west:east, south:north]
    if frame.empty:
        raise UserError(f"{path}: no polygon reaches the gravity region's nodes (E{lon[0]:g}-{lon[-1]:g}, "
                        f"N{lat[0]:g}-{lat[-1]:g})")
    units = frame[field].to_numpy()
    missing = np.asarray([u is None or (isinstance(u, float) and math.isnan(u)) for u in units])
    keys = np.asarray(["" if m else u for u, m in zip(units, missing)], dtype=object)
    distinct = list(dict.fromkeys(keys.tolist()))
    geometry = frame.geometry.to_numpy()

    def areas_km2(positions: list[int]) -> list[float]:
        """Each unit's area inside the nodes' cells, in an equal-area (cylindrical) projection, in which the
        map's edges along meridians and parallels stay straight."""
        out = []
        for p in positions:
            clipped = shapely.clip_by_rect(geometry[keys == distinct[p]], west, south, east, north)
            out.append(float(geopandas.GeoSeries(clipped, crs="EPSG:4326").to_crs(EQUAL_AREA).area.sum()) / 1e6)
        return out

    lookup = legend.classify(distinct, what=f"{path} (field {field})", unlisted=unlisted, areas_km2=areas_km2)
    index = {key: int(lookup[i]) for i, key in enumerate(distinct)}
    classes = np.asarray([index[k] for k in keys], dtype=np.int16)

    k = int(oversample)
    burned = rasterize(((g, int(c)) for g, c in zip(geometry, classes)), out_shape=(lat.size * k, lon.size * k),
                       transform=from_origin(west, north, dlon / k, dlat / k), fill=-1, dtype="int16",
                       all_touched=False)
    outside = burned < 0
    if outside.all():
        raise UserError(f"{path}: no polygon covers any of the gravity region's nodes")
    share = float(outside.mean())
    if share > 0.001:
        warnings.warn(f"{path}: {100 * share:.1f} % of the gravity region lies outside every polygon "
                      f"(labelled 255: not learned, not scored)", stacklevel=2)
    burned = np.where(outside, COVER_INDEX, burned).astype(np.uint8)[::-1]
    samples = GeoGrid(west + (np.arange(lon.size * k) + 0.5) * dlon / k,
                      south + (np.arange(lat.size * k) + 0.5) * dlat / k, burned, name="label", units="",
                      source=str(path), registration="pixel")
    return resample_labels(samples, lon, lat, method="mode")
