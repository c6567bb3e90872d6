"""Geological label grids (netCDF) and label images (PNG/TIFF coloured with Table 1's colours): reading, checking
the values against the class list, writing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import netCDF4
import numpy as np

from ggmnet.classes import TABLE1, ClassList
from ggmnet.datasets.geo import GeoGrid, Region
from ggmnet.datasets.netcdf import NETCDF_MAGIC, check_exists, read_geographic, write_axes
from ggmnet.engine.runio import atomic_path
from ggmnet.errors import UserError, one_line

#: Default colour tolerance of label images: largest absolute difference of any RGB channel.
COLOUR_TOLERANCE = 12
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def check_label_values(values: np.ndarray, path: Path | str, name: str,
                        classes: ClassList = TABLE1) -> np.ndarray:
    """Return ``values`` as uint8 when every value is a class index 0..K-1 of ``classes`` or 255, else raise."""
    valid = classes.valid_labels
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        integral = np.zeros(values.shape, dtype=bool)
        integral[finite] = values[finite] == np.round(values[finite])
        ok = integral & np.isin(np.where(finite, values, -1), valid)
    else:
        ok = np.isin(values, valid)
    if not ok.all():
        bad, counts = np.unique(values[~ok], return_counts=True)
        listing = ", ".join(f"{v:g} x {c}" for v, c in zip(bad[:8].tolist(), counts[:8].tolist()))
        more = f" and {bad.size - 8} more" if bad.size > 8 else ""
        raise UserError(f"{path}: {name} has {bad.size} invalid value(s) (expected class indices "
                        f"0-{classes.num_classes - 1} and 255 for cover, or a --legend that names them): "
                        f"{listing}{more}")
    return values.astype(np.uint8)


def read_label_grid(path: str | os.PathLike, variable: str | None = None) -> GeoGrid:
    """Read the label grid ``variable`` (default ``label``, else the only 2-D variable) of a netCDF file with
    lon/lat (or x/y) axes: uint8 class indices 0-9, 255 for Cenozoic cover."""
    path = Path(path)
    lon, lat, values, name, _units, registration = read_geographic(
        path, variable, ("label",), "a label grid: netCDF with lon, lat and uint8 classes 0-9, 255 cover",
        mask=False)
    values = check_label_values(values, path, name)
    return GeoGrid(lon, lat, values, name=name, units="", source=str(path), registration=registration)


def sidecar_bounds(path: Path) -> Region:
    """The outer edges of an image without georeferencing from ``PATH.json`` (e.g. ``labels.png.json``) or
    ``labels.json`` holding ``{"west":..,"east":..,"south":..,"north":..}`` in degrees."""
    candidates = [path.with_name(path.name + ".json"), path.with_suffix(".json")]
    for side in candidates:
        if side.is_file():
            try:
                mapping = json.loads(side.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise UserError(f"{side}: not valid JSON ({one_line(err)})") from None
            if not isinstance(mapping, dict):
                raise UserError(f"{side}: expected {{\"west\":..,\"east\":..,\"south\":..,\"north\":..}}")
            return Region.from_dict(mapping, source=str(side))
    raise UserError(f"{path}: no bounds for the image; pass --label-bounds W,E,S,N or write "
                    f"{candidates[1].name} with {{\"west\":..,\"east\":..,\"south\":..,\"north\":..}}")


def colours_to_classes(rgb: np.ndarray, *, tolerance: int = COLOUR_TOLERANCE, source: str = "image",
                       classes: ClassList = TABLE1) -> np.ndarray:
    """Map RGB pixels (..., 3) uint8 in ``classes``' colours (default Table 1's) to class indices (...) uint8
    (255 for cover).

    A pixel takes the palette colour nearest to it (largest channel difference) when that difference is at
    most ``tolerance``; any other colour raises a :class:`UserError` listing up to 8 of them with pixel counts.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    channels = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=-1)
    palette = classes.palette()[list(classes.valid_labels)].astype(np.int32)
    indices = np.asarray(classes.valid_labels, dtype=np.uint8)
    distance = np.abs(channels[:, None, :] - palette[None, :, :]).max(axis=-1)
    nearest = distance.argmin(axis=1)
    unknown = distance[np.arange(colours.size), nearest] > tolerance
    if unknown.any():
        order = np.argsort(-counts[unknown], kind="stable")
        bad_colours, bad_counts = colours[unknown][order], counts[unknown][order]
        listing = ", ".join(f"#{c:06x} x {n} px" for c, n in zip(bad_colours[:8].tolist(), bad_counts[:8].tolist()))
        more = f", and {bad_colours.size - 8} more" if bad_colours.size > 8 else ""
        palette_name = "Table 1's palette" if classes == TABLE1 else "the class list's colours"
        raise UserError(f"{source}: {bad_colours.size} unknown colour{'s' if bad_colours.size > 1 else ''} "
                        f"(expected {palette_name} within {tolerance}): {listing}{more}")
    return indices[nearest][inverse].reshape(packed.shape)


