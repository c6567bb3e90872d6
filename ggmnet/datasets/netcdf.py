"""Gravity grids in netCDF (WGM2012, GMT ``grdconvert`` output, CF-style files): reading any layout users meet,
filling holes, writing GMT-style grids; every problem with a file is a one-line
:class:`ggmnet.errors.UserError` naming that file."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ggmnet.datasets.geo import GeoGrid
from ggmnet.engine.runio import atomic_path
from ggmnet.errors import UserError, one_line

_LON_NAMES = ("x", "lon", "longitude", "long", "lng")
_LAT_NAMES = ("y", "lat", "latitude")
#: The first bytes of a netCDF-3 or netCDF-4 (HDF5) file.
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file (expected {what})")
    if not path.is_file():
        raise UserError(f"{path}: not a file (expected {what})")


def _open_netcdf(path: Path, what: str) -> netCDF4.Dataset:
    check_exists(path, what)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head.startswith(NETCDF_MAGIC):
        raise UserError(f"{path}: not a netCDF file (expected {what})")
    try:
        ds = netCDF4.Dataset(path, "r")
    except OSError as err:
        raise UserError(f"{path}: cannot be read as netCDF, truncated or damaged? ({one_line(err)})") from None
    if ds.file_format.startswith("NETCDF3"):
        # classic files hold every variable uncompressed after the header, and the library reads the part of
        # a truncated file past its end as zeros; so the file must be at least as long as its variables
        needed = sum(4 * math.ceil(math.prod(v.shape) * v.dtype.itemsize / 4) for v in ds.variables.values())
        size = path.stat().st_size
        if size < needed:
            ds.close()
            raise UserError(f"{path}: truncated or damaged netCDF file ({size} bytes, its variables need at "
                            f"least {needed})")
    return ds


def _axis_kind(var: netCDF4.Variable) -> str | None:
    """``"lon"``, ``"lat"`` or None, from the variable's name, units, standard_name or axis."""
    name = var.name.lower()
    attrs = {k: str(var.getncattr(k)).lower() for k in var.ncattrs()}
    units = attrs.get("units", "")
    if name in _LON_NAMES or attrs.get("standard_name") == "longitude" or units.startswith("degrees_e") \
            or attrs.get("axis") == "x":
        return "lon"
    if name in _LAT_NAMES or attrs.get("standard_name") == "latitude" or units.startswith("degrees_n") \
            or attrs.get("axis") == "y":
        return "lat"
    return None


def _pick_variable(ds: netCDF4.Dataset, path: Path, variable: str | None, preferred: tuple[str, ...],
                   what: str) -> netCDF4.Variable:
    if variable is not None:
        if variable not in ds.variables:
            raise UserError(f"{path}: no variable {variable!r} (it has {', '.join(ds.variables) or 'none'})")
        var = ds.variables[variable]
        if var.ndim != 2:
            raise UserError(f"{path}: variable {variable!r} has {var.ndim} dimensions, expected 2 ({what})")
        return var
    two_d = [v for v in ds.variables.values() if v.ndim == 2 and v.name not in ds.dimensions]
    if not two_d:
        raise UserError(f"{path}: no 2-D variable (expected {what})")
    match = next((v for name in preferred for v in two_d if v.name == name), None)
    if match is not None:
        return match
    if len(two_d) > 1:
        names = ", ".join(v.name for v in two_d)
        raise UserError(f"{path}: several 2-D variables ({names}); name the one to use with --variable "
                        f"(--label-variable for a label grid)")
    return two_d[0]


def _regular_axis(values: np.ndarray, path: Path, axis: str) -> np.ndarray:
    """Check an ascending, evenly spaced axis and return it cleaned of storage round-off (float64)."""
    if values.size < 2:
        raise UserError(f"{path}: {axis} has {values.size} node(s), expected at least 2")
    if not np.all(np.isfinite(values)):
        raise UserError(f"{path}: {axis} coordinates contain NaN or infinite values")
    steps = np.diff(values)
    step = (values[-1] - values[0]) / (values.size - 1)
    if step <= 0 or np.max(np.abs(steps - step)) > 0.01 * abs(step):
        raise UserError(f"{path}: irregular {axis} spacing (steps {steps.min():.6g} to {steps.max():.6g} "
                        f"degrees); expected a regular grid")
    return np.linspace(values[0], values[-1], values.size)


