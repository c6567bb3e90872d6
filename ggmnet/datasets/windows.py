"""Multi-scale sliding windows (Table 2), train/val/test splits and the overlap report.

The paper cuts its region E65-95, N40-55 into square windows of four sizes, each slid from the south-west
corner by a fixed step and kept only where it lies fully inside the region: 450 windows of 1 deg (step 1),
55 of 5 deg (step 2.5), 27 of 10 deg (step 2.5) and 4 of 15 deg (step 5), 536 in all. Windows with less
than 10 % outcrop form the test set, and 15 % of the rest are drawn at random for validation.

Overlapping windows split at random leak: a validation window can lie largely under training windows of
another scale. :func:`overlap_report` measures this for any split, and :func:`split_spatial_blocks` is a
split without it (validation windows lie inside held-out blocks that no training window touches).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ggmnet.classes import COVER_INDEX
from ggmnet.errors import UserError

if TYPE_CHECKING:
    from ggmnet.datasets.geo import GeoGrid, Region

#: Tolerance on window edges, in degrees (windows are laid out on multiples of their step).
EDGE_TOL_DEG = 1e-9


@dataclass(frozen=True)
class Scale:
    """One row of Table 2: square windows of ``size_deg`` degrees slid by ``step_deg`` degrees."""

    size_deg: float
    step_deg: float

    def __post_init__(self) -> None:
        if not (self.size_deg > 0 and self.step_deg > 0):
            raise UserError(f"--scales {self.size_deg}:{self.step_deg}: size and step must be positive degrees")

    def __str__(self) -> str:
        return f"{self.size_deg:g}:{self.step_deg:g}"


#: Table 2 of the paper: (window size, sliding interval) in degrees.
PAPER_SCALES = (Scale(1.0, 1.0), Scale(5.0, 2.5), Scale(10.0, 2.5), Scale(15.0, 5.0))


def parse_scales(text: str, option: str = "--scales") -> tuple[Scale, ...]:
    """Parse ``"SIZE:STEP,SIZE:STEP,..."`` (degrees), e.g. ``"1:1,5:2.5,10:2.5,15:5"`` (Table 2)."""
    scales = []
    for item in text.split(","):
        try:
            size, step = (float(part) for part in item.split(":"))  # not two parts: ValueError too
        except ValueError:
            raise UserError(f"{option} {text}: expected SIZE:STEP pairs in degrees, e.g. 1:1,5:2.5") from None
        if not (math.isfinite(size) and math.isfinite(step) and size > 0 and step > 0):
            raise UserError(f"{option} {text}: window size and step must be positive degrees")
        scales.append(Scale(size, step))
    return tuple(scales)


@dataclass(frozen=True)
class Window:
    """A square window in degrees; ``id`` is its position in the dataset's window list."""

    id: int
    scale_deg: float
    west: float
    east: float
    south: float
    north: float

    @property
    def area(self) -> float:
        """Area in square degrees (the overlap report's unit)."""
        return (self.east - self.west) * (self.north - self.south)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Window:
        """The window of a manifest entry (which may hold more keys, such as its split)."""
        return cls(int(entry["id"]), float(entry["scale_deg"]), float(entry["west"]), float(entry["east"]),
                   float(entry["south"]), float(entry["north"]))


def _count(span: float, size: float, step: float) -> int:
    """Number of windows of ``size`` slid by ``step`` that fit in ``span`` (0 if none)."""
    if size > span + EDGE_TOL_DEG:
        return 0
    return int(math.floor((span - size) / step + 1e-9)) + 1


def make_windows(region: Region, scales: Sequence[Scale] = PAPER_SCALES) -> list[Window]:
    """All windows of each scale fully inside ``region``, slid from its south-west corner.

    Order: scale by scale as given, then rows south to north, west to east within a row; ids count 0, 1, ...
    The paper's four scales over E65-95, N40-55 give 450 + 55 + 27 + 4 = 536 windows.
    """
    windows: list[Window] = []
    for scale in scales:
        nx = _count(region.east - region.west, scale.size_deg, scale.step_deg)
        ny = _count(region.north - region.south, scale.size_deg, scale.step_deg)
        for j in range(ny):
            south = region.south + j * scale.step_deg
            for i in range(nx):
                west = region.west + i * scale.step_deg
                windows.append(Window(len(windows), scale.size_deg, west, west + scale.size_deg,
                                      south, south + scale.size_deg))
    return windows