def read_label_image(path: str | os.PathLike, bounds: Region | None = None, *,
                     tolerance: int = COLOUR_TOLERANCE) -> GeoGrid:
    """Read an RGB or palette PNG/TIFF label map drawn in Table 1's colours (within ``tolerance`` on every
    channel) as uint8 class indices, latitude ascending (row 0 of the image is the north edge) and
    ``registration="pixel"``. ``bounds``: the image's outer edges in degrees; default from a sidecar
    (:func:`sidecar_bounds`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_exists(path, "a PNG/TIFF label image")
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as an image ({one_line(err)})") from None
    region = bounds if bounds is not None else sidecar_bounds(path)
    classes = colours_to_classes(rgb, tolerance=tolerance, source=str(path))
    ny, nx = classes.shape
    dlon, dlat = region.width_deg / nx, region.height_deg / ny
    lon = region.west + (np.arange(nx) + 0.5) * dlon
    lat = region.south + (np.arange(ny) + 0.5) * dlat
    return GeoGrid(lon, lat, classes[::-1].copy(), name="label", units="", source=str(path),
                   registration="pixel")


def read_labels(path: str | os.PathLike, bounds: Region | None = None) -> GeoGrid:
    """Read labels from a netCDF label grid or a PNG/TIFF image, judged by the file's first bytes.

    ``bounds`` applies to images only (a netCDF grid carries its own coordinates).
    """
    path = Path(path)
    check_exists(path, "a label grid (netCDF) or a label image (PNG/TIFF)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(NETCDF_MAGIC):
        if bounds is not None:
            raise UserError(f"{path}: label bounds apply to images only; a netCDF label grid carries its own "
                            f"coordinates")
        return read_label_grid(path)
    if head.startswith(_IMAGE_MAGIC):
        return read_label_image(path, bounds)
    raise UserError(f"{path}: neither netCDF nor PNG/TIFF (expected a label grid or a label image)")


def write_label_grid(path: str | os.PathLike, grid: GeoGrid, variable: str = "label", *,
                     classes: ClassList = TABLE1) -> Path:
    """Write uint8 labels (0..K-1 of ``classes``, 255 cover) with ``lon``/``lat`` and CF
    ``flag_values``/``flag_meanings``."""
    path = Path(path)
    values = check_label_values(np.asarray(grid.values), path, variable, classes)
    meanings = classes.flag_meanings()
    with atomic_path(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.8"
        ds.node_offset = np.int32(1 if grid.registration == "pixel" else 0)
        write_axes(ds, grid, "lon", "lat")
        var = ds.createVariable(variable, "u1", ("lat", "lon"), zlib=True, complevel=4)
        var.long_name = "bedrock class (Table 1)" if classes == TABLE1 else "bedrock class"
        var.flag_values = np.asarray(classes.valid_labels, dtype=np.uint8)
        var.flag_meanings = meanings
        var[:] = values
    return path
