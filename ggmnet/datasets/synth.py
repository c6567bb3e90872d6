"""The physically based synthetic benchmark: a random geological map under cover and its Bouguer anomaly.

``synthesize(out_dir, config)`` writes what a user would bring (``bouguer.nc`` in the WGM2012 layout,
``labels.nc`` with 255 under cover) plus the truth under the cover (``bedrock.nc``), a summary
(``synth.json``) and ``run.json``. The scene covers the region plus a margin, on the WGM2012 nodes (2' by
default, gridline registration, so E65-95, N40-55 holds exactly 451 x 901 nodes).

How a scene is made:

1. The lon/lat nodes are projected with a Lambert conformal conic fitted to the scene (standard parallels at
   1/6 and 5/6 of its latitude span; scale factor 0.990-0.999 over the paper region, 0.990-1.014 over the
   default scene with its margin; Mercator for a scene that straddles the equator) onto a regular metric
   grid whose cell is 3/4 of the node spacing north-south (2.78 km at 2'). The geology lives on that grid,
   and the FFT takes projected metres for true ones (an error of the scale factor's size).
2. :func:`ggmnet.datasets.synth_geology.make_geology` draws the map, cover and densities on that grid.
3. :func:`ggmnet.datasets.forward.layered_gravity` gives the Bouguer anomaly of the density contrast against
   2.67 g/cm^3 (cover and bedrock units in horizontal slices down to the deepest unit base), and
   :func:`ggmnet.datasets.forward.moho_gravity` the regional field of a smooth Moho 36-55 km deep
   (450 kg/m^3). The crustal part is low-passed with a Gaussian of sd 4.5 km (the resolution of EGM2008),
   correlated noise is added, and the fields are interpolated (cubic) to the lon/lat nodes, where white noise
   is added.
4. Labels are the bedrock class where the cover is at most ``cover_threshold_m`` thick, else 255, with the
   boundaries jittered by about ``boundary_jitter_px`` nodes (the generalisation of a 1:5M map); the bedrock
   grid is the true class everywhere, unjittered.

The field within a few hundred km of the outer edge of the margin carries the edge effect of the finite model
(zero contrast beyond it); the region itself lies ``margin_km`` inside.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import scipy.fft
from scipy import ndimage

from ggmnet.classes import CLASS_CODES, COVER_INDEX, NUM_CLASSES, PAPER_SHARES_PERCENT
from ggmnet.datasets.forward import REFERENCE_DENSITY, layered_gravity, moho_gravity
from ggmnet.datasets.geo import KM_PER_DEG, PAPER_REGION, GeoGrid, Region
from ggmnet.datasets.labels import write_label_grid
from ggmnet.datasets.netcdf import write_gmt_grid
from ggmnet.datasets.synth_geology import GeologyModel, cover_contrast_integral, fractal_noise, make_geology
from ggmnet.engine.config import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, Config, option
from ggmnet.engine.runio import prepare_out_dir, write_json_atomic, write_run_metadata
from ggmnet.errors import UserError

log = logging.getLogger(__name__)

#: Sd of the Gaussian low-pass that mimics EGM2008's resolution, km.
LOWPASS_SD_KM = 4.5
#: Moho depth range (CRUST1.0 over the paper's area), km, and its density contrast, kg/m^3.
MOHO_DEPTH_KM = (36.0, 55.0)
MOHO_CONTRAST = 450.0
#: Correlation scale of the correlated noise, km.
CORRELATED_NOISE_KM = 30.0
#: Metric cell size as a fraction of the north-south node spacing.
MODEL_CELL_FRACTION = 0.75
#: Zero-contrast padding around the metric grid before the FFT, km.
FFT_PAD_KM = 200.0
#: Top depths of the horizontal slices of the density model, km; further 2 km slices reach the deepest base.
SLICE_TOPS_KM = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0)


def _region(value: Any) -> Region:
    """A region from a Region, ``W,E,S,N`` text (or its list, as YAML writes it) or ``{west, east, ...}``."""
    if isinstance(value, Region):
        return value
    if isinstance(value, dict):
        return Region.from_dict(value, "synth config region")
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return Region.parse(str(value), "--region")


@dataclasses.dataclass
class SynthConfig(Config):
    """Everything that defines a synthetic scene (JSON round trip with :meth:`to_dict` / :meth:`from_dict`).

    Each field is an option of ``ggm-data synth``, whose help gives its meaning and unit; values are checked
    on construction.
    """

    region: Region = option(PAPER_REGION, "study area in degrees; the scene adds --margin-km around it", _region,
                            metavar="W,E,S,N")
    spacing_arcmin: float = option(2.0, "node spacing, arc minutes (WGM2012: 2)", POSITIVE)
    margin_km: float = option(500.0, "margin around the region, km", NON_NEGATIVE)
    seed: int = option(0, "random seed; the same seed gives bit-identical arrays", NON_NEGATIVE_INT)
    density_contrast: float = option(1.0, "multiplier on the density differences between units (lower is harder)",
                                     NON_NEGATIVE)
    within_class_sd: float = option(1.0, "multiplier on the density variation inside units (higher is harder)",
                                    NON_NEGATIVE)
    cover_scale: float = option(1.0, "multiplier on the Cenozoic cover thickness (1: median 0.2 km, p90 2.2 km, "
                                     "max 8 km)", NON_NEGATIVE)
    noise_mgal: float = option(1.0, "sd of the white noise, mGal", NON_NEGATIVE)
    correlated_noise_mgal: float = option(2.0, f"sd of the correlated noise (scale ~{CORRELATED_NOISE_KM:g} km), "
                                               "mGal", NON_NEGATIVE)
    cover_threshold_m: float = option(20.0, "cover thicker than this is labelled 255 (cover), m", NON_NEGATIVE)
    unit_scale: float = option(1.0, "multiplier on the size of the geological units (terranes, folds, cratons' "
                                    "cores, plutons): 2 gives larger, more continuous units, where extending the "
                                    "nearest outcrop under the cover is a stronger rule", POSITIVE)
    boundary_jitter_px: float = option(1.0, "sd of the label boundaries' random displacement, nodes (0: none)",
                                       NON_NEGATIVE)

    def __post_init__(self) -> None:
        self.check()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (the region as ``{west, east, south, north}``)."""
        out = dataclasses.asdict(self)
        out["region"] = self.region.to_dict()
        return out

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - names)
        if unknown:
            raise UserError(f"synth config: unknown key(s) {', '.join(unknown)}")
        return cls(**mapping)


