"""Gravity and label rasters in any CRS (GeoTIFF and whatever else GDAL reads) and ICGEM ``.gdf`` grids.

Georeferencing travels with the data: a raster's own CRS and transform place it, and nothing is asked that the
file already says.

* **Gravity** (:func:`read_gravity_raster`): read with rioxarray (nodata masked, scale and offset applied). A
  north-up raster in EPSG:4326 keeps its nodes (the pixel centres). Any other raster is reprojected with
  rasterio (cubic convolution) onto a longitude/latitude grid whose spacing is the "round" spacing nearest
  to its own (:func:`nice_spacing_deg`: 2' for a 3.7 km grid) and whose nodes are multiples of that spacing,
  trimmed to where the raster has data.
* **Labels** (:func:`label_raster_on_nodes`): a single-band raster holds codes (class indices, or units of a
  ``--legend``); a raster of three or more bands, or a single band whose colour table is not the class list's
  own, holds colours (mapped to the nearest class colour, as label images are). Nodata pixels are 255. The
  classes reach the processing grid's nodes by majority: a north-up EPSG:4326 raster through
  :func:`ggmnet.datasets.resample.resample_labels`, any other through rasterio's ``mode`` resampling.
* **ICGEM** (:func:`read_icgem_gdf`): harmonica's reader (``harmonica.load_icgem_gdf``).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ggmnet.classes import COVER_INDEX, TABLE1, ClassList
from ggmnet.datasets.geo import KM_PER_DEG, GeoGrid, Region, cell_area_km2, node_cells
from ggmnet.datasets.labels import COLOUR_TOLERANCE, colours_to_classes, sidecar_bounds
from ggmnet.datasets.legend import Legend, codes_to_classes
from ggmnet.datasets.netcdf import canonical_orientation, gravity_grid
from ggmnet.datasets.resample import resample_labels
from ggmnet.errors import UserError, one_line

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS

#: Node spacings (degrees) a reprojected raster may take: the round fractions of a degree grids use.
NICE_SPACINGS_DEG = tuple([s / 3600.0 for s in (1, 2, 3, 5, 6, 7.5, 10, 15, 20, 30)]
                          + [m / 60.0 for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 10, 12, 15, 20, 30)]
                          + [1.0, 2.0, 5.0])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence rasterio's warning about rasters without georeferencing (this module asks for bounds itself)."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _open(path: Path, what: str) -> Any:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with _quiet():
            return rasterio.open(path)
    except RasterioIOError as err:
        raise UserError(f"{path}: cannot be read as a raster ({one_line(err)}); expected {what}") from None


def readable(path: str | os.PathLike, *, georeferenced: bool = False) -> bool:
    """Whether GDAL (through rasterio) opens ``path`` as a raster (``georeferenced``: one that carries a CRS)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with _quiet(), rasterio.open(path) as src:
            return src.crs is not None or not georeferenced
    except (RasterioIOError, OSError):
        return False


def _is_lonlat(crs: CRS | None) -> bool:
    """WGS 84 longitude/latitude (EPSG:4326 or OGC:CRS84), the processing grid's own coordinates."""
    return crs is not None and (crs.to_epsg() == 4326
                                or crs.to_string().upper() in ("OGC:CRS84", "EPSG:4326"))


def _axis_aligned(transform: Affine) -> bool:
    return transform.b == 0 and transform.d == 0


def nice_spacing_deg(native_deg: float) -> float:
    """The spacing of :data:`NICE_SPACINGS_DEG` nearest (in ratio) to ``native_deg`` degrees."""
    if not (math.isfinite(native_deg) and native_deg > 0):
        raise ValueError(f"native spacing {native_deg} must be a positive number of degrees")
    return min(NICE_SPACINGS_DEG, key=lambda s: abs(math.log(s / native_deg)))


