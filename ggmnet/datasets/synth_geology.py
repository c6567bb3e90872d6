"""A random but geologically plausible bedrock map, cover and density model on a regular metric grid.

The map is built from warped Voronoi terranes of three kinds (after the recipe in the project notes,
``gravity-data.md`` section 4):

* **cratons**: Archean cores (around the terrane's seed, shaped by noise) inside Proterozoic;
* **fold belts**: a stratigraphic-depth field ``offset + A sin(2 pi v / lambda) + noise`` (``v`` across the
  warped strike, ``lambda`` 30-120 km) cut into Cambrian ... Permian, so that older units crop out in anticline
  cores and the belts are striped;
* **Jurassic basins** with inliers of the folded Paleozoic where a noise field is high;

then granite plutons (noisy ellipses, half-length 3-25 km, mostly in fold belts) and a Cenozoic cover whose
thickness is fractal noise, raised over basins and mapped onto a target distribution (median 0.2 km, p90
2.2 km, max 8 km before ``cover_scale``; CRUST1.0 sediment statistics of the area). Cuts between classes are
set from quantiles over the outcrop inside the region, so that the class shares of the outcrop follow Table 1
(``ggmnet.classes.PAPER_SHARES_PERCENT``) closely; the craton and basin shares follow from the terrane areas
and vary more from seed to seed.

Densities (g/cm^3, textbook-range assumptions from the notes: Telford et al. 1990 Table 6.1, CRUST1.0,
Hinze 2003) are drawn per unit around the class mean (between-unit sd) plus a short-range correlated
per-pixel variation; the cover's density rises with depth, ``2.65 - 0.55 exp(-z / 1.5 km)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.spatial import cKDTree

from ggmnet.classes import NUM_CLASSES, PAPER_SHARES_PERCENT

(ARCHEAN, PROTEROZOIC, CAMBRIAN, ORDOVICIAN, SILURIAN, DEVONIAN, CARBONIFEROUS, PERMIAN, JURASSIC,
 GRANITE) = range(NUM_CLASSES)
#: Paleozoic classes from youngest to oldest (the order of the stratigraphic-depth cuts).
PALEOZOIC_YOUNG_TO_OLD = (PERMIAN, CARBONIFEROUS, DEVONIAN, SILURIAN, ORDOVICIAN, CAMBRIAN)

#: Mean density of each class (index 0-9), g/cm^3.
DENSITY_MEAN_GCC = np.array([2.80, 2.74, 2.69, 2.67, 2.65, 2.64, 2.62, 2.58, 2.45, 2.61])
#: Between-unit standard deviation of each class's density, g/cm^3.
DENSITY_SD_GCC = np.array([0.05, 0.05, 0.04, 0.05, 0.04, 0.06, 0.06, 0.06, 0.06, 0.03])
#: Short-range (per-pixel) density variation within a unit, as a fraction of the between-unit sd.
PIXEL_SD_FRACTION = 0.5
#: Depth of the base of each class's units, km (sediments 6-8 km drawn per unit, granite 8, basement 15).
BASE_KM_RANGE = {ARCHEAN: (15.0, 15.0), PROTEROZOIC: (15.0, 15.0), GRANITE: (8.0, 8.0)}
SEDIMENT_BASE_KM_RANGE = (6.0, 8.0)
#: Units reach at least this far below the cover, km.
MIN_UNIT_THICKNESS_KM = 1.0

#: Cover density ``COVER_DEEP_GCC - COVER_DEFICIT_GCC exp(-z / COVER_COMPACTION_KM)``.
COVER_DEEP_GCC = 2.65
COVER_DEFICIT_GCC = 0.55
COVER_COMPACTION_KM = 1.5

#: Cover thickness distribution over the region (before ``cover_scale``): bare fraction, median, p90, max (km).
COVER_BARE_FRACTION = 0.35
COVER_MEDIAN_KM = 0.2
COVER_P90_KM = 2.2
COVER_MAX_KM = 8.0

#: Terrane kinds and their target shares of the region's area.
CRATON, FOLD_BELT, BASIN = 0, 1, 2
TERRANE_AREA_SHARE = {CRATON: 0.09, FOLD_BELT: 0.76, BASIN: 0.15}
TERRANE_SIZE_KM = 260.0
#: Pluton half-lengths (km), and the share of pluton centres in fold belts, cratons and basins.
PLUTON_HALF_LENGTH_KM = (3.0, 25.0)
PLUTON_PLACEMENT = {CRATON: 0.10, FOLD_BELT: 0.85, BASIN: 0.05}
FOLD_WAVELENGTH_KM = (30.0, 120.0)
#: Bounds on the fraction of the basins' outcrop taken by Paleozoic inliers.
BASIN_INLIER_FRACTION = (0.1, 0.9)


@dataclass
class GeologyModel:
    """The bedrock map and cover on the metric grid (all arrays ``(ny, nx)``, north-south first).

    Attributes
    ----------
    bedrock : uint8 class index 0-9 (Table 1) of the rock under the cover.
    unit : int64 id of the geological unit (a class within a terrane, or one pluton).
    terrane_kind : uint8 ``CRATON``, ``FOLD_BELT`` or ``BASIN``.
    cover_km : float32 Cenozoic cover thickness, km.
    base_km : float32 depth of the base of the bedrock unit below the surface, km.
    density_gcc : float32 bedrock density, g/cm^3.
    """

    bedrock: np.ndarray
    unit: np.ndarray
    terrane_kind: np.ndarray
    cover_km: np.ndarray
    base_km: np.ndarray
    density_gcc: np.ndarray


def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, *, spacing_km: float, corner_km: float,
                  beta: float) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with power ``(1 + (k / k0)^2)^(-beta / 2)``, periodic.

    ``k0 = 2 pi / corner_km``: flat below the corner wavenumber, a power law of slope ``-beta`` above it.
    Returns float32 ``shape``.
    """
    ny, nx = shape
    ky = scipy.fft.fftfreq(ny, d=spacing_km).astype(np.float32)[:, None]
    kx = scipy.fft.rfftfreq(nx, d=spacing_km).astype(np.float32)[None, :]
    amplitude = (1.0 + (ky**2 + kx**2) * np.float32(corner_km**2)) ** np.float32(-beta / 4.0)
    amplitude[0, 0] = 0.0
    # White noise drawn straight in the Fourier domain (the spectrum of white noise is white noise).
    spectrum = rng.standard_normal((2, *amplitude.shape), dtype=np.float32)
    field = scipy.fft.irfft2((spectrum[0] + 1j * spectrum[1]) * amplitude, s=shape, workers=-1)
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _quantile_cut(values: np.ndarray, sample: np.ndarray, fraction: float) -> float:
    """The value above which ``fraction`` of ``values[sample]`` lies (``inf`` for an empty sample)."""
    chosen = values[sample]
    return float(np.quantile(chosen, 1.0 - fraction)) if chosen.size else float("inf")