@dataclasses.dataclass
class SynthScene:
    """A generated scene on the lon/lat nodes (arrays ``(ny, nx)``, latitude ascending).

    Attributes
    ----------
    config : the configuration that made it.
    lon, lat : node coordinates, degrees, ``(nx,)`` and ``(ny,)``.
    bedrock : uint8 true class 0-9 everywhere.
    cover_thickness_km : float32 Cenozoic cover thickness, km.
    labels : uint8 map labels: class 0-9, 255 where the cover is thicker than the threshold.
    bouguer_mgal : float32 Bouguer anomaly (crust + Moho + noise), mGal.
    regional_mgal : float32 the Moho part alone, mGal (for information).
    density_gcc : float32 density of the bedrock at its top, g/cm^3.
    stats : summary (class shares, cover and anomaly statistics), as written to ``synth.json``.
    """

    config: SynthConfig
    lon: np.ndarray
    lat: np.ndarray
    bedrock: np.ndarray
    cover_thickness_km: np.ndarray
    labels: np.ndarray
    bouguer_mgal: np.ndarray
    regional_mgal: np.ndarray
    density_gcc: np.ndarray
    stats: dict[str, Any]

    @property
    def region_mask(self) -> np.ndarray:
        """``(ny, nx)`` bool: nodes inside the configured region."""
        return self.config.region.contains_points(self.lon[None, :], self.lat[:, None])


