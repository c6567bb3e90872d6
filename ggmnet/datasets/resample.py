"""Label grids resampled onto other nodes: the commonest class of the cells each node covers (mode), or the
nearest cell."""

from __future__ import annotations

import numpy as np

from ggmnet.datasets.geo import GeoGrid, Region
from ggmnet.errors import UserError


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