def _native_spacing_deg(transform: Affine, crs: CRS) -> float:
    """A raster's finer pixel side in degrees of latitude (projected units converted through metres)."""
    side = min(math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e))
    return side if crs.is_geographic else side * crs.linear_units_factor[1] / (KM_PER_DEG * 1000.0)


def _trim_nan_border(values: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of ``values`` left after peeling off, edge by edge, the border rows and columns that
    hold NaN (the outside of a reprojected raster's footprint), worst edge first."""
    bad = ~np.isfinite(values)
    box = [0, values.shape[0], 0, values.shape[1]]  # first row, end row, first column, end column
    while box[1] - box[0] > 1 and box[3] - box[2] > 1:
        block = bad[box[0]:box[1], box[2]:box[3]]
        edges = (block[0].mean(), block[-1].mean(), block[:, 0].mean(), block[:, -1].mean())
        worst = int(np.argmax(edges))
        if edges[worst] == 0:
            break
        box[worst] += 1 if worst % 2 == 0 else -1  # that edge moves one row or column inwards
    return slice(box[0], box[1]), slice(box[2], box[3])


#: Largest error, in source pixels, of the approximated coordinate transformation of a warp. GDAL's default
#: (0.125 px) moves a 5 km pixel by up to 0.6 km, more than cubic interpolation's own error.
WARP_TOLERANCE_PX = 1e-6


def warp_to_lonlat(values: np.ndarray, transform: Affine, crs: CRS, dst_transform: Affine, shape: tuple[int, int],
                   resampling: Any, nodata: float) -> np.ndarray:
    """``values`` (rows, cols) of a raster in ``crs`` resampled onto the EPSG:4326 pixels ``dst_transform`` of
    ``shape`` (north-up), with the coordinate transformation exact to :data:`WARP_TOLERANCE_PX`; ``nodata``
    marks missing values in and out."""
    from rasterio.crs import CRS
    from rasterio.io import MemoryFile
    from rasterio.vrt import WarpedVRT

    rows, cols = values.shape
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=cols, height=rows, count=1, dtype=values.dtype, crs=crs,
                         transform=transform, nodata=nodata) as src:
            src.write(values, 1)
        with memory.open() as src, WarpedVRT(src, crs=CRS.from_epsg(4326), transform=dst_transform,
                                             width=shape[1], height=shape[0], resampling=resampling,
                                             tolerance=WARP_TOLERANCE_PX, src_nodata=nodata,
                                             nodata=nodata) as vrt:
            return vrt.read(1)


def reproject_to_lonlat(values: np.ndarray, transform: Affine, crs: CRS,
                        path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A raster (rows, cols) with NaN for no data, reprojected by cubic convolution onto longitude/latitude
    nodes at :func:`nice_spacing_deg` of its own pixel size, trimmed to its footprint.

    Returns ``lon`` (nx,), ``lat`` (ny,) ascending degrees (multiples of the spacing) and ``values`` (ny, nx).
    """
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.transform import array_bounds, from_origin
    from rasterio.warp import transform as warp_transform
    from rasterio.warp import transform_bounds

    rows, cols = values.shape
    south_n, west_n, north_n, east_n = array_bounds(rows, cols, transform)
    west, south, east, north = transform_bounds(crs, CRS.from_epsg(4326), west_n, south_n, east_n, north_n,
                                                densify_pts=51)
    step = nice_spacing_deg(_native_spacing_deg(transform, crs))
    lon = np.round(np.arange(math.ceil(west / step - 1e-9), math.floor(east / step + 1e-9) + 1) * step, 10)
    lat = np.round(np.arange(math.ceil(south / step - 1e-9), math.floor(north / step + 1e-9) + 1) * step, 10)
    if lon.size < 2 or lat.size < 2:
        raise UserError(f"{path}: too small to give 2 x 2 longitude/latitude nodes at {step * 60:g}'")
    out = warp_to_lonlat(np.asarray(values, dtype=np.float64), transform, crs,
                         from_origin(lon[0] - step / 2, lat[-1] + step / 2, step, step), (lat.size, lon.size),
                         Resampling.cubic, np.nan)
    # cubic convolution reads 2 pixels either side: nodes nearer the raster's edge than that are not kept
    glon, glat = np.meshgrid(lon, lat[::-1])
    x, y = warp_transform(CRS.from_epsg(4326), crs, glon.ravel(), glat.ravel())
    col, row = ~transform * (np.asarray(x), np.asarray(y))
    inside = ((col - 0.5 >= 1.0) & (col - 0.5 <= cols - 2.0) & (row - 0.5 >= 1.0) & (row - 0.5 <= rows - 2.0))
    out[~inside.reshape(out.shape)] = np.nan
    out = out[::-1]
    keep_rows, keep_cols = _trim_nan_border(out)
    lon, lat, out = lon[keep_cols], lat[keep_rows], out[keep_rows, keep_cols]
    if lon.size < 2 or lat.size < 2:
        raise UserError(f"{path}: no 2 x 2 longitude/latitude nodes inside its footprint")
    return lon, lat, np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------- gravity

def _band_index(path: Path, variable: str | None, descriptions: tuple[str | None, ...], what: str,
                option: str = "--variable") -> int:
    """The 0-based band ``option`` names: a 1-based number or a band description; the only band without."""
    count = len(descriptions)
    listing = ", ".join(f"{k + 1}" + (f" ({d})" if d else "") for k, d in enumerate(descriptions))
    if variable is None:
        if count == 1:
            return 0
        raise UserError(f"{path}: {count} bands ({listing}); name the one to use with {option} (its number "
                        f"or description)")
    text = str(variable).strip()
    if text.isdigit() and 1 <= int(text) <= count:
        return int(text) - 1
    if text in descriptions:
        return descriptions.index(text)
    raise UserError(f"{option} {variable}: {path} has no such band ({listing}; expected {what})")


def read_gravity_raster(path: str | os.PathLike, *, fill_nan: bool = False,
                        variable: str | None = None) -> GeoGrid:
    """Read the band ``variable`` (1-based number or description; default the only band) of a georeferenced
    gravity raster (mGal; nodata masked, scale and offset applied) as a longitude/latitude :class:`GeoGrid`.

    A north-up EPSG:4326 raster keeps its pixel centres as nodes (registration ``"gridline"`` for an
    ``AREA_OR_POINT=Point`` raster, else ``"pixel"``); any other is reprojected (:func:`reproject_to_lonlat`,
    ``"gridline"``). ``fill_nan``: fill NaN nodes (:func:`ggmnet.datasets.netcdf.fill_holes`) instead of
    refusing them.
    """
    import rioxarray

    path = Path(path)
    what = "a gravity raster in mGal"
    try:
        with _quiet():
            data = rioxarray.open_rasterio(path, mask_and_scale=True)
    except Exception as err:  # rioxarray raises whatever GDAL or xarray raise for a bad file
        raise UserError(f"{path}: cannot be read as a raster ({one_line(err)}); expected {what}") from None
    with data:
        crs = data.rio.crs
        if crs is None:
            raise UserError(f"{path}: no CRS (expected a georeferenced raster, e.g. a GeoTIFF)")
        names = data.attrs.get("long_name")
        count = int(data.sizes["band"])
        descriptions = tuple(names) if isinstance(names, (tuple, list)) else ((names,) if count == 1 else
                                                                              (None,) * count)
        band = _band_index(path, variable, descriptions, what)
        values = np.asarray(data.isel(band=band).values, dtype=np.float64)
        transform = data.rio.transform()
        point = str(data.attrs.get("AREA_OR_POINT", "Area")).lower() == "point"
        x, y = np.asarray(data.x.values, dtype=np.float64), np.asarray(data.y.values, dtype=np.float64)
    name = descriptions[band] or f"band {band + 1}"
    if _is_lonlat(crs) and _axis_aligned(transform):
        lon, lat, values = canonical_orientation(x, y, values, path)
        registration = "gridline" if point else "pixel"
    else:
        lon, lat, values = reproject_to_lonlat(values, transform, crs, path)
        registration = "gridline"
    return gravity_grid(lon, lat, values, name=str(name), path=path, registration=registration, fill_nan=fill_nan)


def is_icgem(path: Path, head: bytes) -> bool:
    """Whether ``path`` looks like an ICGEM grid: the ``.gdf`` suffix, or ``end_of_head`` in its first bytes."""
    return path.suffix.lower() == ".gdf" or b"end_of_head" in head


def read_icgem_gdf(path: str | os.PathLike, *, fill_nan: bool = False, variable: str | None = None) -> GeoGrid:
    """Read an ICGEM Calculation Service grid (``.gdf``) with harmonica's reader (``harmonica.load_icgem_gdf``).

    ``variable`` names the column to use where the file holds several (e.g. ``gravity_anomaly_bg`` beside
    ``h_over_geoid``); the constant ``height_over_ell`` harmonica adds from the header is not a column. The
    values must be in mGal (a column in other units is refused).
    """
    path = Path(path)
    try:
        import harmonica
    except ImportError:
        raise UserError(f"{path}: reading ICGEM .gdf grids needs harmonica (pip install harmonica)") from None
    try:
        grid = harmonica.load_icgem_gdf(path)
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise UserError(f"{path}: cannot be read as an ICGEM .gdf grid ({one_line(err)})") from None
    columns = str(grid.attrs.get("attributes", "")).split()
    units = dict(zip(columns, str(grid.attrs.get("attributes_units", "")).split()))
    candidates = [c for c in columns if c not in ("longitude", "latitude") and c in grid.data_vars]
    if variable is not None:
        if variable not in candidates:
            raise UserError(f"--variable {variable}: {path} has no such column (it has "
                            f"{', '.join(candidates) or 'none'})")
        name = variable
    elif len(candidates) == 1:
        name = candidates[0]
    else:
        raise UserError(f"{path}: {len(candidates)} grids ({', '.join(candidates) or 'none'}); name the one to use "
                        f"with --variable")
    unit = units.get(name, "")
    if unit and unit.lower().replace(" ", "") not in ("mgal", "milligal"):
        raise UserError(f"{path}: column {name} is in {unit} (expected a gravity anomaly in mGal)")
    values = np.asarray(grid[name].values, dtype=np.float64)
    try:
        gap = float(str(grid.attrs.get("gapvalue", "nan")).split()[0])
    except ValueError:
        gap = math.nan
    values = np.where(values == gap, np.nan, values)  # the header's gap value marks nodes without data
    lon, lat, values = canonical_orientation(np.asarray(grid["longitude"].values),
                                             np.asarray(grid["latitude"].values), values, path)
    return gravity_grid(lon, lat, values, name=name, path=path, registration="gridline", fill_nan=fill_nan)


# --------------------------------------------------------------------------------------------- labels

def _read_window(src: Any, transform: Affine, crs: CRS, lon: np.ndarray, lat: np.ndarray,
                 path: Path) -> tuple[Any, Affine]:
    """The raster window (with a margin of 2 pixels) that covers the nodes' cells, and its transform."""
    from rasterio import windows
    from rasterio.crs import CRS
    from rasterio.errors import WindowError
    from rasterio.warp import transform_bounds

    full = windows.Window(0, 0, src.width, src.height)
    if not _axis_aligned(transform):  # a rotated raster: read it whole
        return full, transform
    west, south, east, north, _, _ = node_cells(lon, lat)
    if not _is_lonlat(crs):
        west, south, east, north = transform_bounds(CRS.from_epsg(4326), crs, west, south, east, north,
                                                    densify_pts=51)
    window = windows.from_bounds(west, south, east, north, transform)
    window = windows.Window(math.floor(window.col_off) - 2, math.floor(window.row_off) - 2,
                            math.ceil(window.width) + 5, math.ceil(window.height) + 5)
    try:
        window = window.intersection(full)
    except WindowError:
        raise UserError(f"{path} does not reach the gravity region's nodes (E{lon[0]:g}-{lon[-1]:g}, "
                        f"N{lat[0]:g}-{lat[-1]:g})") from None
    return window, windows.transform(window, transform)


def _pixel_areas_km2(transform: Affine, crs: CRS, shape: tuple[int, int]) -> Callable[[np.ndarray], float]:
    """``areas(mask)``: the area in km^2 of the pixels where ``mask`` (rows, cols) is set (exact for a north-up
    longitude/latitude raster; a projected raster's pixels are taken at their nominal size)."""
    determinant = abs(transform.a * transform.e - transform.b * transform.d)
    if crs.is_geographic and _axis_aligned(transform):
        rows = transform.f + (np.arange(shape[0]) + 0.5) * transform.e
        per_row = cell_area_km2(rows, transform.a, transform.e)
        return lambda mask: float((mask * per_row[:, None]).sum())
    if crs.is_geographic:  # a rotated grid: degrees squared at its middle latitude
        middle = (transform * (shape[1] / 2, shape[0] / 2))[1]
        pixel = determinant * KM_PER_DEG ** 2 * math.cos(math.radians(middle))
    else:
        pixel = determinant * crs.linear_units_factor[1] ** 2 / 1e6
    return lambda mask: float(mask.sum()) * pixel


def _decode(data: np.ndarray, valid: np.ndarray, colormap: dict[int, tuple[int, ...]] | None, *, path: Path,
            legend: Legend | None, unlisted: str, classes: ClassList, tolerance: int,
            areas: Callable[[np.ndarray], float]) -> np.ndarray:
    """Class indices (rows, cols) uint8 of a label raster's bands ``data`` (bands, rows, cols); 255 where not
    ``valid`` (nodata)."""
    if data.shape[0] >= 3:
        if legend is not None:
            raise UserError(f"--legend: {path} is a colour image ({data.shape[0]} bands); a legend names the codes "
                            f"of a single-band raster or the units of a vector map")
        rgb = np.moveaxis(np.clip(data[:3], 0, 255).astype(np.uint8), 0, -1)
        out = colours_to_classes(rgb, tolerance=tolerance, source=str(path), classes=classes)
        if data.shape[0] >= 4:
            valid = valid & (data[3] > 0)
        return np.where(valid, out, COVER_INDEX).astype(np.uint8)
    values = data[0]
    if colormap and legend is None and np.issubdtype(values.dtype, np.integer):
        used = np.unique(values[valid])
        lut = classes.palette()
        own = all(int(v) in classes.valid_labels and tuple(colormap.get(int(v), (0, 0, 0))[:3]) == tuple(lut[int(v)])
                  for v in used)
        if not own:  # a colour-mapped raster: its colours are the classes
            table = np.zeros((int(max(used.max(initial=0), 255)) + 1, 3), dtype=np.uint8)
            for v, colour in colormap.items():
                if 0 <= v < table.shape[0]:
                    table[v] = colour[:3]
            rgb = table[np.clip(values, 0, table.shape[0] - 1)]
            out = colours_to_classes(rgb, tolerance=tolerance, source=str(path), classes=classes)
            return np.where(valid, out, COVER_INDEX).astype(np.uint8)
    filled = np.where(valid, values, values[valid][0] if valid.any() else 0)
    out = codes_to_classes(filled, legend=legend, classes=classes, source=str(path), name="band of codes",
                           unlisted=unlisted, areas_km2=lambda mask: areas(mask & valid))
    return np.where(valid, out, COVER_INDEX).astype(np.uint8)


def label_raster_on_nodes(path: str | os.PathLike, lon: np.ndarray, lat: np.ndarray, *,
                          bounds: Region | None = None, variable: str | None = None, legend: Legend | None = None,
                          unlisted: str = "error", classes: ClassList = TABLE1,
                          tolerance: int = COLOUR_TOLERANCE) -> np.ndarray:
    """The classes (uint8 (ny, nx), 255 for cover and nodata) of a label raster on the nodes ``lon`` (nx,) x
    ``lat`` (ny,) (ascending degrees), by majority.

    ``path`` is a raster GDAL reads: a GeoTIFF in any CRS, or a PNG/TIFF without georeferencing placed by
    ``bounds`` in degrees (or a sidecar ``PATH.json``; ``bounds`` is refused for a raster that has its own).
    ``variable``, ``legend``, ``unlisted`` and ``classes`` are as :func:`ggmnet.datasets.readers.read_label_nodes`
    (``classes`` also gives a colour raster's colours); ``tolerance`` is the largest channel difference of a
    colour from its class colour.
    """
    from rasterio.crs import CRS

    path = Path(path)
    src = _open(path, "a label raster")
    with src:
        if src.crs is not None:
            if bounds is not None:
                raise UserError(f"--label-bounds {bounds}: {path} carries its own georeferencing ({src.crs}); "
                                f"leave --label-bounds out")
            crs, transform = src.crs, src.transform
        else:
            from rasterio.transform import from_bounds

            region = bounds if bounds is not None else sidecar_bounds(path)
            crs = CRS.from_epsg(4326)
            transform = from_bounds(region.west, region.south, region.east, region.north, src.width, src.height)
        window, window_transform = _read_window(src, transform, crs, lon, lat, path)
        if src.count >= 3:
            bands = [1, 2, 3] + ([4] if src.count >= 4 and src.colorinterp[3].name == "alpha" else [])
        else:
            bands = [_band_index(path, variable, tuple(src.descriptions), "a band of class codes",
                                 "--label-variable") + 1]
        data = src.read(bands, window=window)
        valid = src.read_masks(bands[0], window=window) > 0
        colormap = None
        if len(bands) == 1:
            with contextlib.suppress(ValueError):  # no colour table
                colormap = src.colormap(bands[0])
        point = str(src.tags().get("AREA_OR_POINT", "Area")).lower() == "point"
    areas = _pixel_areas_km2(window_transform, crs, data.shape[1:])
    decoded = _decode(data, valid, colormap, path=path, legend=legend, unlisted=unlisted, classes=classes,
                      tolerance=tolerance, areas=areas)
    if _is_lonlat(crs) and _axis_aligned(window_transform):
        t = window_transform
        x = t.c + (np.arange(decoded.shape[1]) + 0.5) * t.a
        y = t.f + (np.arange(decoded.shape[0]) + 0.5) * t.e
        x, y, decoded = canonical_orientation(x, y, decoded, path)
        grid = GeoGrid(x, y, decoded, name="label", units="", source=str(path),
                       registration="gridline" if point else "pixel")
        return resample_labels(grid, lon, lat, method="mode")
    return _warp_labels(decoded, window_transform, crs, lon, lat, path)


def _warp_labels(decoded: np.ndarray, transform: Affine, crs: CRS, lon: np.ndarray, lat: np.ndarray,
                 path: Path) -> np.ndarray:
    """Classes (rows, cols) of a raster in ``crs`` onto the node cells by rasterio's ``mode`` resampling."""
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    west, _, _, north, dlon, dlat = node_cells(lon, lat)
    out = warp_to_lonlat(decoded.astype(np.int16), transform, crs, from_origin(west, north, dlon, dlat),
                         (lat.size, lon.size), Resampling.mode, -1)[::-1]
    outside = out < 0
    if outside.any():
        raise UserError(f"{path} does not cover {100 * outside.mean():.1f} % of the gravity region's nodes "
                        f"(E{lon[0]:g}-{lon[-1]:g}, N{lat[0]:g}-{lat[-1]:g})")
    return np.ascontiguousarray(out.astype(np.uint8))