def node_coordinates(config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes ``(nx,)`` and latitudes ``(ny,)`` of the scene's nodes, degrees.

    Nodes lie on ``west + i * spacing`` and ``south + j * spacing`` (gridline registration, as WGM2012), and
    reach at least ``margin_km`` beyond the region on every side (longitude margin at the widened box's
    poleward edge, as :meth:`ggmnet.datasets.geo.GeoGrid.crop` measures it).
    """
    region = config.region
    step = config.spacing_arcmin / 60.0
    lat_margin = config.margin_km / KM_PER_DEG
    south = max(region.south - lat_margin, -89.0)
    north = min(region.north + lat_margin, 89.0)
    lon_margin = config.margin_km / (KM_PER_DEG * math.cos(math.radians(max(abs(south), abs(north)))))
    n_lon = int(math.floor(region.width_deg / step + 1e-9))
    n_lat = int(math.floor(region.height_deg / step + 1e-9))
    m_lon = int(math.ceil(lon_margin / step - 1e-9))
    m_lat_s = int(math.ceil((region.south - south) / step - 1e-9))
    m_lat_n = int(math.ceil((north - region.north) / step - 1e-9))
    lon = region.west + np.arange(-m_lon, n_lon + m_lon + 1) * config.spacing_arcmin / 60.0
    lat = region.south + np.arange(-m_lat_s, n_lat + m_lat_n + 1) * config.spacing_arcmin / 60.0
    if lon[0] < -180.0 or lon[-1] > 180.0:
        raise UserError(f"--region {region} with --margin-km {config.margin_km:g}: the scene (longitude "
                        f"{lon[0]:.2f} to {lon[-1]:.2f}) would cross the antimeridian; move the region or "
                        f"shrink the margin")
    return lon, lat


def scene_projection(lon: np.ndarray, lat: np.ndarray) -> pyproj.Transformer:
    """A conformal projection (WGS84) fitted to the box of ``lon``, ``lat``: lon/lat degrees -> x, y in m.

    Lambert conformal conic with standard parallels at 1/6 and 5/6 of the latitude span; Mercator (true scale
    at the equator) for a box that straddles the equator, where the cone degenerates.
    """
    south, north = float(lat[0]), float(lat[-1])
    span = north - south
    lon_0 = (float(lon[0]) + float(lon[-1])) / 2
    if south < 0.0 < north:
        proj4 = f"+proj=merc +lon_0={lon_0:.6f} +ellps=WGS84 +units=m +no_defs"
    else:
        proj4 = (f"+proj=lcc +lat_1={south + span / 6:.6f} +lat_2={north - span / 6:.6f} "
                 f"+lat_0={(south + north) / 2:.6f} +lon_0={lon_0:.6f} +ellps=WGS84 +units=m +no_defs")
    return pyproj.Transformer.from_crs("EPSG:4326", pyproj.CRS.from_proj4(proj4), always_xy=True)


def generate_scene(config: SynthConfig) -> SynthScene:
    """Draw a synthetic scene (map, cover, Bouguer anomaly) for ``config``; deterministic in ``config``."""
    t0 = time.perf_counter()
    lon, lat = node_coordinates(config)
    to_metric = scene_projection(lon, lat)
    cell_km = MODEL_CELL_FRACTION * config.spacing_arcmin / 60.0 * KM_PER_DEG
    x_km, y_km = _metric_grid(to_metric, lon, lat, cell_km)
    region_mask = _region_mask(to_metric, x_km, y_km, config.region)

    streams = np.random.default_rng(config.seed).spawn(5)
    geology = make_geology(x_km, y_km, region_mask, streams[0], spacing_km=cell_km,
                           cover_scale=config.cover_scale, cover_threshold_km=config.cover_threshold_m / 1e3,
                           density_contrast=config.density_contrast, within_class_sd=config.within_class_sd,
                           unit_scale=config.unit_scale)
    log.info("geology on %d x %d cells of %.2f km: %.1f s", y_km.size, x_km.size, cell_km,
             time.perf_counter() - t0)

    spacing_m = (cell_km * 1e3, cell_km * 1e3)
    pad = int(math.ceil(FFT_PAD_KM / cell_km))
    crust = layered_gravity(_density_slices(geology), spacing_m, pad=pad)
    crust = ndimage.gaussian_filter(crust, LOWPASS_SD_KM / cell_km, mode="nearest")
    crust += config.correlated_noise_mgal * fractal_noise(crust.shape, streams[1], spacing_km=cell_km,
                                                          corner_km=CORRELATED_NOISE_KM, beta=4.0)
    moho_score = fractal_noise(crust.shape, streams[2], spacing_km=cell_km, corner_km=600.0, beta=4.0)
    low, high = MOHO_DEPTH_KM
    moho_km = low + (high - low) * (moho_score - moho_score.min()) / np.ptp(moho_score)
    regional = moho_gravity(moho_km * 1e3, spacing_m, density_contrast=MOHO_CONTRAST, pad=pad)
    log.info("forward model: %.1f s", time.perf_counter() - t0)

    # Sample the metric fields at the nodes (fractional cell indices of the projected nodes).
    node_x, node_y = to_metric.transform(*np.meshgrid(lon, lat))
    rows = (node_y / 1e3 - y_km[0]) / cell_km
    cols = (node_x / 1e3 - x_km[0]) / cell_km
    del node_x, node_y

    def sample(values: np.ndarray, order: int) -> np.ndarray:
        return ndimage.map_coordinates(values, [rows, cols], order=order, mode="nearest")

    bedrock = sample(geology.bedrock, 0).astype(np.uint8)
    cover_km = sample(geology.cover_km, 1).astype(np.float32)
    density = sample(geology.density_gcc, 0).astype(np.float32)
    regional_nodes = sample(regional, 3)
    bouguer = sample(crust, 3) + regional_nodes
    bouguer += config.noise_mgal * streams[3].standard_normal(bouguer.shape)
    covered = cover_km * 1e3 > config.cover_threshold_m
    labels = _jitter(np.where(covered, COVER_INDEX, bedrock).astype(np.uint8), config.boundary_jitter_px,
                     streams[4])
    scene = SynthScene(config=config, lon=lon, lat=lat, bedrock=bedrock, cover_thickness_km=cover_km,
                       labels=labels, bouguer_mgal=bouguer.astype(np.float32),
                       regional_mgal=regional_nodes.astype(np.float32), density_gcc=density, stats={})
    scene.stats = scene_statistics(scene, geology)
    scene.stats["generation_seconds"] = round(time.perf_counter() - t0, 2)
    log.info("scene %d x %d nodes: %.1f s", lat.size, lon.size, time.perf_counter() - t0)
    return scene


def _metric_grid(to_metric: pyproj.Transformer, lon: np.ndarray, lat: np.ndarray,
                 cell_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres (km) of a regular grid covering the projected node box with a cell to spare on each side,
    its sizes rounded up to lengths the FFT handles fast."""
    edge_lon = np.concatenate([lon, np.full(lat.size, lon[-1]), lon[::-1], np.full(lat.size, lon[0])])
    edge_lat = np.concatenate([np.full(lon.size, lat[0]), lat, np.full(lon.size, lat[-1]), lat[::-1]])
    ex, ey = to_metric.transform(edge_lon, edge_lat)
    axes = []
    for low, high in ((ex.min() / 1e3, ex.max() / 1e3), (ey.min() / 1e3, ey.max() / 1e3)):
        n = scipy.fft.next_fast_len(int(math.ceil((high - low) / cell_km)) + 3, real=True)
        centre = 0.5 * (low + high)
        axes.append(centre + (np.arange(n) - 0.5 * (n - 1)) * cell_km)
    return axes[0], axes[1]


def _region_mask(to_metric: pyproj.Transformer, x_km: np.ndarray, y_km: np.ndarray, region: Region) -> np.ndarray:
    """``(ny, nx)`` bool: metric cells inside ``region``; on grids over a million cells from the inverse
    projection of every 4th cell (the mask's edge is then exact to 2 cells, enough to tune statistics)."""
    step = 4 if x_km.size * y_km.size > 1_000_000 else 1
    rows = np.minimum((np.arange(y_km.size) + step // 2) // step, (y_km.size - 1) // step)
    cols = np.minimum((np.arange(x_km.size) + step // 2) // step, (x_km.size - 1) // step)
    lon, lat = to_metric.transform(*np.meshgrid(x_km[::step] * 1e3, y_km[::step] * 1e3),
                                   direction=pyproj.enums.TransformDirection.INVERSE)
    return region.contains_points(lon, lat)[rows[:, None], cols[None, :]]


def _density_slices(geology: GeologyModel):
    """Yield ``(top_m, bottom_m, contrast_kg_m3)``: the mean contrast against 2.67 g/cm^3 over each slice."""
    reference_gcc = REFERENCE_DENSITY / 1e3
    deepest = float(geology.base_km.max())
    tops = list(SLICE_TOPS_KM)
    while tops[-1] < deepest:
        tops.append(tops[-1] + 2.0)
    bedrock_contrast = geology.density_gcc - reference_gcc
    for top, bottom in zip(tops[:-1], tops[1:]):
        rock_top = np.clip(geology.cover_km, top, bottom)
        contrast = (np.clip(geology.base_km, top, bottom) - rock_top) * bedrock_contrast
        covered = geology.cover_km > top
        contrast[covered] += cover_contrast_integral(np.float32(top), rock_top[covered], reference_gcc)
        yield top * 1e3, bottom * 1e3, contrast * (1e3 / (bottom - top))


def _jitter(labels: np.ndarray, sd_px: float, rng: np.random.Generator) -> np.ndarray:
    """Move every node's label by a smooth random offset of sd ``sd_px`` nodes (nearest node)."""
    if sd_px == 0:
        return labels
    ny, nx = labels.shape
    dy = np.rint(sd_px * fractal_noise(labels.shape, rng, spacing_km=1.0, corner_km=8.0, beta=4.0)).astype(int)
    dx = np.rint(sd_px * fractal_noise(labels.shape, rng, spacing_km=1.0, corner_km=8.0, beta=4.0)).astype(int)
    rows = np.clip(np.arange(ny)[:, None] + dy, 0, ny - 1)
    cols = np.clip(np.arange(nx)[None, :] + dx, 0, nx - 1)
    return labels[rows, cols]


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "p10": float(np.quantile(values, 0.1)), "median": float(np.median(values)),
            "p90": float(np.quantile(values, 0.9)), "max": float(values.max())}


def scene_statistics(scene: SynthScene, geology: GeologyModel | None = None) -> dict[str, Any]:
    """Class shares of the outcrop, cover and anomaly statistics over the region's nodes."""
    inside = scene.region_mask
    outcrop = inside & (scene.labels != COVER_INDEX)
    counts = np.bincount(scene.labels[outcrop], minlength=NUM_CLASSES)[:NUM_CLASSES]
    shares = 100.0 * counts / max(int(counts.sum()), 1)
    bouguer = scene.bouguer_mgal[inside].astype(np.float64)
    regional = scene.regional_mgal[inside].astype(np.float64)
    stats: dict[str, Any] = {
        "region_nodes": [int(inside.any(axis=1).sum()), int(inside.any(axis=0).sum())],
        "scene_nodes": list(scene.labels.shape),
        "outcrop_fraction": float(outcrop.sum() / inside.sum()),
        "class_shares_percent": {code: round(float(s), 2) for code, s in zip(CLASS_CODES, shares)},
        "paper_shares_percent": dict(zip(CLASS_CODES, PAPER_SHARES_PERCENT)),
        "cover_km": _summary(scene.cover_thickness_km[inside]),
        "bouguer_mgal": _summary(bouguer),
        "regional_mgal": _summary(regional),
        "crust_mgal": _summary(bouguer - regional),
    }
    if geology is not None:
        stats["model_cells"] = list(geology.bedrock.shape)
    return stats


def write_scene(scene: SynthScene, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``bouguer.nc``, ``labels.nc``, ``bedrock.nc``, ``synth.json`` and ``run.json`` into ``out_dir``.

    The files are made in a temporary sibling folder and moved into ``out_dir`` only once all are complete, so
    an interrupted run leaves the folder as it was. Returns ``{"bouguer", "labels", "bedrock", "synth",
    "run"}`` -> path.
    """
    out_dir = prepare_out_dir(out_dir)
    source = f"ggmnet synthetic scene (seed {scene.config.seed})"

    def grid(values: np.ndarray, name: str, units: str) -> GeoGrid:
        return GeoGrid(scene.lon, scene.lat, values, name=name, units=units, source=source)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.synth.", dir=out_dir.parent))
    try:
        write_gmt_grid(staging / "bouguer.nc", grid(scene.bouguer_mgal, "bouguer", "mGal"),
                       title=f"Synthetic Bouguer anomaly, {source}")
        write_label_grid(staging / "labels.nc", grid(scene.labels, "label", ""), variable="label")
        write_label_grid(staging / "bedrock.nc", grid(scene.bedrock, "bedrock", ""), variable="bedrock")
        write_json_atomic(staging / "synth.json", {"format": "ggmnet-synth", "version": 1,
                                                   "config": scene.config.to_dict(), "seed": scene.config.seed,
                                                   **scene.stats})
        write_run_metadata(staging, scene.config.to_dict(), seed=scene.config.seed)
        paths = {}
        for key, name in (("bouguer", "bouguer.nc"), ("labels", "labels.nc"), ("bedrock", "bedrock.nc"),
                          ("synth", "synth.json"), ("run", "run.json")):
            os.replace(staging / name, out_dir / name)
            paths[key] = out_dir / name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def synthesize(out_dir: str | os.PathLike, config: SynthConfig | None = None) -> dict[str, Path]:
    """Generate the scene of ``config`` (default: :class:`SynthConfig()`) and write it into ``out_dir``."""
    scene = generate_scene(config or SynthConfig())
    return write_scene(scene, out_dir)
