"""Burying a training tile under a simulated Cenozoic cover (the ``cover_augment`` option of training).

A network trained on the outcrop never sees a label under the cover, yet it is asked to map the bedrock
there, where the residual anomaly differs in two ways (the physics of the synthetic scene, ``synth.py``,
and of a real basin):

1. **the cover replaces the top of the bedrock**: a unit whose top lay at the surface now starts at depth
   ``h``, so its short wavelengths fade. For vertical-sided sources from depth ``h`` to ``b`` the spectrum of
   their attraction goes as ``(exp(-|k| h) - exp(-|k| b)) / |k|`` (a layer's term in Parker's formula, as
   in :mod:`ggmnet.datasets.forward`), so burying multiplies the spectrum of the bedrock's anomaly by::

       B(k; h) = (exp(-|k| h) - exp(-|k| b)) / (1 - exp(-|k| b)),   B(0; h) = (b - h) / b,

   with ``b`` = :data:`SOURCE_BASE_KM` (8 km, the base of the sedimentary units of ``synth_geology``);
2. **the cover's own low density** adds a Bouguer slab ``2 pi G int_0^h drho(z) dz`` per column, with the
   compaction profile of ``synth_geology`` (``2.65 - 0.55 exp(-z / 1.5 km)`` g/cm^3 against the reduction
   density 2.67: -17.7 mGal under 1 km of cover), of which the residual keeps what the regional field
   (upward continuation by ``regional_height_km``, the dataset recipe's 10 km) does not.

:func:`bury` applies both to a tile's residual anomaly for a thickness map that varies across the tile (the
burial response at each pixel is interpolated between the responses at :data:`LEVELS_KM`);
:func:`random_thickness` draws such a map. The labels stay the bedrock's: the network is shown the outcrop
as it would look under the cover, and learns to read the bedrock through it.

References
----------
Parker, R. L. (1973). The rapid calculation of potential anomalies. Geophys. J. R. astr. Soc. 31, 447-455.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ggmnet.datasets.forward import GRAVITATIONAL_CONSTANT, MGAL, REFERENCE_DENSITY
from ggmnet.datasets.processing import spectral_filters, upward_continue
from ggmnet.datasets.synth_geology import cover_contrast_integral

#: Base of the bedrock's anomalous sources, km (the sedimentary units' base in ``synth_geology``: 6-8 km).
SOURCE_BASE_KM = 8.0
#: Cover thicknesses (km) at which the burial response is computed; other thicknesses interpolate.
LEVELS_KM = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0)
#: Attraction of an infinite slab, mGal per (g/cm^3 x km): 2 pi G (1000 kg/m^3) (1000 m).
SLAB_MGAL_PER_GCC_KM = 2.0 * np.pi * GRAVITATIONAL_CONSTANT * 1e6 / MGAL


def burial_response(k: np.ndarray, thickness_km: float, base_km: float = SOURCE_BASE_KM) -> np.ndarray:
    """``B(|k|; h)``: the spectral factor of the bedrock's anomaly under ``thickness_km`` of cover (k in rad/km)."""
    k = np.asarray(k, dtype=np.float64)
    h = min(float(thickness_km), base_km)
    with np.errstate(invalid="ignore", divide="ignore"):
        response = (np.exp(-k * h) - np.exp(-k * base_km)) / (1.0 - np.exp(-k * base_km))
    return np.where(k > 0, response, (base_km - h) / base_km)


def cover_slab_mgal(thickness_km: np.ndarray) -> np.ndarray:
    """Bouguer-slab attraction (mGal, negative) of the compacting cover ``thickness_km`` thick at each pixel."""
    h = np.asarray(thickness_km, dtype=np.float64)
    return SLAB_MGAL_PER_GCC_KM * cover_contrast_integral(np.zeros_like(h), h, REFERENCE_DENSITY / 1e3)


def bury(residual: np.ndarray, thickness_km: np.ndarray, dx_km: float, dy_km: float, *,
         regional_height_km: float = 10.0) -> np.ndarray:
    """The residual anomaly (mGal) of the same bedrock under a cover ``thickness_km`` thick at each pixel.

    Parameters
    ----------
    residual : ndarray (ny, nx)
        A tile's residual anomaly, mGal, rows along y (north), columns along x (east).
    thickness_km : ndarray (ny, nx)
        Cover thickness at each pixel, km (0: left as it is; clipped to the deepest of :data:`LEVELS_KM`).
    dx_km, dy_km : float
        Pixel size along x and y, km.
    regional_height_km : float
        Upward continuation that made the regional field subtracted from the residual (dataset recipe).

    Returns
    -------
    ndarray (ny, nx) float32: the buried bedrock's anomaly plus the residual part of the cover's slab.
    """
    residual = np.asarray(residual, dtype=np.float64)
    h = np.clip(np.asarray(thickness_km, dtype=np.float64), 0.0, LEVELS_KM[-1])
    if not h.any():
        return residual.astype(np.float32)
    mean = residual.mean()
    levels = np.asarray(LEVELS_KM)
    upper = np.clip(np.searchsorted(levels, h, side="right"), 1, levels.size - 1)
    lower = upper - 1
    weight = (h - levels[lower]) / (levels[upper] - levels[lower])
    needed = np.unique(np.concatenate([lower[weight < 1], upper[weight > 0]]))
    responses = [lambda k, t=levels[level]: burial_response(k, t) for level in needed if level > 0]
    filtered = iter(spectral_filters(residual, dx_km, dy_km, responses))
    buried = np.zeros_like(residual)
    for level in needed:
        share = np.where(lower == level, 1.0 - weight, 0.0) + np.where(upper == level, weight, 0.0)
        buried += (residual if level == 0 else next(filtered) + mean) * share
    slab = cover_slab_mgal(h)
    cover = slab - upward_continue(slab, dx_km, dy_km, regional_height_km)
    return (buried + cover).astype(np.float32)


def random_thickness(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A cover thickness map (km, float64 ``shape``): a smooth Gaussian field (correlation length 3-12 px)
    cut at a random level (a third to two thirds of the tile covered) and scaled so the deepest point is
    1-6 km deep (the synthetic scene's cover: median 0.2 km, 90th percentile 2.2 km, 8 km at most)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(3.0, 12.0), mode="reflect")
    field = (field - field.mean()) / max(field.std(), 1e-12)
    cut = rng.uniform(-0.45, 0.45)
    depth = np.clip(field - cut, 0.0, None)
    peak = depth.max()
    return depth * (rng.uniform(1.0, 6.0) / peak) if peak > 0 else depth


def hole_thickness(hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cover thickness map (km, float64) over the pixels of ``hole`` (bool (H, W)), zero elsewhere: thin at the
    hole's edge and thickening inwards as a basin does, to 1-6 km at 3-12 px from the edge (the ranges of
    :func:`random_thickness`): the hidden outcrop of a network that reads the outcrop shown as covered ground."""
    depth = ndimage.distance_transform_edt(hole)
    return np.asarray(rng.uniform(1.0, 6.0) * np.minimum(depth / rng.uniform(3.0, 12.0), 1.0), dtype=np.float64)