def _cover_quantile_function(p: np.ndarray) -> np.ndarray:
    """Cover thickness (km) at non-exceedance probability ``p``: 0 below the bare fraction, then linear to the
    median and log-linear through p90 to the maximum."""
    knots_p = np.array([COVER_BARE_FRACTION, 0.5, 0.9, 1.0])
    log_knots = np.log([COVER_MEDIAN_KM, COVER_MEDIAN_KM, COVER_P90_KM, COVER_MAX_KM])
    thin = COVER_MEDIAN_KM * (p - COVER_BARE_FRACTION) / (0.5 - COVER_BARE_FRACTION)
    thick = np.exp(np.interp(p, knots_p, log_knots))
    return np.where(p < COVER_BARE_FRACTION, 0.0, np.where(p < 0.5, thin, thick))


def _assign_terrane_kinds(areas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kinds for terranes of region ``areas`` (pixels): in random order, each takes the kind furthest below its
    target area share (so the shares land near ``TERRANE_AREA_SHARE`` whatever the terrane sizes)."""
    kinds = np.full(areas.size, FOLD_BELT, dtype=np.uint8)
    targets = {kind: share * areas.sum() for kind, share in TERRANE_AREA_SHARE.items()}
    filled = dict.fromkeys(targets, 0.0)
    for t in rng.permutation(areas.size):
        if areas[t] == 0:
            continue
        kind = max(targets, key=lambda k: (targets[k] - filled[k]) / targets[k])
        kinds[t] = kind
        filled[kind] += areas[t]
    return kinds


def make_geology(x_km: np.ndarray, y_km: np.ndarray, region_mask: np.ndarray, rng: np.random.Generator, *,
                 spacing_km: float, cover_scale: float = 1.0, cover_threshold_km: float = 0.02,
                 density_contrast: float = 1.0, within_class_sd: float = 1.0,
                 unit_scale: float = 1.0) -> GeologyModel:
    """Draw the bedrock map, units, cover and densities on a metric grid.

    Parameters
    ----------
    x_km, y_km
        Easting ``(nx,)`` and northing ``(ny,)`` of the grid's cell centres, km (regular, ``spacing_km``).
    region_mask
        ``(ny, nx)`` bool, True inside the region whose outcrop shares and cover statistics are tuned (all
        cells when it holds none).
    rng
        Source of randomness (the result depends on nothing else).
    spacing_km
        Cell size, km.
    cover_scale
        Multiplier on the cover thickness.
    cover_threshold_km
        Cover thicker than this hides the bedrock on the map (used only to tune the outcrop shares).
    density_contrast
        Multiplier on the density differences between units (class means and between-unit spread about
        the 2.67 g/cm^3 reference).
    within_class_sd
        Multiplier on the per-pixel density variation inside units.
    unit_scale
        Multiplier on the lengths that size the units: terranes, their warping, fold wavelengths and the
        folds' roughness, Archean cores and plutons (2: units twice as long and wide, more continuous under
        the cover). 1 draws exactly the default scene.

    Returns
    -------
    GeologyModel
    """
    shape = (y_km.size, x_km.size)
    if not region_mask.any():  # a region smaller than a cell: tune over the whole grid
        region_mask = np.ones(shape, dtype=bool)
    streams = iter(rng.spawn(14))
    noise = functools.partial(fractal_noise, shape, spacing_km=spacing_km)

    # Terranes: Voronoi cells of random seeds in warped coordinates.
    u = float(unit_scale)
    warp_x = 70.0 * u * noise(next(streams), corner_km=400.0 * u, beta=4.0)
    warp_y = 70.0 * u * noise(next(streams), corner_km=400.0 * u, beta=4.0)
    xw = x_km[None, :] + warp_x
    yw = y_km[:, None] + warp_y
    seed_rng = next(streams)
    area_km2 = (x_km[-1] - x_km[0]) * (y_km[-1] - y_km[0])
    n_terranes = max(4, int(round(area_km2 / (u * TERRANE_SIZE_KM)**2)))
    seeds = np.column_stack([seed_rng.uniform(x_km[0], x_km[-1], n_terranes),
                             seed_rng.uniform(y_km[0], y_km[-1], n_terranes)])
    seed_distance, terrane = cKDTree(seeds).query(np.column_stack([xw.ravel(), yw.ravel()]), workers=-1)
    terrane = terrane.reshape(shape)
    seed_distance = seed_distance.reshape(shape).astype(np.float32)
    region_areas = np.bincount(terrane[region_mask], minlength=n_terranes)
    kinds = _assign_terrane_kinds(region_areas, seed_rng)
    terrane_kind = kinds[terrane]

    # Cover: fractal noise raised over basins, mapped onto the target distribution over the region.
    basin_bias = ndimage.gaussian_filter((terrane_kind == BASIN).astype(np.float32), 30.0 / spacing_km)
    cover_score = noise(next(streams), corner_km=250.0, beta=3.5) + 1.2 * basin_bias
    levels = np.linspace(0.0, 1.0, 2001)
    p = np.interp(cover_score, np.quantile(cover_score[region_mask], levels), levels)
    cover_km = (cover_scale * _cover_quantile_function(p)).astype(np.float32)
    outcrop = region_mask & (cover_km <= cover_threshold_km)

    # Fold belts (and the Paleozoic of basin inliers): stratigraphic depth of the erosion surface, larger =
    # older; the sine's crests are anticline cores.
    fold_rng = next(streams)
    strike = fold_rng.uniform(0.0, np.pi, n_terranes)
    wavelength = u * np.exp(fold_rng.uniform(*np.log(FOLD_WAVELENGTH_KM), n_terranes))
    phase = fold_rng.uniform(0.0, 2 * np.pi, n_terranes)
    offset = fold_rng.normal(0.0, 0.8, n_terranes)
    tilt = fold_rng.normal(0.0, 0.6, n_terranes)
    xf = xw + 12.0 * u * noise(next(streams), corner_km=80.0 * u, beta=4.0)
    yf = yw + 12.0 * u * noise(next(streams), corner_km=80.0 * u, beta=4.0)
    across = xf * np.cos(strike)[terrane] + yf * np.sin(strike)[terrane]
    along = -xf * np.sin(strike)[terrane] + yf * np.cos(strike)[terrane]
    depth = (offset[terrane] + np.sin(2 * np.pi * across / wavelength[terrane] + phase[terrane])
             + tilt[terrane] * np.tanh(along / (u * TERRANE_SIZE_KM))
             + 0.3 * noise(next(streams), corner_km=20.0 * u, beta=4.0))

    # Basin inliers: as much of the basins' outcrop as exceeds the Jurassic share (within set bounds).
    shares = np.asarray(PAPER_SHARES_PERCENT, dtype=np.float64)
    inlier_score = noise(next(streams), corner_km=40.0 * u, beta=4.0)
    basin = terrane_kind == BASIN
    basin_outcrop = int(np.sum(basin & outcrop))
    # Plutons later take about the granite share of every kind of outcrop: aim above the target by that much.
    jurassic_target = shares[JURASSIC] / (shares.sum() - shares[GRANITE]) * outcrop.sum()
    inlier_fraction = float(np.clip(1.0 - jurassic_target / max(basin_outcrop, 1), *BASIN_INLIER_FRACTION))
    inlier = basin & (inlier_score > _quantile_cut(inlier_score, basin & outcrop, inlier_fraction))
    paleozoic = (terrane_kind == FOLD_BELT) | inlier
    cumulative = np.cumsum(shares[list(PALEOZOIC_YOUNG_TO_OLD)])
    sample = depth[paleozoic & outcrop]
    cuts = np.quantile(sample, cumulative[:-1] / cumulative[-1]) if sample.size else np.zeros(cumulative.size - 1)
    bedrock = np.asarray(PALEOZOIC_YOUNG_TO_OLD, dtype=np.uint8)[np.searchsorted(cuts, depth)]
    bedrock[basin & ~inlier] = JURASSIC

    # Cratons: Archean cores around the seed inside Proterozoic.
    craton = terrane_kind == CRATON
    core_score = noise(next(streams), corner_km=60.0 * u, beta=4.0) - seed_distance / (60.0 * u)
    archean_fraction = shares[ARCHEAN] / (shares[ARCHEAN] + shares[PROTEROZOIC])
    bedrock[craton] = PROTEROZOIC
    bedrock[craton & (core_score > _quantile_cut(core_score, craton & outcrop, archean_fraction))] = ARCHEAN

    unit = terrane.astype(np.int64) * NUM_CLASSES + bedrock

    # Granite plutons: noisy ellipses, placed mostly in fold belts.
    granite_score, pluton = _plutons(terrane_kind, x_km, y_km, spacing_km, next(streams),
                                     noise(next(streams), corner_km=10.0 * u, beta=3.5), size_scale=u)
    granite_fraction = shares[GRANITE] / shares.sum()
    # A cell is granite inside its pluton's (roughened) ellipse scaled by 0.7-1.3, the factor that gives the
    # granite share of the outcrop.
    cut = _quantile_cut(-granite_score, outcrop, granite_fraction)
    granite = -granite_score > min(max(cut, -1.3), -0.7)
    bedrock[granite] = GRANITE
    unit[granite] = n_terranes * NUM_CLASSES + pluton[granite]

    density, base_km = _densities(bedrock, unit, cover_km, next(streams),
                                  noise(next(streams), corner_km=8.0, beta=3.0),
                                  density_contrast=density_contrast, within_class_sd=within_class_sd)
    return GeologyModel(bedrock=bedrock, unit=unit, terrane_kind=terrane_kind, cover_km=cover_km,
                        base_km=base_km, density_gcc=density)


def _plutons(terrane_kind: np.ndarray, x_km: np.ndarray, y_km: np.ndarray, spacing_km: float,
             rng: np.random.Generator, roughness: np.ndarray,
             size_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised elliptical radius to the nearest pluton (< 1 inside, roughened) and that pluton's index;
    ``size_scale`` multiplies the plutons' lengths (fewer plutons keep the granite share)."""
    shape = terrane_kind.shape
    lo, hi = np.log(np.asarray(PLUTON_HALF_LENGTH_KM) * size_scale)
    mean_area = np.pi * 0.725 * (np.exp(2 * hi) - np.exp(2 * lo)) / (2 * (hi - lo))
    granite_share = PAPER_SHARES_PERCENT[GRANITE] / sum(PAPER_SHARES_PERCENT)
    area = shape[0] * shape[1] * spacing_km**2
    n = int(round(1.15 * granite_share * area / mean_area))
    # Rejection sampling of centres by terrane kind: accept with probability proportional to the placement
    # share over the kind's area share.
    kind_share = np.bincount(terrane_kind.ravel(), minlength=3) / terrane_kind.size
    weight = np.array([PLUTON_PLACEMENT[k] / max(kind_share[k], 1e-6) for k in range(3)])
    weight /= weight.max()
    candidates = 4 * n
    iy = rng.integers(0, shape[0], candidates)
    ix = rng.integers(0, shape[1], candidates)
    keep = rng.random(candidates) < weight[terrane_kind[iy, ix]]
    iy, ix = iy[keep][:n], ix[keep][:n]
    n = iy.size
    centres = np.column_stack([x_km[ix] + rng.uniform(-0.5, 0.5, n) * spacing_km,
                               y_km[iy] + rng.uniform(-0.5, 0.5, n) * spacing_km])
    half_length = np.exp(rng.uniform(lo, hi, n))
    half_width = half_length * rng.uniform(0.45, 1.0, n)
    angle = rng.uniform(0.0, np.pi, n)

    # Rasterise each ellipse over its bounding box; a cell takes the pluton it lies deepest inside.
    best = np.full(shape, 1e3, dtype=np.float32)  # far outside any pluton
    best_index = np.zeros(shape, dtype=np.int64)
    reach = np.ceil(1.5 * half_length / spacing_km).astype(int)
    for i in range(n):
        r0, r1 = max(iy[i] - reach[i], 0), min(iy[i] + reach[i] + 1, shape[0])
        c0, c1 = max(ix[i] - reach[i], 0), min(ix[i] + reach[i] + 1, shape[1])
        dx = x_km[None, c0:c1] - centres[i, 0]
        dy = y_km[r0:r1, None] - centres[i, 1]
        u = (dx * np.cos(angle[i]) + dy * np.sin(angle[i])) / half_length[i]
        v = (-dx * np.sin(angle[i]) + dy * np.cos(angle[i])) / half_width[i]
        radius = np.hypot(u, v)
        window = best[r0:r1, c0:c1]
        closer = radius < window
        window[closer] = radius[closer]
        best_index[r0:r1, c0:c1][closer] = i
    return best + 0.15 * roughness, best_index