def read_geographic(path: Path, variable: str | None, preferred: tuple[str, ...], what: str,
                     *, mask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str, str]:
    """Read a 2-D variable and its lon/lat axes into the canonical orientation.

    Returns lon (nx,) ascending in -180..180, lat (ny,) ascending, values (ny, nx), variable name, units and
    registration. With ``mask`` the variable's fill values become NaN (floating point output).
    """
    ds = _open_netcdf(path, what)
    try:
        var = _pick_variable(ds, path, variable, preferred, what)
        kinds: dict[str, np.ndarray] = {}
        for dim in var.dimensions:
            coord = ds.variables.get(dim)
            kind = _axis_kind(coord) if coord is not None and coord.ndim == 1 else None
            if kind is None or kind in kinds:
                raise UserError(f"{path}: no recognisable coordinates for {var.name}{var.dimensions} "
                                f"(expected 1-D lon/x and lat/y variables named as its dimensions)")
            kinds[kind] = np.asarray(coord[:], dtype=np.float64)
        var.set_auto_mask(mask)
        data = var[:]
        if mask:
            data = np.ma.filled(np.ma.asarray(data).astype(np.result_type(data.dtype, np.float32)), np.nan)
        data = np.asarray(data)
        units = str(getattr(var, "units", ""))
        offset = getattr(ds, "node_offset", getattr(var, "node_offset", 0))
        name = var.name
        first_is_lat = _axis_kind(ds.variables[var.dimensions[0]]) == "lat"
    except (OSError, RuntimeError, IndexError) as err:
        raise UserError(f"{path}: cannot be read, truncated or damaged? ({one_line(err)})") from None
    finally:
        ds.close()
    if not first_is_lat:
        data = data.T
    lon, lat, data = canonical_orientation(kinds["lon"], kinds["lat"], data, path)
    return lon, lat, data, name, units, "pixel" if int(offset) == 1 else "gridline"


