"""The residual gravity anomaly: regional field by upward continuation, residual, derivative channels.

The paper (Section 2.1) upward-continues the WGM2012 Bouguer anomaly to 10 km and subtracts that regional
field from the total field. Upward continuation is a planar operation (``exp(-|k| h)`` in the wavenumber
domain), so :func:`separate_regional` does it on a metric grid: the lon/lat grid, with a margin of real data
round the region, is interpolated onto a regular grid of a conformal Lambert conic projection fitted to the
region, padded, continued with :mod:`scipy.fft`, and interpolated back onto the grid's own nodes.

Derivative channels (mGal/km) and the tilt angle (radians) are computed on the same metric grid from the
residual. The vertical derivative is taken positive downwards (``+|k|`` times the field), the usual
convention of gravity interpretation, so it is positive over a dense body.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyproj
import scipy.fft
from scipy import ndimage

from ggmnet.datasets.forward import wavenumbers
from ggmnet.datasets.geo import KM_PER_DEG, GeoGrid, Region
from ggmnet.errors import UserError

#: Channels :func:`separate_regional` can compute; ``residual`` is always computed.
CHANNELS = ("residual", "vertical_derivative", "horizontal_gradient", "tilt")
PAD_MODES = ("edge", "reflect")
INTERPOLATIONS = {"cubic": 3, "linear": 1}


@dataclasses.dataclass(frozen=True)
class ProcessingRecipe:
    """How the residual anomaly is made; saved in the dataset manifest so it can be redone on a new grid.

    Attributes
    ----------
    height_km : float
        Upward-continuation height of the regional field, km (paper: 10).
    margin_km : float
        Real data kept round the region for the continuation, km on each side.
    pad_mode : {"edge", "reflect"}
        How the metric grid is padded before the FFT (after removing its mean).
    pad_fraction : float
        Padding on each side as a fraction of the grid's size along that axis.
    spacing_km : float or None
        Metric grid spacing, km; None takes the finest node spacing of the region.
    projection : {"lcc"}
        Lambert conformal conic fitted to the region (see :func:`fitted_projection`).
    interpolation : {"cubic", "linear"}
        Spline order of the lon/lat <-> metric interpolations.
    channels : tuple of str
        ``"residual"``, optionally with ``"vertical_derivative"``, ``"horizontal_gradient"``, ``"tilt"``.
    """

    height_km: float = 10.0
    margin_km: float = 500.0
    pad_mode: str = "edge"
    pad_fraction: float = 1.0 / 3.0
    spacing_km: float | None = None
    projection: str = "lcc"
    interpolation: str = "cubic"
    channels: tuple[str, ...] = ("residual",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if not (math.isfinite(self.height_km) and self.height_km > 0):
            raise UserError(f"recipe height_km ({self.height_km}): expected a positive height in km")
        if not (math.isfinite(self.margin_km) and self.margin_km >= 0):
            raise UserError(f"recipe margin_km ({self.margin_km}): expected a margin >= 0 km")
        if self.pad_mode not in PAD_MODES:
            raise UserError(f"recipe pad_mode ({self.pad_mode!r}): expected one of {', '.join(PAD_MODES)}")
        if not (0.0 <= self.pad_fraction <= 2.0):
            raise UserError(f"recipe pad_fraction ({self.pad_fraction}): expected a fraction in [0, 2]")
        if self.spacing_km is not None and not (math.isfinite(self.spacing_km) and self.spacing_km > 0):
            raise UserError(f"recipe spacing_km ({self.spacing_km}): expected a positive spacing in km or null")
        if self.projection != "lcc":
            raise UserError(f"recipe projection ({self.projection!r}): expected 'lcc'")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"recipe interpolation ({self.interpolation!r}): expected one of "
                            f"{', '.join(INTERPOLATIONS)}")
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or "residual" not in self.channels:
            raise UserError(f"recipe channels ({', '.join(self.channels)}): expected 'residual' plus any of "
                            f"{', '.join(CHANNELS[1:])}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (channels as a list)."""
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, mapping: dict[str, Any], source: str = "recipe") -> ProcessingRecipe:
        """Inverse of :meth:`to_dict`; unknown keys raise a :class:`UserError` naming ``source``."""
        if not isinstance(mapping, dict):
            raise UserError(f"{source}: expected a mapping of recipe fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise UserError(f"{source}: unknown recipe field(s) {', '.join(unknown)}")
        return cls(**mapping)


# --------------------------------------------------------------------------------------------- projection

def fitted_projection(region: Region) -> pyproj.CRS:
    """A conformal Lambert conic (WGS84, km) fitted to ``region``.

    Standard parallels at 1/6 and 5/6 of the region's latitude span, latitude and longitude of origin at its
    centre. For E65-95, N40-55: ``lat_1 = 42.5, lat_2 = 52.5, lat_0 = 47.5, lon_0 = 80``, scale error about
    0.5%. Parallels symmetric about the equator make the cone a cylinder: Mercator with true scale there.
    """
    span = region.north - region.south
    lat_1 = region.south + span / 6.0
    lat_2 = region.south + 5.0 * span / 6.0
    lat_0 = 0.5 * (region.south + region.north)
    lon_0 = 0.5 * (region.west + region.east)
    if abs(lat_1 + lat_2) < 1e-9:
        return pyproj.CRS.from_proj4(f"+proj=merc +lat_ts={lat_2:.9g} +lon_0={lon_0:.9g} +ellps=WGS84 +units=km")
    return pyproj.CRS.from_proj4(f"+proj=lcc +lat_1={lat_1:.9g} +lat_2={lat_2:.9g} +lat_0={lat_0:.9g} "
                                 f"+lon_0={lon_0:.9g} +ellps=WGS84 +units=km")


def _transformer(crs: pyproj.CRS) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_epsg(4326), crs, always_xy=True)


