"""Geographic grids: regions, gravity grids (WGM2012 / GMT netCDF), label grids and label images.

Everything here works on regular longitude/latitude grids in degrees, longitude east in -180..180 and latitude
ascending. A :class:`GeoGrid` holds the node coordinates, the values ``(ny, nx)`` and where they came from.
Readers accept the layouts users meet in practice and turn every problem with a file into a one-line
:class:`ggmnet.errors.UserError` naming that file.

The doors for any file a user brings are in :mod:`ggmnet.datasets.readers`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ggmnet.classes import TABLE1, ClassList
from ggmnet.engine.runio import atomic_path
from ggmnet.errors import UserError

#: Kilometres per degree of latitude (and of longitude at the equator) used for margins.
KM_PER_DEG = 111.2

def spacing_km(lon: np.ndarray, lat: np.ndarray, *, at_lat: float | None = None) -> tuple[float, float]:
    """Node spacing (north-south, east-west) in km of a regular longitude/latitude grid (either direction).

    The steps are the axes' spans over their intervals; east-west is measured at ``at_lat`` (default the
    mean of ``lat``) on a sphere of :data:`KM_PER_DEG` km per degree. An axis of one node has spacing 0.
    The order (rows, columns) is what ``scipy.ndimage``'s ``sampling`` arguments take.
    """
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    dlat = abs(float(lat[-1] - lat[0])) / max(lat.size - 1, 1) if lat.size else 0.0
    dlon = abs(float(lon[-1] - lon[0])) / max(lon.size - 1, 1) if lon.size else 0.0
    latitude = at_lat if at_lat is not None else (float(lat.mean()) if lat.size else 0.0)
    return dlat * KM_PER_DEG, dlon * KM_PER_DEG * math.cos(math.radians(latitude))


#: Label values a label grid of Table 1 may hold: the classes 0-9 and 255 for Cenozoic cover.
VALID_LABELS = TABLE1.valid_labels

#: WGS 84 ellipsoid: semi-major axis (km) and first eccentricity squared, for cell areas.
_WGS84_A_KM = 6378.137
_WGS84_E2 = 0.00669437999014


def cell_area_km2(lat: np.ndarray, dlon_deg: float, dlat_deg: float) -> np.ndarray:
    """Area in km^2 on the WGS 84 ellipsoid of lon/lat cells ``dlon_deg`` x ``dlat_deg`` centred at ``lat``.

    Exact for cells bounded by meridians and parallels: ``A = a^2 (1 - e^2) dlon [q(phi2) - q(phi1)] / 2`` with
    ``q(phi) = sin(phi) / (1 - e^2 sin^2 phi) + atanh(e sin phi) / e`` (the authalic-latitude integral).
    """
    e = math.sqrt(_WGS84_E2)

    def q(phi: np.ndarray) -> np.ndarray:
        s = np.sin(phi)
        return s / (1.0 - _WGS84_E2 * s * s) + np.arctanh(e * s) / e

    lat = np.asarray(lat, dtype=np.float64)
    top = np.radians(np.clip(lat + 0.5 * abs(dlat_deg), -90.0, 90.0))
    bottom = np.radians(np.clip(lat - 0.5 * abs(dlat_deg), -90.0, 90.0))
    return 0.5 * _WGS84_A_KM ** 2 * (1.0 - _WGS84_E2) * math.radians(abs(dlon_deg)) * (q(top) - q(bottom))

#: Default colour tolerance of label images: largest absolute difference of any RGB channel.
COLOUR_TOLERANCE = 12

_LON_NAMES = ("x", "lon", "longitude", "long", "lng")
_LAT_NAMES = ("y", "lat", "latitude")
_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ----------------------------------------------------------------------------------------------------------------
# Regions
# ----------------------------------------------------------------------------------------------------------------


def _region_problem(west: float, east: float, south: float, north: float) -> str | None:
    """What is wrong with a W,E,S,N box (None when it is a valid box)."""
    values = {"west": west, "east": east, "south": south, "north": north}
    for name, value in values.items():
        if not math.isfinite(value):
            return f"{name} ({value:g}) must be a finite number of degrees"
    for name in ("west", "east"):
        if not -180.0 <= values[name] <= 180.0:
            return f"{name} ({values[name]:g}) must lie in [-180, 180] degrees east"
    for name in ("south", "north"):
        if not -90.0 <= values[name] <= 90.0:
            return f"{name} ({values[name]:g}) must lie in [-90, 90] degrees north"
    if east <= west:
        return f"east ({east:g}) must be greater than west ({west:g})"
    if north <= south:
        return f"north ({north:g}) must be greater than south ({south:g})"
    return None


@dataclasses.dataclass(frozen=True)
class Region:
    """A longitude/latitude box in degrees: ``west < east`` in [-180, 180], ``south < north`` in [-90, 90].

    Boxes across the antimeridian are not supported.
    """

    west: float
    east: float
    south: float
    north: float

    def __post_init__(self) -> None:
        for name in ("west", "east", "south", "north"):
            object.__setattr__(self, name, float(getattr(self, name)))
        problem = _region_problem(self.west, self.east, self.south, self.north)
        if problem:
            raise UserError(f"region {self.west:g},{self.east:g},{self.south:g},{self.north:g}: {problem}")

    @classmethod
    def parse(cls, text: str, option: str = "--region") -> Region:
        """Parse ``"W,E,S,N"`` (degrees); bad text raises a :class:`UserError` naming ``option``."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 4:
            raise UserError(f"{option} {text}: expected four numbers W,E,S,N in degrees, e.g. 65,95,40,55")
        try:
            west, east, south, north = (float(p) for p in parts)
        except ValueError:
            raise UserError(f"{option} {text}: expected four numbers W,E,S,N in degrees, e.g. 65,95,40,55") \
                from None
        problem = _region_problem(west, east, south, north)
        if problem:
            raise UserError(f"{option} {text}: {problem}")
        return cls(west, east, south, north)

    @classmethod
    def from_dict(cls, mapping: dict[str, Any], source: str = "region") -> Region:
        """Build from ``{"west": .., "east": .., "south": .., "north": ..}``; ``source`` names it in errors."""
        try:
            values = [float(mapping[k]) for k in ("west", "east", "south", "north")]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: expected numbers west, east, south, north in degrees") from None
        problem = _region_problem(*values)
        if problem:
            raise UserError(f"{source}: {problem}")
        return cls(*values)

    def to_dict(self) -> dict[str, float]:
        """``{"west": .., "east": .., "south": .., "north": ..}`` in degrees."""
        return dataclasses.asdict(self)

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(west, east, south, north)`` in degrees."""
        return (self.west, self.east, self.south, self.north)

    def __str__(self) -> str:
        return f"{self.west:g},{self.east:g},{self.south:g},{self.north:g}"

    @property
    def width_deg(self) -> float:
        """East-west extent in degrees."""
        return self.east - self.west

    @property
    def height_deg(self) -> float:
        """North-south extent in degrees."""
        return self.north - self.south

    def contains(self, other: Region) -> bool:
        """Whether ``other`` lies inside this box (edges included)."""
        return (self.west <= other.west and other.east <= self.east
                and self.south <= other.south and other.north <= self.north)

    def contains_points(self, lon: np.ndarray | float, lat: np.ndarray | float) -> np.ndarray:
        """Boolean array: which points (degrees) lie inside this box, edges included."""
        lon = np.asarray(lon)
        lat = np.asarray(lat)
        return (lon >= self.west) & (lon <= self.east) & (lat >= self.south) & (lat <= self.north)

    def overlaps(self, other: Region) -> bool:
        """Whether the two boxes share some area (touching edges do not count)."""
        return (self.west < other.east and other.west < self.east
                and self.south < other.north and other.south < self.north)


#: The paper's study area: E65-95, N40-55.
PAPER_REGION = Region(65.0, 95.0, 40.0, 55.0)


# ----------------------------------------------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GeoGrid:
    """Values on a regular longitude/latitude grid.

    Attributes
    ----------
    lon : ndarray (nx,)
        Node longitudes, degrees east, ascending, in -180..180.
    lat : ndarray (ny,)
        Node latitudes, degrees north, ascending.
    values : ndarray (ny, nx)
        The field (mGal for gravity, uint8 class indices for labels).
    name, units : str
        Variable name and units (``"mGal"`` for gravity, ``""`` for labels).
    source : str
        The file it was read from, or ``""``.
    registration : str
        ``"gridline"`` (nodes on the grid lines) or ``"pixel"`` (nodes are cell centres).
    """

    lon: np.ndarray
    lat: np.ndarray
    values: np.ndarray
    name: str = "z"
    units: str = "mGal"
    source: str = ""
    registration: str = "gridline"

    def __post_init__(self) -> None:
        self.lon = np.asarray(self.lon, dtype=np.float64)
        self.lat = np.asarray(self.lat, dtype=np.float64)
        self.values = np.asarray(self.values)
        if self.lon.ndim != 1 or self.lat.ndim != 1 or self.values.shape != (self.lat.size, self.lon.size):
            raise ValueError(f"GeoGrid: values {self.values.shape} must be (lat {self.lat.shape}, lon "
                             f"{self.lon.shape})")
        if self.registration not in ("gridline", "pixel"):
            raise ValueError(f"GeoGrid: registration {self.registration!r} must be 'gridline' or 'pixel'")

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return self.values.shape  # type: ignore[return-value]

    def spacing_deg(self) -> tuple[float, float]:
        """Node spacing ``(dlon, dlat)`` in degrees (nan along an axis of one node)."""
        dlon = (self.lon[-1] - self.lon[0]) / (self.lon.size - 1) if self.lon.size > 1 else float("nan")
        dlat = (self.lat[-1] - self.lat[0]) / (self.lat.size - 1) if self.lat.size > 1 else float("nan")
        return float(dlon), float(dlat)

    @property
    def extent(self) -> Region:
        """The box the grid describes: its outer nodes (gridline) or its outer cell edges (pixel)."""
        dlon, dlat = self.spacing_deg()
        half_lon = 0.5 * dlon if self.registration == "pixel" else 0.0
        half_lat = 0.5 * dlat if self.registration == "pixel" else 0.0
        return Region(max(self.lon[0] - half_lon, -180.0), min(self.lon[-1] + half_lon, 180.0),
                      max(self.lat[0] - half_lat, -90.0), min(self.lat[-1] + half_lat, 90.0))

    @property
    def node_region(self) -> Region:
        """The box spanned by the outermost nodes."""
        return Region(self.lon[0], self.lon[-1], self.lat[0], self.lat[-1])

    def _take(self, cols: slice, rows: slice) -> GeoGrid:
        return dataclasses.replace(self, lon=self.lon[cols].copy(), lat=self.lat[rows].copy(),
                                   values=self.values[rows, cols].copy())

    def covers(self, region: Region) -> bool:
        """Whether the grid's nodes reach every edge of ``region`` (to within half a node)."""
        dlon, dlat = self.spacing_deg()
        tol_lon, tol_lat = 0.5 * dlon, 0.5 * dlat
        return bool(self.lon[0] <= region.west + tol_lon and self.lon[-1] >= region.east - tol_lon
                    and self.lat[0] <= region.south + tol_lat and self.lat[-1] >= region.north - tol_lat)

    def subset(self, region: Region) -> GeoGrid:
        """The nodes inside ``region``, edges included, with a tolerance just under half a node.

        With nodes on the region's edges (the WGM2012 2' grid and E65-95, N40-55) this gives the 451 x 901
        nodes of the paper. Raises ValueError when no node lies inside.
        """
        dlon, dlat = self.spacing_deg()
        tol_lon, tol_lat = 0.4999 * dlon, 0.4999 * dlat
        cols = np.flatnonzero((self.lon >= region.west - tol_lon) & (self.lon <= region.east + tol_lon))
        rows = np.flatnonzero((self.lat >= region.south - tol_lat) & (self.lat <= region.north + tol_lat))
        if cols.size == 0 or rows.size == 0:
            raise ValueError(f"grid {self.node_region} has no node inside {region}")
        return self._take(slice(cols[0], cols[-1] + 1), slice(rows[0], rows[-1] + 1))

    def crop(self, region: Region, margin_km: float = 0.0) -> GeoGrid:
        """The nodes of ``region`` widened by ``margin_km`` on every side, clipped to what the grid has.

        The margin becomes ``margin_km / 111.2`` degrees of latitude and ``margin_km / (111.2 cos(phi))``
        degrees of longitude, ``phi`` the largest absolute latitude of the widened box, so that it is at
        least ``margin_km`` wide everywhere. The crop reaches outwards to the first node at or beyond each
        widened edge (where the grid has one). It records nothing; compare the result's nodes with the region
        to learn the margin actually available.
        """
        if margin_km < 0:
            raise ValueError(f"margin_km ({margin_km}) must be >= 0")
        dlat_margin = margin_km / KM_PER_DEG
        south = max(region.south - dlat_margin, -90.0)
        north = min(region.north + dlat_margin, 90.0)
        cos_phi = math.cos(math.radians(min(max(abs(south), abs(north)), 89.0)))
        dlon_margin = margin_km / (KM_PER_DEG * cos_phi)
        west, east = region.west - dlon_margin, region.east + dlon_margin
        cols = _outward_slice(self.lon, west, east)
        rows = _outward_slice(self.lat, south, north)
        return self._take(cols, rows)