def canonical_orientation(lon: np.ndarray, lat: np.ndarray, data: np.ndarray,
                          path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longitudes ascending in -180..180 (a repeated 360-degree seam column dropped), latitudes ascending,
    ``data`` (ny, nx) reordered with them; the axes checked regular (a :class:`UserError` naming ``path``)."""
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    if np.nanmin(lon) < -180.0 or np.nanmax(lon) > 360.0 or np.nanmin(lat) < -90.0 or np.nanmax(lat) > 90.0:
        raise UserError(f"{path}: coordinates are not longitude/latitude in degrees (x {np.nanmin(lon):g} to "
                        f"{np.nanmax(lon):g}, y {np.nanmin(lat):g} to {np.nanmax(lat):g}); a projected grid "
                        f"needs its CRS: write it as a GeoTIFF")
    if lat.size > 1 and lat[0] > lat[-1]:
        lat, data = lat[::-1], data[::-1]
    if lon.size > 2 and abs(abs(lon[-1] - lon[0]) - 360.0) < 1e-6:
        lon, data = lon[:-1], data[:, :-1]  # the 360-degree seam column repeats the first one
    if np.any(lon > 180.0):
        lon = (lon + 180.0) % 360.0 - 180.0
    if np.any(np.diff(lon) < 0):
        order = np.argsort(lon, kind="stable")
        lon, data = lon[order], data[:, order]
    lon, lat = _regular_axis(lon, path, "longitude"), _regular_axis(lat, path, "latitude")
    return lon, lat, np.ascontiguousarray(data)


def read_gravity_grid(path: str | os.PathLike, *, fill_nan: bool = False, variable: str | None = None) -> GeoGrid:
    """Read a gravity grid in mGal from a WGM2012 / GMT (COARDS) netCDF file.

    Accepts ``x``/``y``/``z`` (WGM2012) or ``lon``/``lat`` names (or CF units/standard names), latitude in
    either order, longitudes in -180..180 or 0..360 (rolled to -180..180), a duplicated 360-degree seam
    column (dropped), and gridline (``node_offset = 0``) or pixel (``node_offset = 1``: nodes are cell
    centres) registration, which is recorded. ``variable``: the data variable (default ``z``, else the only
    2-D variable). ``fill_nan``: fill NaN (or ``_FillValue``) nodes by :func:`fill_holes` and warn with the
    count, instead of refusing the file. ``values`` come out (ny, nx) float32 or float64 in mGal.
    """
    path = Path(path)
    lon, lat, values, name, _units, registration = read_geographic(
        path, variable, ("z",), "a gravity grid: netCDF with x/lon, y/lat and z(y, x) in mGal", mask=True)
    return gravity_grid(lon, lat, values, name=name, path=path, registration=registration, fill_nan=fill_nan)


def gravity_grid(lon: np.ndarray, lat: np.ndarray, values: np.ndarray, *, name: str, path: Path,
                 registration: str, fill_nan: bool) -> GeoGrid:
    """A gravity :class:`GeoGrid` (mGal) of canonical axes and values, its NaN nodes refused or filled."""
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    n_bad = int((~np.isfinite(values)).sum())
    if n_bad:
        if not fill_nan:
            raise UserError(f"{path}: {n_bad} NaN nodes in {name}; pass --fill-nan to fill them")
        if n_bad == values.size:
            raise UserError(f"{path}: every node of {name} is NaN")
        values = fill_holes(values)
        warnings.warn(f"{path}: filled {n_bad} NaN nodes of {name} by Laplace interpolation", stacklevel=3)
    return GeoGrid(lon, lat, values, name=name, units="mGal", source=str(path), registration=registration)


def fill_holes(values: np.ndarray) -> np.ndarray:
    """Fill the NaN nodes of ``values`` (ny, nx) with the harmonic (Laplace) interpolant of the others.

    Each NaN node becomes the mean of its existing 4-neighbours (a sparse linear system over the NaN nodes,
    solved exactly), which is the smoothest surface matching the data round each hole. Returns a copy.
    """
    out = np.array(values, copy=True)
    bad = ~np.isfinite(out)
    ny, nx = out.shape
    index = np.full(out.shape, -1, dtype=np.int64)
    index[bad] = np.arange(int(bad.sum()))
    rows_i, cols_i = np.nonzero(bad)
    n = rows_i.size
    diag = np.zeros(n)
    rhs = np.zeros(n)
    a_rows, a_cols = [], []
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ni, nj = rows_i + di, cols_i + dj
        inside = (ni >= 0) & (ni < ny) & (nj >= 0) & (nj < nx)
        diag += inside
        k = np.flatnonzero(inside)
        neighbour = index[ni[k], nj[k]]
        unknown = neighbour >= 0
        a_rows.append(k[unknown])
        a_cols.append(neighbour[unknown])
        np.add.at(rhs, k[~unknown], out[ni[k[~unknown]], nj[k[~unknown]]])
    rows = np.concatenate([np.arange(n), *a_rows])
    cols = np.concatenate([np.arange(n), *a_cols])
    data = np.concatenate([diag, -np.ones(sum(r.size for r in a_rows))])
    matrix = scipy.sparse.csr_matrix((data, (rows, cols)), shape=(n, n))
    out[bad] = scipy.sparse.linalg.spsolve(matrix, rhs)
    return out


def write_axes(ds: netCDF4.Dataset, grid: GeoGrid, lon_name: str, lat_name: str) -> None:
    """The longitude and latitude axes of ``grid`` as CF coordinate variables named ``lon_name`` and ``lat_name``."""
    for name, values, axis, units in ((lon_name, grid.lon, "longitude", "degrees_east"),
                                      (lat_name, grid.lat, "latitude", "degrees_north")):
        ds.createDimension(name, values.size)
        var = ds.createVariable(name, "f8", (name,))
        var.long_name = var.standard_name = axis
        var.units = units
        var.actual_range = np.array([values[0], values[-1]])
        var[:] = values


def write_gmt_grid(path: str | os.PathLike, grid: GeoGrid, *, title: str = "") -> Path:
    """Write ``grid`` in the WGM2012 / GMT COARDS layout, atomically.

    Variables ``x``, ``y`` (float64, degrees), ``z(y, x)`` float32 in ``grid.units``; global attribute
    ``node_offset`` (0 gridline, 1 pixel) and ``actual_range`` on every variable.
    """
    path = Path(path)
    values = np.asarray(grid.values, dtype=np.float32)
    with atomic_path(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.Conventions = "COARDS, CF-1.5"
        ds.title = title
        ds.node_offset = np.int32(1 if grid.registration == "pixel" else 0)
        write_axes(ds, grid, "x", "y")
        z = ds.createVariable("z", "f4", ("y", "x"))
        z.long_name = grid.name or "z"
        z.units = grid.units
        finite = values[np.isfinite(values)]
        if finite.size:
            z.actual_range = np.array([finite.min(), finite.max()], dtype=np.float32)
        z[:] = values
    return path
