"""Where a grid lies: regions in degrees (:class:`Region`), regular longitude/latitude grids with their values and
origin (:class:`GeoGrid`), node spacings and cell areas on the ground.

Everything works on regular longitude/latitude grids in degrees, longitude east in -180..180 and latitude
ascending. The readers are in :mod:`ggmnet.datasets.netcdf` (gravity, GMT/WGM2012 netCDF) and
:mod:`ggmnet.datasets.labels` (label grids and images); the doors for any file a user brings are in
:mod:`ggmnet.datasets.readers`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

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


def node_steps(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """The node spacing ``(dlon, dlat)`` in degrees of a regular grid with nodes ``lon`` (nx,), ``lat`` (ny,)."""
    return (lon[-1] - lon[0]) / max(lon.size - 1, 1), (lat[-1] - lat[0]) / max(lat.size - 1, 1)


def node_cells(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """``(west, south, east, north, dlon, dlat)`` in degrees of the cells centred on regular ascending nodes."""
    dlon, dlat = node_steps(lon, lat)
    return lon[0] - dlon / 2, lat[0] - dlat / 2, lon[-1] + dlon / 2, lat[-1] + dlat / 2, dlon, dlat


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
        parts = str(text).split(",")
        try:
            if len(parts) != 4:
                raise ValueError
            values = [float(p) for p in parts]
        except ValueError:
            expected = "expected four numbers W,E,S,N in degrees, e.g. 65,95,40,55"
            raise UserError(f"{option} {text}: {expected}") from None
        return cls._checked(values, f"{option} {text}")

    @classmethod
    def from_dict(cls, mapping: dict[str, Any], source: str = "region") -> Region:
        """Build from ``{"west": .., "east": .., "south": .., "north": ..}``; ``source`` names it in errors."""
        try:
            values = [float(mapping[k]) for k in ("west", "east", "south", "north")]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: expected numbers west, east, south, north in degrees") from None
        return cls._checked(values, source)

    @classmethod
    def _checked(cls, values: list[float], source: str) -> Region:
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
        lon, lat = np.asarray(lon), np.asarray(lat)
        return (lon >= self.west) & (lon <= self.east) & (lat >= self.south) & (lat <= self.north)

    def overlaps(self, other: Region) -> bool:
        """Whether the two boxes share some area (touching edges do not count)."""
        return (self.west < other.east and other.west < self.east
                and self.south < other.north and other.south < self.north)


#: The paper's study area: E65-95, N40-55.
PAPER_REGION = Region(65.0, 95.0, 40.0, 55.0)


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
        return self._take(_outward_slice(self.lon, west, east), _outward_slice(self.lat, south, north))


def _outward_slice(coord: np.ndarray, low: float, high: float) -> slice:
    """Indices of ascending ``coord`` from the last node <= low to the first node >= high (clipped)."""
    tol = 1e-9 * max(1.0, float(np.abs(coord).max()))
    start = int(np.searchsorted(coord, low + tol, side="right")) - 1
    stop = int(np.searchsorted(coord, high - tol, side="left")) + 1
    return slice(max(start, 0), min(stop, coord.size))
