"""The doors for a geologist's own files: :func:`read_gravity` and :func:`read_label_nodes`.

Each judges a file by its content and hands it to the netCDF readers of :mod:`ggmnet.datasets.netcdf` and :mod:`ggmnet.datasets.labels`, to
:mod:`ggmnet.datasets.rasters` (GeoTIFF and other rasters in any CRS through rasterio/rioxarray, ICGEM ``.gdf``
through harmonica) or to :mod:`ggmnet.datasets.vectors` (Shapefile, GeoPackage, GeoJSON through geopandas), with
a legend (:mod:`ggmnet.datasets.legend`) where the map's codes or units are not Table 1's class indices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ggmnet.classes import TABLE1, ClassList
from ggmnet.datasets.geo import GeoGrid, Region, cell_area_km2, node_cells
from ggmnet.datasets.legend import codes_to_classes, names_legend, read_legend
from ggmnet.datasets.netcdf import NETCDF_MAGIC, check_exists, read_geographic, read_gravity_grid
from ggmnet.datasets.rasters import (
    is_icgem,
    label_raster_on_nodes,
    read_gravity_raster,
    read_icgem_gdf,
    readable,
)
from ggmnet.datasets.resample import resample_labels
from ggmnet.datasets.vectors import is_vector, label_vector_on_nodes
from ggmnet.errors import UserError


def read_gravity(path: str | os.PathLike, *, fill_nan: bool = False, variable: str | None = None) -> GeoGrid:
    """Read a gravity grid in mGal from any file a user brings, judged by its content.

    * netCDF (WGM2012 / GMT / CF): :func:`read_gravity_grid`;
    * ICGEM ``.gdf``: harmonica's reader (:func:`ggmnet.datasets.rasters.read_icgem_gdf`);
    * GeoTIFF or another raster GDAL reads, in any CRS: :func:`ggmnet.datasets.rasters.read_gravity_raster`
      (a projected raster is reprojected onto a longitude/latitude grid).

    ``variable`` names the grid where a file holds several (a netCDF variable, a raster band by number or
    description, an ICGEM column); ``fill_nan`` fills NaN nodes instead of refusing them.
    """
    path = Path(path)
    check_exists(path, "a gravity grid: netCDF, GeoTIFF or ICGEM .gdf")
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if head.startswith(NETCDF_MAGIC):
        return read_gravity_grid(path, fill_nan=fill_nan, variable=variable)
    if is_icgem(path, head):
        return read_icgem_gdf(path, fill_nan=fill_nan, variable=variable)
    if readable(path, georeferenced=True):
        return read_gravity_raster(path, fill_nan=fill_nan, variable=variable)
    raise UserError(f"{path}: not a gravity grid GGMNet reads (expected netCDF, a georeferenced raster such as "
                    f"GeoTIFF, or ICGEM .gdf)")


def read_label_nodes(path: str | os.PathLike, lon: np.ndarray, lat: np.ndarray, *, bounds: Region | None = None,
                     variable: str | None = None, field: str | None = None,
                     legend: str | os.PathLike | None = None, unlisted: str = "error",
                     classes: ClassList | None = None) -> tuple[np.ndarray, ClassList]:
    """The classes of any geological map a user brings on the nodes ``lon`` (nx,) x ``lat`` (ny,) (ascending
    degrees), by majority, and the class list they index.

    The file is judged by its content:

    * netCDF: a label grid of codes (:func:`read_label_grid`'s layout);
    * a vector map (Shapefile, GeoPackage, GeoJSON, ...): :func:`ggmnet.datasets.vectors.label_vector_on_nodes`,
      the unit of each polygon in ``field``;
    * a raster (GeoTIFF in any CRS, or PNG/TIFF placed by ``bounds``):
      :func:`ggmnet.datasets.rasters.label_raster_on_nodes`, codes or colours.

    Parameters
    ----------
    bounds
        Outer edges (degrees) of a raster without georeferencing.
    variable
        The netCDF variable, raster band or vector layer, where the file holds several.
    field
        The unit field of a vector map (``--label-field``).
    legend
        A legend CSV (:mod:`ggmnet.datasets.legend`): codes or units -> classes; it also sets the class list
        (Table 1 when it names only Table 1's classes).
    unlisted
        ``"error"`` or ``"ignore"``: what to do with units the legend does not name.
    classes
        The class list the codes must index (a checkpoint's, when predicting); default Table 1, or the
        legend's.

    Returns
    -------
    (ndarray (ny, nx) uint8, ClassList)
        Class indices (255 = cover, and where the map has no data) and their class list.
    """
    path = Path(path)
    check_exists(path, "a geological map: label grid (netCDF), raster (GeoTIFF, PNG) or vector map")
    legend_map = read_legend(legend, base=classes) if legend is not None else None
    class_list = legend_map.classes if legend_map is not None else (classes or TABLE1)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if is_vector(path, head):
        if bounds is not None:
            raise UserError(f"--label-bounds {bounds}: {path} is a vector map with its own coordinates")
        values = label_vector_on_nodes(path, lon, lat, field=field, legend=legend_map or names_legend(
            class_list), layer=variable, unlisted=unlisted)
        return values, class_list
    if field is not None:
        raise UserError(f"--label-field {field}: applies to vector maps; {path} is a grid (its codes are the "
                        f"units a --legend names)")
    if head.startswith(NETCDF_MAGIC):
        if bounds is not None:
            raise UserError(f"{path}: label bounds apply to images only; a netCDF label grid carries its own "
                            f"coordinates")
        grid_lon, grid_lat, raw, name, _units, registration = read_geographic(
            path, variable, ("label",), "a label grid: netCDF with lon, lat and class codes", mask=False)
        *_, dlon, dlat = node_cells(grid_lon, grid_lat)
        per_row = cell_area_km2(grid_lat, dlon, dlat)
        values = codes_to_classes(raw, legend=legend_map, classes=class_list, source=str(path), name=name,
                                  unlisted=unlisted, areas_km2=lambda mask: float((mask * per_row[:, None]).sum()))
        grid = GeoGrid(grid_lon, grid_lat, values, name=name, units="", source=str(path), registration=registration)
        return resample_labels(grid, lon, lat, method="mode"), class_list
    if readable(path):
        return label_raster_on_nodes(path, lon, lat, bounds=bounds, variable=variable, legend=legend_map,
                                     unlisted=unlisted, classes=class_list), class_list
    raise UserError(f"{path}: not a geological map GGMNet reads (expected a label grid in netCDF, a raster such as "
                    f"GeoTIFF or PNG, or a vector map: Shapefile, GeoPackage, GeoJSON)")