# ------------------------------------------------------------------------------------------- planar operators

def pad_for_fft(values: np.ndarray, *, pad_mode: str = "edge",
                pad_fraction: float = 1.0 / 3.0) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad ``values`` (ny, nx) by ``pad_fraction`` of its size on each side (more at the end, up to a fast
    FFT length) with numpy's ``pad_mode``; return the padded array and the slices that crop it back."""
    ny, nx = values.shape
    py, px = round(pad_fraction * ny), round(pad_fraction * nx)
    ty = scipy.fft.next_fast_len(ny + 2 * py, real=True)
    tx = scipy.fft.next_fast_len(nx + 2 * px, real=True)
    padded = np.pad(values, ((py, ty - ny - py), (px, tx - nx - px)), mode=pad_mode)
    return padded, (slice(py, py + ny), slice(px, px + nx))


def spectral_filters(values: np.ndarray, dx_km: float, dy_km: float,
                     responses: Sequence[Callable[[np.ndarray], np.ndarray]], *, pad_mode: str = "edge",
                     pad_fraction: float = 1.0 / 3.0) -> list[np.ndarray]:
    """For each of ``responses``: remove the mean, pad (:func:`pad_for_fft`), multiply the spectrum by
    ``response(|k|)`` (``|k|`` in rad/km), crop; one forward transform for all. The mean is not added back."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or not np.all(np.isfinite(values)):
        raise ValueError("expected a 2-D array of finite values")
    padded, crop = pad_for_fft(values - values.mean(), pad_mode=pad_mode, pad_fraction=pad_fraction)
    ky, kx = wavenumbers(padded.shape, (dy_km, dx_km))
    k = np.hypot(ky, kx)
    spectrum = scipy.fft.rfft2(padded, workers=-1)
    return [scipy.fft.irfft2(spectrum * response(k), s=padded.shape, workers=-1)[crop] for response in responses]


def upward_continue(values: np.ndarray, dx_km: float, dy_km: float, height_km: float, *,
                    pad_mode: str = "edge", pad_fraction: float = 1.0 / 3.0) -> np.ndarray:
    """Continue a planar grid upwards by ``height_km``.

    Parameters
    ----------
    values : ndarray (ny, nx)
        The field on a level surface (mGal), rows along y (north), columns along x (east).
    dx_km, dy_km : float
        Node spacing along x and y, km.
    height_km : float
        Continuation height, km (>= 0).
    pad_mode, pad_fraction
        Padding (see :func:`pad_for_fft`) applied after removing the mean.

    Returns
    -------
    ndarray (ny, nx) float64, mGal.

    Notes
    -----
    The spectrum is multiplied by ``exp(-|k| h)``. The mean is the k = 0 term, which the filter passes
    unchanged, so it is removed before padding (edge or reflect padding then does not invent a step) and added
    back afterwards.

    References
    ----------
    Blakely, R. J. (1995). Potential Theory in Gravity and Magnetic Applications, Eq. 12.8.
    """
    if height_km < 0:
        raise ValueError(f"height_km ({height_km}) must be >= 0: downward continuation is unstable")
    values = np.asarray(values, dtype=np.float64)
    continued = spectral_filters(values, dx_km, dy_km, [lambda k: np.exp(-k * height_km)],
                                 pad_mode=pad_mode, pad_fraction=pad_fraction)[0]
    return continued + values.mean()


def vertical_derivative(values: np.ndarray, dx_km: float, dy_km: float, *, pad_mode: str = "edge",
                        pad_fraction: float = 1.0 / 3.0) -> np.ndarray:
    """First vertical derivative of a planar grid, positive downwards (``|k|`` times the spectrum).

    Parameters and padding as :func:`upward_continue`. Returns (ny, nx) in mGal/km.
    """
    return spectral_filters(values, dx_km, dy_km, [lambda k: k], pad_mode=pad_mode,
                            pad_fraction=pad_fraction)[0]


def horizontal_gradient(values: np.ndarray, dx_km: float, dy_km: float) -> np.ndarray:
    """Total horizontal gradient ``sqrt((dg/dx)^2 + (dg/dy)^2)`` by central differences (one-sided at the
    edges). ``values`` (ny, nx) in mGal; returns (ny, nx) in mGal/km."""
    gy, gx = np.gradient(np.asarray(values, dtype=np.float64), dy_km, dx_km)
    return np.hypot(gx, gy)


def tilt_angle(values: np.ndarray, dx_km: float, dy_km: float, *, pad_mode: str = "edge",
               pad_fraction: float = 1.0 / 3.0) -> np.ndarray:
    """Tilt angle ``arctan(VD / THG)`` in radians, in (-pi/2, pi/2) (Miller & Singh 1994).

    VD from :func:`vertical_derivative`, THG from :func:`horizontal_gradient`. Returns (ny, nx).
    """
    vd = vertical_derivative(values, dx_km, dy_km, pad_mode=pad_mode, pad_fraction=pad_fraction)
    return np.arctan2(vd, horizontal_gradient(values, dx_km, dy_km))


# ------------------------------------------------------------------------------- the recipe on a lon/lat grid

def available_margins_km(source: GeoGrid, region: Region) -> dict[str, float]:
    """Data round ``region`` in ``source`` on each side, km (>= 0).

    East-west margins are measured at the region's most poleward latitude, where they are narrowest.
    """
    cos_phi = math.cos(math.radians(min(max(abs(region.south), abs(region.north)), 89.0)))
    return {
        "west": max(0.0, (region.west - source.lon[0]) * KM_PER_DEG * cos_phi),
        "east": max(0.0, (source.lon[-1] - region.east) * KM_PER_DEG * cos_phi),
        "south": max(0.0, (region.south - source.lat[0]) * KM_PER_DEG),
        "north": max(0.0, (source.lat[-1] - region.north) * KM_PER_DEG),
    }


def finest_spacing_km(grid: GeoGrid, region: Region) -> float:
    """The smallest node spacing of ``grid`` inside ``region``, km (east-west at the most poleward latitude)."""
    dlon, dlat = grid.spacing_deg()
    cos_phi = math.cos(math.radians(min(max(abs(region.south), abs(region.north)), 89.0)))
    return float(min(dlat * KM_PER_DEG, dlon * KM_PER_DEG * cos_phi))


def _interpolate(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, order: int) -> np.ndarray:
    """Spline interpolation of ``values`` at fractional (row, col) indices; outside, the edge value."""
    return ndimage.map_coordinates(values, [rows.ravel(), cols.ravel()], order=order, mode="nearest",
                                   prefilter=order > 1).reshape(rows.shape)


def separate_regional(grid: GeoGrid, region: Region, recipe: ProcessingRecipe | None = None) -> dict[str, Any]:
    """Regional field, residual anomaly and derivative channels on ``grid``'s nodes inside ``region``.

    Steps: keep ``recipe.margin_km`` of data round the region (warn where the grid has less); interpolate it
    onto a regular grid (``spacing_km``) of the projection fitted to the region, covering the region's
    projected bounding box widened by the available margins (nodes beyond the data take the nearest edge
    value); continue upwards by ``height_km``; compute the derivative channels of the residual; interpolate
    back onto the grid's nodes inside the region. Interpolations are cubic (or linear) splines
    (``scipy.ndimage.map_coordinates``, five times faster than ``RegularGridInterpolator``'s cubic mode).

    Parameters
    ----------
    grid : GeoGrid
        Bouguer anomaly, mGal, covering ``region`` (ideally with the margin).
    region : Region
        The study area.
    recipe : ProcessingRecipe, optional
        Default ``ProcessingRecipe()`` (10 km, 500 km margin).

    Returns
    -------
    dict
        ``lon`` (nx,), ``lat`` (ny,) in degrees; ``bouguer``, ``regional``, ``residual`` (ny, nx) float64
        mGal; the requested ``vertical_derivative``, ``horizontal_gradient`` (mGal/km) and ``tilt`` (radians);
        ``margin_km`` ``{"west", "east", "south", "north"}`` (data available, km); ``spacing_km``;
        ``projection`` (PROJ string); ``metric_shape`` (ny, nx) of the metric grid.
    """
    recipe = recipe or ProcessingRecipe()
    if not grid.covers(region):
        raise UserError(f"{grid.source or 'gravity grid'}: covers {grid.extent} but the region needs {region}")
    order = INTERPOLATIONS[recipe.interpolation]
    inner = grid.subset(region)
    source = grid.crop(region, recipe.margin_km)
    margins = available_margins_km(source, region)
    short = {side: km for side, km in margins.items() if km < recipe.margin_km - 1e-6}
    if short:
        listing = ", ".join(f"{side} {km:.0f} km" for side, km in short.items())
        warnings.warn(f"{grid.source or 'gravity grid'}: less than the recipe's {recipe.margin_km:g} km of data "
                      f"round {region} ({listing}); the regional field near those edges is less accurate",
                      stacklevel=2)
    spacing = recipe.spacing_km or finest_spacing_km(grid, region)

    crs = fitted_projection(region)
    to_metric = _transformer(crs)
    edge = np.linspace(0.0, 1.0, 257)
    ring_lon = np.concatenate([region.west + edge * region.width_deg, np.full(edge.size, region.east),
                               region.west + edge * region.width_deg, np.full(edge.size, region.west)])
    ring_lat = np.concatenate([np.full(edge.size, region.south), region.south + edge * region.height_deg,
                               np.full(edge.size, region.north), region.south + edge * region.height_deg])
    ring_x, ring_y = to_metric.transform(ring_lon, ring_lat)
    use = {side: min(km, recipe.margin_km) for side, km in margins.items()}
    x0, x1 = ring_x.min() - use["west"], ring_x.max() + use["east"]
    y0, y1 = ring_y.min() - use["south"], ring_y.max() + use["north"]
    nx_m = int(math.ceil((x1 - x0) / spacing)) + 1
    ny_m = int(math.ceil((y1 - y0) / spacing)) + 1
    x = 0.5 * (x0 + x1) + (np.arange(nx_m) - 0.5 * (nx_m - 1)) * spacing
    y = 0.5 * (y0 + y1) + (np.arange(ny_m) - 0.5 * (ny_m - 1)) * spacing

    xx, yy = np.meshgrid(x, y)
    node_lon, node_lat = to_metric.transform(xx, yy, direction="INVERSE")
    del xx, yy
    dlon, dlat = source.spacing_deg()
    bouguer_m = _interpolate(np.asarray(source.values, dtype=np.float64), (node_lat - source.lat[0]) / dlat,
                             (node_lon - source.lon[0]) / dlon, order)
    del node_lon, node_lat
    regional_m = upward_continue(bouguer_m, spacing, spacing, recipe.height_km,
                                 pad_mode=recipe.pad_mode, pad_fraction=recipe.pad_fraction)

    lon2, lat2 = np.meshgrid(inner.lon, inner.lat)
    tx, ty = to_metric.transform(lon2, lat2)
    rows, cols = (ty - y[0]) / spacing, (tx - x[0]) / spacing
    del lon2, lat2, tx, ty
    bouguer = np.asarray(inner.values, dtype=np.float64)
    regional = _interpolate(regional_m, rows, cols, order)
    out: dict[str, Any] = {
        "lon": inner.lon, "lat": inner.lat,
        "bouguer": bouguer, "regional": regional, "residual": bouguer - regional,
    }
    wanted = set(recipe.channels)
    if wanted & {"vertical_derivative", "horizontal_gradient", "tilt"}:
        residual_m = bouguer_m - regional_m
        pad = {"pad_mode": recipe.pad_mode, "pad_fraction": recipe.pad_fraction}
        vd = _interpolate(vertical_derivative(residual_m, spacing, spacing, **pad), rows, cols, order)
        thg = np.maximum(_interpolate(horizontal_gradient(residual_m, spacing, spacing), rows, cols, order), 0.0)
        derived = {"vertical_derivative": vd, "horizontal_gradient": thg, "tilt": np.arctan2(vd, thg)}
        out.update({name: values for name, values in derived.items() if name in wanted})
    out["margin_km"] = margins
    out["spacing_km"] = float(spacing)
    out["projection"] = crs.srs
    out["metric_shape"] = (ny_m, nx_m)
    return out