def window_slices(window: Window, lon: np.ndarray, lat: np.ndarray) -> tuple[slice, slice]:
    """Index slices ``(lat, lon)`` of the grid nodes inside ``window`` (edges included, half-node tolerance).

    ``lon`` (nx,) and ``lat`` (ny,) are ascending node coordinates in degrees.
    """
    tol_x = 0.5 * abs(lon[1] - lon[0]) if lon.size > 1 else 0.0
    tol_y = 0.5 * abs(lat[1] - lat[0]) if lat.size > 1 else 0.0
    i0, i1 = np.searchsorted(lon, [window.west - tol_x * 0.999, window.east + tol_x * 0.999], side="left")
    j0, j1 = np.searchsorted(lat, [window.south - tol_y * 0.999, window.north + tol_y * 0.999], side="left")
    return slice(int(j0), int(j1)), slice(int(i0), int(i1))


def windows_mask(windows: Sequence[Window], lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """``(ny, nx)`` bool: the grid nodes inside at least one of ``windows`` (:func:`window_slices`)."""
    inside = np.zeros((lat.size, lon.size), dtype=bool)
    for window in windows:
        rows, cols = window_slices(window, lon, lat)
        inside[rows, cols] = True
    return inside


def outcrop_fraction(window: Window, labels: GeoGrid) -> float:
    """Share of the label grid's nodes inside ``window`` that are outcrop (not 255 = cover), in [0, 1].

    ``labels`` holds ``lon`` (nx,), ``lat`` (ny,) ascending and ``values`` (ny, nx) class indices.
    """
    rows, cols = window_slices(window, np.asarray(labels.lon), np.asarray(labels.lat))
    block = np.asarray(labels.values)[rows, cols]
    return float(np.count_nonzero(block != COVER_INDEX) / block.size) if block.size else 0.0


def split_random(windows: Sequence[Window], outcrop: Sequence[float], seed: int, *,
                 val_fraction: float = 0.15, test_below: float = 0.10) -> list[str]:
    """The paper's split: ``test`` = outcrop share below ``test_below``; ``val`` = a seeded random
    ``val_fraction`` of the rest (rounded to the nearest window); ``train`` = the others.

    Returns one split name per window, in the order of ``windows``.
    """
    _check_fractions(val_fraction, test_below)
    outcrop = np.asarray(outcrop, dtype=float)
    splits = np.where(outcrop < test_below, "test", "train").astype(object)
    rest = np.flatnonzero(splits == "train")
    n_val = int(round(val_fraction * rest.size))
    chosen = np.random.default_rng(seed).permutation(rest)[:n_val]
    splits[chosen] = "val"
    return [str(s) for s in splits]


def split_spatial_blocks(windows: Sequence[Window], outcrop: Sequence[float], seed: int, *,
                         val_fraction: float = 0.15, test_below: float = 0.10,
                         block_deg: float = 5.0) -> tuple[list[str], int]:
    """A split without leakage: validation windows lie inside held-out square blocks.

    The windows' extent is tiled into ``block_deg`` blocks from its south-west corner. Test windows are those
    with outcrop below ``test_below`` (as the paper). Blocks are held out in a seeded random order until the
    non-test windows lying fully inside held-out blocks reach ``val_fraction`` of the non-test windows; those
    are ``val``. Non-test windows touching no held-out block (shared edges do not count) are ``train``; the
    others straddle a held-out block's edge and are ``unused``, so no validation window overlaps a training
    window. Windows larger than a block are never validation windows.

    Returns one split name per window and the number of ``unused`` windows.
    """
    _check_fractions(val_fraction, test_below)
    if not block_deg > 0:
        raise UserError(f"block size {block_deg}: expected a positive number of degrees")
    outcrop = np.asarray(outcrop, dtype=float)
    west = min(w.west for w in windows)
    south = min(w.south for w in windows)
    nbx = max(1, math.ceil((max(w.east for w in windows) - west) / block_deg - 1e-9))
    nby = max(1, math.ceil((max(w.north for w in windows) - south) / block_deg - 1e-9))
    candidates = [i for i, f in enumerate(outcrop) if f >= test_below]
    target = int(round(val_fraction * len(candidates)))

    def block_of(w: Window) -> tuple[int, int] | None:
        """The block that holds ``w`` entirely, or None."""
        bx = math.floor((w.west - west) / block_deg + 1e-9)
        by = math.floor((w.south - south) / block_deg + 1e-9)
        inside = (w.east <= west + (bx + 1) * block_deg + EDGE_TOL_DEG
                  and w.north <= south + (by + 1) * block_deg + EDGE_TOL_DEG)
        return (bx, by) if inside else None

    order = np.random.default_rng(seed).permutation(nbx * nby)
    held: set[tuple[int, int]] = set()
    n_val = 0
    for flat in order:
        if n_val >= target:
            break
        held.add((int(flat % nbx), int(flat // nbx)))
        n_val = sum(block_of(windows[i]) in held for i in candidates)

    splits = ["test" if f < test_below else "" for f in outcrop]
    for i in candidates:
        w = windows[i]
        if block_of(w) in held:
            splits[i] = "val"
        elif any(_overlap_area(w, _block(b, west, south, block_deg)) > 0 for b in held):
            splits[i] = "unused"
        else:
            splits[i] = "train"
    return splits, splits.count("unused")


def _block(b: tuple[int, int], west: float, south: float, size: float) -> Window:
    return Window(-1, size, west + b[0] * size, west + (b[0] + 1) * size,
                  south + b[1] * size, south + (b[1] + 1) * size)


def _check_fractions(val_fraction: float, test_below: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction}: expected a fraction in [0, 1)")
    if not 0.0 <= test_below <= 1.0:
        raise UserError(f"test outcrop threshold {test_below}: expected a fraction in [0, 1]")


def _overlap_area(a: Window, b: Window) -> float:
    """Area of the intersection of two windows in square degrees (0 when they only share an edge)."""
    dx = min(a.east, b.east) - max(a.west, b.west)
    dy = min(a.north, b.north) - max(a.south, b.south)
    return dx * dy if dx > EDGE_TOL_DEG and dy > EDGE_TOL_DEG else 0.0


def overlap_report(windows: Sequence[Window], splits: Sequence[str]) -> dict[str, float | int]:
    """How much the validation windows overlap the training windows.

    Returns ``val_windows``; ``val_overlapping_train`` (validation windows sharing area with at least one
    training window); ``val_area_covered_by_train`` (share of the summed validation area that lies under the
    union of the training windows, in [0, 1]; 0 when there is no validation window).
    """
    train = [w for w, s in zip(windows, splits) if s == "train"]
    val = [w for w, s in zip(windows, splits) if s == "val"]
    report: dict[str, float | int] = {
        "val_windows": len(val),
        "val_overlapping_train": sum(any(_overlap_area(v, t) > 0 for t in train) for v in val),
        "val_area_covered_by_train": 0.0,
    }
    if not val or not train:
        return report
    # Exact union area on the grid of all window edges: each cell is either inside a train window or not.
    xs = np.unique(np.round([e for w in windows for e in (w.west, w.east)], 9))
    ys = np.unique(np.round([e for w in windows for e in (w.south, w.north)], 9))
    covered = np.zeros((ys.size - 1, xs.size - 1), dtype=bool)
    for t in train:
        covered[_cells(ys, t.south, t.north), _cells(xs, t.west, t.east)] = True
    cell_area = np.outer(np.diff(ys), np.diff(xs))
    under = sum(float((cell_area * covered)[_cells(ys, v.south, v.north), _cells(xs, v.west, v.east)].sum())
                for v in val)
    report["val_area_covered_by_train"] = under / sum(v.area for v in val)
    return report


def _cells(edges: np.ndarray, lo: float, hi: float) -> slice:
    """Cells of the edge grid ``edges`` between ``lo`` and ``hi`` (both are edges of the grid)."""
    i0, i1 = np.searchsorted(edges, [round(lo, 9), round(hi, 9)])
    return slice(int(i0), int(i1))