def _densities(bedrock: np.ndarray, unit: np.ndarray, cover_km: np.ndarray, rng: np.random.Generator,
               pixel_noise: np.ndarray, *, density_contrast: float,
               within_class_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Bedrock density (g/cm^3) and unit base depth (km), both float32 ``(ny, nx)``."""
    units, inverse = np.unique(unit, return_inverse=True)
    inverse = inverse.reshape(unit.shape)
    # The class of a unit read from any one of its pixels (a unit never straddles classes).
    unit_class = np.zeros(units.size, dtype=np.int64)
    unit_class[inverse.ravel()] = bedrock.ravel()
    unit_density = DENSITY_MEAN_GCC[unit_class] + DENSITY_SD_GCC[unit_class] * rng.standard_normal(units.size)
    unit_base = rng.uniform(*SEDIMENT_BASE_KM_RANGE, units.size)
    for cls, (low, high) in BASE_KM_RANGE.items():
        unit_base[unit_class == cls] = rng.uniform(low, high, int(np.sum(unit_class == cls)))
    reference = 2.67
    density = (reference + density_contrast * (unit_density[inverse] - reference)
               + within_class_sd * PIXEL_SD_FRACTION * DENSITY_SD_GCC[bedrock] * pixel_noise)
    base_km = np.maximum(unit_base[inverse], cover_km + MIN_UNIT_THICKNESS_KM)
    return density.astype(np.float32), base_km.astype(np.float32)


def cover_contrast_integral(top_km: np.ndarray, bottom_km: np.ndarray, reference_gcc: float) -> np.ndarray:
    """Integral of the cover's density contrast over depth ``[top_km, bottom_km]``, g/cm^3 x km.

    ``int (COVER_DEEP - reference - COVER_DEFICIT exp(-z / L)) dz``; zero where ``bottom_km <= top_km``.
    """
    thickness = np.maximum(bottom_km - top_km, 0.0)
    bottom = top_km + thickness
    length = COVER_COMPACTION_KM
    return ((COVER_DEEP_GCC - reference_gcc) * thickness
            - COVER_DEFICIT_GCC * length * (np.exp(-top_km / length) - np.exp(-bottom / length)))