def _outward_slice(coord: np.ndarray, low: float, high: float) -> slice:
    """Indices of ascending ``coord`` from the last node <= low to the first node >= high (clipped)."""
    tol = 1e-9 * max(1.0, float(np.abs(coord).max()))
    start = int(np.searchsorted(coord, low + tol, side="right")) - 1
    stop = int(np.searchsorted(coord, high - tol, side="left")) + 1
    return slice(max(start, 0), min(stop, coord.size))


# ----------------------------------------------------------------------------------------------------------------
# netCDF reading
# ----------------------------------------------------------------------------------------------------------------


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file (expected {what})")
    if not path.is_file():
        raise UserError(f"{path}: not a file (expected {what})")


def _open_netcdf(path: Path, what: str) -> netCDF4.Dataset:
    _check_exists(path, what)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not any(head.startswith(m) for m in _NETCDF_MAGIC):
        raise UserError(f"{path}: not a netCDF file (expected {what})")
    try:
        ds = netCDF4.Dataset(path, "r")
    except OSError as err:
        raise UserError(f"{path}: cannot be read as netCDF, truncated or damaged? ({_one_line(err)})") from None
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


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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
    for name in preferred:
        for v in two_d:
            if v.name == name:
                return v
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


def _read_geographic(path: Path, variable: str | None, preferred: tuple[str, ...], what: str,
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
        raise UserError(f"{path}: cannot be read, truncated or damaged? ({_one_line(err)})") from None
    finally:
        ds.close()
    if not first_is_lat:
        data = data.T
    lon, lat, data = canonical_orientation(kinds["lon"], kinds["lat"], data, path)
    registration = "pixel" if int(offset) == 1 else "gridline"
    return lon, lat, data, name, units, registration


def canonical_orientation(lon: np.ndarray, lat: np.ndarray, data: np.ndarray,
                          path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longitudes ascending in -180..180 (a repeated 360-degree seam column dropped), latitudes ascending,
    ``data`` (ny, nx) reordered with them; the axes checked regular (a :class:`UserError` naming ``path``)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
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
    lon = _regular_axis(lon, path, "longitude")
    lat = _regular_axis(lat, path, "latitude")
    return lon, lat, np.ascontiguousarray(data)


def read_gravity_grid(path: str | os.PathLike, *, fill_nan: bool = False, variable: str | None = None) -> GeoGrid:
    """Read a gravity grid in mGal from a WGM2012 / GMT (COARDS) netCDF file.

    Accepts ``x``/``y``/``z`` (WGM2012) or ``lon``/``lat`` names (or CF units/standard names), latitude in
    either order, longitudes in -180..180 or 0..360 (rolled to -180..180), a duplicated 360-degree seam
    column (dropped), and gridline (``node_offset = 0``) or pixel (``node_offset = 1``: nodes are cell
    centres) registration, which is recorded.

    Parameters
    ----------
    path : path
        The netCDF file.
    fill_nan : bool
        Fill NaN (or ``_FillValue``) nodes by harmonic (Laplace) interpolation from their neighbours and warn
        with the count, instead of refusing the file.
    variable : str, optional
        The data variable; default ``z``, else the only 2-D variable.

    Returns
    -------
    GeoGrid
        ``values`` (ny, nx) float32 or float64 in mGal, ``name`` the variable's, ``units`` ``"mGal"``.
    """
    path = Path(path)
    lon, lat, values, name, _units, registration = _read_geographic(
        path, variable, ("z",), "a gravity grid: netCDF with x/lon, y/lat and z(y, x) in mGal", mask=True)
    return gravity_grid(lon, lat, values, name=name, path=path, registration=registration, fill_nan=fill_nan)


def gravity_grid(lon: np.ndarray, lat: np.ndarray, values: np.ndarray, *, name: str, path: Path,
                 registration: str, fill_nan: bool) -> GeoGrid:
    """A gravity :class:`GeoGrid` (mGal) of canonical axes and values, its NaN nodes refused or filled."""
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
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


# ----------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------


def _check_label_values(values: np.ndarray, path: Path | str, name: str,
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
    """Read a label grid: netCDF with lon/lat (or x/y) and class indices 0-9 plus 255 for Cenozoic cover.

    Parameters
    ----------
    path : path
        The netCDF file.
    variable : str, optional
        The label variable; default ``label``, else the only 2-D variable.

    Returns
    -------
    GeoGrid
        ``values`` (ny, nx) uint8.
    """
    path = Path(path)
    lon, lat, values, name, _units, registration = _read_geographic(
        path, variable, ("label",), "a label grid: netCDF with lon, lat and uint8 classes 0-9, 255 cover",
        mask=False)
    values = _check_label_values(values, path, name)
    return GeoGrid(lon, lat, values, name=name, units="", source=str(path), registration=registration)


def _sidecar_bounds(path: Path) -> Region:
    candidates = [path.with_name(path.name + ".json"), path.with_suffix(".json")]
    for side in candidates:
        if side.is_file():
            try:
                mapping = json.loads(side.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise UserError(f"{side}: not valid JSON ({_one_line(err)})") from None
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
    """Read an RGB or palette PNG/TIFF label map drawn in Table 1's colours.

    Parameters
    ----------
    path : path
        The image. Row 0 is the north edge; pixels are areas (pixel registration).
    bounds : Region, optional
        The outer edges of the image in degrees; default from a sidecar ``PATH.json`` (e.g.
        ``labels.png.json``) or ``labels.json`` holding ``{"west":..,"east":..,"south":..,"north":..}``.
    tolerance : int
        Largest absolute difference of any RGB channel from a palette colour (default 12).

    Returns
    -------
    GeoGrid
        uint8 class indices (ny, nx), latitude ascending (the image flipped), ``registration="pixel"``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_exists(path, "a PNG/TIFF label image")
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as an image ({_one_line(err)})") from None
    region = bounds if bounds is not None else _sidecar_bounds(path)
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
    _check_exists(path, "a label grid (netCDF) or a label image (PNG/TIFF)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if any(head.startswith(m) for m in _NETCDF_MAGIC):
        if bounds is not None:
            raise UserError(f"{path}: label bounds apply to images only; a netCDF label grid carries its own "
                            f"coordinates")
        return read_label_grid(path)
    if any(head.startswith(m) for m in _IMAGE_MAGIC):
        return read_label_image(path, bounds)
    raise UserError(f"{path}: neither netCDF nor PNG/TIFF (expected a label grid or a label image)")


def resample_labels(labels: GeoGrid, lon: np.ndarray, lat: np.ndarray, method: str = "mode") -> np.ndarray:
    """Class labels on the nodes ``lon`` (nx,) x ``lat`` (ny,) (degrees, ascending, regular).

    Parameters
    ----------
    labels : GeoGrid
        uint8 class indices (0..K-1, 255 cover).
    lon, lat : ndarray
        Target nodes; each is the centre of a target cell one node spacing wide.
    method : {"mode", "nearest"}
        ``"mode"``: each target cell takes the most frequent value among the label pixels whose centres fall
        in it (cover counted as a class of its own; ties go to the lower index, so a class beats cover);
        cells that receive no label pixel (labels coarser than the target) take the nearest label pixel.
        ``"nearest"``: every target node takes the nearest label pixel.

    Returns
    -------
    ndarray (ny, nx) uint8
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if method not in ("mode", "nearest"):
        raise ValueError(f"method {method!r} must be 'mode' or 'nearest'")
    if lon.size < 2 or lat.size < 2:
        raise ValueError(f"resample_labels needs at least 2 x 2 target nodes, got {lon.size} x {lat.size}")
    dlon_l, dlat_l = labels.spacing_deg()
    have = labels.extent
    needs = Region(lon[0], lon[-1], lat[0], lat[-1])
    tol_lon = 0.5 * dlon_l if labels.registration == "gridline" else 1e-9
    tol_lat = 0.5 * dlat_l if labels.registration == "gridline" else 1e-9
    if not (have.west - tol_lon <= needs.west and needs.east <= have.east + tol_lon
            and have.south - tol_lat <= needs.south and needs.north <= have.north + tol_lat):
        raise UserError(f"{labels.source or 'labels'} covers {have} but the gravity region needs {needs}")
    near_col = np.clip(np.rint((lon - labels.lon[0]) / dlon_l), 0, labels.lon.size - 1).astype(np.int64)
    near_row = np.clip(np.rint((lat - labels.lat[0]) / dlat_l), 0, labels.lat.size - 1).astype(np.int64)
    nearest = labels.values[np.ix_(near_row, near_col)].astype(np.uint8)
    if method == "nearest":
        return nearest
    return _mode_resample(labels, lon, lat, fallback=nearest)


def _mode_resample(labels: GeoGrid, lon: np.ndarray, lat: np.ndarray, *, fallback: np.ndarray) -> np.ndarray:
    """Majority of the label pixels per target cell (see :func:`resample_labels`)."""
    ny, nx = lat.size, lon.size
    # one slot per value present, in ascending order, so that a class (0..K-1) beats the cover (255) in a tie
    present = np.flatnonzero(np.bincount(np.asarray(labels.values, dtype=np.uint8).ravel(), minlength=256))
    n_values = max(int(present.size), 1)
    slot = np.zeros(256, dtype=np.int64)
    slot[present] = np.arange(present.size)
    dlon_t = (lon[-1] - lon[0]) / (nx - 1)
    dlat_t = (lat[-1] - lat[0]) / (ny - 1)
    tcol = np.floor((labels.lon - lon[0]) / dlon_t + 0.5).astype(np.int64)
    trow = np.floor((labels.lat - lat[0]) / dlat_t + 0.5).astype(np.int64)
    col_ok = (tcol >= 0) & (tcol < nx)
    counts = np.zeros(ny * nx * n_values, dtype=np.int64)
    block = max(1, 4_000_000 // max(1, int(col_ok.sum())))
    rows_ok = np.flatnonzero((trow >= 0) & (trow < ny))
    cols = np.flatnonzero(col_ok)
    for start in range(0, rows_ok.size, block):
        rows = rows_ok[start:start + block]
        values = slot[labels.values[np.ix_(rows, cols)]]
        cell = trow[rows][:, None] * nx + tcol[cols][None, :]
        counts += np.bincount((cell * n_values + values).ravel(), minlength=counts.size)
    counts = counts.reshape(ny, nx, n_values)
    out = present[counts.argmax(axis=-1)].astype(np.uint8) if present.size else np.zeros((ny, nx), np.uint8)
    empty = counts.sum(axis=-1) == 0
    out[empty] = fallback[empty]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------


def _write_axes(ds: netCDF4.Dataset, grid: GeoGrid, lon_name: str, lat_name: str) -> None:
    ds.createDimension(lon_name, grid.lon.size)
    ds.createDimension(lat_name, grid.lat.size)
    x = ds.createVariable(lon_name, "f8", (lon_name,))
    x.long_name = "longitude"
    x.standard_name = "longitude"
    x.units = "degrees_east"
    x.actual_range = np.array([grid.lon[0], grid.lon[-1]])
    x[:] = grid.lon
    y = ds.createVariable(lat_name, "f8", (lat_name,))
    y.long_name = "latitude"
    y.standard_name = "latitude"
    y.units = "degrees_north"
    y.actual_range = np.array([grid.lat[0], grid.lat[-1]])
    y[:] = grid.lat


def write_gmt_grid(path: str | os.PathLike, grid: GeoGrid, *, title: str = "") -> Path:
    """Write ``grid`` in the WGM2012 / GMT COARDS layout, atomically.

    Variables ``x``, ``y`` (float64, degrees), ``z(y, x)`` float32 in ``grid.units``; global attribute
    ``node_offset`` (0 gridline, 1 pixel) and ``actual_range`` on every variable.
    """
    path = Path(path)
    values = np.asarray(grid.values, dtype=np.float32)
    with atomic_path(path) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
            ds.Conventions = "COARDS, CF-1.5"
            ds.title = title
            ds.node_offset = np.int32(1 if grid.registration == "pixel" else 0)
            _write_axes(ds, grid, "x", "y")
            z = ds.createVariable("z", "f4", ("y", "x"))
            z.long_name = grid.name or "z"
            z.units = grid.units
            finite = values[np.isfinite(values)]
            if finite.size:
                z.actual_range = np.array([finite.min(), finite.max()], dtype=np.float32)
            z[:] = values
    return path


def write_label_grid(path: str | os.PathLike, grid: GeoGrid, variable: str = "label", *,
                     classes: ClassList = TABLE1) -> Path:
    """Write uint8 labels (0..K-1 of ``classes``, 255 cover) with ``lon``/``lat`` and CF
    ``flag_values``/``flag_meanings``."""
    path = Path(path)
    values = _check_label_values(np.asarray(grid.values), path, variable, classes)
    meanings = classes.flag_meanings()
    with atomic_path(path) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
            ds.Conventions = "CF-1.8"
            ds.node_offset = np.int32(1 if grid.registration == "pixel" else 0)
            _write_axes(ds, grid, "lon", "lat")
            var = ds.createVariable(variable, "u1", ("lat", "lon"), zlib=True, complevel=4)
            var.long_name = "bedrock class (Table 1)" if classes == TABLE1 else "bedrock class"
            var.flag_values = np.asarray(classes.valid_labels, dtype=np.uint8)
            var.flag_meanings = meanings
            var[:] = values
    return path
